// Issue 11, point 3: every length, size or count read from disk is checked before use. Each test
// feeds the input that crashed, over-read or allocated gigabytes before the check (found by the
// fuzzers in tests/fuzz or by review) and expects one clear error instead.
#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "agent/batch_config.h"
#include "store/index.h"
#include "store/chunk_codec.h"
#include "store/gc.h"
#include "store/oplog.h"
#include "store/pack.h"
#include "store/rados_fence.h"
#include "store/scrub.h"
#include "store_fixture.h"

namespace rbdvault::store::testing {
namespace {

StoreError::Kind kind_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const StoreError& e) {
    return e.kind();
  }
  ADD_FAILURE() << "no StoreError";
  return StoreError::Kind::kIO;
}

ChunkRecord valid_chunk() { return ChunkRecord{1, kPackHeaderSize, 1000, kBs, kChunkZstd, 1}; }

void put_le32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
}

std::string chunk_header(uint8_t flags, uint32_t raw_len, uint32_t stored_len, const Hash& h) {
  std::string s(kChunkMagic);
  s.push_back(static_cast<char>(flags));
  s.append(3, '\0');
  put_le32(s, raw_len);
  put_le32(s, stored_len);
  s.append(as_view(h));
  return s;
}

std::string pack_header(uint32_t id) {
  std::string s(kPackMagic);
  put_le32(s, id);
  put_le32(s, 0);
  return s;
}

TEST(DecoderBounds, ChunkRecordLengthsFlagsAndOffset) {
  EXPECT_NO_THROW((void)decode_chunk_record(encode(valid_chunk())));
  auto bad = [](auto change) {
    ChunkRecord c = valid_chunk();
    change(c);
    return kind_of([&] { (void)decode_chunk_record(encode(c)); });
  };
  // stored_len 0xfffffff0 made PackReader::read allocate 4 GiB before looking at the file.
  EXPECT_EQ(bad([](ChunkRecord& c) { c.stored_len = 0xfffffff0u; }), StoreError::Kind::kCorrupt);
  EXPECT_EQ(bad([](ChunkRecord& c) { c.stored_len = static_cast<uint32_t>(max_stored_len(kBs) + 1); }),
            StoreError::Kind::kCorrupt);
  EXPECT_EQ(bad([](ChunkRecord& c) { c.raw_len = 8u << 20; }), StoreError::Kind::kCorrupt);
  EXPECT_EQ(bad([](ChunkRecord& c) { c.flags = 7; }), StoreError::Kind::kCorrupt);
  EXPECT_EQ(bad([](ChunkRecord& c) { c.flags = kChunkRaw; }), StoreError::Kind::kCorrupt);  // raw: stored == raw
  EXPECT_EQ(bad([](ChunkRecord& c) { c.offset = 0; }), StoreError::Kind::kCorrupt);
  EXPECT_EQ(bad([](ChunkRecord& c) { c.offset = ~uint64_t{0}; }), StoreError::Kind::kCorrupt);
}

