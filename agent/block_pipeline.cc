#include "agent/block_pipeline.h"

#include <stdexcept>
#include <system_error>

namespace rbdvault::agent {

struct BlockPipeline::Item {
  uint64_t block = 0, end = 0;
  bool zero_range = false;
  std::string data;
  store::PreparedBlock prepared;
  bool done = false;
  std::exception_ptr error;
};

BlockPipeline::BlockPipeline(store::Store& store, store::RevisionWriter& writer, size_t threads, size_t max_pending)
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
    store::PreparedBlock prepared;
    std::exception_ptr error;
    try {
      prepared = store::prepare_block(store_, item->data);
    } catch (...) {
      error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      item->prepared = std::move(prepared);
      item->error = error;
      item->data.clear();
      item->data.shrink_to_fit();
      item->done = true;
    }
    done_cv_.notify_all();
  }
}

void BlockPipeline::add_block(uint64_t block, std::string_view data) {
  while (pending_.size() >= max_pending_) commit_ready(true);
  auto item = std::make_shared<Item>();
  item->block = block;
  if (threads_.empty()) {
    item->prepared = store::prepare_block(store_, data);
    item->done = true;
  } else {
    item->data.assign(data);
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(item);
  }
  pending_.push_back(std::move(item));
  work_cv_.notify_one();
  peak_pending_ = std::max(peak_pending_, pending_.size());
  commit_ready(false);
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
    if (front->zero_range)
      writer_.put_zero_range(front->block, front->end);
    else
      writer_.put_prepared(front->block, std::move(front->prepared));
  }
}

void BlockPipeline::finish() {
  while (!pending_.empty()) commit_ready(true);
}

}  // namespace rbdvault::agent
