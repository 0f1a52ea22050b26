// The revision store against a plain in-memory image: no Ceph involved.
#include "store/store.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "store/chunk_codec.h"
#include "store/pack.h"
#include "store/revision_writer.h"
#include "store/scrub.h"
#include "tests/unit/store_fixture.h"

namespace fs = std::filesystem;

namespace rbdvault::store {
namespace {

using testing::kBs;
using testing::StoreTest;

// A group name longer than a revision record can hold is refused at the commit, before the
// manifest: the record would commit and never decode again (ls, status and every batch run failed).
TEST_F(StoreTest, AGroupNameTooLongForTheRecordIsRefusedAtCommit) {
  const RevisionRecord r1 = put("a", random_bytes(2 * kBs, 1));
  auto w = store_->begin_revision(RevisionStart{"rbd", "a", 2 * kBs, false});
  w->put_block(0, random_bytes(kBs, 2));
  RevisionInfo info;
  info.snap_name = "s";
  info.group = std::string(kMaxGroupName + 1, 'g');
  info.group_run = 1;
  try {
    (void)w->commit(info);
    ADD_FAILURE() << "a revision with a 256-byte group name was committed";
  } catch (const StoreError& e) {
    EXPECT_EQ(e.kind(), StoreError::Kind::kInvalid) << e.what();
  }
  w.reset();
  ASSERT_EQ(store_->revisions().size(), 1u);
  EXPECT_EQ(store_->revisions()[0].id, r1.id);
  info.group = std::string(kMaxGroupName, 'g');  // the longest that fits
  auto w2 = store_->begin_revision(RevisionStart{"rbd", "a", 2 * kBs, false});
  w2->put_block(0, random_bytes(kBs, 3));
  const RevisionRecord r2 = w2->commit(info);
  EXPECT_EQ(store_->revision(r2.id)->group, info.group);
}

TEST_F(StoreTest, FullRevisionReadsBackExactly) {
  std::string image = random_bytes(10 * kBs + 1234, 1);
  image.replace(3 * kBs, kBs, std::string(kBs, '\0'));  // a zero block costs no chunk
  RevisionRecord r = put("a", image);
  EXPECT_EQ(read(r), image);
  EXPECT_EQ(r.new_chunks, 10u);  // 11 blocks, one all-zero
  EXPECT_EQ(store_->compute_digest(r), r.digest);
}

TEST_F(StoreTest, DeltaCostsOnlyChangedBlocksAndOldRevisionsStayIntact) {
  std::string v1 = random_bytes(64 * kBs, 2);
  RevisionRecord r1 = put("a", v1);
  std::string v2 = v1;
  std::set<uint64_t> changed{5, 40};
  v2.replace(5 * kBs + 100, 10, "0123456789");
  v2.replace(40 * kBs, 4096, random_bytes(4096, 3));
  RevisionRecord r2 = put("a", v2, &changed);
  EXPECT_EQ(r2.parent, r1.id);
  EXPECT_EQ(r2.map_entries, 2u);
  EXPECT_EQ(r2.new_chunks, 2u);
  EXPECT_EQ(read(r2), v2);
  EXPECT_EQ(read(r1), v1);
  EXPECT_EQ(store_->compute_digest(r1), r1.digest);
  EXPECT_EQ(store_->compute_digest(r2), r2.digest);
  EXPECT_NE(r1.digest, r2.digest);
}

TEST_F(StoreTest, UnchangedDataAddsNoEntries) {
  std::string v1 = random_bytes(8 * kBs, 4);
  put("a", v1);
  std::set<uint64_t> changed{1, 2, 3};  // reported changed, content identical (rewritten same bytes)
  RevisionRecord r2 = put("a", v1, &changed);
  EXPECT_EQ(r2.map_entries, 0u);
  EXPECT_EQ(read(r2), v1);
}

TEST_F(StoreTest, ShrinkThenGrowExposesZerosNotOldData) {
  std::string v1 = random_bytes(20 * kBs, 5);
  RevisionRecord r1 = put("a", v1);
  // Shrink to 7.5 blocks: the boundary block is re-read (zero-padded by the caller's read).
  std::string v2 = v1.substr(0, 7 * kBs + kBs / 2);
  std::set<uint64_t> c2{7};
  RevisionRecord r2 = put("a", v2, &c2);
  EXPECT_EQ(read(r2), v2);
  // Grow back to 20 blocks without writing: everything past 7.5 blocks reads zero.
  std::string v3 = v2 + std::string(20 * kBs - v2.size(), '\0');
  std::set<uint64_t> none;
  RevisionRecord r3 = put("a", v3, &none);
  EXPECT_EQ(read(r3), v3);
  EXPECT_EQ(store_->compute_digest(r3), r3.digest);
  // Grow further and write one block in the new range.
  std::string v4 = v3 + std::string(5 * kBs, '\0');
  v4.replace(22 * kBs, 3, "abc");
  std::set<uint64_t> c4{22};
  RevisionRecord r4 = put("a", v4, &c4);
  EXPECT_EQ(read(r4), v4);
  EXPECT_EQ(read(r1), v1);
  EXPECT_EQ(read(r2), v2);
  for (auto& r : {r1, r2, r3, r4}) EXPECT_EQ(store_->compute_digest(r), r.digest) << "revision " << r.id;
}

TEST_F(StoreTest, FullReadAfterHistoryZeroesBlocksItDidNotWrite) {
  std::string v1 = random_bytes(10 * kBs, 6);
  put("a", v1);
  // A re-created image: full read where only block 2 has data now.
  std::string v2(10 * kBs, '\0');
  v2.replace(2 * kBs, 5, "hello");
  auto w = store_->begin_revision(RevisionStart{"rbd", "a", v2.size(), true});
  w->put_block(2, std::string_view(v2).substr(2 * kBs, kBs));
  RevisionRecord r2 = w->commit(RevisionInfo{});
  EXPECT_EQ(read(r2), v2);
  EXPECT_EQ(store_->compute_digest(r2), r2.digest);
}

TEST_F(StoreTest, IdenticalImagesShareChunks) {
  std::string v = random_bytes(16 * kBs, 7);
  RevisionRecord a = put("a", v);
  RevisionRecord b = put("b", v);
  EXPECT_EQ(a.new_chunks, 16u);
  EXPECT_EQ(b.new_chunks, 0u);
  EXPECT_EQ(b.bytes_stored, 0u);
  auto c = store_->chunk(sha256(std::string_view(v).substr(0, kBs)));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->refs, 2u);
}

TEST_F(StoreTest, AbandonedRevisionLeavesNothingBehind) {
  std::string v1 = random_bytes(8 * kBs, 8);
  RevisionRecord r1 = put("a", v1);
  {
    auto w = store_->begin_revision(RevisionStart{"rbd", "a", v1.size(), false});
    w->put_block(0, random_bytes(kBs, 9));
    w->put_block(1, std::string_view(v1).substr(kBs, kBs));
    // destroyed without commit
  }
  EXPECT_EQ(store_->revisions().size(), 1u);
  EXPECT_EQ(read(r1), v1);
  auto c = store_->chunk(sha256(std::string_view(v1).substr(0, kBs)));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->refs, 1u);
  std::string v2 = v1;
  v2.replace(0, kBs, random_bytes(kBs, 10));
  std::set<uint64_t> changed{0};
  RevisionRecord r2 = put("a", v2, &changed);
  EXPECT_EQ(r2.id, r1.id + 2);  // ids are never reused; the abandoned one's entries are gone
  EXPECT_EQ(read(r2), v2);
  EXPECT_EQ(store_->compute_digest(r2), r2.digest);
  auto abandoned = store_->chunk(sha256(random_bytes(kBs, 9)));
  EXPECT_TRUE(!abandoned || abandoned->refs == 0) << "the abandoned revision's chunk keeps references";
  auto rep = scrub(*store_, ScrubOptions{{}, {}, true});
  for (auto& i : rep.issues) ADD_FAILURE() << "scrub after the rollback: " << i.problem;
}

