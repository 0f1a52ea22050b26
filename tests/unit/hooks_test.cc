// The snapshot hook runner (agent/hooks.h): environment, exit status, timeouts that kill the whole
// process group, output captured into the log, and the pre/snapshot/post sequence with its policies.
#include "agent/hooks.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "agent/batch_config.h"
#include "agent/error_class.h"

using namespace rbdvault::agent;
using namespace std::chrono_literals;

namespace {

// Captures what spdlog logs during the test.
struct LogCapture {
  std::ostringstream out;
  std::shared_ptr<spdlog::logger> saved = spdlog::default_logger();
  LogCapture() {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  }
  ~LogCapture() { spdlog::set_default_logger(saved); }
};

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "/hooks-" + std::to_string(::getpid()) + "-" + name;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace

TEST(Hooks, PassesEnvironmentAndCapturesOutput) {
  LogCapture log;
  const HookResult r =
      run_hook("echo pool=$RBDVAULT_POOL image=$RBDVAULT_IMAGE; echo to-stderr >&2; echo PATH-kept=${PATH:+yes}",
               {{"RBDVAULT_POOL", "rbd"}, {"RBDVAULT_IMAGE", "vm-1"}}, 10s, "test hook");
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.exit_status, 0);
  EXPECT_NE(r.output.find("pool=rbd image=vm-1\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("to-stderr\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("PATH-kept=yes"), std::string::npos) << r.output;
  EXPECT_NE(log.out.str().find("test hook: pool=rbd image=vm-1"), std::string::npos) << log.out.str();
  EXPECT_NE(log.out.str().find("test hook: to-stderr"), std::string::npos) << log.out.str();
}

TEST(Hooks, ReportsExitStatusAndSignal) {
  const HookResult r = run_hook("exit 3", {}, 10s, "t");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.exit_status, 3);
  EXPECT_EQ(r.describe(10), "exited with status 3");
  const HookResult k = run_hook("kill -TERM $$", {}, 10s, "t");
  EXPECT_FALSE(k.ok());
  EXPECT_EQ(k.signal, SIGTERM);
  const HookResult missing = run_hook("/no/such/command", {}, 10s, "t");
  EXPECT_EQ(missing.exit_status, 127);
}

TEST(Hooks, StdinIsEmpty) {
  const HookResult r = run_hook("cat; echo end", {}, 10s, "t");
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.output, "end\n");
}

TEST(Hooks, TimeoutKillsTheWholeProcessGroup) {
  // The hook starts a background child that records its pid, then hangs. Both must die.
  const std::string pidfile = temp_path("child.pid");
  std::remove(pidfile.c_str());
  // 3 s: the shell must start and write the pid file first, also under a sanitizer on a busy host.
  const HookResult r = run_hook("sleep 1000 & echo $! > " + pidfile + "; echo started; wait", {}, 3s, "t");
  EXPECT_TRUE(r.timed_out);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.describe(3).find("timed out after 3s"), std::string::npos);
  EXPECT_EQ(r.output, "started\n");
  const pid_t child = static_cast<pid_t>(std::stol(slurp(pidfile)));
  // The child was SIGKILLed with its group; once its parent shell is reaped it is reparented and
  // reaped by init, so it is gone (or at most a zombie for a moment).
  bool gone = false;
  for (int i = 0; i < 2000 && !gone; ++i) {
    gone = ::kill(child, 0) != 0 || slurp("/proc/" + std::to_string(child) + "/stat").find(") Z") != std::string::npos;
    if (!gone) ::usleep(5000);
  }
  EXPECT_TRUE(gone) << "background child " << child << " of a timed-out hook still runs";
  std::remove(pidfile.c_str());
}

TEST(Hooks, BackgroundChildHoldingOutputDoesNotBlock) {
  // A hook that leaves a daemon behind with our pipe open must still return when the shell exits.
  const std::string pidfile = temp_path("daemon.pid");
  const HookResult r = run_hook("sleep 1000 & echo $! > " + pidfile + "; echo done", {}, 30s, "t");
  EXPECT_TRUE(r.ok());
  EXPECT_FALSE(r.timed_out);
  ::kill(static_cast<pid_t>(std::stol(slurp(pidfile))), SIGKILL);
  std::remove(pidfile.c_str());
}

namespace {

// Runs snapshot_between_hooks with hooks that append "<hook> <result>" to a file; returns the file.
struct Sequence {
  std::string file = temp_path("seq");
  SnapshotHooks hooks;
  Sequence(const std::string& pre_body, HookFailurePolicy p, int64_t timeout = 10) {
    std::remove(file.c_str());
    hooks.pre = "echo \"pre $RBDVAULT_SNAPSHOT\" >> " + file + "; " + pre_body;
    hooks.post = "echo \"post $RBDVAULT_SNAPSHOT_RESULT $RBDVAULT_HOOK\" >> " + file;
    hooks.on_failure = p;
    hooks.timeout_seconds = timeout;
  }
  ~Sequence() { std::remove(file.c_str()); }
  std::string log() const { return slurp(file); }
};

const std::map<std::string, std::string> kEnv{{"RBDVAULT_SNAPSHOT", "snap-7"}};

}  // namespace

TEST(HookSequence, SuccessIsApplicationConsistent) {
  Sequence s("true", HookFailurePolicy::kSkip);
  bool taken = false;
  EXPECT_TRUE(snapshot_between_hooks(s.hooks, kEnv, "t", [&] { taken = true; }));
  EXPECT_TRUE(taken);
  EXPECT_EQ(s.log(), "pre snap-7\npost ok post\n");
}

