#include "agent/changed_bytes.h"

#include <gtest/gtest.h>

namespace rbdvault::agent {
namespace {

constexpr uint64_t kBs = 65536;

TEST(ChangedBytes, ScatteredWritesGivePiecesPerBlock) {
  ChangedBytes c(kBs);
  c.add_exact(kBs + 4096, 4096);
  c.add_exact(kBs + 8192, 100);  // touches the previous one: merged
  c.add_exact(kBs + 30000, 10);
  c.finish();
  EXPECT_TRUE(c.pieces(0).empty());
  EXPECT_EQ(c.pieces(1), (std::vector<Piece>{{4096, 4196}, {30000, 10}}));
  EXPECT_TRUE(c.pieces(2).empty());
}

TEST(ChangedBytes, ExtentStraddlingABlockEdgeIsSplit) {
  ChangedBytes c(kBs);
  c.add_exact(3 * kBs - 100, 300);
  c.finish();
  EXPECT_EQ(c.pieces(2), (std::vector<Piece>{{kBs - 100, 100}}));
  EXPECT_EQ(c.pieces(3), (std::vector<Piece>{{0, 200}}));
}

TEST(ChangedBytes, WholeBlocksAndCoveredBlocksAreWhole) {
  ChangedBytes c(kBs);
  c.add_exact(5 * kBs + 10, 20);
  c.add_blocks(5, 6);  // e.g. an object-granular extent: the whole block, whatever else was exact
  c.add_exact(7 * kBs - 5, kBs + 10);
  c.finish();
  EXPECT_TRUE(ChangedBytes::whole(c.pieces(5), kBs));
  EXPECT_TRUE(ChangedBytes::whole(c.pieces(7), kBs));
  EXPECT_FALSE(ChangedBytes::whole(c.pieces(6), kBs));
  EXPECT_EQ(c.pieces(8), (std::vector<Piece>{{0, 5}}));
}

TEST(ChangedBytes, OutOfOrderExtentsAreSortedAndMerged) {
  ChangedBytes c(kBs);
  c.add_exact(2 * kBs + 500, 100);
  c.add_exact(kBs, 10);
  c.add_exact(2 * kBs + 550, 100);  // overlaps the first, arrives later
  c.add_exact(2 * kBs + 100, 10);
  c.finish();
  EXPECT_EQ(c.ranges(), 3u);
  EXPECT_EQ(c.pieces(2), (std::vector<Piece>{{100, 10}, {500, 150}}));
  EXPECT_EQ(c.pieces(1), (std::vector<Piece>{{0, 10}}));
}

}  // namespace
}  // namespace rbdvault::agent
