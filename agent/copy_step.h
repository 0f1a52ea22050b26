// The batch config's [copy] section: an offsite copy of the store as a step of `run`/`agent`,
// after the backups and their retention, with the target's own retention (docs/usage.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "agent/error_class.h"
#include "agent/copy.h"
#include "agent/retention.h"

namespace rbdvault::store {
class Store;
}

namespace rbdvault::agent {

struct CopyConfig {
  std::string to;                   // the target store's location
  std::vector<std::string> images;  // POOL/NAME; empty: every image of the store
  RetentionPolicy retention;        // applied to the target's copied images; empty: none
  // For a rados: target: keys conf, id, keyring (its cluster; each defaults to [store]'s, then
  // [ceph]'s) and index-dir (default: the pool's under /var/lib/rbdvault).
  StoreAccess access;
};

// Applies one [copy] key; false if `key` is not one. Throws std::invalid_argument on a bad value.
bool apply_copy_key(CopyConfig& c, const std::string& key, const std::string& value);

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