TEST(DecoderBounds, RevisionAndPackRecordFields) {
  RevisionRecord r;
  r.block_size = kBs;
  r.order = 22;
  EXPECT_NO_THROW((void)decode_revision(encode(r)));
  auto bad = [&](auto change) {
    RevisionRecord c = r;
    change(c);
    return kind_of([&] { (void)decode_revision(encode(c)); });
  };
  EXPECT_EQ(bad([](RevisionRecord& c) { c.block_size = 3; }), StoreError::Kind::kCorrupt);
  EXPECT_EQ(bad([](RevisionRecord& c) { c.block_size = 0; }), StoreError::Kind::kCorrupt);
  EXPECT_EQ(bad([](RevisionRecord& c) { c.order = 200; }), StoreError::Kind::kCorrupt);
  EXPECT_EQ(bad([](RevisionRecord& c) { c.kind = static_cast<RevisionKind>(9); }), StoreError::Kind::kCorrupt);
  // blocks_for(size) wrapped around for sizes near 2^64.
  EXPECT_EQ(bad([](RevisionRecord& c) { c.size = ~uint64_t{0}; }), StoreError::Kind::kCorrupt);
  // Group fields: name 1..kMaxGroupName bytes, a run id, a gap of at most an hour.
  auto grouped = [](RevisionRecord& c) {
    c.flags = kRevisionGroup;
    c.group = "g";
    c.group_run = 1;
  };
  {
    RevisionRecord c = r;
    grouped(c);
    EXPECT_NO_THROW((void)decode_revision(encode(c)));
  }
  EXPECT_EQ(bad([&](RevisionRecord& c) { grouped(c), c.group.clear(); }), StoreError::Kind::kCorrupt);
  EXPECT_EQ(bad([&](RevisionRecord& c) { grouped(c), c.group.assign(kMaxGroupName + 1, 'g'); }),
            StoreError::Kind::kCorrupt);
  EXPECT_EQ(bad([&](RevisionRecord& c) { grouped(c), c.group_run = 0; }), StoreError::Kind::kCorrupt);
  EXPECT_EQ(bad([&](RevisionRecord& c) { grouped(c), c.group_gap_us = kMaxGroupGapUs + 1; }),
            StoreError::Kind::kCorrupt);
  {
    RevisionRecord c = r;
    grouped(c);
    std::string v = encode(c);
    v.pop_back();  // cut inside the gap
    EXPECT_EQ(kind_of([&] { (void)decode_revision(v); }), StoreError::Kind::kCorrupt);
  }

  EXPECT_NO_THROW((void)decode_pack(encode(PackRecord{kPackHeaderSize, 0})));
  EXPECT_EQ(kind_of([] { (void)decode_pack(encode(PackRecord{0, 0})); }), StoreError::Kind::kCorrupt);
  EXPECT_EQ(kind_of([] { (void)decode_pack(encode(PackRecord{1000, 1000})); }), StoreError::Kind::kCorrupt);
  // A string length of 4 GiB in a short value: rejected, never allocated.
  std::string image = encode(ImageRecord{1, "rbd", "x"});
  image.replace(9, 4, std::string(4, '\xff'));
  EXPECT_EQ(kind_of([&] { (void)decode_image(image); }), StoreError::Kind::kCorrupt);
}

TEST(DecoderBounds, ChunkKeysHaveTheirExactLength) {
  const Hash h = sha256("x");
  EXPECT_EQ(parse_chunk_key(chunk_key(h)), h);
  EXPECT_FALSE(parse_chunk_key("Cshort"));
  EXPECT_FALSE(parse_chunk_key(chunk_key(h) + "x"));
  EXPECT_EQ(kind_of([] { (void)chunk_hash_of_key("C"); }), StoreError::Kind::kCorrupt);
}

TEST(DecoderBounds, ChunkHeaderAndPayload) {
  const std::string raw(kBs, 'a');
  const Hash h = sha256(raw);
  EXPECT_EQ(parse_chunk_header(chunk_header(kChunkRaw, kBs, kBs, h)).raw_len, kBs);
  for (const std::string& bad :
       {chunk_header(kChunkZstd, kBs, 0xffffffffu, h), chunk_header(kChunkZstd, 0xffffffffu, 100, h),
        chunk_header(kChunkRaw, kBs, kBs - 1, h), chunk_header(5, kBs, kBs, h), chunk_header(0, 0, 0, h).substr(0, 47)})
    EXPECT_EQ(kind_of([&] { (void)parse_chunk_header(bad); }), StoreError::Kind::kCorrupt);
  std::string padded = chunk_header(kChunkRaw, kBs, kBs, h);
  padded[6] = 1;
  EXPECT_EQ(kind_of([&] { (void)parse_chunk_header(padded); }), StoreError::Kind::kCorrupt);
  // raw_len above 4 MiB is refused before decode_chunk allocates it.
  EXPECT_EQ(kind_of([] { (void)decode_chunk(kChunkZstd, "xx", 0xffffffffu); }), StoreError::Kind::kCorrupt);
}

TEST(DecoderBounds, PackScanStopsAtAnImpossibleLength) {
  const Hash h = sha256("x");
  // Before scan_pack, repair's pack walk allocated stored_len (4 GiB here) from the header alone.
  const std::string pack = pack_header(1) + chunk_header(kChunkZstd, kBs, 0xfffffff0u, h) + "payload";
  const ReadAt read = [&](uint64_t off, char* buf, size_t n) { return pack.copy(buf, n, off) == n; };
  int visited = 0;
  auto visit = [&](uint64_t, const ChunkHeader&) { return ++visited, true; };
  EXPECT_EQ(kind_of([&] { scan_pack(pack.size(), read, 1, visit); }), StoreError::Kind::kCorrupt);
  EXPECT_EQ(visited, 0);
  // A header whose payload runs past the end of the file.
  const std::string truncated = pack_header(1) + chunk_header(kChunkRaw, 100, 100, h) + "short";
  const ReadAt read2 = [&](uint64_t off, char* buf, size_t n) { return truncated.copy(buf, n, off) == n; };
  EXPECT_EQ(kind_of([&] { scan_pack(truncated.size(), read2, 1, visit); }), StoreError::Kind::kCorrupt);
  EXPECT_EQ(kind_of([&] { scan_pack(pack.size(), read, 2, visit); }), StoreError::Kind::kCorrupt);  // wrong id
}

