// The batch commands of the CLI: run, agent, status, check. Kept apart from the single-image
// commands in rbdvault.cc; both only parse, call agent/ and print.
#pragma once

#include <cstdint>
#include <string>

namespace rbdvault::tools {

struct BatchArgs {
  std::string config;  // --config FILE
  std::string store;   // --store DIR (status/check without a config)
  std::string job;
  bool dry_run = false, force = false, json = false, quiet = false;
  double time_scale = 1;
  int64_t poll_seconds = 60;
  int64_t max_age = 26 * 3600, warn_age = 0;
  std::string command_line;
};

int cmd_run(const BatchArgs& a);
int cmd_agent(const BatchArgs& a);
int cmd_status(const BatchArgs& a);
int cmd_check(const BatchArgs& a);  // never throws: Nagios exit codes 0-3

}  // namespace rbdvault::tools
