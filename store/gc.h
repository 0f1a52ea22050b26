// Space accounting (du) and reclaim (gc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rbdvault::store {

class Store;

struct GcOptions {
  // A pack whose unreferenced bytes exceed this fraction of its size is rewritten without them;
  // packs with no referenced chunk are always deleted. 0 reclaims every unreferenced byte at the cost
  // of copying more data.
  double max_unused = 0.05;
  bool dry_run = false;
};

struct GcResult {
  uint64_t chunks_removed = 0;
  uint64_t packs_deleted = 0;
  uint64_t packs_rewritten = 0;
  uint64_t packs_skipped = 0;  // not rewritten: a chunk in it is damaged (reported; scrub and repair)
  uint64_t bytes_before = 0;  // pack bytes on disk
  uint64_t bytes_after = 0;
};

// Frees chunk data no revision references. Needs the store opened as writer and no readers (takes
// the readers lock exclusively). Crash-safe: each pack is switched in one atomic index write before
// its old file is deleted; leftovers are cleaned by the next writer.
GcResult gc(Store& store, const GcOptions& options);

struct RevisionUsage {
  uint64_t revision = 0;
  uint64_t unique_bytes = 0;  // stored bytes forgetting this revision (then gc) would free
};

struct ImageUsage {
  std::string image;  // pool/name
  uint64_t revisions = 0;
  uint64_t logical_bytes = 0;  // size of the newest revision
  // The image's share of stored bytes: each chunk's bytes divided among the block map entries
  // referencing it (so shared chunks are not counted twice across images).
  uint64_t stored_bytes = 0;
  std::vector<RevisionUsage> per_revision;
};

struct StoreUsage {
  std::vector<ImageUsage> images;
  uint64_t pack_bytes = 0;          // on disk
  uint64_t referenced_bytes = 0;    // chunks with references (header + payload)
  uint64_t unreferenced_bytes = 0;  // what gc could free
  uint64_t index_bytes = 0;         // RocksDB files
};

StoreUsage du(Store& store, const std::string& only_image = {});
// The two sizes of du() that cost only a directory listing (for the metrics file after every run).
[[nodiscard]] uint64_t pack_bytes_on_disk(Store& store);
[[nodiscard]] uint64_t index_bytes_on_disk(Store& store);

}  // namespace rbdvault::store
