#include "agent/hooks.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <vector>

extern char** environ;

namespace rbdvault::agent {

HookFailurePolicy parse_hook_policy(const std::string& text) {
  if (text == "skip") return HookFailurePolicy::kSkip;
  if (text == "crash-consistent") return HookFailurePolicy::kCrashConsistent;
  throw std::invalid_argument("expected skip or crash-consistent");
}

const char* hook_policy_name(HookFailurePolicy p) {
  return p == HookFailurePolicy::kSkip ? "skip" : "crash-consistent";
}

std::string HookResult::describe(int64_t timeout_seconds) const {
  if (timed_out) return "timed out after " + std::to_string(timeout_seconds) + "s (its process group was killed)";
  if (signal) return "killed by signal " + std::to_string(signal);
  return "exited with status " + std::to_string(exit_status);
}

namespace {

void throw_errno(int err, const std::string& what) { throw std::system_error(err, std::generic_category(), what); }

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// This process's environment with `extra` set (replacing variables of the same names).
std::vector<std::string> hook_environment(const std::map<std::string, std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) {
    const std::string entry(*e);
    if (!extra.count(entry.substr(0, entry.find('=')))) env.push_back(entry);
  }
  for (auto& [k, v] : extra) env.push_back(k + "=" + v);
  return env;
}

// Logs complete lines of `pending` (and, at the end, the rest) under `label`.
void log_lines(std::string& pending, const std::string& label, bool flush) {
  size_t nl;
  while ((nl = pending.find('\n')) != std::string::npos) {
    spdlog::info("{}: {}", label, pending.substr(0, nl));
    pending.erase(0, nl + 1);
  }
  if (flush && !pending.empty()) spdlog::info("{}: {}", label, pending);
  if (flush) pending.clear();
}

pid_t spawn_in_group(const std::string& command, const std::vector<std::string>& env, int out_fd) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
  posix_spawn_file_actions_adddup2(&fa, out_fd, 2);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
  // Nothing else of ours leaks into a hook (which may leave a daemon behind): no store files,
  // locks or cluster sockets, even ones some library opened without O_CLOEXEC.
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
  // Its own process group (pgid = its pid): a timeout kills the hook and everything it started.
  posix_spawnattr_setpgroup(&attr, 0);
  // Default dispositions and no blocked signals, whatever this process (a daemon) has set.
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const char* argv[] = {"sh", "-c", command.c_str(), nullptr};
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, "/bin/sh", &fa, &attr, const_cast<char* const*>(argv), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw_errno(rc, "cannot start hook /bin/sh");
  return pid;
}

}  // namespace

HookResult run_hook(const std::string& command, const std::map<std::string, std::string>& env,
                    std::chrono::milliseconds timeout, const std::string& label) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno(errno, "hook pipe");
  Fd read_end{fds[0]};
  pid_t pid;
  {
    Fd write_end{fds[1]};
    pid = spawn_in_group(command, hook_environment(env), write_end.fd);
  }  // our copy of the write end closed: EOF once the hook's group has closed theirs
  spdlog::info("{}: running {}", label, command);

  HookResult result;
  std::string pending;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool eof = false, reaped = false;
  int status = 0;
  // Read until the hook has exited and its output is drained. A background child that keeps the
  // pipe open does not hold us up: once the shell has exited we stop at the first quiet moment.
  for (;;) {
    if (!reaped && ::waitpid(pid, &status, WNOHANG) == pid) reaped = true;
    if (reaped && eof) break;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (!reaped && left.count() <= 0) {
      result.timed_out = true;
      ::kill(-pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      break;
    }
    const int slice = static_cast<int>(std::min<int64_t>(left.count(), 50));
    if (eof) {  // output closed, shell still running: wait for it
      ::poll(nullptr, 0, slice);
      continue;
    }
    pollfd p{read_end.fd, POLLIN, 0};
    const int n = ::poll(&p, 1, reaped ? 0 : slice);
    if (n == 0 && reaped) break;  // exited, and nothing more to read right now
    if (n <= 0) continue;
    char buf[4096];
    const ssize_t got = ::read(read_end.fd, buf, sizeof buf);
    if (got > 0) {
      const size_t room = kMaxHookOutput - result.output.size();
      result.output.append(buf, std::min(static_cast<size_t>(got), room));
      pending.append(buf, static_cast<size_t>(got));
      log_lines(pending, label, false);
    } else if (got == 0 || errno != EINTR) {
      eof = true;
    }
  }
  log_lines(pending, label, true);
  if (WIFEXITED(status) && !result.timed_out) result.exit_status = WEXITSTATUS(status);
  if (WIFSIGNALED(status) && !result.timed_out) result.signal = WTERMSIG(status);
  spdlog::info("{}: {}", label, result.describe(timeout.count() / 1000));
  return result;
}

bool snapshot_between_hooks(const SnapshotHooks& hooks, const std::map<std::string, std::string>& env,
                            const std::string& label, const std::function<void()>& take) {
  return snapshots_between_hooks(hooks, env, label, [&] {
    take();
    return true;
  });
}

bool snapshots_between_hooks(const SnapshotHooks& hooks, const std::map<std::string, std::string>& env,
                             const std::string& label, const std::function<bool()>& take) {
  const std::chrono::milliseconds timeout(hooks.timeout_seconds * 1000);
  auto run = [&](const std::string& which, const std::string& snapshot_result) {
    std::map<std::string, std::string> e = env;
    e["RBDVAULT_HOOK"] = which;
    if (!snapshot_result.empty()) e["RBDVAULT_SNAPSHOT_RESULT"] = snapshot_result;
    return run_hook(which == "pre" ? hooks.pre : hooks.post, e, timeout, label + " " + which + "-snapshot hook");
  };
  auto post = [&](const std::string& snapshot_result) {
    if (hooks.post.empty()) return;
    try {
      const HookResult r = run("post", snapshot_result);
      if (!r.ok())
        spdlog::warn("{}: post-snapshot hook {}; check that the application resumed", label,
                     r.describe(hooks.timeout_seconds));
    } catch (const std::exception& e) {  // must not hide the snapshot's own outcome
      spdlog::warn("{}: post-snapshot hook: {}; check that the application resumed", label, e.what());
    }
  };
  bool application = false;
  if (!hooks.pre.empty()) {
    const HookResult r = run("pre", "");
    application = r.ok();
    if (!r.ok()) {
      const std::string why = "pre-snapshot hook " + r.describe(hooks.timeout_seconds);
      if (hooks.on_failure == HookFailurePolicy::kSkip) {
        post("skipped");
        throw HookError(label + ": " + why + "; backup skipped (on-hook-failure skip)");
      }
      spdlog::warn("{}: {}; taking a crash-consistent snapshot (on-hook-failure crash-consistent)", label, why);
    }
  }
  bool all_taken = false;
  try {
    all_taken = take();
  } catch (...) {
    post("failed");
    throw;
  }
  post(all_taken ? "ok" : "failed");
  return application;
}

}  // namespace rbdvault::agent
