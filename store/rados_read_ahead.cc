#include "store/rados_read_ahead.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace rbdvault::store {

bool ReadAheadBudget::take(uint64_t n) {
  uint64_t cur = used_.load();
  do {
    if (cur + n > limit_) return false;
  } while (!used_.compare_exchange_weak(cur, cur + n));
  return true;
}

void ReadAheadBudget::enrol(RadosReadAhead* r) {
  std::lock_guard g(registry_mu_);
  readers_.push_back(r);
}

void ReadAheadBudget::leave(RadosReadAhead* r) {
  std::lock_guard g(registry_mu_);
  readers_.erase(std::remove(readers_.begin(), readers_.end(), r), readers_.end());
}

// Out of line: RadosReadAhead::Range is complete only below.
void ReadAheadBudget::reclaim(const RadosReadAhead* self) {
  std::vector<std::shared_ptr<RadosReadAhead::Range>> dropped;  // destroyed after the locks
  {
    std::lock_guard g(registry_mu_);
    const uint64_t now = reads_.load();
    for (RadosReadAhead* r : readers_) {
      if (r == self || now - r->last_read_.load() < kIdleReads) continue;
      std::unique_lock lock(r->mu_, std::try_to_lock);
      if (!lock.owns_lock()) continue;
      dropped.insert(dropped.end(), r->ranges_.begin(), r->ranges_.end());
      r->ranges_.clear();
    }
  }
}

// One asynchronous read of [off, off + len). Destroyed only once the read completed.
struct RadosReadAhead::Range {
  uint64_t off = 0;
  size_t len = 0;
  std::string buf;
  rados_completion_t c = nullptr;
  bool ok = false;        // issued: completion valid
  size_t served = 0;      // bytes handed out: a range wholly served is dropped
  std::shared_ptr<ReadAheadBudget> budget;

  ~Range() {
    if (c) {
      rados_aio_wait_for_complete(c);
      rados_aio_release(c);
    }
    if (budget) budget->give(len);
  }
  // The range's bytes, or false if its read failed or came back short.
  bool wait() {
    rados_aio_wait_for_complete(c);
    return rados_aio_get_return_value(c) == static_cast<int>(len);
  }
};

RadosReadAhead::RadosReadAhead(rados_ioctx_t io, std::string oid, uint64_t size,
                               std::shared_ptr<ReadAheadBudget> budget)
    : io_(io), oid_(std::move(oid)), size_(size), budget_(std::move(budget)) {
  recent_ends_.fill(UINT64_MAX);
  last_read_ = budget_->tick();
  budget_->enrol(this);
}

RadosReadAhead::~RadosReadAhead() { budget_->leave(this); }  // then each Range waits for its read

void RadosReadAhead::top_up(size_t from) {
  while (ranges_.size() < from + kReadAheadRanges && next_ < size_) {
    const size_t len = static_cast<size_t>(std::min<uint64_t>(kReadAheadRange, size_ - next_));
    if (!budget_->take(len)) {
      budget_->reclaim(this);
      if (!budget_->take(len)) return;
    }
    auto r = std::make_shared<Range>();
    r->budget = budget_;
    r->off = next_;
    r->len = len;
    r->buf.resize(len);
    if (rados_aio_create_completion2(nullptr, nullptr, &r->c) < 0) {
      r->c = nullptr;
      return;
    }
    if (rados_aio_read(io_, oid_.c_str(), r->c, r->buf.data(), len, next_) < 0) {
      rados_aio_release(r->c);
      r->c = nullptr;
      return;
    }
    budget_->issued.fetch_add(1);
    ranges_.push_back(std::move(r));
    next_ += len;
  }
}

bool RadosReadAhead::try_read(uint64_t offset, char* buf, size_t n) {
  if (n == 0 || n > kReadAheadRange || offset > size_ || size_ - offset < n) return false;
  std::vector<std::shared_ptr<Range>> use, drop;  // waited for and destroyed outside the lock
  last_read_ = budget_->tick();
  {
    std::lock_guard g(mu_);
    const bool sequential = std::find(recent_ends_.begin(), recent_ends_.end(), offset) != recent_ends_.end();
    recent_ends_[recent_pos_++ % recent_ends_.size()] = offset + n;
    auto holds = [&](const std::shared_ptr<Range>& r) { return r->off <= offset && offset < r->off + r->len; };
    auto it = std::find_if(ranges_.begin(), ranges_.end(), holds);
    if (it == ranges_.end()) {
      // Not read ahead. A sequential read past the ranges (or with none) starts them anew here;
      // anything else (a straggler behind them, a random read) is the caller's.
      if (!sequential || (!ranges_.empty() && offset < next_)) return false;
      drop.assign(ranges_.begin(), ranges_.end());
      ranges_.clear();
      next_ = offset;
      top_up(0);
      it = std::find_if(ranges_.begin(), ranges_.end(), holds);
      if (it == ranges_.end()) return false;  // the budget is spent
    }
    const size_t idx = static_cast<size_t>(it - ranges_.begin());
    top_up(idx);
    // The ranges [offset, offset + n) spans (back to back); false if they do not reach its end yet.
    uint64_t end = offset + n;
    for (size_t i = idx; i < ranges_.size() && ranges_[i]->off < end; ++i) {
      if (!use.empty() && ranges_[i]->off != use.back()->off + use.back()->len) return false;  // a range dropped
      use.push_back(ranges_[i]);
    }
    if (use.back()->off + use.back()->len < end) return false;
    // Served bytes are counted so a range wholly read is dropped at once; more than one range
    // behind the read is dropped too (another thread may still want the one just behind).
    for (auto& r : use) {
      const uint64_t lo = std::max(offset, r->off), hi = std::min(end, r->off + r->len);
      r->served += static_cast<size_t>(hi - lo);
    }
    const size_t keep_from = idx > 0 ? idx - 1 : 0;
    std::deque<std::shared_ptr<Range>> kept;
    for (size_t i = 0; i < ranges_.size(); ++i) {
      auto& r = ranges_[i];
      if (i < keep_from || r->served >= r->len)
        drop.push_back(std::move(r));
      else
        kept.push_back(std::move(r));
    }
    ranges_.swap(kept);
  }
  // A range dropped above may be one of `use`: the shared pointers keep it (and its buffer) alive.
  uint64_t pos = offset;
  for (auto& r : use) {
    if (!r->wait()) return false;  // the caller reads it synchronously and reports what failed
    const size_t take = static_cast<size_t>(std::min<uint64_t>(offset + n, r->off + r->len) - pos);
    std::memcpy(buf + (pos - offset), r->buf.data() + (pos - r->off), take);
    pos += take;
  }
  budget_->served.fetch_add(n);
  return true;
}

}  // namespace rbdvault::store