TEST(DecoderBounds, OplogBadEscapesAndHugeLines) {
  // "%zz" made std::stoi throw std::invalid_argument out of OpLog::read (found by fuzz_oplog).
  std::istringstream in(
      "start id=1 time=5 op=backup args=a%zz%4%41%-1%\n"
      "end id=1 time=%zz result=ok bytes=99999999999999999999999 error=\n"
      "start id=2 time=6 op=gc args=" +
      std::string(kMaxOpLogLine + 10, 'x') + "\nstart id=3 time=7 op=gc args=b\n");
  size_t skipped = 0;
  std::vector<OpRecord> ops;
  ASSERT_NO_THROW(ops = parse_oplog(in, &skipped));
  ASSERT_EQ(ops.size(), 2u);
  EXPECT_EQ(ops[0].args, "a%zz%4A%-1%");
  EXPECT_EQ(ops[0].result, "ok");
  EXPECT_EQ(ops[0].end_ms, 0);
  EXPECT_EQ(ops[1].id, "3");
  EXPECT_EQ(skipped, 1u);  // the over-long line
}

TEST(DecoderBounds, StoreMarkerFields) {
  const std::string good = "rbdvault-store 1\nstore_id 3f09c2a4d17be580\nblock_size 65536\nfuture x y\n";
  const StoreMarker m = parse_store_marker(good, "m");
  EXPECT_EQ(m.block_size, 65536u);
  EXPECT_EQ(m.store_id, "3f09c2a4d17be580");
  auto kind = [](const std::string& text) { return kind_of([&] { (void)parse_store_marker(text, "m"); }); };
  // istream read "-1" into the unsigned block size as 4294967295 and accepted it; 3 was accepted too.
  EXPECT_EQ(kind("rbdvault-store 1\nstore_id 3f09c2a4d17be580\nblock_size -1\n"), StoreError::Kind::kCorrupt);
  EXPECT_EQ(kind("rbdvault-store 1\nstore_id 3f09c2a4d17be580\nblock_size 3\n"), StoreError::Kind::kCorrupt);
  EXPECT_EQ(kind("rbdvault-store 1\nstore_id 3f09c2a4d17be580\nblock_size 8388608\n"), StoreError::Kind::kCorrupt);
  EXPECT_EQ(kind("rbdvault-store 1\nstore_id ../../x\nblock_size 65536\n"), StoreError::Kind::kCorrupt);
  EXPECT_EQ(kind("rbdvault-store 1\nblock_size 65536\n"), StoreError::Kind::kCorrupt);
  // A newer format than this code reads: refused as such, not parsed as damage.
  EXPECT_EQ(kind("rbdvault-store 4\nstore_id 3f09c2a4d17be580\nblock_size 65536\n"), StoreError::Kind::kInvalid);
  EXPECT_NO_THROW((void)parse_store_marker("rbdvault-store 3\nstore_id 3f09c2a4d17be580\nblock_size 65536\n", "m"));
  // The marker's file with other text (zeros, empty, a mangled first line) is a damaged marker.
  EXPECT_EQ(kind("rbdvault-store +1\n"), StoreError::Kind::kCorrupt);
  EXPECT_EQ(kind(""), StoreError::Kind::kCorrupt);
  EXPECT_EQ(kind(std::string(64, '\0')), StoreError::Kind::kCorrupt);
  EXPECT_EQ(kind(good + std::string(kMaxMarkerBytes, '#')), StoreError::Kind::kCorrupt);
}

TEST(DecoderBounds, BatchConfigFileSizeIsBounded) {
  const fs::path p = fs::temp_directory_path() / ("rbdvault-big-conf-" + std::to_string(::getpid()));
  {
    std::ofstream f(p);
    f << "[store]\npath = /s\n" << std::string(agent::kMaxBatchConfigBytes, '#') << "\n";
  }
  EXPECT_THROW((void)agent::load_batch_config(p.string()), agent::ConfigError);
  fs::remove(p);
}

