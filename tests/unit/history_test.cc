// History: forget, gc, du and scrub on the store, with faults injected into index and packs.
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>

#include "store/index.h"
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
      const std::string before = image;
      if (rng() % 4 == 0) image.resize(1 + rng() % (40 * kBs), '\0');
      for (int w = 0; w < 3 && !image.empty(); ++w) {
        uint64_t off = rng() % image.size();
        uint64_t len = std::min<uint64_t>(1 + rng() % (3 * kBs), image.size() - off);
        image.replace(off, len, rng() % 3 ? random_bytes(len, rng()) : std::string(len, '\0'));
      }
      std::set<uint64_t> changed = content_diff(before, image);
      history_[put("img", image, &changed).id] = image;
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
  // The reader lock is held by another process (a reader in this process would prove nothing: the
  // locks are per process): a child opens the store read-only and waits.
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  pid_t pid = ::fork();
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
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the reader child ended early: " << status;
  gc(*store_, GcOptions{});  // the reader is gone: gc runs
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
    {
      // Before any writer finishes it: a reader (scrub may run beside a forget) sees no damage.
      auto reader = Store::open(dir_, OpenMode::kReadOnly);
      const ScrubReport rep = scrub(*reader, ScrubOptions{{}, {}, true});
      for (const auto& i : rep.issues) ADD_FAILURE() << forget_step << ": revision " << i.revision << ": " << i.problem;
    }
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
  // The kind of each issue, from the issue texts of docs/format.md §11 ("?" for an unknown text, so
  // an unexpected issue fails the comparison). Per-revision chunk problems are "block:<kind>".
  static std::string kind_of(const ScrubIssue& i) {
    const std::string& p = i.problem;
    auto has = [&](const char* t) { return p.find(t) != std::string::npos; };
    if (i.revision) {
      if (has("revision record names another image")) return "other-image";
      if (has("broken parent pointer: parent ")) return "parent";
      if (has("block size differs from the store's")) return "block-size";
      if (has("whole-revision checksum does not match the block map")) return "checksum";
      if (!has(" damaged block(s), first block ")) return "?";
      if (has("is referenced but has no index record")) return "block:no-record";
      if (has(": pack file is missing")) return "block:pack-missing";
      if (has(": cannot stat pack file")) return "block:stat";
      if (has(": pack file is truncated (")) return "block:truncated";
      if (has(": read failed")) return "block:read";
      if (has(": bad chunk header magic")) return "block:magic";
      if (has(": chunk header disagrees with the index (flags/length)")) return "block:header-vs-index";
      if (has(": chunk header names another hash")) return "block:header-hash";
      if (has(": raw length is not the block size")) return "block:raw-length";
      if (has("has a malformed index record")) return "block:malformed";
      if (has(": content does not match its SHA-256")) return "block:sha256";
      if (has(": chunk does not decompress")) return "block:zstd";
      if (has(": chunk has unknown flags")) return "block:flags";
      return "?";
    }
    if (has(" has reference count ") && has(" block map entries")) return "refs";
    if (has(" chunks in all have wrong reference counts")) return "refs-total";
    if (has(" chunks are referenced by block maps but have no index record")) return "unindexed";
    if (has(" is missing") && p.starts_with("pack ")) return "pack-missing";
    if (has(" bytes, index says ")) return "pack-size";
    if (has(" which has no pack record")) return "no-pack-record";
    if (has(" has a malformed index record")) return "malformed";
    return "?";
  }
  // Scrub reports exactly these kinds of issue (each at least once), nothing else.
  void expect_kinds(const ScrubReport& rep, const std::set<std::string>& expected) {
    std::set<std::string> got;
    for (auto& i : rep.issues) got.insert(kind_of(i));
    EXPECT_EQ(got, expected);
    EXPECT_EQ(rep.clean(), expected.empty());
    for (auto& i : rep.issues) EXPECT_EQ(i.image, i.revision ? "rbd/img" : "") << i.problem;
    if (got != expected)
      for (auto& i : rep.issues) ADD_FAILURE() << "issue: revision " << i.revision << ": " << i.problem;
  }
  void patch_file(const fs::path& path, uint64_t offset, std::string_view bytes) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good()) << path;
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(f.good());
  }
  fs::path pack_path(uint32_t pack) { return dir_ / "data" / pack_file_name(pack); }
  static std::string le32(uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }
  void put_chunk_record(const Hash& h, const ChunkRecord& rec) {
    ASSERT_TRUE(store_->index().db_for_tests().Put(rocksdb::WriteOptions(), chunk_key(h), encode(rec)).ok());
  }
  void put_revision(const RevisionRecord& r) {
    ASSERT_TRUE(store_->index().db_for_tests().Put(rocksdb::WriteOptions(), revision_key(r.id), encode(r)).ok());
  }
  // A chunk of the newest revision stored with the given flags (raw: random data; zstd: a
  // compressible block written as an extra revision of the image for this purpose).
  std::pair<Hash, ChunkRecord> chunk_with_flags(uint8_t flags) {
    if (flags == kChunkZstd) {
      std::string image = history_.rbegin()->second;
      std::string text;
      while (text.size() < kBs) text += "compressible line " + std::to_string(text.size()) + "\n";
      image.replace(0, kBs, text.substr(0, kBs));
      history_[put("img", image).id] = image;
      revs_ = store_->revisions();
    }
    std::optional<std::pair<Hash, ChunkRecord>> found;
    store_->for_each_data_block(revs_.back(), [&](uint64_t, const Hash& h) {
      auto rec = store_->chunk(h);
      if (!found && rec && rec->flags == flags) found.emplace(h, *rec);
    });
    if (!found) throw std::runtime_error("no chunk with flags " + std::to_string(flags));
    return *found;
  }
  std::vector<RevisionRecord> revs_;
};

