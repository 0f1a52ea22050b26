// libFuzzer target: revision manifests (store/manifest.cc ManifestReader). Either StoreError
// (kCorrupt), or a manifest whose record is in range and whose entries ascend.
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

#include "store/error.h"
#include "store/manifest.h"
#include "store/object_store.h"

using namespace rbdvault::store;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto object = memory_object(std::string(reinterpret_cast<const char*>(data), size));
  try {
    const ManifestReader m(*object);
    if (m.tail().rev.id == 0 || m.tail().absorbed.size() > kMaxAbsorbed) std::abort();
    std::optional<uint64_t> last;
    uint64_t n = 0;
    m.for_each_entry([&](uint64_t block, const std::optional<Hash>&) {
      if (last && block <= *last) std::abort();
      last = block;
      ++n;
    });
    if (n != m.entries()) std::abort();
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kCorrupt) std::abort();
  }
  return 0;
}
