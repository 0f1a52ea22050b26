#include "agent/host_slots.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>

namespace rbdvault::agent {

HostSlot HostSlot::acquire(const std::string& dir, size_t slots, const std::function<bool()>& stop) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw std::runtime_error("host slots: cannot create " + dir + ": " + ec.message());
  for (;;) {
    for (size_t i = 0; i < slots; ++i) {
      const std::string path = dir + "/slot-" + std::to_string(i) + ".lock";
      int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
      if (fd < 0) throw std::runtime_error("host slots: cannot open " + path + ": " + std::strerror(errno));
      if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
        HostSlot s;
        s.fd_ = fd;
        s.index_ = static_cast<int>(i);
        return s;
      }
      const int err = errno;
      ::close(fd);
      if (err != EWOULDBLOCK) throw std::runtime_error("host slots: cannot lock " + path + ": " + std::strerror(err));
    }
    if (stop && stop()) return HostSlot();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

HostSlot::~HostSlot() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

HostSlot::HostSlot(HostSlot&& o) noexcept : fd_(o.fd_), index_(o.index_) { o.fd_ = -1; }

HostSlot& HostSlot::operator=(HostSlot&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    index_ = o.index_;
    o.fd_ = -1;
  }
  return *this;
}

}  // namespace rbdvault::agent
