// Commands that open revisions in place: mount (a read-only FUSE tree of the store) and fsck (the
// file systems inside a revision, checked by their own read-only checkers). The work is in view/.
#include <iostream>

#include "store/error.h"
#include "tools/command.h"
#include "view/presentation.h"
#include "view/fsck.h"
#include "view/revision_fs.h"

namespace rbdvault::tools {
namespace {

constexpr agent::Range kCacheMibRange{0, 4096};  // the mount's block cache, MiB (0: none)

uint64_t cache_bytes(const Args& a) { return static_cast<uint64_t>(whole_option(a, "cache-size", kCacheMibRange)) << 20; }

int cmd_mount(const Args& a) {
  view::MountOptions o;
  o.cache_bytes = cache_bytes(a);
  o.store_dir = require_store(a);
  if (a.positional.empty() || a.positional.size() > 2)
    throw UsageError("mount: expected MOUNTPOINT and optionally POOL/IMAGE");
  o.mountpoint = a.positional[0];
  if (a.positional.size() == 2) {
    const rbd::ImageSpec spec = parse_image_spec(a, a.positional[1]);
    o.only = std::make_pair(spec.pool, spec.image);
  }
  o.allow_other = a.flag("allow-other");
  o.check_digest = !a.flag("skip-digest-check");
  if (!store::Store::is_store(o.store_dir))
    throw UsageError("mount: " + o.store_dir + " is not an rbdvault store");
  view::FuseMount mount(o);
  if (!a.quiet())
    std::cerr << "mounted " << o.store_dir << " on " << mount.mountpoint()
              << " (read-only); Ctrl-C or `fusermount3 -u " << mount.mountpoint() << "` ends it\n";
  mount.serve();
  return 0;
}

Json fsck_json(const store::RevisionRecord& rev, const view::FsckResult& r) {
  Json list = Json::array();
  for (const auto& e : r.entries)
    list.push_back(Json{{"where", e.where},
                        {"offset", e.offset},
                        {"size", e.size},
                        {"type", e.type},
                        {"label", e.label},
                        {"checker", e.checker},
                        {"exit_code", e.exit_code},
                        {"state", view::state_name(e.state)},
                        {"summary", e.summary}});
  return Json{{"image", rev.pool + "/" + rev.name},
              {"revision", rev.id},
              {"state", view::state_name(r.state)},
              {"filesystems", list}};
}

int cmd_fsck(const Args& a) {
  view::FsckOptions o;
  o.cache_bytes = cache_bytes(a);
  const std::string target = one_positional(a, "POOL/IMAGE[@REV]");
  return logged(a, "fsck", target, [&](uint64_t&) {
    store::RevisionRecord rev;
    {
      auto st = store::Store::open(require_store(a), store::OpenMode::kReadOnly);
      rev = resolve_revision(*st, target);
    }
    const view::FsckResult r = view::fsck_revision(require_store(a), rev, o);
    if (a.json()) {
      print_json(fsck_json(rev, r));
    } else {
      const std::string name = rev.pool + "/" + rev.name + "@" + std::to_string(rev.id);
      for (const auto& e : r.entries)
        std::cout << view::state_name(e.state) << " " << name << " " << e.where << " ("
                  << view::human_size(e.size) << (e.type.empty() ? "" : ", " + e.type)
                  << (e.label.empty() ? "" : " '" + e.label + "'") << "): " << e.summary << "\n";
      if (r.entries.empty()) std::cout << "UNKNOWN " << name << ": nothing to check\n";
    }
    return static_cast<int>(r.state);
  });
}

}  // namespace

agent::FsckFunction batch_fsck() {
  return [](const std::string& store_dir, const store::RevisionRecord& rev) {
    const view::FsckResult r = view::fsck_revision(store_dir, rev, view::FsckOptions{});
    std::string summary;
    for (const auto& e : r.entries)
      summary += (summary.empty() ? "" : "; ") + e.where + (e.type.empty() ? "" : " " + e.type) + " " +
                 view::state_name(e.state) + ": " + e.summary;
    if (r.entries.empty()) summary = "nothing to check (no partition table or file system found)";
    return agent::FsckVerdict{static_cast<int>(r.state), summary};
  };
}

std::vector<Command> mount_commands() {
  std::vector<Command> c;
  c.push_back({"mount", "--store DIR MOUNTPOINT [POOL/IMAGE]",
               "Show the store's revisions as read-only files MOUNTPOINT/POOL/IMAGE/REV (with a `latest` "
               "link and REV.parts/N for partitions) until unmounted (fusermount3 -u) or interrupted.",
               kStoreOption,
               [](po::options_description& o) {
                 o.add_options()("cache-size", po::value<std::string>()->default_value("64")->value_name("MIB"),
                                 "block cache for repeated reads, MiB (0 to 4096)")(
                     "allow-other", po::bool_switch(), "let other users read the mount (FUSE allow_other)")(
                     "skip-digest-check", po::bool_switch(),
                     "open a revision whose block map does not match its digest (salvage only)");
               },
               cmd_mount});
  c.push_back({"fsck", "--store DIR POOL/IMAGE[@REV]",
               "Check the file systems in a revision (default: the latest) and in its partitions with "
               "their read-only checkers. Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (Nagios).",
               kStoreOption | kFormatOption,
               [](po::options_description& o) {
                 o.add_options()("cache-size", po::value<std::string>()->default_value("64")->value_name("MIB"),
                                 "block cache, MiB (0 to 4096)");
               },
               cmd_fsck});
  return c;
}

}  // namespace rbdvault::tools
