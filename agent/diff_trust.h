// When a backup may trust Ceph's object-map diff (diff_iterate2 with whole_object, fast-diff), and
// where it must ask for the exact diff instead. Pure logic, unit-tested; the evidence is in
// docs/usage.md ("What the backup trusts") and deploy/diff_experiment.py reproduces it.
//
// Known failure (Ceph 16.2.15, measured on the project's test cluster): the object-map diff from
// snapshot A to snapshot B misses the range a shrink zeroed when some snapshot between A and B was
// taken at the smaller size and the image grew again before B. The exact diff is right there.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rbdvault::agent {

struct SnapshotPoint {
  uint64_t id = 0;    // Ceph snapshot id (ids grow with creation time within a pool)
  uint64_t size = 0;  // image size at the snapshot
};

struct DiffTrust {
  // The object-map diff is trusted for [0, exact_from); [exact_from, end size) needs the exact diff.
  // exact_from >= the end size: trusted everywhere.
  uint64_t exact_from = UINT64_MAX;
  std::string reason;  // why the exact diff is needed (empty when trusted everywhere)
};

// `snapshots`: every snapshot the image has now (any namespace, in any order); those strictly
// between `base` and `end` by id are the ones taken between the two backups.
DiffTrust object_map_trust(const SnapshotPoint& base, const SnapshotPoint& end,
                           const std::vector<SnapshotPoint>& snapshots);

}  // namespace rbdvault::agent
