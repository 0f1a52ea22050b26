#include "agent/backup.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <vector>

#include "agent/block_pipeline.h"
#include "agent/changed_bytes.h"
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

struct BlockPatch {
  store::Hash base;           // the parent revision's chunk for the block
  std::vector<Piece> pieces;  // the changed bytes, read from the snapshot
};

// One read from the snapshot: whole blocks starting at offset, or one piece of a patched block (the
// last piece carries the patch).
struct ReadStep {
  uint64_t offset = 0, length = 0;
  bool piece = false, last_piece = false;
  std::optional<BlockPatch> patch;
};

// The reads for one run of blocks to read, in order: runs of whole blocks up to per_read blocks
// long, and the pieces of each block below patch_end that patch_for says can be patched.
void for_each_read(const BlockRun& r, uint64_t bs, uint64_t size, uint64_t per_read, uint64_t patch_end,
                   const std::function<std::optional<BlockPatch>(uint64_t)>& patch_for,
                   const std::function<void(ReadStep&&)>& fn) {
  uint64_t whole_from = r.first;
  auto whole_until = [&](uint64_t end) {
    while (whole_from < end) {
      const uint64_t n = std::min(per_read, end - whole_from), offset = whole_from * bs;
      fn(ReadStep{offset, std::min(n * bs, size - offset), false, false, std::nullopt});
      whole_from += n;
    }
  };
  for (uint64_t b = r.first; b < std::min(r.end, patch_end); ++b) {
    std::optional<BlockPatch> patch = patch_for(b);
    if (!patch) continue;
    whole_until(b);
    whole_from = b + 1;
    const size_t n = patch->pieces.size();
    for (size_t i = 0; i < n; ++i) {
      const Piece p = patch->pieces[i];
      ReadStep s{b * bs + p.offset, p.length, true, i + 1 == n, std::nullopt};
      if (s.last_piece) s.patch = std::move(patch);
      fn(std::move(s));
    }
  }
  whole_until(r.end);
}

