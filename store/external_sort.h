// Sorting and counting more fixed-size records than memory should hold: scrub, repair, du and gc
// over millions of chunks. Records are buffered up to a byte budget; a full buffer is sorted and
// equal records merged (their counts added), and unless that freed half of it, it is written to an
// unlinked temporary file as a sorted run; every 16 runs of one size are merged into one. Reading
// merges the runs. Memory: the budget plus a 64 KiB buffer per run (at most 15 per level, and a
// level per 16-fold growth); disk: the records, in $TMPDIR (else /tmp), gone when the process ends.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace rbdvault::store {

// The budget of one sorter. RBDVAULT_SORT_BUDGET (bytes; tests use it to force spilling on small
// stores) overrides the default of 16 MiB.
[[nodiscard]] size_t sort_budget_bytes();

// An unlinked temporary file written once, then read back sequentially.
class SpillFile {
 public:
  SpillFile();
  ~SpillFile();
  SpillFile(const SpillFile&) = delete;
  SpillFile& operator=(const SpillFile&) = delete;
  void write(const void* data, size_t n);
  void end_writing();                // flushes; reading starts at the beginning
  [[nodiscard]] bool read(void* data, size_t n);  // false at the end of the file

 private:
  void flush();
  int fd_ = -1;
  std::string buf_;
  size_t pos_ = 0;          // read position in buf_
  uint64_t file_off_ = 0;   // next file offset to read
};

template <size_t N>
class ExternalSorter {
 public:
  using Key = std::array<uint8_t, N>;
  struct Entry {
    Key key;
    uint64_t count;
  };

  explicit ExternalSorter(size_t budget_bytes = sort_budget_bytes())
      : capacity_(std::max<size_t>(budget_bytes / sizeof(Entry), 1024)) {}

  void add(const Key& key, uint64_t count = 1) {
    if (buffer_.size() >= capacity_) {
      compact();
      if (buffer_.size() > capacity_ / 2) spill();
    }
    buffer_.push_back(Entry{key, count});
  }

  // After the last add(): the distinct keys in ascending byte order, each once with its count.
  [[nodiscard]] bool next(Entry& out) {
    if (!reading_) start_reading();
    if (runs_.empty()) {
      if (mem_pos_ >= buffer_.size()) return false;
      out = buffer_[mem_pos_++];
      return true;
    }
    return merge_next(runs_, out);
  }

  size_t runs() const { return runs_.size(); }

 private:
  struct Run {
    std::unique_ptr<SpillFile> file;
    Entry head{};
    bool live = false;
    int level = 0;  // 0: spilled from the buffer; n + 1: merged from kFanIn runs of level n
  };
  // Runs merged at once: bounds the read buffers held (kFanIn per level, and a few levels).
  static constexpr size_t kFanIn = 16;

  // The smallest head among `runs`, with the counts of equal heads added; advances past them.
  static bool merge_next(std::vector<Run>& runs, Entry& out) {
    size_t best = runs.size();
    for (size_t i = 0; i < runs.size(); ++i)
      if (runs[i].live && (best == runs.size() || less(runs[i].head.key, runs[best].head.key))) best = i;
    if (best == runs.size()) return false;
    out = runs[best].head;
    advance(runs[best]);
    for (auto& r : runs)  // the same key in other runs
      while (r.live && r.head.key == out.key) {
        out.count += r.head.count;
        advance(r);
      }
    return true;
  }

  static bool less(const Key& a, const Key& b) { return std::memcmp(a.data(), b.data(), N) < 0; }

  void compact() {
    std::sort(buffer_.begin(), buffer_.end(), [](const Entry& a, const Entry& b) { return less(a.key, b.key); });
    size_t out = 0;
    for (size_t i = 0; i < buffer_.size(); ++i) {
      if (out > 0 && buffer_[out - 1].key == buffer_[i].key)
        buffer_[out - 1].count += buffer_[i].count;
      else
        buffer_[out++] = buffer_[i];
    }
    buffer_.resize(out);
  }

  void spill() {
    Run run;
    run.file = std::make_unique<SpillFile>();
    for (const Entry& e : buffer_) write_entry(*run.file, e);
    run.file->end_writing();
    runs_.push_back(std::move(run));
    buffer_.clear();
    // Tiered merging: kFanIn runs of one level become one run of the next.
    for (int level = 0;; ++level) {
      std::vector<Run> same, rest;
      for (auto& r : runs_) (r.level == level ? same : rest).push_back(std::move(r));
      if (same.size() < kFanIn) {
        for (auto& r : same) rest.push_back(std::move(r));
        runs_ = std::move(rest);
        return;
      }
      Run merged;
      merged.file = std::make_unique<SpillFile>();
      merged.level = level + 1;
      for (auto& r : same) advance(r);
      Entry e;
      while (merge_next(same, e)) write_entry(*merged.file, e);
      merged.file->end_writing();
      rest.push_back(std::move(merged));
      runs_ = std::move(rest);
    }
  }

  static void write_entry(SpillFile& f, const Entry& e) {
    f.write(e.key.data(), N);
    f.write(&e.count, sizeof(e.count));
  }

  static void advance(Run& r) {
    r.live = r.file->read(r.head.key.data(), N) && r.file->read(&r.head.count, sizeof(r.head.count));
  }

  void start_reading() {
    reading_ = true;
    compact();
    if (runs_.empty()) return;
    if (!buffer_.empty()) spill();
    std::vector<Entry>().swap(buffer_);  // give the memory back before the merge
    for (auto& r : runs_) advance(r);
  }

  size_t capacity_;
  std::vector<Entry> buffer_;
  std::vector<Run> runs_;
  bool reading_ = false;
  size_t mem_pos_ = 0;
};

// Big-endian integers in sort keys, so byte order is numeric order.
inline void put_be(uint8_t* out, uint64_t v, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) out[i] = static_cast<uint8_t>(v >> (8 * (bytes - 1 - i)));
}
inline uint64_t get_be(const uint8_t* in, size_t bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < bytes; ++i) v = (v << 8) | in[i];
  return v;
}

}  // namespace rbdvault::store
