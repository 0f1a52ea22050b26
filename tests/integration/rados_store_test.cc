// The RADOS backend against a real cluster (RBDVAULT_STORE_CONF: the backup cluster's ceph.conf):
// the storage seam's promises (object_store.h) hold for it. Each test uses a namespace of its own.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <rados/librados.h>

#include "store/error.h"
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
}

}  // namespace
}  // namespace rbdvault::store
