// Backup of one RBD image into a revision store: snapshot, changed extents, read, store, commit,
// then retire the previous backup snapshot.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

#include "agent/hooks.h"
#include "store/format.h"

namespace rbdvault::rbd {
class Cluster;
struct ImageSpec;
}  // namespace rbdvault::rbd
namespace rbdvault::store {
class Store;
class ReadOnlyStore;
class AppendStore;
class MaintenanceStore;
}

namespace rbdvault::agent {

// A snapshot taken for a backup beforehand, by a consistency group (agent/group_snapshot.h), named
// snapshot_prefix() + revision like the ones backup_image takes itself.
struct TakenSnapshot {
  uint64_t revision = 0;  // from Store::reserve_revision_id; the revision gets this id
  std::string name;
  uint64_t id = 0;        // Ceph snapshot id, checked again before the backup uses it
  int64_t time = 0;       // unix seconds when it was taken
  bool application = false;  // taken after a successful pre hook
  std::string group;         // recorded in the revision (store::kRevisionGroup)
  uint64_t group_run = 0;
  uint64_t group_gap_us = 0;
};

struct BackupOptions {
  // Read every allocated extent even when a diff base exists (still deduplicated). Bounds how long a
  // wrong diff could go unnoticed when run on a schedule.
  bool full = false;
  // Forces a full read when the newest N revisions of the image are all deltas (0: never), so a
  // wrong diff cannot hide for more than N backups.
  unsigned full_every = 0;
  // diff_iterate2's whole_object mode. Off by default: object-granular diffs read whole 4 MiB objects
  // for a 4 KiB change and, with fast-diff, have had resize bugs in Ceph 16.
  bool whole_object = false;
  // With fast-diff, find changed objects from the object maps first and diff only those exactly
  // (fast on large thin images). false: one exact diff over every object (slower, trusts no object
  // map). Proven against rbd export by the randomised tests on Ceph 16.2.
  bool object_map_filter = true;
  // Where the exact diff reports only part of a 64 KiB block changed, read only those bytes from
  // Ceph and take the rest from the parent revision's chunk (verified by its hash). false: read
  // every touched block whole.
  bool partial_reads = true;
  // Reads in flight against the cluster for this image.
  size_t reads_in_flight = 16;
  // Largest single read, in bytes (rounded to whole blocks).
  uint64_t max_read_bytes = 1ull << 20;
  // Worker threads hashing and compressing blocks (0: on the reading thread).
  size_t hash_threads = 2;
  // Blocks read but not yet handed to the store; with reads_in_flight * max_read_bytes this bounds
  // the backup's buffers whatever the image size.
  size_t max_blocks_pending = 128;
  // Called after each completed read with (bytes done, bytes planned); for progress display.
  std::function<void(uint64_t, uint64_t)> progress;
  // Batch runs: polled before every read and before the commit; once true the backup stops, rolls
  // back (no partial revision) and throws BackupCancelled.
  std::function<bool()> cancelled;
  // Called before each read with its length and after each read with the new chunk bytes written
  // to the store since the last call; both may block (bandwidth limits).
  std::function<void(uint64_t)> before_read;
  std::function<void(uint64_t)> after_store;
  // Creation time recorded in the revision (unix seconds); 0: when the snapshot is taken.
  int64_t created = 0;
  // After the commit, while its snapshot still exists, compare this percentage of the new
  // revision's blocks (chosen at random) with the snapshot (0: no check). A mismatch marks the
  // revision (kRevisionVerifyFailed) so that the image's next backup reads everything, and is
  // reported in BackupResult::verify_mismatches. Defence in depth against a wrong Ceph diff.
  double verify_sample_percent = 0;
  // Commands run just before and after the snapshot (agent/hooks.h); the revision is recorded as
  // application-consistent when the pre hook succeeded.
  SnapshotHooks hooks;
  // Set: back up from this snapshot instead of taking one (no hooks run). It is the backup's own
  // from then on: removed when the backup fails, like a snapshot the backup took.
  const TakenSnapshot* taken = nullptr;
};

struct BackupCancelled : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct BackupResult {
  store::RevisionRecord revision;
  std::string base_snapshot;   // snapshot diffed against; empty for a full read
  std::string full_reason;     // why a full read was done, empty for a diff
  // Why (part of) the diff was asked exactly instead of from object maps; empty if not needed.
  std::string exact_diff_reason;
  uint64_t bytes_planned = 0;  // bytes the changed-extent map asked us to read
  // Bytes of parent chunks read back from the store to complete partly changed blocks (the bytes
  // read from Ceph are revision.bytes_read).
  uint64_t bytes_read_store = 0;
  // Of the chunks new to the store (revision.new_chunks, bytes_stored), those stored as patches of
  // their parent's full chunk (docs/format.md §4.2), and their stored bytes (headers included).
  uint64_t patch_chunks = 0, patch_bytes = 0;
  // Thread CPU seconds: SHA-256, zstd, reading and patching parent chunks, and the writer (dedup
  // lookups, block map, pack appends, commit).
  double cpu_hash = 0, cpu_compress = 0, cpu_patch = 0, cpu_index = 0;
  size_t peak_reads_in_flight = 0;
  size_t peak_blocks_pending = 0;
  double seconds = 0;
  uint64_t verify_blocks_compared = 0;  // by the post-backup check (verify_sample_percent)
  uint64_t verify_mismatches = 0;       // non-zero: the revision differs from its snapshot
  std::string verify_error;             // why the post-backup check could not run (the backup stands)
};

// Backs up pool/image into `store` (opened as writer). Throws rbd::CephError or store::StoreError;
// on failure nothing is committed and the new snapshot is removed again.
BackupResult backup_image(rbd::Cluster& cluster, store::AppendStore& store, const rbd::ImageSpec& spec,
                          const BackupOptions& options);

// "revision N of POOL/IMAGE differs from its snapshot in M of K sampled blocks; ..." (one line).
std::string verify_failure_message(const BackupResult& result);

// The snapshot name prefix this store uses on Ceph images: "rbdvault-<store id prefix>-".
std::string snapshot_prefix(const store::ReadOnlyStore& store);

}  // namespace rbdvault::agent
