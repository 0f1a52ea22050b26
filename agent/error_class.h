// Error classes: the one place that turns an exception into what a caller can act on (exit code
// of the CLI, the per-image class in `run --format json`). docs/usage.md has the same table; keep
// both in step. Like borg's, the codes say "retry later" apart from "fix something", so scripts
// and the agent need not parse messages.
#pragma once

#include <exception>
#include <stdexcept>

namespace rbdvault::agent {

enum class ErrorClass : int {
  kOk = 0,
  kFailed = 1,       // the operation failed for a reason none of the classes below names
  kUsage = 2,        // bad command line, bad config file, a directory that is not a store
  kNotFound = 3,     // pool, image, revision, store, config or keyring file does not exist
  kLocked = 4,       // store locked by another process, image busy: retry later
  kDamage = 5,       // scrub/verify/repair found damage, stored data fails its checksum
  kUnreachable = 6,  // Ceph cluster unreachable or timed out: transient, retry later
  kNoSpace = 7,      // no space (or quota) left in the store's file system or the cluster
  kExists = 8,       // the target already exists (init on a store, restore onto an image/file)
  kHookFailed = 9,   // a pre-snapshot hook failed or timed out; the backup was skipped (policy skip)
  kInternal = 70,    // a bug: logic_error, an exception nobody expected (EX_SOFTWARE)
};

// Exit code of a process killed by (or stopping for) signal N, as shells report it.
constexpr int kSignalExitBase = 128;

// A mistake on the command line. Thrown by the CLI's parsing; always kUsage.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The class of an exception: UsageError, ConfigError, store::StoreError by kind, rbd::CephError by
// errno, std::logic_error and anything unknown as kInternal, other std::exception as kFailed.
[[nodiscard]] ErrorClass classify(const std::exception_ptr& error) noexcept;
// The class of a negative errno from librbd/librados (or the file system).
[[nodiscard]] ErrorClass classify_errno(int negative_errno) noexcept;
[[nodiscard]] constexpr int exit_code(ErrorClass c) noexcept { return static_cast<int>(c); }
// "ok", "failed", "usage", "not-found", "locked", "damage", "unreachable", "no-space", "exists",
// "hook-failed", "internal": the names `run --format json` reports.
[[nodiscard]] const char* class_name(ErrorClass c) noexcept;

}  // namespace rbdvault::agent
