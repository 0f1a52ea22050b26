// agent/copy on synthetic stores: every copied revision reads byte for byte as its source, with its
// metadata; the chain resumes where it stood; dedup is counted; RevisionWriter::put_existing.
#include "agent/copy.h"

#include "agent/batch_config.h"

#include <gtest/gtest.h>

#include "store/format.h"
#include "store/patch_codec.h"
#include "store/revision_writer.h"
#include "store/scrub.h"
#include "store_fixture.h"

namespace rbdvault::store::testing {
namespace {

class CopyTest : public StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    tdir_ = dir_.string() + "-target";
    fs::remove_all(tdir_);
    Store::init(tdir_, StoreOptions{kBs});
    target_ = Store::open(tdir_, OpenMode::kWriter, "unit test target");
  }
  void TearDown() override {
    target_.reset();
    fs::remove_all(tdir_);
    StoreTest::TearDown();
  }

  // A revision with its own snapshot identity (the fixture's put gives every one the same).
  // With `patch`, a changed block is completed over the parent's chunk as a backup does, so a block
  // with few pages changed becomes a patch chunk (docs/format.md §4.2).
  RevisionRecord backup(const std::string& name, const std::string& image, uint64_t snap,
                        const std::set<uint64_t>* changed = nullptr, bool patch = false) {
    auto w = store_->begin_revision(RevisionStart{"rbd", name, image.size(), changed == nullptr});
    for (uint64_t b = 0; b < store_->blocks_for(image.size()); ++b) {
      if (changed && !changed->count(b)) continue;
      const std::string data = image.substr(b * kBs, kBs);
      const auto parent = patch && w->parent() ? store_->block_content(w->image(), b, w->parent()->id) : std::nullopt;
      if (!parent) {
        w->put_block(b, data);
        continue;
      }
      w->put_prepared(b, prepare_block_over(*store_, std::string(data), store_->read_chunk_and_root(*parent)));
    }
    RevisionInfo info;
    info.ceph_image_id = "id-" + name;
    info.snap_name = "rbdvault-" + std::to_string(snap);
    info.snap_id = snap;
    info.created = 1700000000 + static_cast<int64_t>(snap);
    info.order = 22;
    info.features = 61;
    info.kind = changed ? RevisionKind::kDelta : RevisionKind::kFull;
    return w->commit(info);
  }
  // The next backup of `name` whose content is `image`, written as a diff from `before`.
  RevisionRecord next(const std::string& name, const std::string& before, const std::string& image, uint64_t snap,
                      bool patch = false) {
    const std::set<uint64_t> changed = content_diff(before, image);
    return backup(name, image, snap, &changed, patch);
  }
  uint64_t patch_count(Store& st) {
    uint64_t n = 0;
    for (const auto& rev : st.revisions())
      st.for_each_data_block(rev, [&](uint64_t, const Hash& h) { n += is_patch(st.chunk(h)->flags) ? 1 : 0; });
    return n;
  }
  uint64_t stored_bytes(Store& st) {
    uint64_t n = 0;
    for (const auto& rev : st.revisions()) n += rev.bytes_stored;
    return n;
  }

  std::string read_from(Store& st, const RevisionRecord& rev) {
    std::string out(rev.size, '\0');
    st.for_each_data_block(rev, [&](uint64_t block, const Hash& h) {
      const std::string data = st.read_chunk(h);
      const uint64_t off = block * kBs, n = std::min<uint64_t>(kBs, rev.size - off);
      out.replace(off, n, data.substr(0, n));
    });
    return out;
  }

  agent::CopyResult copy(std::vector<std::pair<std::string, std::string>> images = {}) {
    agent::CopyOptions o;
    o.images = std::move(images);
    return agent::copy_store(*store_, *target_, o);
  }

