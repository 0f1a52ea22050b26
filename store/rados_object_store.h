// The RADOS backend of the storage seam (object_store.h): the data area of a store lives in a pool
// (and optional namespace) of a Ceph cluster, object NAME is the RADOS object NAME. Uses librados'
// C API only: Ceph's C++ headers do not compile with clang in C++20 (the fuzz build builds store/).
// These files (with rados_lease.{h,cc}, the leases, and rados_impl.h, their shared state) are the
// only ones in store/ that talk to Ceph.
//
// Commit without rename (RADOS has none): a sink creates its object exclusively with its first
// extent (so a taken name fails before anything is written over it), streams the rest with a
// bounded number of asynchronous writes, and commits by setting the xattr "rbdvault.size" to the
// object's length in one op asserting the object exists. An object without that xattr is an
// unfinished sink's leftover: open, size and list ignore it and remove_incomplete deletes it. A
// small object (everything fits in one extent) is created, written and marked in one atomic op.
//
// The leases (rados_lease.h): the writer lease (begin_writing), an exclusive cls_lock
// "rbdvault.writer" on the marker object "rbdvault.store", and the reader lease (lease_readers),
// "rbdvault.readers" on the same object, shared by readers and exclusive for gc. Each is renewed
// by a thread every third of kLeaseSeconds; every commit, removal and read first checks that each
// lease this store holds is still valid with a margin (kLeaseMarginSeconds): a holder whose
// renewals failed fails at that point instead of committing, removing or reading without it. A
// holder that dies stops renewing; its lock expires (a dead writer on this host is broken at once).
//
// The epoch (xattr "rbdvault.epoch" on the marker) is how a host's index cache (rados_cache.h)
// knows whether another host wrote since: a writer makes it odd when it starts and even when it
// ends, under the lease.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "store/object_store.h"

namespace rbdvault::store {

// Where a RADOS store is and how to reach its cluster.
struct RadosLocation {
  std::string pool;
  std::string ns;       // the RADOS namespace; empty: the default one
  std::string conf;     // ceph.conf of the backup cluster; empty: librados' default search
  std::string id;       // client id ("backup" for client.backup); empty: admin
  std::string keyring;  // empty: what the conf says
  int op_timeout_seconds = 30;  // mon and osd op timeouts: a stopped cluster fails, never hangs
};

inline constexpr const char* kRadosStoreScheme = "rados:";
inline constexpr const char* kRadosMarkerObject = "rbdvault.store";
inline constexpr int kLeaseSeconds = 30;
inline constexpr int kLeaseMarginSeconds = 5;
// Packs of a RADOS store are sealed at this size (see docs/operations.md): well below
// osd_max_object_size (128 MiB by default) even after the one chunk (at most 4 MiB plus framing)
// that overshoots the target, large enough that a TiB of chunks is only 16k objects.
inline constexpr uint64_t kRadosPackTargetBytes = 64ull << 20;

// "rados:POOL[/NAMESPACE]" -> pool and namespace; nullopt if `spec` does not start with "rados:".
// Throws StoreError(kInvalid) for a malformed one.
[[nodiscard]] std::optional<RadosLocation> parse_rados_spec(const std::string& spec);

class RadosObjectStore final : public ObjectStore {
 public:
  // Connects (throws StoreError: kNotFound for a missing pool, kIO if unreachable).
  explicit RadosObjectStore(const RadosLocation& where);
  ~RadosObjectStore() override;
  RadosObjectStore(const RadosObjectStore&) = delete;
  RadosObjectStore& operator=(const RadosObjectStore&) = delete;

  std::unique_ptr<ObjectSink> create(const std::string& name) override;
  std::unique_ptr<ObjectReader> open(const std::string& name) override;
  std::optional<uint64_t> size(const std::string& name) override;
  std::vector<std::string> list(const std::string& prefix) override;
  void remove(const std::string& name) override;
  void remove_incomplete(const std::string& prefix) override;
  void begin_writing(const std::string& holder, const std::filesystem::path& cache_dir) override;
  bool replace_marker(const std::string& from, const std::string& to) override;
  std::string display_name() const override;
  // The object's version (the PG log version of its last write: an object created later under the
  // same name gets a newer one) with its committed size.
  std::optional<std::string> identity(const std::string& name) override;
  std::unique_ptr<Lease> lease_readers(const std::string& holder, bool exclusive,
                                       const std::filesystem::path& cache_dir) override;
  uint64_t pack_target_cap() const override { return kRadosPackTargetBytes; }

  // The marker's epoch (0 if never written).
  [[nodiscard]] uint64_t epoch();
  // The removals counter (advanced by each exclusive reader lease; 0 if never).
  [[nodiscard]] uint64_t removals();
  // With no live writer lease and the epoch still the odd `epoch`: blocklists the writer that
  // recorded itself for it, if another client (rados_fence.h). Returns its address, or empty.
  std::string fence_unfinished_writer(uint64_t epoch);
  // Descriptions of the current holders of the writer lease (empty: none).
  [[nodiscard]] std::vector<std::string> lease_holders();
  const RadosLocation& location() const;
  // Bytes that readers served from read-ahead (rados_read_ahead.h) instead of a read of their own.
  [[nodiscard]] uint64_t read_ahead_bytes_served() const;

  struct Impl;

 private:
  std::optional<uint64_t> listed_size(const std::string& name);

  std::shared_ptr<Impl> impl_;
};

}  // namespace rbdvault::store
