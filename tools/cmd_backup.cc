// Commands that create data: init (a store), backup (a revision), images (what there is to back up).
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstdio>
#include <iostream>
#include <set>

#include "agent/backup.h"
#include "agent/batch_config.h"
#include "agent/group_backup.h"
#include "rbd/error.h"
#include "store/error.h"
#include "store/rados_cache.h"
#include "tools/command.h"
#include "view/presentation.h"
#include "tools/progress.h"

namespace rbdvault::tools {
namespace {

const char* kind_name(store::RevisionKind k) { return k == store::RevisionKind::kFull ? "full" : "delta"; }

uint32_t parse_block_size(const std::string& text) {
  const std::invalid_argument bad("expected a power of two from 64K to 4M");
  uint64_t v = 0;
  try {
    v = agent::parse_bytes(text);
  } catch (const std::invalid_argument&) {
    throw bad;
  }
  if (v < (64u << 10) || v > (4u << 20) || (v & (v - 1)) != 0) throw bad;
  return static_cast<uint32_t>(v);
}

int cmd_init(const Args& a) {
  store::StoreOptions o;
  o.block_size = numeric(a, "block-size", parse_block_size);
  no_positional(a);
  if (const auto r = rados_store(a))
    store::init_rados_store(r->first, r->second, o);
  else
    store::Store::init(require_store(a), o);
  if (!a.quiet())
    std::cout << "initialised store " << a.str("store") << " (block size " << view::human_size(o.block_size) << ")\n";
  return 0;
}

rbd::ImageSpec image_spec(const std::string& text) {
  rbd::ImageSpec spec = parse_spec(text);
  if (!spec.snap.empty()) throw UsageError("backup: give POOL/IMAGE without @SNAP; rbdvault takes its own snapshot");
  return spec;
}

void print_backup(const rbd::ImageSpec& spec, const agent::BackupResult& r) {
  const auto& rev = r.revision;
  std::cout << spec.str() << ": " << kind_name(rev.kind) << " backup, size " << view::human_size(rev.size) << ", read "
            << view::human_size(rev.bytes_read) << ", stored " << view::human_size(rev.bytes_stored) << "\n"
            << "revision " << rev.id << " (" << store::consistency_name(rev.flags) << "-consistent)\n";
}

Json backup_json(const rbd::ImageSpec& spec, const agent::BackupResult& r) {
  const auto& rev = r.revision;
  Json j;
  j["image"] = spec.str();
  j["revision"] = rev.id;
  j["size"] = rev.size;
  j["parent"] = rev.parent ? Json(rev.parent) : Json(nullptr);
  j["kind"] = kind_name(rev.kind);
  j["base_snapshot"] = r.base_snapshot;
  j["full_reason"] = r.full_reason;
  j["exact_diff_reason"] = r.exact_diff_reason;
  j["bytes_read"] = rev.bytes_read;  // from Ceph, as bytes_read_ceph (kept for older readers)
  j["bytes_read_ceph"] = rev.bytes_read;
  j["bytes_read_store"] = r.bytes_read_store;
  j["bytes_planned"] = r.bytes_planned;
  j["cpu_seconds"] = Json{{"hash", r.cpu_hash}, {"compress", r.cpu_compress}, {"patch", r.cpu_patch},
                          {"index", r.cpu_index}};
  j["bytes_stored"] = rev.bytes_stored;
  j["new_chunks"] = rev.new_chunks;
  j["patch_chunks"] = r.patch_chunks;
  j["patch_bytes"] = r.patch_bytes;
  j["map_entries"] = rev.map_entries;
  j["peak_reads_in_flight"] = r.peak_reads_in_flight;
  j["peak_blocks_pending"] = r.peak_blocks_pending;
  j["seconds"] = r.seconds;
  j["verify_blocks_compared"] = r.verify_blocks_compared;
  j["verify_mismatches"] = r.verify_mismatches;
  if (!r.verify_error.empty()) j["verify_error"] = r.verify_error;
  j["consistency"] = store::consistency_name(rev.flags);
  return j;
}

// The members given on the command line: at least two POOL/IMAGEs, none twice.
std::vector<rbd::ImageSpec> listed_members(const Args& a) {
  if (a.positional.size() < 2) throw UsageError("backup: --group needs at least two POOL/IMAGEs");
  std::vector<rbd::ImageSpec> specs;
  std::set<std::string> seen;
  for (const std::string& text : a.positional) {
    specs.push_back(image_spec(text));
    if (!seen.insert(specs.back().str()).second) throw UsageError("backup: " + text + " given twice");
  }
  return specs;
}

// The members of RBD group "POOL/GROUP", from Ceph.
std::vector<rbd::ImageSpec> rbd_group_members(rbd::Cluster& cluster, const rbd::ImageSpec& group) {
  const std::vector<std::string> names = cluster.list_group_images(group.pool, group.image);
  // librbd 16.2 lists a group that does not exist as empty.
  if (names.empty()) throw rbd::CephError("RBD group " + group.str() + ": no such group, or it has no images", -ENOENT);
  std::vector<rbd::ImageSpec> specs;
  for (const std::string& n : names) specs.push_back(parse_spec(n));
  return specs;
}

Json group_json(const agent::GroupBackup& g) {
  Json images = Json::array();
  for (const auto& m : g.members) {
    Json j = m.result ? backup_json(m.spec, *m.result) : Json{{"image", m.spec.str()}};
    j["result"] = m.error.empty() ? "ok" : m.error_class == agent::ErrorClass::kOk ? "skipped" : "failed";
    j["error"] = m.error;
    j["error_class"] = agent::class_name(m.error_class);
    images.push_back(std::move(j));
  }
  return Json{{"group", g.group},
              {"result", g.error.empty() ? "ok" : "failed"},
              {"run", g.run},
              {"gap_us", g.gap_us},
              {"consistency", g.application ? "application" : "crash"},
              {"error", g.error},
              {"error_class", agent::class_name(g.error_class)},
              {"images", std::move(images)}};
}

int backup_group(const Args& a, const rbd::ConnectOptions& connect, const agent::BackupOptions& o) {
  const bool from_ceph = !a.str("rbd-group").empty();
  if (from_ceph) no_positional(a);
  const rbd::ImageSpec rbd_group = from_ceph ? parse_image_spec(a, a.str("rbd-group")) : rbd::ImageSpec{};
  std::vector<rbd::ImageSpec> members = from_ceph ? std::vector<rbd::ImageSpec>{} : listed_members(a);
  const std::string name = !a.str("group").empty() ? a.str("group") : rbd_group.image;
  return logged(a, "backup", "group " + name, [&](uint64_t& bytes) {
    auto st = store::Store::open(require_store(a), store::OpenMode::kWriter, "rbdvault backup --group " + name);
    rbd::Cluster cluster(connect);
    if (from_ceph) members = rbd_group_members(cluster, rbd_group);
    const agent::GroupBackup g = agent::backup_group(cluster, *st, name, members, o);
    for (const auto& m : g.members)
      if (m.result) bytes += m.result->revision.bytes_read;
    if (a.json()) {
      print_json(group_json(g));
    } else if (!a.quiet()) {
      for (const auto& m : g.members)
        if (m.result) print_backup(m.spec, *m.result);
      std::cout << "group " << name << ": run " << g.run << ", snapshots within " << g.gap_us << " us ("
                << (g.application ? "application" : "crash") << "-consistent), " << (g.error.empty() ? "ok" : "failed")
                << "\n";
    }
    if (g.error.empty()) return 0;
    std::fprintf(stderr, "rbdvault: error: group %s: %s\n", name.c_str(), g.error.c_str());
    return agent::exit_code(g.error_class);
  });
}

int cmd_backup(const Args& a) {
  agent::BackupOptions o;
  o.full_every = static_cast<unsigned>(whole_option(a, "full-every", agent::kFullEveryRange));
  o.reads_in_flight = static_cast<size_t>(whole_option(a, "reads-in-flight", agent::kReadsInFlightRange));
  o.hash_threads = static_cast<size_t>(whole_option(a, "hash-threads", agent::kHashThreadsRange));
  o.verify_sample_percent = real_option(a, "verify-sample", agent::kVerifySampleRange);
  o.hooks.pre = a.str("pre-snapshot");
  o.hooks.post = a.str("post-snapshot");
  o.hooks.timeout_seconds = duration_option(a, "hook-timeout", agent::kHookTimeoutRange);
  o.hooks.on_failure = numeric(a, "on-hook-failure", agent::parse_hook_policy);
  const rbd::ConnectOptions connect = connect_options(a);
  o.full = a.flag("full");
  o.whole_object = a.flag("whole-object");
  o.object_map_filter = !a.flag("exact-diff");
  if (!a.str("group").empty() || !a.str("rbd-group").empty()) return backup_group(a, connect, o);
  if (a.positional.size() > 1) throw UsageError("backup: several images need --group NAME (one consistency group)");
  const rbd::ImageSpec spec = image_spec(one_positional(a, "POOL/IMAGE"));
  return logged(a, "backup", spec.str(), [&](uint64_t& bytes) {
    auto st = store::Store::open(require_store(a), store::OpenMode::kWriter, "rbdvault backup " + spec.str());
    rbd::Cluster cluster(connect);
    Progress progress(!a.quiet());
    o.progress = progress.callback();
    const agent::BackupResult r = agent::backup_image(cluster, *st, spec, o);
    const auto& rev = r.revision;
    bytes = rev.bytes_read;
    if (a.json())
      print_json(backup_json(spec, r));
    else
      print_backup(spec, r);
    // Committed but different from its snapshot somewhere: damage found, not a success.
    if (r.verify_mismatches)
      throw store::StoreError(store::StoreError::Kind::kCorrupt, agent::verify_failure_message(r));
    return 0;
  });
}

int cmd_images(const Args& a) {
  const rbd::ConnectOptions connect = connect_options(a);
  const std::string pool = one_positional(a, "POOL");
  rbd::Cluster cluster(connect);
  Json list = Json::array();
  for (const auto& e : cluster.list_images(pool)) {
    const rbd::ImageInfo info = rbd::Image::open(cluster, pool, e.name, {}, true).info();
    if (a.json())
      list.push_back(Json{{"name", e.name},
                          {"id", e.id},
                          {"size", info.size},
                          {"object_size", info.object_size},
                          {"features", info.features}});
    else
      std::printf("%-32s %-16s %10s\n", e.name.c_str(), e.id.c_str(), view::human_size(info.size).c_str());
  }
  if (a.json()) print_json(list);
  return 0;
}

}  // namespace

std::vector<Command> backup_commands() {
  std::vector<Command> c;
  c.push_back({"init", "--store DIR [--block-size 64K]", "Create a revision store in DIR (absent or empty).",
               kStoreOption,
               [](po::options_description& o) {
                 o.add_options()("block-size", po::value<std::string>()->default_value("64K")->value_name("SIZE"),
                                 "block size, fixed for the store's life: a power of two from 64K to 4M");
               },
               cmd_init});
  c.push_back({"backup", "--store DIR POOL/IMAGE... [--group NAME] [--full]",
               "Back up an image: a new revision, incremental (from the last backup's snapshot) when possible.",
               kStoreOption | kCephOptions | kFormatOption,
               [](po::options_description& o) {
                 // clang-format off
         o.add_options()
             ("full", po::bool_switch(), "read the whole image, even when a diff is possible")
             ("full-every", po::value<std::string>()->default_value("0")->value_name("N"),
              "a full read after N deltas (0: never forced)")
             ("whole-object", po::bool_switch(), "diff by whole RADOS objects (no fast-diff needed)")
             ("exact-diff", po::bool_switch(), "do not narrow the diff with the object map")
             ("reads-in-flight", po::value<std::string>()->default_value("16")->value_name("N"),
              "aio reads in flight (1 to 1024)")
             ("hash-threads", po::value<std::string>()->default_value("2")->value_name("N"),
              "threads hashing blocks (0 to 64; 0: on the reading thread)")
             ("verify-sample", po::value<std::string>()->default_value("0")->value_name("PERCENT"),
              "compare this percent of the new revision with its snapshot (0: off)")
             ("pre-snapshot", po::value<std::string>()->default_value("")->value_name("CMD"),
              "run CMD (/bin/sh -c) just before the snapshot, e.g. a guest fsfreeze")
             ("post-snapshot", po::value<std::string>()->default_value("")->value_name("CMD"),
              "run CMD just after the snapshot (also when it failed), e.g. the thaw")
             ("hook-timeout", po::value<std::string>()->default_value("60s")->value_name("DURATION"),
              "kill a hook's process group after this long (1s to 1d)")
             ("group", po::value<std::string>()->default_value("")->value_name("NAME"),
              "back up two or more POOL/IMAGEs as consistency group NAME (snapshots at one instant)")
             ("rbd-group", po::value<std::string>()->default_value("")->value_name("POOL/GROUP"),
              "back up an RBD group's images as consistency group GROUP (or --group)")
             ("on-hook-failure", po::value<std::string>()->default_value("skip")->value_name("skip|crash-consistent"),
              "when the pre hook fails: skip (no backup, exit 9) or crash-consistent");
                 // clang-format on
               },
               cmd_backup});
  c.push_back({"images", "POOL", "List the RBD images of a pool.", kCephOptions | kFormatOption, nullptr, cmd_images});
  return c;
}

}  // namespace rbdvault::tools
