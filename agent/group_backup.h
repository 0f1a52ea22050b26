// A consistency group backed up on its own (rbdvault backup --group): the group's snapshots
// (agent/group_snapshot.h, the batch run's function), then each member backed up from its
// snapshot. Batch runs use agent/group_run.h instead, which fits groups into a run's plan.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "agent/backup.h"
#include "agent/error_class.h"
#include "rbd/image.h"

namespace rbdvault::agent {

struct GroupMemberBackup {
  rbd::ImageSpec spec;
  std::optional<BackupResult> result;        // set: its revision was committed
  std::string error;                         // why not (or, with a result, its verify failure)
  ErrorClass error_class = ErrorClass::kOk;  // kOk with an error: not attempted, another member failed
};

struct GroupBackup {
  std::string group;
  std::vector<GroupMemberBackup> members;  // in the order given
  uint64_t run = 0;                        // the group run shared by the members' revisions
  uint64_t gap_us = 0;                     // first to last snapshot
  bool application = false;
  std::string error;  // empty: every member committed a verified revision; else names the members
  ErrorClass error_class = ErrorClass::kOk;  // the failed members' shared class, kFailed when they differ
};

// Snapshots `images` as group `group` between one pre and one post hook (options.hooks), then backs
// each member up from its snapshot with `options`. The group is all or nothing up to its
// snapshots: when one cannot be taken (missing image, failed pre hook under skip) no member is
// backed up and the snapshots taken are removed. A member whose backup fails does not stop the
// others. Never throws for a member.
[[nodiscard]] GroupBackup backup_group(rbd::Cluster& cluster, store::Store& store, const std::string& group,
                                       const std::vector<rbd::ImageSpec>& images, const BackupOptions& options);

}  // namespace rbdvault::agent
