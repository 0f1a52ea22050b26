// The batch config's [copy] section: an offsite copy of the store as a step of `run`/`agent`,
// after the backups and their retention, with the target's own retention (docs/usage.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "agent/error_class.h"
#include "agent/copy_config.h"

namespace rbdvault::store {
class Store;
}

namespace rbdvault::agent {


struct CopyStepOutcome {
  bool ran = false, ok = false;
  std::string to;
  uint64_t revisions_copied = 0, revisions_skipped = 0;
  uint64_t bytes_read = 0, bytes_written = 0, bytes_deduplicated = 0;
  size_t expired = 0;  // target revisions forgotten by the copy's retention
  std::string error;
  ErrorClass error_class = ErrorClass::kOk;
};

// Copies `source` into the configured target, then applies the copy's retention there; logged in
// the target's operation log. Never throws: a failure is the outcome's error.
CopyStepOutcome run_copy_step(store::Store& source, const CopyConfig& c, const std::string& command_line);

}  // namespace rbdvault::agent
