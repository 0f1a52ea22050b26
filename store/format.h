// The RocksDB key and value encodings of the index. docs/format.md documents every byte of these;
// change both together. Integers in keys are big-endian (so keys sort numerically), integers in
// values little-endian; strings in values are a u32 length followed by the bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "store/sha256.h"

namespace rbdvault::store {

// Format 3 adds patch chunks (docs/format.md §4.2) and nothing else: a format 2 store is a format 3
// store without patches. A writer opening a format 2 store rewrites its marker to 3 at once, so an
// older rbdvault refuses the store ("format 3 is not supported") instead of calling patches damage.
inline constexpr uint32_t kFormatVersion = 3;
// Format 1 (no revision manifests) is read only to be upgraded (`rbdvault upgrade`).
inline constexpr uint32_t kOldestFormatVersion = 1;

// Limits every decoder checks a value read from disk against, so that a corrupt or hostile store
// gives a kCorrupt error instead of a huge allocation, a wrapped offset or undefined behaviour.
inline constexpr uint32_t kMinBlockSize = 64u << 10;
inline constexpr uint32_t kMaxBlockSize = 4u << 20;
// Image sizes and pack offsets become off_t offsets (restore to a file, pread): keep them positive.
inline constexpr uint64_t kMaxImageSize = uint64_t{1} << 62;
inline constexpr uint64_t kMaxPackBytes = uint64_t{1} << 62;
inline constexpr size_t kPackHeaderSize = 16;
inline constexpr size_t kChunkHeaderSize = 48;
// librbd accepts object orders 12 (4 KiB) to 26 (64 MiB); 0 means unknown.
inline constexpr uint8_t kMinOrder = 12, kMaxOrder = 26;
// The marker is three short lines; anything much larger is not one (and is not read whole).
inline constexpr size_t kMaxMarkerBytes = 64u << 10;

// A power of two from kMinBlockSize to kMaxBlockSize.
[[nodiscard]] bool valid_block_size(uint64_t bs);

// Key prefixes (first byte of every key).
inline constexpr char kKeyCounter = 'X';    // X<name>               -> u64
inline constexpr char kKeyImageName = 'N';  // N<pool>\0<name>       -> u64 image key
inline constexpr char kKeyImage = 'I';      // I<u64 image>          -> ImageRecord
inline constexpr char kKeyRevision = 'R';   // R<u64 revision>       -> RevisionRecord
inline constexpr char kKeyImageRev = 'V';   // V<u64 image><u64 rev> -> empty
inline constexpr char kKeyBlock = 'B';      // B<u64 image><u64 block><u64 rev> -> 32-byte chunk hash, or empty = zeros
inline constexpr char kKeyChunk = 'C';      // C<32-byte hash>       -> ChunkRecord
inline constexpr char kKeyPack = 'P';       // P<u32 pack>           -> PackRecord
inline constexpr char kKeyPending = 'W';    // W<u64 rev>            -> PendingRecord (revision being written)

inline constexpr std::string_view kCounterNextRevision = "next_revision";
inline constexpr std::string_view kCounterNextImage = "next_image";
inline constexpr std::string_view kCounterNextPack = "next_pack";

std::string counter_key(std::string_view name);
std::string image_name_key(std::string_view pool, std::string_view name);
std::string image_key(uint64_t image);
std::string revision_key(uint64_t rev);
std::string image_rev_key(uint64_t image, uint64_t rev);
std::string image_rev_prefix(uint64_t image);
std::string block_key(uint64_t image, uint64_t block, uint64_t rev);
std::string block_prefix(uint64_t image);
std::string chunk_key(const Hash& hash);
std::string pack_key(uint32_t pack);
std::string pending_key(uint64_t rev);

struct BlockKey {
  uint64_t image = 0, block = 0, rev = 0;
};
std::optional<BlockKey> parse_block_key(std::string_view key);
std::optional<uint64_t> parse_image_rev_key(std::string_view key);  // -> rev
uint64_t read_be64(const char* p);
uint32_t parse_pack_key(std::string_view key);  // 0 if malformed
// The hash of a `C` key; nullopt unless the key is exactly `C` + 32 bytes.
[[nodiscard]] std::optional<Hash> parse_chunk_key(std::string_view key);
// The same for callers that iterate `C` keys: throws StoreError(kCorrupt) on a malformed key.
[[nodiscard]] Hash chunk_hash_of_key(std::string_view key);

struct ImageRecord {
  uint64_t key = 0;
  std::string pool;
  std::string name;
};

enum class RevisionKind : uint8_t { kFull = 0, kDelta = 1 };

struct RevisionRecord {
  uint64_t id = 0;
  uint64_t image = 0;         // ImageRecord::key
  std::string pool, name;     // image spec at backup time
  std::string ceph_image_id;  // librbd image id
  std::string snap_name;      // Ceph snapshot the revision was read from
  uint64_t snap_id = 0;
  int64_t created = 0;  // unix seconds (UTC)
  uint64_t size = 0;    // bytes
  uint64_t parent = 0;  // previous revision of the image, 0 = none
  RevisionKind kind = RevisionKind::kFull;
  uint32_t block_size = 0;
  uint8_t order = 0;          // log2 of the source image's object size (for restore), 0 = unknown
  uint64_t features = 0;      // the source image's RBD feature bits (for restore)
  uint64_t bytes_read = 0;    // bytes read from Ceph for this revision
  uint64_t bytes_stored = 0;  // stored (compressed) bytes of chunks new to the store
  uint64_t new_chunks = 0;
  uint64_t map_entries = 0;  // block map entries this revision added
  Hash digest{};             // whole-revision checksum, see RevisionDigest
  uint8_t flags = 0;         // RevisionFlags
  // Set only with kRevisionGroup: the consistency group the revision's snapshot was taken in, the
  // group run (shared by every revision snapshotted together) and the microseconds between the
  // run's first and last snapshot.
  std::string group;
  uint64_t group_run = 0;
  uint64_t group_gap_us = 0;
};

enum RevisionFlags : uint8_t {
  kRevisionProtected = 1,   // never removed by forget or expire
  kRevisionForgetting = 2,  // being removed; invisible, and completed by the next writer to open
  // The check after its backup found blocks differing from the snapshot (a diff Ceph got wrong):
  // the image's next backup reads everything instead of diffing from it.
  kRevisionVerifyFailed = 4,
  // Its snapshot was taken after a successful pre-snapshot hook (a guest fsfreeze, a database
  // flush): application-consistent. Without it the revision is crash-consistent. Set at commit.
  kRevisionApplicationConsistent = 8,
  // Its snapshot was taken with the other images of a consistency group, back to back; the record
  // then continues with the group fields (docs/format.md §5.2). Set at commit.
  kRevisionGroup = 16,
};

// Bounds the decoder enforces on the group fields: a group name is a config section name, and a
// gap longer than an hour means the snapshots were not taken back to back.
inline constexpr size_t kMaxGroupName = 255;
inline constexpr uint64_t kMaxGroupGapUs = uint64_t{3600} * 1000000;

// "application" or "crash": what `ls`, `status` and the metrics call a revision's consistency.
inline const char* consistency_name(uint8_t revision_flags) {
  return (revision_flags & kRevisionApplicationConsistent) ? "application" : "crash";
}

struct ChunkRecord {
  uint32_t pack = 0;
  uint64_t offset = 0;      // of the chunk header in the pack file
  uint32_t stored_len = 0;  // payload bytes after the header
  uint32_t raw_len = 0;     // bytes after decoding
  uint8_t flags = 0;        // ChunkFlags
  // Block map entries referencing this chunk, plus the patch chunks (index records with
  // kChunkPatch) whose base it is: a patch keeps its base alive.
  uint64_t refs = 0;
  Hash base{};  // kChunkPatch only: the full chunk the patch applies to (also in its payload)
};

struct PackRecord {
  uint64_t bytes = 0;   // file length
  uint64_t chunks = 0;  // chunk records in the file
};

struct PendingRecord {
  uint64_t revision = 0;
  uint64_t image = 0;
};

std::string encode(const ImageRecord& r);
std::string encode(const RevisionRecord& r);
std::string encode(const ChunkRecord& r);
std::string encode(const PackRecord& r);
std::string encode(const PendingRecord& r);
std::string encode_u64(uint64_t v);

// Decoders throw StoreError(kCorrupt) on a malformed value: a wrong length, an unknown version or
// enum value, or a length, size or count outside the limits above (docs/format.md §5).
[[nodiscard]] ImageRecord decode_image(std::string_view v);
[[nodiscard]] RevisionRecord decode_revision(std::string_view v);
[[nodiscard]] ChunkRecord decode_chunk_record(std::string_view v);
[[nodiscard]] PackRecord decode_pack(std::string_view v);
[[nodiscard]] PendingRecord decode_pending(std::string_view v);
[[nodiscard]] uint64_t decode_u64(std::string_view v);

// The marker file `rbdvault.store` (docs/format.md §3).
struct StoreMarker {
  uint32_t version = 0;
  std::string store_id;  // 16 lowercase hex digits
  uint32_t block_size = 0;
  // Operation log rotation (§13), optional lines an operator may add; absent: the defaults.
  std::optional<uint64_t> oplog_segment_bytes;  // 4096 to 2^40
  std::optional<uint32_t> oplog_keep_segments;  // 0 to 1000
};
// Parses the marker's text. Throws StoreError: kInvalid for a format version this code does not
// read, kCorrupt when the text is not a marker (the file has the marker's name: it is damaged) or
// a field is missing or out of range. `where` prefixes messages.
[[nodiscard]] StoreMarker parse_store_marker(std::string_view text, const std::string& where);

// Whole-revision checksum: the sum, modulo 2^256, of SHA-256(le64(block) || chunk hash) over every
// non-zero block below the revision's size, plus SHA-256("size" || le64(size)), each read as a
// little-endian 256-bit integer. A sum can be updated per changed block (commit stays proportional
// to the change) and recomputed from the block map alone by scrub; the size term makes a wrong size
// show up even where the blocks it adds or drops are zeros.
struct RevisionDigest {
  static Hash term(uint64_t block, const Hash& chunk);
  static Hash size_term(uint64_t size);
  static void add(Hash& acc, const Hash& term);
  static void subtract(Hash& acc, const Hash& term);
};

}  // namespace rbdvault::store
