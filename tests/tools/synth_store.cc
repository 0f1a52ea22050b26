// Builds large synthetic stores for the memory tests and benchmarks (never shipped).
//
//   synth_store create DIR N [--images K] [--damage]
//       A new store with K images (default 1) of N blocks in all, one committed revision each;
//       every block is a distinct chunk (zeros and 8 bytes naming it: cheap to make and compress).
//       --damage flips one payload byte of the first chunk, so scrub --deep and repair have work.
//   synth_store kill-backup DIR
//       Leaves a killed backup behind: an uncommitted second revision of the first image that
//       re-points every block at its neighbour's (existing) chunk, flushed and never committed. The
//       next writer to open the store rolls it back.
//   synth_store garbage DIR
//       Zeroes every other block of the last image in a new revision and forgets the old one: half
//       of that image's chunks lose their last reference, in every one of its packs (gc rewrites
//       them all).
//
// Both go through the store's own writer, so the result is a store scrub --deep accepts.
#include <fcntl.h>
#include <openssl/sha.h>
#include <rocksdb/db.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "store/chunk_codec.h"
#include "store/format.h"
#include "store/pack.h"
#include "store/revision_writer.h"
#include "store/index.h"
#include "store/store.h"

using namespace rbdvault::store;

// SHA256_Init and friends: the midstate copy below needs the low-level API OpenSSL 3 deprecates.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

namespace {

[[noreturn]] void usage() {
  std::cerr << "usage: synth_store create DIR N [--images K] [--damage] | synth_store kill-backup DIR |"
               " synth_store garbage DIR\n";
  std::exit(2);
}

// Chunk content: bs - 8 zero bytes, then 8 non-zero bytes naming the chunk. Hashing 64 KiB per
// chunk would make 10 million chunks take an hour; with the name at the end, SHA-256 runs the
// common zero prefix once and each chunk costs one 64-byte block. Likewise every chunk compresses
// to the same zstd frame but for the 8 literal bytes, which are patched in (and checked by
// decoding a sample).
class ChunkFactory {
 public:
  explicit ChunkFactory(uint32_t bs) : bs_(bs), raw_(bs, '\0') {
    SHA256_Init(&prefix_);
    SHA256_Update(&prefix_, raw_.data(), bs - 64);
    tail(0xfedcba9876543210ull, raw_.data() + bs - 8);
    frame_ = encode_chunk(raw_, 1);
    at_ = frame_.payload.find(std::string_view(raw_.data() + bs - 8, 8));
    if (frame_.flags != kChunkZstd || at_ == std::string::npos ||
        frame_.payload.find(std::string_view(raw_.data() + bs - 8, 8), at_ + 1) != std::string::npos)
      throw std::runtime_error("unexpected zstd frame for the chunk template");
  }

  PreparedBlock make(uint64_t id) {
    PreparedBlock p;
    p.raw = raw_;
    tail(id, p.raw.data() + bs_ - 8);
    SHA256_CTX ctx = prefix_;
    SHA256_Update(&ctx, p.raw.data() + bs_ - 64, 64);
    Hash h;
    SHA256_Final(h.data(), &ctx);
    p.hash = h;
    p.encoded = frame_;
    std::memcpy(p.encoded->payload.data() + at_, p.raw.data() + bs_ - 8, 8);
    if (++made_ % 65536 == 1 && (decode_chunk(p.encoded->flags, p.encoded->payload, bs_) != p.raw || sha256(p.raw) != h))
      throw std::runtime_error("patched chunk " + std::to_string(id) + " does not decode to its content");
    return p;
  }

