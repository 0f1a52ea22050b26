// The fault-injection matrix of issue 12, point 5, one test per operation (tests/faults/fault_harness.h).
#include <gtest/gtest.h>
#include <unistd.h>

#include <rocksdb/db.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <fstream>
#include <random>

#include "fault_fs.h"
#include "fault_fixture.h"
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

// A delta of partly changed blocks: patch chunks, each with its base reference (§4.2).
TEST_F(FaultMatrix, BackupDeltaPatches) {
  const std::string image = touch(a_[2], {0, 2, 6}, 14);
  const std::string parent = a_[2];
  matrix(Operation{"backup (delta, patches)", [&](Store& s) { backup(s, "a", image, &parent); }, {}, {}, {},
                   Model::Rev{"a", image}});
}

// The patches of b2 outlive b1 (forgotten): a new full revision of b, then forgetting b2 and gc
// release them and, in the same writes, their bases' references; the bases go in the same run.
TEST_F(FaultMatrix, ForgetPatchesThenGc) {
  const std::string b3 = make_image(15);
  matrix(Operation{"backup b3, forget b2, gc", [&](Store& s) {
                     backup(s, "b", b3);
                     s.forget(b2_);
                     (void)store::gc(s, store::GcOptions{0.0, false});
                   },
                   {}, {}, {b2_}, Model::Rev{"b", b3}});
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
    // The old index or the new one, never none.
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

}  // namespace
}  // namespace rbdvault::faults
