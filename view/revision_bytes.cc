#include "view/revision_bytes.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "store/store.h"

namespace rbdvault::view {
namespace {

// Block map entries scanned per step of a seek: bounds the work of one lseek over a long hole.
constexpr uint64_t kSeekWindowBlocks = 4096;

}  // namespace

size_t read_at(const RevisionBytes& r, BlockCache& cache, uint64_t offset, char* buf, size_t len) {
  if (offset >= r.length) return 0;
  len = static_cast<size_t>(std::min<uint64_t>(len, r.length - offset));
  std::memset(buf, 0, len);
  store::ReadOnlyStore& st = *r.store;
  const uint64_t bs = st.block_size();
  const uint64_t start = r.base + offset, end = start + len;
  // The block map first (one iterator), the chunks after: no RocksDB iterator is held across reads.
  std::vector<std::pair<uint64_t, store::Hash>> blocks;
  st.newest_entries(r.rev.image, start / bs, (end + bs - 1) / bs, r.rev.id,
                    [&](uint64_t block, const std::optional<store::Hash>& h) {
                      if (h) blocks.emplace_back(block, *h);
                    });
  for (const auto& [block, hash] : blocks) {
    const BlockCache::Data data = cache.get(hash, [&, h = hash] { return st.read_chunk(h); });
    const uint64_t block_start = block * bs;
    const uint64_t from = std::max(start, block_start), to = std::min(end, block_start + data->size());
    if (from < to) std::memcpy(buf + (from - start), data->data() + (from - block_start), to - from);
  }
  return len;
}

std::optional<uint64_t> seek(const RevisionBytes& r, uint64_t offset, bool data) {
  if (offset >= r.length) return data ? std::nullopt : std::optional<uint64_t>(r.length);
  store::ReadOnlyStore& st = *r.store;
  const uint64_t bs = st.block_size();
  const uint64_t start = r.base + offset, end = r.base + r.length;
  const uint64_t end_block = (end + bs - 1) / bs;
  // Windows of the block map: a block with no entry, or a zero entry, is a hole.
  for (uint64_t first = start / bs; first < end_block; first += kSeekWindowBlocks) {
    const uint64_t last = std::min(end_block, first + kSeekWindowBlocks);
    std::optional<uint64_t> found;
    uint64_t expect = first;  // the next block when every block so far was data
    st.newest_entries(r.rev.image, first, last, r.rev.id, [&](uint64_t block, const std::optional<store::Hash>& h) {
      if (found) return;
      if (data && h) found = block;
      if (!data) {
        if (block != expect) found = expect;  // a block without an entry before this one
        else if (!h) found = block;
        expect = block + 1;
      }
    });
    if (!data && !found && expect < last) found = expect;
    if (found) {
      const uint64_t at = std::max(start, *found * bs);
      if (at >= end) return data ? std::nullopt : std::optional<uint64_t>(r.length);
      return at - r.base;
    }
  }
  return data ? std::nullopt : std::optional<uint64_t>(r.length);
}

}  // namespace rbdvault::view
