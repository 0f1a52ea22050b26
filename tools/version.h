// The text `rbdvault --version` prints. One function, so that what it reports (today the program's
// version; Ceph's library versions may join it) is decided in one place. Cheap: no cluster, no store.
#pragma once

#include <string>

namespace rbdvault::tools {

[[nodiscard]] std::string version_text();

}  // namespace rbdvault::tools