// The same checks reached through a store: a hostile record gives kCorrupt, not an allocation of
// gigabytes or a read past the end of a RocksDB key.
TEST_F(StoreTest, HostileChunkRecordIsCorruptOnRead) {
  const RevisionRecord r = put("a", random_bytes(kBs, 3));
  Hash h{};
  store_->for_each_data_block(r, [&](uint64_t, const Hash& x) { h = x; });
  ChunkRecord c = *store_->chunk(h);
  c.stored_len = 0xfffffff0u;
  c.flags = kChunkZstd;
  ASSERT_TRUE(store_->index().db_for_tests().Put(rocksdb::WriteOptions(), chunk_key(h), encode(c)).ok());
  EXPECT_EQ(kind_of([&] { (void)store_->read_chunk(h); }), StoreError::Kind::kCorrupt);
}

TEST_F(StoreTest, ShortChunkKeyIsCorruptInGcAndScrub) {
  put("a", random_bytes(kBs, 4));
  // gc and scrub copied 32 bytes from after the 'C' of any C key, whatever its length.
  ASSERT_TRUE(store_->index().db_for_tests().Put(rocksdb::WriteOptions(), "Cab", encode(valid_chunk())).ok());
  EXPECT_EQ(kind_of([&] { (void)gc(*store_, GcOptions{}); }), StoreError::Kind::kCorrupt);
  EXPECT_EQ(kind_of([&] { (void)scrub(*store_, ScrubOptions{}); }), StoreError::Kind::kCorrupt);
}

TEST_F(StoreTest, MalformedPackKeyIsCorruptInGc) {
  put("a", random_bytes(kBs, 5));
  ASSERT_TRUE(store_->index().db_for_tests().Put(rocksdb::WriteOptions(), "Pxy", encode(PackRecord{kPackHeaderSize, 0})).ok());
  EXPECT_EQ(kind_of([&] { (void)gc(*store_, GcOptions{}); }), StoreError::Kind::kCorrupt);
}

TEST_F(StoreTest, RepairSkipsAPackWithAnImpossibleChunkLength) {
  const Hash h = sha256(std::string(kBs, 'q'));
  {
    std::ofstream f(dir_ / "data" / pack_file_name(0xff), std::ios::binary);
    f << pack_header(0xff) << chunk_header(kChunkZstd, kBs, 0xfffffff0u, h) << "payload";
  }
  EXPECT_FALSE(store_->find_chunk_copy(h));
}

TEST_F(StoreTest, MarkerWithImpossibleBlockSizeIsRefused) {
  store_.reset();
  std::ofstream(dir_ / "rbdvault.store", std::ios::trunc) << "rbdvault-store 1\nstore_id 3f09c2a4d17be580\nblock_size -1\n";
  EXPECT_EQ(kind_of([&] { (void)Store::open(dir_, OpenMode::kReadOnly); }), StoreError::Kind::kCorrupt);
}

// The writer record on a RADOS store's marker (rados_fence.h) decides whom a takeover blocklists:
// anything but an odd epoch and one bounded, printable address is no record at all.
TEST(DecoderBounds, WriterClientRecordAcceptsOnlyAnOddEpochAndOneBoundedAddress) {
  const WriterClient ok = parse_writer_client("7 127.0.0.1:0/3710147553");
  EXPECT_EQ(ok.epoch, 7u);
  EXPECT_EQ(ok.address, "127.0.0.1:0/3710147553");
  for (const std::string& bad : std::vector<std::string>{"", "7", "7 ", " 127.0.0.1:0/1", "8 127.0.0.1:0/1", "x7 127.0.0.1:0/1",
                                "7 127.0.0.1:0/1 extra", "7 127.0.0.1:0/\n1", "99999999999999999999999 10.0.0.1:0/1",
                                "7 " + std::string(201, 'a')}) {
    const WriterClient w = parse_writer_client(bad);
    EXPECT_EQ(w.epoch, 0u) << bad;
    EXPECT_TRUE(w.address.empty()) << bad;
  }
  EXPECT_EQ(parse_writer_client("7 " + std::string(190, 'a') + "/123456789").epoch, 7u);
  EXPECT_EQ(parse_writer_client("7 [fd00::5]:0/12345").address, "[fd00::5]:0/12345");
  EXPECT_EQ(parse_writer_client("9 v2:10.0.0.1:0/77").epoch, 9u);
  // No nonce, or nonce 0: a blocklist entry for it would shut out every client of the host.
  for (const char* whole_host : {"7 127.0.0.1:0/0", "7 127.0.0.1:0", "7 [fd00::5]:0/000", "7 127.0.0.1:0/",
                                 "7 127.0.0.1:0/12a"})
    EXPECT_EQ(parse_writer_client(whole_host).epoch, 0u) << whole_host;
  EXPECT_EQ(parse_writer_client(std::string("7 a\x01b")).epoch, 0u);
}

}  // namespace
}  // namespace rbdvault::store::testing
