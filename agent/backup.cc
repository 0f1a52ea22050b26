#include "agent/backup.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <deque>
#include <map>
#include <optional>
#include <vector>

#include "agent/block_pipeline.h"
#include "agent/diff_trust.h"
#include "agent/read_plan.h"
#include "agent/verify.h"
#include "rbd/cluster.h"
#include "rbd/error.h"
#include "rbd/image.h"
#include "store/revision_writer.h"
#include "store/store.h"

namespace rbdvault::agent {

namespace {

void check_after_backup(rbd::Cluster& cluster, store::Store& store, const BackupOptions& options,
                        BackupResult& result) {
  VerifyOptions vo;
  vo.sample_percent = options.verify_sample_percent;
  vo.reads_in_flight = options.reads_in_flight;
  const VerifyResult v = verify_revision(cluster, store, result.revision, vo);
  result.verify_blocks_compared = v.blocks_compared;
  result.verify_mismatches = v.mismatches;
  if (v.mismatches == 0) return;
  store.mark_verify_failed(result.revision.id);
  result.revision.flags |= store::kRevisionVerifyFailed;
}

// The snapshot a consistency group took for this backup, checked to be the one it took (same
// name and Ceph id, so a re-created image or a renamed snapshot is never read by mistake).
rbd::SnapshotInfo use_taken_snapshot(rbd::Image& image, const TakenSnapshot& taken, const std::string& expected_name,
                                     const std::string& image_name) {
  auto snap = image.find_snapshot(taken.name);
  if (taken.name != expected_name || !snap || snap->id != taken.id)
    throw std::runtime_error("backup " + image_name + ": the group snapshot " + taken.name + " (id " +
                             std::to_string(taken.id) + ") is gone or was replaced");
  return *snap;
}

}  // namespace

std::string verify_failure_message(const BackupResult& r) {
  return "revision " + std::to_string(r.revision.id) + " of " + r.revision.pool + "/" + r.revision.name +
         " differs from its snapshot in " + std::to_string(r.verify_mismatches) + " of " +
         std::to_string(r.verify_blocks_compared) + " sampled blocks (a wrong diff?); the next backup reads everything";
}

std::string snapshot_prefix(const store::Store& store) { return "rbdvault-" + store.store_id().substr(0, 8) + "-"; }

BackupResult backup_image(rbd::Cluster& cluster, store::Store& store, const rbd::ImageSpec& spec,
                          const BackupOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  const std::string image_name = spec.pool + "/" + spec.image;
  // A writable handle is needed only for snapshot create/remove. On an exclusive-lock image it may
  // take the lock, and a process killed while holding it makes the next one wait for the watch
  // timeout; so it lives only around those calls, never during the long reads.
  std::optional<rbd::Image> image(rbd::Image::open(cluster, spec.pool, spec.image));
  const rbd::ImageInfo head = image->info();
  const std::string prefix = snapshot_prefix(store);

  // The diff base: the newest revision of this image, if it came from the same Ceph image (a
  // re-created image has a new id) and its snapshot is still there with the same id.
  std::optional<store::RevisionRecord> parent;
  if (auto img = store.find_image(spec.pool, spec.image)) parent = store.latest_revision(img->key);
  std::string base_snap, full_reason;
  auto deltas_since_full = [&] {
    unsigned n = 0;
    if (auto img = store.find_image(spec.pool, spec.image)) {
      auto revs = store.revisions(img->key);
      for (auto it = revs.rbegin(); it != revs.rend() && it->kind == store::RevisionKind::kDelta; ++it) ++n;
    }
    return n;
  };
  if (options.full) {
    full_reason = "--full requested";
  } else if (options.full_every && parent && deltas_since_full() + 1 >= options.full_every) {
    full_reason = "periodic full read (--full-every " + std::to_string(options.full_every) + ")";
  } else if (!parent) {
    full_reason = "first backup of this image";
  } else if (parent->flags & store::kRevisionVerifyFailed) {
    full_reason = "revision " + std::to_string(parent->id) + " differed from its snapshot when checked";
  } else if (parent->ceph_image_id != head.id) {
    full_reason = "image was re-created (id " + parent->ceph_image_id + " -> " + head.id + ")";
  } else {
    auto snap = image->find_snapshot(parent->snap_name);
    if (!snap || snap->id != parent->snap_id)
      full_reason = "base snapshot " + parent->snap_name + " no longer exists";
    else
      base_snap = parent->snap_name;
  }

  // Our snapshots other than the newest revision's are leftovers of interrupted runs. The newest
  // revision's snapshot stays even when not used as the base (--full): if this run fails, the next
  // one can still diff against it.
  // A snapshot taken for this backup by its consistency group is not stale either.
  const std::string keep = parent ? parent->snap_name : std::string();
  const std::string taken = options.taken ? options.taken->name : std::string();
  for (auto& s : image->snapshots()) {
    const std::string& name = s.in_trash ? s.original_name : s.name;
    if (name.rfind(prefix, 0) == 0 && (s.in_trash || (name != keep && name != taken))) {
      spdlog::info("backup {}: removing stale snapshot {}{}", image_name, name, s.in_trash ? " (from the trash)" : "");
      try {
        image->remove_snapshot(s);
      } catch (const rbd::CephError& e) {
        // E.g. someone cloned from it: it must not stop tonight's backup.
        spdlog::warn("backup {}: could not remove stale snapshot {}: {}", image_name, name, e.what());
      }
    }
  }

  const uint64_t rev_id = options.taken ? options.taken->revision : store.reserve_revision_id();
  const std::string snap_name = prefix + std::to_string(rev_id);
  // The revision is the image as of its snapshot: that moment is its creation time, which schedules
  // and retention count from (not the end of a long read).
  int64_t snapshot_time = options.created;
  rbd::SnapshotInfo snap;
  bool application = false;
  if (options.taken) {
    snap = use_taken_snapshot(*image, *options.taken, snap_name, image_name);
    if (!snapshot_time) snapshot_time = options.taken->time;
    application = options.taken->application;
  } else {
    const std::map<std::string, std::string> hook_env{{"RBDVAULT_POOL", spec.pool},
                                                      {"RBDVAULT_IMAGE", spec.image},
                                                      {"RBDVAULT_SNAPSHOT", snap_name},
                                                      {"RBDVAULT_REVISION", std::to_string(rev_id)}};
    application = snapshot_between_hooks(options.hooks, hook_env, "backup " + image_name, [&] {
      if (!snapshot_time) snapshot_time = static_cast<int64_t>(std::time(nullptr));
      snap = image->create_snapshot(snap_name);
    });
  }
  image.reset();
  store.crash_points().reached("backup.snapshot_created");
  spdlog::debug("backup {}: created snapshot {} (id {}, size {})", image_name, snap_name, snap.id, snap.size);

  BackupResult result;
  result.base_snapshot = base_snap;
  result.full_reason = full_reason;
  try {
    rbd::Image at_snap = rbd::Image::open(cluster, spec.pool, spec.image, snap_name, /*read_only=*/true);
    auto writer =
        store.begin_revision(store::RevisionStart{spec.pool, spec.image, snap.size, base_snap.empty(), rev_id});
    if (writer->id() != rev_id) throw store::StoreError(store::StoreError::Kind::kIO, "revision id changed under us");
    const uint64_t bs = store.block_size();
    const uint64_t nblocks = store.blocks_for(snap.size);

    ReadPlan plan(bs, snap.size);
    // RBDVAULT_FAULT=diff.miss (tests only) simulates a Ceph diff that misses every change.
    const bool simulate_miss = !base_snap.empty() && store.crash_points().fault("diff.miss");
    auto to_plan = [&](const rbd::ChangedExtent& e) {
      if (!simulate_miss) plan.add_extent(e.offset, e.length, e.exists);
    };
    // The object-map diff (both fast modes use it) is not trusted where a known Ceph bug can make it
    // miss changes (agent/diff_trust.h); that range gets the exact diff.
    const bool fast_mode = options.whole_object || options.object_map_filter;
    uint64_t trusted_end = fast_mode ? snap.size : 0;
    if (!base_snap.empty() && fast_mode) {
      std::vector<SnapshotPoint> points;
      for (const auto& s : at_snap.snapshots()) points.push_back({s.id, s.size});
      const DiffTrust trust = object_map_trust({parent->snap_id, parent->size}, {snap.id, snap.size}, points);
      if (trust.exact_from < snap.size) {
        trusted_end = trust.exact_from;
        result.exact_diff_reason = trust.reason;
        spdlog::info("backup {}: exact diff from byte {}: {}", image_name, trusted_end, trust.reason);
      }
    }
    if (options.whole_object)
      at_snap.changed_extents(base_snap, 0, trusted_end, true, to_plan);
    else if (options.object_map_filter)
      at_snap.changed_extents_exact(base_snap, 0, trusted_end, to_plan);
    at_snap.changed_extents(base_snap, trusted_end, snap.size - trusted_end, false, to_plan);
    if (!base_snap.empty() && parent->size != snap.size) {
      // A block cut by the new or the old end of the image must be re-read: Ceph zeroes bytes past a
      // shrink, and a block stored at the old size was stored zero-padded.
      for (uint64_t edge : {snap.size, parent->size})
        if (edge % bs != 0 && edge / bs < nblocks) plan.add_block(edge / bs);
    }
    const std::vector<BlockRun> runs = plan.finish();
    uint64_t zero_blocks = 0;
    for (auto& r : runs) {
      if (r.zero)
        zero_blocks += r.end - r.first;
      else
        result.bytes_planned += std::min(r.end * bs, snap.size) - r.first * bs;
    }
    spdlog::debug("backup {}: {} runs, {} bytes to read, {} blocks known zero", image_name, runs.size(),
                  result.bytes_planned, zero_blocks);

    // Zero runs are recorded in block order between the reads around them, as reads complete.
    BlockPipeline pipeline(store, *writer, options.hash_threads, options.max_blocks_pending);
    std::deque<BlockRun> zeros_due;
    auto put_zeros_before = [&](uint64_t block) {
      while (!zeros_due.empty() && zeros_due.front().first < block) {
        pipeline.add_zero_range(zeros_due.front().first, zeros_due.front().end);
        zeros_due.pop_front();
      }
    };
    uint64_t done = 0, stored_reported = 0;
    auto check_cancelled = [&] {
      if (options.cancelled && options.cancelled())
        throw BackupCancelled("backup " + image_name + " cancelled; nothing was committed");
    };
    const uint64_t blocks_per_read = std::max<uint64_t>(1, options.max_read_bytes / bs);
    rbd::AsyncReader reader(at_snap, options.reads_in_flight,
                            [&](uint64_t offset, uint64_t nblk, std::string_view data) {
                              const uint64_t first = offset / bs;
                              put_zeros_before(first);
                              for (uint64_t i = 0; i < nblk; ++i) {
                                const uint64_t pos = i * bs;
                                std::string_view piece = pos < data.size() ? data.substr(pos, bs) : std::string_view();
                                pipeline.add_block(first + i, piece);
                              }
                              done += data.size();
                              if (options.progress) options.progress(done, result.bytes_planned);
                              if (options.after_store && writer->bytes_stored() > stored_reported) {
                                options.after_store(writer->bytes_stored() - stored_reported);
                                stored_reported = writer->bytes_stored();
                              }
                            });
    for (const BlockRun& r : runs) {
      if (r.zero) {
        zeros_due.push_back(r);
        continue;
      }
      for (uint64_t b = r.first; b < r.end; b += blocks_per_read) {
        const uint64_t n = std::min(blocks_per_read, r.end - b);
        const uint64_t offset = b * bs;
        const uint64_t length = std::min(n * bs, snap.size - offset);
        check_cancelled();
        if (options.before_read) {
          options.before_read(length);
          check_cancelled();
        }
        reader.submit(offset, length, n);
      }
    }
    reader.drain();
    put_zeros_before(UINT64_MAX);
    pipeline.finish();
    result.peak_blocks_pending = pipeline.peak_pending();
    result.peak_reads_in_flight = reader.peak_in_flight();

    store::RevisionInfo info;
    info.ceph_image_id = head.id;
    info.snap_name = snap_name;
    info.snap_id = snap.id;
    info.kind = base_snap.empty() ? store::RevisionKind::kFull : store::RevisionKind::kDelta;
    info.bytes_read = reader.bytes_read();
    info.order = static_cast<uint8_t>(head.order);
    info.features = head.features;
    info.created = snapshot_time;
    info.application_consistent = application;
    if (options.taken) {
      info.group = options.taken->group;
      info.group_run = options.taken->group_run;
      info.group_gap_us = options.taken->group_gap_us;
    }
    check_cancelled();
    result.revision = writer->commit(info);
  } catch (...) {
    try {
      rbd::Image::open(cluster, spec.pool, spec.image).remove_snapshot(snap_name);
    } catch (const std::exception& e) {
      spdlog::warn("backup {}: could not remove snapshot {} after failure: {}", image_name, snap_name, e.what());
    }
    throw;
  }

  // Committed. Check a sample against the snapshot while it exists; a mismatch means the diff was
  // wrong, and the next backup must not diff from this revision.
  if (options.verify_sample_percent > 0) check_after_backup(cluster, store, options, result);
  // The previous snapshot is no longer needed for any diff.
  if (!keep.empty() && keep.rfind(prefix, 0) == 0 && parent->ceph_image_id == head.id) {
    try {
      rbd::Image::open(cluster, spec.pool, spec.image).remove_snapshot(keep);
    } catch (const rbd::CephError& e) {
      if (!e.not_found()) spdlog::warn("backup {}: could not remove old snapshot {}: {}", image_name, keep, e.what());
    }
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  spdlog::info("backup {}: revision {} ({}, {} read, {} stored, {:.1f}s)", image_name, result.revision.id,
               base_snap.empty() ? "full: " + full_reason : "delta from " + base_snap, result.revision.bytes_read,
               result.revision.bytes_stored, result.seconds);
  return result;
}

}  // namespace rbdvault::agent