TEST_F(StoreTest, IntermediateFlushesStayInvisibleUntilCommit) {
  store_.reset();
  WriterOptions wo;
  wo.flush_entries = 3;  // force many intermediate flushes and packs
  store_ = Store::open(dir_, OpenMode::kWriter, "unit test", wo);
  std::string v = random_bytes(20 * kBs, 11);
  {
    auto w = store_->begin_revision(RevisionStart{"rbd", "a", v.size(), true});
    for (uint64_t b = 0; b < 10; ++b) w->put_block(b, std::string_view(v).substr(b * kBs, kBs));
    auto reader = Store::open(dir_, OpenMode::kReadOnly);
    EXPECT_TRUE(reader->revisions().empty());
  }
  RevisionRecord r = put("a", v);
  EXPECT_EQ(read(r), v);
}

TEST_F(StoreTest, RecoveryAfterKilledWriter) {
  std::string v1 = random_bytes(8 * kBs, 12);
  RevisionRecord r1 = put("a", v1);
  store_.reset();
  pid_t pid = ::fork();
  if (pid == 0) {
    WriterOptions wo;
    wo.flush_entries = 2;
    auto s = Store::open(dir_, OpenMode::kWriter, "child", wo);
    auto w = s->begin_revision(RevisionStart{"rbd", "a", v1.size(), false});
    for (uint64_t b = 0; b < 8; ++b) w->put_block(b, random_bytes(kBs, 100 + b));
    ::_exit(0);  // dies without commit or cleanup, like SIGKILL
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child did not get to write: " << status;
  store_ = Store::open(dir_, OpenMode::kWriter, "unit test");
  EXPECT_EQ(store_->revisions().size(), 1u);
  EXPECT_EQ(read(r1), v1);
  for (auto& e : fs::directory_iterator(dir_ / "data")) EXPECT_FALSE(e.path().string().ends_with(".tmp"));
  // The rollback restored every reference count: r1's chunks have one reference each, the rolled
  // back revision's chunks (flushed to the index before the kill) none, and scrub is clean.
  for (uint64_t b = 0; b < 8; ++b) {
    auto c = store_->chunk(sha256(std::string_view(v1).substr(b * kBs, kBs)));
    ASSERT_TRUE(c) << b;
    EXPECT_EQ(c->refs, 1u) << "block " << b;
    auto gone = store_->chunk(sha256(random_bytes(kBs, 100 + b)));
    EXPECT_TRUE(!gone || gone->refs == 0) << "a rolled back chunk keeps " << gone->refs << " reference(s)";
  }
  auto rep = scrub(*store_, ScrubOptions{{}, {}, true});
  for (auto& i : rep.issues) ADD_FAILURE() << "scrub after the rollback: " << i.problem;
  std::set<uint64_t> changed{3};
  std::string v2 = v1;
  v2.replace(3 * kBs, 1, "z");
  RevisionRecord r2 = put("a", v2, &changed);
  EXPECT_EQ(read(r2), v2);
  EXPECT_EQ(r2.map_entries, 1u);
}

// docs/format.md §5/§7.2: a revision id, once reserved, is never handed out again, also when its
// revision is rolled back by recovery after its writer died (so a Ceph snapshot named after it
// can never be mistaken for another revision's).
TEST_F(StoreTest, RolledBackRevisionIdIsNeverReused) {
  std::string v1 = random_bytes(4 * kBs, 15);
  RevisionRecord r1 = put("a", v1);
  store_.reset();
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipefd[0]);
    auto s = Store::open(dir_, OpenMode::kWriter, "child");
    auto w = s->begin_revision(RevisionStart{"rbd", "a", v1.size(), false});
    uint64_t id = w->id();
    (void)!::write(pipefd[1], &id, sizeof id);
    w->put_block(0, random_bytes(kBs, 16));
    ::raise(SIGKILL);  // dies without commit or cleanup
  }
  ::close(pipefd[1]);
  uint64_t abandoned = 0;
  ASSERT_EQ(::read(pipefd[0], &abandoned, sizeof abandoned), static_cast<ssize_t>(sizeof abandoned));
  ::close(pipefd[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  EXPECT_EQ(abandoned, r1.id + 1);
  store_ = Store::open(dir_, OpenMode::kWriter, "unit test");  // rolls the child's revision back
  ASSERT_EQ(store_->revisions().size(), 1u);
  // In-process rollback too (a failed backup): its id is skipped as well.
  uint64_t failed = 0;
  {
    auto w = store_->begin_revision(RevisionStart{"rbd", "a", v1.size(), false});
    failed = w->id();
    w->put_block(1, random_bytes(kBs, 17));
  }
  EXPECT_GT(failed, abandoned);
  std::set<uint64_t> changed{2};
  std::string v2 = v1;
  v2.replace(2 * kBs, 1, "y");
  RevisionRecord r2 = put("a", v2, &changed);
  EXPECT_GT(r2.id, failed) << "a rolled back id was reused";
  std::set<uint64_t> ids;
  for (auto& r : store_->revisions()) ids.insert(r.id);
  EXPECT_EQ(ids, (std::set<uint64_t>{r1.id, r2.id}));
  EXPECT_EQ(read(r2), v2);
  EXPECT_TRUE(scrub(*store_, ScrubOptions{{}, {}, true}).clean());
}

TEST_F(StoreTest, SecondWriterIsRefusedWithHolderPid) {
  pid_t pid = ::fork();
  if (pid == 0) {
    try {
      auto s = Store::open(dir_, OpenMode::kWriter, "second");
      ::_exit(0);
    } catch (const StoreError& e) {
      std::string what = e.what();
      bool ok =
          e.kind() == StoreError::Kind::kLocked && what.find("pid " + std::to_string(::getppid())) != std::string::npos;
      ::_exit(ok ? 3 : 4);
    }
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3);
  // Readers need no lock.
  auto reader = Store::open(dir_, OpenMode::kReadOnly);
  EXPECT_TRUE(reader->revisions().empty());
}

TEST_F(StoreTest, CorruptChunkIsDetectedOnRead) {
  std::string v = random_bytes(2 * kBs, 13);
  RevisionRecord r = put("a", v);
  fs::path pack;
  for (auto& e : fs::directory_iterator(dir_ / "data")) pack = e.path();
  {
    std::fstream f(pack, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(kPackHeaderSize + kChunkHeaderSize + 100);
    f.put('\x5a');
  }
  EXPECT_THROW(read(r), StoreError);
}

TEST_F(StoreTest, OpenRejectsForeignAndMissingDirectories) {
  fs::path foreign = dir_.string() + "-foreign";
  fs::create_directories(foreign);
  try {
    Store::open(foreign, OpenMode::kReadOnly);
    FAIL() << "opened a foreign directory";
  } catch (const StoreError& e) {
    EXPECT_EQ(e.kind(), StoreError::Kind::kInvalid);
    EXPECT_NE(std::string(e.what()).find("not an rbdvault store"), std::string::npos);
  }
  fs::remove_all(foreign);
  try {
    Store::open(foreign, OpenMode::kReadOnly);
    FAIL() << "opened a missing directory";
  } catch (const StoreError& e) {
    EXPECT_EQ(e.kind(), StoreError::Kind::kNotFound);
  }
  EXPECT_THROW(Store::init(dir_, StoreOptions{}), StoreError);              // exists
  EXPECT_THROW(Store::init(foreign, StoreOptions{48 * 1024}), StoreError);  // not a power of two
  EXPECT_THROW(Store::init(foreign, StoreOptions{8u << 20}), StoreError);   // too large
}

TEST_F(StoreTest, RandomisedHistoryMatchesModel) {
  std::mt19937 rng(20261125);
  std::string image = random_bytes(12 * kBs, 14);
  std::vector<std::pair<RevisionRecord, std::string>> history;
  history.emplace_back(put("a", image), image);
  for (int round = 0; round < 25; ++round) {
    const std::string before = image;
    int ops = 1 + rng() % 3;
    for (int i = 0; i < ops; ++i) {
      switch (rng() % 4) {
        case 0: {  // resize
          uint64_t nsize = (rng() % (30 * kBs)) + 1;
          image.resize(nsize, '\0');
          break;
        }
        case 1:
        case 2: {  // write
          if (image.empty()) break;
          uint64_t off = rng() % image.size();
          uint64_t len = std::min<uint64_t>(1 + rng() % (2 * kBs), image.size() - off);
          image.replace(off, len, random_bytes(len, rng()));
          break;
        }
        case 3: {  // zero
          if (image.empty()) break;
          uint64_t off = rng() % image.size();
          uint64_t len = std::min<uint64_t>(1 + rng() % (3 * kBs), image.size() - off);
          image.replace(off, len, std::string(len, '\0'));
          break;
        }
      }
    }
    // An exact diff of the model (not a re-implementation of the backup's changed-block logic):
    // the store must make every other block read as before, across shrinks and grows.
    std::set<uint64_t> in_range = content_diff(before, image);
    history.emplace_back(put("a", image, &in_range), image);
  }
  for (auto& [rev, content] : history) {
    ASSERT_EQ(read(rev), content) << "revision " << rev.id;
    EXPECT_EQ(store_->compute_digest(rev), rev.digest) << "revision " << rev.id;
  }
}

}  // namespace
}  // namespace rbdvault::store

