// Issue 11 point 2: damage found by recovery (which every writer's open runs) or by gc is reported
// and worked around; it never becomes an error that stops every later writer, or repair.
#include <rocksdb/db.h>

#include <signal.h>
#include <sys/wait.h>

#include <fstream>

#include "agent/expire.h"
#include "agent/verify.h"
#include "store/chunk_codec.h"
#include "store/gc.h"
#include "store/manifest.h"
#include "store/pack.h"
#include "store/patch_codec.h"
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

// A backup killed after its manifest was put (the data area's commit point) whose W record is then
// damaged: recovery may roll it forward or back, but must not leave a manifest that a later
// rebuild-index turns into a revision between r1 and r3 (r3 would then read r2's blocks).
TEST_F(RecoveryTest, ADamagedMarkWhoseManifestWasPutLeavesNoRevisionForARebuild) {
  const std::string v1 = random_bytes(4 * kBs, 51);
  const RevisionRecord r1 = put("a", v1);
  std::string v2 = v1;
  v2.replace(kBs, kBs, random_bytes(kBs, 52));
  store_.reset();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("RBDVAULT_CRASH_AT", "revision.manifest_put", 1);
    auto s = Store::open(dir_, OpenMode::kWriter, "child");
    auto w = s->begin_revision(RevisionStart{"rbd", "a", v2.size(), false});
    w->put_block(1, std::string_view(v2).substr(kBs, kBs));
    RevisionInfo info;
    info.ceph_image_id = "id-a";
    info.snap_name = "snap";
    info.kind = RevisionKind::kDelta;
    (void)w->commit(info);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  const uint64_t x = r1.id + 1;
  damage([&](rocksdb::DB& db) { put_raw(db, pending_key(x), "\x07garbage"); });
  store_ = Store::open(dir_, OpenMode::kWriter, "unit test");  // recovery
  const bool committed = store_->revision(x).has_value();
  const bool manifest_left = !store_->objects().list(manifest_name(x, 0)).empty();
  EXPECT_TRUE(committed || !manifest_left) << "rolled back, yet its manifest is still there";
  // The next backup diffs against what the index says is newest.
  std::string v3 = committed ? v2 : v1;
  v3.replace(2 * kBs, kBs, random_bytes(kBs, 53));
  const std::set<uint64_t> c3{2};
  const RevisionRecord r3 = put("a", v3, &c3);
  EXPECT_EQ(read(r3), v3);
  store_.reset();
  (void)Store::rebuild_index(dir_);
  store_ = Store::open(dir_, OpenMode::kWriter, "unit test");
  auto r3_now = store_->revision(r3.id);
  ASSERT_TRUE(r3_now);
  std::string got;
  try {
    got = read(*r3_now);
  } catch (const std::exception& e) {
    got = std::string("error: ") + e.what();
  }
  EXPECT_TRUE(got == v3) << "after rebuild-index r3 reads wrong: " << got.substr(0, 80);
  EXPECT_EQ(store_->compute_digest(*r3_now), r3_now->digest) << "r3's view changed";
}

// A base B and a patch P over it both damaged (B in a page P does not replace), intact full copies
// elsewhere in the store. Repaired in hash order, with P < B P's rewrite lowered B's count and B's
// rewrite then set the count computed before (one too many); with B < P, P (whole again once B was
// repaired) had no copy of its own and was reported not repaired.
static void touch_page(std::string& image, uint64_t block, uint32_t page, char v) {
  image[block * kBs + page * kPatchPage + 7] = v;
}

TEST_F(RecoveryTest, RepairingAPatchAndItsBaseKeepsCountsAndNeedsNoCopyOfThePatch) {
  for (int order = 0; order < 2; ++order) {  // 0: P < B (both copies); 1: B < P (only B's copy)
    uint32_t seed = 100;
    std::string v1, v2;
    Hash base, patch;
    for (;; ++seed) {
      v1 = random_bytes(2 * kBs, seed);
      v2 = v1;
      touch_page(v2, 1, 0, 'x');
      base = sha256(std::string_view(v1).substr(kBs, kBs));
      patch = sha256(std::string_view(v2).substr(kBs, kBs));
      if ((patch < base) == (order == 0)) break;
    }
    const std::string name = "img" + std::to_string(order);
    const RevisionRecord r1 = put(name, v1);
    const RevisionRecord r2 = put_changes(name, v2);
    ASSERT_TRUE(is_patch(store_->chunk(patch)->flags));
    {
      PackWriter extra(store_->objects(), 9000 + order);
      for (const Hash& h : {base, patch}) {
        if (order == 1 && h == patch) continue;
        const std::string raw = h == base ? v1.substr(kBs, kBs) : v2.substr(kBs, kBs);
        EncodedChunk enc = encode_chunk(raw, 1);
        extra.append(h, enc.flags, static_cast<uint32_t>(raw.size()), enc.payload);
      }
      extra.seal();
    }
    flip_payload_byte(base, 5 * kPatchPage + 1);
    ASSERT_THROW((void)store_->read_chunk(patch), StoreError);
    agent::RepairResult r = agent::repair_store(nullptr, *store_);
    EXPECT_EQ(read(r1), v1);
    EXPECT_EQ(read(r2), v2);
    EXPECT_TRUE(r.unrepaired.empty()) << "order " << order << ": " << (r.unrepaired.empty() ? "" : r.unrepaired[0]);
    auto rep = scrub(*store_, ScrubOptions{{}, {}, true});
    for (auto& i : rep.issues) ADD_FAILURE() << "order " << order << " scrub: " << i.revision << ": " << i.problem;
    fs::remove(dir_ / "data" / pack_file_name(9000 + order));
  }
}

// An interrupted forget of an image whose block map holds one malformed key: the forget cannot be
// completed, but writers and repair go on.
TEST_F(RecoveryTest, AnInterruptedForgetOverAMalformedBlockKeyLocksNoWriterOut) {
  const RevisionRecord r1 = put("a", random_bytes(2 * kBs, 61));
  (void)put("a", random_bytes(2 * kBs, 62));
  damage([&](rocksdb::DB& db) {
    RevisionRecord r = r1;
    r.flags |= kRevisionForgetting;
    put_raw(db, revision_key(r.id), encode(r));
    put_raw(db, block_key(r1.image, 0, 0).substr(0, 12), "x");
  });
  ASSERT_NO_FATAL_FAILURE(expect_writers_and_repair_work());
}

// The newest revision by id has an older creation time (the clock stepped back): expire keeps it
// instead of failing on forget's refusal of the newest.
TEST_F(RecoveryTest, ExpireKeepsTheNewestWhenCreationTimesGoBack) {
  auto put_at = [&](const std::string& img, int64_t created) {
    auto w = store_->begin_revision(RevisionStart{"rbd", "a", img.size(), true});
    for (uint64_t b = 0; b < 2; ++b) w->put_block(b, std::string_view(img).substr(b * kBs, kBs));
    RevisionInfo info;
    info.ceph_image_id = "id-a";
    info.snap_name = "snap";
    info.created = created;
    return w->commit(info);
  };
  (void)put_at(random_bytes(2 * kBs, 71), 1764547200);
  (void)put_at(random_bytes(2 * kBs, 72), 1764547200 + 7200);
  const RevisionRecord r3 = put_at(random_bytes(2 * kBs, 73), 1764547200 + 3600);
  agent::RetentionPolicy p;
  p.keep_last = 1;
  EXPECT_NO_THROW(agent::expire_image(*store_, r3.image, p, false));
}

}  // namespace
}  // namespace rbdvault::store::testing
