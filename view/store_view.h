// The store as a mount sees it: a read-only store (ReadOnlyStore) and its images and revisions, reopened (at most
// once per `ttl`) when asked to refresh, because a read-only Store sees only what was committed when
// it was opened (docs/format.md §9). A snapshot stays valid for as long as anyone holds it: open files
// keep theirs, so a refresh never changes bytes being read.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "store/format.h"

namespace rbdvault::store {
class ReadOnlyStore;
}

namespace rbdvault::view {

struct Snapshot {
  std::shared_ptr<store::ReadOnlyStore> store;
  // (pool, image) -> committed revisions, ascending; only the image filter's one when there is one.
  std::map<std::pair<std::string, std::string>, std::vector<store::RevisionRecord>> images;

  [[nodiscard]] const std::vector<store::RevisionRecord>* revisions(const std::string& pool,
                                                                    const std::string& image) const;
};

class StoreView {
 public:
  // only: show just this POOL/IMAGE (nullopt: every image of the store). Opens the store now, so
  // a bad directory fails before anything is mounted.
  StoreView(std::string dir, std::optional<std::pair<std::string, std::string>> only, std::chrono::milliseconds ttl);

  // The current snapshot; with refresh, a newer one first when the last open is older than the TTL.
  // A failed reopen keeps the old snapshot (and logs why): a mount must not vanish mid-backup.
  [[nodiscard]] std::shared_ptr<const Snapshot> get(bool refresh);

  // Throws StoreError(kCorrupt) unless the revision's block map sums to its recorded digest, the
  // check a restore makes before it trusts the map: a lost or an added entry would otherwise be
  // served as zeros or as another revision's bytes, each chunk passing its own check. Computed once
  // per revision (a committed revision never changes), one scan at a time (a burst of first
  // requests waits for one scan, not many); a failure is checked again next time. With
  // enforce == false (--skip-digest-check: salvage) a mismatch is logged once and served anyway.
  void check_block_map(store::ReadOnlyStore& store, const store::RevisionRecord& rev, bool enforce);

 private:
  [[nodiscard]] std::shared_ptr<const Snapshot> open() const;

  const std::string dir_;
  const std::optional<std::pair<std::string, std::string>> only_;
  const std::chrono::milliseconds ttl_;
  std::mutex mu_;
  std::shared_ptr<const Snapshot> current_;
  std::mutex check_mu_;  // held for a scan; taken before mu_, never while holding it
  // (revision, digest) pairs checked: matched, or served anyway (enforce == false). The digest is in
  // the key because rebuild-index may give a forgotten revision's id to a new one.
  std::set<std::pair<uint64_t, store::Hash>> checked_;
  std::chrono::steady_clock::time_point opened_;
};

}  // namespace rbdvault::view
