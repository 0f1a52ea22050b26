#include "agent/rate_limiter.h"

#include <algorithm>

#include "agent/stoppable_sleep.h"

namespace rbdvault::agent {

bool RateLimiter::take(uint64_t bytes, const std::function<bool()>& stop) {
  if (rate_ == 0) return true;
  std::chrono::duration<double> wait{};
  {
    std::lock_guard<std::mutex> g(mu_);
    const auto now = std::chrono::steady_clock::now();
    tokens_ =
        std::min<double>(static_cast<double>(rate_),
                         tokens_ + std::chrono::duration<double>(now - last_).count() * static_cast<double>(rate_));
    last_ = now;
    // Take now and owe the difference: the caller sleeps it off, later callers queue behind.
    tokens_ -= static_cast<double>(bytes);
    if (tokens_ < 0) wait = std::chrono::duration<double>(-tokens_ / static_cast<double>(rate_));
  }
  return sleep_unless(wait.count(), stop);
}

}  // namespace rbdvault::agent
