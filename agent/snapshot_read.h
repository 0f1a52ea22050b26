// Reading one snapshot into a revision (agent/backup.cc's middle step): the read plan from Ceph's
// diff against the base snapshot (narrowed by the object map where it is trusted, agent/diff_trust.h),
// partly changed blocks read in pieces and completed from the parent revision's chunks, and every
// block hashed, compressed and stored in block order through the pipeline (agent/block_pipeline.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "agent/backup.h"
#include "rbd/image.h"
#include "store/revision_store.h"

namespace rbdvault::agent {

struct SnapshotRead {
  std::string image_name;                       // POOL/IMAGE, for log lines
  std::string base_snap;                        // the snapshot diffed against; empty: a full read
  std::optional<store::RevisionRecord> parent;  // the revision base_snap belongs to
  rbd::SnapshotInfo snap;                       // the snapshot read
};

struct SnapshotReadTotals {
  uint64_t bytes_read = 0;      // from Ceph, the re-reads of blocks whose parent chunk was damaged included
  uint64_t blocks_reread = 0;  // blocks read whole because their parent chunk failed its check
};

// Reads `what.snap` (opened as at_snap) into `writer`, filling result's read figures (bytes planned,
// from the store, CPU, peaks, exact_diff_reason). Throws BackupCancelled when options.cancelled says
// so; nothing is committed here.
SnapshotReadTotals read_snapshot(rbd::Image& at_snap, store::AppendStore& store, store::RevisionWriter& writer,
                                 const SnapshotRead& what, const BackupOptions& options, BackupResult& result);

// Throws BackupCancelled once options.cancelled says so.
void check_cancelled(const BackupOptions& options, const std::string& image_name);

}  // namespace rbdvault::agent
