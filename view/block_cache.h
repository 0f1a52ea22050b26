// A bounded LRU cache of verified chunk contents, keyed by content hash. Revisions share chunks, so
// one cache serves every revision of a mount (and a chunk read once for revision 7 is a hit for 8).
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "store/sha256.h"

namespace rbdvault::view {

class BlockCache {
 public:
  using Data = std::shared_ptr<const std::string>;
  // capacity_bytes 0: no caching (every read goes to the store).
  explicit BlockCache(uint64_t capacity_bytes) : capacity_(capacity_bytes) {}

  // The cached content of `hash`, or load() (which must verify it) and keep the result. Two threads
  // missing the same chunk both load it; the cache stays correct, only the work is repeated.
  [[nodiscard]] Data get(const store::Hash& hash, const std::function<std::string()>& load);

  struct Stats {
    uint64_t hits = 0, misses = 0, bytes = 0;
  };
  [[nodiscard]] Stats stats() const;

 private:
  struct HashHasher {
    size_t operator()(const store::Hash& h) const {
      size_t v;
      static_assert(sizeof v <= sizeof h);
      std::memcpy(&v, h.data(), sizeof v);  // a SHA-256 is already uniform
      return v;
    }
  };
  using Lru = std::list<std::pair<store::Hash, Data>>;
  void insert_locked(const store::Hash& hash, Data data);

  const uint64_t capacity_;
  mutable std::mutex mu_;
  Lru lru_;  // most recently used first
  std::unordered_map<store::Hash, Lru::iterator, HashHasher> index_;
  Stats stats_;
};

}  // namespace rbdvault::view
