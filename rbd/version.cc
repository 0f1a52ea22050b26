#include "rbd/version.h"

#include <rados/librados.h>
#include <rbd/librbd.h>

namespace rbdvault::rbd {

std::string library_versions() {
  auto text = [](int major, int minor, int extra) {
    return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(extra);
  };
  int major = 0, minor = 0, extra = 0;
  ::rbd_version(&major, &minor, &extra);
  std::string out = "librbd " + text(major, minor, extra);
  ::rados_version(&major, &minor, &extra);
  return out + ", librados " + text(major, minor, extra);
}

}  // namespace rbdvault::rbd