  // Every target revision of `name` whose source revision still exists equals it, byte for byte and
  // in its metadata; returns how many were compared.
  size_t expect_copies_equal(const std::string& name) {
    auto ti = target_->find_image("rbd", name);
    EXPECT_TRUE(ti);
    if (!ti) return 0;
    auto si = store_->find_image("rbd", name);
    size_t compared = 0;
    for (const auto& t : target_->revisions(ti->key)) {
      std::optional<RevisionRecord> match;
      for (const auto& s : store_->revisions(si->key))
        if (s.snap_id == t.snap_id) match = s;
      if (!match) continue;  // forgotten in the source since
      EXPECT_EQ(read_from(*target_, t), read_from(*store_, *match)) << name << " @" << match->id;
      EXPECT_EQ(t.size, match->size);
      EXPECT_EQ(t.created, match->created);
      EXPECT_EQ(t.snap_name, match->snap_name);
      EXPECT_EQ(t.ceph_image_id, match->ceph_image_id);
      EXPECT_EQ(t.order, match->order);
      EXPECT_EQ(t.features, match->features);
      EXPECT_EQ(t.digest, match->digest);
      EXPECT_EQ(t.flags & kRevisionProtected, match->flags & kRevisionProtected);
      EXPECT_EQ(target_->compute_digest(t), t.digest);
      ++compared;
    }
    return compared;
  }

  fs::path tdir_;
  std::unique_ptr<Store> target_;
};

TEST_F(StoreTest, PutExistingReferencesAChunkWithoutItsData) {
  const std::string a = random_bytes(4 * kBs, 1);
  const RevisionRecord r1 = put("a", a);
  const Hash h1 = *store_->block_content(r1.image, 1, r1.id);
  const uint64_t refs = store_->chunk(h1)->refs;
  auto w = store_->begin_revision(RevisionStart{"rbd", "b", 3 * kBs, true});
  EXPECT_TRUE(w->put_existing(0, h1));
  Hash unknown{};
  unknown[0] = 7;
  EXPECT_FALSE(w->put_existing(1, unknown));  // not in the store: nothing recorded
  EXPECT_TRUE(w->put_existing(2, h1));        // twice in one revision
  RevisionInfo info;
  info.snap_name = "s";
  const RevisionRecord r2 = w->commit(info);
  EXPECT_EQ(r2.new_chunks, 0u);
  EXPECT_EQ(r2.bytes_stored, 0u);
  EXPECT_EQ(store_->chunk(h1)->refs, refs + 2);
  const std::string block1 = a.substr(kBs, kBs);
  EXPECT_EQ(read(r2), block1 + std::string(kBs, '\0') + block1);
  EXPECT_EQ(store_->compute_digest(r2), r2.digest);
}

TEST_F(CopyTest, CopiesEveryRevisionByteForByteThroughResizes) {
  const std::string v1 = random_bytes(8 * kBs, 1);
  std::string v2 = v1;
  v2.replace(2 * kBs, kBs, random_bytes(kBs, 2));
  v2.replace(5 * kBs, kBs, std::string(kBs, '\0'));  // a block becomes zeros
  std::string v3 = v2 + random_bytes(4 * kBs + 100, 3);  // grows, not block-aligned
  std::string v4 = v3.substr(0, 3 * kBs + 10);            // shrinks
  std::string v5 = v4 + std::string(6 * kBs, '\0');      // grows back: zeros, not the old data
  v5.replace(8 * kBs, kBs, v1.substr(0, kBs));            // a chunk the store already holds
  backup("a", v1, 1);
  next("a", v1, v2, 2);
  next("a", v2, v3, 3);
  const RevisionRecord s4 = next("a", v3, v4, 4);
  next("a", v4, v5, 5);
  store_->set_protected(s4.id, true);

  const agent::CopyResult r = copy();
  ASSERT_EQ(r.images.size(), 1u);
  EXPECT_EQ(r.copied(), 5u);
  EXPECT_EQ(r.skipped(), 0u);
  EXPECT_EQ(expect_copies_equal("a"), 5u);
  // Read from the source: each distinct chunk once, however many revisions name it.
  std::set<Hash> distinct;
  for (const auto& s : store_->revisions())
    store_->for_each_data_block(s, [&](uint64_t, const Hash& h) { distinct.insert(h); });
  EXPECT_EQ(r.bytes_read(), distinct.size() * kBs);
  EXPECT_GT(r.bytes_deduplicated(), 0u);  // v5's block 8 repeats v1's block 0
  EXPECT_GT(r.bytes_written(), 0u);

  // A second copy finds everything there and reads nothing.
  const agent::CopyResult again = copy();
  EXPECT_EQ(again.copied(), 0u);
  EXPECT_EQ(again.bytes_read(), 0u);
  EXPECT_EQ(again.images[0].present, 5u);
}

