#include "agent/backup.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cerrno>
#include <ctime>
#include <exception>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>

#include "agent/snapshot_read.h"
#include "agent/verify.h"
#include "rbd/cluster.h"
#include "rbd/error.h"
#include "rbd/image.h"
#include "store/revision_writer.h"
#include "store/store.h"

namespace rbdvault::agent {

namespace {

void check_after_backup(rbd::Cluster& cluster, store::AppendStore& store, const BackupOptions& options,
                        BackupResult& result) {
  VerifyOptions vo;
  vo.sample_percent = options.verify_sample_percent;
  vo.reads_in_flight = options.reads_in_flight;
  VerifyResult v;
  try {
    v = verify_revision(cluster, store, result.revision, vo);
  } catch (const rbd::CephError& e) {
    // The revision is committed; only the check of it against Ceph failed (its snapshot removed
    // meanwhile, a read error). Failing the backup would report a committed revision as missing,
    // and a batch would retry it (a second revision) or drop its group snapshot.
    result.verify_error = e.what();
    spdlog::warn("backup {}/{}: revision {} committed, but it could not be compared with its snapshot: {}",
                 result.revision.pool, result.revision.name, result.revision.id, e.what());
    return;
  }
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

// The diff base: the newest revision of this image, if it came from the same Ceph image (a
// re-created image has a new id) and its snapshot is still there with the same id.
struct DiffBase {
  std::optional<store::RevisionRecord> parent;  // the image's newest revision, base or not
  std::string snap;                             // its snapshot when diffed against; empty: a full read
  std::string full_reason;                      // why a full read, for the log and the JSON
};

DiffBase choose_base(store::AppendStore& store, const rbd::ImageSpec& spec, rbd::Image& image,
                     const rbd::ImageInfo& head, const BackupOptions& options) {
  DiffBase b;
  std::optional<store::ImageRecord> img = store.find_image(spec.pool, spec.image);
  if (img) b.parent = store.latest_revision(img->key);
  auto deltas_since_full = [&] {
    unsigned n = 0;
    auto revs = store.revisions(img->key);
    for (auto it = revs.rbegin(); it != revs.rend() && it->kind == store::RevisionKind::kDelta; ++it) ++n;
    return n;
  };
  const auto& parent = b.parent;
  if (options.full) {
    b.full_reason = "--full requested";
  } else if (options.full_every && parent && deltas_since_full() + 1 >= options.full_every) {
    b.full_reason = "periodic full read (--full-every " + std::to_string(options.full_every) + ")";
  } else if (!parent) {
    b.full_reason = "first backup of this image";
  } else if (parent->flags & store::kRevisionVerifyFailed) {
    b.full_reason = "revision " + std::to_string(parent->id) + " differed from its snapshot when checked";
  } else if (parent->ceph_image_id != head.id) {
    b.full_reason = "image was re-created (id " + parent->ceph_image_id + " -> " + head.id + ")";
  } else {
    auto snap = image.find_snapshot(parent->snap_name);
    if (!snap || snap->id != parent->snap_id)
      b.full_reason = "base snapshot " + parent->snap_name + " no longer exists";
    else
      b.snap = parent->snap_name;
  }
  return b;
}

// Our snapshots other than `keep` (the newest revision's) are leftovers of interrupted runs; a
// snapshot taken for this backup by its consistency group (`taken`) is not stale either.
void remove_stale_snapshots(rbd::Image& image, const std::string& prefix, const std::string& keep,
                            const std::string& taken, const std::string& image_name) {
  for (auto& s : image.snapshots()) {
    const std::string& name = s.in_trash ? s.original_name : s.name;
    if (name.rfind(prefix, 0) == 0 && (s.in_trash || (name != keep && name != taken))) {
      spdlog::info("backup {}: removing stale snapshot {}{}", image_name, name, s.in_trash ? " (from the trash)" : "");
      try {
        image.remove_snapshot(s);
      } catch (const rbd::CephError& e) {
        // E.g. someone cloned from it: it must not stop tonight's backup.
        spdlog::warn("backup {}: could not remove stale snapshot {}: {}", image_name, name, e.what());
      }
    }
  }
}

struct NewSnapshot {
  rbd::SnapshotInfo info;
  // The revision is the image as of its snapshot: that moment is its creation time, which schedules
  // and retention count from (not the end of a long read).
  int64_t time = 0;
  bool application = false;  // taken between hooks that succeeded (application-consistent)
};

// The snapshot this backup reads: the one its consistency group took, or one taken now between the
// pre- and post-snapshot hooks.
NewSnapshot take_snapshot(rbd::Image& image, const rbd::ImageSpec& spec, const std::string& snap_name, uint64_t rev_id,
                          const BackupOptions& options) {
  const std::string image_name = spec.pool + "/" + spec.image;
  NewSnapshot n;
  n.time = options.created;
  if (options.taken) {
    n.info = use_taken_snapshot(image, *options.taken, snap_name, image_name);
    if (!n.time) n.time = options.taken->time;
    n.application = options.taken->application;
    return n;
  }
  const std::map<std::string, std::string> hook_env{{"RBDVAULT_POOL", spec.pool},
                                                    {"RBDVAULT_IMAGE", spec.image},
                                                    {"RBDVAULT_SNAPSHOT", snap_name},
                                                    {"RBDVAULT_REVISION", std::to_string(rev_id)}};
  n.application = snapshot_between_hooks(options.hooks, hook_env, "backup " + image_name, [&] {
    if (!n.time) n.time = static_cast<int64_t>(std::time(nullptr));
    n.info = image.create_snapshot(snap_name);
  });
  return n;
}

store::RevisionInfo revision_info(const rbd::ImageInfo& head, const std::string& snap_name, const NewSnapshot& taken,
                                  bool full, uint64_t bytes_read, const BackupOptions& options) {
  store::RevisionInfo info;
  info.ceph_image_id = head.id;
  info.snap_name = snap_name;
  info.snap_id = taken.info.id;
  info.kind = full ? store::RevisionKind::kFull : store::RevisionKind::kDelta;
  info.bytes_read = bytes_read;
  info.order = static_cast<uint8_t>(head.order);
  info.features = head.features;
  info.created = taken.time;
  info.application_consistent = taken.application;
  if (options.taken) {
    info.group = options.taken->group;
    info.group_run = options.taken->group_run;
    info.group_gap_us = options.taken->group_gap_us;
  }
  return info;
}

// After a failure before the commit, the snapshot this run took goes. Not when the failure is a
// writer refused as kLocked mid-revision: it lost its store's lease (a RADOS store), and the writer
// that took over may have reused its revision id, so a snapshot of this name may be that writer's
// now. The next backup removes it if it is stale.
void remove_snapshot_after_failure(rbd::Cluster& cluster, const rbd::ImageSpec& spec, const std::string& snap_name,
                                   std::exception_ptr failure) {
  try {
    std::rethrow_exception(failure);
  } catch (const store::StoreError& e) {
    if (e.kind() == store::StoreError::Kind::kLocked) return;
  } catch (...) {
  }
  try {
    rbd::Image::open(cluster, spec.pool, spec.image).remove_snapshot(snap_name);
  } catch (const rbd::CephError& e) {
    if (!e.not_found())  // gone already (removed by someone else: that may be the failure)
      spdlog::warn("backup {}/{}: could not remove snapshot {} after failure: {}", spec.pool, spec.image, snap_name,
                   e.what());
  } catch (const std::exception& e) {
    spdlog::warn("backup {}/{}: could not remove snapshot {} after failure: {}", spec.pool, spec.image, snap_name,
                 e.what());
  }
}

// librbd does not watch the header of an image opened read-only, so a reader at a snapshot that
// someone removes (rbd snap rm/purge) never hears of it: once the OSDs trim the snapshot, reads
// at it return zeros for every object written since, with full length and no error. All reads
// done, the snapshot must still be there (snapshot ids are never reused) or nothing is committed.
void require_snapshot_kept(rbd::Cluster& cluster, const rbd::ImageSpec& spec, const std::string& snap_name,
                           uint64_t snap_id) {
  rbd::Image now = rbd::Image::open(cluster, spec.pool, spec.image, {}, /*read_only=*/true);
  for (const rbd::SnapshotInfo& s : now.snapshots())
    if (s.id == snap_id) return;
  throw rbd::CephError("backup " + spec.pool + "/" + spec.image + ": snapshot " + snap_name +
                           " was removed while it was read (by someone else); nothing was committed",
                       -ENOENT);
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

  const DiffBase base = choose_base(store, spec, *image, head, options);
  const std::optional<store::RevisionRecord>& parent = base.parent;
  const std::string& base_snap = base.snap;
  const std::string& full_reason = base.full_reason;
  // The newest revision's snapshot stays even when not used as the base (--full): if this run
  // fails, the next one can still diff against it.
  const std::string keep = parent ? parent->snap_name : std::string();
  remove_stale_snapshots(*image, prefix, keep, options.taken ? options.taken->name : std::string(), image_name);

  const uint64_t rev_id = options.taken ? options.taken->revision : store.reserve_revision_id();
  const std::string snap_name = prefix + std::to_string(rev_id);
  const NewSnapshot taken = take_snapshot(*image, spec, snap_name, rev_id, options);
  const rbd::SnapshotInfo& snap = taken.info;
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
    const SnapshotReadTotals totals =
        read_snapshot(at_snap, store, *writer, SnapshotRead{image_name, base_snap, parent, snap}, options, result);

    const store::RevisionInfo info =
        revision_info(head, snap_name, taken, base_snap.empty(), totals.bytes_read, options);
    check_cancelled(options, image_name);
    require_snapshot_kept(cluster, spec, snap_name, snap.id);
    const double commit_started = store::thread_cpu_seconds();
    result.revision = writer->commit(info);
    result.patch_chunks = writer->patch_chunks();
    result.patch_bytes = writer->patch_bytes();
    result.cpu_index += store::thread_cpu_seconds() - commit_started;
  } catch (...) {
    remove_snapshot_after_failure(cluster, spec, snap_name, std::current_exception());
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
