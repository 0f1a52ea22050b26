#include "view/block_cache.h"

namespace rbdvault::view {

BlockCache::Data BlockCache::get(const store::Hash& hash, const std::function<std::string()>& load) {
  {
    std::lock_guard<std::mutex> guard(mu_);
    auto it = index_.find(hash);
    if (it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      ++stats_.hits;
      return it->second->second;
    }
    ++stats_.misses;
  }
  // Loaded outside the lock: a store read (and its hash check) must not stall every other reader.
  auto data = std::make_shared<const std::string>(load());
  std::lock_guard<std::mutex> guard(mu_);
  insert_locked(hash, data);
  return data;
}

void BlockCache::insert_locked(const store::Hash& hash, Data data) {
  if (data->size() > capacity_ || index_.count(hash)) return;
  lru_.emplace_front(hash, data);
  index_[hash] = lru_.begin();
  stats_.bytes += data->size();
  while (stats_.bytes > capacity_) {
    stats_.bytes -= lru_.back().second->size();
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
}

BlockCache::Stats BlockCache::stats() const {
  std::lock_guard<std::mutex> guard(mu_);
  return stats_;
}

}  // namespace rbdvault::view
