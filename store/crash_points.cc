#include "store/crash_points.h"

#include <fcntl.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <stdexcept>

namespace rbdvault::store {

void CrashPoints::Trigger::parse(const char* variable) {
  const char* value = std::getenv(variable);
  if (!value || !*value) return;
  const std::string spec(value);
  const auto colon = spec.rfind(':');
  step = spec.substr(0, colon);
  nth = 1;
  if (colon != std::string::npos) {
    const std::string n = spec.substr(colon + 1);
    if (n.empty() || n.size() > 9 || n.find_first_not_of("0123456789") != std::string::npos || std::stoul(n) == 0)
      throw std::invalid_argument(std::string(variable) + ": bad count in '" + spec + "' (want STEP[:N], N >= 1)");
    nth = std::stoul(n);
  }
  if (step.empty()) throw std::invalid_argument(std::string(variable) + ": empty step in '" + spec + "'");
}

bool CrashPoints::Trigger::fires(std::string_view at) {
  if (step.empty() || (step != "*" && step != at)) return false;
  return passed.fetch_add(1) + 1 == nth;
}

void CrashPoints::load_environment() {
  crash_.parse("RBDVAULT_CRASH_AT");
  stop_.parse("RBDVAULT_STOP_AT");
  pause_.parse("RBDVAULT_PAUSE_AT");
  if (const char* file = std::getenv("RBDVAULT_PAUSE_FILE"); file && *file) pause_file_ = file;
  if (!pause_.step.empty() && pause_file_.empty())
    throw std::invalid_argument("RBDVAULT_PAUSE_AT needs RBDVAULT_PAUSE_FILE (the file the test removes to go on)");
  if (const char* trace = std::getenv("RBDVAULT_CRASH_TRACE"); trace && *trace) trace_path_ = trace;
  const char* faults = std::getenv("RBDVAULT_FAULT");
  faults_ = faults && *faults ? "," + std::string(faults) + "," : std::string();
  enabled_ = observer_ != nullptr || !crash_.step.empty() || !stop_.step.empty() || !pause_.step.empty() ||
             !trace_path_.empty();
}

bool CrashPoints::fault(std::string_view fault) const {
  return !faults_.empty() && faults_.find("," + std::string(fault) + ",") != std::string::npos;
}

void CrashPoints::pause_here() const {
  const int fd = ::open(pause_file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;  // nobody could release us: do not hold
  ::close(fd);
  // Polling a test-only file: this thread holds, the rest of the process goes on.
  while (::access(pause_file_.c_str(), F_OK) == 0) ::usleep(10000);
}

void CrashPoints::reached(std::string_view step) {
  if (!enabled_) return;
  if (observer_) observer_(step);
  if (!trace_path_.empty()) {
    // One O_APPEND write per line: lines of concurrent threads never interleave.
    const int fd = ::open(trace_path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
      const std::string line = std::string(step) + "\n";
      [[maybe_unused]] ssize_t w = ::write(fd, line.data(), line.size());
      ::close(fd);
    }
  }
  if (pause_.fires(step)) pause_here();
  if (stop_.fires(step)) ::kill(::getpid(), SIGSTOP);  // returns once a SIGCONT arrives
  if (!crash_.fires(step)) return;
  ::kill(::getpid(), SIGKILL);
  for (;;) ::pause();  // SIGKILL cannot be caught; never run past the step
}

}  // namespace rbdvault::store
