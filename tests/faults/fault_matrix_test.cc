// The fault-injection matrix of issue 12, point 5, one test per operation (tests/faults/fault_harness.h).
#include <gtest/gtest.h>
#include <unistd.h>

#include <rocksdb/db.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <fstream>
#include <random>

#include "fault_fs.h"
#include "fault_harness.h"
#include "fault_object_store.h"
#include "store/error.h"
#include "store/open_object_store.h"
#include "store/scrub.h"
#include "store/format.h"
#include "store/gc.h"
#include "store/pack.h"

// Operations are written positionally and leave the trailing hooks (run_closed, after_run) empty.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace rbdvault::faults {
namespace {

using store::OpenMode;
using store::Store;

constexpr uint64_t kBlocks = 10;

// Half random (incompressible), half repetitive; some zero blocks; `seed` varies the content.
std::string make_image(uint32_t seed) {
  std::string out(kBlocks * kBs, '\0');
  std::mt19937 rng(seed);
  for (uint64_t b = 0; b < kBlocks; ++b) {
    if (b % 5 == 4) continue;  // zeros
    char* p = out.data() + b * kBs;
    if (b % 2 == 0)
      for (uint32_t i = 0; i < kBs; ++i) p[i] = static_cast<char>(rng());
    else
      std::memset(p, static_cast<int>('A' + (seed + b) % 26), kBs);
  }
  return out;
}

// `image` with blocks `blocks` given new content.
std::string change(std::string image, std::initializer_list<uint64_t> blocks, uint32_t seed) {
  std::mt19937 rng(seed);
  for (uint64_t b : blocks)
    for (uint32_t i = 0; i < kBs; ++i) image[b * kBs + i] = static_cast<char>(rng());
  return image;
}

// Issue 12, point 5: after every run, a rebuild from the data area alone (a copy without index/)
// must describe the same revisions, record for record (ids, images, sizes, parents, kinds, digests,
// flags, group), each reading the same bytes.
void rebuild_gives_the_same_store(Store& store, const fs::path& dir) {
  const fs::path copy = dir.string() + ".rebuilt";
  fs::remove_all(copy);
  fs::create_directories(copy);
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename() != "index" && e.path().filename() != "lock" && e.path().filename() != "readers.lock")
      fs::copy(e.path(), copy / e.path().filename(), fs::copy_options::recursive);
  (void)Store::rebuild_index(copy);
  auto rebuilt = Store::open(copy, OpenMode::kReadOnly);
  const auto want = store.revisions(), got = rebuilt->revisions();
  EXPECT_EQ(got.size(), want.size()) << dir << ": the rebuilt index has another number of revisions";
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    EXPECT_EQ(store::encode(got[i]), store::encode(want[i])) << dir << ": revision " << want[i].id << " differs after rebuild";
    EXPECT_TRUE(read_revision(*rebuilt, got[i]) == read_revision(store, want[i]))
        << dir << ": revision " << want[i].id << " reads differently after rebuild";
  }
  rebuilt.reset();
  fs::remove_all(copy);
}

// The revision records as `ls` lists them, byte for byte.
std::vector<std::string> records(Store& store) {
  std::vector<std::string> out;
  for (const store::RevisionRecord& r : store.revisions()) out.push_back(store::encode(r));
  return out;
}

