// Errors of the rbd/ layer. Every failing librbd/librados call becomes a CephError that names the
// operation, the pool/image it concerned and the errno text; nothing in this layer swallows a code.
#pragma once

#include <stdexcept>
#include <string>

namespace rbdvault::rbd {

class CephError : public std::runtime_error {
 public:
  // `what` describes the operation and its object, e.g. "open image rbd/vm-101"; `code` is the
  // negative errno returned by librbd/librados.
  CephError(const std::string& what, int code);

  // Negative errno, as returned by librbd (e.g. -ENOENT).
  int code() const { return code_; }
  bool not_found() const;

 private:
  int code_;
};

// Throws CephError when r < 0; returns r otherwise.
long check(long r, const std::string& what);

}  // namespace rbdvault::rbd
