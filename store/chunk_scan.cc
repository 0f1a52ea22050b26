#include "store/chunk_scan.h"

#include <cstring>

#include "store/error.h"

namespace rbdvault::store {

// One pass over every record: keep the block cache for point lookups.
ChunkRecordCursor::ChunkRecordCursor(Index& index)
    : it_(index.scan(std::string_view(&kKeyChunk, 1), Caching::kBypass)) {
  load();
}

ChunkRecordCursor::~ChunkRecordCursor() = default;

void ChunkRecordCursor::load() {
  valid_ = it_.valid();
  if (!valid_) {
    it_.check("scan chunk records");
    return;
  }
  hash_ = chunk_hash_of_key(it_.key());
  error_.clear();
  try {
    record_ = decode_chunk_record(it_.value());
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kCorrupt) throw;
    record_.reset();
    error_ = e.what();
  }
}

void ChunkRecordCursor::next() {
  it_.next();
  load();
}

bool ChunkRecordCursor::seek_forward(const Hash& h) {
  while (valid_ && std::memcmp(hash_.data(), h.data(), h.size()) < 0) next();
  return valid_ && hash_ == h;
}

}  // namespace rbdvault::store
