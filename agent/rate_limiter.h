// A token bucket shared by the threads of one process: take(n) returns once n more bytes fit in
// the configured rate. Burst is one second's worth, so a limit holds over any few seconds.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>

namespace rbdvault::agent {

class RateLimiter {
 public:
  explicit RateLimiter(uint64_t bytes_per_second) : rate_(bytes_per_second) {}
  // Blocks until `bytes` may pass; returns early (false) when `stop()` turns true. Unlimited (rate 0)
  // never blocks.
  bool take(uint64_t bytes, const std::function<bool()>& stop = {});
  uint64_t rate() const { return rate_; }

 private:
  const uint64_t rate_;
  std::mutex mu_;
  double tokens_ = 0;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

}  // namespace rbdvault::agent
