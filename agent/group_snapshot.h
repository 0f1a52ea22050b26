// The snapshots of a consistency group: every member image snapshotted back to back between one
// pre and one post hook, the gap between the first and the last measured. Each member is then
// backed up as usual from its snapshot (BackupOptions::taken). An RBD group snapshot is not used:
// librbd 16.2 cannot diff from one (docs/operations.md "Consistency groups").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "agent/backup.h"
#include "agent/error_class.h"
#include "agent/hooks.h"
#include "rbd/image.h"

namespace rbdvault::rbd {
class Cluster;
}
namespace rbdvault::store {
class Store;
}

namespace rbdvault::agent {

struct GroupMemberSnapshot {
  rbd::ImageSpec spec;
  std::optional<TakenSnapshot> taken;  // nullopt: no snapshot (see error)
  std::string error;                   // why not
  ErrorClass error_class = ErrorClass::kOk;
};

struct GroupSnapshots {
  std::vector<GroupMemberSnapshot> members;  // in the order given
  uint64_t run = 0;     // the group run id recorded in each revision (the first reserved revision id)
  uint64_t gap_us = 0;  // from the release of the snapshot requests to the end of the last one
  bool application = false;
};

// Reserves a revision id per member, then runs hooks.pre, snapshots every member (named
// snapshot_prefix(store) + id, all requests at once, one thread each), then hooks.post (always,
// once the pre hook ran). The hooks get RBDVAULT_GROUP, RBDVAULT_GROUP_RUN, RBDVAULT_IMAGES and
// RBDVAULT_SNAPSHOTS (space-separated, member order), RBDVAULT_HOOK and, for post,
// RBDVAULT_SNAPSHOT_RESULT (ok, failed when any snapshot failed, skipped). Never throws for a
// member: a member whose image cannot be opened or snapshotted, or all of them when the pre hook
// fails under on-hook-failure skip, get an error instead. `created` (unix seconds, 0: now) is
// each snapshot's time.
[[nodiscard]] GroupSnapshots take_group_snapshots(rbd::Cluster& cluster, store::Store& store, const std::string& group,
                                                  const SnapshotHooks& hooks, const std::vector<rbd::ImageSpec>& images,
                                                  int64_t created);

// Removes a group snapshot whose backup never committed (a stopped run, a failed member); a
// snapshot already gone is fine. Logs instead of throwing.
void remove_group_snapshot(rbd::Cluster& cluster, const rbd::ImageSpec& spec, const std::string& snap_name);

}  // namespace rbdvault::agent
