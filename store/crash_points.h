// Crash points: named steps at which a test can make the process die as a power cut would, so
// every planned kill lands at a known step on any machine (a timed SIGKILL lands wherever the
// machine's speed puts it, or not at all).
//
//   RBDVAULT_CRASH_AT=STEP[:N]   SIGKILL this process the Nth time (default 1) it passes STEP;
//                                STEP "*" counts every step, so "*:17" dies at the 17th step passed.
//   RBDVAULT_STOP_AT=STEP[:N]    SIGSTOP this process there instead: a test holds it at a known step
//                                (holding the store's locks), acts, and lets it go on with SIGCONT.
//   RBDVAULT_PAUSE_AT=STEP[:N]   hold only the thread passing STEP there; the rest of the process goes
//   RBDVAULT_PAUSE_FILE=PATH     on (e.g. an in-process server that a test reads through while
//                                the operation holds). The thread creates PATH and waits until the
//                                test removes it. Needs both variables.
//   RBDVAULT_FAULT=NAME[,NAME]   switch on named faults that simulate bugs elsewhere (e.g.
//                                "diff.miss": the backup ignores what Ceph's diff reports), so
//                                the defences against such bugs can be tested.
//   RBDVAULT_CRASH_TRACE=FILE    append each step's name to FILE as it is passed (one per line), so
//                                a test can list the steps an operation goes through, then pick one.
//
// Unset (the production case) each call costs one branch. The steps are listed in docs/format.md
// ("Crash points"); a step is passed right after the durable write it names.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <string_view>

namespace rbdvault::store {

class CrashPoints {
 public:
  // Reads the variables above. A malformed STEP[:N] throws std::invalid_argument.
  void load_environment();

  // Called at each step; thread-safe. May not return (SIGKILL).
  void reached(std::string_view step);
  bool enabled() const { return enabled_; }
  // Unit tests: `fn` is called at each step passed, on the passing thread, before any kill or stop
  // (e.g. to try what another thread could do at that moment). Set it before threads use the store.
  void set_observer(std::function<void(std::string_view step)> fn) {
    observer_ = std::move(fn);
    enabled_ = enabled_ || observer_ != nullptr;
  }
  // True if RBDVAULT_FAULT names `fault`.
  bool fault(std::string_view fault) const;

 private:
  struct Trigger {
    std::string step;  // "*" for any; empty: unset
    uint64_t nth = 1;
    std::atomic<uint64_t> passed{0};
    void parse(const char* variable);
    bool fires(std::string_view at);  // counts a pass of `at`; true on the Nth
  };
  void pause_here() const;

  bool enabled_ = false;
  Trigger crash_, stop_, pause_;
  std::string trace_path_, pause_file_;
  std::string faults_;  // ",a,b,"
  std::function<void(std::string_view)> observer_;
};

}  // namespace rbdvault::store
