// libFuzzer target: one chunk as stored in a pack, a 48-byte header then its payload
// (store/pack.cc parse_chunk_header, store/chunk_codec.cc decode_chunk). Either StoreError(kCorrupt)
// or content of exactly raw_len bytes; never a crash or an allocation beyond 4 MiB.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "store/chunk_codec.h"
#include "store/error.h"
#include "store/pack.h"
#include "store/patch_codec.h"

using namespace rbdvault::store;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  try {
    const ChunkHeader h = parse_chunk_header(in);
    if (h.raw_len > kMaxBlockSize || !chunk_lengths_valid(h.flags, h.raw_len, h.stored_len)) std::abort();
    if (is_patch(h.flags)) return 0;  // decoded against its base: fuzz_patch
    const std::string_view payload = in.substr(kChunkHeaderSize, h.stored_len);
    const std::string raw = decode_chunk(h.flags, payload, h.raw_len);
    if (raw.size() != h.raw_len) std::abort();
    (void)(sha256(raw) == h.hash);
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kCorrupt) std::abort();
  }
  return 0;
}
