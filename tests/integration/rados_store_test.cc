// The RADOS backend against a real cluster (RBDVAULT_STORE_CONF: the backup cluster's ceph.conf):
// the storage seam's promises (object_store.h) hold for it. Each test uses a namespace of its own.
#include <gtest/gtest.h>
#include <rados/librados.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <rados/librados.h>

#include "store/error.h"
#include "store/rados_cache.h"
#include "store/rados_lease.h"
#include "store/rados_object_store.h"
#include "store/rados_read_ahead.h"

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

// Whether an object exists at all in `s`'s namespace, committed or not (librados directly: the
// seam hides unfinished objects).
bool raw_exists(RadosObjectStore& s, const std::string& oid) {
  rados_t cluster = nullptr;
  rados_ioctx_t io = nullptr;
  if (rados_create2(&cluster, "ceph", "client.admin", 0) < 0) throw std::runtime_error("rados_create2");
  bool exists = false;
  if (rados_conf_read_file(cluster, s.location().conf.c_str()) == 0 && rados_connect(cluster) == 0 &&
      rados_ioctx_create(cluster, s.location().pool.c_str(), &io) == 0) {
    rados_ioctx_set_namespace(io, s.location().ns.c_str());
    uint64_t size = 0;
    time_t mtime = 0;
    const int r = rados_stat(io, oid.c_str(), &size, &mtime);
    if (r < 0 && r != -ENOENT) ADD_FAILURE() << "stat " << oid << ": " << r;
    exists = r == 0;
    rados_ioctx_destroy(io);
  } else {
    ADD_FAILURE() << "cannot connect to check " << oid;
  }
  rados_shutdown(cluster);
  return exists;
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
  EXPECT_TRUE(raw_exists(*s, "data/00000001.pack"));  // the refused sink did not remove it either
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
  EXPECT_FALSE(raw_exists(*s, "data/00000002.pack"));  // not even an unfinished leftover
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

// One object whose size attribute is damaged is left out of listings (with a warning) and never
// removed as unfinished: it no longer fails every listing, index refresh and writer recovery.
TEST(RadosObjectStore, ADamagedSizeAttributeLeavesOneObjectOutNotTheListing) {
  auto s = open_fresh();
  REQUIRE_CLUSTER(s);
  s->put("manifests/a", "first");
  s->put("manifests/b", "second");
  {
    RawClient raw(s->location());
    ASSERT_EQ(rados_setxattr(raw.io, "manifests/a", "rbdvault.size", "5x", 2), 0);
  }
  EXPECT_EQ(s->list("manifests/"), std::vector<std::string>{"manifests/b"});
  EXPECT_NO_THROW(s->remove_incomplete("manifests/"));
  EXPECT_TRUE(raw_exists(*s, "manifests/a")) << "an object with a damaged size attribute was removed";
  EXPECT_EQ(kind_of([&] { (void)s->size("manifests/a"); }), StoreError::Kind::kCorrupt);
  {
    RawClient raw(s->location());
    ASSERT_EQ(rados_remove(raw.io, "manifests/a"), 0);
  }
  s->remove("manifests/b");
}

// Reads [from, size) in pieces of `piece` bytes (the last one cut at the end), as a restore reads a
// pack's chunks one after the other; the bytes must be the object's.
void read_in_order(const ObjectReader& r, const std::string& data, uint64_t from, size_t piece) {
  std::string got(piece, '\0');
  for (uint64_t off = from; off < data.size(); off += piece) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(piece, data.size() - off));
    ASSERT_TRUE(r.read_at(off, got.data(), n)) << off;
    ASSERT_EQ(std::string_view(got.data(), n), std::string_view(data).substr(off, n)) << "at " << off;
  }
}

