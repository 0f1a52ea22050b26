// Which bytes of each block a diff reported changed, so that a backup can read from Ceph only those
// bytes of a partly changed block and take the rest from the parent revision's chunk. Pure logic,
// unit-tested.
//
// Only extents from an exact diff (diff_iterate2 with whole_object=false) may be added as bytes:
// an object-granular extent says "something in this object changed", not which bytes, and must be
// added as whole blocks (add_blocks), as must blocks that have to be re-read for other reasons
// (the blocks cut by an old or new end of the image).
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace rbdvault::agent {

struct Piece {
  uint64_t offset = 0;  // from the start of the block
  uint64_t length = 0;
  bool operator==(const Piece&) const = default;
};

class ChangedBytes {
 public:
  explicit ChangedBytes(uint64_t block_size) : bs_(block_size) {}

  void add_exact(uint64_t offset, uint64_t length);
  void add_blocks(uint64_t first, uint64_t end);
  // Sorts and merges what was added; call once, after the last add and before pieces().
  void finish();

  // The changed bytes of `block`, ascending and disjoint, clipped to the block. Empty: nothing was
  // reported there. A single piece {0, block size}: the whole block changed (or must be read).
  [[nodiscard]] std::vector<Piece> pieces(uint64_t block) const;
  [[nodiscard]] static bool whole(const std::vector<Piece>& p, uint64_t block_size) {
    return p.size() == 1 && p[0].offset == 0 && p[0].length == block_size;
  }
  // Memory follows the number of separate changed ranges (bounded by the diff), not the image size.
  [[nodiscard]] size_t ranges() const { return ranges_.size(); }

 private:
  uint64_t bs_;
  std::vector<std::pair<uint64_t, uint64_t>> ranges_;  // [begin, end) bytes
  bool finished_ = false;
};

}  // namespace rbdvault::agent
