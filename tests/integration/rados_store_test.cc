// The RADOS backend against a real cluster (RBDVAULT_STORE_CONF: the backup cluster's ceph.conf):
// the storage seam's promises (object_store.h) hold for it. Each test uses a namespace of its own.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <random>
#include <string>

#include "store/error.h"
#include "store/rados_object_store.h"

namespace rbdvault::store {
namespace {

std::unique_ptr<RadosObjectStore> open_fresh() {
  const char* conf = std::getenv("RBDVAULT_STORE_CONF");
  if (!conf) return nullptr;
  RadosLocation where;
  where.pool = "rbd";
  where.conf = conf;
  where.ns = "gtest-" + std::to_string(::getpid()) + "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
  return std::make_unique<RadosObjectStore>(where);
}

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

#define REQUIRE_CLUSTER(s) \
  if (!(s)) GTEST_SKIP() << "RBDVAULT_STORE_CONF not set"

TEST(RadosObjectStore, BigObjectIsInvisibleUntilCommitThenWholeAndNeverReplaced) {
  auto s = open_fresh();
  REQUIRE_CLUSTER(s);
  const std::string data = random_bytes((10 << 20) + 12345, 1);  // three extents and a tail
  {
    auto sink = s->create("data/00000001.pack");
    for (size_t off = 0; off < data.size(); off += 100000) sink->append(std::string_view(data).substr(off, 100000));
    EXPECT_EQ(sink->size(), data.size());
    EXPECT_FALSE(s->size("data/00000001.pack"));  // written, not committed
    EXPECT_TRUE(s->list("data/").empty());
    sink->commit();
  }
  ASSERT_EQ(s->size("data/00000001.pack"), data.size());
  EXPECT_EQ(s->read_all("data/00000001.pack", 64 << 20), data);
  auto r = s->open("data/00000001.pack");
  std::string part(4096, '\0');
  ASSERT_TRUE(r->read_at(5 << 20, part.data(), part.size()));
  EXPECT_EQ(part, data.substr(5 << 20, 4096));
  EXPECT_FALSE(r->read_at(data.size() - 10, part.data(), part.size()));  // past the end

  // The name is taken: refused, the object untouched, nothing left behind.
  {
    auto again = s->create("data/00000001.pack");
    EXPECT_THROW(
        {
          again->append(random_bytes(8 << 20, 2));
          again->commit();
        },
        StoreError);
  }
  EXPECT_EQ(s->read_all("data/00000001.pack", 64 << 20), data);
  s->remove("data/00000001.pack");
  EXPECT_FALSE(s->size("data/00000001.pack"));
}

TEST(RadosObjectStore, DroppedSinkLeavesNothingAndSmallObjectsCommitInOneOp) {
  auto s = open_fresh();
  REQUIRE_CLUSTER(s);
  {
    auto sink = s->create("data/00000002.pack");
    sink->append(random_bytes(9 << 20, 3));
  }  // dropped without commit
  EXPECT_FALSE(s->size("data/00000002.pack"));
  s->put("manifests/b", "second");
  s->put("manifests/a", "first");
  s->put("manifests/c", "");
  EXPECT_EQ(s->list("manifests/"), (std::vector<std::string>{"manifests/a", "manifests/b", "manifests/c"}));
  EXPECT_EQ(s->read_all("manifests/a", 100), "first");
  EXPECT_EQ(s->size("manifests/c"), 0u);
  try {
    s->put("manifests/a", "other");
    FAIL() << "a taken name was replaced";
  } catch (const StoreError& e) {
    EXPECT_EQ(e.kind(), StoreError::Kind::kExists);
  }
  EXPECT_EQ(s->read_all("manifests/a", 100), "first");
  EXPECT_THROW((void)s->read_all("manifests/a", 2), StoreError);  // lengths are bounded
  for (const auto& n : s->list("")) s->remove(n);
  EXPECT_TRUE(s->list("").empty());
}

}  // namespace
}  // namespace rbdvault::store
