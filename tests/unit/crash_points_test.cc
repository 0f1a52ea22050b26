// Crash points: the test hook every kill test relies on must itself be right.
#include "store/crash_points.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace rbdvault::store {
namespace {

// Passes the steps in order in a child with RBDVAULT_CRASH_AT=`at`; returns how many steps the
// child passed before dying (-1: it was not killed).
int steps_passed_before_kill(const std::string& at, const std::vector<std::string>& steps) {
  int pipefd[2];
  if (::pipe(pipefd) != 0) return -2;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipefd[0]);
    ::setenv("RBDVAULT_CRASH_AT", at.c_str(), 1);
    CrashPoints points;
    points.load_environment();
    for (auto& s : steps) {
      points.reached(s);
      char c = 'x';
      if (::write(pipefd[1], &c, 1) != 1) ::_exit(3);
    }
    ::_exit(0);
  }
  ::close(pipefd[1]);
  int passed = 0;
  char c;
  while (::read(pipefd[0], &c, 1) == 1) ++passed;
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL ? passed : -1;
}

TEST(CrashPoints, KillsAtTheNthPassOfANamedStep) {
  const std::vector<std::string> steps{"a", "b", "a", "c", "a"};
  EXPECT_EQ(steps_passed_before_kill("a", steps), 0);
  EXPECT_EQ(steps_passed_before_kill("a:2", steps), 2);
  EXPECT_EQ(steps_passed_before_kill("c:1", steps), 3);
  EXPECT_EQ(steps_passed_before_kill("*:4", steps), 3);
  EXPECT_EQ(steps_passed_before_kill("a:4", steps), -1);  // never reached: runs to the end
  EXPECT_EQ(steps_passed_before_kill("zzz", steps), -1);
}

TEST(CrashPoints, StopHoldsTheProcessAtTheStepUntilContinued) {
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipefd[0]);
    ::setenv("RBDVAULT_STOP_AT", "b:2", 1);
    CrashPoints points;
    points.load_environment();
    for (const char* s : {"a", "b", "b", "c"}) {
      points.reached(s);
      if (::write(pipefd[1], s, 1) != 1) ::_exit(3);
    }
    ::_exit(0);
  }
  ::close(pipefd[1]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, WUNTRACED), pid);
  ASSERT_TRUE(WIFSTOPPED(status));
  std::string seen(8, '\0');
  seen.resize(static_cast<size_t>(::read(pipefd[0], seen.data(), seen.size())));
  EXPECT_EQ(seen, "ab");  // held at the second "b", before passing it
  ::kill(pid, SIGCONT);
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  char rest[8];
  EXPECT_EQ(std::string(rest, static_cast<size_t>(::read(pipefd[0], rest, sizeof rest))), "bc");
  ::close(pipefd[0]);
}

TEST(CrashPoints, TraceListsEveryStepPassed) {
  const std::string path = "/tmp/rbdvault-crash-trace-" + std::to_string(::getpid());
  ::unlink(path.c_str());
  ::setenv("RBDVAULT_CRASH_TRACE", path.c_str(), 1);
  ::unsetenv("RBDVAULT_CRASH_AT");
  CrashPoints points;
  points.load_environment();
  ::unsetenv("RBDVAULT_CRASH_TRACE");
  EXPECT_TRUE(points.enabled());
  for (const char* s : {"x", "y", "x"}) points.reached(s);
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  EXPECT_EQ(lines, (std::vector<std::string>{"x", "y", "x"}));
  ::unlink(path.c_str());
}

TEST(CrashPoints, MalformedSpecIsRefusedAndUnsetMeansOff) {
  for (const char* var : {"RBDVAULT_CRASH_AT", "RBDVAULT_STOP_AT"}) {
    for (const char* bad : {"a:0", "a:", "a:x", ":3", "a:-1"}) {
      ::setenv(var, bad, 1);
      CrashPoints points;
      EXPECT_THROW(points.load_environment(), std::invalid_argument) << var << "=" << bad;
    }
    ::unsetenv(var);
  }
  ::unsetenv("RBDVAULT_CRASH_TRACE");
  CrashPoints off;
  off.load_environment();
  EXPECT_FALSE(off.enabled());
  off.reached("anything");  // a no-op
}

}  // namespace
}  // namespace rbdvault::store
