// rbdvault copy --from STORE --to STORE [POOL/IMAGE...]: an offsite copy (agent/copy.h).
#include <iostream>

#include "agent/copy.h"
#include "store/rados_object_store.h"
#include "tools/command.h"
#include "view/presentation.h"
#include "tools/progress.h"

namespace rbdvault::tools {
namespace {

Json image_json(const agent::CopyImageResult& r) {
  Json copied = Json::array(), skipped = Json::array();
  for (const auto& c : r.copied)
    copied.push_back(Json{{"source_revision", c.source_revision},
                          {"target_revision", c.target_revision},
                          {"created", c.created},
                          {"size", c.size}});
  for (const auto& s : r.skipped) skipped.push_back(Json{{"source_revision", s.source_revision}, {"reason", s.reason}});
  return Json{{"image", r.pool + "/" + r.name},   {"revisions_copied", r.copied.size()},
              {"revisions_skipped", r.skipped.size()}, {"revisions_present", r.present},
              {"bytes_read", r.bytes_read},       {"bytes_written", r.bytes_written},
              {"bytes_deduplicated", r.bytes_deduplicated}, {"copied", copied},
              {"skipped", skipped}};
}

int cmd_copy(const Args& a) {
  const std::string from = a.str("from"), to = a.str("to");
  if (from.empty() || to.empty()) throw UsageError("copy: --from STORE and --to STORE are required");
  agent::CopyOptions o;
  for (const auto& text : a.positional) {
    const rbd::ImageSpec spec = parse_image_spec(a, text);
    o.images.emplace_back(spec.pool, spec.image);
  }
  std::string what;
  for (const auto& p : a.positional) what += (what.empty() ? "" : " ") + p;
  // A rados: side is reached through --store-conf/--store-id/--store-keyring (one backup cluster
  // for both sides) and its own index directory.
  auto access = [&](const char* index_dir) {
    return agent::StoreAccess{a.str("store-conf"), a.str("store-id"), a.str("store-keyring"), a.str(index_dir), 0};
  };
  for (const auto& [loc, opt] : {std::pair{from, "from-index-dir"}, std::pair{to, "to-index-dir"}})
    if (!store::parse_rados_spec(loc) && !a.str(opt).empty())
      throw UsageError(std::string("copy: --") + opt + " is only for a rados:POOL store");
  const std::string from_dir = agent::resolve_store_location(from, access("from-index-dir"));
  const std::string to_dir = agent::resolve_store_location(to, access("to-index-dir"));
  // Logged in the target: the store this operation writes.
  return logged_at(to_dir, a, "copy", what, [&](uint64_t& bytes) {
    // The source read-only (backups may be writing it), then the target's writer lock.
    auto source = store::Store::open(from_dir, store::OpenMode::kReadOnly, "");
    auto target = store::Store::open(to_dir, store::OpenMode::kWriter, "copy from " + from);
    Progress progress(!a.quiet() && !a.json());
    o.progress = progress.callback();
    const agent::CopyResult r = agent::copy_store(*source, *target, o);
    bytes = r.bytes_written();
    if (a.json()) {
      Json images = Json::array();
      for (const auto& i : r.images) images.push_back(image_json(i));
      print_json(Json{{"from", from},
                      {"to", to},
                      {"revisions_copied", r.copied()},
                      {"revisions_skipped", r.skipped()},
                      {"bytes_read", r.bytes_read()},
                      {"bytes_written", r.bytes_written()},
                      {"bytes_deduplicated", r.bytes_deduplicated()},
                      {"images", images}});
    } else if (!a.quiet()) {
      for (const auto& i : r.images) {
        std::cout << i.pool << "/" << i.name << ": " << i.copied.size() << " copied, " << i.present
                  << " already there, " << i.skipped.size() << " skipped; read " << view::human_size(i.bytes_read)
                  << ", wrote " << view::human_size(i.bytes_written) << ", deduplicated "
                  << view::human_size(i.bytes_deduplicated) << "\n";
        for (const auto& s : i.skipped) std::cout << "  skipped @" << s.source_revision << ": " << s.reason << "\n";
      }
    }
    return 0;
  });
}

}  // namespace

std::vector<Command> copy_commands() {
  std::vector<Command> c;
  c.push_back({"copy", "--from STORE --to STORE [POOL/IMAGE...] (STORE: DIR or rados:POOL[/NS])",
               "Copy the revisions the target store lacks from another store (an offsite copy): deduplicated "
               "against the target, hash-checked, one commit per revision (kill-safe, resumable).",
               kFormatOption,
               [](po::options_description& o) {
                 // clang-format off
                 o.add_options()
                     ("from", po::value<std::string>()->value_name("STORE"), "the store to copy from (read only)")
                     ("to", po::value<std::string>()->value_name("STORE"), "the store to copy to (created by init)")
                     ("store-conf", po::value<std::string>()->value_name("PATH"),
                      "rados: side: ceph.conf of its cluster (default: librados' search)")
                     ("store-id", po::value<std::string>()->value_name("NAME"), "rados: side: client id")
                     ("store-keyring", po::value<std::string>()->value_name("PATH"), "rados: side: keyring")
                     ("from-index-dir", po::value<std::string>()->value_name("DIR"),
                      "rados: source: its local index cache (default /var/lib/rbdvault/rados-POOL)")
                     ("to-index-dir", po::value<std::string>()->value_name("DIR"),
                      "rados: target: its local index cache (default /var/lib/rbdvault/rados-POOL)");
                 // clang-format on
               },
               cmd_copy});
  return c;
}

}  // namespace rbdvault::tools
