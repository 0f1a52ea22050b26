// Restore of a revision into a new RBD image or a sparse raw file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

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

struct RestoreOptions {
  size_t writes_in_flight = 16;
  // Adjacent blocks are coalesced into writes of up to this many bytes.
  uint64_t max_write_bytes = 4ull << 20;
  // Threads reading, decompressing and verifying chunks; 0: one per core.
  size_t decode_threads = 0;
  // Bounds the blocks between the index scan and the write (see OrderedWriterOptions::window_bytes).
  uint64_t window_bytes = 32ull << 20;
  std::function<void(uint64_t, uint64_t)> progress;  // (bytes done, revision size)
  // Recompute the whole-revision digest from the blocks written and fail on a mismatch. Off only
  // to salvage revisions whose stored digest is known to be wrong (see docs/format.md §14).
  bool check_digest = true;
  // Asked between blocks; true stops the restore with RestoreStopped, the partial target removed.
  std::function<bool()> stop;
};

// A restore stopped by RestoreOptions::stop (SIGTERM, SIGINT): nothing was published.
class RestoreStopped : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct RestoreResult {
  uint64_t bytes_written = 0;  // non-zero data written; zero blocks are never written
  uint64_t blocks_written = 0;
  uint64_t zero_blocks_skipped = 0;
  double seconds = 0;
};

// The name a restore writes under until it is complete: NAME.rbdvault-partial (an image in the
// target's pool, or a file in the target's directory). One left behind is an unfinished restore;
// the next restore to the same target removes it.
std::string partial_name(const std::string& name);
bool is_partial_name(const std::string& name);

// Both restores are atomic under the target's name: the target appears, complete and checked,
// or not at all. They write under partial_name(), check the revision's digest (a mismatch throws
// StoreError kCorrupt), make the data durable, then rename; an existing target is refused before
// anything is written and again at the rename. A failed restore removes what it wrote.

// Throws StoreError kCorrupt unless `actual` (the digest of the block map about to be read) is the
// revision's recorded digest; with enforce false only warns that the revision is used anyway
// (`--skip-digest-check`). `use` says what happens to it: "restored", "served".
void check_revision_digest(const store::RevisionRecord& rev, const store::Hash& actual, bool enforce,
                           const char* use);

// Creates pool/name with the revision's size (and the source's object size and features) and writes
// its non-zero blocks.
RestoreResult restore_to_image(rbd::Cluster& cluster, store::ReadOnlyStore& store, const store::RevisionRecord& rev,
                               const std::string& pool, const std::string& name, const RestoreOptions& options);

// Writes the revision as a sparse raw file of exactly its size; fsyncs it and its directory.
RestoreResult restore_to_file(store::ReadOnlyStore& store, const store::RevisionRecord& rev, const std::string& path,
                              const RestoreOptions& options);

}  // namespace rbdvault::agent
