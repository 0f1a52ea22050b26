#include "agent/ordered_writer.h"

#include <algorithm>

#include "store/error.h"

namespace rbdvault::agent {
namespace {

size_t window_for(const OrderedWriterOptions& o, size_t workers) {
  const uint64_t bs = o.block_size ? o.block_size : 1;
  const uint64_t per_write = std::max<uint64_t>(1, o.max_write_bytes / bs);
  // Two writes' worth: one run is gathered (and written) while the next one's blocks decode.
  return static_cast<size_t>(std::max<uint64_t>({o.window_bytes / bs, 2 * per_write, 2 * workers}));
}

}  // namespace

OrderedWriter::OrderedWriter(const OrderedWriterOptions& options, Decode decode, Sink sink)
    : options_(options), decode_(std::move(decode)), sink_(std::move(sink)) {
  const size_t workers = std::max<size_t>(1, options_.workers);
  slots_.resize(window_for(options_, workers));
  try {
    for (size_t i = 0; i < workers; ++i) threads_.emplace_back([this] { work(); });
  } catch (...) {
    stop();  // the destructor does not run for a half-built object: join the ones that started
    throw;
  }
}

OrderedWriter::~OrderedWriter() { stop(); }

void OrderedWriter::stop() {
  {
    std::lock_guard<std::mutex> guard(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

void OrderedWriter::work() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || next_decode_ < added_; });
    if (stop_) return;
    const uint64_t seq = next_decode_++;
    const uint64_t block = slot(seq).block;
    const store::Hash hash = slot(seq).hash;
    lock.unlock();
    // The slot is ours until `done`: the writer waits for it, and add() does not reuse it before
    // the writer has released it.
    std::string data;
    std::exception_ptr error;
    try {
      data = decode_(block, hash);
      // Runs are cut and coalesced by block: a short block would shift every later one of its run
      // to the wrong offset, which no digest of the block map could see.
      if (data.size() != options_.block_size)
        throw store::StoreError(store::StoreError::Kind::kCorrupt,
                                "block " + std::to_string(block) + " decoded to " + std::to_string(data.size()) +
                                    " bytes, not a block of " + std::to_string(options_.block_size));
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    Slot& s = slot(seq);
    s.data = std::move(data);
    s.error = error;
    s.done = true;
    if (seq == taken_) done_cv_.notify_one();
  }
}

void OrderedWriter::add(uint64_t block, const store::Hash& hash) {
  std::unique_lock<std::mutex> lock(mu_);
  while (added_ - released_ >= slots_.size()) {
    if (taken_ < added_) {
      take_next(lock);
    } else {
      write_run(lock);  // the whole window is in the run: write it to make room
    }
  }
  Slot& s = slot(added_);
  s.block = block;
  s.hash = hash;
  s.done = false;
  s.error = nullptr;
  ++added_;
  peak_window_ = std::max<size_t>(peak_window_, added_ - released_);
  work_cv_.notify_one();
  // Gather whatever is already decoded, so runs leave as soon as they are complete.
  while (taken_ < added_ && slot(taken_).done) take_next(lock);
}

void OrderedWriter::finish() {
  std::unique_lock<std::mutex> lock(mu_);
  while (taken_ < added_) take_next(lock);
  write_run(lock);
}

void OrderedWriter::take_next(std::unique_lock<std::mutex>& lock) {
  done_cv_.wait(lock, [&] { return slot(taken_).done; });
  Slot& s = slot(taken_);
  if (s.error) {
    // Stop decoding what follows; the destructor joins the workers.
    stop_ = true;
    work_cv_.notify_all();
    std::rethrow_exception(s.error);
  }
  const uint64_t bs = options_.block_size;
  const uint64_t offset = s.block * bs;
  const uint64_t len = std::min<uint64_t>({s.data.size(), bs, options_.size > offset ? options_.size - offset : 0});
  if (!run_.empty() && (s.block != run_next_block_ || run_bytes_ + len > options_.max_write_bytes)) {
    write_run(lock);
  }
  if (run_.empty()) run_offset_ = offset;
  run_.emplace_back(s.data.data(), len);  // the last block is stored padded: cut to the size
  run_bytes_ += len;
  run_next_block_ = s.block + 1;
  ++taken_;
}

void OrderedWriter::write_run(std::unique_lock<std::mutex>& lock) {
  if (run_.empty()) {
    released_ = taken_;
    return;
  }
  // The run's slots are done and only this thread touches them until they are released below, so
  // the workers keep decoding while the sink writes.
  lock.unlock();
  sink_(run_offset_, run_, run_bytes_);
  lock.lock();
  for (uint64_t seq = released_; seq < taken_; ++seq) std::string().swap(slot(seq).data);
  run_.clear();
  run_bytes_ = 0;
  released_ = taken_;
}

}  // namespace rbdvault::agent