// Sequential reads are served from read-ahead ranges (4 MiB each), which the odd piece size makes
// reads straddle; the last range ends with the object, a short one. Two objects read in turn (a
// restore moving between packs) and two threads on one reader (the decoding workers) get their own
// bytes; a read past the end is still refused.
TEST(RadosObjectStore, ReadAheadServesTheRightBytesAcrossRangesObjectsAndEnds) {
  auto s = open_fresh();
  REQUIRE_CLUSTER(s);
  const std::string a = random_bytes((13 << 20) + 777, 5), b = random_bytes((9 << 20) + 3, 6);
  s->put("data/0000000a.pack", a);
  s->put("data/0000000b.pack", b);
  const size_t piece = 65536 + 48 + 13;  // a chunk with its header, not dividing 4 MiB
  {
    auto r = s->open("data/0000000a.pack");
    read_in_order(*r, a, 16, piece);
    std::string tail(100, '\0');
    EXPECT_FALSE(r->read_at(a.size() - 50, tail.data(), tail.size()));
  }
  const uint64_t served_one = s->read_ahead_bytes_served();
  EXPECT_GT(served_one, a.size() / 2) << "sequential reads were not served by read-ahead";
  {
    auto ra = s->open("data/0000000a.pack"), rb = s->open("data/0000000b.pack");
    std::string got(piece, '\0');
    for (uint64_t off = 0; off < std::max(a.size(), b.size()); off += piece)
      for (auto [r, d] : {std::pair{ra.get(), &a}, std::pair{rb.get(), &b}}) {
        if (off >= d->size()) continue;
        const size_t n = static_cast<size_t>(std::min<uint64_t>(piece, d->size() - off));
        ASSERT_TRUE(r->read_at(off, got.data(), n));
        ASSERT_EQ(std::string_view(got.data(), n), std::string_view(*d).substr(off, n)) << "at " << off;
      }
  }
  {
    auto r = s->open("data/0000000a.pack");
    std::atomic<uint64_t> next{0};
    std::atomic<int> wrong{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < 2; ++t)
      workers.emplace_back([&] {
        std::string got(piece, '\0');
        for (uint64_t off; (off = next.fetch_add(piece)) < a.size();) {
          const size_t n = static_cast<size_t>(std::min<uint64_t>(piece, a.size() - off));
          if (!r->read_at(off, got.data(), n) || std::string_view(got.data(), n) != std::string_view(a).substr(off, n))
            ++wrong;
        }
      });
    for (auto& w : workers) w.join();
    EXPECT_EQ(wrong.load(), 0);
  }
  EXPECT_GT(s->read_ahead_bytes_served(), served_one);
  for (const auto& n : s->list("")) s->remove(n);
}

// Readers left with ranges they will not read (each read only the start of a pack, then nothing
// more, as a restore with gaps leaves packs behind) hold the whole budget; a reader that then
// reads a pack through still gets read-ahead, taking back the idle readers' ranges.
TEST(RadosObjectStore, ReadAheadTakesBackTheRangesOfIdleReaders) {
  auto s = open_fresh();
  REQUIRE_CLUSTER(s);
  const std::string data = random_bytes(24 << 20, 8);
  s->put("data/0000000d.pack", data);
  const size_t piece = 65536 + 48;
  std::vector<std::unique_ptr<ObjectReader>> idle;
  std::string got(piece, '\0');
  for (int i = 0; i < 8; ++i) {  // 8 x 16 MiB read ahead: twice the budget
    idle.push_back(s->open("data/0000000d.pack"));
    for (uint64_t off = 16; off < 16 + 3 * piece; off += piece) ASSERT_TRUE(idle.back()->read_at(off, got.data(), piece));
  }
  const uint64_t before = s->read_ahead_bytes_served();
  auto r = s->open("data/0000000d.pack");
  read_in_order(*r, data, 16, piece);
  EXPECT_GT(s->read_ahead_bytes_served() - before, data.size() / 2)
      << "the idle readers' ranges were not taken back: no read-ahead for the pack being read";
  for (const auto& n : s->list("")) s->remove(n);
}

// An object removed under a reader: every read returns its own bytes (read ahead before the
// removal) or fails with kNotFound (a read ahead after it failed, the synchronous read then
// reports it); never other bytes, and the reads that reach past what was read ahead do fail.
TEST(RadosObjectStore, ReadAheadOfAVanishedObjectIsNotFoundNeverWrongBytes) {
  auto s = open_fresh();
  REQUIRE_CLUSTER(s);
  const std::string data = random_bytes(40 << 20, 7);  // well past what is read ahead at once
  s->put("data/0000000c.pack", data);
  auto r = s->open("data/0000000c.pack");
  const size_t piece = 65536 + 48;
  std::string got(piece, '\0');
  ASSERT_TRUE(r->read_at(16, got.data(), piece));
  ASSERT_TRUE(r->read_at(16 + piece, got.data(), piece));  // sequential: read-ahead starts
  s->remove("data/0000000c.pack");
  size_t right = 0, not_found = 0;
  for (uint64_t off = 16 + 2 * piece; off + piece <= data.size(); off += piece) {
    try {
      ASSERT_TRUE(r->read_at(off, got.data(), piece));
      ASSERT_EQ(std::string_view(got.data(), piece), std::string_view(data).substr(off, piece)) << "at " << off;
      ++right;
    } catch (const StoreError& e) {
      ASSERT_EQ(e.kind(), StoreError::Kind::kNotFound) << e.what();
      ++not_found;
    }
  }
  EXPECT_GT(not_found, 0u);
  EXPECT_LE(right * piece, kReadAheadRanges * kReadAheadRange + kReadAheadRange);
  // A fresh reader of the vanished object: not found either.
  EXPECT_THROW((void)s->open("data/0000000c.pack"), StoreError);
  for (const auto& n : s->list("")) s->remove(n);
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
  // Renewed every 4 s, so a renewal may come 6 s late on a loaded machine before a read is refused.
  ::setenv("RBDVAULT_RADOS_LEASE_SECONDS", "12", 1);
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
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(14);
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
