// The CPU half of a backup on worker threads: blocks are hashed and compressed in parallel, then
// handed to the RevisionWriter strictly in block order. Memory is bounded by max_pending blocks.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agent/changed_bytes.h"
#include "store/revision_store.h"
#include "store/revision_writer.h"

namespace rbdvault::agent {

class BlockPipeline {
 public:
  // threads 0: prepare on the calling thread (no workers).
  BlockPipeline(store::AppendStore& store, store::RevisionWriter& writer, size_t threads, size_t max_pending);
  ~BlockPipeline();  // stops workers; pending work is dropped (call finish() to keep it)
  BlockPipeline(const BlockPipeline&) = delete;
  BlockPipeline& operator=(const BlockPipeline&) = delete;

  void add_block(uint64_t block, std::string_view data);  // copies data
  // A block of which only `pieces` were read (their bytes concatenated in `data`): a worker reads
  // the parent revision's chunk `base` from the store (verified against its hash), lays the pieces
  // over it and stores the result.
  void add_patched(uint64_t block, const store::Hash& base, std::string data, std::vector<Piece> pieces);
  // For add_patched blocks whose parent chunk fails its check: returns the whole block read anew
  // (from Ceph), called on a worker thread. Without it such a block fails the pipeline.
  using Reread = std::function<std::string(uint64_t block)>;
  void set_reread(Reread reread) { reread_ = std::move(reread); }
  void add_zero_range(uint64_t first, uint64_t end);
  // Waits for everything to reach the writer; rethrows the first worker error.
  void finish();

  size_t peak_pending() const { return peak_pending_; }
  // Where the CPU went, in seconds of thread CPU time, and what was read back from the store.
  struct Stats {
    double hash = 0, compress = 0;
    double patch = 0;  // reading, verifying and patching parent chunks
    double index = 0;  // the writer: dedup lookups, block map and pack appends (calling thread)
    uint64_t bytes_read_store = 0;
    uint64_t bytes_reread = 0;   // whole blocks read again because their parent chunk was damaged
    uint64_t blocks_reread = 0;
  };
  const Stats& stats() const { return stats_; }

 private:
  struct Item;
  void worker();
  void stop_workers();  // joins every started worker
  void commit_ready(bool wait_for_front);
  void prepare(Item& item);  // on a worker, or on the calling thread without workers
  void enqueue(std::shared_ptr<Item> item);

  store::AppendStore& store_;
  store::RevisionWriter& writer_;
  size_t max_pending_;
  std::deque<std::shared_ptr<Item>> pending_;  // in block order; owned by the calling thread
  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<std::shared_ptr<Item>> queue_;  // waiting for a worker
  bool stopping_ = false;
  std::vector<std::thread> threads_;
  size_t peak_pending_ = 0;
  Stats stats_;
  Reread reread_;
};

}  // namespace rbdvault::agent
