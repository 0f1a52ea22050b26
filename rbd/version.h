// Versions of the Ceph client libraries this process runs with (the ones the dynamic linker
// loaded, which after a Ceph upgrade may differ from those it was built against).
#pragma once

#include <string>

namespace rbdvault::rbd {

// "librbd 1.18.0, librados 3.0.0" (the libraries' API versions, as `rbd_version`/`rados_version`
// report them).
[[nodiscard]] std::string library_versions();

}  // namespace rbdvault::rbd
