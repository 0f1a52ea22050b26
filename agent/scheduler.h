// The long-running agent: runs batch backups as images fall due, retention after each, and gc and
// scrub at their own schedules; reloads its config on request and stops cleanly.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "agent/fsck_step.h"

namespace rbdvault::agent {

struct AgentOptions {
  std::string config_path;
  // Virtual seconds between looks for due work.
  int64_t poll_seconds = 60;
  // Test only: the agent's clock runs this many times faster than real time (schedules, retention
  // and revision times all follow it), so tests can run a day's cycles in seconds.
  double time_scale = 1;
  // Polled often: stop() ends the agent (running backups are abandoned without a partial
  // revision); take_reload() returns true once per reload request (SIGHUP).
  std::function<bool()> stop;
  std::function<bool()> take_reload;
  std::string command_line;
  FsckFunction fsck;  // for images with fsck = yes (RunOptions::fsck)
};

// Returns when stop() turns true. Throws ConfigError if the config is unusable at start; later
// config errors keep the previous config running.
void run_agent(const AgentOptions& options);

}  // namespace rbdvault::agent
