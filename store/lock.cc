#include "store/lock.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "store/error.h"

namespace rbdvault::store {
namespace {

// Byte 0 of a lock file carries the lock itself, as an open-file-description (OFD) lock: it belongs
// to this open of the file, so a second open and close of the same file in this process (a second
// Store, a library reading the file) cannot drop it, and a second open in this process conflicts
// like another process would. Classic POSIX record locks belong to the process and are dropped by
// closing any descriptor of the file. Byte 1 carries a classic lock of the same type only to name
// the holder: F_GETLK reports a POSIX holder's pid, an OFD holder's as -1. Losing that byte's lock
// costs nothing but the pid in a message.
constexpr off_t kLockByte = 0;
constexpr off_t kPidByte = 1;

struct flock range(short type, off_t start) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = 1;
  return fl;
}

// Takes the OFD lock on kLockByte without waiting; false if another open holds a conflicting one.
bool take(int fd, short type, const std::filesystem::path& path) {
  struct flock fl = range(type, kLockByte);  // l_pid must be 0 for OFD requests
  if (::fcntl(fd, F_OFD_SETLK, &fl) != 0) {
    if (errno == EAGAIN || errno == EACCES) return false;
    throw_errno("lock " + path.string());
  }
  struct flock mark = range(type, kPidByte);
  (void)::fcntl(fd, F_SETLK, &mark);  // best effort: only names us in another process's message
  return true;
}

// "pid N" of a holder of a lock conflicting with `type`, or "another process".
std::string holder_of(int fd, short type) {
  struct flock probe = range(type, kPidByte);
  if (::fcntl(fd, F_GETLK, &probe) == 0 && probe.l_type != F_UNLCK && probe.l_pid > 0)
    return "pid " + std::to_string(probe.l_pid);
  return "another process";
}

}  // namespace

WriterLock::WriterLock(const std::filesystem::path& path, const std::string& holder_description) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw_errno("open lock file " + path.string());
  bool taken = false;
  try {
    taken = take(fd_, F_WRLCK, path);
  } catch (...) {
    ::close(fd_);
    throw;
  }
  if (!taken) {
    const std::string holder = holder_of(fd_, F_WRLCK);
    char info[256] = {};
    ssize_t n = ::pread(fd_, info, sizeof(info) - 1, 0);
    ::close(fd_);
    std::string what = n > 0 ? std::string(info, static_cast<size_t>(n)) : std::string();
    while (!what.empty() && (what.back() == '\n' || what.back() == '\0')) what.pop_back();
    throw StoreError(StoreError::Kind::kLocked, "store " + path.parent_path().string() + " is locked by " + holder +
                                                    (what.empty() ? "" : " (" + what + ")") + "; try again later");
  }
  std::string info = holder_description + "\n";
  if (::ftruncate(fd_, 0) == 0) {
    ssize_t ignored = ::pwrite(fd_, info.data(), info.size(), 0);  // informational only
    (void)ignored;
  }
}

ReaderLock::ReaderLock(const std::filesystem::path& path, bool exclusive, const char* exclusive_for) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0 && !exclusive) fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);  // read-only media
  if (fd_ < 0) {
    if (!exclusive && errno == ENOENT) return;  // nothing to coordinate with
    throw_errno("open lock file " + path.string());
  }
  const short type = exclusive ? F_WRLCK : F_RDLCK;
  bool taken = false;
  try {
    taken = take(fd_, type, path);
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
  if (taken) return;
  const std::string holder = holder_of(fd_, type);
  ::close(fd_);
  fd_ = -1;
  throw StoreError(StoreError::Kind::kLocked,
                   exclusive ? "store " + path.parent_path().string() + " is being read by " + holder +
                                   " (restore, scrub, verify, mount or serve); " + exclusive_for + " needs it alone, try again later"
                             : "store " + path.parent_path().string() + " is being garbage-collected by " + holder +
                                   "; try again later");
}

ReaderLock::~ReaderLock() {
  if (fd_ >= 0) ::close(fd_);
}

WriterLock::~WriterLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases both locks
}

}  // namespace rbdvault::store
