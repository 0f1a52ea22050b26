// Issue 11 point 5: locks that a second open in the same process cannot drop, a pack reader shared
// by threads, packs sealed without overwriting, gc and forget excluding new writers for their whole
// run, and readers whose view survives the writer's compactions.
#include <fcntl.h>
#include <rocksdb/db.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "store/index.h"
#include "store/gc.h"
#include "store/lock.h"
#include "store/open_object_store.h"
#include "store/pack.h"
#include "store_fixture.h"

namespace rbdvault::store::testing {
namespace {

fs::path scratch(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("rbdvault-conc-" + std::to_string(::getpid()) + "-" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Runs `attempt` in a child process; true if it was refused there with kLocked.
template <typename Attempt>
bool refused_in_child(Attempt attempt) {
  pid_t pid = ::fork();
  if (pid == 0) {
    try {
      attempt();
    } catch (const StoreError& e) {
      ::_exit(e.kind() == StoreError::Kind::kLocked ? 0 : 2);
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(1);  // granted
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return false;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

TEST(Locks, SecondWriterOpenInOneProcessIsRefusedAndCannotDropTheLock) {
  const fs::path dir = scratch("writer");
  auto first = std::make_unique<WriterLock>(dir / "lock", "first");
  // With process-owned (classic POSIX) locks this second lock was granted, and closing it dropped
  // the first one's lock with it.
  try {
    WriterLock second(dir / "lock", "second");
    ADD_FAILURE() << "a second writer lock was granted in the same process";
  } catch (const StoreError& e) {
    EXPECT_EQ(e.kind(), StoreError::Kind::kLocked);
  }
  EXPECT_TRUE(refused_in_child([&] { WriterLock child(dir / "lock", "child"); }))
      << "another process got the writer lock while the first holder still has it";
  first.reset();
  EXPECT_FALSE(refused_in_child([&] { WriterLock child(dir / "lock", "child"); })) << "released lock stays taken";
  fs::remove_all(dir);
}

TEST(Locks, ClosingOneReaderKeepsTheStoreReadLocked) {
  const fs::path dir = scratch("readers");
  ReaderLock reader(dir / "readers.lock", /*exclusive=*/false);
  { ReaderLock other(dir / "readers.lock", false); }  // a second read-only open in this process, closed
  EXPECT_TRUE(refused_in_child([&] { ReaderLock gc(dir / "readers.lock", true); }))
      << "gc in another process got the readers lock while a reader of this process still reads";
  // gc in this very process is refused too: it would delete packs under the reader.
  EXPECT_THROW(ReaderLock(dir / "readers.lock", true), StoreError);
  fs::remove_all(dir);
}

TEST(PackSeal, AnExistingPackIsNeverOverwritten) {
  const fs::path dir = scratch("seal");
  fs::create_directories(dir / "data");
  {
    std::ofstream f(dir / "data" / pack_file_name(7), std::ios::binary);
    f << "sealed chunks the index points into";
  }
  {
    const auto objects = open_object_store(dir);
    PackWriter writer(*objects, 7);
    const std::string raw(kBs, 'x');
    writer.append(sha256(raw), 0, kBs, raw);
    EXPECT_THROW(writer.seal(), StoreError);
  }
  std::ifstream f(dir / "data" / pack_file_name(7), std::ios::binary);
  std::string content((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "sealed chunks the index points into");
  EXPECT_FALSE(fs::exists(dir / "data" / (pack_file_name(7) + ".tmp"))) << "the refused pack is left behind";
  fs::remove_all(dir);
}

// Many threads read chunks through one PackReader whose descriptor cache (2 files) is far smaller
// than the packs they read (one chunk per pack), so entries are evicted while other threads read
// through them; another thread keeps forgetting packs. Every read must return verified data.
TEST_F(StoreTest, ConcurrentPackReadersShareDescriptorsSafely) {
  store_.reset();
  WriterOptions wo;
  wo.pack_target_bytes = 1;  // one chunk per pack
  store_ = Store::open(dir_, OpenMode::kWriter, "unit test", wo);
  constexpr uint64_t kBlocks = 12;
  const std::string image = random_bytes(kBlocks * kBs, 5);
  put("a", image);
  std::vector<std::pair<Hash, ChunkRecord>> chunks;
  std::set<uint32_t> packs;
  for (uint64_t b = 0; b < kBlocks; ++b) {
    const Hash h = sha256(std::string_view(image).substr(b * kBs, kBs));
    auto rec = store_->chunk(h);
    ASSERT_TRUE(rec);
    chunks.emplace_back(h, *rec);
    packs.insert(rec->pack);
  }
  ASSERT_GE(packs.size(), 6u) << "the test needs many packs";

  PackReader reader(store_->objects(), /*max_open_packs=*/2);
  std::atomic<int> failures{0}, reads{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        const auto& [h, rec] = chunks[static_cast<size_t>(i * 5 + t) % chunks.size()];
        try {
          if (sha256(reader.read(h, rec)) != h) ++failures;
        } catch (const std::exception& e) {
          if (failures++ == 0) ADD_FAILURE() << e.what();
        }
        ++reads;
      }
    });
  }
  std::thread forgetter([&] {
    for (uint32_t i = 0; !done; ++i) reader.forget_pack(*std::next(packs.begin(), i % packs.size()));
  });
  for (auto& t : threads) t.join();
  done = true;
  forgetter.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(reads.load(), 1200);
}

// gc and forget claim the store for their whole run: a writer that tries to begin in the middle
// (here: from inside gc, at its first durable step) is refused, not let in after the check.
TEST_F(StoreTest, NoRevisionBeginsWhileGcOrForgetRuns) {
  const std::string v1 = random_bytes(4 * kBs, 1);
  RevisionRecord r1 = put("a", v1);
  put("a", random_bytes(4 * kBs, 2));
  std::map<std::string, int> refused, began;  // by operation: "forget", "gc"
  store_->crash_points().set_observer([&](std::string_view step) {
    if (step != "forget.marked" && step != "gc.pack_dropped" && step != "gc.pack_written") return;
    const std::string op(step.substr(0, step.find('.')));
    try {
      auto w = store_->begin_revision(RevisionStart{"rbd", "b", kBs, true});
      ++began[op];
    } catch (const StoreError& e) {
      if (e.kind() == StoreError::Kind::kLocked) ++refused[op];
    }
  });
  store_->forget(r1.id);
  GcResult g = gc(*store_, GcOptions{0.0, false});
  store_->crash_points().set_observer(nullptr);
  EXPECT_GE(g.packs_deleted + g.packs_rewritten, 1u);
  EXPECT_EQ(refused["forget"], 1);
  EXPECT_GE(refused["gc"], 1);
  EXPECT_TRUE(began.empty()) << "a revision began while forget or gc ran";
  // Once they are done, writers are welcome again.
  const std::string vb = random_bytes(kBs, 3);
  EXPECT_EQ(read(put("b", vb)), vb);
  // And neither starts while a revision is being written.
  auto w = store_->begin_revision(RevisionStart{"rbd", "c", kBs, true});
  EXPECT_THROW(gc(*store_, GcOptions{}), StoreError);
}

std::set<std::string> table_files(const fs::path& index) {
  std::set<std::string> out;
  for (auto& e : fs::directory_iterator(index))
    if (e.path().extension() == ".sst") out.insert(e.path().filename().string());
  return out;
}

std::string read_with(Store& s, const RevisionRecord& rev) {
  std::string out(rev.size, '\0');
  s.for_each_data_block(rev, [&](uint64_t block, const Hash& h) {
    const std::string data = s.read_chunk(h);
    const uint64_t off = block * kBs;
    out.replace(off, std::min<uint64_t>(kBs, rev.size - off), data.substr(0, std::min<uint64_t>(kBs, rev.size - off)));
  });
  return out;
}

// A reader opened before the writer compacts keeps reading what it saw at its open, although
// every table file it opened has been deleted by then.
TEST_F(StoreTest, ReaderKeepsItsViewWhileTheWriterCompacts) {
  std::vector<std::pair<RevisionRecord, std::string>> revs;
  for (int i = 0; i < 5; ++i) {
    const std::string img = random_bytes(6 * kBs, 10 + i);
    revs.emplace_back(put("img" + std::to_string(i % 2), img), img);
    ASSERT_TRUE(store_->index().db_for_tests().Flush(rocksdb::FlushOptions()).ok());  // one table file per revision
  }
  const auto before = table_files(dir_ / "index");
  ASSERT_GE(before.size(), 2u);
  auto reader = Store::open(dir_, OpenMode::kReadOnly);
  rocksdb::CompactRangeOptions all;
  all.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  ASSERT_TRUE(store_->index().db_for_tests().CompactRange(all, nullptr, nullptr).ok());
  for (const auto& f : table_files(dir_ / "index"))
    ASSERT_EQ(before.count(f), 0u) << "compaction kept " << f << "; the test proves nothing";
  for (auto& [rev, img] : revs) EXPECT_EQ(read_with(*reader, rev), img) << "revision " << rev.id;
  EXPECT_EQ(reader->revisions().size(), revs.size());
}

// The same with threads: one writes, flushes and compacts in a loop while others open the store
// read-only again and again (an open can race with the writer retiring the files it is about to
// open) and restore a revision committed before.
TEST_F(StoreTest, ConcurrentReadersOpenAndReadWhileTheWriterCompacts) {
  const std::string base = random_bytes(4 * kBs, 77);
  const RevisionRecord first = put("base", base);
  std::atomic<bool> done{false};
  std::atomic<int> failures{0}, restores{0};
  std::thread writer([&] {
    rocksdb::CompactRangeOptions all;
    all.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    for (int i = 0; i < 12; ++i) {
      put("churn", random_bytes(2 * kBs, 100 + i));
      const rocksdb::Status flushed = store_->index().db_for_tests().Flush(rocksdb::FlushOptions());
      EXPECT_TRUE(flushed.ok()) << flushed.ToString();
      if (i % 3 == 2) {
        const rocksdb::Status compacted = store_->index().db_for_tests().CompactRange(all, nullptr, nullptr);
        EXPECT_TRUE(compacted.ok()) << compacted.ToString();
      }
    }
    done = true;
  });
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&] {
      while (!done || restores < 4) {
        try {
          auto r = Store::open(dir_, OpenMode::kReadOnly);
          if (read_with(*r, first) != base && failures++ == 0) ADD_FAILURE() << "a reader read wrong data";
          ++restores;
        } catch (const std::exception& e) {
          if (failures++ == 0) ADD_FAILURE() << e.what();
        }
      }
    });
  }
  writer.join();
  for (auto& t : readers) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GE(restores.load(), 4);
}

}  // namespace
}  // namespace rbdvault::store::testing
