// A fresh store in a temporary directory, with helpers to write and read revisions of in-memory
// images. Shared by the store's unit tests.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <set>
#include <string>

#include "store/format.h"
#include "store/pack.h"
#include "store/revision_writer.h"
#include "store/store.h"

namespace rbdvault::store::testing {

namespace fs = std::filesystem;

constexpr uint32_t kBs = 64 * 1024;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("rbdvault-store-test-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    Store::init(dir_, StoreOptions{kBs});
    store_ = Store::open(dir_, OpenMode::kWriter, "unit test");
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }

  // Stores `image` as a new revision. With `changed` set, only those blocks are written on top of the
  // parent (a diff); otherwise every block is (a full read).
  RevisionRecord put(const std::string& name, const std::string& image, const std::set<uint64_t>* changed = nullptr) {
    auto w = store_->begin_revision(RevisionStart{"rbd", name, image.size(), changed == nullptr});
    const uint64_t nblocks = store_->blocks_for(image.size());
    for (uint64_t b = 0; b < nblocks; ++b) {
      if (changed && !changed->count(b)) continue;
      w->put_block(b, std::string_view(image).substr(b * kBs, kBs));
    }
    RevisionInfo info;
    info.ceph_image_id = "id-" + name;
    info.snap_name = "snap";
    info.kind = changed ? RevisionKind::kDelta : RevisionKind::kFull;
    return w->commit(info);
  }

  // Writes the blocks of `image` that differ from the newest revision of `name` as a backup does
  // (agent/block_pipeline.cc): each completed from the parent's chunk and diffed against its root.
  RevisionRecord put_changes(const std::string& name, const std::string& image, uint64_t* patches = nullptr) {
    const auto img = store_->find_image("rbd", name);
    const auto parent = store_->latest_revision(img->key);
    auto w = store_->begin_revision(RevisionStart{"rbd", name, image.size(), false});
    for (uint64_t b = 0; b < store_->blocks_for(image.size()); ++b) {
      const std::string data = image.substr(b * kBs, kBs);
      const auto h = store_->block_content(img->key, b, parent->id);
      if (h && sha256(data) == *h) continue;
      if (h) {
        w->put_prepared(b, prepare_block_over(*store_, std::string(data), store_->read_chunk_and_root(*h)));
      } else {
        w->put_block(b, data);
      }
    }
    RevisionInfo info;
    info.ceph_image_id = "id-" + name;
    info.snap_name = "snap";
    info.kind = RevisionKind::kDelta;
    if (patches) *patches = w->patch_chunks();
    return w->commit(info);
  }

  std::string read(const RevisionRecord& rev) {
    std::string out(rev.size, '\0');
    store_->for_each_data_block(rev, [&](uint64_t block, const Hash& h) {
      std::string data = store_->read_chunk(h);
      const uint64_t off = block * kBs;
      out.replace(off, std::min<uint64_t>(kBs, rev.size - off),
                  data.substr(0, std::min<uint64_t>(kBs, rev.size - off)));
    });
    return out;
  }

  // The blocks whose zero-padded content differs between two images: an exact diff computed from
  // the images alone, independent of how a backup finds changed blocks (and of its resize edges).
  std::set<uint64_t> content_diff(const std::string& before, const std::string& after) {
    auto block = [](const std::string& img, uint64_t b) {
      std::string out(kBs, '\0');
      if (b * kBs < img.size()) out.replace(0, std::min<uint64_t>(kBs, img.size() - b * kBs), img, b * kBs, kBs);
      return out;
    };
    std::set<uint64_t> changed;
    for (uint64_t b = 0; b < store_->blocks_for(after.size()); ++b)
      if (block(before, b) != block(after, b)) changed.insert(b);
    return changed;
  }

  // Flips one byte of chunk h's stored payload in its pack file (at `pos`, default its middle): the
  // pack still parses, only the chunk's check notices.
  void flip_payload_byte(const Hash& h, std::optional<uint64_t> pos = std::nullopt) {
    const auto rec = store_->chunk(h);
    ASSERT_TRUE(rec.has_value());
    std::fstream pack(dir_ / "data" / pack_file_name(rec->pack), std::ios::in | std::ios::out | std::ios::binary);
    const auto at = static_cast<std::streamoff>(rec->offset + kChunkHeaderSize + pos.value_or(rec->stored_len / 2));
    pack.seekg(at);
    char c = 0;
    pack.get(c);
    pack.seekp(at);
    pack.put(static_cast<char>(c ^ 0x40));
    ASSERT_TRUE(pack.good());
  }

  static std::string random_bytes(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(rng());
    return s;
  }

  fs::path dir_;
  std::unique_ptr<Store> store_;
};

}  // namespace rbdvault::store::testing
