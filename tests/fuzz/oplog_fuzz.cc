// libFuzzer target: the operation log reader (store/oplog.cc parse_oplog). Any text gives a list of
// operations and a count of skipped lines; it never throws.
#include <cstdint>
#include <sstream>
#include <string>

#include "store/oplog.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  size_t skipped = 0;
  (void)rbdvault::store::parse_oplog(in, &skipped);
  return 0;
}
