// Read-ahead for the readers of the RADOS backend (rados_object_store.cc). A restore (and verify,
// scrub, copy) reads a pack's chunks one after another, each a synchronous round trip of about
// 64 KiB: with two decoding threads that is two reads in flight, and the network's latency, not its
// bandwidth, bounds the restore. When a reader sees a read start where an earlier one ended, it
// reads the bytes that follow asynchronously in ranges of kReadAheadRange (neighbouring chunks of
// the pack coalesced in one op), kReadAheadRanges ahead, and serves the next reads from them.
//
// Only bytes move faster, never other bytes: the ranges are of immutable objects, a read-ahead that
// failed or came back short is dropped and the read goes to RADOS synchronously as before (so a
// vanished object is kNotFound there), and PackReader verifies every chunk against its hash as it
// always did. Memory is bounded per store by a ReadAheadBudget: ranges not yet issued when it is
// spent are simply not read ahead.
//
// Part of the RADOS backend: uses librados' C API, like rados_object_store.cc.
#pragma once

#include <rados/librados.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace rbdvault::store {

inline constexpr size_t kReadAheadRange = 4 << 20;  // one aio read
inline constexpr size_t kReadAheadRanges = 4;       // issued ahead of the read being served, per reader
inline constexpr uint64_t kReadAheadBudgetBytes = 64ull << 20;  // per store, every reader together

class RadosReadAhead;

// The bytes of read-ahead buffers of one store, all its readers together. Thread safe.
//
// A reader left with ranges it will not read (a pack read with gaps, then no more: PackReader
// keeps up to 128 readers open) would hold its share until closed and, a few such packs later,
// leave none for the pack being read. So readers enrol here, and one that finds the budget spent
// takes back the ranges of readers idle for kIdleReads reads.
class ReadAheadBudget {
 public:
  static constexpr uint64_t kIdleReads = 64;
  explicit ReadAheadBudget(uint64_t limit) : limit_(limit) {}
  // Takes n bytes; false (nothing taken) if that would pass the limit.
  [[nodiscard]] bool take(uint64_t n);
  void give(uint64_t n) { used_.fetch_sub(n); }
  [[nodiscard]] uint64_t used() const { return used_.load(); }
  // Bytes served from read-ahead ranges, and ranges issued (tests, benchmarks).
  std::atomic<uint64_t> served{0}, issued{0};

  void enrol(RadosReadAhead* r);
  void leave(RadosReadAhead* r);
  // Drops the ranges of enrolled readers other than `self` idle for kIdleReads reads. Other
  // readers' locks are only tried (never waited for) under the registry's, so it cannot deadlock.
  void reclaim(const RadosReadAhead* self);
  // A tick per read, the clock of idleness.
  uint64_t tick() { return reads_.fetch_add(1) + 1; }

 private:
  const uint64_t limit_;
  std::atomic<uint64_t> used_{0}, reads_{0};
  std::mutex registry_mu_;
  std::vector<RadosReadAhead*> readers_;
};

// The read-ahead state of one open object. Thread safe: several threads read through one reader.
class RadosReadAhead {
 public:
  RadosReadAhead(rados_ioctx_t io, std::string oid, uint64_t size, std::shared_ptr<ReadAheadBudget> budget);
  ~RadosReadAhead();  // waits for the reads in flight (their buffers are ours)
  RadosReadAhead(const RadosReadAhead&) = delete;
  RadosReadAhead& operator=(const RadosReadAhead&) = delete;

  // Copies [offset, offset + n) into buf from read-ahead ranges, reading further ahead; false if
  // they do not hold it (not read ahead, or their read failed): the caller then reads it itself.
  [[nodiscard]] bool try_read(uint64_t offset, char* buf, size_t n);

 private:
  friend class ReadAheadBudget;
  struct Range;
  std::atomic<uint64_t> last_read_{0};  // the budget's tick at this reader's last read
  // Under mu_: issues ranges from next_ until kReadAheadRanges lie at or after `from` (or the
  // object or the budget ends).
  void top_up(size_t from);

  const rados_ioctx_t io_;
  const std::string oid_;
  const uint64_t size_;
  const std::shared_ptr<ReadAheadBudget> budget_;

  std::mutex mu_;
  std::deque<std::shared_ptr<Range>> ranges_;  // ascending and back to back, up to next_
  uint64_t next_ = 0;                          // where the next range starts
  std::array<uint64_t, 4> recent_ends_{};      // ends of the last reads: a read starting at one is sequential
  size_t recent_pos_ = 0;
};

}  // namespace rbdvault::store
