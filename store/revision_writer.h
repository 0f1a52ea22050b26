// Writes one revision: blocks in ascending order, then an atomic commit. Until commit() nothing is
// visible to readers; a writer destroyed (or a process killed) before commit leaves no revision, and
// the next writer to open the store rolls the partial work back.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "store/chunk_codec.h"
#include "store/format.h"
#include "store/index.h"
#include "store/sha256.h"


namespace rbdvault::store {

class AppendStore;
struct ChunkContent;
class ManifestEncoder;
class ObjectSink;
class PackWriter;
class Store;

// A block hashed (and, if new to the store, compressed) ahead of RevisionWriter::put_prepared; the
// CPU-heavy half of put_block, safe to run on worker threads concurrently.
struct PreparedBlock {
  std::optional<Hash> hash;             // nullopt: all zeros
  std::string raw;                      // zero-padded to the block size (empty for zeros)
  std::optional<EncodedChunk> encoded;  // set when the store did not hold the chunk when prepared
  bool store_raw = false;               // ... and when it was found not worth compressing (no copy)
  // Set when `encoded` is a patch (kChunkPatch) of this full chunk; put_prepared stores a full
  // chunk instead if the base is no longer a full chunk of the store.
  std::optional<Hash> patch_base = std::nullopt;
  // CPU seconds of the preparing thread spent hashing and compressing (for the backup's report).
  double hash_seconds = 0, compress_seconds = 0;
};
// CPU seconds the calling thread has used so far (CLOCK_THREAD_CPUTIME_ID).
[[nodiscard]] double thread_cpu_seconds();
PreparedBlock prepare_block(AppendStore& store, std::string_view data);
// The same, taking over `data` (one copy less).
PreparedBlock prepare_block(AppendStore& store, std::string&& data);
// The same for a block that changed in part from `root` (a full chunk of the store, whose content
// is root_raw): if the chunk is new and at most a quarter of its 4 KiB pages differ from the
// root's, it is prepared as a patch of the root (store/patch_codec.h). The pages root_unverified
// marks (ChunkContent::root_unverified; empty: none) are stored in the patch whatever they hold.
PreparedBlock prepare_block(AppendStore& store, std::string&& data, const Hash& root, std::string_view root_raw,
                            std::string_view root_unverified);
// The same for a block whose parent chunk is `parent` (as Store::read_chunk_and_root gives it): its
// root is the parent when that is full, else the parent's base, so a patch never stacks on a patch.
PreparedBlock prepare_block_over(AppendStore& store, std::string&& data, const ChunkContent& parent);

// What the caller knows about the revision; the writer fills in the rest.
struct RevisionInfo {
  std::string ceph_image_id;
  std::string snap_name;
  uint64_t snap_id = 0;
  RevisionKind kind = RevisionKind::kFull;
  uint64_t bytes_read = 0;
  uint8_t order = 0;
  uint64_t features = 0;
  int64_t created = 0;  // 0: now
  // Snapshot taken between successful pre/post hooks (kRevisionApplicationConsistent).
  bool application_consistent = false;
  // Snapshot taken with a consistency group (kRevisionGroup): its name, run and gap; empty: none.
  std::string group;
  uint64_t group_run = 0;
  uint64_t group_gap_us = 0;
};

class RevisionWriter {
 public:
  ~RevisionWriter();
  RevisionWriter(const RevisionWriter&) = delete;
  RevisionWriter& operator=(const RevisionWriter&) = delete;

  uint64_t id() const { return id_; }
  uint64_t image() const { return image_; }
  uint64_t size() const { return size_; }
  // The newest committed revision of the image when this one began (its parent), if any.
  const std::optional<RevisionRecord>& parent() const { return parent_; }

