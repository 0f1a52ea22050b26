// A committed revision as a byte range, read straight from the store: what `mount` serves and `fsck`
// checks. Every chunk comes from Store::read_chunk (verified against its hash) or from the cache.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "store/format.h"
#include "view/block_cache.h"

namespace rbdvault::store {
class ReadOnlyStore;
}

namespace rbdvault::view {

// A window [base, base + length) of a revision: the whole revision, or one of its partitions.
struct RevisionBytes {
  std::shared_ptr<store::ReadOnlyStore> store;  // the snapshot the revision was found in; keeps it open
  store::RevisionRecord rev;
  uint64_t base = 0;
  uint64_t length = 0;
};

// Copies up to `len` bytes at `offset` of the window into `buf`; returns the count (0 at the end).
// Blocks without data read as zeros. Throws StoreError when a chunk fails its check.
[[nodiscard]] size_t read_at(const RevisionBytes& r, BlockCache& cache, uint64_t offset, char* buf, size_t len);

// lseek(SEEK_DATA / SEEK_HOLE) within the window, at block granularity: the first offset >= `offset`
// that is in a data block (data = true) or in a zero block or at the end (data = false). nullopt:
// no data at or after `offset` (lseek's ENXIO).
[[nodiscard]] std::optional<uint64_t> seek(const RevisionBytes& r, uint64_t offset, bool data);

}  // namespace rbdvault::view
