// The store every fault-matrix test starts from (tests/faults/fault_matrix_test.cc,
// fault_read_test.cc): images a (a full revision and two deltas) and b (its first revision
// forgotten, which leaves unreferenced chunks for gc), and the checks they share.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <rocksdb/db.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <random>

#include "fault_harness.h"
#include "store/index.h"
#include "store/format.h"

namespace rbdvault::faults {

using store::OpenMode;
using store::Store;

inline constexpr uint64_t kBlocks = 10;

// Half random (incompressible), half repetitive; some zero blocks; `seed` varies the content.
inline std::string make_image(uint32_t seed) {
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
inline std::string change(std::string image, std::initializer_list<uint64_t> blocks, uint32_t seed) {
  std::mt19937 rng(seed);
  for (uint64_t b : blocks)
    for (uint32_t i = 0; i < kBs; ++i) image[b * kBs + i] = static_cast<char>(rng());
  return image;
}

// `image` with one 4 KiB page of each of `blocks` given new content: stored as patch chunks of
// the parent's (docs/format.md §4.2).
inline std::string touch(std::string image, std::initializer_list<uint64_t> blocks, uint32_t seed) {
  std::mt19937 rng(seed);
  for (uint64_t b : blocks)
    for (uint32_t i = 0; i < 4096; ++i) image[b * kBs + 8192 + i] = static_cast<char>(rng());
  return image;
}

// Issue 12, point 5: after every run, a rebuild from the data area alone (a copy without index/)
// must describe the same revisions, record for record (ids, images, sizes, parents, kinds, digests,
// flags, group), each reading the same bytes.
inline void rebuild_gives_the_same_store(Store& store, const fs::path& dir) {
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
inline std::vector<std::string> records(Store& store) {
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
    // b1's packs stay half live; b2 patches b1's blocks 0 and 2 (patches whose bases only they
    // keep once b1 is forgotten) and rewrites block 5 whole.
    const std::string b1 = make_image(7), b2 = change(touch(b1, {0, 2}, 9), {5}, 10);
    const uint64_t b1_id = backup(*store, "b", b1);
    b2_ = backup(*store, "b", b2, &b1);
    store->forget(b1_id);
    model_.revisions = {{a1_, {"a", a_[0]}}, {a2_, {"a", a_[1]}}, {a3_, {"a", a_[2]}}, {b2_, {"b", b2}}};
    // One sorted table and a short log: each run's copy opens the same way and starts no compaction.
    ASSERT_TRUE(store->index().db_for_tests().CompactRange(rocksdb::CompactRangeOptions(), nullptr, nullptr).ok());
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


}  // namespace rbdvault::faults
