// Writes the seed corpus of every fuzz target into OUT/<target>/, made by the real encoders and
// writers (so the seeds follow the format as the code writes it today): make_seeds OUT SOURCE_DIR
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "store/chunk_codec.h"
#include "store/patch_codec.h"
#include "store/format.h"
#include "store/manifest.h"
#include "store/open_object_store.h"
#include "store/oplog.h"
#include "store/pack.h"
#include "store/pack_identities.h"

namespace fs = std::filesystem;
using namespace rbdvault::store;

namespace {

void put(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string block(char fill, bool compressible) {
  std::string b(kMinBlockSize, fill);
  if (!compressible)
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<char>((i * 2654435761u) >> 13);
  return b;
}

void index_seeds(const fs::path& dir) {
  RevisionRecord r;
  r.id = 2;
  r.image = 1;
  r.pool = "rbd";
  r.name = "vm-1";
  r.ceph_image_id = "10ab";
  r.snap_name = "rbdvault-0123abcd-2";
  r.size = 10u << 20;
  r.parent = 1;
  r.kind = RevisionKind::kDelta;
  r.block_size = kMinBlockSize;
  r.order = 22;
  ChunkRecord c{1, kPackHeaderSize, 1000, kMinBlockSize, kChunkZstd, 3};
  const Hash h = sha256("x");
  put(dir, "image", '\0' + encode(ImageRecord{1, "rbd", "vm-1"}));
  put(dir, "revision", '\1' + encode(r));
  put(dir, "chunk", '\2' + encode(c));
  put(dir, "pack", '\3' + encode(PackRecord{kPackHeaderSize + kChunkHeaderSize + 1000, 1}));
  put(dir, "pending", '\4' + encode(PendingRecord{2, 1}));
  put(dir, "counter", '\5' + encode_u64(7));
  put(dir, "block_key", '\6' + block_key(1, 2, 3));
  put(dir, "chunk_key", '\6' + chunk_key(h));
}

// A real pack of three chunks (zstd, raw, zstd), written and sealed by PackWriter.
std::string pack_seed(const fs::path& tmp) {
  fs::create_directories(tmp);
  const auto objects = open_object_store(tmp);
  PackWriter w(*objects, 1);
  for (auto [fill, compressible] : {std::pair{'a', true}, std::pair{'b', false}, std::pair{'\0', true}}) {
    const std::string raw = block(fill, compressible);
    EncodedChunk e = encode_chunk(raw, 1);
    w.append(sha256(raw), e.flags, static_cast<uint32_t>(raw.size()), e.payload);
  }
  w.seal();
  return slurp(tmp / "data" / pack_file_name(1));
}

void chunk_seeds(const fs::path& dir, const std::string& pack) {
  // Each chunk of the pack alone: header plus payload.
  uint64_t n = 0;
  scan_pack(
      pack.size(),
      [&](uint64_t off, char* buf, size_t len) { return pack.copy(buf, len, off) == len; }, 1,
      [&](uint64_t off, const ChunkHeader& h) {
        put(dir, "chunk" + std::to_string(n++), pack.substr(off, kChunkHeaderSize + h.stored_len));
        return true;
      });
}

// Patch chunks (docs/format.md §4.2) as a pack holds them: raw pages and zstd pages.
void patch_seeds(const fs::path& dir) {
  const std::string base = block('b', false);
  uint64_t n = 0;
  for (bool compressible : {false, true}) {
    std::string next = compressible ? block('a', true) : base;
    std::string from = compressible ? next : base;
    next[3] ^= 1;
    next[5 * kPatchPage + 9] ^= 1;
    auto e = encode_patch(sha256(from), from, next, 1);
    if (!e) continue;
    std::string chunk = "RVCK";
    chunk.push_back(static_cast<char>(e->flags));
    chunk.append(3, '\0');
    for (uint32_t v : {static_cast<uint32_t>(next.size()), static_cast<uint32_t>(e->payload.size())})
      for (int i = 0; i < 4; ++i) chunk.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    const Hash h = sha256(next);
    chunk.append(reinterpret_cast<const char*>(h.data()), h.size());
    put(dir, "patch" + std::to_string(n++), chunk + e->payload);
  }
}

void oplog_seeds(const fs::path& dir, const fs::path& tmp) {
  OpLog log(tmp);
  auto id = log.begin("backup", "rbd/vm-1", "rbdvault backup --store /s rbd/vm-1");
  log.end(id, true, "", 1 << 20);
  id = log.begin("gc", "", "rbdvault gc --store /s");
  log.end(id, false, "store is locked = 50% busy", 0);
  log.begin("restore", "rbd/vm-1@2", "rbdvault restore");
  put(dir, "oplog", slurp(tmp / "oplog"));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s OUT SOURCE_DIR\n", argv[0]);
    return 2;
  }
  const fs::path out = argv[1], src = argv[2];
  const fs::path tmp = out / ("tmp-" + std::to_string(::getpid()));
  index_seeds(out / "index_records");
  const std::string pack = pack_seed(tmp / "data");
  put(out / "pack_scan", "pack", pack);
  chunk_seeds(out / "chunk", pack);
  patch_seeds(out / "patch");
  oplog_seeds(out / "oplog", tmp);
  put(out / "batch_config", "example.conf", slurp(src / "deploy/rbdvault.conf.example"));
  put(out / "store_marker", "marker", "rbdvault-store 1\nstore_id 3f09c2a4d17be580\nblock_size 65536\n");
  put(out / "pack_identities", "ids",
      encode_pack_identities("0123456789abcdef", {{1, "v17/67108912"}, {0x2a, "v9/4096"}}));
  {
    ManifestTail t;
    t.rev.id = 7;
    t.rev.image = 1;
    t.rev.pool = "rbd";
    t.rev.name = "vm-1";
    t.rev.size = 5 * 65536;
    t.rev.block_size = 65536;
    t.generation = 1;
    t.absorbed = {5};
    put(out / "manifest", "manifest", encode_manifest(t, {{0, sha256("a")}, {3, std::nullopt}, {4, sha256("b")}}));
  }
  fs::remove_all(tmp);
  return 0;
}
