// Waiting that a stop request (SIGTERM, a reload) cuts short: backoff between retries, bandwidth
// limits, the agent's idle time.
#pragma once

#include <functional>

namespace rbdvault::agent {

// Sleeps `seconds`, looking at `stop` every 50 ms; false if it turned true (then at once).
bool sleep_unless(double seconds, const std::function<bool()>& stop);

}  // namespace rbdvault::agent
