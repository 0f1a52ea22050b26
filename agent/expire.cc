#include "agent/expire.h"

#include <map>

#include "store/store.h"

namespace rbdvault::agent {

std::vector<ExpireDecision> expire_image(store::MaintenanceStore& store, uint64_t image, const RetentionPolicy& policy,
                                         bool dry_run) {
  std::vector<RetentionInput> in;
  std::map<uint64_t, store::RevisionRecord> by_id;
  for (auto& r : store.revisions(image)) {
    in.push_back({r.id, r.created, (r.flags & store::kRevisionProtected) != 0});
    by_id[r.id] = r;
  }
  auto decisions = apply_retention(in, policy);  // newest first
  std::vector<ExpireDecision> out;
  for (auto it = decisions.rbegin(); it != decisions.rend(); ++it) {
    if (!it->keep && !dry_run) store.forget(it->id);
    out.push_back(ExpireDecision{*it, by_id[it->id]});
  }
  return out;
}

}  // namespace rbdvault::agent
