#include "view/store_view.h"

#include <spdlog/spdlog.h>

#include "store/store.h"

namespace rbdvault::view {

const std::vector<store::RevisionRecord>* Snapshot::revisions(const std::string& pool, const std::string& image) const {
  auto it = images.find({pool, image});
  return it == images.end() ? nullptr : &it->second;
}

StoreView::StoreView(std::string dir, std::optional<std::pair<std::string, std::string>> only,
                     std::chrono::milliseconds ttl)
    : dir_(std::move(dir)), only_(std::move(only)), ttl_(ttl) {
  current_ = open();
  opened_ = std::chrono::steady_clock::now();
  if (only_ && !current_->revisions(only_->first, only_->second))
    throw store::StoreError(store::StoreError::Kind::kNotFound,
                            "no backups of " + only_->first + "/" + only_->second + " in this store");
}

std::shared_ptr<const Snapshot> StoreView::open() const {
  auto snap = std::make_shared<Snapshot>();
  snap->store = store::open_read_only(dir_);
  std::map<uint64_t, std::pair<std::string, std::string>> names;
  for (const auto& image : snap->store->images()) names[image.key] = {image.pool, image.name};
  for (auto& rev : snap->store->revisions()) {
    if (rev.flags & store::kRevisionForgetting) continue;
    auto name = names.find(rev.image);
    if (name == names.end()) continue;
    if (only_ && name->second != *only_) continue;
    // Grouped under the image record's name, like `ls`, whatever the spec at backup time was.
    snap->images[name->second].push_back(std::move(rev));
  }
  return snap;
}

void StoreView::check_block_map(store::ReadOnlyStore& store, const store::RevisionRecord& rev, bool enforce) {
  const std::pair<uint64_t, store::Hash> key{rev.id, rev.digest};
  auto checked = [&] {
    std::lock_guard<std::mutex> lock(mu_);
    return checked_.count(key) > 0;
  };
  if (checked()) return;
  std::lock_guard<std::mutex> scanning(check_mu_);  // not mu_: get() must not wait for a scan
  if (checked()) return;                             // another request scanned it meanwhile
  const std::string name = rev.pool + "/" + rev.name + "@" + std::to_string(rev.id);
  if (store.compute_digest(rev) != rev.digest) {
    if (enforce)
      throw store::StoreError(store::StoreError::Kind::kCorrupt,
                              name + " does not match its recorded digest (block map entries missing or extra); "
                                     "not served; run `rbdvault scrub` (--skip-digest-check serves it anyway)");
    spdlog::warn("{} does not match its recorded digest; served anyway (--skip-digest-check)", name);
  }
  std::lock_guard<std::mutex> lock(mu_);
  checked_.insert(key);
}

std::shared_ptr<const Snapshot> StoreView::get(bool refresh) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!refresh || std::chrono::steady_clock::now() - opened_ < ttl_) return current_;
  opened_ = std::chrono::steady_clock::now();
  lock.unlock();  // opening RocksDB takes a while; readers keep using the current snapshot meanwhile
  std::shared_ptr<const Snapshot> fresh;
  try {
    fresh = open();
  } catch (const std::exception& e) {
    spdlog::warn("could not reopen the store to look for new revisions: {}", e.what());
  }
  lock.lock();
  if (fresh) current_ = std::move(fresh);
  return current_;
}

}  // namespace rbdvault::view
