// The RADOS backend against a real cluster (RBDVAULT_STORE_CONF: the backup cluster's ceph.conf):
// the storage seam's promises (object_store.h) hold for it. Each test uses a namespace of its own.
#include <gtest/gtest.h>
#include <rados/librados.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include "store/error.h"
#include "store/rados_cache.h"
#include "store/rados_lease.h"
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

// A raw librados client of a store's namespace, as an operator's `rados` command would be.
struct RawClient {
  rados_t cluster = nullptr;
  rados_ioctx_t io = nullptr;
  explicit RawClient(const RadosLocation& w) {
    EXPECT_EQ(rados_create2(&cluster, "ceph", "client.admin", 0), 0);
    EXPECT_EQ(rados_conf_read_file(cluster, w.conf.c_str()), 0);
    EXPECT_EQ(rados_connect(cluster), 0);
    EXPECT_EQ(rados_ioctx_create(cluster, w.pool.c_str(), &io), 0);
    rados_ioctx_set_namespace(io, w.ns.c_str());
  }
  ~RawClient() {
    if (io) rados_ioctx_destroy(io);
    rados_shutdown(cluster);
  }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;
};

// A second client of the same namespace: another host, as far as the cluster can tell.
std::unique_ptr<RadosObjectStore> other_client(const RadosObjectStore& s) {
  return std::make_unique<RadosObjectStore>(s.location());
}

StoreError::Kind kind_of(const std::function<void()>& fn, std::string* message = nullptr) {
  try {
    fn();
  } catch (const StoreError& e) {
    if (message) *message = e.what();
    return e.kind();
  }
  ADD_FAILURE() << "no StoreError thrown";
  return StoreError::Kind::kIO;
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

TEST(RadosLease, ReadersShareGcExcludesThemAndTheRefusalNamesHolders) {
  auto a = open_fresh();
  REQUIRE_CLUSTER(a);
  a->put(kRadosMarkerObject, "marker");
  auto b = other_client(*a);
  auto gc = other_client(*a);
  auto ra = a->lease_readers("rbdvault restore rbd/x@1", false, {});
  auto rb = b->lease_readers("rbdvault mount rbd/x", false, {});
  ASSERT_TRUE(ra && rb);
  std::string msg;
  EXPECT_EQ(kind_of([&] { (void)gc->lease_readers("rbdvault gc", true, {}); }, &msg), StoreError::Kind::kLocked);
  EXPECT_NE(msg.find("is being read"), std::string::npos) << msg;
  EXPECT_NE(msg.find("pid " + std::to_string(::getpid()) + " "), std::string::npos) << msg;
  EXPECT_NE(msg.find("rbdvault restore rbd/x@1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rbdvault mount rbd/x"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
  EXPECT_EQ(gc->removals(), 0u);  // the refused one advanced nothing
  ra.reset();
  EXPECT_EQ(kind_of([&] { (void)gc->lease_readers("rbdvault gc", true, {}); }), StoreError::Kind::kLocked);
  rb.reset();
  {
    auto alone = gc->lease_readers("rbdvault gc", true, {});
    ASSERT_TRUE(alone);
    EXPECT_EQ(gc->removals(), 1u);  // advanced before anything is removed
    EXPECT_EQ(kind_of([&] { (void)a->lease_readers("", false, {}); }, &msg), StoreError::Kind::kLocked);
    EXPECT_NE(msg.find("being garbage-collected"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rbdvault gc"), std::string::npos) << msg;
  }
  EXPECT_TRUE(a->lease_readers("", false, {}));  // released: readers come back
  a->remove(kRadosMarkerObject);
}

TEST(RadosLease, AReaderWhoseIndexPredatesARemovalIsRefused) {
  auto s = open_fresh();
  REQUIRE_CLUSTER(s);
  s->put(kRadosMarkerObject, "marker");
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / ("rados-lease-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  write_cache_removals(dir, 0);
  EXPECT_TRUE(s->lease_readers("", false, dir));  // the index saw every removal: accepted
  { auto gc = other_client(*s)->lease_readers("rbdvault gc", true, {}); }  // another host's gc ran
  std::string msg;
  EXPECT_EQ(kind_of([&] { (void)s->lease_readers("", false, dir); }, &msg), StoreError::Kind::kLocked);
  EXPECT_NE(msg.find("run the command again"), std::string::npos) << msg;
  // An exclusive holder records what its own index knows.
  { auto gc = s->lease_readers("rbdvault gc", true, dir); }
  EXPECT_EQ(read_cache_removals(dir), 2u);
  EXPECT_TRUE(s->lease_readers("", false, dir));
  std::filesystem::remove_all(dir);
  s->remove(kRadosMarkerObject);
}

TEST(RadosLease, AReaderThatLostItsLeaseReadsNothingMore) {
  ::setenv("RBDVAULT_RADOS_LEASE_SECONDS", "6", 1);  // renewed every 2 s, refused 1 s before its end
  auto s = open_fresh();
  ::unsetenv("RBDVAULT_RADOS_LEASE_SECONDS");
  REQUIRE_CLUSTER(s);
  s->put(kRadosMarkerObject, "marker");
  s->put("data/00000001.pack", "pack bytes");
  auto lease = s->lease_readers("rbdvault restore", false, {});
  auto obj = s->open("data/00000001.pack");
  char buf[4];
  EXPECT_TRUE(obj->read_at(0, buf, 4));
  // Renewals keep it valid well past its duration.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(8);
  while (std::chrono::steady_clock::now() < until) {
    ASSERT_TRUE(obj->read_at(0, buf, 4));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  // Another host breaks it (as an operator would with `rados lock break`): the next renewal
  // fails, and from then on every read is refused.
  RawClient other(s->location());
  const auto holders = lease_lockers(other.io, kReadersLockName);
  ASSERT_EQ(holders.size(), 1u);
  ASSERT_EQ(rados_break_lock(other.io, kRadosMarkerObject, kReadersLockName, holders[0].first.c_str(),
                             holders[0].second.c_str()),
            0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::string msg;
  for (;;) {
    try {
      (void)obj->read_at(0, buf, 4);
    } catch (const StoreError& e) {
      msg = e.what();
      EXPECT_EQ(e.kind(), StoreError::Kind::kLocked);
      break;
    }
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "reads went on without the lease";
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_NE(msg.find("reader lease"), std::string::npos) << msg;
  EXPECT_EQ(kind_of([&] { (void)s->read_all("data/00000001.pack", 100); }), StoreError::Kind::kLocked);
  lease.reset();
  EXPECT_EQ(s->read_all("data/00000001.pack", 100), "pack bytes");  // without a lease: nothing to check
  s->remove("data/00000001.pack");
  s->remove(kRadosMarkerObject);
}

}  // namespace
}  // namespace rbdvault::store
