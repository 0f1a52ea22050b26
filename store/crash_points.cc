#include "store/crash_points.h"

#include <fcntl.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <stdexcept>

namespace rbdvault::store {

void CrashPoints::load_environment() {
  if (const char* at = std::getenv("RBDVAULT_CRASH_AT"); at && *at) {
    const std::string spec(at);
    const auto colon = spec.rfind(':');
    step_ = spec.substr(0, colon);
    nth_ = 1;
    if (colon != std::string::npos) {
      const std::string n = spec.substr(colon + 1);
      if (n.empty() || n.size() > 9 || n.find_first_not_of("0123456789") != std::string::npos || std::stoul(n) == 0)
        throw std::invalid_argument("RBDVAULT_CRASH_AT: bad count in '" + spec + "' (want STEP[:N], N >= 1)");
      nth_ = std::stoul(n);
    }
    if (step_.empty()) throw std::invalid_argument("RBDVAULT_CRASH_AT: empty step in '" + spec + "'");
    enabled_ = true;
  }
  if (const char* trace = std::getenv("RBDVAULT_CRASH_TRACE"); trace && *trace) {
    trace_path_ = trace;
    enabled_ = true;
  }
}

void CrashPoints::reached(std::string_view step) {
  if (!enabled_) return;
  if (!trace_path_.empty()) {
    // One O_APPEND write per line: lines of concurrent threads never interleave.
    const int fd = ::open(trace_path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
      const std::string line = std::string(step) + "\n";
      [[maybe_unused]] ssize_t w = ::write(fd, line.data(), line.size());
      ::close(fd);
    }
  }
  if (step_.empty() || (step_ != "*" && step_ != step)) return;
  if (passed_.fetch_add(1) + 1 != nth_) return;
  ::kill(::getpid(), SIGKILL);
  for (;;) ::pause();  // SIGKILL cannot be caught; never run past the step
}

}  // namespace rbdvault::store
