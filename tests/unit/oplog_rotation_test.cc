// Issue 11 point 8: the operation log is rotated by size and keeps a bounded number of old
// segments; `log` and `status` still see the newest operations.
#include <fstream>

#include "agent/status.h"
#include "store/oplog.h"
#include "store_fixture.h"

namespace rbdvault::store::testing {
namespace {

constexpr uint64_t kSegment = 4096;
// A line of these tests is well under this; a segment is rotated by the append that fills it.
constexpr uint64_t kLongestLine = 512;

uint64_t size_of(const fs::path& p) { return fs::exists(p) ? fs::file_size(p) : 0; }

TEST_F(StoreTest, OpLogRotatesBySizeAndKeepsTheNewestSegments) {
  OpLog log(dir_, OpLogLimits{kSegment, 2});
  constexpr int kOps = 400;
  for (int i = 0; i < kOps; ++i) {
    const std::string image = "rbd/img" + std::to_string(i % 3);
    const std::string id = log.begin("backup", image, "rbdvault backup " + image + " #" + std::to_string(i));
    if (i == kOps - 15) {  // a writer killed mid-line; the next append starts a fresh line
      std::ofstream f(dir_ / "oplog", std::ios::app);
      f << "start id=torn time=1 op=back";
    }
    log.end(id, i % 4 != 3 ? "ok" : "failed", i % 4 != 3 ? "" : "boom " + std::to_string(i), static_cast<uint64_t>(i));
  }
  const auto segments = log.old_segments();
  ASSERT_EQ(segments.size(), 2u) << "old segments are not bounded";
  for (const auto& s : segments) EXPECT_LE(size_of(s), kSegment + kLongestLine) << s;
  EXPECT_LT(size_of(dir_ / "oplog"), kSegment + kLongestLine);
  EXPECT_EQ(segments.back().filename().string().substr(0, 6), "oplog.");

  size_t torn = 0;
  const auto ops = log.read(&torn);
  ASSERT_FALSE(ops.empty());
  EXPECT_LT(ops.size(), static_cast<size_t>(kOps)) << "nothing was dropped: the test rotates too little";
  EXPECT_EQ(ops.back().args, "rbdvault backup rbd/img0 #399");
  EXPECT_EQ(ops.back().error, "boom 399");
  EXPECT_EQ(ops.back().bytes, 399u);
  const auto n = [](const OpRecord& r) { return std::stoi(r.args.substr(r.args.find('#') + 1)); };
  EXPECT_LE(n(ops.front()), kOps - 15) << "the segment with the torn line was dropped: rotate less";
  for (size_t i = 0; i < ops.size(); ++i) {
    if (i > 0) {
      EXPECT_EQ(n(ops[i]), n(ops[i - 1]) + 1) << "operations lost or out of order";
    }
    // Every start kept is paired with its end, also when the two are in different segments.
    EXPECT_EQ(ops[i].result, n(ops[i]) % 4 != 3 ? "ok" : "failed") << ops[i].args;
  }
  EXPECT_EQ(torn, 1u);

  // status: the newest attempt per image, from the newest segment.
  const auto status = agent::collect_status(*store_);
  std::map<std::string, agent::ImageStatus> by_image;
  for (const auto& s : status) by_image[s.image] = s;
  EXPECT_EQ(by_image["rbd/img0"].last_result, "failed");  // #399
  EXPECT_EQ(by_image["rbd/img0"].last_error, "boom 399");
  EXPECT_EQ(by_image["rbd/img1"].last_result, "ok");  // #397
  EXPECT_EQ(by_image["rbd/img2"].last_result, "ok");  // #398
}

}  // namespace
}  // namespace rbdvault::store::testing

namespace rbdvault::store::testing {
namespace {

// The limits come from the store marker's optional lines; a bad value there is refused at open.
TEST_F(StoreTest, OpLogLimitsComeFromTheStoreMarker) {
  {
    std::ofstream f(dir_ / "rbdvault.store", std::ios::app);
    f << "oplog_segment_bytes 4096\noplog_keep_segments 1\n";
  }
  OpLog log(dir_);
  for (int i = 0; i < 100; ++i) log.end(log.begin("gc", "", "rbdvault gc"), true, "", 0);
  EXPECT_EQ(log.old_segments().size(), 1u);
  EXPECT_LT(size_of(dir_ / "oplog"), kSegment + kLongestLine);
  store_.reset();
  EXPECT_NO_THROW(store_ = Store::open(dir_, OpenMode::kWriter, "unit test"));
  store_.reset();
  {
    std::ofstream f(dir_ / "rbdvault.store", std::ios::app);
    f << "oplog_keep_segments many\n";
  }
  try {
    Store::open(dir_, OpenMode::kReadOnly);
    ADD_FAILURE() << "a bad oplog_keep_segments was accepted";
  } catch (const StoreError& e) {
    EXPECT_NE(std::string(e.what()).find("oplog_keep_segments"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace rbdvault::store::testing
