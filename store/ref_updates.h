// Chunk reference counts to lower, gathered for one index write batch (forget, rollback).
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>

#include "store/format.h"
#include "store/index.h"

namespace rbdvault::store {

class ChunkRefUpdates {
 public:
  explicit ChunkRefUpdates(Index& index) : index_(index) {}
  // One block map entry naming the chunk (32-byte hash) goes away.
  void unref(std::string_view hash);
  // Adds the updated chunk records to `batch` and forgets them.
  void write_to(IndexBatch& batch);

 private:
  Index& index_;
  std::unordered_map<std::string, ChunkRecord> chunks_;  // chunk key -> updated record
};

}  // namespace rbdvault::store
