// Issue 11 point 2: damage found by recovery (which every writer's open runs) or by gc is reported
// and worked around; it never becomes an error that stops every later writer, or repair.
#include <rocksdb/db.h>

#include <fstream>

#include "agent/verify.h"
#include "store/gc.h"
#include "store/pack.h"
#include "store/scrub.h"
#include "store_fixture.h"

namespace rbdvault::store::testing {
namespace {

class RecoveryTest : public StoreTest {
 protected:
  // Writes to the index directly, as damage (or a killed writer) would leave it; the store must be
  // closed.
  void damage(const std::function<void(rocksdb::DB&)>& fn) {
    store_.reset();
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), (dir_ / "index").string(), &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    fn(*db);
    ASSERT_TRUE(db->Close().ok());
  }
  static void put_raw(rocksdb::DB& db, const std::string& key, const std::string& value) {
    ASSERT_TRUE(db.Put(rocksdb::WriteOptions(), key, value).ok());
  }
  static void del_raw(rocksdb::DB& db, const std::string& key) {
    ASSERT_TRUE(db.Delete(rocksdb::WriteOptions(), key).ok());
  }
  // The store opens for writing (recovery runs), takes a new backup and lets repair run.
  void expect_writers_and_repair_work() {
    ASSERT_NO_THROW(store_ = Store::open(dir_, OpenMode::kWriter, "unit test")) << "recovery locked writers out";
    const std::string img = random_bytes(3 * kBs, 999);
    EXPECT_EQ(read(put("after-damage", img)), img);
    EXPECT_NO_THROW(agent::repair_store(nullptr, *store_));
  }
  static std::string block(const std::string& img, uint64_t b) { return img.substr(b * kBs, kBs); }
};

// A killed writer's entry names a chunk whose index record is gone: rolling it back cannot lower a
// count that does not exist, and must not stop.
TEST_F(RecoveryTest, MissingChunkRecordInARollbackIsReportedNotFatal) {
  const std::string v1 = random_bytes(4 * kBs, 1);
  const RevisionRecord r1 = put("a", v1);
  const Hash lost = sha256(random_bytes(kBs, 2));
  damage([&](rocksdb::DB& db) {
    put_raw(db, pending_key(50), encode(PendingRecord{50, r1.image}));
    put_raw(db, block_key(r1.image, 1, 50), std::string(as_view(lost)));
  });
  ASSERT_NO_FATAL_FAILURE(expect_writers_and_repair_work());
  EXPECT_EQ(read(r1), v1);
  EXPECT_EQ(store_->block_content(r1.image, 1, 60), sha256(block(v1, 1))) << "the killed writer's entry survived";
}

// A W record that cannot be decoded still names its revision in its key: its entries are rolled
// back in every image, with the chunk references they held.
TEST_F(RecoveryTest, DamagedPendingRecordIsRolledBackNotFatal) {
  const std::string v1 = random_bytes(4 * kBs, 3);
  const RevisionRecord r1 = put("a", v1);
  const Hash shared = sha256(block(v1, 2));
  damage([&](rocksdb::DB& db) {
    std::string v;
    ASSERT_TRUE(db.Get(rocksdb::ReadOptions(), chunk_key(shared), &v).ok());
    ChunkRecord c = decode_chunk_record(v);
    ++c.refs;  // the killed writer's entry below holds a reference
    put_raw(db, chunk_key(shared), encode(c));
    put_raw(db, pending_key(50), "\x07garbage");
    put_raw(db, block_key(r1.image, 0, 50), std::string(as_view(shared)));
  });
  ASSERT_NO_FATAL_FAILURE(expect_writers_and_repair_work());
  EXPECT_EQ(store_->block_content(r1.image, 0, 60), sha256(block(v1, 0))) << "the uncommitted entry survived";
  EXPECT_EQ(store_->chunk(shared)->refs, 1u) << "the rolled back entry's reference was not returned";
  EXPECT_EQ(read(r1), v1);
}

// A forget interrupted after marking its revision, whose successor's record is then lost: the
// entries move past it to the next revision still there. And one whose image has no later revision
// left at all: nothing reads its entries any more, they are dropped.
TEST_F(RecoveryTest, ForgetWhoseSuccessorIsGoneIsCompleted) {
  const std::string v1 = random_bytes(4 * kBs, 4);
  std::string v2 = v1, v3 = v1;
  v2.replace(0, kBs, random_bytes(kBs, 5));
  v3.replace(0, kBs, block(v2, 0));
  v3.replace(kBs, kBs, random_bytes(kBs, 6));
  const std::set<uint64_t> c2{0}, c3{1};
  const RevisionRecord r1 = put("a", v1);
  const RevisionRecord r2 = put("a", v2, &c2);
  const RevisionRecord r3 = put("a", v3, &c3);
  const std::string b1 = random_bytes(2 * kBs, 7);
  const RevisionRecord rb1 = put("b", b1);
  const RevisionRecord rb2 = put("b", random_bytes(2 * kBs, 8));
  damage([&](rocksdb::DB& db) {
    for (RevisionRecord r : {r1, rb1}) {
      r.flags |= kRevisionForgetting;  // what forget's first step writes
      put_raw(db, revision_key(r.id), encode(r));
    }
    del_raw(db, revision_key(r2.id));  // listed, record lost
    del_raw(db, revision_key(rb2.id));
    del_raw(db, image_rev_key(rb2.image, rb2.id));  // gone entirely
  });
  ASSERT_NO_FATAL_FAILURE(expect_writers_and_repair_work());
  EXPECT_FALSE(store_->revision(r1.id));
  EXPECT_FALSE(store_->revision(rb1.id));
  auto r3_now = store_->revision(r3.id);
  ASSERT_TRUE(r3_now);
  EXPECT_EQ(read(*r3_now), v3) << "r3 lost what it read through r1's entries";
}

// One damaged chunk in a pack gc wants to rewrite: gc skips that pack (left for repair), reports
// it, and reclaims the others.
TEST_F(RecoveryTest, GcSkipsAPackWithADamagedChunkAndGoesOn) {
  std::map<std::string, std::string> newest;
  std::map<std::string, RevisionRecord> first;
  for (const std::string name : {"a", "b"}) {
    const std::string v1 = random_bytes(4 * kBs, name[0]);
    std::string v2 = v1;
    v2.replace(0, 2 * kBs, random_bytes(2 * kBs, name[0] + 100));
    const std::set<uint64_t> changed{0, 1};
    first[name] = put(name, v1);
    put(name, v2, &changed);
    newest[name] = v2;
  }
  for (auto& [name, r] : first) store_->forget(r.id);  // blocks 0 and 1 of each first pack are dead
  // Damage a live chunk of a's first pack (block 2, which a's newest revision reads).
  const std::string a1 = random_bytes(4 * kBs, 'a');
  const auto rec = store_->chunk(sha256(block(a1, 2)));
  ASSERT_TRUE(rec);
  const auto other = store_->chunk(sha256(block(random_bytes(4 * kBs, 'b'), 2)));
  ASSERT_TRUE(other);
  ASSERT_NE(rec->pack, other->pack);
  {
    std::fstream f(dir_ / "data" / pack_file_name(rec->pack), std::ios::in | std::ios::out | std::ios::binary);
    const auto at = static_cast<std::streamoff>(rec->offset + kChunkHeaderSize + 100);
    f.seekg(at);
    const char c = static_cast<char>(f.get());
    f.seekp(at);
    f.put(static_cast<char>(~c));
  }
  GcResult g;
  ASSERT_NO_THROW(g = gc(*store_, GcOptions{0.0, false}));
  EXPECT_EQ(g.packs_skipped, 1u);
  EXPECT_GE(g.packs_rewritten, 1u);
  EXPECT_TRUE(fs::exists(dir_ / "data" / pack_file_name(rec->pack))) << "the damaged pack was removed";
  EXPECT_FALSE(fs::exists(dir_ / "data" / pack_file_name(other->pack))) << "gc stopped at the damaged pack";
  for (auto& e : fs::directory_iterator(dir_ / "data")) EXPECT_FALSE(e.path().string().ends_with(".tmp"));
  EXPECT_EQ(read(*store_->latest_revision(store_->find_image("rbd", "b")->key)), newest["b"]);
  // Scrub finds the damage gc left in place; the store still takes backups.
  EXPECT_FALSE(scrub(*store_, ScrubOptions{{}, {}, true}).issues.empty());
  const std::string img = random_bytes(kBs, 55);
  EXPECT_EQ(read(put("c", img)), img);
}

}  // namespace
}  // namespace rbdvault::store::testing
