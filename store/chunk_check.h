// Scrub's check of one chunk against its index record and its pack (docs/format.md §11).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "store/format.h"

namespace rbdvault::store {

class ObjectReader;
class Store;

class ChunkChecker {
 public:
  ChunkChecker(Store& store, bool deep) : store_(store), deep_(deep) {}
  ~ChunkChecker();
  ChunkChecker(const ChunkChecker&) = delete;
  ChunkChecker& operator=(const ChunkChecker&) = delete;

  // Empty string: fine; otherwise what is wrong. Looks the record up first.
  std::string examine(const Hash& hash);
  // With the record at hand. A deep check adds the payload bytes to `bytes_verified`.
  std::string examine(const Hash& hash, const ChunkRecord& rec, uint64_t& bytes_verified);

 private:
  // nullptr when the pack is missing (not cached then); other failures throw.
  const ObjectReader* reader_for(uint32_t pack);
  // Empty when a patch's base is a sound full chunk; otherwise what is wrong with it.
  std::string examine_base(const Hash& base);

  Store& store_;
  bool deep_;
  std::map<uint32_t, std::unique_ptr<ObjectReader>> readers_;
  std::map<Hash, std::string> base_verdicts_;  // at most 4096
};

}  // namespace rbdvault::store
