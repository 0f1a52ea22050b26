// The planning half of a batch run (agent/batch_run.cc does the rest): which images each job
// selects, which are due, which are gone from their pool, and which consistency groups come with
// them. Reads the cluster's image lists and the store; changes nothing.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "agent/batch_run.h"
#include "agent/group_run.h"
#include "agent/group_snapshot.h"
#include "rbd/cluster.h"
#include "store/revision_store.h"

namespace rbdvault::agent {

// One image backup the run will attempt.
struct BatchTask {
  size_t index;  // into report.images
  rbd::ImageSpec spec;
  std::optional<TakenSnapshot> taken;  // a consistency group's snapshot to back up from
};

struct BatchPlan {
  RunReport report;                    // every selected image, its result so far
  std::vector<ImageSettings> settings;  // parallel to report.images
  std::vector<BatchTask> tasks;         // the due ones ("cancelled" until they run)
  std::vector<GroupPlan> groups;        // parallel to report.groups
};

[[nodiscard]] BatchPlan plan_batch(const BatchConfig& c, const RunOptions& o, rbd::Cluster& cluster,
                                   store::ReadOnlyStore& st, const std::function<int64_t()>& now,
                                   const std::function<bool()>& stop);

// Errors worth another attempt: the cluster was busy or briefly unreachable. Anything else (no
// such image, permission, corruption) fails at once.
[[nodiscard]] bool transient_ceph_error(int code);
// Seconds to wait after failed attempt `attempt` (1-based): retry-delay, doubling each time.
[[nodiscard]] double retry_backoff(const ImageSettings& s, unsigned attempt);

}  // namespace rbdvault::agent