  // Unwritten blocks keep the parent's content, except (a) beyond the parent's size, where they read
  // as zeros, and (b) everywhere when the revision was begun with from_empty.
  //
  // Records the content of `block` (at most block_size bytes, zero-padded). Blocks must be given in
  // strictly ascending order and below the revision's size. All-zero data becomes a zero entry; data
  // equal to what the block already holds adds no entry.
  void put_block(uint64_t block, std::string_view data);
  // (Each call takes the store's write mutex; writers of different images may run on different
  // threads at once.)
  // put_block with the hashing and compression done beforehand by prepare_block().
  void put_prepared(uint64_t block, PreparedBlock&& prepared);
  // Records that `block` holds the chunk `hash`, which the store (or this revision) already holds:
  // a copy between stores references it without reading or sending its data. Returns false, and
  // records nothing, if the chunk is not there (the caller then reads it and calls put_block).
  [[nodiscard]] bool put_existing(uint64_t block, const Hash& hash);
  // Records that `block` reads as zeros in this revision.
  void put_zero(uint64_t block);
  // Records that every block in [first, end) reads as zeros; costs what the map holds there.
  void put_zero_range(uint64_t first, uint64_t end);

  // Makes chunk data durable, then commits the revision in one synced RocksDB write.
  RevisionRecord commit(const RevisionInfo& info);

  uint64_t bytes_stored() const { return bytes_stored_; }
  uint64_t new_chunks() const { return new_chunks_; }
  // Of the new chunks, those stored as patches (docs/format.md §4.2), and their stored bytes.
  uint64_t patch_chunks() const { return patch_chunks_; }
  uint64_t patch_bytes() const { return patch_bytes_; }
  uint64_t map_entries() const { return map_entries_; }

 private:
  friend class Store;
  RevisionWriter(Store& store, uint64_t id, uint64_t image, uint64_t size, bool from_empty,
                 std::optional<RevisionRecord> parent);
  void check_order(uint64_t block);
  void zero_stale(uint64_t until);
  void record(uint64_t block, const std::optional<Hash>& content, std::string_view padded_data);
  std::optional<Hash> current_content(uint64_t block);
  void flush(bool final);
  void seal_pack();

  Store& store_;
  uint64_t id_, image_, size_;
  std::optional<RevisionRecord> parent_;
  uint64_t parent_blocks_ = 0;
  std::optional<uint64_t> last_block_;
  uint64_t stale_cursor_ = 0;
  std::optional<EncodedChunk> encoded_;  // for the block being recorded, from put_prepared
  std::optional<Hash> patch_base_;       // likewise: encoded_ is a patch of this chunk
  bool store_raw_ = false;               // likewise: store the raw bytes, do not compress
  IndexBatch batch_;
  // Seeks the block map for the parent's content; re-created after each flush (a cursor pins the
  // state it was created at).
  std::optional<IndexCursor> lookup_;
  std::unique_ptr<PackWriter> pack_;
  // The revision's manifest (store/manifest.h), streamed as entries are recorded; put at commit.
  std::unique_ptr<ObjectSink> manifest_sink_;
  std::unique_ptr<ManifestEncoder> manifest_;
  bool manifest_put_ = false;  // the manifest is in the data area: a failed commit must remove it
  struct HashHasher {
    size_t operator()(const Hash& h) const;
  };
  // Chunks this revision referenced since the last flush: the record as it will be written if the
  // index still lacks it (a chunk new to the store), and the references added. A concurrent writer
  // may store the same chunk first; flush then adds our references to its record instead.
  struct DirtyChunk {
    ChunkRecord rec;
    uint64_t added_refs = 0;
    bool created = false;  // this revision appended it to its pack
  };
  // One more reference to a chunk the store (or this revision) holds.
  void add_ref(const Hash& hash);
  std::unordered_map<Hash, DirtyChunk, HashHasher> dirty_chunks_;
  uint64_t batch_entries_ = 0;
  uint64_t chunk_generation_seen_ = 0;  // the store's chunk generation after our last flush
  Hash digest_{};
  uint64_t bytes_stored_ = 0, new_chunks_ = 0, map_entries_ = 0, patch_chunks_ = 0, patch_bytes_ = 0;
  bool committed_ = false;
};

}  // namespace rbdvault::store
