#include "store/posix_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "store/error.h"

namespace rbdvault::store {

void fsync_dir(const std::filesystem::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw_errno("open directory " + dir.string());
  int r = ::fsync(fd);
  int saved = errno;
  ::close(fd);
  errno = saved;
  if (r != 0) throw_errno("fsync directory " + dir.string());
}

void write_all(int fd, const char* p, size_t n, const std::filesystem::path& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw_errno("write " + path.string());
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace rbdvault::store
