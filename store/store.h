// The revision store: a directory holding an index (RocksDB) and chunk data (pack files). It knows
// nothing about Ceph; callers feed it blocks. See docs/format.md for the on-disk format.
//
// Thread safety: the read methods may be called from any thread. Several RevisionWriters of
// different images may run at once, each on its own thread (a batch backs up images in parallel);
// they serialise on the store's write mutex for the short index and pack updates, never for
// hashing or compression (prepare_block). forget(), gc and repair need the store to themselves:
// they are refused while a revision is being written. (set_protected only rewrites a committed
// revision's record and may run alongside.)
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "store/crash_points.h"
#include "store/error.h"
#include "store/format.h"
#include "store/sha256.h"

namespace rocksdb {
class FileSystem;
}  // namespace rocksdb

namespace rbdvault::store {

class Index;
class ObjectStore;
class PackReader;
class RevisionWriter;
class ReaderLock;
class WriterLock;

struct StoreOptions {
  // Fixed block size of the store, a power of two from 64 KiB to 4 MiB. Default 64 KiB: small enough
  // that scattered 4 KiB writes cost little to read and store, large enough that the index stays
  // well under 1% of the data (about 100 bytes of index per block).
  uint32_t block_size = 64 * 1024;
};

struct WriterOptions {
  // zstd level for chunk payloads; 0 stores raw. Level 1 costs little and saves much on text/zeros.
  int zstd_level = 1;
  // A pack is sealed and a new one started once it reaches this many bytes.
  uint64_t pack_target_bytes = 1ull << 30;
  // Block map entries buffered before an intermediate (still invisible) flush to RocksDB; bounds the
  // memory of a revision whatever the image size.
  uint64_t flush_entries = 131072;
};

// What the index and the data area are stored on. Empty (the default): the store directory's own
// (RocksDB's default file system; open_object_store(dir)). Tests put fault-injecting wrappers here.
struct StoreIo {
  std::shared_ptr<rocksdb::FileSystem> index_fs;
  std::shared_ptr<ObjectStore> objects;
};

enum class OpenMode {
  kReadOnly,  // no lock; works while a writer runs and sees what was committed when opened
  kWriter,    // takes the store's writer lock for the life of the Store
};

// Where a revision starts from; the rest of RevisionRecord is filled at commit.
struct RevisionStart {
  std::string pool;
  std::string name;
  uint64_t size = 0;  // bytes of the image at the snapshot
  // true: blocks not written read as zeros (a full read); false: they keep the parent's content
  // (a diff against the parent).
  bool from_empty = true;
  // An id from reserve_revision_id() (the caller named its snapshot after it); 0: reserve one now.
  uint64_t revision = 0;
};

class Store {
 public:
  // True if `dir` holds a store marker (cheap; does not open the index).
  static bool is_store(const std::filesystem::path& dir);
  // Creates a store in `dir` (which must be absent or empty). Throws StoreError.
  static void init(const std::filesystem::path& dir, const StoreOptions& options);
  // Opens an existing store. `holder` describes the operation for the lock file ("backup rbd/x").
  static std::unique_ptr<Store> open(const std::filesystem::path& dir, OpenMode mode, const std::string& holder = "",
                                     const WriterOptions& writer_options = {}, const StoreIo& io = {});
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const std::filesystem::path& dir() const { return dir_; }
  uint32_t block_size() const { return block_size_; }
  const std::string& store_id() const { return store_id_; }
  bool writable() const { return mode_ == OpenMode::kWriter; }

  std::vector<ImageRecord> images();
  std::optional<ImageRecord> find_image(const std::string& pool, const std::string& name);
  // Committed revisions in ascending id order, of one image or of all.
  std::vector<RevisionRecord> revisions(std::optional<uint64_t> image = std::nullopt);
  std::optional<RevisionRecord> revision(uint64_t id);
  std::optional<RevisionRecord> latest_revision(uint64_t image);
  std::optional<ChunkRecord> chunk(const Hash& hash);

