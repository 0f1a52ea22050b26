// The public interface of the revision store, split by capability as RocksDB's BackupEngine is
// (BackupEngineReadOnlyBase, BackupEngineAppendOnlyBase, BackupEngine):
//
//   ReadOnlyStore     list images and revisions, read block maps and chunks   (view/, restore, verify, ls)
//   AppendStore       + reserve ids, write revisions, flag committed ones     (backup)
//   MaintenanceStore  + forget, the exclusive claim, repair support           (forget, expire, gc, repair)
//
// Each open function returns the capability asked for; `Store` (store.h) implements all three and
// is what the store's own operations (gc.h, scrub.h, du, rebuild, upgrade) work on. The store knows
// nothing about Ceph; callers feed it blocks. docs/format.md describes the on-disk format.
//
// What may run concurrently with what (docs/format.md §7.6 and §9; store.h, lock.h):
//
// | alongside ->              | readers            | a writer (backup)       | writers of other images | forget / gc / repair        | rebuild-index / upgrade |
// |---------------------------|--------------------|-------------------------|-------------------------|-----------------------------|-------------------------|
// | readers (any process)     | yes, any number    | yes: see what was       | yes                     | forget, repair: yes;        | rebuild: no (it takes   |
// |                           |                    | committed at their open |                         | gc: no (readers.lock excl.) | readers.lock exclusive);|
// |                           |                    |                         |                         |                             | upgrade: readers refuse |
// |                           |                    |                         |                         |                             | a format 1 store        |
// | a writer, same process    | yes                | same image: no (kLocked)| yes: one thread each,   | no: refused both ways while | no (writer lock)        |
// |                           |                    |                         | short index/pack updates| one runs (Exclusive)        |                         |
// |                           |                    |                         | serialised              |                             |                         |
// | a writer, other process   | yes                | no: one writer lock per | no (writer lock)        | no (writer lock)            | no (writer lock)        |
// |                           |                    | store (kLocked at once) |                         |                             |                         |
// | forget / gc / repair      | as above           | as above                | as above                | no: one Exclusive at a time | no (writer lock)        |
// | set_protected,            | yes                | yes: it rewrites only a | yes                     | not guarded (it takes no    | no (writer lock)        |
// | mark_verify_failed        |                    | committed record        |                         | claim): do not run it then  |                         |
//
// "Writer" means a store opened for append or maintenance: it holds the store's writer lock
// (DIR/lock) for its life, and its open rolls back or forward what a killed writer left. Several
// threads may share one writer (begin_revision per image, each RevisionWriter on its own thread);
// the read methods may be called from any thread. Locks never wait: a conflict is an error at once.
//
// A store in a RADOS pool (rados_object_store.h, rados_lease.h) is shared by hosts, each with its own
// index directory, so the table holds across hosts through leases on the pool's marker object:
// DIR/lock is also the writer lease "rbdvault.writer" (one writer in the whole pool), and
// DIR/readers.lock also the reader lease "rbdvault.readers": every read-only open (restore, mount,
// serve, scrub, verify, ls, du, copy's source...) and every index rebuild (rebuild-index, and
// bringing a host's index up to date) holds it shared for its whole life; gc holds it exclusive.
// So gc on host A is refused (kLocked, naming host, pid and command of each reader) while any host
// reads, and a read-only open on host B is refused while gc runs anywhere. forget and repair remove
// no pack (repair writes new copies; the packs it leaves go with gc), so readers anywhere go on
// alongside them as locally. Leases last 30 s and are renewed every 10 s; a holder that dies is out
// after at most 30 s, a live one is never broken, and a reader whose lease was not renewed in time
// (less than 5 s left) is refused its next read (kLocked) rather than reading what gc may remove.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "store/crash_points.h"
#include "store/error.h"
#include "store/format.h"
#include "store/index_fs.h"
#include "store/sha256.h"

namespace rbdvault::store {

class ObjectStore;
class RevisionWriter;

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
  // Block map entries buffered before an intermediate (still invisible) flush to the index; bounds
  // the memory of a revision whatever the image size.
  uint64_t flush_entries = 131072;
};

