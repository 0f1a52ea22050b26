// The local-directory backend of the storage seam keeps the promises object_store.h makes:
// invisible until commit, never replaces, durable names, bounded whole reads, clean leftovers.
#include "store/local_object_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "store/error.h"

namespace rbdvault::store::testing {
namespace {

namespace fs = std::filesystem;

class LocalObjectStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("rbdvault-los-test-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  StoreError::Kind kind_of(const std::function<void()>& fn) {
    try {
      fn();
    } catch (const StoreError& e) {
      return e.kind();
    }
    ADD_FAILURE() << "no StoreError thrown";
    return StoreError::Kind::kInvalid;
  }

  fs::path root_;
};

TEST_F(LocalObjectStoreTest, ObjectIsInvisibleUntilCommitAndGoneIfNeverCommitted) {
  LocalObjectStore s(root_);
  {
    auto sink = s.create("data/00000001.pack");
    sink->append("hello ");
    sink->append(std::string(5 << 20, 'x'));  // larger than the write buffer
    EXPECT_EQ(sink->size(), 6u + (5u << 20));
    EXPECT_FALSE(s.size("data/00000001.pack").has_value());
    EXPECT_TRUE(s.list("data/").empty());
    sink->commit();
  }
  ASSERT_EQ(s.size("data/00000001.pack"), std::optional<uint64_t>(6u + (5u << 20)));
  char buf[6];
  auto r = s.open("data/00000001.pack");
  ASSERT_TRUE(r->read_at(0, buf, 6));
  EXPECT_EQ(std::string(buf, 6), "hello ");
  EXPECT_FALSE(r->read_at(r->size() - 2, buf, 3)) << "a read past the end must say so";

  { auto abandoned = s.create("data/00000002.pack"); abandoned->append("partial"); }
  EXPECT_FALSE(s.size("data/00000002.pack").has_value());
  EXPECT_FALSE(fs::exists(root_ / "data/00000002.pack.tmp")) << "an abandoned sink left its temporary file";
}

TEST_F(LocalObjectStoreTest, CommitNeverReplacesAnExistingObject) {
  LocalObjectStore s(root_);
  s.put("manifests/a", "first");
  EXPECT_EQ(kind_of([&] { s.put("manifests/a", "second"); }), StoreError::Kind::kExists);
  EXPECT_EQ(s.read_all("manifests/a", 100), "first");
}

TEST_F(LocalObjectStoreTest, ListIsSortedByPrefixAndSkipsTemporaries) {
  LocalObjectStore s(root_);
  for (const char* n : {"data/0000000b.pack", "data/0000000a.pack", "manifests/01", "data/x"}) s.put(n, n);
  std::ofstream(root_ / "data/0000000c.pack.tmp") << "left by a killed writer";
  EXPECT_EQ(s.list("data/"), (std::vector<std::string>{"data/0000000a.pack", "data/0000000b.pack", "data/x"}));
  EXPECT_EQ(s.list("data/0000"), (std::vector<std::string>{"data/0000000a.pack", "data/0000000b.pack"}));
  EXPECT_TRUE(s.list("nothing/").empty());
  s.remove_incomplete("data/");
  EXPECT_FALSE(fs::exists(root_ / "data/0000000c.pack.tmp"));
  EXPECT_TRUE(fs::exists(root_ / "data/x"));
}

TEST_F(LocalObjectStoreTest, RemoveIsIdempotentAndReadersOutliveIt) {
  LocalObjectStore s(root_);
  s.put("data/p", "payload");
  auto r = s.open("data/p");
  s.remove("data/p");
  s.remove("data/p");
  EXPECT_FALSE(s.size("data/p").has_value());
  char buf[7];
  ASSERT_TRUE(r->read_at(0, buf, 7));
  EXPECT_EQ(std::string(buf, 7), "payload");
  EXPECT_EQ(kind_of([&] { (void)s.open("data/p"); }), StoreError::Kind::kNotFound);
}

TEST_F(LocalObjectStoreTest, BadNamesAndOversizedReadsAreRefused) {
  LocalObjectStore s(root_);
  for (const char* bad : {"", "/abs", "../up", "data/../x", "Data/X", "a b", "data/p.tmp"})
    EXPECT_EQ(kind_of([&] { (void)s.create(bad); }), StoreError::Kind::kInvalid) << bad;
  s.put("data/big", std::string(1000, 'b'));
  EXPECT_EQ(kind_of([&] { (void)s.read_all("data/big", 999); }), StoreError::Kind::kCorrupt);
  EXPECT_EQ(s.read_all("data/big", 1000).size(), 1000u);
}

}  // namespace
}  // namespace rbdvault::store::testing
