// Streaming over the chunk records (C keys) in hash order, to merge them with sorted streams of
// hashes (scrub, repair, du, gc) instead of holding a map per chunk.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "store/format.h"
#include "store/index.h"

namespace rbdvault::store {

class ChunkRecordCursor {
 public:
  explicit ChunkRecordCursor(Index& index);
  ~ChunkRecordCursor();
  ChunkRecordCursor(const ChunkRecordCursor&) = delete;
  ChunkRecordCursor& operator=(const ChunkRecordCursor&) = delete;

  [[nodiscard]] bool valid() const { return valid_; }
  const Hash& hash() const { return hash_; }
  // The decoded record; nullopt when it is malformed, with error() saying why.
  const std::optional<ChunkRecord>& record() const { return record_; }
  const std::string& error() const { return error_; }
  void next();
  // Moves forward to the first record whose hash is >= h (never back); true if it is h.
  [[nodiscard]] bool seek_forward(const Hash& h);

 private:
  void load();
  IndexCursor it_;
  bool valid_ = false;
  Hash hash_{};
  std::optional<ChunkRecord> record_;
  std::string error_;
};

}  // namespace rbdvault::store