namespace rbdvault::store {
namespace {

using testing::kBs;
using testing::StoreTest;

TEST_F(StoreTest, ZeroRangeCostsOnlyBlocksHoldingData) {
  std::string v1(100 * kBs, '\0');
  for (uint64_t b : {3, 50, 51, 97}) v1.replace(b * kBs, 4, "data");
  RevisionRecord r1 = put("a", v1);
  auto w = store_->begin_revision(RevisionStart{"rbd", "a", v1.size(), false});
  w->put_block(2, std::string(kBs, 'x'));
  w->put_zero_range(3, 98);  // a big discard
  RevisionRecord r2 = w->commit(RevisionInfo{});
  EXPECT_EQ(r2.map_entries, 1u + 4u);  // block 2, and the four blocks that held data
  std::string v2(100 * kBs, '\0');
  v2.replace(2 * kBs, kBs, std::string(kBs, 'x'));
  EXPECT_EQ(read(r2), v2);
  EXPECT_EQ(read(r1), v1);
  EXPECT_EQ(store_->compute_digest(r2), r2.digest);
}

}  // namespace
}  // namespace rbdvault::store

#include "agent/block_pipeline.h"

namespace rbdvault::store {
namespace {

using testing::kBs;
using testing::StoreTest;

TEST_F(StoreTest, PipelineCommitsInOrderWithBoundedPendingBlocks) {
  std::string v = random_bytes(200 * kBs, 21);
  v.replace(10 * kBs, 30 * kBs, std::string(30 * kBs, '\0'));
  auto w = store_->begin_revision(RevisionStart{"rbd", "a", v.size(), true});
  {
    agent::BlockPipeline pipeline(*store_, *w, 4, 3);
    for (uint64_t b = 0; b < 200; ++b) {
      if (b == 50) {
        pipeline.add_zero_range(50, 60);
        b = 59;
        continue;
      }
      pipeline.add_block(b, std::string_view(v).substr(b * kBs, kBs));
    }
    pipeline.finish();
    EXPECT_LE(pipeline.peak_pending(), 3u);
  }
  RevisionRecord r = w->commit(RevisionInfo{});
  std::string expected = v;
  expected.replace(50 * kBs, 10 * kBs, std::string(10 * kBs, '\0'));
  EXPECT_EQ(read(r), expected);
  EXPECT_EQ(store_->compute_digest(r), r.digest);
}

// Images of one batch are backed up in parallel into one store: writers of different images run
// on their own threads, share chunks, flush often, and one abandons a revision midway.
TEST_F(StoreTest, ConcurrentWritersOfDifferentImagesStayConsistent) {
  store_.reset();
  WriterOptions wo;
  wo.flush_entries = 3;  // many intermediate flushes and packs interleave between the threads
  store_ = Store::open(dir_, OpenMode::kWriter, "unit test", wo);
  const std::string shared = random_bytes(12 * kBs, 40);  // every image starts from the same data
  constexpr int kImages = 4, kRevisions = 5;
  std::vector<std::vector<std::pair<RevisionRecord, std::string>>> written(kImages);
  std::vector<std::thread> threads;
  std::vector<std::string> errors(kImages);
  for (int i = 0; i < kImages; ++i) {
    threads.emplace_back([&, i] {
      try {
        std::mt19937 rng(1000 + i);
        std::string image = shared;
        for (int r = 0; r < kRevisions; ++r) {
          if (r > 0) {
            // Half the changed blocks repeat content another image also writes (a shared chunk
            // new to the store in two writers at once), half are unique.
            for (int k = 0; k < 3; ++k) {
              const uint64_t b = rng() % 12;
              image.replace(b * kBs, kBs,
                            random_bytes(kBs, (k % 2) ? 5000 + r * 100 + static_cast<uint32_t>(b)
                                                      : 9000 + i * 1000 + r * 10 + k));
            }
          }
          if (i == 1 && r == 2) {  // abandoned midway, after some flushes
            auto w = store_->begin_revision(RevisionStart{"rbd", "img" + std::to_string(i), image.size(), true});
            for (uint64_t b = 0; b < 7; ++b) w->put_block(b, random_bytes(kBs, 7000 + static_cast<uint32_t>(b)));
          }
          auto w = store_->begin_revision(RevisionStart{"rbd", "img" + std::to_string(i), image.size(), true});
          for (uint64_t b = 0; b < 12; ++b) w->put_block(b, std::string_view(image).substr(b * kBs, kBs));
          RevisionInfo info;
          info.ceph_image_id = "id";
          info.snap_name = "snap";
          written[i].emplace_back(w->commit(info), image);
        }
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) ASSERT_EQ(e, "");
  std::set<uint64_t> ids;
  for (auto& revs : written)
    for (auto& [rec, content] : revs) {
      ids.insert(rec.id);
      EXPECT_EQ(read(rec), content) << "revision " << rec.id;
      EXPECT_EQ(store_->compute_digest(rec), rec.digest);
    }
  EXPECT_EQ(ids.size(), static_cast<size_t>(kImages * kRevisions));
  EXPECT_EQ(store_->active_writers(), 0u);
  ScrubReport rep = scrub(*store_, ScrubOptions{{}, {}, true});
  for (auto& issue : rep.issues) ADD_FAILURE() << "scrub: revision " << issue.revision << ": " << issue.problem;
  EXPECT_GT(rep.chunks_checked, 0u);
}

TEST_F(StoreTest, OneWriterPerImageAndMaintenanceWaitsForWriters) {
  std::string v = random_bytes(4 * kBs, 50);
  RevisionRecord r1 = put("a", v);
  put("a", v);
  auto w = store_->begin_revision(RevisionStart{"rbd", "a", v.size(), false});
  EXPECT_THROW(store_->begin_revision(RevisionStart{"rbd", "a", v.size(), false}), StoreError);
  EXPECT_THROW(store_->forget(r1.id), StoreError);
  auto other = store_->begin_revision(RevisionStart{"rbd", "b", v.size(), true});  // another image: fine
  EXPECT_EQ(store_->active_writers(), 2u);
  other.reset();
  w.reset();
  EXPECT_EQ(store_->active_writers(), 0u);
  store_->forget(r1.id);
  EXPECT_EQ(store_->revisions().size(), 1u);
}

}  // namespace
}  // namespace rbdvault::store

namespace rbdvault::store {
namespace {

using testing::kBs;
using testing::StoreTest;

// Partial reads (issue 15): the pipeline completes a block from the parent revision's chunk with
// the pieces read from Ceph, and counts what it read back from the store.
TEST_F(StoreTest, PipelinePatchesBlocksFromTheParentsChunks) {
  const std::string v1 = random_bytes(8 * kBs, 31);
  RevisionRecord r1 = put("a", v1);
  std::string v2 = v1;
  const std::string p1 = random_bytes(100, 32), p2 = random_bytes(4096, 33), p3 = random_bytes(7, 34);
  v2.replace(2 * kBs + 10, p1.size(), p1);
  v2.replace(2 * kBs + 5000, p2.size(), p2);
  v2.replace(6 * kBs - 7, p3.size(), p3);  // the last bytes of block 5
  auto w = store_->begin_revision(RevisionStart{"rbd", "a", v2.size(), false});
  {
    agent::BlockPipeline pipeline(*store_, *w, 2, 4);
    pipeline.add_patched(2, *store_->block_content(r1.image, 2, r1.id), p1 + p2,
                         {{10, p1.size()}, {5000, p2.size()}});
    pipeline.add_patched(5, *store_->block_content(r1.image, 5, r1.id), p3, {{kBs - 7, 7}});
    pipeline.finish();
    EXPECT_EQ(pipeline.stats().bytes_read_store, 2 * kBs);
  }
  RevisionRecord r2 = w->commit(RevisionInfo{});
  EXPECT_EQ(read(r2), v2);
  EXPECT_EQ(read(r1), v1);
  EXPECT_EQ(r2.new_chunks, 2u);
}

TEST_F(StoreTest, RandomDataIsNotWorthCompressingButMixedBlocksAre) {
  const std::string random = random_bytes(kBs, 41);
  EXPECT_FALSE(worth_compressing(random, 1));
  EXPECT_EQ(encode_chunk(random, 1).flags, kChunkRaw);
  EXPECT_TRUE(worth_compressing(std::string(kBs, 'x'), 1));
  EXPECT_FALSE(worth_compressing(std::string(kBs, 'x'), 0));
  // Random except for a zeroed tail: the last sample finds it.
  std::string tail = random;
  tail.replace(kBs - 20000, 20000, std::string(20000, '\0'));
  EXPECT_TRUE(worth_compressing(tail, 1));
  EXPECT_EQ(encode_chunk(tail, 1).flags, kChunkZstd);
  // Text compresses.
  std::string text;
  while (text.size() < kBs) text += "block " + std::to_string(text.size()) + " of a log file\n";
  text.resize(kBs);
  EXPECT_TRUE(worth_compressing(text, 1));
  EXPECT_EQ(encode_chunk(text, 1).flags, kChunkZstd);
}

}  // namespace
}  // namespace rbdvault::store
