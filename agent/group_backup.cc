#include "agent/group_backup.h"

#include "agent/group_snapshot.h"
#include "store/store.h"  // Store is an AppendStore (backup_image)

namespace rbdvault::agent {
namespace {

void add_failure(GroupBackup& g, const GroupMemberBackup& m) {
  g.error += (g.error.empty() ? "" : "; ") + m.spec.str() + ": " + m.error;
  if (g.error_class == ErrorClass::kOk)
    g.error_class = m.error_class;
  else if (g.error_class != m.error_class)
    g.error_class = ErrorClass::kFailed;
}

}  // namespace

GroupBackup backup_group(rbd::Cluster& cluster, store::Store& store, const std::string& group,
                         const std::vector<rbd::ImageSpec>& images, const BackupOptions& options) {
  // The name goes into every member's revision record, which holds at most kMaxGroupName bytes:
  // refused before any snapshot, or the records would commit and never read back.
  if (group.empty() || group.size() > store::kMaxGroupName)
    throw store::StoreError(store::StoreError::Kind::kInvalid,
                            "a group name is 1 to " + std::to_string(store::kMaxGroupName) + " bytes long");
  GroupBackup out;
  out.group = group;
  GroupSnapshots snaps = take_group_snapshots(cluster, store, group, options.hooks, images, options.created);
  out.run = snaps.run;
  out.gap_us = snaps.gap_us;
  out.application = snaps.application;
  bool complete = true;
  for (const GroupMemberSnapshot& s : snaps.members) complete = complete && s.taken.has_value();
  for (GroupMemberSnapshot& s : snaps.members) {
    GroupMemberBackup m;
    m.spec = s.spec;
    if (!s.taken) {
      m.error = s.error;
      m.error_class = s.error_class;
      add_failure(out, m);
    } else if (!complete) {  // a partial group is not the consistent set asked for
      remove_group_snapshot(cluster, s.spec, s.taken->name);
      m.error = "not backed up: another member of group " + group + " has no snapshot";
    } else {
      BackupOptions bo = options;
      bo.hooks = {};  // the group's hooks ran around all the snapshots
      bo.taken = &*s.taken;
      try {
        m.result = backup_image(cluster, store, s.spec, bo);  // removes the snapshot when it fails
        if (m.result->verify_mismatches) {
          m.error = verify_failure_message(*m.result);
          m.error_class = ErrorClass::kDamage;
        }
      } catch (const std::exception& e) {
        m.error = e.what();
        m.error_class = classify(std::current_exception());
      }
      if (m.error_class != ErrorClass::kOk) add_failure(out, m);
    }
    out.members.push_back(std::move(m));
  }
  return out;
}

}  // namespace rbdvault::agent
