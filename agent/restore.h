// Restore of a revision into a new RBD image or a sparse raw file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "store/format.h"

namespace rbdvault::rbd {
class Cluster;
}
namespace rbdvault::store {
class Store;
}

namespace rbdvault::agent {

struct RestoreOptions {
  size_t writes_in_flight = 16;
  // Adjacent blocks are coalesced into writes of up to this many bytes.
  uint64_t max_write_bytes = 4ull << 20;
  std::function<void(uint64_t, uint64_t)> progress;  // (bytes done, revision size)
};

struct RestoreResult {
  uint64_t bytes_written = 0;  // non-zero data written; zero blocks are never written
  uint64_t blocks_written = 0;
  uint64_t zero_blocks_skipped = 0;
  double seconds = 0;
};

// Creates pool/name with the revision's size (and the source's object size and features) and writes
// its non-zero blocks. An existing target is refused; a failed restore removes the half image.
RestoreResult restore_to_image(rbd::Cluster& cluster, store::Store& store, const store::RevisionRecord& rev,
                               const std::string& pool, const std::string& name, const RestoreOptions& options);

// Writes the revision as a sparse raw file of exactly its size. An existing file is refused; a failed
// restore removes the partial file.
RestoreResult restore_to_file(store::Store& store, const store::RevisionRecord& rev, const std::string& path,
                              const RestoreOptions& options);

}  // namespace rbdvault::agent
