// Private to the RADOS backend (rados_object_store.cc, rados_lease.cc): the state a
// RadosObjectStore shares with its readers, sinks and lease guards.
#pragma once

#include <rados/librados.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "store/crash_points.h"
#include "store/rados_lease.h"
#include "store/rados_object_store.h"
#include "store/rados_read_ahead.h"

namespace rbdvault::store {

struct RadosObjectStore::Impl {
  RadosLocation where;
  rados_t cluster = nullptr;
  rados_ioctx_t io = nullptr;
  // Every reader's read-ahead buffers together (rados_read_ahead.h).
  std::shared_ptr<ReadAheadBudget> read_ahead = std::make_shared<ReadAheadBudget>(kReadAheadBudgetBytes);

  LeaseTimes times = LeaseTimes::from_environment();
  // The odd epoch whose writer this process fenced off (rados_fence.h): once is enough.
  uint64_t fenced_epoch = 0;
  // The backend's own steps (docs/format.md §15), e.g. "rados.commit_checked.manifests".
  CrashPoints crash;

  // The leases (rados_lease.h) this store holds; all under leases_mu.
  std::mutex leases_mu;
  std::unique_ptr<RadosLease> writer;
  std::vector<const RadosLease*> readers;  // owned by the ReadersLease guards
  unsigned leases_taken = 0;
  std::filesystem::path cache_dir;

  ~Impl() {
    if (io) rados_ioctx_destroy(io);
    if (cluster) rados_shutdown(cluster);
  }

  // Throws unless every lease this store holds is valid with a margin: the check before each
  // commit, removal and read (a store that holds none, e.g. at init, checks nothing).
  void require_lease(const std::string& what) {
    std::lock_guard g(leases_mu);
    if (writer) writer->require(what);
    for (const RadosLease* r : readers) r->require(what);
  }
};

// Reads a decimal xattr; nullopt if absent (rados_object_store.cc).
[[nodiscard]] std::optional<uint64_t> get_u64_xattr(rados_ioctx_t io, const std::string& oid, const char* name);

}  // namespace rbdvault::store
