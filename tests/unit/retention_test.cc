#include "agent/retention.h"

#include <gtest/gtest.h>

#include <map>

namespace rbdvault::agent {
namespace {

constexpr int64_t kHour = 3600, kDay = 86400;
constexpr int64_t kBase = 1764547200;  // 2025-12-01T00:00:00Z, a Monday

std::map<uint64_t, RetentionDecision> decide(const std::vector<RetentionInput>& in, const RetentionPolicy& p) {
  std::map<uint64_t, RetentionDecision> out;
  for (auto& d : apply_retention(in, p)) out[d.id] = d;
  return out;
}

TEST(Retention, KeepLastKeepsTheNewestN) {
  std::vector<RetentionInput> in;
  for (uint64_t i = 1; i <= 5; ++i) in.push_back({i, kBase + int64_t(i) * kHour, false});
  auto d = decide(in, RetentionPolicy{2, 0, 0, 0, 0});
  EXPECT_TRUE(d[5].keep);
  EXPECT_TRUE(d[4].keep);
  EXPECT_FALSE(d[3].keep);
  EXPECT_FALSE(d[1].keep);
  EXPECT_EQ(d[5].reasons, "newest, last");
}

TEST(Retention, DailyKeepsNewestOfEachDay) {
  std::vector<RetentionInput> in;
  uint64_t id = 1;
  for (int day = 0; day < 5; ++day)
    for (int h : {1, 12, 23}) in.push_back({id++, kBase + day * kDay + h * kHour, false});
  auto d = decide(in, RetentionPolicy{0, 0, 3, 0, 0});
  // Newest of days 4, 3, 2: ids 15, 12, 9.
  for (uint64_t i = 1; i <= 15; ++i) EXPECT_EQ(d[i].keep, i == 15 || i == 12 || i == 9) << i;
}

TEST(Retention, WeeklyAndMonthlyBuckets) {
  std::vector<RetentionInput> in;
  uint64_t id = 1;
  for (int day = 0; day < 70; ++day) in.push_back({id++, kBase + day * kDay, false});
  auto d = decide(in, RetentionPolicy{0, 0, 0, 2, 2});
  // Weekly: Sunday 2026-02-08 (day 69, id 70) ... ISO weeks start Monday: newest of current week (70)
  // and of the previous week (Sunday, day 62 → id 63). Monthly: newest of Feb (70) and Jan (day 61 → id 62).
  EXPECT_TRUE(d[70].keep);
  EXPECT_TRUE(d[63].keep);
  EXPECT_TRUE(d[62].keep);
  int kept = 0;
  for (auto& [i, dec] : d) kept += dec.keep;
  EXPECT_EQ(kept, 3);
}

TEST(Retention, ProtectedAndNewestAlwaysStay) {
  std::vector<RetentionInput> in{{1, kBase, true}, {2, kBase + kHour, false}, {3, kBase + 2 * kHour, false}};
  auto d = decide(in, RetentionPolicy{0, 0, 0, 0, 0});
  EXPECT_TRUE(d[1].keep);
  EXPECT_EQ(d[1].reasons, "protected");
  EXPECT_FALSE(d[2].keep);
  EXPECT_TRUE(d[3].keep);
}

// The newest revision is the last one backed up (the highest id), also when the clock went back
// and an earlier revision has a later creation time: forget refuses the newest, so expire must keep it.
TEST(Retention, TheNewestIsTheLastBackedUpEvenIfTheClockWentBack) {
  std::vector<RetentionInput> in{{1, kBase, false}, {2, kBase + 2 * kHour, false}, {3, kBase + kHour, false}};
  auto d = decide(in, RetentionPolicy{1, 0, 0, 0, 0});
  EXPECT_TRUE(d[3].keep);
  EXPECT_EQ(d[3].reasons, "newest");
  EXPECT_TRUE(d[2].keep);  // the newest by time: keep-last 1
  EXPECT_EQ(d[2].reasons, "last");
  EXPECT_FALSE(d[1].keep);
}

}  // namespace
}  // namespace rbdvault::agent
