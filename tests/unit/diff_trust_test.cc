// When the backup trusts Ceph's object-map diff (agent/diff_trust.h).
#include "agent/diff_trust.h"

#include <gtest/gtest.h>

namespace rbdvault::agent {
namespace {

constexpr uint64_t MiB = 1 << 20;

TEST(DiffTrust, TrustedWithoutSnapshotsBetweenTheBackups) {
  // Shrinks and grows alone (no snapshot froze the smaller size) were right in every trial.
  EXPECT_EQ(object_map_trust({10, 8 * MiB}, {20, 8 * MiB}, {{10, 8 * MiB}, {20, 8 * MiB}}).exact_from, UINT64_MAX);
  EXPECT_EQ(object_map_trust({10, 8 * MiB}, {20, 2 * MiB}, {{10, 8 * MiB}, {20, 2 * MiB}}).exact_from, UINT64_MAX);
}

TEST(DiffTrust, ASmallerSnapshotBetweenTheBackupsNeedsTheExactDiffAboveIt) {
  // Shrink to 3 MiB, someone snapshots, grow back: the object-map diff misses [3 MiB, 8 MiB).
  DiffTrust t = object_map_trust({10, 8 * MiB}, {20, 8 * MiB}, {{10, 8 * MiB}, {15, 3 * MiB}, {20, 8 * MiB}});
  EXPECT_EQ(t.exact_from, 3 * MiB);
  EXPECT_NE(t.reason.find("id 15"), std::string::npos) << t.reason;
  // Grown to a larger size, or ending smaller than the base but above the snapshot: the same.
  EXPECT_EQ(object_map_trust({10, 8 * MiB}, {20, 12 * MiB}, {{15, 3 * MiB}}).exact_from, 3 * MiB);
  EXPECT_EQ(object_map_trust({10, 8 * MiB}, {20, 5 * MiB}, {{15, 3 * MiB}}).exact_from, 3 * MiB);
  // A 0-byte snapshot between them: everything.
  EXPECT_EQ(object_map_trust({10, 8 * MiB}, {20, 8 * MiB}, {{15, 0}}).exact_from, 0u);
  // Several: the smallest decides.
  EXPECT_EQ(object_map_trust({10, 8 * MiB}, {20, 8 * MiB}, {{12, 5 * MiB}, {14, 1 * MiB}, {16, 6 * MiB}}).exact_from,
            1 * MiB);
}

TEST(DiffTrust, OnlySnapshotsStrictlyBetweenAndSmallerThanBothEndsCount) {
  // Before the base or after the end: not in the interval.
  EXPECT_EQ(object_map_trust({10, 8 * MiB}, {20, 8 * MiB}, {{5, 1 * MiB}, {25, 1 * MiB}}).exact_from, UINT64_MAX);
  // Between, but not smaller than both ends (the image only grew in between).
  EXPECT_EQ(object_map_trust({10, 4 * MiB}, {20, 8 * MiB}, {{15, 4 * MiB}, {16, 6 * MiB}}).exact_from, UINT64_MAX);
  // Smaller than the base, not smaller than the end: the end already cut that range.
  EXPECT_EQ(object_map_trust({10, 8 * MiB}, {20, 2 * MiB}, {{15, 3 * MiB}}).exact_from, UINT64_MAX);
}

}  // namespace
}  // namespace rbdvault::agent
