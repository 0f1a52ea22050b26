// The restore's ordered, coalescing writer: whatever order the workers finish in, the sink sees the
// blocks in the order they were added, adjacent ones combined, and a failed block stops the writes.
#include "agent/ordered_writer.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "store/error.h"

namespace rbdvault::agent {
namespace {

constexpr uint32_t kBs = 16;

std::string content(uint64_t block) { return std::string(kBs, static_cast<char>('a' + block % 26)); }

struct Write {
  uint64_t offset;
  std::string data;
  bool operator==(const Write& o) const { return offset == o.offset && data == o.data; }
};

// The expected writes: runs of consecutive blocks, at most `per_write` blocks each.
std::vector<Write> runs_of(const std::vector<uint64_t>& blocks, size_t per_write, uint64_t size) {
  std::vector<Write> out;
  for (size_t i = 0; i < blocks.size(); ++i) {
    const uint64_t b = blocks[i];
    std::string piece = content(b).substr(0, std::min<uint64_t>(kBs, size - b * kBs));
    if (!out.empty() && i > 0 && blocks[i - 1] + 1 == b && out.back().data.size() / kBs < per_write &&
        out.back().data.size() % kBs == 0) {
      out.back().data += piece;
    } else {
      out.push_back({b * kBs, piece});
    }
  }
  return out;
}

class OrderedWriterTest : public ::testing::Test {
 protected:
  OrderedWriterOptions options(size_t workers, size_t per_write, uint64_t size) {
    OrderedWriterOptions o;
    o.block_size = kBs;
    o.size = size;
    o.workers = workers;
    o.max_write_bytes = per_write * kBs;
    o.window_bytes = 0;  // the smallest window: two writes' worth
    return o;
  }
  OrderedWriter::Sink recording_sink() {
    return [this](uint64_t offset, const std::vector<std::string_view>& pieces, uint64_t bytes) {
      std::string data;
      for (auto p : pieces) data += p;
      EXPECT_EQ(data.size(), bytes);
      writes_.push_back({offset, data});
    };
  }
  std::vector<Write> writes_;
};

TEST_F(OrderedWriterTest, LaterBlocksFinishingFirstAreStillWrittenInOrderAndCoalesced) {
  // Block 0's decode waits until every other block has been decoded: the workers finish in
  // reverse order of the first block, and the sink must still see 0 first.
  const std::vector<uint64_t> blocks{0, 1, 2, 3, 5, 6, 9, 10, 11, 12, 13};
  std::mutex mu;
  std::condition_variable cv;
  size_t others_done = 0;
  auto decode = [&](uint64_t block, const store::Hash&) {
    std::unique_lock<std::mutex> lock(mu);
    if (block == 0) {
      cv.wait(lock, [&] { return others_done == blocks.size() - 1; });
    } else {
      ++others_done;
      cv.notify_all();
    }
    return content(block);
  };
  const uint64_t size = 13 * kBs + 5;  // the last block is cut to the size
  // A window of 2 x 16 blocks holds all 11, so every other block is decoded before block 0.
  OrderedWriter w(options(3, 16, size), decode, recording_sink());
  for (uint64_t b : blocks) w.add(b, store::Hash{});
  w.finish();
  EXPECT_EQ(writes_, runs_of(blocks, 16, size));
  ASSERT_EQ(writes_.size(), 3u);  // {0-3}, {5-6}, {9-13}
}

TEST_F(OrderedWriterTest, WritesNeverExceedTheirLimitAndTheWindowIsBounded) {
  std::vector<uint64_t> blocks;
  for (uint64_t b = 0; b < 200; ++b)
    if (b % 5 != 0) blocks.push_back(b);
  auto decode = [](uint64_t block, const store::Hash&) { return content(block); };
  OrderedWriter w(options(2, 3, 200 * kBs), decode, recording_sink());
  for (uint64_t b : blocks) w.add(b, store::Hash{});
  w.finish();
  EXPECT_EQ(writes_, runs_of(blocks, 3, 200 * kBs));
  for (auto& wr : writes_) EXPECT_LE(wr.data.size(), 3 * kBs);
  EXPECT_EQ(w.window_blocks(), 6u);  // two writes of three blocks
  EXPECT_LE(w.peak_window(), w.window_blocks());
}

TEST_F(OrderedWriterTest, AFailedBlockFailsAndNothingFromItOnIsWritten) {
  auto decode = [](uint64_t block, const store::Hash&) {
    if (block == 40) throw store::StoreError(store::StoreError::Kind::kCorrupt, "chunk fails its SHA-256");
    return content(block);
  };
  OrderedWriter w(options(2, 4, 100 * kBs), decode, recording_sink());
  try {
    for (uint64_t b = 0; b < 100; ++b) w.add(b, store::Hash{});
    w.finish();
    FAIL() << "a failed block did not fail the writer";
  } catch (const store::StoreError& e) {
    EXPECT_EQ(e.kind(), store::StoreError::Kind::kCorrupt);
  }
  uint64_t end = 0;
  for (auto& wr : writes_) end = std::max<uint64_t>(end, wr.offset + wr.data.size());
  EXPECT_LE(end, 40 * kBs);
}

// A block that decodes to more or fewer bytes than a block (a damaged or foreign chunk) fails the
// restore; it must never shift the blocks after it in its run. (Found in review.)
TEST_F(OrderedWriterTest, ABlockOfTheWrongLengthFailsInsteadOfShiftingTheNext) {
  for (const size_t wrong : {size_t{kBs - 3}, size_t{kBs + 3}}) {
    writes_.clear();
    auto decode = [wrong](uint64_t block, const store::Hash&) {
      return block == 1 ? std::string(wrong, 'x') : content(block);
    };
    OrderedWriter w(options(1, 4, 4 * kBs), decode, recording_sink());
    try {
      for (uint64_t b = 0; b < 4; ++b) w.add(b, store::Hash{});
      w.finish();
      ADD_FAILURE() << "a block of " << wrong << " bytes was written";
    } catch (const store::StoreError& e) {
      EXPECT_EQ(e.kind(), store::StoreError::Kind::kCorrupt);
    }
    for (auto& wr : writes_) EXPECT_LE(wr.offset + wr.data.size(), kBs) << "written from the bad block on";
  }
}

TEST_F(OrderedWriterTest, AFailingSinkStopsTheWriter) {
  auto decode = [](uint64_t block, const store::Hash&) { return content(block); };
  int calls = 0;
  auto sink = [&](uint64_t, const std::vector<std::string_view>&, uint64_t) {
    if (++calls == 2) throw std::runtime_error("disk full");
  };
  OrderedWriter w(options(2, 2, 100 * kBs), decode, sink);
  EXPECT_THROW(
      {
        for (uint64_t b = 0; b < 100; ++b) w.add(b, store::Hash{});
        w.finish();
      },
      std::runtime_error);
  EXPECT_EQ(calls, 2);
}

}  // namespace
}  // namespace rbdvault::agent