class FaultMatrix : public ::testing::Test {
 protected:
  void SetUp() override {
    spdlog::set_level(spdlog::level::err);  // recovery's warnings, once per run, would drown the failures
    work_ = fs::temp_directory_path() / ("rbdvault-faults-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(work_);
    base_ = work_ / "base";
    Store::init(base_, store::StoreOptions{kBs});
    auto store = Store::open(base_, OpenMode::kWriter, "fault matrix base", small_writer_options());
    // Image a: a full revision and two deltas. Image b: its first revision forgotten, which leaves
    // unreferenced chunks for gc.
    a_ = {make_image(1)};
    a_.push_back(change(a_[0], {0, 3, 4}, 2));
    a_.push_back(change(a_[1], {1, 2, 8}, 3));
    a1_ = backup(*store, "a", a_[0]);
    a2_ = backup(*store, "a", a_[1], &a_[0]);
    a3_ = backup(*store, "a", a_[2], &a_[1]);
    const std::string b1 = make_image(7), b2 = change(b1, {0, 2, 5}, 9);  // b1's packs stay half live
    const uint64_t b1_id = backup(*store, "b", b1);
    b2_ = backup(*store, "b", b2, &b1);
    store->forget(b1_id);
    model_.revisions = {{a1_, {"a", a_[0]}}, {a2_, {"a", a_[1]}}, {a3_, {"a", a_[2]}}, {b2_, {"b", b2}}};
    // One sorted table and a short log: each run's copy opens the same way and starts no compaction.
    ASSERT_TRUE(store->db().CompactRange(rocksdb::CompactRangeOptions(), nullptr, nullptr).ok());
  }
  void TearDown() override { fs::remove_all(work_); }

  MatrixResult matrix(const Operation& op) {
    MatrixResult r = run_matrix(base_, work_, model_, op, rebuild_gives_the_same_store);
    EXPECT_GE(r.points, 3u) << "the operation wrote (nearly) nothing: the hooks are not in place";
    return r;
  }

  fs::path work_, base_;
  Model model_;
  std::vector<std::string> a_;
  uint64_t a1_ = 0, a2_ = 0, a3_ = 0, b2_ = 0;
};

TEST_F(FaultMatrix, BackupFull) {
  const std::string image = make_image(11);
  matrix(Operation{"backup (full)", [&](Store& s) { backup(s, "a", image); }, {}, {}, {}, Model::Rev{"a", image}});
}

TEST_F(FaultMatrix, BackupDelta) {
  const std::string image = change(a_[2], {0, 6, 7, 9}, 12);
  const std::string parent = a_[2];
  matrix(Operation{"backup (delta)", [&](Store& s) { backup(s, "a", image, &parent); }, {}, {}, {},
                   Model::Rev{"a", image}});
}

TEST_F(FaultMatrix, Forget) {
  matrix(Operation{"forget", [&](Store& s) { s.forget(a2_); }, {}, {}, {a2_}, {}});
}

// expire is a forget of every revision the policy drops (agent/retention.cc), one at a time.
TEST_F(FaultMatrix, Expire) {
  matrix(Operation{"expire", [&](Store& s) {
                     for (uint64_t id : {a1_, a2_}) s.forget(id);
                   },
                   {}, {}, {a1_, a2_}, {}});
}

TEST_F(FaultMatrix, Gc) {
  matrix(Operation{"gc", [](Store& s) { (void)store::gc(s, store::GcOptions{0.0, false}); }, {}, {}, {}, {}});
}

// A damaged chunk (one flipped byte in its pack) rewritten from a source that holds the image, as
// `repair` does with the cluster's snapshot: find the damaged chunks, rewrite each.
TEST_F(FaultMatrix, Repair) {
  const store::Hash damaged = store::sha256(std::string_view(a_[0]).substr(2 * kBs, kBs));
  std::map<store::Hash, std::string> source;
  for (const std::string& image : a_)
    for (uint64_t b = 0; b < kBlocks; ++b) {
      const std::string block = image.substr(b * kBs, kBs);
      source[store::sha256(block)] = block;
    }
  store::ChunkRecord rec;
  {
    auto store = Store::open(base_, OpenMode::kReadOnly);
    rec = *store->chunk(damaged);
  }
  auto repair = [source](Store& s) {
    for (const auto& d : s.find_damaged_chunks()) s.rewrite_chunk(d.hash, source.at(d.hash), d.entries);
  };
  auto damage = [rec](const fs::path& dir) {
    std::fstream f(dir / "data" / store::pack_file_name(rec.pack), std::ios::in | std::ios::out | std::ios::binary);
    const auto at = static_cast<std::streamoff>(rec.offset + store::kChunkHeaderSize + 7);
    f.seekg(at);
    const char byte = static_cast<char>(f.get() ^ 0x5a);
    f.seekp(at);
    f.put(byte);
  };
  matrix(Operation{"repair", repair, damage, repair, {}, {}});
}

// Point 1 of the rest of issue 12.5: rebuild-index, with its data-area reads and its new index's
// files (RocksDB's own, the directory syncs around the swap, the old index's removal) faulted.
TEST_F(FaultMatrix, RebuildIndex) {
  std::vector<std::string> before;
  {
    auto store = Store::open(base_, OpenMode::kReadOnly);
    before = records(*store);
  }
  Operation op{"rebuild-index", {}, {}, {}, {}, {}};
  op.run_closed = [](const fs::path& dir, const store::StoreIo& io) { (void)Store::rebuild_index(dir, io); };
  op.after_run = [&](const fs::path& dir, const std::string& run) {
    // The old index or the new one, never none: a writer's open would quietly create an empty one.
    if (!fs::exists(dir / "index" / "CURRENT")) {
      ADD_FAILURE() << run << ": no index after the run";
      return;
    }
    try {
      {
        auto store = Store::open(dir, OpenMode::kReadOnly);
        EXPECT_EQ(records(*store), before) << run << ": ls differs from before the rebuild";
      }
      // Re-running the rebuild succeeds (on a copy: the checks that follow look at what the run left).
      const fs::path again = dir.string() + ".again";
      fs::remove_all(again);
      fs::copy(dir, again, fs::copy_options::recursive);
      (void)Store::rebuild_index(again);
      EXPECT_FALSE(fs::exists(again / "index.rebuild")) << run << ": the re-run left index.rebuild";
      {
        auto store = Store::open(again, OpenMode::kReadOnly);
        EXPECT_EQ(records(*store), before) << run << ": ls differs after re-running the rebuild";
      }
      fs::remove_all(again);
    } catch (const std::exception& e) {
      ADD_FAILURE() << run << ": " << e.what();
    }
  };
  matrix(op);
}

// Point 3: the recovery a writer's open does, faulted at every point, on a store left by a crashed
// operation: `crashed` is a copy of the base left by `op` crashed at the first point whose trace
// starts with `at_point` (e.g. a backup's manifest commit: packs and entries written, nothing committed).
class RecoveryMatrix : public FaultMatrix {
 protected:
  fs::path crashed(const Operation& op, const std::string& at_point) {
    const fs::path dir = work_ / "crashed";
    std::vector<std::string> trace;
    fs::remove_all(dir);
    fs::copy(base_, dir, fs::copy_options::recursive);
    EXPECT_TRUE(run_faulted(dir, op, FaultMode::kCount, 0, &trace));
    uint64_t at = 0;
    for (size_t i = 0; i < trace.size() && !at; ++i)
      if (trace[i].starts_with(at_point)) at = i + 1;
    EXPECT_GT(at, 0u) << op.name << " has no point \"" << at_point << "\"";
    fs::remove_all(dir);
    fs::copy(base_, dir, fs::copy_options::recursive);
    EXPECT_FALSE(run_faulted(dir, op, FaultMode::kCrash, at, nullptr)) << op.name << " survived its crash";
    std::printf("[faults] %s crashed at point %llu (%s)\n", op.name.c_str(), static_cast<unsigned long long>(at),
                trace[at - 1].c_str());
    return dir;
  }
  static Operation recovery(const std::string& name) {
    Operation op{name, {}, {}, {}, {}, {}};
    op.run_closed = [](const fs::path& dir, const store::StoreIo& io) {
      (void)Store::open(dir, OpenMode::kWriter, "fault matrix", small_writer_options(), io);
    };
    return op;
  }
};

TEST_F(RecoveryMatrix, AfterCrashedBackup) {
  const std::string image = make_image(13);
  const fs::path dir = crashed(Operation{"backup", [&](Store& s) { backup(s, "a", image); }}, "data: commit manifests/");
  // The backup never committed: its revision must not appear (no may_add), whatever the recovery did.
  MatrixResult r = run_matrix(dir, work_, model_, recovery("recovery (crashed backup)"), rebuild_gives_the_same_store);
  EXPECT_GE(r.points, 3u) << "the recovery wrote (nearly) nothing: the crash left nothing to recover";
}

TEST_F(RecoveryMatrix, AfterCrashedForget) {
  const fs::path dir = crashed(Operation{"forget", [&](Store& s) { s.forget(a2_); }}, "data: create manifests/");
  // The forget was marked durably before its successor's new manifest: the recovery completes it,
  // so once an open has returned, a2 is gone.
  Operation op = recovery("recovery (crashed forget)");
  op.may_remove = {a2_};
  MatrixResult r = run_matrix(dir, work_, model_, op, rebuild_gives_the_same_store);
  EXPECT_GE(r.points, 3u) << "the recovery wrote (nearly) nothing: the crash left nothing to recover";
}

// Point 2: faults on the read side. Every read point (open, size, list, read_at) of a restore-style
// read of every revision (read_chunk per block, as agent/restore does) and of `scrub --deep` fails
// once with EIO; then every read_at returns one flipped bit once. The answer must be the right
// bytes, or an error of the right kind (kIO for EIO, kCorrupt or a reported damaged chunk for a
// flip): never wrong bytes, never a crash, and the store is unchanged.
class ReadMatrix : public FaultMatrix {
 protected:
  using Mode = FaultPlan::ReadMode;
  using Work = std::function<void(Store&, const std::string& run, Mode)>;

