// libFuzzer target: a host's `pack.identities` cache file (store/pack_identities.cc). Either
// nullopt, or identities that are valid, ascending and encode back to the same text.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "store/pack_identities.h"

using namespace rbdvault::store;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::string store_id = "0123456789abcdef";
  const auto ids = parse_pack_identities(text, store_id);
  if (!ids) return 0;
  for (const auto& [pack, identity] : *ids)
    if (!valid_identity(identity)) std::abort();
  if (encode_pack_identities(store_id, *ids) != text) std::abort();
  return 0;
}
