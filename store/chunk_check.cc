#include "store/chunk_check.h"

#include <cstring>

#include "store/chunk_codec.h"
#include "store/error.h"
#include "store/patch_codec.h"
#include "store/pack.h"
#include "store/store.h"

namespace rbdvault::store {

ChunkChecker::~ChunkChecker() = default;

std::string ChunkChecker::examine_base(const Hash& base) {
  if (auto known = base_verdicts_.find(base); known != base_verdicts_.end()) return known->second;
  std::string problem;
  std::optional<ChunkRecord> rec;
  try {
    rec = store_.chunk(base);
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kCorrupt) throw;
    problem = "has a malformed index record (" + std::string(e.what()) + ")";
  }
  if (problem.empty() && !rec) problem = to_hex(base).substr(0, 16) + " has no index record";
  if (problem.empty() && is_patch(rec->flags)) problem = to_hex(base).substr(0, 16) + " is itself a patch";
  if (problem.empty()) {
    uint64_t ignored = 0;
    problem = examine(base, *rec, ignored);
  }
  // Many patches share a base: its verdict is kept (bounded) so a deep scrub reads it once.
  if (base_verdicts_.size() >= 4096) base_verdicts_.clear();
  base_verdicts_.emplace(base, problem);
  return problem;
}

const ObjectReader* ChunkChecker::reader_for(uint32_t pack) {
  auto it = readers_.find(pack);
  if (it != readers_.end()) return it->second.get();
  if (readers_.size() >= 128) readers_.clear();  // stay far from the open-file limit on stores with many packs
  std::unique_ptr<ObjectReader> reader;
  try {
    reader = store_.objects().open(pack_object_name(pack));
  } catch (const StoreError& e) {
    if (e.kind() == StoreError::Kind::kNotFound) return nullptr;
    throw;  // not damage: an I/O problem here
  }
  return (readers_[pack] = std::move(reader)).get();
}

std::string ChunkChecker::examine(const Hash& hash) {
  const std::string name = "chunk " + to_hex(hash).substr(0, 16);
  std::optional<ChunkRecord> rec;
  try {
    rec = store_.chunk(hash);
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kCorrupt) throw;
    return name + " has a malformed index record (" + e.what() + ")";  // damage to report, not to stop at
  }
  if (!rec) return name + " is referenced but has no index record";
  uint64_t ignored = 0;
  return examine(hash, *rec, ignored);
}

std::string ChunkChecker::examine(const Hash& hash, const ChunkRecord& rec, uint64_t& bytes_verified) {
  const std::string where =
      "chunk " + to_hex(hash).substr(0, 16) + " (" + pack_file_name(rec.pack) + " at " + std::to_string(rec.offset) + ")";
  const ObjectReader* pack = reader_for(rec.pack);
  if (!pack) return where + ": pack file is missing";
  const uint64_t size = pack->size();
  if (rec.offset + kChunkHeaderSize + rec.stored_len > size)
    return where + ": pack file is truncated (" + std::to_string(size) + " bytes)";
  const size_t len = deep_ ? kChunkHeaderSize + rec.stored_len : kChunkHeaderSize;
  std::string buf(len, '\0');
  try {
    bool ok = false;
    try {
      ok = pack->read_at(rec.offset, buf.data(), len);
    } catch (const StoreError& e) {
      if (e.kind() != StoreError::Kind::kIO) throw;
      ok = pack->read_at(rec.offset, buf.data(), len);  // once more: a transient error is not damage
    }
    if (!ok) return where + ": read failed";
  } catch (const StoreError& e) {
    return where + ": read failed (" + e.what() + ")";  // an unreadable sector is damage to repair
  }
  auto le32 = [&](size_t at) {
    uint32_t v;
    std::memcpy(&v, buf.data() + at, 4);
    return v;  // little-endian host (x86_64, aarch64)
  };
  if (buf.compare(0, 4, kChunkMagic) != 0) return where + ": bad chunk header magic";
  if (static_cast<uint8_t>(buf[4]) != rec.flags || le32(8) != rec.raw_len || le32(12) != rec.stored_len)
    return where + ": chunk header disagrees with the index (flags/length)";
  if (std::memcmp(buf.data() + 16, hash.data(), 32) != 0) return where + ": chunk header names another hash";
  if (rec.raw_len != store_.block_size()) return where + ": raw length is not the block size";
  if (is_patch(rec.flags)) {
    // A patch is as good as its base: a damaged base makes every patch on it damaged.
    if (std::string base = examine_base(rec.base); !base.empty()) return where + ": its base " + base;
    if (!deep_) return {};
    try {
      // The payload read here (not another read of it): a bad read must show as damage.
      const Patch patch = decode_patch(rec.flags, std::string_view(buf).substr(kChunkHeaderSize), rec.raw_len);
      if (patch.base != rec.base) return where + ": patch names another base than the index";
      std::string content = store_.read_chunk(rec.base);  // verified; its own damage was checked above
      apply_patch(patch, content);
      if (sha256(content) != hash) return where + ": patched content does not match its SHA-256";
    } catch (const StoreError& e) {
      if (e.kind() != StoreError::Kind::kCorrupt) throw;
      return where + " (a patch): " + e.what();
    }
    bytes_verified += rec.stored_len;
    return {};
  }
  if (deep_) {
    try {
      std::string raw = decode_chunk(rec.flags, std::string_view(buf).substr(kChunkHeaderSize), rec.raw_len);
      if (sha256(raw) != hash) return where + ": content does not match its SHA-256";
    } catch (const StoreError& e) {
      return where + ": " + e.what();
    }
    bytes_verified += rec.stored_len;
  }
  return {};
}

}  // namespace rbdvault::store
