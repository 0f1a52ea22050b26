#include "store/ref_updates.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "store/error.h"
#include "store/sha256.h"

namespace rbdvault::store {

namespace {

std::string hex_of(std::string_view hash) {
  Hash h{};
  std::memcpy(h.data(), hash.data(), std::min(hash.size(), h.size()));
  return to_hex(h);
}

}  // namespace

void ChunkRefUpdates::unref(std::string_view hash) {
  std::string key = std::string(1, kKeyChunk) + std::string(hash);
  auto found = chunks_.find(key);
  if (found == chunks_.end()) {
    std::string v;
    // A missing or unreadable record has no count to lower. Stopping here would stop the rollback
    // or forget for good, and with it every later writer: the damage is reported and left for
    // scrub and repair (which rewrites the record with the count of the entries still naming it).
    if (!index_.get(key, v, "read chunk record")) {
      spdlog::warn("chunk {} has no index record; its reference count cannot be lowered (run scrub and repair)",
                   hex_of(hash));
      return;
    }
    try {
      found = chunks_.emplace(key, decode_chunk_record(v)).first;
    } catch (const StoreError& e) {
      if (e.kind() != StoreError::Kind::kCorrupt) throw;
      spdlog::warn("chunk {}: {}; its reference count cannot be lowered (run scrub and repair)", hex_of(hash),
                   e.what());
      return;
    }
  }
  if (found->second.refs > 0) --found->second.refs;
}

void ChunkRefUpdates::write_to(IndexBatch& batch) {
  for (auto& [key, rec] : chunks_) batch.put(key, encode(rec));
  chunks_.clear();
}

}  // namespace rbdvault::store
