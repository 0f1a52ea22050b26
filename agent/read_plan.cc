#include "agent/read_plan.h"

#include <algorithm>

namespace rbdvault::agent {

void ReadPlan::add(std::vector<std::pair<uint64_t, uint64_t>>& runs, uint64_t first, uint64_t end) {
  end = std::min(end, blocks());
  if (first >= end) return;
  // librbd reports extents in ascending order per object; extend the last run when contiguous.
  if (!runs.empty() && first >= runs.back().first && first <= runs.back().second) {
    runs.back().second = std::max(runs.back().second, end);
    return;
  }
  runs.emplace_back(first, end);
}

void ReadPlan::add_extent(uint64_t offset, uint64_t length, bool exists) {
  if (length == 0 || offset >= size_) return;
  const uint64_t stop = std::min(offset + length, size_);
  const uint64_t first = offset / bs_, last_end = (stop + bs_ - 1) / bs_;
  if (exists) return add(reads_, first, last_end);
  // Blocks entirely inside [offset, stop) are zeros (the padding past the image end counts as
  // covered); the partly covered blocks at either edge keep other data and must be read.
  const uint64_t full_first = (offset + bs_ - 1) / bs_;
  const uint64_t full_end = stop == size_ ? last_end : stop / bs_;
  if (full_first >= full_end) return add(reads_, first, last_end);
  if (first < full_first) add(reads_, first, full_first);
  add(zeros_, full_first, full_end);
  if (full_end < last_end) add(reads_, full_end, last_end);
}

void ReadPlan::add_block(uint64_t block) { add(reads_, block, block + 1); }

std::vector<std::pair<uint64_t, uint64_t>> ReadPlan::merged(std::vector<std::pair<uint64_t, uint64_t>> runs) {
  std::sort(runs.begin(), runs.end());
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (auto& r : runs) {
    if (!out.empty() && r.first <= out.back().second)
      out.back().second = std::max(out.back().second, r.second);
    else
      out.push_back(r);
  }
  return out;
}

std::vector<BlockRun> ReadPlan::finish() const {
  const auto reads = merged(reads_);
  const auto zeros = merged(zeros_);
  std::vector<BlockRun> out;
  for (auto& r : reads) out.push_back({r.first, r.second, false});
  // Zero runs minus read runs (both sorted and disjoint).
  size_t ri = 0;
  for (auto [first, end] : zeros) {
    while (ri < reads.size() && reads[ri].second <= first) ++ri;
    size_t k = ri;
    while (first < end) {
      if (k < reads.size() && reads[k].first < end) {
        if (reads[k].first > first) out.push_back({first, reads[k].first, true});
        first = std::max(first, reads[k].second);
        ++k;
      } else {
        out.push_back({first, end, true});
        first = end;
      }
    }
  }
  std::sort(out.begin(), out.end(), [](const BlockRun& a, const BlockRun& b) { return a.first < b.first; });
  return out;
}

}  // namespace rbdvault::agent
