// libFuzzer target: a whole pack file walked the way repair looks for an intact copy of a chunk
// (store/pack.cc scan_pack). The walk must stay inside the file, visit offsets in increasing order
// and end with StoreError(kCorrupt) on damage.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "store/chunk_codec.h"
#include "store/error.h"
#include "store/pack.h"

using namespace rbdvault::store;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view file(reinterpret_cast<const char*>(data), size);
  const ReadAt read = [&](uint64_t off, char* buf, size_t n) {
    if (off > file.size() || n > file.size() - off) return false;
    std::memcpy(buf, file.data() + off, n);
    return true;
  };
  uint64_t last = 0;
  try {
    scan_pack(file.size(), read, std::nullopt, [&](uint64_t off, const ChunkHeader& h) {
      if (off < kPackHeaderSize || off <= last || off + kChunkHeaderSize + h.stored_len > file.size()) std::abort();
      last = off;
      try {
        (void)decode_chunk(h.flags, file.substr(off + kChunkHeaderSize, h.stored_len), h.raw_len);
      } catch (const StoreError& e) {
        if (e.kind() != StoreError::Kind::kCorrupt) std::abort();
      }
      return true;
    });
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kCorrupt) std::abort();
  }
  return 0;
}
