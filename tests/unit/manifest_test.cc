// Revision manifests: the codec round-trips, and its decoder refuses every damaged or hostile
// length with kCorrupt (docs/format.md §16).
#include "store/manifest.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "store/error.h"
#include "store/object_store.h"

namespace rbdvault::store {
namespace {

using Entries = std::vector<std::pair<uint64_t, std::optional<Hash>>>;

ManifestTail sample_tail() {
  ManifestTail t;
  t.rev.id = 42;
  t.rev.image = 3;
  t.rev.pool = "rbd";
  t.rev.name = "vm-1";
  t.rev.ceph_image_id = "abc123";
  t.rev.snap_name = "rbdvault-x-42";
  t.rev.snap_id = 9;
  t.rev.created = 1764095878;
  t.rev.size = 100ull << 20;
  t.rev.parent = 40;
  t.rev.kind = RevisionKind::kDelta;
  t.rev.block_size = 65536;
  t.rev.digest = sha256("digest");
  t.rev.flags = kRevisionProtected | kRevisionApplicationConsistent;
  t.generation = 2;
  t.absorbed = {41};
  return t;
}

Entries read_entries(const ManifestReader& m) {
  Entries out;
  m.for_each_entry([&](uint64_t b, const std::optional<Hash>& h) { out.emplace_back(b, h); });
  return out;
}

void expect_corrupt(const std::string& bytes) {
  auto obj = memory_object(bytes);
  try {
    const ManifestReader m(*obj);
    (void)read_entries(m);
    FAIL() << "accepted a damaged manifest";
  } catch (const StoreError& e) {
    EXPECT_EQ(e.kind(), StoreError::Kind::kCorrupt) << e.what();
  }
}

TEST(ManifestTest, RoundTrips) {
  Entries entries = {{0, sha256("a")}, {1, std::nullopt}, {1000, sha256("b")}, {1ull << 40, std::nullopt}};
  const std::string bytes = encode_manifest(sample_tail(), entries);
  auto obj = memory_object(bytes);
  const ManifestReader m(*obj);
  EXPECT_EQ(m.tail().rev.id, 42u);
  EXPECT_EQ(m.tail().rev.pool, "rbd");
  EXPECT_EQ(m.tail().rev.snap_name, "rbdvault-x-42");
  EXPECT_EQ(m.tail().rev.digest, sha256("digest"));
  EXPECT_EQ(m.tail().rev.flags, kRevisionProtected | kRevisionApplicationConsistent);
  EXPECT_EQ(m.tail().generation, 2u);
  EXPECT_EQ(m.tail().absorbed, std::vector<uint64_t>{41});
  EXPECT_EQ(read_entries(m), entries);
}

TEST(ManifestTest, EmptyRevision) {
  auto obj = memory_object(encode_manifest(sample_tail(), {}));
  const ManifestReader m(*obj);
  EXPECT_TRUE(read_entries(m).empty());
}

// Entries cost about one byte of gap plus the hash: the manifest stays near 33 bytes per entry.
TEST(ManifestTest, Compact) {
  Entries entries;
  for (uint64_t b = 0; b < 10000; ++b) entries.emplace_back(b, sha256(std::to_string(b)));
  EXPECT_LT(encode_manifest(sample_tail(), entries).size(), 10000u * 33 + 400);
}

TEST(ManifestTest, RefusesDamage) {
  const std::string good = encode_manifest(sample_tail(), {{0, sha256("a")}, {5, std::nullopt}});
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] ^= 0x01;
    expect_corrupt(bad);
  }
  for (size_t n = 0; n < good.size(); ++n) expect_corrupt(good.substr(0, n));
  expect_corrupt(good + "x");
}

TEST(ManifestTest, Names) {
  EXPECT_EQ(manifest_name(0x2a, 3), "manifests/000000000000002a.00000003");
  auto p = parse_manifest_name("manifests/000000000000002a.00000003");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->first, 0x2au);
  EXPECT_EQ(p->second, 3u);
  EXPECT_FALSE(parse_manifest_name("manifests/000000000000002a.0000003"));
  EXPECT_FALSE(parse_manifest_name("manifests/000000000000002A.00000003"));
  EXPECT_FALSE(parse_manifest_name("data/000000000000002a.00000003"));
}

}  // namespace
}  // namespace rbdvault::store
