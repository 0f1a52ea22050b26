// Revision manifests (docs/format.md §16): one immutable, checksummed object per revision and
// generation in the data area, holding the revision's record and the block-map entries it adds, so
// that the index can be rebuilt from the data area alone (store/rebuild.cc).
//
// Layout: header, entries, tail, SHA-256 of everything before it. The entries come first so that
// the writer streams them into an ObjectSink as it records blocks (its memory does not grow with
// the revision); the record, known only at commit, follows. Readers verify the trailer by
// streaming, then read the fixed-size footer, then stream the entries: memory stays bounded by the
// record, never by the revision.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "store/format.h"
#include "store/sha256.h"

namespace rbdvault::store {

class ObjectReader;
class ObjectSink;

inline constexpr std::string_view kManifestPrefix = "manifests/";
inline constexpr std::string_view kManifestMagic = "RVMANI01";
inline constexpr size_t kManifestHeaderSize = 16;
// Footer before the SHA-256: le32 tail length, le64 entry count, le64 entries length.
inline constexpr size_t kManifestFooterSize = 20;
// A record is small; a tail of more than this is not one (bounds what a reader allocates).
inline constexpr uint64_t kMaxManifestTail = 1u << 20;
inline constexpr uint64_t kMaxAbsorbed = 4096;

// "manifests/<revision as 16 hex>.<generation as 8 hex>".
[[nodiscard]] std::string manifest_name(uint64_t revision, uint32_t generation);
// (revision, generation) of a manifest object name; nullopt for any other name.
[[nodiscard]] std::optional<std::pair<uint64_t, uint32_t>> parse_manifest_name(std::string_view name);

struct ManifestTail {
  RevisionRecord rev;
  uint32_t generation = 0;
  std::vector<uint64_t> absorbed;  // forgotten revisions whose needed entries this one now holds
};

// Streams a manifest into a sink: add() the entries in strictly ascending block order, then
// finish(); the caller commits the sink.
class ManifestEncoder {
 public:
  explicit ManifestEncoder(ObjectSink& sink);
  void add(uint64_t block, const std::optional<Hash>& hash);
  void finish(const ManifestTail& tail);
  uint64_t entries() const { return entries_; }

 private:
  void emit(std::string_view bytes);
  void drain();
  ObjectSink& sink_;
  std::unique_ptr<void, void (*)(void*)> sha_;  // EVP_MD_CTX: streamed SHA-256
  std::string buf_;
  std::optional<uint64_t> last_block_;
  uint64_t entries_ = 0, entry_bytes_ = 0;
};

// The whole manifest in memory (tests, fuzzing, small revisions).
[[nodiscard]] std::string encode_manifest(const ManifestTail& tail,
                                          const std::vector<std::pair<uint64_t, std::optional<Hash>>>& entries);

// Reads a manifest. The constructor verifies the trailer and decodes the tail; every length and
// count is checked against the object's size before use. Throws StoreError(kCorrupt).
class ManifestReader {
 public:
  explicit ManifestReader(const ObjectReader& object);
  const ManifestTail& tail() const { return tail_; }
  uint64_t entries() const { return entries_; }
  // Calls fn(block, hash) for each entry (nullopt: zeros), ascending. Throws kCorrupt on a bad entry,
  // and at the end if the entries read do not hash to the trailer again (then fn was given entries
  // of a bad read: the caller must drop them).
  void for_each_entry(const std::function<void(uint64_t, const std::optional<Hash>&)>& fn) const;

 private:
  const ObjectReader& object_;
  ManifestTail tail_;
  uint64_t entries_ = 0, entry_bytes_ = 0;
  Hash want_{};                  // the trailer
  std::string tail_and_footer_;  // as verified (bounded by kMaxManifestTail)
};

// An ObjectReader over bytes in memory (tests and the fuzz target).
[[nodiscard]] std::unique_ptr<ObjectReader> memory_object(std::string bytes);

}  // namespace rbdvault::store
