// A host-wide limit on concurrent image backups, shared by every rbdvault process on the machine:
// N lock files in one directory, each held with flock() by at most one backup. The kernel drops a
// dead process's locks, so a crashed agent never leaks a slot.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace rbdvault::agent {

class HostSlot {
 public:
  // Waits until one of `slots` lock files in `dir` is free and takes it. Returns an empty (not
  // held) slot when `stop()` becomes true while waiting. Throws std::runtime_error if the directory
  // cannot be created or a lock file opened.
  static HostSlot acquire(const std::string& dir, size_t slots, const std::function<bool()>& stop);
  HostSlot() = default;
  ~HostSlot();
  HostSlot(HostSlot&& o) noexcept;
  HostSlot& operator=(HostSlot&& o) noexcept;
  HostSlot(const HostSlot&) = delete;
  HostSlot& operator=(const HostSlot&) = delete;

  bool held() const { return fd_ >= 0; }
  int index() const { return index_; }

 private:
  int fd_ = -1;
  int index_ = -1;
};

}  // namespace rbdvault::agent