// What the index and the data area are stored on. Empty (the default): the store directory's own
// (RocksDB's default file system; open_object_store(dir)). Tests put fault-injecting wrappers here.
struct StoreIo {
  IndexFileSystem index_fs;
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

// A chunk's content with its root full chunk (read_chunk_and_root).
struct ChunkContent {
  std::string content;
  Hash root{};               // the chunk itself when it is full, else its patch's base
  // The base's content for a patch, as read: its bytes outside the patched pages are verified
  // through `content`, the patched ones are not. Empty for a full chunk (= content).
  std::string root_content;
  // For a patch, its page bitmap: the pages of root_content that nothing verified. A new patch over
  // the same root must store these pages whatever they hold (prepare_block), or a page damaged in
  // the base and equal to the new content by chance would be left out, and the new chunk would read
  // right only until the base is repaired.
  std::string root_unverified;
};

// Reading committed revisions. A read-only open takes no writer lock, runs no recovery and sees the
// store as it was committed when opened.
class ReadOnlyStore {
 public:
  virtual ~ReadOnlyStore() = default;

  virtual const std::filesystem::path& dir() const = 0;
  // How log lines name the store: its directory, or rados:POOL[/NS] for a store in a pool (whose
  // dir() is the local index directory).
  virtual std::string name() const = 0;
  virtual uint32_t block_size() const = 0;
  virtual const std::string& store_id() const = 0;
  virtual bool writable() const = 0;
  virtual uint64_t blocks_for(uint64_t size) const = 0;
  // Named steps where tests may crash the process (crash_points.h); restore and backup name theirs.
  virtual CrashPoints& crash_points() = 0;

  virtual std::vector<ImageRecord> images() = 0;
  virtual std::optional<ImageRecord> find_image(const std::string& pool, const std::string& name) = 0;
  // Committed revisions in ascending id order, of one image or of all.
  virtual std::vector<RevisionRecord> revisions(std::optional<uint64_t> image = std::nullopt) = 0;
  virtual std::optional<RevisionRecord> revision(uint64_t id) = 0;
  virtual std::optional<RevisionRecord> latest_revision(uint64_t image) = 0;
  virtual std::optional<ChunkRecord> chunk(const Hash& hash) = 0;

  // For every block in [first, end) of `image` that has a map entry at or before `max_rev`, calls
  // `fn(block, hash)` with the newest such entry, in ascending block order; hash is nullopt for a zero
  // entry. Streams from the index: memory does not depend on the range.
  virtual void newest_entries(uint64_t image, uint64_t first, uint64_t end, uint64_t max_rev,
                              const std::function<void(uint64_t block, const std::optional<Hash>& hash)>& fn) = 0;
  // Calls fn(block, hash) for every non-zero block of the revision, ascending.
  virtual void for_each_data_block(const RevisionRecord& rev, const std::function<void(uint64_t, const Hash&)>& fn) = 0;
  // Recomputes a revision's whole-revision checksum from the block map alone (see RevisionDigest).
  virtual Hash compute_digest(const RevisionRecord& rev) = 0;
  // A chunk's raw content (block_size bytes), verified against its SHA-256 (a patch chunk is
  // resolved against its base first).
  virtual std::string read_chunk(const Hash& hash) = 0;
  // The same, plus the full chunk at its root (itself, or a patch's base) with the base's content:
  // what a backup diffs a changed block against to store a patch, at no extra read.
  virtual ChunkContent read_chunk_and_root(const Hash& hash) = 0;
  // The content hash of `block` in revision `rev` of `image` (nullopt: zeros). One index seek.
  virtual std::optional<Hash> block_content(uint64_t image, uint64_t block, uint64_t rev) = 0;
};

// Adding revisions (and flagging committed ones). Holds the writer lock.
class AppendStore : public ReadOnlyStore {
 public:
  // Reserves a revision id for a later begin_revision() (callers name their snapshot after it).
  // Ids are never reused; one reserved but never begun is simply skipped.
  virtual uint64_t reserve_revision_id() = 0;
  // The options the store was opened with (prepare_block compresses at their zstd level).
  virtual const WriterOptions& writer_options() const = 0;
  // Starts a revision of pool/name (the image record is created if new). Refused while another
  // revision of the same image is being written, and while an Exclusive claim is held.
  virtual std::unique_ptr<RevisionWriter> begin_revision(const RevisionStart& start) = 0;
  // Revisions being written right now by this process.
  virtual size_t active_writers() = 0;
  virtual void set_protected(uint64_t revision, bool on) = 0;
  // Marks a committed revision as failing its post-backup verification (kRevisionVerifyFailed).
  virtual void mark_verify_failed(uint64_t revision) = 0;
};

// Removing and repairing: forget, gc, repair, expire. Holds the writer lock.
class MaintenanceStore : public AppendStore {
 public:
  // Held by forget, gc and repair for their whole run: taken only while no revision is being
  // written, and until it is released begin_revision() is refused (kLocked). The check and the
  // work are under one claim, so no writer can start in between. Only one at a time.
  class Exclusive {
   public:
    Exclusive(Exclusive&& other) noexcept : store_(std::exchange(other.store_, nullptr)) {}
    Exclusive& operator=(Exclusive&&) = delete;
    ~Exclusive() {
      if (store_) store_->release_exclusive();
    }

