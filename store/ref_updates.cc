#include "store/ref_updates.h"

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include "store/error.h"

namespace rbdvault::store {

void ChunkRefUpdates::unref(std::string_view hash) {
  std::string key = std::string(1, kKeyChunk) + std::string(hash);
  auto found = chunks_.find(key);
  if (found == chunks_.end()) {
    std::string v;
    auto st = db_.Get(rocksdb::ReadOptions(), key, &v);
    if (!st.ok()) throw StoreError(StoreError::Kind::kIO, "read chunk record: " + st.ToString());
    found = chunks_.emplace(key, decode_chunk_record(v)).first;
  }
  if (found->second.refs > 0) --found->second.refs;
}

void ChunkRefUpdates::write_to(rocksdb::WriteBatch& batch) {
  for (auto& [key, rec] : chunks_) batch.Put(key, encode(rec));
  chunks_.clear();
}

}  // namespace rbdvault::store
