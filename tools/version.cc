#include "tools/version.h"

#ifndef RBDVAULT_VERSION
#error "RBDVAULT_VERSION comes from CMake's project(VERSION)"
#endif

namespace rbdvault::tools {

std::string version_text() { return std::string("rbdvault ") + RBDVAULT_VERSION + "\n"; }

}  // namespace rbdvault::tools