  // For every block in [first, end) of `image` that has a map entry at or before `max_rev`, calls
  // `fn(block, hash)` with the newest such entry, in ascending block order; hash is nullopt for a zero
  // entry. Streams from RocksDB: memory does not depend on the range.
  void newest_entries(uint64_t image, uint64_t first, uint64_t end, uint64_t max_rev,
                      const std::function<void(uint64_t block, const std::optional<Hash>& hash)>& fn);
  // Calls fn(block, hash) for every non-zero block of the revision, ascending.
  void for_each_data_block(const RevisionRecord& rev, const std::function<void(uint64_t, const Hash&)>& fn);
  // Recomputes a revision's whole-revision checksum from the block map alone (see RevisionDigest).
  Hash compute_digest(const RevisionRecord& rev);
  // A chunk's raw content (block_size bytes), verified against its SHA-256.
  std::string read_chunk(const Hash& hash);

  // Reserves a revision id for a later begin_revision() (callers name their snapshot after it).
  // Ids are never reused; one reserved but never begun is simply skipped. Writer mode only.
  uint64_t reserve_revision_id();
  // Revisions being written right now by this process.
  size_t active_writers();

  // Held by forget, gc and repair for their whole run: taken only while no revision is being
  // written, and until it is released begin_revision() is refused (kLocked). The check and the
  // work are under one claim, so no writer can start in between. Only one at a time.
  class Exclusive {
   public:
    Exclusive(Exclusive&& other) noexcept : store_(std::exchange(other.store_, nullptr)) {}
    Exclusive& operator=(Exclusive&&) = delete;
    ~Exclusive();

   private:
    friend class Store;
    explicit Exclusive(Store* store) : store_(store) {}
    Store* store_;
  };
  [[nodiscard]] Exclusive exclusive(const char* operation);
  // The content hash of `block` in revision `rev` of `image` (nullopt: zeros). One index seek.
  std::optional<Hash> block_content(uint64_t image, uint64_t block, uint64_t rev);

  // Repair support. Chunks that fail verification (or whose index record is missing) and the block
  // map entries naming them: image, block, entry revision.
  struct DamagedChunk {
    Hash hash{};
    std::string problem;
    uint64_t entries = 0;                                        // block map entries naming it
    std::vector<std::tuple<uint64_t, uint64_t, uint64_t>> uses;  // (image, block, entry revision), first few
  };
  std::vector<DamagedChunk> find_damaged_chunks();
  // Looks through every pack file for an intact copy of a chunk (e.g. one left by an earlier run).
  std::optional<std::string> find_chunk_copy(const Hash& hash);
  // Stores `raw` (verified against `hash`) in a new pack and points the chunk's record at it, with
  // `refs` references. Writer mode only.
  void rewrite_chunk(const Hash& hash, std::string_view raw, uint64_t refs);

  // Removes one revision. Its block map entries still needed by the next revision of the image move
  // to that revision; the rest are dropped with their chunk references (space comes back with gc).
  // Every other revision reads exactly as before. Refused for protected revisions and for the newest
  // revision of an image (its snapshot is the next diff's base). Crash-safe: a killed forget is
  // completed by the next writer to open the store.
  void forget(uint64_t revision);
  void set_protected(uint64_t revision, bool on);
  // Marks a committed revision as failing its post-backup verification (kRevisionVerifyFailed).
  void mark_verify_failed(uint64_t revision);

  // Recreates the index of the store in `dir` from its data area alone (manifests and pack files;
  // store/rebuild.cc, docs/format.md §16.4), then swaps it in atomically. Takes the writer lock and
  // readers.lock exclusively. Kill-safe: a killed rebuild leaves the old index or the new one.
  struct RebuildStats {
    uint64_t images = 0, revisions = 0, entries = 0, packs = 0, chunks = 0, chunks_skipped = 0, manifests_skipped = 0;
  };
  static RebuildStats rebuild_index(const std::filesystem::path& dir);
  // Upgrades a format 1 store in place to format 2 (store/upgrade.cc, docs/format.md §14): writes
  // every revision's manifest from the index, then the new marker (the commit point). Kill-safe:
  // a killed upgrade is run again. Returns the manifests written; false in `upgraded` if the store
  // was already format 2.
  struct UpgradeStats {
    bool upgraded = false;
    uint64_t manifests_written = 0, manifests_removed = 0;
  };
  static UpgradeStats upgrade(const std::filesystem::path& dir);

