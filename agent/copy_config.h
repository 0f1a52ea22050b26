// The batch config's [copy] section as parsed (agent/copy_step.h runs it). Apart from the step so
// that the config parser (and its fuzzer) needs none of the copy job.
#pragma once

#include <string>
#include <vector>

#include "agent/copy.h"
#include "agent/retention.h"

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

}  // namespace rbdvault::agent
