// libFuzzer target: the store marker file `rbdvault.store` (store/format.cc parse_store_marker).
// Either StoreError, or a marker whose fields are in range.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "store/error.h"
#include "store/format.h"

using namespace rbdvault::store;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const StoreMarker m = parse_store_marker(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    if (m.version < kOldestFormatVersion || m.version > kFormatVersion || !valid_block_size(m.block_size) ||
        m.store_id.size() != 16)
      std::abort();
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kCorrupt && e.kind() != StoreError::Kind::kInvalid) std::abort();
  }
  return 0;
}