  // Manifests (docs/format.md §16). Writes generation `generation` of `rec`'s manifest with the
  // revision's block-map entries as the index holds them now (a scan of its image's map).
  void put_manifest_from_index(const RevisionRecord& rec, uint32_t generation, const std::vector<uint64_t>& absorbed);
  // The generations of a revision's manifests in the data area, ascending.
  std::vector<uint32_t> manifest_generations(uint64_t revision);
  // Removes the revision's manifests of generations below `below`.
  void remove_manifests(uint64_t revision, uint32_t below);

  // Starts a revision of pool/name (the image record is created if new). Writer mode only; refused
  // while another revision of the same image is being written.
  std::unique_ptr<RevisionWriter> begin_revision(const RevisionStart& start);

  uint64_t blocks_for(uint64_t size) const { return (size + block_size_ - 1) / block_size_; }

  // The index (store/index.h), for the store's own operations in store/ and for tests; callers
  // outside store/ use the methods above (or the capabilities of revision_store.h).
  Index& index() { return *index_; }
  const WriterOptions& writer_options() const { return writer_options_; }
  PackReader& packs() { return *packs_; }
  // The data area (object_store.h): pack files and revision manifests go through it alone.
  ObjectStore& objects() { return *objects_; }
  // Named steps where tests may crash the process (see crash_points.h).
  CrashPoints& crash_points() { return crash_points_; }

 private:
  friend class RevisionWriter;
  Store() = default;
  static std::unique_ptr<Store> open_impl(const std::filesystem::path& dir, OpenMode mode, const std::string& holder,
                                          const WriterOptions& writer_options, const StoreIo& io,
                                          bool allow_format_1);
  void recover();
  // Removes the uncommitted entries of one revision (and the chunk references they held).
  // kRecovery: left by a killed writer, found at open (worth a warning); kOwnFailure: this process's
  // own failed revision, whose error the caller reports (a second line would only repeat it).
  enum class RollBack { kRecovery, kOwnFailure };
  // keep_mark: the W mark stays (a damaged mark's rollback goes image by image and drops it last).
  void roll_back(const PendingRecord& pending, RollBack why, bool keep_mark = false);
  void roll_back_damaged_mark(uint64_t revision);
  // A killed writer whose manifest was put (the commit point) is committed from it; false if it
  // has none (a damaged one is removed), and it must be rolled back.
  bool roll_forward(const PendingRecord& pending);
  // Completes the manifest steps a crash interrupted (a revision with several generations).
  void tidy_manifests();
  // Writes the revision's record, flags changed, as a new manifest generation (the commit point),
  // then in the index; then removes the old generation.
  void rewrite_flags(RevisionRecord rev, const char* crash_point);
  void end_write(uint64_t revision, uint64_t image);
  void require_no_writers(const char* operation);
  void finish_forget(RevisionRecord rev);
  uint64_t counter(std::string_view name, uint64_t initial);
  // Returns the counter's value and stores value + 1 at once (ids concurrent writers must not share).
  uint64_t advance_counter(std::string_view name, uint64_t initial, bool sync);

  std::filesystem::path dir_;
  OpenMode mode_ = OpenMode::kReadOnly;
  uint32_t block_size_ = 0;
  std::string store_id_;
  WriterOptions writer_options_;
  std::unique_ptr<WriterLock> lock_;
  std::unique_ptr<ReaderLock> reader_lock_;
  std::unique_ptr<Index> index_;
  std::shared_ptr<ObjectStore> objects_;
  std::unique_ptr<PackReader> packs_;
  CrashPoints crash_points_;
  // Guards the index and pack updates of concurrent RevisionWriters and the sets below.
  std::mutex write_mu_;
  std::set<uint64_t> active_revisions_, active_images_;
  const char* exclusive_op_ = nullptr;  // the operation holding an Exclusive, if any
  // Bumped by every writer flush and rollback (which change chunk records); a writer that sees it
  // unchanged since its own last flush knows the chunk records it read are still current.
  uint64_t chunk_generation_ = 0;
};

}  // namespace rbdvault::store