TEST_F(CopyTest, KeepsPatchChunksAsPatchesOfTheSameBase) {
  const std::string v1 = random_bytes(4 * kBs, 11);
  std::string v2 = v1, v3;
  v2[2 * kBs + 5 * 4096 + 9] ^= 1;  // one page of block 2
  v3 = v2;
  v3[2 * kBs + 7 * 4096] ^= 1;  // another page of block 2: a patch of the same root, two pages
  v3[0] ^= 1;                   // and a page of block 0
  backup("a", v1, 1);
  next("a", v1, v2, 2, true);
  next("a", v2, v3, 3, true);
  ASSERT_EQ(patch_count(*store_), 3u) << "the source holds three patch chunks";

  const agent::CopyResult r = copy();
  EXPECT_EQ(r.copied(), 3u);
  EXPECT_EQ(expect_copies_equal("a"), 3u);
  EXPECT_EQ(patch_count(*target_), 3u);
  const Hash patched = sha256(std::string_view(v3).substr(2 * kBs, kBs));
  const auto rec = target_->chunk(patched);
  ASSERT_TRUE(rec);
  ASSERT_TRUE(is_patch(rec->flags));
  EXPECT_EQ(rec->base, sha256(std::string_view(v1).substr(2 * kBs, kBs)));
  // The same bytes as the source: 4 full chunks and three patches, not three more full chunks.
  EXPECT_EQ(r.bytes_written(), stored_bytes(*store_));
  EXPECT_LT(r.bytes_written(), 5 * kBs);
  auto rep = scrub(*target_, ScrubOptions{{}, {}, true});
  for (auto& i : rep.issues) ADD_FAILURE() << "scrub: revision " << i.revision << ": " << i.problem;
}

TEST_F(CopyTest, StoresAPatchFullWhereTheTargetLacksItsBase) {
  const std::string v1 = random_bytes(2 * kBs, 12);
  std::string v2 = v1;
  v2[kBs + 3] ^= 1;
  const RevisionRecord s1 = backup("a", v1, 1);
  next("a", v1, v2, 2, true);
  ASSERT_EQ(patch_count(*store_), 1u);
  store_->forget(s1.id);  // the patch keeps its base in the source; the target never gets s1

  const agent::CopyResult r = copy();
  EXPECT_EQ(r.copied(), 1u);
  EXPECT_EQ(expect_copies_equal("a"), 1u);
  EXPECT_EQ(patch_count(*target_), 0u);
  EXPECT_EQ(r.bytes_written(), 2 * (kChunkHeaderSize + kBs));
}

TEST_F(CopyTest, ResumesAfterAForgetInTheSourceAndSkipsWhatTheTargetExpired) {
  const std::string v1 = random_bytes(6 * kBs, 1);
  std::string v2 = v1, v3 = v1, v4 = v1;
  v2.replace(0, kBs, random_bytes(kBs, 2));
  v3.replace(kBs, kBs, random_bytes(kBs, 3));
  v4.replace(2 * kBs, kBs, random_bytes(kBs, 4));
  const RevisionRecord s1 = backup("a", v1, 1);
  const RevisionRecord s2 = next("a", v1, v2, 2);
  const RevisionRecord s3 = next("a", v2, v3, 3);
  ASSERT_EQ(copy().copied(), 3u);
  // The source forgets its newest copied revision's predecessor and the target expires its oldest.
  store_->forget(s2.id);
  const auto t_revs = target_->revisions();
  target_->forget(t_revs.front().id);
  next("a", v3, v4, 4);
  const RevisionRecord s5 = next("a", v4, v1, 5);  // back to v1's content: all deduplicated

  const agent::CopyResult r = copy();
  ASSERT_EQ(r.images.size(), 1u);
  EXPECT_EQ(r.copied(), 2u);
  ASSERT_EQ(r.skipped(), 1u);
  EXPECT_EQ(r.images[0].skipped[0].source_revision, s1.id);  // expired in the target: older than its chain
  EXPECT_NE(r.images[0].skipped[0].reason.find("older"), std::string::npos);
  EXPECT_EQ(r.images[0].present, 1u);                        // s3
  EXPECT_EQ(r.bytes_read(), kBs);                            // v4's new block only
  EXPECT_EQ(r.images[0].copied.back().source_revision, s5.id);
  EXPECT_EQ(expect_copies_equal("a"), 3u);  // s3, s4, s5 (s2 is gone from the source)

  // The source forgets s5, the revision the target's chain stands on: creation time decides.
  const std::string v6 = random_bytes(6 * kBs, 6);
  next("a", v1, v6, 6);
  store_->forget(s5.id);
  const agent::CopyResult r2 = copy();
  EXPECT_EQ(r2.copied(), 1u);
  EXPECT_EQ(r2.skipped(), 1u);  // s1 still
  EXPECT_EQ(expect_copies_equal("a"), 3u);  // s3, s4, s6
}

