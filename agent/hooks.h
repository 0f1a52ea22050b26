// Commands run around a backup's snapshot (a guest fsfreeze before, the thaw after) so that the
// revision is application-consistent rather than crash-consistent. docs/operations.md has examples.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>

namespace rbdvault::agent {

// What to do when the pre-snapshot hook fails or times out.
enum class HookFailurePolicy {
  kSkip,             // no snapshot, no revision: the backup fails with HookError
  kCrashConsistent,  // take the snapshot anyway (a warning); the revision is marked crash-consistent
};
// "skip" / "crash-consistent"; throws std::invalid_argument otherwise.
[[nodiscard]] HookFailurePolicy parse_hook_policy(const std::string& text);
[[nodiscard]] const char* hook_policy_name(HookFailurePolicy p);

struct SnapshotHooks {
  std::string pre, post;  // /bin/sh -c commands; empty: none
  int64_t timeout_seconds = 60;
  HookFailurePolicy on_failure = HookFailurePolicy::kSkip;
  [[nodiscard]] bool empty() const { return pre.empty() && post.empty(); }
};

// The pre hook failed (or timed out) under the "skip" policy: no backup was taken. Its own error
// class (ErrorClass::kHookFailed) so that scripts tell it from a Ceph or store failure.
struct HookError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct HookResult {
  int exit_status = -1;  // when it exited; -1 otherwise
  int signal = 0;        // the signal that ended it, if any
  bool timed_out = false;
  std::string output;  // stdout and stderr together, at most kMaxHookOutput bytes
  [[nodiscard]] bool ok() const { return !timed_out && signal == 0 && exit_status == 0; }
  // "exited with status 3", "killed by signal 9", "timed out after 5s" (for messages).
  [[nodiscard]] std::string describe(int64_t timeout_seconds) const;
};

inline constexpr size_t kMaxHookOutput = 64 * 1024;

// Runs `command` with /bin/sh -c in a process group of its own, stdin from /dev/null, with `env`
// added to this process's environment. Past `timeout` the whole group is killed (SIGKILL), so a
// hook that started children cannot leave them running. Each output line is logged at info level
// under `label`. Throws std::system_error when the command cannot be started at all.
[[nodiscard]] HookResult run_hook(const std::string& command, const std::map<std::string, std::string>& env,
                                  std::chrono::milliseconds timeout, const std::string& label);

// Takes a snapshot between the hooks: runs hooks.pre (if any), then `take`, then hooks.post. The
// post hook runs whenever the pre hook was started, even when it failed or `take` threw (a freeze
// must always be thawed). `env` (RBDVAULT_POOL, _IMAGE, _SNAPSHOT, _REVISION) goes to both, plus
// RBDVAULT_HOOK=pre|post and, for post, RBDVAULT_SNAPSHOT_RESULT=ok|failed|skipped. Returns true
// when the snapshot is application-consistent (a pre hook ran and succeeded). A failed pre hook
// throws HookError under kSkip (after the post hook), and under kCrashConsistent logs a warning
// and returns false. A failed post hook only logs a warning: the snapshot was already taken.
[[nodiscard]] bool snapshot_between_hooks(const SnapshotHooks& hooks, const std::map<std::string, std::string>& env,
                                          const std::string& label, const std::function<void()>& take);
// The same for several snapshots (a consistency group): `take` returns false when some of them
// failed but the others stand; the post hook is then told "failed" and the result still returned.
[[nodiscard]] bool snapshots_between_hooks(const SnapshotHooks& hooks, const std::map<std::string, std::string>& env,
                                           const std::string& label, const std::function<bool()>& take);

}  // namespace rbdvault::agent
