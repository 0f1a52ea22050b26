// What monitoring needs to know per image, from the store and its operation log alone: the
// `status` and `check` commands and the Prometheus metrics file share it, so they never disagree.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rbdvault::store {
class ReadOnlyStore;
class Store;
}

namespace rbdvault::agent {

struct ImageStatus {
  std::string image;         // pool/name
  int64_t last_success = 0;  // creation time of the newest revision; 0: never
  uint64_t revisions = 0;
  uint64_t size = 0;          // of the newest revision
  uint64_t stored_bytes = 0;  // chunk bytes first stored by the image's current revisions
  std::string last_result;    // of the newest backup attempt in the log: ok, failed ("" if none)
  std::string last_error;     // when the newest attempt failed
  int64_t last_attempt = 0;   // unix seconds
  bool running = false;       // a backup of it is in progress (live process)
  // The newest revision differed from its snapshot when checked after its backup (a wrong diff):
  // CRITICAL until the next backup, which reads everything.
  bool verify_failed = false;
  // Of the newest revision: "application" (taken between successful hooks) or "crash"; "" if none.
  std::string consistency;
  int64_t running_since = 0;
  // Of the newest revision: what its backup read from Ceph and newly stored (dashboards chart the
  // nightly volume), and how long the newest successful backup took (from the operation log).
  uint64_t last_bytes_read = 0;
  uint64_t last_bytes_stored = 0;
  double last_duration_seconds = 0;
  // Of the newest revision: its consistency group, group run and snapshot gap ("" / 0 if none).
  std::string group;
  uint64_t group_run = 0;
  uint64_t group_gap_us = 0;
  // The newest fsck of the newest revision in the log (batch `fsck = yes` or `rbdvault fsck`):
  // 0 OK .. 3 UNKNOWN, -1 if none; and its error line when not OK.
  int fsck_state = -1;
  std::string fsck_error;
};

std::vector<ImageStatus> collect_status(store::ReadOnlyStore& store);

// Nagios/Icinga plugin result: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; one line with perfdata.
struct CheckResult {
  int code = 3;
  std::string line;
};
// CRITICAL: an image whose newest attempt failed or whose last success is older than max_age (or
// that has none), or whose newest revision's fsck was CRITICAL. WARNING: older than warn_age (0: no
// warning level), or an fsck WARNING or UNKNOWN.
CheckResult check_status(const std::vector<ImageStatus>& images, int64_t now, int64_t max_age, int64_t warn_age);

// Prometheus text exposition format (for node_exporter's textfile collector).
std::string prometheus_metrics(const std::vector<ImageStatus>& images, int64_t now);
// The store-wide part of the metrics file: pack and index bytes on disk (a directory listing each).
std::string prometheus_store_metrics(store::Store& store);
// Writes `content` to `path` via a temporary file and rename, so a collector never reads half.
void write_file_atomically(const std::string& path, const std::string& content);

}  // namespace rbdvault::agent
