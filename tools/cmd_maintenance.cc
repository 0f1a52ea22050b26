// Commands that look after the store: gc, du, scrub, repair, log.
#include <spdlog/spdlog.h>

#include <cstdio>
#include <iostream>
#include <memory>

#include "agent/verify.h"
#include "rbd/error.h"
#include "store/gc.h"
#include "store/oplog.h"
#include "store/scrub.h"
#include "tools/command.h"
#include "view/presentation.h"

namespace rbdvault::tools {
namespace {

constexpr int kDamageFound = agent::exit_code(agent::ErrorClass::kDamage);

int cmd_gc(const Args& a) {
  store::GcOptions o;
  o.max_unused = real_option(a, "max-unused", agent::kMaxUnusedRange) / 100.0;
  o.dry_run = a.flag("dry-run");
  no_positional(a);
  return logged(a, "gc", "", [&](uint64_t& bytes) {
    auto st = store::Store::open(require_store(a), store::OpenMode::kWriter, "rbdvault gc");
    const store::GcResult r = store::gc(*st, o);
    bytes = r.bytes_before - r.bytes_after;
    if (a.json()) {
      print_json(Json{{"chunks_removed", r.chunks_removed},
                      {"packs_deleted", r.packs_deleted},
                      {"packs_rewritten", r.packs_rewritten},
                      {"packs_skipped", r.packs_skipped},
                      {"bytes_before", r.bytes_before},
                      {"bytes_after", r.bytes_after},
                      {"dry_run", o.dry_run}});
    } else if (!a.quiet()) {
      std::cout << (o.dry_run ? "would remove " : "removed ") << r.chunks_removed << " chunks; packs deleted "
                << r.packs_deleted << ", rewritten " << r.packs_rewritten << "; pack data "
                << view::human_size(r.bytes_before) << " -> " << view::human_size(r.bytes_after) << "\n";
      if (r.packs_skipped)
        std::cout << r.packs_skipped << " pack(s) with damaged chunks left as they are: run scrub --deep and repair\n";
    }
    // Damage found is its own exit class (5), like scrub's: the rest of the work was done.
    return r.packs_skipped ? kDamageFound : 0;
  });
}

Json usage_json(const store::StoreUsage& u) {
  Json images = Json::array();
  for (const auto& im : u.images) {
    Json per = Json::array();
    for (const auto& r : im.per_revision) per.push_back(Json{{"id", r.revision}, {"unique_bytes", r.unique_bytes}});
    images.push_back(Json{{"image", im.image},
                          {"revisions", im.revisions},
                          {"size", im.logical_bytes},
                          {"stored_bytes", im.stored_bytes},
                          {"per_revision", std::move(per)}});
  }
  return Json{{"pack_bytes", u.pack_bytes},
              {"referenced_bytes", u.referenced_bytes},
              {"unreferenced_bytes", u.unreferenced_bytes},
              {"index_bytes", u.index_bytes},
              {"images", std::move(images)}};
}

int cmd_du(const Args& a) {
  at_most_one_positional(a, "POOL/IMAGE");
  auto st = store::Store::open(require_store(a), store::OpenMode::kReadOnly);
  std::string only;
  if (!a.positional.empty()) {
    const rbd::ImageSpec spec = parse_image_spec(a, a.positional.front());
    (void)find_image(*st, spec);
    only = spec.pool + "/" + spec.image;
  }
  const store::StoreUsage u = store::du(*st, only);
  if (a.json()) {
    print_json(usage_json(u));
    return 0;
  }
  std::printf("%-32s %9s %10s %10s\n", "IMAGE", "REVISIONS", "SIZE", "STORED");
  for (const auto& im : u.images) {
    std::printf("%-32s %9llu %10s %10s\n", im.image.c_str(), static_cast<unsigned long long>(im.revisions),
                view::human_size(im.logical_bytes).c_str(), view::human_size(im.stored_bytes).c_str());
    for (const auto& r : im.per_revision)
      std::printf("  @%-29llu %9s %10s %10s unique\n", static_cast<unsigned long long>(r.revision), "", "",
                  view::human_size(r.unique_bytes).c_str());
  }
  std::printf("pack data %s (referenced %s, reclaimable by gc %s), index %s\n", view::human_size(u.pack_bytes).c_str(),
              view::human_size(u.referenced_bytes).c_str(), view::human_size(u.unreferenced_bytes).c_str(),
              view::human_size(u.index_bytes).c_str());
  return 0;
}

void print_scrub(const Args& a, const store::ScrubReport& r, bool deep) {
  if (a.json()) {
    Json issues = Json::array();
    for (const auto& i : r.issues)
      issues.push_back(Json{{"image", i.image}, {"revision", i.revision}, {"problem", i.problem}});
    print_json(Json{{"clean", r.clean()},
                    {"revisions_checked", r.revisions_checked},
                    {"chunks_checked", r.chunks_checked},
                    {"bytes_verified", r.bytes_verified},
                    {"damaged_revisions", r.damaged_revisions()},
                    {"issues", std::move(issues)}});
    return;
  }
  for (const auto& i : r.issues)
    std::cout << (i.revision ? i.image + "@" + std::to_string(i.revision) : std::string("store")) << ": " << i.problem
              << "\n";
  if (!a.quiet())
    std::cout << (r.clean() ? "clean: " : "DAMAGED: ") << r.revisions_checked << " revisions, " << r.chunks_checked
              << " chunks" << (deep ? ", " + view::human_size(r.bytes_verified) + " re-hashed" : "") << ", "
              << r.issues.size() << " issue(s)\n";
}

int cmd_scrub(const Args& a) {
  at_most_one_positional(a, "POOL/IMAGE[@REV]");
  const std::string target = a.positional.empty() ? "" : a.positional.front();
  const std::optional<rbd::ImageSpec> spec = target.empty() ? std::nullopt : std::optional(parse_spec(target));
  return logged(a, "scrub", target, [&](uint64_t& bytes) {
    auto st = store::Store::open(require_store(a), store::OpenMode::kReadOnly);
    store::ScrubOptions o;
    o.deep = a.flag("deep");
    if (spec) {
      o.image = find_image(*st, *spec).key;
      if (!spec->snap.empty()) o.revision = resolve_revision(*st, target).id;
    }
    const store::ScrubReport r = store::scrub(*st, o);
    bytes = r.bytes_verified;
    print_scrub(a, r, o.deep);
    return r.clean() ? 0 : kDamageFound;
  });
}

int cmd_repair(const Args& a) {
  const rbd::ConnectOptions connect = connect_options(a);
  no_positional(a);
  return logged(a, "repair", "", [&](uint64_t&) {
    auto st = store::Store::open(require_store(a), store::OpenMode::kWriter, "rbdvault repair");
    std::unique_ptr<rbd::Cluster> cluster;
    try {
      cluster = std::make_unique<rbd::Cluster>(connect);
    } catch (const rbd::CephError& e) {
      spdlog::warn("repair: no cluster ({}); only copies inside the store can be used", e.what());
    }
    const agent::RepairResult r = agent::repair_store(cluster.get(), *st);
    for (const auto& u : r.unrepaired) std::cout << "not repaired: " << u << "\n";
    if (!r.damaged_revisions.empty()) {
      std::cout << "revisions still damaged:";
      for (auto id : r.damaged_revisions) std::cout << " " << id;
      std::cout << "\n";
    }
    if (!a.quiet())
      std::cout << r.damaged_chunks << " damaged chunk(s): " << r.repaired_from_source << " re-read from Ceph, "
                << r.repaired_from_copy << " from copies, "
                << (r.repaired_with_base ? std::to_string(r.repaired_with_base) + " with their base, " : "")
                << r.unrepaired.size() << " not repairable\n";
    return r.unrepaired.empty() ? 0 : kDamageFound;
  });
}

int cmd_log(const Args& a) {
  at_most_one_positional(a, "POOL/IMAGE");
  std::string dir;
  if (const auto r = rados_store(a)) {
    // A rados: store's log is this host's, in its index directory: read it without the backup
    // cluster, which may be the very thing the logged failures were about.
    dir = r->second.string();
    if (!store::Store::is_store(dir))
      throw store::StoreError(store::StoreError::Kind::kNotFound,
                              "no operation log of " + a.str("store") + " on this host (" + dir + " holds none)");
  } else {
    dir = require_store(a);
    (void)store::Store::open(dir, store::OpenMode::kReadOnly);  // validates the directory
  }
  std::string only;
  if (!a.positional.empty()) {
    const rbd::ImageSpec spec = parse_image_spec(a, a.positional.front());
    only = spec.pool + "/" + spec.image;
  }
  size_t torn = 0;
  const auto records = store::OpLog(dir).read(&torn);
  if (torn) spdlog::warn("operation log: skipped {} torn line(s) (a process died or the disk filled mid-line)", torn);
  Json list = Json::array();
  for (const auto& r : records) {
    if (!only.empty() && r.image.rfind(only, 0) != 0) continue;
    const std::string result = r.end_ms ? r.result : "unfinished";
    const double secs = r.end_ms ? static_cast<double>(r.end_ms - r.start_ms) / 1000.0 : 0;
    if (a.json()) {
      list.push_back(Json{{"id", r.id},
                          {"op", r.op},
                          {"image", r.image},
                          {"start", view::iso_time(r.start_ms / 1000)},
                          {"end", r.end_ms ? Json(view::iso_time(r.end_ms / 1000)) : Json(nullptr)},
                          {"seconds", secs},
                          {"result", result},
                          {"bytes", r.bytes},
                          {"error", r.error},
                          {"user", r.user},
                          {"host", r.host},
                          {"pid", r.pid},
                          {"args", r.args}});
    } else {
      std::printf("%-20s %-8s %-28s %-10s %8.1fs %10s %s@%s pid %lld%s%s\n", view::iso_time(r.start_ms / 1000).c_str(),
                  r.op.c_str(), r.image.empty() ? "-" : r.image.c_str(), result.c_str(), secs,
                  view::human_size(r.bytes).c_str(), r.user.c_str(), r.host.c_str(), static_cast<long long>(r.pid),
                  r.error.empty() ? "" : ": ", r.error.c_str());
    }
  }
  if (a.json()) print_json(list);
  return 0;
}

// Recreates the index from the data area (manifests and packs) after the index is lost or damaged.
int cmd_rebuild_index(const Args& a) {
  no_positional(a);
  return logged(a, "rebuild-index", "", [&](uint64_t&) {
    const store::Store::RebuildStats r = store::Store::rebuild_index(require_store(a));
    if (a.json()) {
      print_json(Json{{"images", r.images},
                      {"revisions", r.revisions},
                      {"map_entries", r.entries},
                      {"packs", r.packs},
                      {"chunks", r.chunks},
                      {"chunks_skipped", r.chunks_skipped},
                      {"manifests_skipped", r.manifests_skipped}});
    } else if (!a.quiet()) {
      std::cout << "rebuilt the index: " << r.images << " images, " << r.revisions << " revisions, " << r.entries
                << " block map entries, " << r.chunks << " chunks in " << r.packs << " packs\n";
      if (r.chunks_skipped || r.manifests_skipped)
        std::cout << r.chunks_skipped << " damaged chunk(s) and " << r.manifests_skipped
                  << " damaged manifest(s) left out: run scrub --deep\n";
    }
    return (r.chunks_skipped || r.manifests_skipped) ? kDamageFound : 0;
  });
}

// An older format in place: from 1, the revision manifests from the index, then the marker; from 2
// the marker alone (a RADOS pool's under its writer lease).
int cmd_upgrade(const Args& a) {
  no_positional(a);
  return logged(a, "upgrade", "", [&](uint64_t&) {
    const store::Store::UpgradeStats r = store::Store::upgrade(require_store(a));
    if (a.json()) {
      print_json(Json{{"upgraded", r.upgraded},
                      {"format", store::kFormatVersion},
                      {"manifests_written", r.manifests_written},
                      {"manifests_removed", r.manifests_removed}});
    } else if (!a.quiet()) {
      if (r.upgraded)
        std::cout << "upgraded to format " << store::kFormatVersion << ": " << r.manifests_written
                  << " revision manifests written\n";
      else
        std::cout << "already format " << store::kFormatVersion << "; nothing to do\n";
    }
    return 0;
  });
}

}  // namespace

std::vector<Command> maintenance_commands() {
  std::vector<Command> c;
  c.push_back({"gc", "--store DIR [--max-unused 5] [--dry-run]",
               "Free chunk data no revision references (rewrites packs with more unused data than the limit).",
               kStoreOption | kFormatOption,
               [](po::options_description& o) {
                 // clang-format off
                 o.add_options()
                     ("max-unused", po::value<std::string>()->default_value("5")->value_name("PERCENT"),
                      "rewrite a pack once more than this percent of it is unused (0 to 100)")
                     ("dry-run", po::bool_switch(), "report what would be freed, change nothing");
                 // clang-format on
               },
               cmd_gc});
  c.push_back({"du", "--store DIR [POOL/IMAGE]", "Stored bytes per image and per revision.",
               kStoreOption | kFormatOption, nullptr, cmd_du});
  c.push_back({"scrub", "--store DIR [POOL/IMAGE[@REV]] [--deep]", "Check the store's consistency.",
               kStoreOption | kFormatOption,
               [](po::options_description& o) {
                 o.add_options()("deep", po::bool_switch(), "also read and re-hash every chunk");
               },
               cmd_scrub});
  c.push_back({"repair", "--store DIR", "Rewrite damaged chunks from Ceph snapshots or from copies in the store.",
               kStoreOption | kCephOptions, nullptr, cmd_repair});
  c.push_back({"rebuild-index", "--store DIR",
               "Recreate the index from the data area alone (revision manifests and pack files).",
               kStoreOption | kFormatOption, nullptr, cmd_rebuild_index});
  c.push_back({"upgrade", "--store DIR", "Upgrade an older store in place to the current format (format 1: writes revision manifests).",
               kStoreOption | kFormatOption, nullptr, cmd_upgrade});
  c.push_back(
      {"log", "--store DIR [POOL/IMAGE]", "Show the operation log.", kStoreOption | kFormatOption, nullptr, cmd_log});
  return c;
}

}  // namespace rbdvault::tools