TEST(HookSequence, FailedPreUnderSkipThawsAndThrows) {
  Sequence s("exit 4", HookFailurePolicy::kSkip);
  bool taken = false;
  try {
    (void)snapshot_between_hooks(s.hooks, kEnv, "backup rbd/x", [&] { taken = true; });
    FAIL() << "no HookError";
  } catch (const HookError& e) {
    EXPECT_NE(std::string(e.what()).find("pre-snapshot hook exited with status 4"), std::string::npos) << e.what();
    EXPECT_EQ(classify(std::current_exception()), ErrorClass::kHookFailed);
  }
  EXPECT_FALSE(taken);
  EXPECT_EQ(s.log(), "pre snap-7\npost skipped post\n");
}

TEST(HookSequence, FailedPreUnderCrashConsistentTakesTheSnapshot) {
  Sequence s("exit 4", HookFailurePolicy::kCrashConsistent);
  bool taken = false;
  EXPECT_FALSE(snapshot_between_hooks(s.hooks, kEnv, "t", [&] { taken = true; }));
  EXPECT_TRUE(taken);
  EXPECT_EQ(s.log(), "pre snap-7\npost ok post\n");
}

TEST(HookSequence, HangingPreTimesOut) {
  Sequence s("sleep 1000", HookFailurePolicy::kCrashConsistent, 1);
  bool taken = false;
  EXPECT_FALSE(snapshot_between_hooks(s.hooks, kEnv, "t", [&] { taken = true; }));
  EXPECT_TRUE(taken);
  Sequence k("sleep 1000", HookFailurePolicy::kSkip, 1);
  EXPECT_THROW((void)snapshot_between_hooks(k.hooks, kEnv, "t", [&] {}), HookError);
}

TEST(HookSequence, PostRunsWhenTheSnapshotFails) {
  Sequence s("true", HookFailurePolicy::kSkip);
  EXPECT_THROW((void)snapshot_between_hooks(s.hooks, kEnv, "t", [] { throw std::runtime_error("quota exceeded"); }),
               std::runtime_error);
  EXPECT_EQ(s.log(), "pre snap-7\npost failed post\n");
}

TEST(HookSequence, NoHooksIsCrashConsistent) {
  bool taken = false;
  EXPECT_FALSE(snapshot_between_hooks(SnapshotHooks{}, kEnv, "t", [&] { taken = true; }));
  EXPECT_TRUE(taken);
}

TEST(HookConfig, JobAndImageKeys) {
  const std::string text =
      "[store]\npath = /tmp/s\n"
      "[defaults]\nhook-timeout = 2m\n"
      "[job.vms]\npool = rbd\npre-snapshot = virsh domfsfreeze \"$RBDVAULT_IMAGE\"\n"
      "post-snapshot = virsh domfsthaw \"$RBDVAULT_IMAGE\"\non-hook-failure = crash-consistent\n"
      "[image.rbd/db]\npre-snapshot = /usr/local/bin/flush --x=1\nhook-timeout = 5s\n"
      "[image.rbd/plain]\npre-snapshot =\npost-snapshot =\n";
  const BatchConfig c = parse_batch_config(text, "t.conf");
  const ImageSettings vm = *c.find_settings("rbd", "vm-1");
  EXPECT_EQ(vm.hooks.pre, "virsh domfsfreeze \"$RBDVAULT_IMAGE\"");
  EXPECT_EQ(vm.hooks.post, "virsh domfsthaw \"$RBDVAULT_IMAGE\"");
  EXPECT_EQ(vm.hooks.timeout_seconds, 120);
  EXPECT_EQ(vm.hooks.on_failure, HookFailurePolicy::kCrashConsistent);
  const ImageSettings db = *c.find_settings("rbd", "db");
  EXPECT_EQ(db.hooks.pre, "/usr/local/bin/flush --x=1");  // '=' inside the value is kept
  EXPECT_EQ(db.hooks.post, "virsh domfsthaw \"$RBDVAULT_IMAGE\"");
  EXPECT_EQ(db.hooks.timeout_seconds, 5);
  EXPECT_TRUE(c.find_settings("rbd", "plain")->hooks.empty());  // an empty value turns them off
}

TEST(HookConfig, BadValuesNameTheLine) {
  const std::string base = "[store]\npath = /tmp/s\n[job.vms]\npool = rbd\n";
  for (const std::string bad : {"on-hook-failure = ignore", "hook-timeout = 0", "hook-timeout = soon"}) {
    try {
      (void)parse_batch_config(base + bad + "\n", "t.conf");
      FAIL() << bad;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("t.conf:5:"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(parse_hook_policy("skip"), HookFailurePolicy::kSkip);
  EXPECT_THROW((void)parse_hook_policy("Skip"), std::invalid_argument);
}

TEST(HookConfig, ShippedExample) {
  const BatchConfig c = load_batch_config(RBDVAULT_SOURCE_DIR "/deploy/rbdvault.conf.example");
  const ImageSettings vm = *c.find_settings("vmpool", "vm-104-disk-1");
  EXPECT_EQ(vm.hooks.pre, "/usr/share/rbdvault/hooks/proxmox-fsfreeze");
  EXPECT_EQ(vm.hooks.on_failure, HookFailurePolicy::kCrashConsistent);
  EXPECT_EQ(c.find_settings("vmpool", "vm-101-disk-0")->hooks.on_failure, HookFailurePolicy::kSkip);
  EXPECT_TRUE(c.find_settings("volumes", "volume-1")->hooks.empty());
}
