#include "view/fsck.h"

#include <fcntl.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>

#include "store/error.h"
#include "view/blkid_probe.h"
#include "view/revision_fs.h"

extern char** environ;

namespace rbdvault::view {

const char* state_name(FsckState s) {
  switch (s) {
    case FsckState::kOk: return "OK";
    case FsckState::kWarning: return "WARNING";
    case FsckState::kCritical: return "CRITICAL";
    case FsckState::kUnknown: return "UNKNOWN";
  }
  return "UNKNOWN";
}

namespace {

// A checker and how its exit code maps to a state. Every one is run in its no-modify mode.
struct Checker {
  std::vector<std::string> argv;  // the file is appended
  FsckState (*state)(int exit_code);
};

FsckState e2fsck_state(int rc) {
  // 0 clean; 1/2 "corrected" (cannot happen with -n); 4 errors left; 8 operational error, which for
  // a file blkid recognised as ext* means e2fsck could not use its superblock: damage.
  if (rc == 0) return FsckState::kOk;
  if (rc == 1 || rc == 2) return FsckState::kWarning;
  if (rc == 4 || rc == 8 || rc == 12) return FsckState::kCritical;
  return FsckState::kUnknown;
}
FsckState xfs_repair_state(int rc) {
  // 0 clean; 1 corruption found; 2 a dirty log (a crash-consistent snapshot; -n does not replay it).
  return rc == 0 ? FsckState::kOk : rc == 1 ? FsckState::kCritical : rc == 2 ? FsckState::kWarning : FsckState::kUnknown;
}
FsckState fsck_vfat_state(int rc) {
  return rc == 0 ? FsckState::kOk : rc == 1 ? FsckState::kCritical : FsckState::kUnknown;
}

std::optional<Checker> checker_for(const std::string& type) {
  if (type == "ext2" || type == "ext3" || type == "ext4" || type == "ext4dev") return Checker{{"e2fsck", "-fn"}, e2fsck_state};
  if (type == "xfs") return Checker{{"xfs_repair", "-n", "-f"}, xfs_repair_state};
  if (type == "vfat") return Checker{{"fsck.vfat", "-n"}, fsck_vfat_state};
  return std::nullopt;
}

// The checkers live in sbin, which a non-root PATH may lack.
std::optional<std::string> find_program(const std::string& name) {
  std::string path = std::getenv("PATH") ? std::getenv("PATH") : "";
  path += ":/usr/sbin:/sbin";
  size_t pos = 0;
  while (pos <= path.size()) {
    const size_t colon = std::min(path.find(':', pos), path.size());
    const std::string candidate = path.substr(pos, colon - pos) + "/" + name;
    if (colon > pos && ::access(candidate.c_str(), X_OK) == 0) return candidate;
    pos = colon + 1;
  }
  return std::nullopt;
}

// Runs argv with stdin from /dev/null and stdout+stderr captured; returns (exit code, output).
std::pair<int, std::string> run_captured(const std::vector<std::string>& args) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) store::throw_errno("pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int err = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  std::string out;
  if (err == 0) {
    std::array<char, 4096> buf;
    for (;;) {
      const ssize_t n = ::read(fds[0], buf.data(), buf.size());
      if (n > 0) out.append(buf.data(), static_cast<size_t>(n));
      else if (n == 0 || errno != EINTR) break;
    }
  }
  ::close(fds[0]);
  if (err != 0) throw std::runtime_error("cannot run " + args[0] + ": " + std::strerror(err));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out};
}

std::string last_line(const std::string& text) {
  size_t end = text.find_last_not_of(" \n\t");
  if (end == std::string::npos) return {};
  const size_t start = text.find_last_of('\n', end);
  return text.substr(start == std::string::npos ? 0 : start + 1, end - (start == std::string::npos ? 0 : start + 1) + 1);
}

void check_one(const std::string& file, FsckEntry& e) {
  auto fs = probe_filesystem(file);
  if (!fs) {
    e.summary = "no file system recognised";
    return;
  }
  e.type = fs->type;
  e.label = fs->label;
  auto checker = checker_for(fs->type);
  if (!checker) {
    e.summary = "no checker for " + fs->type;
    return;
  }
  auto program = find_program(checker->argv[0]);
  if (!program) {
    e.state = FsckState::kUnknown;
    e.summary = checker->argv[0] + " is not installed";
    return;
  }
  std::vector<std::string> argv = checker->argv;
  e.checker = argv[0];
  for (size_t i = 1; i < argv.size(); ++i) e.checker += " " + argv[i];
  argv[0] = *program;
  argv.push_back(file);
  auto [rc, out] = run_captured(argv);
  e.exit_code = rc;
  e.state = checker->state(rc);
  spdlog::debug("{} {} exited {}:\n{}", e.checker, file, rc, out);
  e.summary = e.checker + " exit " + std::to_string(rc) + (fs->bad_checksum ? " (superblock checksum bad)" : "") +
              ": " + last_line(out);
}

FsckState worst(FsckState a, FsckState b) {
  auto rank = [](FsckState s) { return s == FsckState::kCritical ? 3 : s == FsckState::kUnknown ? 2 : s == FsckState::kWarning ? 1 : 0; };
  return rank(a) >= rank(b) ? a : b;
}

// A temporary mount point, removed at the end (after the mount on it is gone).
struct TempDir {
  std::string path;
  TempDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/rbdvault-fsck.XXXXXX";
    if (!::mkdtemp(templ.data())) store::throw_errno("mkdtemp " + templ);
    path = templ;
  }
  ~TempDir() { ::rmdir(path.c_str()); }
};

}  // namespace

FsckResult fsck_revision(const std::string& store_dir, const store::RevisionRecord& rev, const FsckOptions& options) {
  TempDir dir;
  MountOptions mo;
  mo.store_dir = store_dir;
  mo.mountpoint = dir.path;
  mo.only = std::make_pair(rev.pool, rev.name);
  mo.cache_bytes = options.cache_bytes;
  mo.auto_unmount = true;
  FuseMount mount(mo);
  mount.start();
  const std::string base = mount.mountpoint() + "/" + rev.pool + "/" + rev.name + "/" + std::to_string(rev.id);
  FsckResult result;
  const std::vector<Partition> parts = probe_partitions(base);
  if (parts.empty()) {
    FsckEntry e;
    e.where = "disk";
    e.size = rev.size;
    check_one(base, e);
    result.entries.push_back(e);
  }
  for (const auto& p : parts) {
    FsckEntry e;
    e.where = "part " + std::to_string(p.number);
    e.offset = p.offset;
    e.size = p.size;
    check_one(base + ".parts/" + std::to_string(p.number), e);
    result.entries.push_back(e);
  }
  bool any_fs = false;
  for (const auto& e : result.entries) {
    result.state = worst(result.state, e.state);
    any_fs = any_fs || !e.type.empty();
  }
  if (!any_fs) result.state = worst(result.state, FsckState::kUnknown);
  return result;
}

}  // namespace rbdvault::view
