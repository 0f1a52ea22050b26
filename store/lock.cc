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
  std::string info = "pid " + std::to_string(::getpid()) + ": " + holder_description + "\n";
  if (::ftruncate(fd_, 0) == 0) {
    ssize_t ignored = ::pwrite(fd_, info.data(), info.size(), 0);  // informational only
    (void)ignored;
  }
}

WriterLock::~WriterLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the record lock
}

}  // namespace rbdvault::store
