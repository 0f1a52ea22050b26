// History: forget, gc, du and scrub on the store, with faults injected into index and packs.
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>

#include "store/chunk_codec.h"
#include "store/gc.h"
#include "store/pack.h"
#include "store/scrub.h"
#include "tests/unit/store_fixture.h"

namespace rbdvault::store {
namespace {

namespace fs = std::filesystem;
using testing::kBs;
using testing::StoreTest;

// A history of one image with resizes: revision id -> content.
class HistoryTest : public StoreTest {
 protected:
  void build(int revisions, uint32_t seed) {
    std::mt19937 rng(seed);
    std::string image = random_bytes(24 * kBs + 100, seed);
    history_[put("img", image).id] = image;
    for (int r = 1; r < revisions; ++r) {
      std::set<uint64_t> changed;
      if (rng() % 4 == 0) {
        uint64_t nsize = 1 + rng() % (40 * kBs);
        if (nsize < image.size())
          for (uint64_t b = nsize / kBs; b < store_->blocks_for(image.size()); ++b) changed.insert(b);
        uint64_t old = image.size();
        image.resize(nsize, '\0');
        for (uint64_t edge : {old, nsize})
          if (edge % kBs) changed.insert(edge / kBs);
      }
      for (int w = 0; w < 3 && !image.empty(); ++w) {
        uint64_t off = rng() % image.size();
        uint64_t len = std::min<uint64_t>(1 + rng() % (3 * kBs), image.size() - off);
        image.replace(off, len, rng() % 3 ? random_bytes(len, rng()) : std::string(len, '\0'));
        for (uint64_t b = off / kBs; b <= (off + len - 1) / kBs; ++b) changed.insert(b);
      }
      std::set<uint64_t> in_range;
      for (auto b : changed)
        if (b < store_->blocks_for(image.size())) in_range.insert(b);
      history_[put("img", image, &in_range).id] = image;
    }
  }
  void expect_intact() {
    auto revs = store_->revisions();
    ASSERT_EQ(revs.size(), history_.size());
    for (auto& r : revs) {
      ASSERT_TRUE(history_.count(r.id)) << "unexpected revision " << r.id;
      EXPECT_EQ(read(r), history_[r.id]) << "revision " << r.id;
    }
    ScrubReport rep = scrub(*store_, ScrubOptions{{}, {}, true});
    for (auto& i : rep.issues) ADD_FAILURE() << "scrub: revision " << i.revision << ": " << i.problem;
  }
  uint64_t pack_bytes() {
    uint64_t n = 0;
    for (auto& e : fs::directory_iterator(dir_ / "data")) n += fs::file_size(e.path());
    return n;
  }
  std::map<uint64_t, std::string> history_;
};

TEST_F(HistoryTest, ForgetAnySubsetKeepsEveryOtherRevisionIdentical) {
  build(14, 1);
  std::vector<uint64_t> ids;
  for (auto& [id, _] : history_) ids.push_back(id);
  // First, a middle one, the one before the newest, then random others.
  for (uint64_t id : {ids[0], ids[6], ids[12], ids[3], ids[4], ids[9]}) {
    store_->forget(id);
    history_.erase(id);
    expect_intact();
  }
  auto revs = store_->revisions();
  EXPECT_EQ(revs.front().parent, 0u);
  for (size_t i = 1; i < revs.size(); ++i) EXPECT_EQ(revs[i].parent, revs[i - 1].id);
}

TEST_F(HistoryTest, NewestAndProtectedAreNeverForgotten) {
  build(4, 2);
  uint64_t newest = history_.rbegin()->first;
  EXPECT_THROW(store_->forget(newest), StoreError);
  uint64_t first = history_.begin()->first;
  store_->set_protected(first, true);
  EXPECT_THROW(store_->forget(first), StoreError);
  store_->set_protected(first, false);
  store_->forget(first);
  history_.erase(first);
  EXPECT_THROW(store_->forget(first), StoreError);  // gone
  expect_intact();
}

TEST_F(HistoryTest, GcFreesWhatDuPredicted) {
  build(10, 3);
  std::vector<uint64_t> ids;
  for (auto& [id, _] : history_) ids.push_back(id);
  StoreUsage before = du(*store_);
  ASSERT_EQ(before.images.size(), 1u);
  uint64_t predicted = 0;
  for (auto& ru : before.images[0].per_revision)
    if (ru.revision == ids[2]) predicted = ru.unique_bytes;
  EXPECT_GT(predicted, 0u);
  const uint64_t disk_before = pack_bytes();
  store_->forget(ids[2]);
  history_.erase(ids[2]);
  GcResult g = gc(*store_, GcOptions{0.0, false});
  EXPECT_EQ(g.bytes_before, disk_before);
  EXPECT_GE(disk_before - pack_bytes(), predicted);  // max_unused 0: every unreferenced byte goes
  EXPECT_LE(disk_before - pack_bytes(), predicted + kPackHeaderSize * 4);
  expect_intact();
  StoreUsage after = du(*store_);
  EXPECT_EQ(after.unreferenced_bytes, 0u);
}

TEST_F(HistoryTest, GcRefusesWhileSomeoneReads) {
  build(2, 4);
  auto reader = Store::open(dir_, OpenMode::kReadOnly);
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);  // make sure fork works before relying on it
  ::waitpid(pid, nullptr, 0);
  // The reader lock is per process: probe from a child that holds a read lock.
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  pid = ::fork();
  if (pid == 0) {
    ::close(pipefd[0]);
    auto r = Store::open(dir_, OpenMode::kReadOnly);
    char c = 'x';
    (void)!::write(pipefd[1], &c, 1);
    ::pause();
    ::_exit(0);
  }
  ::close(pipefd[1]);
  char c;
  ASSERT_EQ(::read(pipefd[0], &c, 1), 1);
  try {
    gc(*store_, GcOptions{});
    ADD_FAILURE() << "gc ran while a reader was active";
  } catch (const StoreError& e) {
    EXPECT_EQ(e.kind(), StoreError::Kind::kLocked);
    EXPECT_NE(std::string(e.what()).find("being read by pid " + std::to_string(pid)), std::string::npos) << e.what();
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  gc(*store_, GcOptions{});
}

// Runs `work` on the store in a child that SIGKILLs itself at crash point `step` (STEP[:N], see
// store/crash_points.h). Returns true if the child died there: the kill lands at a known step on any
// machine, however fast.
template <typename Work>
bool crash_at(const fs::path& dir, const std::string& step, Work work) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("RBDVAULT_CRASH_AT", step.c_str(), 1);
    try {
      auto s = Store::open(dir, OpenMode::kWriter, "child");
      work(*s);
    } catch (...) {
      ::_exit(2);
    }
    ::_exit(0);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return false;
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

// The gc steps a run will pass, judged by a dry run (a kill planned at a step gc never reaches
// would prove nothing).
std::vector<std::string> gc_steps(Store& s) {
  GcResult plan = gc(s, GcOptions{0.0, true});
  std::vector<std::string> steps;
  if (plan.packs_rewritten) steps.insert(steps.end(), {"gc.pack_written", "gc.pack_switched", "gc.file_removed"});
  if (plan.packs_deleted) steps.insert(steps.end(), {"gc.pack_dropped", "gc.file_removed"});
  return steps;
}

TEST_F(HistoryTest, KilledForgetAndGcLoseNothingAndRerunCompletes) {
  build(12, 5);
  std::vector<uint64_t> ids;
  for (auto& [id, _] : history_) ids.push_back(id);
  std::map<std::string, int> kills;
  for (int round = 0; round < 8; ++round) {
    const uint64_t victim = ids[round];
    store_.reset();
    const std::string forget_step = round % 2 ? "forget.done" : "forget.marked";
    ASSERT_TRUE(crash_at(dir_, forget_step, [&](Store& s) { s.forget(victim); })) << forget_step;
    ++kills[forget_step];
    store_ = Store::open(dir_, OpenMode::kWriter, "test");  // completes the interrupted forget
    for (auto& r : store_->revisions()) ASSERT_NE(r.id, victim) << "a killed forget must be completed at open";
    history_.erase(victim);
    expect_intact();
    const std::vector<std::string> steps = gc_steps(*store_);
    store_.reset();
    if (!steps.empty()) {
      const std::string gc_step = steps[round % steps.size()];
      ASSERT_TRUE(crash_at(dir_, gc_step, [&](Store& s) { gc(s, GcOptions{0.0, false}); })) << gc_step;
      ++kills[gc_step];
    }
    store_ = Store::open(dir_, OpenMode::kWriter, "test");
    gc(*store_, GcOptions{0.0, false});
    expect_intact();
    EXPECT_TRUE(scrub(*store_, ScrubOptions{{}, {}, true}).clean()) << "round " << round;
    EXPECT_EQ(du(*store_).unreferenced_bytes, 0u);
  }
  // Every kind of step was hit at least once, each by a kill that landed.
  for (const char* step : {"forget.marked", "forget.done", "gc.pack_written", "gc.pack_switched", "gc.file_removed"})
    EXPECT_GT(kills[step], 0) << step;
}

// ---- scrub finds every injected fault and names the damaged revisions ----------------------

class ScrubTest : public HistoryTest {
 protected:
  void SetUp() override {
    HistoryTest::SetUp();
    build(5, 7);
    ASSERT_TRUE(scrub(*store_, ScrubOptions{{}, {}, true}).clean());
    revs_ = store_->revisions();
  }
  // The revisions whose view contains `hash`.
  std::set<uint64_t> readers_of(const Hash& hash) {
    std::set<uint64_t> out;
    for (auto& r : revs_)
      store_->for_each_data_block(r, [&](uint64_t, const Hash& h) {
        if (h == hash) out.insert(r.id);
      });
    return out;
  }
  // Some chunk of the newest revision, with its record.
  std::pair<Hash, ChunkRecord> some_chunk() {
    Hash found{};
    store_->for_each_data_block(revs_.back(), [&](uint64_t, const Hash& h) { found = h; });
    return {found, *store_->chunk(found)};
  }
  void expect_damaged(const ScrubReport& rep, const std::set<uint64_t>& expected) {
    EXPECT_FALSE(rep.clean());
    auto damaged = rep.damaged_revisions();
    EXPECT_EQ(std::set<uint64_t>(damaged.begin(), damaged.end()), expected);
    for (auto& i : rep.issues) EXPECT_EQ(i.image, i.revision ? "rbd/img" : "");
  }
  std::vector<RevisionRecord> revs_;
};

TEST_F(ScrubTest, FlippedBitInChunkData) {
  auto [hash, rec] = some_chunk();
  {
    std::fstream f(dir_ / "data" / pack_file_name(rec.pack), std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(rec.offset + kChunkHeaderSize + rec.stored_len / 2);
    char c = static_cast<char>(f.get());
    f.seekp(rec.offset + kChunkHeaderSize + rec.stored_len / 2);
    f.put(static_cast<char>(c ^ 0x10));
  }
  expect_damaged(scrub(*store_, ScrubOptions{{}, {}, true}), readers_of(hash));
}

TEST_F(ScrubTest, TruncatedPackFile) {
  auto [hash, rec] = some_chunk();
  fs::resize_file(dir_ / "data" / pack_file_name(rec.pack), rec.offset + 10);
  auto rep = scrub(*store_, ScrubOptions{});
  EXPECT_FALSE(rep.clean());
  auto damaged = rep.damaged_revisions();
  EXPECT_TRUE(std::set<uint64_t>(damaged.begin(), damaged.end()).count(revs_.back().id));
  bool store_wide = false;
  for (auto& i : rep.issues)
    store_wide = store_wide || (i.revision == 0 && i.problem.find("bytes, index says") != std::string::npos);
  EXPECT_TRUE(store_wide);
}

TEST_F(ScrubTest, DeletedChunk) {
  auto [hash, rec] = some_chunk();
  ASSERT_TRUE(store_->db().Delete(rocksdb::WriteOptions(), chunk_key(hash)).ok());
  expect_damaged(scrub(*store_, ScrubOptions{}), readers_of(hash));
}

TEST_F(ScrubTest, DeletedPackFile) {
  auto [hash, rec] = some_chunk();
  fs::remove(dir_ / "data" / pack_file_name(rec.pack));
  auto rep = scrub(*store_, ScrubOptions{});
  auto damaged = rep.damaged_revisions();
  EXPECT_TRUE(std::set<uint64_t>(damaged.begin(), damaged.end()).count(revs_.back().id));
}

TEST_F(ScrubTest, DeletedIndexEntry) {
  // Remove the newest revision's own entry for one block it wrote.
  std::unique_ptr<rocksdb::Iterator> it(store_->db().NewIterator(rocksdb::ReadOptions()));
  std::string victim;
  for (it->Seek(block_prefix(revs_.back().image)); it->Valid(); it->Next()) {
    auto k = parse_block_key(it->key().ToStringView());
    if (k && k->rev == revs_.back().id && it->value().size() == 32) victim = it->key().ToString();
  }
  it.reset();
  ASSERT_FALSE(victim.empty());
  ASSERT_TRUE(store_->db().Delete(rocksdb::WriteOptions(), victim).ok());
  auto rep = scrub(*store_, ScrubOptions{});
  expect_damaged(rep, {revs_.back().id});
}

TEST_F(ScrubTest, BrokenParentPointer) {
  RevisionRecord r = revs_[2];
  r.parent = 999;
  ASSERT_TRUE(store_->db().Put(rocksdb::WriteOptions(), revision_key(r.id), encode(r)).ok());
  expect_damaged(scrub(*store_, ScrubOptions{}), {r.id});
}

TEST_F(ScrubTest, WrongSize) {
  RevisionRecord r = revs_[1];
  r.size += kBs;  // one more block: zeros, yet the checksum covers the size
  ASSERT_TRUE(store_->db().Put(rocksdb::WriteOptions(), revision_key(r.id), encode(r)).ok());
  expect_damaged(scrub(*store_, ScrubOptions{}), {r.id});
}

}  // namespace
}  // namespace rbdvault::store

#include "agent/verify.h"

namespace rbdvault::store {
namespace {

TEST_F(ScrubTest, RepairWithoutSourceUsesAnIntactCopyInTheStore) {
  auto [hash, rec] = some_chunk();
  // An intact second copy in another pack, as an interrupted gc or an older run can leave behind.
  std::string raw = store_->read_chunk(hash);
  {
    PackWriter extra(dir_ / "data", 9999);
    EncodedChunk enc = encode_chunk(raw, 1);
    extra.append(hash, enc.flags, static_cast<uint32_t>(raw.size()), enc.payload);
    extra.seal();
  }
  {
    std::fstream f(dir_ / "data" / pack_file_name(rec.pack), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(rec.offset + kChunkHeaderSize + 3);
    f.put('\x7f');
  }
  ASSERT_FALSE(scrub(*store_, ScrubOptions{{}, {}, true}).clean());
  agent::RepairResult r = agent::repair_store(nullptr, *store_);
  EXPECT_EQ(r.damaged_chunks, 1u);
  EXPECT_EQ(r.repaired_from_copy, 1u);
  EXPECT_TRUE(r.unrepaired.empty());
  fs::remove(dir_ / "data" / pack_file_name(9999));  // not in the index: only the copy's source
  expect_intact();
}

TEST_F(ScrubTest, RepairReportsWhatItCannotFix) {
  auto [hash, rec] = some_chunk();
  const std::set<uint64_t> readers = readers_of(hash);
  ASSERT_TRUE(store_->db().Delete(rocksdb::WriteOptions(), chunk_key(hash)).ok());
  fs::remove(dir_ / "data" / pack_file_name(rec.pack));
  agent::RepairResult r = agent::repair_store(nullptr, *store_);
  EXPECT_GE(r.unrepaired.size(), 1u);
  for (uint64_t id : readers)
    EXPECT_TRUE(std::find(r.damaged_revisions.begin(), r.damaged_revisions.end(), id) != r.damaged_revisions.end())
        << id;
}

}  // namespace
}  // namespace rbdvault::store
