// Applying a retention policy to one image of a store (the `expire` command and batch runs).
#pragma once

#include <cstdint>
#include <vector>

#include "agent/retention.h"
#include "store/format.h"

namespace rbdvault::store {
class Store;
class ReadOnlyStore;
class AppendStore;
class MaintenanceStore;
}

namespace rbdvault::agent {

struct ExpireDecision {
  RetentionDecision decision;
  store::RevisionRecord revision;
};

// Decides per `policy` which revisions of `image` stay; unless `dry_run`, forgets the others, oldest
// first so each forget merges into a revision that stays or goes next. Returns the decisions, oldest
// first. Throws StoreError.
std::vector<ExpireDecision> expire_image(store::MaintenanceStore& store, uint64_t image, const RetentionPolicy& policy,
                                         bool dry_run);

}  // namespace rbdvault::agent
