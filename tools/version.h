// The text of `rbdvault --version`: one place, so help2man, bug reports and the package agree.
#pragma once

#include <string>

namespace rbdvault::tools {

// First line "rbdvault X.Y.Z" (help2man reads it), then the Ceph client libraries in use.
[[nodiscard]] std::string version_text();

}  // namespace rbdvault::tools