TEST_F(CopyTest, DeduplicatesAcrossImagesAndChecksNamedImagesFirst) {
  const std::string shared = random_bytes(4 * kBs, 9);
  backup("a", shared + random_bytes(kBs, 10), 1);
  backup("b", random_bytes(kBs, 11) + shared, 2);
  EXPECT_THROW(copy({{"rbd", "a"}, {"rbd", "nope"}}), StoreError);
  EXPECT_TRUE(target_->revisions().empty());  // an unknown image writes nothing

  const agent::CopyResult ra = copy({{"rbd", "a"}});
  EXPECT_EQ(ra.copied(), 1u);
  EXPECT_EQ(ra.bytes_read(), 5 * kBs);
  const agent::CopyResult rb = copy({{"rbd", "b"}});
  EXPECT_EQ(rb.copied(), 1u);
  EXPECT_EQ(rb.bytes_read(), kBs);
  EXPECT_EQ(rb.bytes_deduplicated(), 4 * kBs);
  EXPECT_EQ(expect_copies_equal("a"), 1u);
  EXPECT_EQ(expect_copies_equal("b"), 1u);
}

TEST_F(CopyTest, AFailedRevisionLeavesTheCommittedOnesAndTheRerunCompletes) {
  const std::string v1 = random_bytes(5 * kBs, 1);
  std::string v2 = v1;
  v2.replace(3 * kBs, 2 * kBs, random_bytes(2 * kBs, 2));
  backup("a", v1, 1);
  next("a", v1, v2, 2);
  // The second revision's first new chunk fails as a full disk would.
  int appends = 0;
  target_->crash_points().set_observer([&](std::string_view step) {
    if (step == "pack.append" && ++appends == 6) throw StoreError(StoreError::Kind::kNoSpace, "test: disk full");
  });
  EXPECT_THROW(copy(), StoreError);
  target_->crash_points().set_observer(nullptr);
  EXPECT_EQ(target_->revisions().size(), 1u);
  EXPECT_EQ(expect_copies_equal("a"), 1u);
  const agent::CopyResult r = copy();
  EXPECT_EQ(r.copied(), 1u);
  EXPECT_EQ(r.images[0].present, 1u);
  EXPECT_EQ(expect_copies_equal("a"), 2u);
}

// A copy that fails after its commit (here at the protect step, as a full disk or a lost lease
// would) is completed by the rerun: a failed verification is carried over like a protect, or the
// offsite copy would pass for healthy for good. (Found in review.)
TEST_F(CopyTest, ARerunCarriesOverAVerifyFailedFlagTheFailedRunDidNotSet) {
  const std::string v1 = random_bytes(3 * kBs, 1);
  const RevisionRecord r1 = backup("a", v1, 1);
  store_->set_protected(r1.id, true);
  store_->mark_verify_failed(r1.id);
  target_->crash_points().set_observer([&](std::string_view step) {
    if (step == "revision.committed") throw StoreError(StoreError::Kind::kNoSpace, "test: disk full after commit");
  });
  EXPECT_THROW(copy(), StoreError);
  target_->crash_points().set_observer(nullptr);
  ASSERT_EQ(target_->revisions().size(), 1u);
  EXPECT_FALSE(target_->revisions()[0].flags & kRevisionVerifyFailed);
  const agent::CopyResult r = copy();
  EXPECT_EQ(r.images[0].present, 1u);
  const RevisionRecord t = target_->revisions()[0];
  EXPECT_TRUE(t.flags & kRevisionVerifyFailed);
  EXPECT_TRUE(t.flags & kRevisionProtected);
}

