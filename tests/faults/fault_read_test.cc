// The read side of the fault matrix (issue 12, point 5, part 2; docs/testing.md).
#include <gtest/gtest.h>

#include <fstream>

#include "fault_fixture.h"
#include "fault_object_store.h"
#include "store/error.h"
#include "store/open_object_store.h"
#include "store/scrub.h"

#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace rbdvault::faults {
namespace {

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

namespace rbdvault::faults {
namespace {

// rebuild-index reads the whole data area (list, open, read_at of every pack and manifest): each
// read point fails with EIO once, then each read_at returns one flipped bit once. EIO: the rebuild
// fails with kIO and keeps the old index, or (a read it did not need) gives the same `ls`; it never
// takes the failed read for damage. A flip: caught (the chunk or manifest left out and counted, so
// the command exits 5; or the rebuild fails with kCorrupt and keeps the old index) or harmless;
// never a wrong record. Either way a clean re-run gives back
// the same `ls` and every revision reads as before.
TEST_F(FaultMatrix, RebuildIndexReads) {
  using Mode = FaultPlan::ReadMode;
  std::vector<std::string> before;
  {
    auto store = Store::open(base_, OpenMode::kReadOnly);
    before = records(*store);
  }
  const fs::path dir = work_ / "rebuild-reads";
  auto one = [&](Mode mode, uint64_t at, const std::string& run) {
    fs::remove_all(dir);
    fs::copy(base_, dir, fs::copy_options::recursive);
    FaultPlan plan;
    auto objects = std::make_shared<FaultObjectStore>(store::open_object_store(dir), plan);
    plan.arm_reads(mode, at);
    bool failed = false;
    Store::RebuildStats st;
    try {
      st = Store::rebuild_index(dir, store::StoreIo{nullptr, objects});
    } catch (const store::StoreError& e) {
      // EIO: kIO. A flip: kCorrupt (a manifest's entries that no longer hash to its trailer).
      failed = true;
      EXPECT_EQ(e.kind(), mode == Mode::kFlip ? store::StoreError::Kind::kCorrupt : store::StoreError::Kind::kIO)
          << run << ": " << e.what();
      EXPECT_NE(mode, Mode::kCount) << run << ": " << e.what();
    }
    const uint64_t points = plan.read_points();
    const bool skipped = st.chunks_skipped || st.manifests_skipped;
    if (mode != Mode::kFlip) {
      EXPECT_FALSE(skipped) << run << ": a failed read was taken for damage";
    }
    try {
      if (!skipped) {
        auto store = Store::open(dir, OpenMode::kReadOnly);
        EXPECT_EQ(records(*store), before) << run << ": ls differs (" << (failed ? "old" : "new") << " index)";
      }
      if (failed || skipped) (void)Store::rebuild_index(dir);
      auto store = Store::open(dir, OpenMode::kReadOnly);
      EXPECT_EQ(records(*store), before) << run << ": ls differs after a clean re-run";
      for (const auto& [id, want] : model_.revisions)
        EXPECT_TRUE(read_revision(*store, *store->revision(id)) == want.bytes) << run << ": revision " << id;
    } catch (const std::exception& e) {
      ADD_FAILURE() << run << ": " << e.what();
    }
    return std::pair{points, skipped || (failed && mode == Mode::kFlip)};
  };
  const uint64_t points = one(Mode::kCount, 0, "rebuild-index reads clean").first;
  for (uint64_t at = 1; at <= points; ++at) one(Mode::kEio, at, "rebuild-index EIO at read " + std::to_string(at));
  uint64_t reads = 0, caught = 0;  // caught: left out and counted, or the rebuild failed kCorrupt
  {
    fs::remove_all(dir);
    fs::copy(base_, dir, fs::copy_options::recursive);
    FaultPlan plan;  // counts the read_at calls alone
    auto objects = std::make_shared<FaultObjectStore>(store::open_object_store(dir), plan);
    plan.arm_reads(Mode::kFlip, 0);
    (void)Store::rebuild_index(dir, store::StoreIo{nullptr, objects});
    reads = plan.read_points();
  }
  for (uint64_t at = 1; at <= reads; ++at) caught += one(Mode::kFlip, at, "rebuild-index flip at read_at " + std::to_string(at)).second;
  EXPECT_GE(points, 8u) << "the rebuild read (nearly) nothing through the seam";
  EXPECT_GE(caught, 1u) << "no flipped bit was ever caught";
  fs::remove_all(dir);
  std::printf("[faults] rebuild-index (reads): %llu read points (EIO at each), %llu read_at (a flipped bit at each: "
              "%llu caught and left out, the rest harmless), %llu runs\n",
              static_cast<unsigned long long>(points), static_cast<unsigned long long>(reads),
              static_cast<unsigned long long>(caught), static_cast<unsigned long long>(points + reads));
}

}  // namespace
}  // namespace rbdvault::faults
