#include "agent/changed_bytes.h"

#include <algorithm>
#include <stdexcept>

namespace rbdvault::agent {

void ChangedBytes::add_exact(uint64_t offset, uint64_t length) {
  if (finished_) throw std::logic_error("ChangedBytes::add after finish");
  if (length == 0) return;
  const uint64_t end = offset + length;
  // librbd reports extents in ascending order per object: extend the last range when they touch,
  // so that a run of adjacent extents costs one entry.
  if (!ranges_.empty() && offset >= ranges_.back().first && offset <= ranges_.back().second) {
    ranges_.back().second = std::max(ranges_.back().second, end);
    return;
  }
  ranges_.emplace_back(offset, end);
}

void ChangedBytes::add_blocks(uint64_t first, uint64_t end) {
  if (first < end) add_exact(first * bs_, (end - first) * bs_);
}

void ChangedBytes::finish() {
  std::sort(ranges_.begin(), ranges_.end());
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (auto& r : ranges_) {
    if (!out.empty() && r.first <= out.back().second)
      out.back().second = std::max(out.back().second, r.second);
    else
      out.push_back(r);
  }
  ranges_ = std::move(out);
  finished_ = true;
}

std::vector<Piece> ChangedBytes::pieces(uint64_t block) const {
  if (!finished_) throw std::logic_error("ChangedBytes::pieces before finish");
  const uint64_t lo = block * bs_, hi = lo + bs_;
  // The first range ending after lo: ranges are disjoint and sorted, so ends are sorted too.
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), lo,
                             [](uint64_t v, const std::pair<uint64_t, uint64_t>& r) { return v < r.second; });
  std::vector<Piece> out;
  for (; it != ranges_.end() && it->first < hi; ++it) {
    const uint64_t b = std::max(it->first, lo), e = std::min(it->second, hi);
    out.push_back({b - lo, e - b});
  }
  return out;
}

}  // namespace rbdvault::agent
