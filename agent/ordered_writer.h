// The restore's write path: blocks are decoded and verified on worker threads, then handed to a
// sink strictly in the order they were added, adjacent blocks coalesced into one write.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "store/sha256.h"

namespace rbdvault::agent {

struct OrderedWriterOptions {
  uint32_t block_size = 64 * 1024;
  uint64_t size = 0;                   // bytes of the target: the last block is cut to it
  size_t workers = 2;                  // decoding threads (at least 1)
  uint64_t max_write_bytes = 4 << 20;  // a coalesced write is at most this long (at least one block)
  // Blocks added but not yet written (queued, being decoded, decoded or part of the run being
  // gathered) are at most window_blocks(): this many bytes, or enough for two full writes and two
  // blocks per worker, whichever is more. It bounds the memory of a restore.
  uint64_t window_bytes = 32 << 20;
};

// Usage: add() every block in ascending order, then finish(). add() blocks while the window is full
// and may call the sink; both run the sink on the calling thread, so the sink needs no locking.
//
// `decode(block, hash)` returns the block's verified content (block_size bytes) and is called on
// worker threads, concurrently. An exception it throws is rethrown by add() or finish() when that
// block's turn to be written comes; nothing from that block on is written. The destructor stops and
// joins the workers, so an error anywhere leaves no thread behind.
class OrderedWriter {
 public:
  using Decode = std::function<std::string(uint64_t block, const store::Hash& hash)>;
  // One coalesced write: `pieces` are the contents of consecutive blocks starting at `offset`.
  using Sink = std::function<void(uint64_t offset, const std::vector<std::string_view>& pieces, uint64_t bytes)>;

  OrderedWriter(const OrderedWriterOptions& options, Decode decode, Sink sink);
  ~OrderedWriter();
  OrderedWriter(const OrderedWriter&) = delete;
  OrderedWriter& operator=(const OrderedWriter&) = delete;

  void add(uint64_t block, const store::Hash& hash);
  // Writes everything added; rethrows the first failed block's error.
  void finish();

  size_t window_blocks() const { return slots_.size(); }
  // The most blocks that were ever added but not yet written at once (<= window_blocks()).
  size_t peak_window() const { return peak_window_; }

 private:
  struct Slot {
    uint64_t block = 0;
    store::Hash hash{};
    std::string data;
    std::exception_ptr error;
    bool done = false;
  };
  Slot& slot(uint64_t seq) { return slots_[seq % slots_.size()]; }
  void work();
  void stop();  // stops and joins the workers
  // Waits for the oldest unwritten block and appends it to the run (writing the run first if the
  // block does not continue it or would make it too long).
  void take_next(std::unique_lock<std::mutex>& lock);
  void write_run(std::unique_lock<std::mutex>& lock);

  const OrderedWriterOptions options_;
  const Decode decode_;
  const Sink sink_;
  std::vector<Slot> slots_;

  std::mutex mu_;
  std::condition_variable work_cv_;  // workers: a block was added, or stop
  std::condition_variable done_cv_;  // the writer: a block was decoded
  bool stop_ = false;
  // Sequence numbers, in add() order: [released_, taken_) are in the run being gathered,
  // [taken_, added_) wait for their turn; workers decode them from next_decode_ on.
  uint64_t released_ = 0, taken_ = 0, next_decode_ = 0, added_ = 0;
  size_t peak_window_ = 0;

  // The run being gathered (only the adding thread touches it).
  uint64_t run_offset_ = 0, run_next_block_ = 0, run_bytes_ = 0;
  std::vector<std::string_view> run_;

  std::vector<std::thread> threads_;  // last: started once everything above exists
};

}  // namespace rbdvault::agent
