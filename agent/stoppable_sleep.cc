#include "agent/stoppable_sleep.h"

#include <algorithm>
#include <chrono>
#include <thread>

namespace rbdvault::agent {

bool sleep_unless(double seconds, const std::function<bool()>& stop) {
  const auto until = std::chrono::steady_clock::now() +
                     std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(seconds));
  for (;;) {
    if (stop && stop()) return false;
    const auto now = std::chrono::steady_clock::now();
    if (now >= until) return true;
    std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(until - now, std::chrono::milliseconds(50)));
  }
}

}  // namespace rbdvault::agent
