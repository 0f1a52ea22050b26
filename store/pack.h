// Pack files: append-only objects of chunks in the data area, written once and sealed by commit (see
// docs/format.md §4). They reach storage only through the seam (object_store.h).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "store/format.h"
#include "store/object_store.h"
#include "store/patch_codec.h"
#include "store/sha256.h"

namespace rbdvault::store {

inline constexpr std::string_view kPackMagic = "RVPACK01";
inline constexpr std::string_view kChunkMagic = "RVCK";

std::string pack_file_name(uint32_t pack);    // "0000002a.pack"
std::string pack_object_name(uint32_t pack);  // "data/0000002a.pack", its name in the data area

// A chunk header (docs/format.md §4) whose fields passed every check a reader relies on.
struct ChunkHeader {
  uint8_t flags = 0;
  uint32_t raw_len = 0;     // at most kMaxBlockSize
  uint32_t stored_len = 0;  // at most max_stored_len(raw_len); raw_len for a raw chunk
  Hash hash{};
};
// Parses the kChunkHeaderSize bytes at the start of `bytes`; throws StoreError(kCorrupt) for a
// short buffer, bad magic, non-zero padding, unknown flags or lengths out of range.
[[nodiscard]] ChunkHeader parse_chunk_header(std::string_view bytes);

// Reads exactly n bytes at `offset` into buf; false if the source ends first.
using ReadAt = std::function<bool(uint64_t offset, char* buf, size_t n)>;
// Walks a pack of `size` bytes chunk by chunk, as repair does to find a copy of a chunk the index
// lost: checks the file header (and the pack id, if given), then calls `visit(offset, header)` for
// each chunk until it returns false or the pack ends. Every header is checked, and its payload must
// lie inside the file before the walk moves past it, so a damaged pack ends the walk with
// StoreError(kCorrupt) instead of a wild offset or a huge read.
void scan_pack(uint64_t size, const ReadAt& read, std::optional<uint32_t> expected_id,
               const std::function<bool(uint64_t offset, const ChunkHeader&)>& visit);

// Writes one pack through an ObjectSink; seal() commits it (durable, atomic, never over an existing one).
class PackWriter {
 public:
  PackWriter(ObjectStore& objects, uint32_t id);
  ~PackWriter();  // an unsealed pack leaves nothing (the sink is dropped)
  PackWriter(const PackWriter&) = delete;
  PackWriter& operator=(const PackWriter&) = delete;

  // Appends a chunk; returns the offset of its header.
  uint64_t append(const Hash& hash, uint8_t flags, uint32_t raw_len, std::string_view payload);
  // Commits the pack object; an existing pack of that id is refused (kCorrupt) and left untouched.
  PackRecord seal();

  uint32_t id() const { return id_; }
  uint64_t size() const { return size_; }
  uint64_t chunks() const { return chunks_; }

 private:
  std::unique_ptr<ObjectSink> sink_;
  uint32_t id_;
  std::string chunk_;  // one chunk's header and payload, handed to the sink in one append
  uint64_t size_ = 0;
  uint64_t chunks_ = 0;
};

// Reads chunks from sealed packs, keeping their ObjectReaders open. Verifies header, length and
// SHA-256 of every chunk it returns, so corruption is an error, never wrong data.
//
// Thread safe: restore and verify read from several threads at once. A cached reader is shared
// (shared_ptr) by every read using it, so evicting it from the full cache or forget_pack() closes it
// only when the last of those reads is done: no thread ever reads through a reader another has
// destroyed (for the local backend: a descriptor closed, or since reused for another file).
class PackReader {
 public:
  explicit PackReader(ObjectStore& objects, size_t max_open_packs = 128)
      : objects_(objects), max_open_(max_open_packs) {}
  ~PackReader();
  PackReader(const PackReader&) = delete;
  PackReader& operator=(const PackReader&) = delete;

  // A full chunk's content, verified against its hash; kCorrupt for a patch (whose content needs
  // its base: Store::read_chunk resolves patches).
  std::string read(const Hash& hash, const ChunkRecord& rec);
  // A full chunk's content, decoded and its header checked against the record, but not hashed: for
  // a patch's base, whose bytes are verified through the patched result (Store::read_chunk).
  std::string read_unhashed(const Hash& hash, const ChunkRecord& rec);
  // A patch chunk, decoded and checked against its record (flags, lengths, base); its content is
  // verified only once applied to its base (Store::read_chunk).
  Patch read_patch(const Hash& hash, const ChunkRecord& rec);
  // The stored (possibly compressed) payload, verified like read() (a patch: like read_patch());
  // for copying chunks verbatim.
  std::string read_payload(const Hash& hash, const ChunkRecord& rec);
  void forget_pack(uint32_t pack);  // drops a cached reader (the pack is being removed)

 private:
  // An open pack, closed when its last user lets go.
  std::shared_ptr<const ObjectReader> open_pack(uint32_t pack);
  // The payload, its header checked against the record.
  std::string read_stored(const Hash& hash, const ChunkRecord& rec);
  static std::string verify_full(const Hash& hash, const ChunkRecord& rec, std::string&& payload);
  static Patch read_patch_from(const Hash& hash, const ChunkRecord& rec, std::string_view payload);
  ObjectStore& objects_;
  // A store holds about one pack per GiB stored and per backup: the cache keeps the number of open
  // files well below the usual limit of 1024.
  size_t max_open_;
  std::mutex mu_;  // guards readers_
  std::map<uint32_t, std::shared_ptr<const ObjectReader>> readers_;
};

}  // namespace rbdvault::store
