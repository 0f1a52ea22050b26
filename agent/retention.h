// Retention policy (restic-style buckets): which revisions of an image `expire` keeps.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rbdvault::agent {

// Each keep-* counts buckets: walking revisions from newest to oldest, a revision is kept for a
// bucket kind when it is the newest one in a bucket (UTC hour, day, ISO week, month) not seen yet,
// until N buckets of that kind are filled. keep_last keeps the N newest. A revision kept by any rule
// stays. The newest revision and protected revisions are always kept.
struct RetentionPolicy {
  int keep_last = 0;
  int keep_hourly = 0;
  int keep_daily = 0;
  int keep_weekly = 0;
  int keep_monthly = 0;
  bool empty() const { return !keep_last && !keep_hourly && !keep_daily && !keep_weekly && !keep_monthly; }
};

struct RetentionInput {
  uint64_t id = 0;
  int64_t created = 0;  // unix seconds
  bool is_protected = false;
};

struct RetentionDecision {
  uint64_t id = 0;
  bool keep = false;
  std::string reasons;  // "last, daily", "newest", "protected", or empty when forgotten
};

// `revisions` in any order; the result is newest first.
std::vector<RetentionDecision> apply_retention(std::vector<RetentionInput> revisions, const RetentionPolicy& policy);

}  // namespace rbdvault::agent
