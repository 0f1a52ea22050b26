// libFuzzer target: the index record decoders (store/format.cc). The first byte picks the decoder,
// the rest is the RocksDB value or key. A decoder must either throw StoreError(kCorrupt) or return
// a record that encodes back to exactly the input (no field silently dropped or misread).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "store/error.h"
#include "store/format.h"

using namespace rbdvault::store;

namespace {

template <typename Decode>
void round_trip(std::string_view v, Decode decode) {
  try {
    const auto rec = decode(v);
    if (encode(rec) != v) std::abort();  // accepted, but not what was stored
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kCorrupt) std::abort();
  }
}

void keys(std::string_view k) {
  if (auto b = parse_block_key(k); b && block_key(b->image, b->block, b->rev) != k) std::abort();
  if (auto r = parse_image_rev_key(k); r && k.size() != 17) std::abort();
  if (auto h = parse_chunk_key(k); h && chunk_key(*h) != k) std::abort();
  if (uint32_t p = parse_pack_key(k); p != 0 && pack_key(p) != k) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view v(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 7) {
    case 0: round_trip(v, decode_image); break;
    case 1: round_trip(v, decode_revision); break;
    case 2: round_trip(v, decode_chunk_record); break;
    case 3: round_trip(v, decode_pack); break;
    case 4: round_trip(v, decode_pending); break;
    case 5:
      try {
        if (encode_u64(decode_u64(v)) != v) std::abort();
      } catch (const StoreError&) {
      }
      break;
    default: keys(v); break;
  }
  return 0;
}
