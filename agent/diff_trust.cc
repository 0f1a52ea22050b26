#include "agent/diff_trust.h"

#include <algorithm>

namespace rbdvault::agent {

DiffTrust object_map_trust(const SnapshotPoint& base, const SnapshotPoint& end,
                           const std::vector<SnapshotPoint>& snapshots) {
  DiffTrust trust;
  // A snapshot between the two backups at a size below both ends means the image was shrunk (and
  // grown again) in between, with the shrunk state frozen in that snapshot's object map: exactly
  // the case where the object-map diff misses the range the shrink zeroed.
  const uint64_t both = std::min(base.size, end.size);
  for (const SnapshotPoint& s : snapshots) {
    if (s.id <= base.id || s.id >= end.id || s.size >= both) continue;
    if (s.size < trust.exact_from) {
      trust.exact_from = s.size;
      trust.reason = "a snapshot between the backups (id " + std::to_string(s.id) + ") has a smaller size (" +
                     std::to_string(s.size) + " bytes)";
    }
  }
  return trust;
}

}  // namespace rbdvault::agent