void check_after_backup(rbd::Cluster& cluster, store::AppendStore& store, const BackupOptions& options,
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

std::string snapshot_prefix(const store::ReadOnlyStore& store) { return "rbdvault-" + store.store_id().substr(0, 8) + "-"; }

BackupResult backup_image(rbd::Cluster& cluster, store::AppendStore& store, const rbd::ImageSpec& spec,
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
    // Partial reads: a block the exact diff reports partly changed is completed from the parent
    // revision's chunk, which holds the base snapshot's bytes (the diff is taken from that snapshot).
    const bool patching = !base_snap.empty() && options.partial_reads && writer->parent() &&
                          writer->parent()->id == parent->id;
    ChangedBytes changed(bs);
    // RBDVAULT_FAULT=diff.miss (tests only) simulates a Ceph diff that misses every change.
    const bool simulate_miss = !base_snap.empty() && store.crash_points().fault("diff.miss");
    auto to_plan = [&](bool exact) {
      return [&, exact](const rbd::ChangedExtent& e) {
        if (simulate_miss) return;
        plan.add_extent(e.offset, e.length, e.exists);
        if (!patching) return;
        // Object-granular extents say that something in the object changed, not which bytes.
        if (exact)
          changed.add_exact(e.offset, e.length);
        else
          changed.add_blocks(e.offset / bs, (e.offset + e.length + bs - 1) / bs);
      };
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
      at_snap.changed_extents(base_snap, 0, trusted_end, true, to_plan(false));
    else if (options.object_map_filter)
      at_snap.changed_extents_exact(base_snap, 0, trusted_end, to_plan(true));
    at_snap.changed_extents(base_snap, trusted_end, snap.size - trusted_end, false, to_plan(true));
    if (!base_snap.empty() && parent->size != snap.size) {
      // A block cut by the new or the old end of the image must be re-read: Ceph zeroes bytes past a
      // shrink, and a block stored at the old size was stored zero-padded.
      for (uint64_t edge : {snap.size, parent->size})
        if (edge % bs != 0 && edge / bs < nblocks) {
          plan.add_block(edge / bs);
          if (patching) changed.add_blocks(edge / bs, edge / bs + 1);
        }
    }
    const std::vector<BlockRun> runs = plan.finish();
    if (patching) changed.finish();
    // Blocks wholly inside both the parent's and the new size may be patched; a block the parent
    // holds as zeros (or not at all) is read whole.
    const uint64_t patch_end = patching ? std::min(parent->size, snap.size) / bs : 0;
    // The reads are walked twice, to plan and to submit, in the same order: the first walk looks up
    // the parent's chunk of each partly changed block in the index, the second takes it from here.
    std::deque<std::optional<store::Hash>> parent_chunks;
    bool planning = true;
    auto patch_for = [&](uint64_t b) -> std::optional<BlockPatch> {
      if (b >= patch_end) return std::nullopt;
      std::vector<Piece> pieces = changed.pieces(b);
      if (pieces.empty() || ChangedBytes::whole(pieces, bs)) return std::nullopt;
      std::optional<store::Hash> base;
      if (planning) {
        base = store.block_content(writer->image(), b, parent->id);
        parent_chunks.push_back(base);
      } else {
        if (parent_chunks.empty()) throw std::logic_error("the reads were walked differently twice");
        base = parent_chunks.front();
        parent_chunks.pop_front();
      }
      if (!base) return std::nullopt;
      return BlockPatch{*base, std::move(pieces)};
    };
    const uint64_t blocks_per_read = std::max<uint64_t>(1, options.max_read_bytes / bs);
    uint64_t zero_blocks = 0;
    for (auto& r : runs) {
      if (r.zero) {
        zero_blocks += r.end - r.first;
        continue;
      }
      for_each_read(r, bs, snap.size, blocks_per_read, patch_end, patch_for,
                    [&](ReadStep&& s) { result.bytes_planned += s.length; });
    }
    planning = false;
    spdlog::debug("backup {}: {} runs, {} bytes to read, {} blocks known zero", image_name, runs.size(),
                  result.bytes_planned, zero_blocks);

    // Zero runs are recorded in block order between the reads around them, as reads complete.
    BlockPipeline pipeline(store, *writer, options.hash_threads, options.max_blocks_pending);
    pipeline.set_reread([&](uint64_t b) {
      std::string whole(bs, '\0');  // blocks patched lie wholly inside the image
      if (at_snap.read(b * bs, bs, whole.data()) != bs) throw std::runtime_error("short read inside the image");
      return whole;
    });
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
    // Reads are delivered in submission order: the steps wait here for their data.
    std::deque<ReadStep> steps;
    std::string patch_data;  // the pieces of the block being patched, as they arrive
    rbd::AsyncReader reader(at_snap, options.reads_in_flight, [&](uint64_t, uint64_t, std::string_view data) {
      ReadStep step = std::move(steps.front());
      steps.pop_front();
      const uint64_t first = step.offset / bs;
      put_zeros_before(first);
      if (step.piece) {
        if (data.size() != step.length) throw std::runtime_error("short read inside the image");
        patch_data.append(data);
        if (step.last_piece) {
          pipeline.add_patched(first, step.patch->base, std::move(patch_data), std::move(step.patch->pieces));
          patch_data.clear();
        }
      } else {
        for (uint64_t i = 0; i * bs < step.length; ++i) {
          const uint64_t pos = i * bs;
          pipeline.add_block(first + i, pos < data.size() ? data.substr(pos, bs) : std::string_view());
        }
      }
      done += data.size();
      if (options.progress) options.progress(done, std::max(done, result.bytes_planned));
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
      for_each_read(r, bs, snap.size, blocks_per_read, patch_end, patch_for, [&](ReadStep&& s) {
        check_cancelled();
        if (options.before_read) {
          options.before_read(s.length);
          check_cancelled();
        }
        const uint64_t offset = s.offset, length = s.length;
        steps.push_back(std::move(s));
        reader.submit(offset, length, 0);
      });
    }
    reader.drain();
    if (!parent_chunks.empty()) throw std::logic_error("the reads were walked differently twice");
    put_zeros_before(UINT64_MAX);
    pipeline.finish();
    result.peak_blocks_pending = pipeline.peak_pending();
    result.bytes_read_store = pipeline.stats().bytes_read_store;
    result.cpu_hash = pipeline.stats().hash;
    result.cpu_compress = pipeline.stats().compress;
    result.cpu_patch = pipeline.stats().patch;
    result.cpu_index = pipeline.stats().index;
    result.peak_reads_in_flight = reader.peak_in_flight();

    store::RevisionInfo info;
    info.ceph_image_id = head.id;
    info.snap_name = snap_name;
    info.snap_id = snap.id;
    info.kind = base_snap.empty() ? store::RevisionKind::kFull : store::RevisionKind::kDelta;
    info.bytes_read = reader.bytes_read() + pipeline.stats().bytes_reread;
    if (pipeline.stats().blocks_reread)
      spdlog::warn("backup {}: {} blocks read whole because their parent chunk was damaged; run rbdvault scrub",
                   image_name, pipeline.stats().blocks_reread);
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
    const double commit_started = store::thread_cpu_seconds();
    result.revision = writer->commit(info);
    result.patch_chunks = writer->patch_chunks();
    result.patch_bytes = writer->patch_bytes();
    result.cpu_index += store::thread_cpu_seconds() - commit_started;
  } catch (...) {
    // A writer refused as kLocked mid-revision lost its store's lease (a RADOS store): the writer
    // that took over may have reused its revision id, so a snapshot of this name may be that
    // writer's now. It is not ours to remove; the next backup removes it if it is stale.
    bool lost_store = false;
    try {
      throw;
    } catch (const store::StoreError& e) {
      lost_store = e.kind() == store::StoreError::Kind::kLocked;
    } catch (...) {
    }
    try {
      if (!lost_store) rbd::Image::open(cluster, spec.pool, spec.image).remove_snapshot(snap_name);
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
