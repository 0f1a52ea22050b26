#include "agent/block_pipeline.h"

#include <spdlog/spdlog.h>

#include <cstring>
#include <optional>
#include <stdexcept>
#include <system_error>

#include "store/error.h"
#include "store/store.h"

namespace rbdvault::agent {

struct BlockPipeline::Item {
  uint64_t block = 0, end = 0;
  bool zero_range = false;
  std::string data;
  std::optional<store::Hash> base;  // add_patched: the parent's chunk the pieces go over
  std::vector<Piece> pieces;
  double patch_seconds = 0;
  uint64_t store_bytes = 0, reread_bytes = 0;
  store::PreparedBlock prepared;
  bool done = false;
  std::exception_ptr error;
};

BlockPipeline::BlockPipeline(store::AppendStore& store, store::RevisionWriter& writer, size_t threads, size_t max_pending)
    : store_(store), writer_(writer), max_pending_(max_pending ? max_pending : 1) {
  try {
    for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { worker(); });
  } catch (const std::system_error& e) {
    // The destructor does not run for a throwing constructor, and a joinable std::thread destroyed
    // unjoined calls std::terminate: stop the workers already started, then report.
    stop_workers();
    throw std::runtime_error("cannot start " + std::to_string(threads) + " hash threads: " + e.what());
  }
}

BlockPipeline::~BlockPipeline() { stop_workers(); }

void BlockPipeline::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void BlockPipeline::worker() {
  for (;;) {
    std::shared_ptr<Item> item;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    // The item is not touched by the calling thread until done is set under the mutex.
    std::exception_ptr error;
    try {
      prepare(*item);
    } catch (...) {
      error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      item->error = error;
      item->done = true;
    }
    done_cv_.notify_all();
  }
}

void BlockPipeline::prepare(Item& item) {
  if (item.base) {
    const double t0 = store::thread_cpu_seconds();
    std::string block;
    store::ChunkContent parent;
    try {
      parent = store_.read_chunk_and_root(*item.base);
      block = parent.content;
    } catch (const store::StoreError& e) {
      // A damaged parent chunk must not stop every later backup of the image: read the block
      // whole instead; the new revision then no longer needs the damaged chunk there.
      if (e.kind() != store::StoreError::Kind::kCorrupt || !reread_) throw;
      spdlog::warn("block {}: the parent's chunk fails its check ({}); reading the block whole", item.block, e.what());
      item.prepared = store::prepare_block(store_, reread_(item.block));
      item.reread_bytes = store_.block_size();
      item.data.clear();
      item.data.shrink_to_fit();
      return;
    }
    item.store_bytes = block.size();
    size_t pos = 0;
    for (const Piece& p : item.pieces) {
      // The pieces come from the diff clipped to the block and the bytes from Ceph; a mismatch is
      // a bug, never something to store.
      if (p.offset + p.length > block.size() || pos + p.length > item.data.size())
        throw std::logic_error("patch piece outside its block");
      std::memcpy(block.data() + p.offset, item.data.data() + pos, p.length);
      pos += p.length;
    }
    item.patch_seconds = store::thread_cpu_seconds() - t0;
    item.prepared = store::prepare_block_over(store_, std::move(block), parent);
  } else {
    item.prepared = store::prepare_block(store_, std::move(item.data));
  }
  item.data.clear();
  item.data.shrink_to_fit();
}

void BlockPipeline::enqueue(std::shared_ptr<Item> item) {
  if (threads_.empty()) {
    prepare(*item);
    item->done = true;
  } else {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(item);
  }
  pending_.push_back(std::move(item));
  work_cv_.notify_one();
  peak_pending_ = std::max(peak_pending_, pending_.size());
  commit_ready(false);
}

void BlockPipeline::add_block(uint64_t block, std::string_view data) {
  while (pending_.size() >= max_pending_) commit_ready(true);
  auto item = std::make_shared<Item>();
  item->block = block;
  item->data.assign(data);
  enqueue(std::move(item));
}

void BlockPipeline::add_patched(uint64_t block, const store::Hash& base, std::string data, std::vector<Piece> pieces) {
  while (pending_.size() >= max_pending_) commit_ready(true);
  auto item = std::make_shared<Item>();
  item->block = block;
  item->base = base;
  item->data = std::move(data);
  item->pieces = std::move(pieces);
  enqueue(std::move(item));
}

void BlockPipeline::add_zero_range(uint64_t first, uint64_t end) {
  while (pending_.size() >= max_pending_) commit_ready(true);
  auto item = std::make_shared<Item>();
  item->block = first;
  item->end = end;
  item->zero_range = true;
  item->done = true;
  pending_.push_back(std::move(item));
  peak_pending_ = std::max(peak_pending_, pending_.size());
  commit_ready(false);
}

// Hands finished items at the front to the writer, in order; with wait_for_front, blocks until at
// least the front item is finished.
void BlockPipeline::commit_ready(bool wait_for_front) {
  while (!pending_.empty()) {
    std::shared_ptr<Item> front = pending_.front();
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (!front->done) {
        if (!wait_for_front) return;
        done_cv_.wait(lock, [&] { return front->done; });
      }
    }
    wait_for_front = false;
    pending_.pop_front();
    if (front->error) std::rethrow_exception(front->error);
    stats_.hash += front->prepared.hash_seconds;
    stats_.compress += front->prepared.compress_seconds;
    stats_.patch += front->patch_seconds;
    stats_.bytes_read_store += front->store_bytes;
    stats_.bytes_reread += front->reread_bytes;
    stats_.blocks_reread += front->reread_bytes ? 1 : 0;
    const double t0 = store::thread_cpu_seconds();
    if (front->zero_range)
      writer_.put_zero_range(front->block, front->end);
    else
      writer_.put_prepared(front->block, std::move(front->prepared));
    stats_.index += store::thread_cpu_seconds() - t0;
  }
}

void BlockPipeline::finish() {
  while (!pending_.empty()) commit_ready(true);
}

}  // namespace rbdvault::agent
