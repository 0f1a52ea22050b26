// libFuzzer target: one patch chunk as stored in a pack, a 48-byte header then its payload
// (store/pack.cc parse_chunk_header, store/patch_codec.cc decode_patch and apply_patch; docs/format.md
// §4.2). Either StoreError(kCorrupt) or a patch whose pages fit its block and whose application to
// a base of raw_len bytes keeps that length; never a crash or an allocation beyond 4 MiB.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "store/error.h"
#include "store/pack.h"
#include "store/patch_codec.h"

using namespace rbdvault::store;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  try {
    const ChunkHeader h = parse_chunk_header(in);
    if (!is_patch(h.flags)) return 0;  // full chunks: fuzz_chunk
    if (h.raw_len > kMaxBlockSize || h.stored_len > max_patch_stored_len(h.raw_len)) std::abort();
    const std::string_view payload = in.substr(kChunkHeaderSize, h.stored_len);
    const Patch p = decode_patch(h.flags, payload, h.raw_len);
    if (p.pages.empty() || p.pages.size() % kPatchPage != 0 || p.pages.size() > h.raw_len) std::abort();
    if (p.bitmap.size() != patch_bitmap_len(h.raw_len)) std::abort();
    std::string content(h.raw_len, '\0');
    apply_patch(p, content);
    if (content.size() != h.raw_len) std::abort();
    (void)(sha256(content) == h.hash);
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kCorrupt) std::abort();
  }
  return 0;
}