TEST_F(ScrubTest, FlippedBitInChunkData) {
  auto [hash, rec] = chunk_with_flags(kChunkRaw);
  {
    std::fstream f(pack_path(rec.pack), std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(rec.offset + kChunkHeaderSize + rec.stored_len / 2);
    char c = static_cast<char>(f.get());
    f.seekp(rec.offset + kChunkHeaderSize + rec.stored_len / 2);
    f.put(static_cast<char>(c ^ 0x10));
  }
  expect_kinds(scrub(*store_, ScrubOptions{}), {});  // only a deep scrub reads payloads
  auto rep = scrub(*store_, ScrubOptions{{}, {}, true});
  expect_damaged(rep, readers_of(hash));
  expect_kinds(rep, {"block:sha256"});
}

TEST_F(ScrubTest, BadZstdPayload) {
  auto [hash, rec] = chunk_with_flags(kChunkZstd);
  patch_file(pack_path(rec.pack), rec.offset + kChunkHeaderSize, "XXXX");  // the zstd frame magic
  expect_kinds(scrub(*store_, ScrubOptions{}), {});
  auto rep = scrub(*store_, ScrubOptions{{}, {}, true});
  expect_damaged(rep, readers_of(hash));
  expect_kinds(rep, {"block:zstd"});
}

TEST_F(ScrubTest, TruncatedPackFile) {
  auto [hash, rec] = some_chunk();
  fs::resize_file(pack_path(rec.pack), rec.offset + 10);
  auto rep = scrub(*store_, ScrubOptions{});
  auto damaged = rep.damaged_revisions();
  EXPECT_TRUE(std::set<uint64_t>(damaged.begin(), damaged.end()).count(revs_.back().id));
  expect_kinds(rep, {"block:truncated", "pack-size"});
}

TEST_F(ScrubTest, PackFileLongerThanItsRecord) {
  auto [hash, rec] = some_chunk();
  {
    std::ofstream f(pack_path(rec.pack), std::ios::app | std::ios::binary);
    f << "trailing garbage";
  }
  auto rep = scrub(*store_, ScrubOptions{{}, {}, true});
  EXPECT_TRUE(rep.damaged_revisions().empty());
  expect_kinds(rep, {"pack-size"});
}

TEST_F(ScrubTest, DeletedChunk) {
  auto [hash, rec] = some_chunk();
  ASSERT_TRUE(store_->index().db_for_tests().Delete(rocksdb::WriteOptions(), chunk_key(hash)).ok());
  auto rep = scrub(*store_, ScrubOptions{});
  expect_damaged(rep, readers_of(hash));
  expect_kinds(rep, {"block:no-record", "unindexed"});
}

TEST_F(ScrubTest, DeletedPackFile) {
  auto [hash, rec] = some_chunk();
  std::set<uint64_t> readers;  // the revisions reading any chunk of that pack
  for (auto& r : revs_)
    store_->for_each_data_block(r, [&](uint64_t, const Hash& h) {
      if (store_->chunk(h)->pack == rec.pack) readers.insert(r.id);
    });
  fs::remove(pack_path(rec.pack));
  auto rep = scrub(*store_, ScrubOptions{});
  expect_damaged(rep, readers);
  expect_kinds(rep, {"block:pack-missing", "pack-missing"});
}

TEST_F(ScrubTest, BadChunkHeaderMagic) {
  auto [hash, rec] = some_chunk();
  patch_file(pack_path(rec.pack), rec.offset, "XVCK");
  auto rep = scrub(*store_, ScrubOptions{});
  expect_damaged(rep, readers_of(hash));
  expect_kinds(rep, {"block:magic"});
}

TEST_F(ScrubTest, ChunkHeaderDisagreesWithIndex) {
  auto [hash, rec] = some_chunk();
  patch_file(pack_path(rec.pack), rec.offset + 12, le32(rec.stored_len - 1));  // stored_len in the header
  auto rep = scrub(*store_, ScrubOptions{});
  expect_damaged(rep, readers_of(hash));
  expect_kinds(rep, {"block:header-vs-index"});
}

TEST_F(ScrubTest, ChunkHeaderNamesAnotherHash) {
  auto [hash, rec] = some_chunk();
  Hash other = hash;
  other[5] ^= 0x01;
  patch_file(pack_path(rec.pack), rec.offset + 16, std::string_view(reinterpret_cast<const char*>(other.data()), 32));
  auto rep = scrub(*store_, ScrubOptions{});
  expect_damaged(rep, readers_of(hash));
  expect_kinds(rep, {"block:header-hash"});
}

TEST_F(ScrubTest, RawLengthIsNotTheBlockSize) {
  // Header and record agree with each other, but not with the store's block size.
  auto [hash, rec] = chunk_with_flags(kChunkRaw);
  // (A raw chunk's stored length is its raw length, so both change together.)
  patch_file(pack_path(rec.pack), rec.offset + 8, le32(kBs / 2) + le32(kBs / 2));
  ChunkRecord bad = rec;
  bad.raw_len = kBs / 2;
  bad.stored_len = kBs / 2;
  put_chunk_record(hash, bad);
  auto rep = scrub(*store_, ScrubOptions{{}, {}, true});
  expect_damaged(rep, readers_of(hash));
  expect_kinds(rep, {"block:raw-length"});
}

TEST_F(ScrubTest, MalformedChunkRecordIsReportedNotFatal) {
  // A record no decoder accepts (a raw chunk whose stored length differs from its raw length):
  // scrub names it and the revisions reading it, and goes on with the rest of the store.
  auto [hash, rec] = chunk_with_flags(kChunkRaw);
  ChunkRecord bad = rec;
  bad.stored_len = rec.raw_len + 1;
  put_chunk_record(hash, bad);
  auto rep = scrub(*store_, ScrubOptions{{}, {}, true});
  expect_damaged(rep, readers_of(hash));
  expect_kinds(rep, {"block:malformed", "malformed"});
}

TEST_F(ScrubTest, WrongReferenceCount) {
  auto [hash, rec] = some_chunk();
  ChunkRecord bad = rec;
  bad.refs += 1;
  put_chunk_record(hash, bad);
  auto rep = scrub(*store_, ScrubOptions{{}, {}, true});
  EXPECT_TRUE(rep.damaged_revisions().empty());  // store-wide: names no revision
  expect_kinds(rep, {"refs"});
  ASSERT_EQ(rep.issues.size(), 1u);
  EXPECT_NE(rep.issues[0].problem.find("has reference count " + std::to_string(rec.refs + 1) + " but " +
                                       std::to_string(rec.refs) + " block map entries"),
            std::string::npos)
      << rep.issues[0].problem;
}

TEST_F(ScrubTest, ManyWrongReferenceCountsAreSummarised) {
  std::set<Hash> hashes;
  store_->for_each_data_block(revs_.front(), [&](uint64_t, const Hash& h) { hashes.insert(h); });
  ASSERT_GE(hashes.size(), 7u);
  int n = 0;
  for (const Hash& h : hashes) {
    if (n++ == 7) break;
    ChunkRecord bad = *store_->chunk(h);
    bad.refs += 3;
    put_chunk_record(h, bad);
  }
  auto rep = scrub(*store_, ScrubOptions{});
  expect_kinds(rep, {"refs", "refs-total"});
  EXPECT_EQ(rep.issues.size(), 6u);  // the first 5, then the total
  EXPECT_NE(rep.issues.back().problem.find("7 chunks in all"), std::string::npos) << rep.issues.back().problem;
}

TEST_F(ScrubTest, ChunkInAnUnlistedPack) {
  auto [hash, rec] = some_chunk();
  ASSERT_TRUE(store_->index().db_for_tests().Delete(rocksdb::WriteOptions(), pack_key(rec.pack)).ok());
  auto rep = scrub(*store_, ScrubOptions{{}, {}, true});
  EXPECT_TRUE(rep.damaged_revisions().empty());
  expect_kinds(rep, {"no-pack-record"});
  EXPECT_NE(rep.issues[0].problem.find(pack_file_name(rec.pack)), std::string::npos) << rep.issues[0].problem;
}

TEST_F(ScrubTest, DeletedIndexEntry) {
  // Remove the newest revision's own entry for one block it wrote.
  std::unique_ptr<rocksdb::Iterator> it(store_->index().db_for_tests().NewIterator(rocksdb::ReadOptions()));
  std::string victim;
  for (it->Seek(block_prefix(revs_.back().image)); it->Valid(); it->Next()) {
    auto k = parse_block_key(it->key().ToStringView());
    if (k && k->rev == revs_.back().id && it->value().size() == 32) victim = it->key().ToString();
  }
  it.reset();
  ASSERT_FALSE(victim.empty());
  ASSERT_TRUE(store_->index().db_for_tests().Delete(rocksdb::WriteOptions(), victim).ok());
  auto rep = scrub(*store_, ScrubOptions{});
  expect_damaged(rep, {revs_.back().id});
  // The block now reads its older content (checksum), and its chunk has one reference too many.
  expect_kinds(rep, {"checksum", "refs"});
}

TEST_F(ScrubTest, BrokenParentPointer) {
  RevisionRecord r = revs_[2];
  r.parent = 999;
  put_revision(r);
  auto rep = scrub(*store_, ScrubOptions{});
  expect_damaged(rep, {r.id});
  expect_kinds(rep, {"parent"});
}

TEST_F(ScrubTest, RevisionRecordNamesAnotherImage) {
  RevisionRecord r = revs_[1];
  r.name = "another";
  put_revision(r);
  auto rep = scrub(*store_, ScrubOptions{});
  EXPECT_EQ(rep.damaged_revisions(), std::vector<uint64_t>{r.id});
  std::set<std::string> got;
  for (auto& i : rep.issues) got.insert(kind_of(i));
  EXPECT_EQ(got, std::set<std::string>{"other-image"});
}

TEST_F(ScrubTest, BlockSizeDiffers) {
  RevisionRecord r = revs_[1];
  r.block_size = kBs * 2;
  put_revision(r);
  auto rep = scrub(*store_, ScrubOptions{});
  expect_damaged(rep, {r.id});
  expect_kinds(rep, {"block-size"});
}

TEST_F(ScrubTest, WrongSize) {
  RevisionRecord r = revs_[1];
  r.size += kBs;  // one more block: zeros, yet the checksum covers the size
  put_revision(r);
  auto rep = scrub(*store_, ScrubOptions{});
  expect_damaged(rep, {r.id});
  expect_kinds(rep, {"checksum"});
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
    PackWriter extra(store_->objects(), 9999);
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
  ASSERT_TRUE(store_->index().db_for_tests().Delete(rocksdb::WriteOptions(), chunk_key(hash)).ok());
  fs::remove(dir_ / "data" / pack_file_name(rec.pack));
  agent::RepairResult r = agent::repair_store(nullptr, *store_);
  EXPECT_GE(r.unrepaired.size(), 1u);
  for (uint64_t id : readers)
    EXPECT_TRUE(std::find(r.damaged_revisions.begin(), r.damaged_revisions.end(), id) != r.damaged_revisions.end())
        << id;
}

}  // namespace
}  // namespace rbdvault::store
