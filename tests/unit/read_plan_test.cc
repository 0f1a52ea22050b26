#include "agent/read_plan.h"

#include <gtest/gtest.h>

namespace rbdvault::agent {
namespace {

constexpr uint64_t kBs = 65536;

TEST(ReadPlan, DataExtentsReadWholeBlocks) {
  ReadPlan p(kBs, 100 * kBs);
  p.add_extent(kBs + 10, 4096, true);
  p.add_extent(5 * kBs - 1, 2, true);  // straddles blocks 4 and 5
  auto runs = p.finish();
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0], (BlockRun{1, 2, false}));
  EXPECT_EQ(runs[1], (BlockRun{4, 6, false}));
}

TEST(ReadPlan, DeallocatedExtentsZeroCoveredBlocksAndReadEdges) {
  ReadPlan p(kBs, 100 * kBs);
  p.add_extent(10 * kBs + 100, 10 * kBs, false);  // blocks 11..19 covered, 10 and 20 partly
  auto runs = p.finish();
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs[0], (BlockRun{10, 11, false}));
  EXPECT_EQ(runs[1], (BlockRun{11, 20, true}));
  EXPECT_EQ(runs[2], (BlockRun{20, 21, false}));
}

TEST(ReadPlan, ReadWinsOverZero) {
  ReadPlan p(kBs, 100 * kBs);
  p.add_extent(0, 10 * kBs, false);
  p.add_extent(4 * kBs, 10, true);
  p.add_block(9);
  auto runs = p.finish();
  ASSERT_EQ(runs.size(), 4u);
  EXPECT_EQ(runs[0], (BlockRun{0, 4, true}));
  EXPECT_EQ(runs[1], (BlockRun{4, 5, false}));
  EXPECT_EQ(runs[2], (BlockRun{5, 9, true}));
  EXPECT_EQ(runs[3], (BlockRun{9, 10, false}));
}

TEST(ReadPlan, PaddingPastTheEndCountsAsCovered) {
  ReadPlan p(kBs, 10 * kBs + 512);  // last block holds 512 bytes
  p.add_extent(9 * kBs, kBs + 512, false);
  auto runs = p.finish();
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0], (BlockRun{9, 11, true}));
  ReadPlan q(kBs, 10 * kBs);
  q.add_extent(20 * kBs, kBs, true);  // beyond the end: ignored
  EXPECT_TRUE(q.finish().empty());
}

TEST(ReadPlan, UnsortedAndOverlappingExtentsMerge) {
  ReadPlan p(kBs, 100 * kBs);
  p.add_extent(50 * kBs, kBs, true);
  p.add_extent(10 * kBs, kBs, true);
  p.add_extent(10 * kBs + 5, 3 * kBs, true);
  auto runs = p.finish();
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0], (BlockRun{10, 14, false}));
  EXPECT_EQ(runs[1], (BlockRun{50, 51, false}));
}

}  // namespace
}  // namespace rbdvault::agent
