// SIGTERM/SIGINT/SIGHUP as flags for long-running commands (run, agent). The signals are blocked
// in every thread and collected by one thread with sigwait(), so no handler touches global state.
// Construct before any other thread starts (librados' threads inherit the mask).
#pragma once

#include <atomic>
#include <csignal>
#include <string>
#include <thread>

namespace rbdvault::tools {

class SignalFlags {
 public:
  // stopping_note: logged (info) when SIGTERM or SIGINT arrives, after "SIGTERM: stopping; ";
  // empty: nothing is logged (the command says what it did in its own error line).
  explicit SignalFlags(std::string stopping_note = "running backups are abandoned without a partial revision");
  ~SignalFlags();
  SignalFlags(const SignalFlags&) = delete;
  SignalFlags& operator=(const SignalFlags&) = delete;

  bool stop_requested() const { return stop_.load(); }
  // The signal that asked to stop (SIGTERM or SIGINT), 0 before one did: `run` exits 128+N.
  int stop_signal() const { return stop_signal_.load(); }
  // True once per SIGHUP received.
  bool take_reload() { return reload_.exchange(false); }

 private:
  sigset_t set_, old_mask_;
  std::atomic<bool> stop_{false}, reload_{false}, done_{false};
  std::atomic<int> stop_signal_{0};
  std::string stopping_note_;
  std::thread thread_;
};

}  // namespace rbdvault::tools
