#include "store/format.h"

#include <gtest/gtest.h>

#include "store/error.h"

namespace rbdvault::store {
namespace {

TEST(Format, BlockKeysSortByImageBlockRevision) {
  EXPECT_LT(block_key(1, 2, 3), block_key(1, 2, 4));
  EXPECT_LT(block_key(1, 2, 999), block_key(1, 3, 0));
  EXPECT_LT(block_key(1, 0xffffffffffull, 1), block_key(2, 0, 0));
  auto k = parse_block_key(block_key(7, 8, 9));
  ASSERT_TRUE(k);
  EXPECT_EQ(k->image, 7u);
  EXPECT_EQ(k->block, 8u);
  EXPECT_EQ(k->rev, 9u);
  EXPECT_FALSE(parse_block_key("Bshort"));
}

TEST(Format, RevisionRecordRoundTrips) {
  RevisionRecord r;
  r.id = 42;
  r.image = 3;
  r.pool = "rbd";
  r.name = "vm-101";
  r.ceph_image_id = "10ab3c";
  r.snap_name = "rbdvault-0123abcd-42";
  r.snap_id = 17;
  r.created = 1764000000;
  r.size = (1ull << 40) + 5;
  r.parent = 41;
  r.kind = RevisionKind::kDelta;
  r.block_size = 65536;
  r.order = 22;
  r.features = 61;
  r.bytes_read = 123;
  r.bytes_stored = 45;
  r.new_chunks = 6;
  r.map_entries = 7;
  r.digest = sha256("x");
  r.flags = 1;
  RevisionRecord d = decode_revision(encode(r));
  EXPECT_EQ(d.id, r.id);
  EXPECT_EQ(d.pool, r.pool);
  EXPECT_EQ(d.name, r.name);
  EXPECT_EQ(d.ceph_image_id, r.ceph_image_id);
  EXPECT_EQ(d.snap_name, r.snap_name);
  EXPECT_EQ(d.snap_id, r.snap_id);
  EXPECT_EQ(d.created, r.created);
  EXPECT_EQ(d.size, r.size);
  EXPECT_EQ(d.parent, r.parent);
  EXPECT_EQ(d.kind, r.kind);
  EXPECT_EQ(d.order, r.order);
  EXPECT_EQ(d.features, r.features);
  EXPECT_EQ(d.map_entries, r.map_entries);
  EXPECT_EQ(d.digest, r.digest);
  EXPECT_EQ(d.flags, r.flags);
}

// The group fields (flags bit 4) follow the flags; without the bit the record ends at the flags
// exactly as before (docs/format.md §5.2).
TEST(Format, RevisionGroupFieldsRoundTrip) {
  RevisionRecord r;
  r.block_size = 65536;
  const size_t plain = encode(r).size();
  r.flags = kRevisionGroup | kRevisionApplicationConsistent;
  r.group = "vm1";
  r.group_run = 41;
  r.group_gap_us = 1234;
  const std::string v = encode(r);
  EXPECT_EQ(v.size(), plain + 20 + 3);
  const RevisionRecord d = decode_revision(v);
  EXPECT_EQ(d.group, "vm1");
  EXPECT_EQ(d.group_run, 41u);
  EXPECT_EQ(d.group_gap_us, 1234u);
  EXPECT_EQ(d.flags, r.flags);
  // Protect re-encodes the record: the group stays.
  RevisionRecord p = d;
  p.flags |= kRevisionProtected;
  EXPECT_EQ(decode_revision(encode(p)).group, "vm1");
  // Without the bit, group bytes after the flags are trailing garbage.
  std::string tail = v;
  tail[plain - 1] = 0;
  EXPECT_THROW((void)decode_revision(tail), StoreError);
}

TEST(Format, TruncatedRecordIsCorrupt) {
  ChunkRecord c{1, kPackHeaderSize, 3, 4, 1, 5};
  std::string v = encode(c);
  EXPECT_EQ(decode_chunk_record(v).refs, 5u);
  v.pop_back();
  EXPECT_THROW((void)decode_chunk_record(v), StoreError);
  EXPECT_THROW(decode_revision("\x01"), StoreError);
}

TEST(Format, DigestAddSubtractAreInverse) {
  Hash acc{};
  Hash a = RevisionDigest::term(1, sha256("a"));
  Hash b = RevisionDigest::term(2, sha256("b"));
  RevisionDigest::add(acc, a);
  RevisionDigest::add(acc, b);
  Hash order2{};
  RevisionDigest::add(order2, b);
  RevisionDigest::add(order2, a);
  EXPECT_EQ(acc, order2);  // order independent
  RevisionDigest::subtract(acc, a);
  RevisionDigest::subtract(acc, b);
  EXPECT_EQ(acc, Hash{});
  EXPECT_NE(RevisionDigest::term(1, sha256("a")), RevisionDigest::term(2, sha256("a")));  // position matters
}

}  // namespace
}  // namespace rbdvault::store
