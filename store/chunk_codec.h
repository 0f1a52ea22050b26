// Compression of chunk payloads. zstd where it pays, raw otherwise; the flag travels with the chunk.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace rbdvault::store {

enum ChunkFlags : uint8_t {
  kChunkRaw = 0,
  kChunkZstd = 1,
  // The chunk is stored as a patch of a full base chunk (store/patch_codec.h, docs/format.md
  // §4.2), format 3. With kChunkZstd: the patch's pages are zstd-compressed. Format 2 readers
  // reject the flag as damage, which is why a store holding patches is format 3.
  kChunkPatch = 2,
};
// The flag combinations a chunk header or record may carry.
[[nodiscard]] inline bool valid_chunk_flags(uint8_t f) { return f <= (kChunkZstd | kChunkPatch); }
[[nodiscard]] inline bool is_patch(uint8_t f) { return (f & kChunkPatch) != 0; }

struct EncodedChunk {
  uint8_t flags = kChunkRaw;
  std::string payload;
};

// Compresses `raw` at `level`; keeps the raw bytes when zstd saves less than 1/8 (not worth the
// CPU on every restore), or when worth_compressing() says no. level 0 disables compression.
EncodedChunk encode_chunk(std::string_view raw, int level);
// false when compressing `raw` is not worth trying: level 0, or a block of 32 KiB or more none of
// whose three 4 KiB samples (start, middle, end) compresses by 1/16 (random-looking data:
// encrypted or already compressed). Costs about a fifth of compressing the block; a block judged
// wrongly is stored raw (more bytes, never other bytes).
[[nodiscard]] bool worth_compressing(std::string_view raw, int level);
// The largest payload a chunk of raw_len bytes can have: zstd's worst case (encode_chunk keeps the
// raw bytes long before that, but the bound is what a reader can rely on).
[[nodiscard]] uint64_t max_stored_len(uint32_t raw_len);
// Inverse of encode_chunk; throws StoreError(kCorrupt) if the payload does not decode to raw_len,
// or if raw_len is above kMaxBlockSize (checked before anything is allocated).
[[nodiscard]] std::string decode_chunk(uint8_t flags, std::string_view payload, uint32_t raw_len);
// The same for a payload the caller gives up: a raw one becomes the content without a copy.
[[nodiscard]] std::string decode_owned_chunk(uint8_t flags, std::string&& payload, uint32_t raw_len);

}  // namespace rbdvault::store
