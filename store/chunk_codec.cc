#include "store/chunk_codec.h"

#include <zstd.h>

#include "store/error.h"
#include "store/format.h"

namespace rbdvault::store {

EncodedChunk encode_chunk(std::string_view raw, int level) {
  EncodedChunk out;
  if (level > 0) {
    out.payload.resize(ZSTD_compressBound(raw.size()));
    size_t n = ZSTD_compress(out.payload.data(), out.payload.size(), raw.data(), raw.size(), level);
    if (!ZSTD_isError(n) && n < raw.size() - raw.size() / 8) {
      out.payload.resize(n);
      out.flags = kChunkZstd;
      return out;
    }
  }
  out.payload.assign(raw);
  out.flags = kChunkRaw;
  return out;
}

uint64_t max_stored_len(uint32_t raw_len) { return ZSTD_compressBound(raw_len); }

std::string decode_chunk(uint8_t flags, std::string_view payload, uint32_t raw_len) {
  if (raw_len > kMaxBlockSize)
    throw StoreError(StoreError::Kind::kCorrupt, "chunk raw length " + std::to_string(raw_len) + " is above 4 MiB");
  if (flags == kChunkRaw) {
    if (payload.size() != raw_len) throw StoreError(StoreError::Kind::kCorrupt, "raw chunk has wrong length");
    return std::string(payload);
  }
  if (flags != kChunkZstd)
    throw StoreError(StoreError::Kind::kCorrupt, "chunk has unknown flags " + std::to_string(flags));
  std::string raw(raw_len, '\0');
  size_t n = ZSTD_decompress(raw.data(), raw.size(), payload.data(), payload.size());
  if (ZSTD_isError(n) || n != raw_len)
    throw StoreError(StoreError::Kind::kCorrupt, std::string("chunk does not decompress: ") +
                                                     (ZSTD_isError(n) ? ZSTD_getErrorName(n) : "wrong length"));
  return raw;
}

}  // namespace rbdvault::store