  // `work` on the base store, opened read-only through the faulty seam (the open is not faulted);
  // returns the read points counted.
  uint64_t run_reads(Mode mode, uint64_t at, const std::string& run, const Work& work) {
    FaultPlan plan;
    auto objects = std::make_shared<FaultObjectStore>(store::open_object_store(base_), plan);
    auto store = Store::open(base_, OpenMode::kReadOnly, "", {}, store::StoreIo{nullptr, objects});
    plan.arm_reads(mode, at);
    try {
      work(*store, run, mode);
    } catch (const std::exception& e) {
      ADD_FAILURE() << run << ": " << e.what();
    }
    return plan.read_points();
  }

  // Every point of `work` with EIO, every read_at with a flip; returns the points of the clean run.
  std::pair<uint64_t, uint64_t> matrix(const std::string& name, const Work& work) {
    const uint64_t points = run_reads(Mode::kCount, 0, name + " clean", work);
    for (uint64_t at = 1; at <= points; ++at) run_reads(Mode::kEio, at, name + " EIO at read " + std::to_string(at), work);
    uint64_t reads = 0;
    {
      FaultPlan plan;  // counts the read_at calls alone
      auto objects = std::make_shared<FaultObjectStore>(store::open_object_store(base_), plan);
      auto store = Store::open(base_, OpenMode::kReadOnly, "", {}, store::StoreIo{nullptr, objects});
      plan.arm_reads(Mode::kFlip, 0);
      work(*store, name + " count read_at", Mode::kCount);
      reads = plan.read_points();
    }
    for (uint64_t at = 1; at <= reads; ++at)
      run_reads(Mode::kFlip, at, name + " flip at read_at " + std::to_string(at), work);
    std::printf("[faults] %s: %llu read points (EIO at each), %llu read_at (a flipped bit at each), %llu runs\n",
                name.c_str(), static_cast<unsigned long long>(points), static_cast<unsigned long long>(reads),
                static_cast<unsigned long long>(points + reads));
    return {points, reads};
  }
};

TEST_F(ReadMatrix, RestoreAndDeepScrub) {
  std::map<fs::path, std::string> files;  // the store's files, to show that no read changed them
  auto snapshot = [&] {
    std::map<fs::path, std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(base_))
      if (e.is_regular_file() && e.path().filename() != "lock" && e.path().filename() != "readers.lock") {
        std::ifstream f(e.path(), std::ios::binary);
        out[e.path()] = std::string(std::istreambuf_iterator<char>(f), {});
      }
    return out;
  };
  files = snapshot();
  const auto restore = [&](Store& s, const std::string& run, Mode mode) {
    uint64_t errors = 0;
    for (const auto& [id, want] : model_.revisions) {
      try {
        EXPECT_TRUE(read_revision(s, *s.revision(id)) == want.bytes) << run << ": revision " << id << " reads wrong bytes";
      } catch (const store::StoreError& e) {
        ++errors;
        EXPECT_EQ(e.kind(), mode == Mode::kFlip ? store::StoreError::Kind::kCorrupt : store::StoreError::Kind::kIO)
            << run << ": revision " << id << ": " << e.what();
      }
    }
    // The fault hit a read the restore needed: it must show (a read cached from before it would not).
    if (mode == Mode::kEio || mode == Mode::kFlip) {
      EXPECT_GE(errors, 1u) << run << ": the fault went unnoticed";
    } else {
      EXPECT_EQ(errors, 0u) << run;
    }
  };
  const auto deep_scrub = [&](Store& s, const std::string& run, Mode mode) {
    try {
      const store::ScrubReport r = store::scrub(s, store::ScrubOptions{{}, {}, /*deep=*/true});
      if (mode == Mode::kFlip) {
        // The flipped read is of a chunk (header or payload): the chunk check must catch it.
        EXPECT_FALSE(r.clean()) << run << ": the flipped bit went unnoticed";
      } else {
        for (const auto& issue : r.issues)
          ADD_FAILURE() << run << ": a failed read reported as damage: revision " << issue.revision << ": "
                        << issue.problem;
      }
    } catch (const store::StoreError& e) {
      EXPECT_EQ(e.kind(), mode == Mode::kFlip ? store::StoreError::Kind::kCorrupt : store::StoreError::Kind::kIO)
          << run << ": " << e.what();
      EXPECT_NE(mode, Mode::kCount) << run << ": " << e.what();
    }
  };
  const auto [restore_points, restore_reads] = matrix("restore (every revision)", restore);
  const auto [scrub_points, scrub_reads] = matrix("scrub --deep", deep_scrub);
  EXPECT_GE(restore_reads, 4 * kBlocks / 2) << "the restore read (nearly) nothing through the seam";
  EXPECT_GE(scrub_reads, 8u) << "scrub read (nearly) nothing through the seam";
  EXPECT_TRUE(snapshot() == files) << "a read changed the store";
  // Nothing committed changed: the usual checks on a copy (they write: the next backup).
  const fs::path copy = work_ / "after-reads";
  fs::copy(base_, copy, fs::copy_options::recursive);
  check_after_run(copy, model_, Operation{"reads", {}, {}, {}, {}, {}}, "after the read faults", false,
                  rebuild_gives_the_same_store);
}

}  // namespace
}  // namespace rbdvault::faults
