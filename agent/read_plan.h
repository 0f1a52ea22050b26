// Turns the changed extents librbd reports into what a backup does per block: read it, or record it
// as zeros without reading (extents reported as deallocated). Pure logic, unit-tested.
#pragma once

#include <cstdint>
#include <vector>

namespace rbdvault::agent {

struct BlockRun {
  uint64_t first = 0;  // first block
  uint64_t end = 0;    // one past the last block
  bool zero = false;   // true: known zeros, no read needed
  bool operator==(const BlockRun&) const = default;
};

class ReadPlan {
 public:
  ReadPlan(uint64_t block_size, uint64_t image_size) : bs_(block_size), size_(image_size) {}

  // An extent from diff_iterate2. exists=true: must be read. exists=false: deallocated, reads as
  // zeros; blocks it covers entirely become zero runs, partly covered blocks are read.
  void add_extent(uint64_t offset, uint64_t length, bool exists);
  // Forces a block to be read (e.g. the block holding an old or new end of the image).
  void add_block(uint64_t block);

  // Disjoint runs in ascending block order; a block both read and zeroed is read.
  std::vector<BlockRun> finish() const;
  uint64_t blocks() const { return (size_ + bs_ - 1) / bs_; }

 private:
  void add(std::vector<std::pair<uint64_t, uint64_t>>& runs, uint64_t first, uint64_t end);
  static std::vector<std::pair<uint64_t, uint64_t>> merged(std::vector<std::pair<uint64_t, uint64_t>> runs);

  uint64_t bs_, size_;
  // Memory follows the number of changed regions, not the image size.
  std::vector<std::pair<uint64_t, uint64_t>> reads_, zeros_;
};

}  // namespace rbdvault::agent
