#include "store/lock.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "store/error.h"

namespace rbdvault::store {

WriterLock::WriterLock(const std::filesystem::path& path, const std::string& holder_description) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw_errno("open lock file " + path.string());
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (::fcntl(fd_, F_SETLK, &fl) != 0) {
    int saved = errno;
    if (saved != EAGAIN && saved != EACCES) {
      ::close(fd_);
      errno = saved;
      throw_errno("lock " + path.string());
    }
    struct flock probe {};
    probe.l_type = F_WRLCK;
    probe.l_whence = SEEK_SET;
    std::string holder = "another process";
    if (::fcntl(fd_, F_GETLK, &probe) == 0 && probe.l_type != F_UNLCK) holder = "pid " + std::to_string(probe.l_pid);
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

ReaderLock::ReaderLock(const std::filesystem::path& path, bool exclusive) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0 && !exclusive) fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);  // read-only media
  if (fd_ < 0) {
    if (!exclusive && errno == ENOENT) return;  // nothing to coordinate with
    throw_errno("open lock file " + path.string());
  }
  struct flock fl {};
  fl.l_type = exclusive ? F_WRLCK : F_RDLCK;
  fl.l_whence = SEEK_SET;
  if (::fcntl(fd_, F_SETLK, &fl) == 0) return;
  int saved = errno;
  struct flock probe = fl;
  std::string holder = "another process";
  if (::fcntl(fd_, F_GETLK, &probe) == 0 && probe.l_type != F_UNLCK) holder = "pid " + std::to_string(probe.l_pid);
  ::close(fd_);
  fd_ = -1;
  if (saved != EAGAIN && saved != EACCES) {
    errno = saved;
    throw_errno("lock " + path.string());
  }
  throw StoreError(StoreError::Kind::kLocked,
                   exclusive ? "store " + path.parent_path().string() + " is being read by " + holder +
                                   " (restore, scrub or verify); gc needs it alone, try again later"
                             : "store " + path.parent_path().string() + " is being garbage-collected by " + holder +
                                   "; try again later");
}

ReaderLock::~ReaderLock() {
  if (fd_ >= 0) ::close(fd_);
}

WriterLock::~WriterLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the record lock
}

}  // namespace rbdvault::store
