#include "store/chunk_codec.h"

#include <zstd.h>

#include <memory>

#include "store/error.h"
#include "store/format.h"

namespace rbdvault::store {
namespace {

// One compression and one decompression context per thread, kept: ZSTD_compress() and
// ZSTD_decompress() set up and free one per call, which for a 4 KiB sample or patch costs as much
// as the work itself. The output is the same bytes either way.
struct FreeCCtx {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct FreeDCtx {
  void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};

ZSTD_CCtx* thread_cctx() {
  thread_local std::unique_ptr<ZSTD_CCtx, FreeCCtx> ctx(ZSTD_createCCtx());
  return ctx.get();
}

ZSTD_DCtx* thread_dctx() {
  thread_local std::unique_ptr<ZSTD_DCtx, FreeDCtx> ctx(ZSTD_createDCtx());
  return ctx.get();
}

size_t compress(void* dst, size_t cap, const void* src, size_t n, int level) {
  ZSTD_CCtx* ctx = thread_cctx();
  return ctx ? ZSTD_compressCCtx(ctx, dst, cap, src, n, level) : ZSTD_compress(dst, cap, src, n, level);
}

}  // namespace

bool worth_compressing(std::string_view raw, int level) {
  if (level <= 0) return false;
  constexpr size_t kSample = 4096;
  if (raw.size() < 8 * kSample) return true;  // small: compressing it whole costs little
  // Three samples (start, middle, end) cost about a fifth of compressing the block; the first that
  // saves 1/16 settles it, so compressible blocks pay one sample.
  char out[ZSTD_COMPRESSBOUND(kSample)];
  for (size_t at : {size_t{0}, raw.size() / 2 - kSample / 2, raw.size() - kSample}) {
    const size_t n = compress(out, sizeof out, raw.data() + at, kSample, level);
    if (!ZSTD_isError(n) && n < kSample - kSample / 16) return true;
  }
  return false;
}

EncodedChunk encode_chunk(std::string_view raw, int level) {
  EncodedChunk out;
  if (worth_compressing(raw, level)) {
    out.payload.resize(ZSTD_compressBound(raw.size()));
    size_t n = compress(out.payload.data(), out.payload.size(), raw.data(), raw.size(), level);
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
  ZSTD_DCtx* ctx = thread_dctx();
  size_t n = ctx ? ZSTD_decompressDCtx(ctx, raw.data(), raw.size(), payload.data(), payload.size())
                 : ZSTD_decompress(raw.data(), raw.size(), payload.data(), payload.size());
  if (ZSTD_isError(n) || n != raw_len)
    throw StoreError(StoreError::Kind::kCorrupt, std::string("chunk does not decompress: ") +
                                                     (ZSTD_isError(n) ? ZSTD_getErrorName(n) : "wrong length"));
  return raw;
}

std::string decode_owned_chunk(uint8_t flags, std::string&& payload, uint32_t raw_len) {
  if (flags != kChunkRaw) return decode_chunk(flags, payload, raw_len);
  if (raw_len > kMaxBlockSize)
    throw StoreError(StoreError::Kind::kCorrupt, "chunk raw length " + std::to_string(raw_len) + " is above 4 MiB");
  if (payload.size() != raw_len) throw StoreError(StoreError::Kind::kCorrupt, "raw chunk has wrong length");
  return std::move(payload);
}

}  // namespace rbdvault::store
