// Checks against the source: verify compares a revision with its Ceph snapshot; repair rewrites
// damaged chunks from a source snapshot or from an intact copy found in the store.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "store/format.h"

namespace rbdvault::rbd {
class Cluster;
}
namespace rbdvault::store {
class Store;
class ReadOnlyStore;
class AppendStore;
class MaintenanceStore;
}

namespace rbdvault::agent {

struct VerifyOptions {
  double sample_percent = 100;  // blocks compared, chosen at random; 100 = all
  uint64_t seed = 0;            // 0: random
  size_t reads_in_flight = 16;
};

struct VerifyResult {
  uint64_t blocks_compared = 0;
  uint64_t mismatches = 0;
  std::vector<uint64_t> first_mismatches;  // block numbers, at most 10
};

// Compares revision `rev` block by block with the Ceph snapshot it was taken from. Throws CephError
// when the snapshot is gone (or belongs to a re-created image).
VerifyResult verify_revision(rbd::Cluster& cluster, store::ReadOnlyStore& store, const store::RevisionRecord& rev,
                             const VerifyOptions& options);

struct RepairResult {
  uint64_t damaged_chunks = 0;
  uint64_t repaired_from_source = 0;
  uint64_t repaired_from_copy = 0;
  uint64_t repaired_with_base = 0;          // patches that read again once their base was repaired
  std::vector<std::string> unrepaired;      // one line per chunk that could not be repaired
  std::vector<uint64_t> damaged_revisions;  // revisions still reading an unrepaired chunk
};

// `cluster` may be null (no source available): then only copies in the store are used.
RepairResult repair_store(rbd::Cluster* cluster, store::MaintenanceStore& store);

}  // namespace rbdvault::agent
