// Restores to a file: the whole-revision digest check and atomicity under the target's name.
#include "agent/restore.h"

#include <fcntl.h>
#include <rocksdb/db.h>
#include <sys/file.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "store/error.h"
#include "store/format.h"
#include "store_fixture.h"

namespace rbdvault::store::testing {
namespace {

class RestoreTest : public StoreTest {
 protected:
  // Two revisions of an 8-block image; the second changes blocks 2 and 5.
  void SetUp() override {
    StoreTest::SetUp();
    image_ = random_bytes(8 * kBs, 1);
    r1_ = put("img", image_);
    image_.replace(2 * kBs, kBs, random_bytes(kBs, 2));
    image_.replace(5 * kBs, kBs, random_bytes(kBs, 3));
    const std::set<uint64_t> changed{2, 5};
    r2_ = put("img", image_, &changed);
    target_ = (dir_ / "out.raw").string();
  }

  RevisionRecord reload(const RevisionRecord& rev) { return *store_->revision(rev.id); }
  std::string partial() const { return (dir_ / "out.raw.rbdvault-partial").string(); }

  void put_entry(uint64_t block, const RevisionRecord& rev, std::string_view value) {
    ASSERT_TRUE(store_->db().Put(rocksdb::WriteOptions(), block_key(rev.image, block, rev.id), value).ok());
  }
  void delete_entry(uint64_t block, const RevisionRecord& rev) {
    ASSERT_TRUE(store_->db().Delete(rocksdb::WriteOptions(), block_key(rev.image, block, rev.id)).ok());
  }

  // Restoring r2 must fail as corrupt, leaving neither the target nor a partial file.
  void expect_corrupt_restore() {
    try {
      agent::restore_to_file(*store_, reload(r2_), target_, agent::RestoreOptions{});
      FAIL() << "restore of a damaged block map succeeded";
    } catch (const StoreError& e) {
      EXPECT_EQ(e.kind(), StoreError::Kind::kCorrupt) << e.what();
      EXPECT_NE(std::string(e.what()).find("digest"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(target_));
    EXPECT_FALSE(fs::exists(partial()));
  }

  static std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  std::string image_;
  RevisionRecord r1_, r2_;
  std::string target_;
};

TEST_F(RestoreTest, RestoresTheRevisionUnderItsNameOnly) {
  agent::RestoreResult r = agent::restore_to_file(*store_, reload(r2_), target_, agent::RestoreOptions{});
  EXPECT_EQ(slurp(target_), image_);
  EXPECT_EQ(r.blocks_written, 8u);
  EXPECT_FALSE(fs::exists(partial()));
}

TEST_F(RestoreTest, LostBlockMapEntryFailsTheRestore) {
  delete_entry(5, r2_);  // block 5 would come back with r1's content
  expect_corrupt_restore();
}

TEST_F(RestoreTest, ExtraBlockMapEntryFailsTheRestore) {
  auto other = store_->block_content(r2_.image, 1, r2_.id);
  ASSERT_TRUE(other.has_value());
  put_entry(6, r2_, std::string_view(reinterpret_cast<const char*>(other->data()), other->size()));
  expect_corrupt_restore();
}

TEST_F(RestoreTest, ExtraZeroEntryFailsTheRestore) {
  put_entry(3, r2_, "");  // an empty value means "zeros": block 3 would silently vanish
  expect_corrupt_restore();
}

TEST_F(RestoreTest, SkipDigestCheckRestoresAnyway) {
  delete_entry(5, r2_);
  agent::RestoreOptions o;
  o.check_digest = false;
  agent::restore_to_file(*store_, reload(r2_), target_, o);
  EXPECT_EQ(slurp(target_).substr(5 * kBs, kBs), read(reload(r1_)).substr(5 * kBs, kBs));
}

TEST_F(RestoreTest, ExistingTargetIsRefusedAndUntouched) {
  { std::ofstream(target_) << "precious"; }
  try {
    agent::restore_to_file(*store_, reload(r2_), target_, agent::RestoreOptions{});
    FAIL() << "an existing file was overwritten";
  } catch (const StoreError& e) {
    EXPECT_NE(std::string(e.what()).find("already exists"), std::string::npos) << e.what();
  }
  EXPECT_EQ(slurp(target_), "precious");
  EXPECT_FALSE(fs::exists(partial()));
}

TEST_F(RestoreTest, LeftoverOfAKilledRestoreIsReplaced) {
  { std::ofstream(partial()) << "half a restore"; }
  agent::restore_to_file(*store_, reload(r1_), target_, agent::RestoreOptions{});
  EXPECT_EQ(slurp(target_), read(reload(r1_)));
  EXPECT_FALSE(fs::exists(partial()));
}

TEST_F(RestoreTest, PartialFileOfARunningRestoreIsLeftAlone) {
  { std::ofstream(partial()) << "being written"; }
  const int fd = ::open(partial().c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);  // what a running restore holds
  EXPECT_THROW(agent::restore_to_file(*store_, reload(r1_), target_, agent::RestoreOptions{}), StoreError);
  ::close(fd);
  EXPECT_EQ(slurp(partial()), "being written");
  EXPECT_FALSE(fs::exists(target_));
}

TEST_F(RestoreTest, PartialNameIsVisible) {
  EXPECT_EQ(agent::partial_name("vm-101.raw"), "vm-101.raw.rbdvault-partial");
}

}  // namespace
}  // namespace rbdvault::store::testing
