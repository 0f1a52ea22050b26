// Commands that create data: init (a store), backup (a revision), images (what there is to back up).
#include <spdlog/spdlog.h>

#include <cstdio>
#include <iostream>

#include "agent/backup.h"
#include "agent/batch_config.h"
#include "store/error.h"
#include "tools/command.h"
#include "tools/human.h"
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
  store::Store::init(require_store(a), o);
  if (!a.quiet())
    std::cout << "initialised store " << require_store(a) << " (block size " << human_size(o.block_size) << ")\n";
  return 0;
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
  j["map_entries"] = rev.map_entries;
  j["peak_reads_in_flight"] = r.peak_reads_in_flight;
  j["peak_blocks_pending"] = r.peak_blocks_pending;
  j["seconds"] = r.seconds;
  j["verify_blocks_compared"] = r.verify_blocks_compared;
  j["verify_mismatches"] = r.verify_mismatches;
  j["consistency"] = store::consistency_name(rev.flags);
  return j;
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
  const rbd::ImageSpec spec = parse_spec(one_positional(a, "POOL/IMAGE"));
  if (!spec.snap.empty()) throw UsageError("backup: give POOL/IMAGE without @SNAP; rbdvault takes its own snapshot");
  o.full = a.flag("full");
  o.whole_object = a.flag("whole-object");
  o.object_map_filter = !a.flag("exact-diff");
  return logged(a, "backup", spec.str(), [&](uint64_t& bytes) {
    auto st = store::Store::open(require_store(a), store::OpenMode::kWriter, "rbdvault backup " + spec.str());
    rbd::Cluster cluster(connect);
    Progress progress(!a.quiet());
    o.progress = progress.callback();
    const agent::BackupResult r = agent::backup_image(cluster, *st, spec, o);
    const auto& rev = r.revision;
    bytes = rev.bytes_read;
    if (a.json()) {
      print_json(backup_json(spec, r));
    } else {
      std::cout << spec.str() << ": " << kind_name(rev.kind) << " backup, size " << human_size(rev.size) << ", read "
                << human_size(rev.bytes_read) << ", stored " << human_size(rev.bytes_stored) << "\n"
                << "revision " << rev.id << " (" << store::consistency_name(rev.flags) << "-consistent)\n";
    }
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
      std::printf("%-32s %-16s %10s\n", e.name.c_str(), e.id.c_str(), human_size(info.size).c_str());
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
  c.push_back({"backup", "--store DIR POOL/IMAGE [--full]",
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
             ("on-hook-failure", po::value<std::string>()->default_value("skip")->value_name("skip|crash-consistent"),
              "when the pre hook fails: skip (no backup, exit 9) or crash-consistent");
                 // clang-format on
               },
               cmd_backup});
  c.push_back({"images", "POOL", "List the RBD images of a pool.", kCephOptions | kFormatOption, nullptr, cmd_images});
  return c;
}

}  // namespace rbdvault::tools
