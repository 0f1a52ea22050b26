#include "store/patch_codec.h"

#include <zstd.h>

#include <bit>
#include <cstring>
#include <stdexcept>

#include "store/error.h"
#include "store/format.h"

namespace rbdvault::store {
namespace {

StoreError corrupt(const std::string& what) { return StoreError(StoreError::Kind::kCorrupt, "patch chunk: " + what); }

bool page_set(std::string_view bitmap, uint32_t page) { return (uint8_t(bitmap[page / 8]) >> (page % 8)) & 1; }

}  // namespace

uint64_t max_patch_stored_len(uint32_t raw_len) {
  return 32 + patch_bitmap_len(raw_len) + max_stored_len(raw_len);
}

bool chunk_lengths_valid(uint8_t flags, uint32_t raw_len, uint32_t stored_len) {
  if (!valid_chunk_flags(flags) || raw_len > kMaxBlockSize) return false;
  if (flags == kChunkRaw) return stored_len == raw_len;
  if (flags == kChunkZstd) return stored_len <= max_stored_len(raw_len);
  if (raw_len == 0 || raw_len % kPatchPage != 0) return false;
  if (stored_len < min_patch_stored_len(raw_len) || stored_len > max_patch_stored_len(raw_len)) return false;
  if (flags & kChunkZstd) return true;
  const uint32_t pages = stored_len - 32 - patch_bitmap_len(raw_len);
  return pages % kPatchPage == 0 && pages <= raw_len;
}

std::optional<EncodedChunk> encode_patch(const Hash& base, std::string_view base_raw, std::string_view raw,
                                         int level, std::string_view always) {
  if (raw.size() != base_raw.size() || raw.size() % kPatchPage != 0 || raw.empty()) return std::nullopt;
  const uint32_t pages = static_cast<uint32_t>(raw.size() / kPatchPage);
  std::string bitmap(patch_bitmap_len(static_cast<uint32_t>(raw.size())), '\0');
  if (!always.empty() && always.size() != bitmap.size()) throw std::invalid_argument("page bitmap of another length");
  std::string changed;
  uint32_t n = 0;
  for (uint32_t p = 0; p < pages; ++p) {
    const size_t at = size_t{p} * kPatchPage;
    const bool forced = !always.empty() && (uint8_t(always[p / 8]) >> (p % 8) & 1u);
    if (!forced && std::memcmp(raw.data() + at, base_raw.data() + at, kPatchPage) == 0) continue;
    if (++n > pages / kPatchMaxFractionDenominator) return std::nullopt;
    bitmap[p / 8] = static_cast<char>(uint8_t(bitmap[p / 8]) | (1u << (p % 8)));
    changed.append(raw.substr(at, kPatchPage));
  }
  if (n == 0) return std::nullopt;  // same content: same hash, never asked
  EncodedChunk pages_enc = encode_chunk(changed, level);
  EncodedChunk out;
  out.flags = static_cast<uint8_t>(kChunkPatch | pages_enc.flags);
  out.payload.reserve(32 + bitmap.size() + pages_enc.payload.size());
  out.payload.append(reinterpret_cast<const char*>(base.data()), base.size());
  out.payload.append(bitmap);
  out.payload.append(pages_enc.payload);
  return out;
}

Hash patch_base(std::string_view payload) {
  if (payload.size() < 32) throw corrupt("shorter than its base hash");
  Hash h;
  std::memcpy(h.data(), payload.data(), 32);
  return h;
}

Patch decode_patch(uint8_t flags, std::string_view payload, uint32_t raw_len) {
  if ((flags & ~uint8_t(kChunkPatch | kChunkZstd)) != 0 || !(flags & kChunkPatch))
    throw corrupt("flags " + std::to_string(flags) + " are not a patch's");
  if (raw_len == 0 || raw_len > kMaxBlockSize || raw_len % kPatchPage != 0)
    throw corrupt("raw length " + std::to_string(raw_len) + " is not a multiple of 4 KiB up to 4 MiB");
  const uint32_t pages = raw_len / kPatchPage;
  const uint32_t bm_len = patch_bitmap_len(raw_len);
  if (payload.size() < 32 + bm_len) throw corrupt("shorter than its base hash and bitmap");
  Patch p;
  p.base = patch_base(payload);
  p.bitmap.assign(payload.substr(32, bm_len));
  uint32_t n = 0;
  for (size_t i = 0; i < p.bitmap.size(); ++i) n += static_cast<uint32_t>(std::popcount(uint8_t(p.bitmap[i])));
  for (uint32_t b = pages; b < bm_len * 8; ++b)
    if (page_set(p.bitmap, b)) throw corrupt("bitmap marks a page beyond the block");
  if (n == 0) throw corrupt("bitmap marks no page");
  // n <= pages, so n * 4096 <= raw_len <= 4 MiB: bounded before decode_chunk allocates it.
  p.pages = decode_chunk(static_cast<uint8_t>(flags & kChunkZstd), payload.substr(32 + bm_len), n * kPatchPage);
  return p;
}

void apply_patch(const Patch& patch, std::string& content) {
  const uint64_t pages = content.size() / kPatchPage;
  if (content.size() % kPatchPage != 0 || patch.bitmap.size() != patch_bitmap_len(static_cast<uint32_t>(content.size())))
    throw corrupt("base length does not match the patch");
  size_t from = 0;
  for (uint32_t p = 0; p < pages; ++p) {
    if (!page_set(patch.bitmap, p)) continue;
    if (from + kPatchPage > patch.pages.size()) throw corrupt("fewer pages than its bitmap marks");
    std::memcpy(content.data() + size_t{p} * kPatchPage, patch.pages.data() + from, kPatchPage);
    from += kPatchPage;
  }
  if (from != patch.pages.size()) throw corrupt("more pages than its bitmap marks");
}

}  // namespace rbdvault::store
