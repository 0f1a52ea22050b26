// Sorting and counting more fixed-size records than memory should hold: scrub, repair, du and gc
// over millions of chunks. Records are buffered up to a byte budget; a full buffer is sorted and
// equal records merged (their counts added), and unless that freed half of it, it is written to an
// unlinked temporary file as a sorted run. Reading merges the runs. Memory: the budget plus a read
// buffer per run; disk: the records, in $TMPDIR (else /tmp), gone when the process ends.
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
    size_t best = runs_.size();
    for (size_t i = 0; i < runs_.size(); ++i)
      if (runs_[i].live && (best == runs_.size() || less(runs_[i].head.key, runs_[best].head.key))) best = i;
    if (best == runs_.size()) return false;
    out = runs_[best].head;
    advance(runs_[best]);
    for (auto& r : runs_)  // the same key in other runs
      while (r.live && r.head.key == out.key) {
        out.count += r.head.count;
        advance(r);
      }
    return true;
  }

  size_t runs() const { return runs_.size(); }

 private:
  struct Run {
    std::unique_ptr<SpillFile> file;
    Entry head{};
    bool live = false;
  };

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
    for (const Entry& e : buffer_) {
      run.file->write(e.key.data(), N);
      run.file->write(&e.count, sizeof(e.count));
    }
    run.file->end_writing();
    runs_.push_back(std::move(run));
    buffer_.clear();
  }

  void advance(Run& r) {
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
