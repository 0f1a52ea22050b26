// Consistency groups inside a batch run (agent/batch_run.cc): which groups run, their snapshots
// (agent/group_snapshot.h) and their lines in the run report.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "agent/backup.h"
#include "agent/batch_config.h"
#include "agent/batch_run.h"

namespace rbdvault::rbd {
class Cluster;
}
namespace rbdvault::store {
class Store;
}

namespace rbdvault::agent {

struct GroupPlan {
  const GroupConfig* group = nullptr;
  std::vector<size_t> members;  // indices into the report's images: the members to back up, config order
  bool due = false;
};

// A group is backed up whole: when one member is due (its result is `planned`: kCancelled before
// a run, kWouldBackUp in a dry run) every other member that is not due becomes so too. Members
// skipped by their settings stay out. Fills report.groups (one per group with a member in the
// plan) and returns the plans in the same order. `only_job` (run --job): members of other jobs
// are not part of this run. A group with `rbd-group` gets its members from `list_rbd_group`
// ("POOL/GROUP" -> "POOL/NAME"s, throws on failure); members no job selects or already in another
// group are left out and named in the group's error, and a group that cannot be listed fails.
using GroupLister = std::function<std::vector<std::string>(const std::string&)>;
[[nodiscard]] std::vector<GroupPlan> plan_groups(const BatchConfig& config, RunReport& report, ImageResult planned,
                                                 const std::string& only_job, const GroupLister& list_rbd_group);

// Takes the snapshots of a due group. Members whose snapshot could not be taken fail (outcome
// kFailed with the reason); the others get their snapshot, in plan.members order.
[[nodiscard]] std::vector<std::optional<TakenSnapshot>> snapshot_group(rbd::Cluster& cluster, store::Store& store,
                                                                       const GroupPlan& plan, RunReport& report,
                                                                       GroupOutcome& group, int64_t created);

// The group's result from its members' outcomes: ok only when every member made its revision; a
// failure names the images.
void finish_group(const GroupPlan& plan, const RunReport& report, GroupOutcome& group);

}  // namespace rbdvault::agent