   private:
    friend class Store;
    explicit Exclusive(MaintenanceStore* store) : store_(store) {}
    MaintenanceStore* store_;
  };
  [[nodiscard]] virtual Exclusive exclusive(const char* operation) = 0;

  // Removes one revision. Its block map entries still needed by the next revision of the image move
  // to that revision; the rest are dropped with their chunk references (space comes back with gc).
  // Every other revision reads exactly as before. Refused for protected revisions and for the newest
  // revision of an image (its snapshot is the next diff's base). Crash-safe: a killed forget is
  // completed by the next writer to open the store.
  virtual void forget(uint64_t revision) = 0;

  // Repair support. Chunks that fail verification (or whose index record is missing) and the block
  // map entries naming them: image, block, entry revision.
  struct DamagedChunk {
    Hash hash{};
    std::string problem;
    uint64_t entries = 0;                                        // block map entries naming it
    std::vector<std::tuple<uint64_t, uint64_t, uint64_t>> uses;  // (image, block, entry revision), first few
  };
  virtual std::vector<DamagedChunk> find_damaged_chunks() = 0;
  // Looks through every pack file for an intact copy of a chunk (e.g. one left by an earlier run).
  virtual std::optional<std::string> find_chunk_copy(const Hash& hash) = 0;
  // Stores `raw` (verified against `hash`) in a new pack and points the chunk's record at it, with
  // `refs` references.
  virtual void rewrite_chunk(const Hash& hash, std::string_view raw, uint64_t refs) = 0;

 protected:
  virtual void release_exclusive() = 0;
};

// Opening a store (which must exist: `init` creates one). `holder` describes the operation for the
// lock file ("backup rbd/x"). Throw StoreError (kNotFound, kInvalid, kLocked, kCorrupt, kIO).
[[nodiscard]] std::unique_ptr<ReadOnlyStore> open_read_only(const std::filesystem::path& dir, const StoreIo& io = {});
[[nodiscard]] std::unique_ptr<AppendStore> open_for_append(const std::filesystem::path& dir, const std::string& holder,
                                                           const WriterOptions& options = {}, const StoreIo& io = {});
[[nodiscard]] std::unique_ptr<MaintenanceStore> open_for_maintenance(const std::filesystem::path& dir,
                                                                     const std::string& holder,
                                                                     const WriterOptions& options = {},
                                                                     const StoreIo& io = {});

// Operations on a closed store, taking the writer lock themselves (rebuild also readers.lock,
// exclusively). Recreates the index from the data area alone (store/rebuild.cc, docs/format.md §16.4), swapped in
// atomically; kill-safe: a killed rebuild leaves the old index or the new one.
struct RebuildStats {
  uint64_t images = 0, revisions = 0, entries = 0, packs = 0, chunks = 0, chunks_skipped = 0, manifests_skipped = 0;
  uint64_t packs_reused = 0;  // chunk records taken from the previous index (a cache refresh)
};
// A refresh (reuse_unchanged_packs, for a host's cache of a shared store: rados_cache.h) takes the
// chunk records of every pack the previous build read whole and that is still the same object
// (ObjectStore::identity) from the previous index instead of reading the pack again; everything
// else is as a full rebuild, to which it falls back when the result names a chunk it has no record
// of. The backend must provide identities for any pack to be reused.
RebuildStats rebuild_index(const std::filesystem::path& dir, const StoreIo& io = {}, bool reuse_unchanged_packs = false);
// Upgrades a format 1 store in place to format 2 (store/upgrade.cc, docs/format.md §14): writes
// every revision's manifest from the index, then the new marker (the commit point). Kill-safe: a
// killed upgrade is run again. `upgraded` is false if the store was already format 2.
struct UpgradeStats {
  bool upgraded = false;
  uint64_t manifests_written = 0, manifests_removed = 0;
};
UpgradeStats upgrade_store(const std::filesystem::path& dir);

}  // namespace rbdvault::store
