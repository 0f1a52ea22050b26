#include "fault_harness.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fault_fs.h"
#include "fault_object_store.h"
#include "fault_plan.h"
#include "store/index.h"
#include "store/format.h"
#include "store/open_object_store.h"
#include "store/scrub.h"

namespace rbdvault::faults {

using store::OpenMode;
using store::RevisionRecord;
using store::Store;
using store::StoreError;

store::WriterOptions small_writer_options() {
  store::WriterOptions o;
  o.pack_target_bytes = 3 * kBs;
  o.flush_entries = 4;
  return o;
}

uint64_t backup(Store& store, const std::string& image, const std::string& bytes, const std::string* parent) {
  // The parent revision's chunks, so that a partly changed block is stored as a patch of its
  // root as a backup stores it (agent/block_pipeline.cc, docs/format.md §4.2).
  const auto img = parent ? store.find_image("rbd", image) : std::nullopt;
  const auto prev = img ? store.latest_revision(img->key) : std::nullopt;
  auto w = store.begin_revision(store::RevisionStart{"rbd", image, bytes.size(), parent == nullptr});
  const uint64_t blocks = store.blocks_for(bytes.size());
  for (uint64_t b = 0; b < blocks; ++b) {
    const std::string_view data = std::string_view(bytes).substr(b * kBs, kBs);
    if (parent && b * kBs < parent->size() && std::string_view(*parent).substr(b * kBs, kBs) == data) continue;
    const auto was = prev ? store.block_content(img->key, b, prev->id) : std::nullopt;
    if (was && data.size() == kBs) {
      w->put_prepared(b, store::prepare_block_over(store, std::string(data), store.read_chunk_and_root(*was)));
    } else {
      w->put_block(b, data);
    }
  }
  store::RevisionInfo info;
  info.kind = parent ? store::RevisionKind::kDelta : store::RevisionKind::kFull;
  return w->commit(info).id;
}

std::string read_revision(Store& store, const RevisionRecord& rev) {
  std::string out(rev.size, '\0');
  store.for_each_data_block(rev, [&](uint64_t block, const store::Hash& h) {
    const std::string data = store.read_chunk(h);
    const uint64_t off = block * kBs;
    const uint64_t n = std::min<uint64_t>(kBs, rev.size - off);
    std::memcpy(out.data() + off, data.data(), n);
  });
  return out;
}

void check_after_run(const fs::path& dir, const Model& model, const Operation& op, const std::string& run,
                     bool succeeded, const ExtraCheck& extra) {
  std::unique_ptr<Store> store;
  try {
    store = Store::open(dir, OpenMode::kWriter, "fault matrix check", small_writer_options());
  } catch (const std::exception& e) {
    ADD_FAILURE() << run << ": the store does not open after the run: " << e.what();
    return;
  }
  try {
    if (op.settle) op.settle(*store);
    std::set<uint64_t> seen;
    bool added = false;
    for (const RevisionRecord& rev : store->revisions()) {
      seen.insert(rev.id);
      auto it = model.revisions.find(rev.id);
      const Model::Rev* want = it != model.revisions.end() ? &it->second : nullptr;
      if (!want && op.may_add && !added && rev.pool + "/" + rev.name == "rbd/" + op.may_add->image) {
        want = &*op.may_add;
        added = true;
      }
      if (!want) {
        ADD_FAILURE() << run << ": revision " << rev.id << " (" << rev.name << ") appeared from nowhere";
        continue;
      }
      EXPECT_TRUE(read_revision(*store, rev) == want->bytes) << run << ": revision " << rev.id << " reads wrong";
    }
    for (auto& [id, rev] : model.revisions)
      if (!seen.count(id) && !op.may_remove.count(id)) ADD_FAILURE() << run << ": committed revision " << id << " is lost";
    if (succeeded && op.effect_on_success) {
      if (op.may_add && !added) ADD_FAILURE() << run << ": the operation returned but its revision is not there";
      for (uint64_t id : op.may_remove)
        if (seen.count(id)) ADD_FAILURE() << run << ": the operation returned but revision " << id << " is still there";
    }
    // Recovery ran at the open: no pending mark is left, and every block-map entry belongs to a
    // revision that exists (scrub does not see orphan entries: they hold consistent references).
    {
      std::unique_ptr<rocksdb::Iterator> it(store->index().db_for_tests().NewIterator(rocksdb::ReadOptions()));
      uint64_t orphans = 0, marks = 0;
      for (it->Seek(std::string(1, store::kKeyBlock)); it->Valid() && it->key()[0] == store::kKeyBlock; it->Next()) {
        const auto key = store::parse_block_key(it->key().ToStringView());
        if (!key || !seen.count(key->rev)) ++orphans;
      }
      for (it->Seek(std::string(1, store::kKeyPending)); it->Valid() && it->key()[0] == store::kKeyPending; it->Next())
        ++marks;
      EXPECT_EQ(orphans, 0u) << run << ": block-map entries of revisions that do not exist";
      EXPECT_EQ(marks, 0u) << run << ": pending marks left after recovery";
    }
    const store::ScrubReport report = store::scrub(*store, store::ScrubOptions{{}, {}, /*deep=*/true});
    for (auto& issue : report.issues)
      ADD_FAILURE() << run << ": scrub: revision " << issue.revision << ": " << issue.problem;
    // fault_matrix_test.cc passes the rebuild check: the data area alone gives the same revisions.
    if (extra) extra(*store, dir);
    // The next operation still works: another backup of image a, read back.
    const auto latest = store->latest_revision(store->find_image("rbd", "a")->key);
    std::string next = read_revision(*store, *latest);
    next.replace(0, 5, "next!");
    const uint64_t id = backup(*store, "a", next, nullptr);
    EXPECT_TRUE(read_revision(*store, *store->revision(id)) == next) << run << ": the next backup reads wrong";
  } catch (const std::exception& e) {
    ADD_FAILURE() << run << ": " << e.what();
  }
}

namespace {

// One run of `op` on a fresh copy of `base` with `mode` at point `at` (a crash at a point past the
// last one: just after the operation returned); returns the points counted.
uint64_t one_run(const fs::path& base, const fs::path& dir, const Model& model, const Operation& op, FaultMode mode,
                 uint64_t at, const ExtraCheck& extra, std::vector<std::string>* trace) {
  fs::remove_all(dir);
  fs::copy(base, dir, fs::copy_options::recursive);
  if (op.prepare) op.prepare(dir);
  const std::string run = op.name + " " + mode_name(mode) + " at point " + std::to_string(at);
  std::vector<std::string> points;
  const bool succeeded = run_faulted(dir, op, mode, at, &points);
  if (mode == FaultMode::kCount && !succeeded) ADD_FAILURE() << op.name << " fails without faults";
  if (trace) *trace = points;
  if (op.after_run) op.after_run(dir, run);
  check_after_run(dir, model, op, run, succeeded, extra);
  return points.size();
}

}  // namespace

namespace {

// What an operator sees is the error's kind (its exit code): an injected ENOSPC must read as a full
// disk (exit 7, "free space"), an injected EIO as an I/O error (exit 1, "a retry may help"), never
// as damage or an internal error.
void expect_kind_of_fault(const std::string& op, FaultMode mode, uint64_t at, const std::exception& e) {
  if (mode != FaultMode::kNoSpace && mode != FaultMode::kEio) return;
  const auto* se = dynamic_cast<const StoreError*>(&e);
  const StoreError::Kind want = mode == FaultMode::kNoSpace ? StoreError::Kind::kNoSpace : StoreError::Kind::kIO;
  if (!se || se->kind() != want)
    ADD_FAILURE() << op << ": " << mode_name(mode) << " at point " << at << " reported as "
                  << (se ? "kind " + std::to_string(static_cast<int>(se->kind())) : std::string("a non-store error"))
                  << ": " << e.what();
}

}  // namespace

bool run_faulted(const fs::path& dir, const Operation& op, FaultMode mode, uint64_t at,
                 std::vector<std::string>* trace) {
  FaultPlan plan;
  auto index_fs = std::make_shared<FaultFs>(plan);
  auto objects = std::make_shared<FaultObjectStore>(store::open_object_store(dir), plan);
  bool succeeded = false;
  if (op.run_closed) {
    plan.arm(mode, at);
    try {
      op.run_closed(dir, store::StoreIo{index_fs, objects});
      succeeded = true;
    } catch (const std::exception& e) {
      if (mode == FaultMode::kCount) ADD_FAILURE() << op.name << ": " << e.what();
      expect_kind_of_fault(op.name, mode, at, e);
    }
  } else {
    std::unique_ptr<Store> store =
        Store::open(dir, OpenMode::kWriter, "fault matrix", small_writer_options(), store::StoreIo{index_fs, objects});
    plan.arm(mode, at);
    try {
      op.run(*store);
      succeeded = true;
    } catch (const std::exception& e) {
      if (mode == FaultMode::kCount) ADD_FAILURE() << op.name << ": " << e.what();
      expect_kind_of_fault(op.name, mode, at, e);
    }
    if (mode == FaultMode::kCrash && !plan.dead()) plan.crash_now();
    plan.disarm();
  }
  if (mode == FaultMode::kCrash && !plan.dead()) plan.crash_now();
  plan.disarm();
  if (trace) *trace = plan.trace();
  if (plan.dead()) index_fs->drop_unsynced();
  return succeeded;
}

namespace {
}  // namespace

MatrixResult run_matrix(const fs::path& base, const fs::path& work, const Model& model, const Operation& op,
                        const ExtraCheck& extra) {
  MatrixResult result;
  const fs::path dir = work / "run";
  std::vector<std::string> clean;
  one_run(base, dir, model, op, FaultMode::kCount, 0, extra, &clean);
  result.points = clean.size();
  for (uint64_t at = 1; at <= result.points; ++at) {
    for (FaultMode mode : {FaultMode::kEio, FaultMode::kNoSpace, FaultMode::kCrash}) {
      std::vector<std::string> trace;
      one_run(base, dir, model, op, mode, at, extra, &trace);
      ++result.runs;
      // The runs must be deterministic up to the fault, or "point i" would mean different things.
      for (size_t i = 0; i + 1 < at && i < trace.size(); ++i)
        if (trace[i] != clean[i]) {
          ADD_FAILURE() << op.name << ": point " << i + 1 << " is \"" << trace[i] << "\" here but \"" << clean[i]
                        << "\" in the clean run";
          break;
        }
      if (::testing::Test::HasFatalFailure()) return result;
    }
  }
  one_run(base, dir, model, op, FaultMode::kCrash, result.points + 1, extra, nullptr);
  ++result.runs;
  fs::remove_all(dir);
  uint64_t data = 0;
  for (const std::string& p : clean) data += p.starts_with("data: ");
  std::printf("[faults] %s: %llu points (%llu seam, %llu index), %llu runs (EIO, ENOSPC, crash at each; crash after)\n",
              op.name.c_str(), static_cast<unsigned long long>(result.points), static_cast<unsigned long long>(data),
              static_cast<unsigned long long>(result.points - data), static_cast<unsigned long long>(result.runs));
  if (std::getenv("RBDVAULT_FAULT_TRACE"))
    for (size_t i = 0; i < clean.size(); ++i) std::printf("  %zu %s\n", i + 1, clean[i].c_str());
  return result;
}

}  // namespace rbdvault::faults
