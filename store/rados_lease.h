// Leases of a RADOS store (rados_object_store.h): cls_lock locks on the marker object
// "rbdvault.store" that a holder keeps only while it keeps renewing them, so a holder that dies (or
// freezes) loses its lease after at most one duration and never blocks others for ever, while a
// live one is never broken.
//
//   "rbdvault.writer"   exclusive: the one writer of the store (backup, forget, gc, repair...).
//   "rbdvault.readers"  shared by every reader (restore, mount, serve, scrub, verify, ls, copy's
//                       source, an index rebuild); exclusive for whoever removes data-area objects
//                       that readers may be reading (gc). The local DIR/readers.lock of a local
//                       store, made cross-host.
//
// Every lock is taken once (never waits): a conflict is kLocked at once, naming the holders. The
// cookie is the holder's description ("host H pid P started T: COMMAND"), which is what
// rados_list_lockers returns, so a refusal can name host, pid and command. A thread renews the lock
// every third of its duration; require() is the check before each step that relies on it (a
// commit, a removal, a pack read): it throws kLocked unless the lease is valid for at least the
// margin still, so a holder whose renewals failed stops instead of acting without its lease.
//
// The duration is kLeaseSeconds (30 s), the margin a sixth of it (5 s); RBDVAULT_RADOS_LEASE_SECONDS
// (tests) shortens both, so a test of expiry does not wait half a minute per step.
#pragma once

#include <rados/librados.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace rbdvault::store {

inline constexpr const char* kWriterLockName = "rbdvault.writer";
inline constexpr const char* kReadersLockName = "rbdvault.readers";

struct LeaseTimes {
  std::chrono::milliseconds duration{30000};
  std::chrono::milliseconds margin{5000};
  // kLeaseSeconds, or RBDVAULT_RADOS_LEASE_SECONDS (3..300) if set; the margin is a sixth.
  [[nodiscard]] static LeaseTimes from_environment();
};

// "host H pid P started T: HOLDER" (bounded); HOLDER empty: this process's command line.
[[nodiscard]] std::string lease_cookie(const std::string& holder);

// (client, cookie) of each live holder of lock `name` on the marker object.
[[nodiscard]] std::vector<std::pair<std::string, std::string>> lease_lockers(rados_ioctx_t io, const char* name);

class RadosLease {
 public:
  enum class Mode { kExclusive, kShared };
  // Takes the lock at once or throws: kLocked (`refusal` + the holders) if another holds it, other
  // kinds if the cluster fails. `cookie`: from lease_cookie, unique among this client's locks.
  // `io` must outlive the lease.
  RadosLease(rados_ioctx_t io, const char* name, Mode mode, std::string cookie, LeaseTimes times,
             const std::string& refusal);
  // Stops renewing and unlocks (best effort: an unlock that fails leaves a lock that expires).
  ~RadosLease();
  RadosLease(const RadosLease&) = delete;
  RadosLease& operator=(const RadosLease&) = delete;

  // Throws kLocked ("`what`: refused, ...") unless the lease is still valid for at least the margin.
  void require(const std::string& what) const;
  // Stops the renewing thread (the lease stays until it expires or the destructor unlocks).
  void stop_renewing();
  [[nodiscard]] const std::string& cookie() const { return cookie_; }

 private:
  int lock_call(uint8_t flags);
  void renew_loop();

  rados_ioctx_t io_;
  const char* name_;
  Mode mode_;
  LeaseTimes times_;
  std::string cookie_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::chrono::steady_clock::time_point valid_until_{};
  std::string lost_;  // why a renewal failed, if one did
  std::thread renewer_;
};

// A holder of lock `name` on this host whose process is gone need not be waited out: its cookie
// names this host and its pid. Breaks the first such lock; true if it did. Only for the writer
// lock, whose caller holds the host's local writer lock (so no live local writer is broken).
[[nodiscard]] bool break_dead_local_holder(rados_ioctx_t io, const char* name, const std::string& pool);

}  // namespace rbdvault::store
