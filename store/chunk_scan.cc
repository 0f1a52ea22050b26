#include "store/chunk_scan.h"

#include <rocksdb/db.h>

#include <cstring>

#include "store/error.h"

namespace rbdvault::store {

ChunkRecordCursor::ChunkRecordCursor(rocksdb::DB& db) {
  rocksdb::ReadOptions ro;
  ro.fill_cache = false;  // one pass over every record: keep the block cache for point lookups
  it_.reset(db.NewIterator(ro));
  it_->Seek(std::string(1, kKeyChunk));
  load();
}

ChunkRecordCursor::~ChunkRecordCursor() = default;

void ChunkRecordCursor::load() {
  valid_ = it_->Valid() && it_->key().starts_with(std::string_view(&kKeyChunk, 1));
  if (!valid_) {
    if (!it_->status().ok()) throw StoreError(StoreError::Kind::kIO, "scan chunk records: " + it_->status().ToString());
    return;
  }
  hash_ = chunk_hash_of_key(it_->key().ToStringView());
  error_.clear();
  try {
    record_ = decode_chunk_record(it_->value().ToStringView());
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kCorrupt) throw;
    record_.reset();
    error_ = e.what();
  }
}

void ChunkRecordCursor::next() {
  it_->Next();
  load();
}

bool ChunkRecordCursor::seek_forward(const Hash& h) {
  while (valid_ && std::memcmp(hash_.data(), h.data(), h.size()) < 0) next();
  return valid_ && hash_ == h;
}

}  // namespace rbdvault::store
