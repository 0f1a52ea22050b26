// Chunk reference counts to lower, gathered for one RocksDB write batch (forget, rollback).
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>

#include "store/format.h"

namespace rocksdb {
class DB;
class WriteBatch;
}  // namespace rocksdb

namespace rbdvault::store {

class ChunkRefUpdates {
 public:
  explicit ChunkRefUpdates(rocksdb::DB& db) : db_(db) {}
  // One block map entry naming the chunk (32-byte hash) goes away.
  void unref(std::string_view hash);
  // Adds the updated chunk records to `batch` and forgets them.
  void write_to(rocksdb::WriteBatch& batch);

 private:
  rocksdb::DB& db_;
  std::unordered_map<std::string, ChunkRecord> chunks_;  // chunk key -> updated record
};

}  // namespace rbdvault::store
