// One batch run: every image a config selects that is due gets backed up (images in parallel,
// within the process and host limits), then retention is applied. One failing image never stops
// the others; transient Ceph errors are retried with backoff.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "agent/batch_config.h"
#include "agent/copy_step.h"
#include "agent/error_class.h"
#include "agent/fsck_step.h"

namespace rbdvault::agent {

struct RunOptions {
  std::string job;       // only this job; empty: all
  bool dry_run = false;  // decide and report, change nothing (no snapshot, no store write)
  bool force = false;    // back up every selected image, due or not
  // Polled throughout; once true, running backups are abandoned (no partial revision), nothing new
  // starts and retention is skipped.
  std::function<bool()> stop;
  // The clock schedules and revision times use (unix seconds); default: the real one. The agent's
  // test-only --time-scale runs it faster.
  std::function<int64_t()> now;
  // Images not to try before the given time (the agent's backoff after a failed run).
  std::map<std::string, int64_t> not_before;
  // Called as images finish, for a progress line: (images done, images to do, bytes read so far).
  std::function<void(size_t, size_t, uint64_t)> progress;
  std::string command_line;  // for the operation log
  // Rewrite the metrics file even when nothing was due (the agent's idle polls do not).
  bool metrics_when_idle = true;
  // Checks the file systems of a new revision for images with `fsck = yes` (agent/fsck_step.h);
  // unset, such images get an UNKNOWN verdict saying so.
  FsckFunction fsck;
};

enum class ImageResult { kOk, kFailed, kNotDue, kSkipped, kMissing, kCancelled, kWouldBackUp };
const char* result_name(ImageResult r);

struct ImageOutcome {
  std::string image;  // pool/name (pool/* for a pool that could not be listed)
  std::string job;
  ImageResult result = ImageResult::kNotDue;
  uint64_t revision = 0;
  std::string kind;  // full, delta
  std::string consistency;  // application, crash (when a revision was made)
  std::string group;        // its [group.NAME], if any
  uint64_t group_run = 0;   // the group run its revision belongs to (0: none)
  uint64_t size = 0, bytes_read = 0, bytes_stored = 0;
  double seconds = 0;
  unsigned attempts = 0;
  std::string error;
  ErrorClass error_class = ErrorClass::kOk;  // of `error` when the result is kFailed
  size_t expired = 0;  // revisions forgotten by retention
  int fsck_state = -1;  // of the new revision (fsck = yes): 0 OK .. 3 UNKNOWN; -1: not checked
  std::string fsck_summary;
  // Wall-clock interval (unix ns) during which this backup held its place in the limits; the
  // tests compute the peak concurrency across processes from these.
  int64_t started_ns = 0, finished_ns = 0;
};

// A consistency group's line in the report: its members' results summed up.
struct GroupOutcome {
  std::string name;
  std::vector<std::string> images;  // pool/name, config order
  // ok: every member backed up; failed: a member failed, is missing or lost its snapshot (error
  // names it); not-due, would-back-up, cancelled as for images.
  ImageResult result = ImageResult::kNotDue;
  uint64_t run = 0;     // group run id shared by the members' revisions (0: no snapshots taken)
  uint64_t gap_us = 0;  // first to last snapshot
  std::string consistency;  // application, crash (when snapshots were taken)
  std::string error;
  ErrorClass error_class = ErrorClass::kOk;
};

struct RunReport {
  std::vector<ImageOutcome> images;  // in config order: job by job, images by name
  std::vector<GroupOutcome> groups;  // in config order
  CopyStepOutcome copy;              // the [copy] step (copy.ran: it ran in this run)
  size_t peak_parallel = 0;          // most image backups this process ran at once
  bool stopped = false;
  size_t count(ImageResult r) const;
  bool ok() const { return failure_class() == ErrorClass::kOk; }
  // The class the failed images and groups share, kFailed when they differ, kOk when none failed.
  ErrorClass failure_class() const;
};

// Throws ConfigError/StoreError/CephError only for what stops the whole run (store locked,
// cluster unreachable); per-image problems are outcomes.
RunReport run_batch(const BatchConfig& config, const RunOptions& options);

}  // namespace rbdvault::agent
