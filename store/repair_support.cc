// Store-side pieces of repair: finding damaged chunks, finding intact copies, rewriting chunks.
#include <fcntl.h>
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>

#include "store/chunk_codec.h"
#include "store/pack.h"
#include "store/store.h"

namespace fs = std::filesystem;

namespace rbdvault::store {
namespace {

void check(const rocksdb::Status& s, const std::string& what) {
  if (!s.ok()) throw StoreError(StoreError::Kind::kIO, what + ": " + s.ToString());
}

uint32_t le32(const char* p) {
  return uint32_t(uint8_t(p[0])) | uint32_t(uint8_t(p[1])) << 8 | uint32_t(uint8_t(p[2])) << 16 |
         uint32_t(uint8_t(p[3])) << 24;
}

}  // namespace

std::optional<Hash> Store::block_content(uint64_t image, uint64_t block, uint64_t rev) {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  it->SeekForPrev(block_key(image, block, rev));
  if (!it->Valid()) return std::nullopt;
  auto k = parse_block_key(it->key().ToStringView());
  if (!k || k->image != image || k->block != block || it->value().size() != 32) return std::nullopt;
  Hash h;
  std::memcpy(h.data(), it->value().data(), 32);
  return h;
}

std::vector<Store::DamagedChunk> Store::find_damaged_chunks() {
  std::map<Hash, DamagedChunk> damaged;
  std::map<Hash, std::string> verdict;  // "" = fine
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  const std::string prefix(1, kKeyBlock);
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    if (it->value().size() != 32) continue;
    Hash h;
    std::memcpy(h.data(), it->value().data(), 32);
    auto v = verdict.find(h);
    if (v == verdict.end()) {
      std::string problem;
      auto rec = chunk(h);
      if (!rec) {
        problem = "no index record";
      } else {
        try {
          packs_->read(h, *rec);
        } catch (const StoreError& e) {
          if (e.kind() != StoreError::Kind::kCorrupt) throw;  // I/O trouble is not damage to repair
          problem = e.what();
        }
      }
      v = verdict.emplace(h, problem).first;
    }
    if (v->second.empty()) continue;
    auto k = parse_block_key(it->key().ToStringView());
    DamagedChunk& d = damaged[h];
    d.hash = h;
    d.problem = v->second;
    ++d.entries;
    if (d.uses.size() < 64) d.uses.emplace_back(k->image, k->block, k->rev);
  }
  check(it->status(), "scan block maps");
  std::vector<DamagedChunk> out;
  for (auto& [h, d] : damaged) out.push_back(std::move(d));
  return out;
}

std::optional<std::string> Store::find_chunk_copy(const Hash& hash) {
  std::error_code ec;
  for (auto& e : fs::directory_iterator(data_dir(), ec)) {
    if (e.path().extension() != ".pack") continue;
    int fd = ::open(e.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    const uint64_t size = e.file_size(ec);
    uint64_t off = kPackHeaderSize;
    char hdr[kChunkHeaderSize];
    while (off + kChunkHeaderSize <= size) {
      if (::pread(fd, hdr, sizeof(hdr), static_cast<off_t>(off)) != static_cast<ssize_t>(sizeof(hdr))) break;
      if (std::memcmp(hdr, kChunkMagic.data(), 4) != 0) break;  // lost sync: give up on this pack
      const uint32_t raw_len = le32(hdr + 8), stored_len = le32(hdr + 12);
      if (std::memcmp(hdr + 16, hash.data(), 32) == 0) {
        std::string payload(stored_len, '\0');
        if (::pread(fd, payload.data(), stored_len, static_cast<off_t>(off + kChunkHeaderSize)) ==
            static_cast<ssize_t>(stored_len)) {
          try {
            std::string raw = decode_chunk(static_cast<uint8_t>(hdr[4]), payload, raw_len);
            if (sha256(raw) == hash) {
              ::close(fd);
              return raw;
            }
          } catch (const StoreError&) {
          }
        }
      }
      off += kChunkHeaderSize + stored_len;
    }
    ::close(fd);
  }
  return std::nullopt;
}

void Store::rewrite_chunk(const Hash& hash, std::string_view raw, uint64_t refs) {
  require_no_writers("repair");
  if (mode_ != OpenMode::kWriter) throw StoreError(StoreError::Kind::kInvalid, "store opened read-only");
  if (sha256(raw) != hash)
    throw StoreError(StoreError::Kind::kInvalid, "replacement data does not match chunk " + to_hex(hash));
  const uint32_t id = static_cast<uint32_t>(counter(kCounterNextPack, 1));
  PackWriter writer(data_dir(), id);
  EncodedChunk enc = encode_chunk(raw, writer_options_.zstd_level);
  ChunkRecord rec;
  rec.pack = id;
  rec.offset = writer.append(hash, enc.flags, static_cast<uint32_t>(raw.size()), enc.payload);
  rec.stored_len = static_cast<uint32_t>(enc.payload.size());
  rec.raw_len = static_cast<uint32_t>(raw.size());
  rec.flags = enc.flags;
  rec.refs = refs;
  PackRecord p = writer.seal();
  rocksdb::WriteBatch batch;
  batch.Put(chunk_key(hash), encode(rec));
  batch.Put(pack_key(id), encode(p));
  batch.Put(counter_key(kCounterNextPack), encode_u64(id + 1));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  check(db_->Write(wo, &batch), "rewrite chunk " + to_hex(hash));
  crash_points_.reached("repair.chunk_rewritten");
}

}  // namespace rbdvault::store
