// Patch chunks (docs/format.md §4.2): a chunk stored as the 4 KiB pages that differ from a full
// base chunk. The block map still names the SHA-256 of the whole content; only how the chunk is
// stored changes, and a reader checks the patched result against that hash like any other chunk.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "store/chunk_codec.h"
#include "store/sha256.h"

namespace rbdvault::store {

inline constexpr uint32_t kPatchPage = 4096;
// A patch is stored only when at most this fraction of the block's pages changed: beyond a
// quarter, a patch saves less than 3/4 of a full chunk yet every read of it also reads the base
// (a full 4 MiB block patched at 1/4 costs 1.25 block reads), and the base stays alive longer.
inline constexpr uint32_t kPatchMaxFractionDenominator = 4;

// The bitmap length of a block of raw_len bytes: one bit per 4 KiB page.
[[nodiscard]] inline uint32_t patch_bitmap_len(uint32_t raw_len) { return (raw_len / kPatchPage + 7) / 8; }
// The largest payload a patch of a raw_len-byte chunk can have (base, bitmap, zstd's bound).
[[nodiscard]] uint64_t max_patch_stored_len(uint32_t raw_len);
// The smallest: base, bitmap and one page (compressed, at least one byte).
[[nodiscard]] inline uint64_t min_patch_stored_len(uint32_t raw_len) { return 32 + patch_bitmap_len(raw_len) + 1; }

// Whether a chunk header or record's lengths are possible for its flags (docs/format.md §4): raw:
// stored == raw; zstd: at most zstd's bound; a patch: raw a multiple of 4 KiB, stored between one
// page's patch and the bound (raw pages: base + bitmap + a whole number of pages).
[[nodiscard]] bool chunk_lengths_valid(uint8_t flags, uint32_t raw_len, uint32_t stored_len);

// A decoded patch: its base, which pages it replaces and their bytes (n_pages * 4096, in order).
struct Patch {
  Hash base{};
  std::string bitmap;
  std::string pages;
};

// The patch that turns `base_raw` into `raw` (both raw_len bytes, a multiple of 4 KiB), or nullopt
// when more than 1/kPatchMaxFractionDenominator of the pages differ (or none do). The pages are
// compressed as encode_chunk would (flags kChunkPatch, | kChunkZstd when compressed). The pages set
// in `always` (a page bitmap; empty: none) are stored even where they equal base_raw: bytes of
// base_raw nobody verified (ChunkContent::root_unverified).
[[nodiscard]] std::optional<EncodedChunk> encode_patch(const Hash& base, std::string_view base_raw,
                                                       std::string_view raw, int level,
                                                       std::string_view always = {});
// The base a patch payload names (its first 32 bytes); throws StoreError(kCorrupt) when short.
[[nodiscard]] Hash patch_base(std::string_view payload);
// Inverse of encode_patch; throws StoreError(kCorrupt) for anything but a well-formed patch of a
// raw_len-byte chunk: flags, raw_len (a multiple of 4 KiB up to 4 MiB), bitmap bits beyond the
// pages set, no page set, pages not decoding to exactly n * 4096 bytes. Checked before allocating.
[[nodiscard]] Patch decode_patch(uint8_t flags, std::string_view payload, uint32_t raw_len);
// Replaces the patch's pages in `content` (the base's raw bytes, raw_len long); kCorrupt if the
// lengths disagree.
void apply_patch(const Patch& patch, std::string& content);

}  // namespace rbdvault::store