// A target revision whose digest differs from its source revision's (one of the two stores is
// damaged) fails every copy run, not only the one that committed it. (Found in review.)
TEST_F(CopyTest, APresentRevisionWithAnotherDigestFailsEveryRun) {
  const std::string v1 = random_bytes(3 * kBs, 1);
  backup("a", v1, 1);
  EXPECT_EQ(copy().copied(), 1u);
  // The source's record now names another digest than the target's copy, as damage in either
  // store would leave them.
  RevisionRecord s = store_->revisions()[0];
  s.digest[0] ^= 1;
  store_->index().put(revision_key(s.id), encode(s), Sync::kYes, "test");
  try {
    (void)copy();
    ADD_FAILURE() << "a copy over a revision whose digest differs went through";
  } catch (const StoreError& e) {
    EXPECT_EQ(e.kind(), StoreError::Kind::kCorrupt);
    EXPECT_NE(std::string(e.what()).find("digest differs"), std::string::npos) << e.what();
  }
}

TEST_F(CopyTest, RefusesStoresOfDifferentBlockSizes) {
  backup("a", random_bytes(kBs, 1), 1);
  const fs::path other = dir_.string() + "-big";
  fs::remove_all(other);
  Store::init(other, StoreOptions{kBs * 2});
  {
    auto big = Store::open(other, OpenMode::kWriter, "unit test");
    EXPECT_THROW(agent::copy_store(*store_, *big, {}), StoreError);
    EXPECT_TRUE(big->revisions().empty());
  }
  fs::remove_all(other);
}

}  // namespace
}  // namespace rbdvault::store::testing

namespace rbdvault::agent {
namespace {

const std::string kCopyBase = "[store]\npath = /srv/rbdvault\n[job.vms]\npool = rbd\n";

std::string copy_config_error(const std::string& section) {
  try {
    (void)parse_batch_config(kCopyBase + section, "c.conf");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}

TEST(CopyConfig, ParsesTheCopySection) {
  EXPECT_FALSE(parse_batch_config(kCopyBase, "c.conf").copy);
  const BatchConfig c = parse_batch_config(
      kCopyBase + "[copy]\nto = /mnt/offsite\nimages = rbd/a, rbd/b\nimages = db/c\nkeep-last = 3\nkeep-monthly = 12\n",
      "c.conf");
  ASSERT_TRUE(c.copy);
  EXPECT_EQ(c.copy->to, "/mnt/offsite");
  EXPECT_EQ(c.copy->images, (std::vector<std::string>{"rbd/a", "rbd/b", "db/c"}));
  EXPECT_EQ(c.copy->retention.keep_last, 3);
  EXPECT_EQ(c.copy->retention.keep_monthly, 12);
}

TEST(CopyConfig, RefusesBadCopySections) {
  EXPECT_EQ(copy_config_error("[copy]\nkeep-last = 3\n"), "c.conf:5: [copy] needs 'to = STORE'");
  EXPECT_NE(copy_config_error("[copy]\nto = /o\nimages = a\n").find("c.conf:7: key 'images' in [copy]"),
            std::string::npos);
  EXPECT_NE(copy_config_error("[copy]\nto = /o\nkeep-last = -1\n").find("c.conf:7: key 'keep-last'"),
            std::string::npos);
  EXPECT_EQ(copy_config_error("[copy]\nto = /o\nschedule = every 1h\n"), "c.conf:7: unknown key 'schedule' in [copy]");
  EXPECT_NE(copy_config_error("[copy]\nto = /o\nto = /p\n").find("given twice"), std::string::npos);
}

}  // namespace
}  // namespace rbdvault::agent