 private:
  static void tail(uint64_t id, char* out) {  // 8 bytes, none zero, distinct for every id < 255^8
    for (int k = 0; k < 8; ++k, id /= 255) out[k] = static_cast<char>(1 + id % 255);
  }
  uint32_t bs_;
  std::string raw_;
  SHA256_CTX prefix_;
  EncodedChunk frame_;
  size_t at_ = 0;
  uint64_t made_ = 0;
};

void write_image(Store& store, const std::string& name, uint64_t first_id, uint64_t blocks) {
  const uint32_t bs = store.block_size();
  ChunkFactory factory(bs);
  auto writer = store.begin_revision(RevisionStart{"synth", name, blocks * bs, true, 0});
  for (uint64_t b = 0; b < blocks; ++b) writer->put_prepared(b, factory.make(first_id + b));
  writer->commit(RevisionInfo{});
}

void damage_first_chunk(Store& store) {
  std::unique_ptr<rocksdb::Iterator> it(store.index().db_for_tests().NewIterator(rocksdb::ReadOptions()));
  it->Seek(std::string(1, kKeyChunk));
  if (!it->Valid()) return;
  ChunkRecord rec = decode_chunk_record(it->value().ToStringView());
  const auto path = store.dir() / "data" / pack_file_name(rec.pack);  // the local backend's file
  int fd = ::open(path.c_str(), O_RDWR);
  char byte = 0;
  const off_t at = static_cast<off_t>(rec.offset + kChunkHeaderSize);
  if (fd < 0 || ::pread(fd, &byte, 1, at) != 1) throw std::runtime_error("cannot damage " + path.string());
  byte ^= 0x55;
  if (::pwrite(fd, &byte, 1, at) != 1) throw std::runtime_error("cannot damage " + path.string());
  ::close(fd);
}

// Into table files: a reader would otherwise replay the write-ahead log into a memtable of up to
// 32 MiB, which a store in use has only right after a backup and which would blur what the memory
// tests compare.
void flush(Store& store) {
  rocksdb::FlushOptions fo;
  if (!store.index().db_for_tests().Flush(fo).ok()) throw std::runtime_error("flush the index");
}

int create(const std::string& dir, uint64_t n, uint64_t images, bool damage) {
  Store::init(dir, StoreOptions{});
  auto store = Store::open(dir, OpenMode::kWriter, "synth_store");
  for (uint64_t i = 0; i < images; ++i) {
    const uint64_t first = n * i / images, end = n * (i + 1) / images;
    write_image(*store, "img-" + std::to_string(i), first, end - first);
  }
  if (damage) damage_first_chunk(*store);
  flush(*store);
  return 0;
}

int garbage(const std::string& dir) {
  auto store = Store::open(dir, OpenMode::kWriter, "synth_store");
  const std::vector<ImageRecord> images = store->images();
  if (images.empty()) throw std::runtime_error("no image");
  const RevisionRecord old = *store->latest_revision(images.back().key);
  auto writer = store->begin_revision(RevisionStart{"synth", images.back().name, old.size, false, 0});
  for (uint64_t b = 0; b < store->blocks_for(old.size); b += 2) writer->put_zero(b);
  writer->commit(RevisionInfo{});
  writer.reset();
  store->forget(old.id);
  flush(*store);
  return 0;
}

int kill_backup(const std::string& dir) {
  WriterOptions small_flushes;
  small_flushes.flush_entries = 1024;  // so that nearly every entry reaches the index before the "kill"
  auto store = Store::open(dir, OpenMode::kWriter, "synth_store", small_flushes);
  auto image = store->find_image("synth", "img-0");
  if (!image) throw std::runtime_error("no image synth/img-0");
  const RevisionRecord parent = *store->latest_revision(image->key);
  auto writer = store->begin_revision(RevisionStart{"synth", "img-0", parent.size, false, 0});
  // Block b takes block b+1's chunk: an existing chunk, so no hashing and no new pack data.
  std::optional<uint64_t> prev_block;
  store->for_each_data_block(parent, [&](uint64_t block, const Hash& h) {
    if (prev_block) writer->put_prepared(*prev_block, PreparedBlock{h, {}, std::nullopt});
    prev_block = block;
  });
  // Die without committing or rolling back, as a kill would: what the writer flushed stays behind
  // (the entries still buffered are lost with the process).
  store->index().db_for_tests().FlushWAL(true);
  std::fflush(nullptr);
  ::_exit(0);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.size() >= 3 && args[0] == "create") {
      uint64_t images = 1;
      bool damage = false;
      for (size_t i = 3; i < args.size(); ++i) {
        if (args[i] == "--images" && i + 1 < args.size())
          images = std::stoull(args[++i]);
        else if (args[i] == "--damage")
          damage = true;
        else
          usage();
      }
      if (images == 0) usage();
      return create(args[1], std::stoull(args[2]), images, damage);
    }
    if (args.size() == 2 && args[0] == "kill-backup") return kill_backup(args[1]);
    if (args.size() == 2 && args[0] == "garbage") return garbage(args[1]);
  } catch (const std::exception& e) {
    std::cerr << "synth_store: " << e.what() << "\n";
    return 1;
  }
  usage();
}
