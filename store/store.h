// The revision store: a directory holding an index (store/index.h, RocksDB) and chunk data (pack
// files and revision manifests in the data area, store/object_store.h). It knows nothing about Ceph;
// callers feed it blocks. See docs/format.md for the on-disk format, and revision_store.h for the
// public capabilities (read-only, append, maintenance) and what may run concurrently with what.
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
#include "store/object_store.h"
#include "store/revision_store.h"
#include "store/sha256.h"

namespace rbdvault::store {

class Index;
class ObjectStore;
class PackReader;
class RevisionWriter;
class ReaderLock;
class WriterLock;

// Implements every capability of revision_store.h; `final`, so calls through a Store& are direct.
class Store final : public MaintenanceStore {
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

  // ReadOnlyStore (documented in revision_store.h).
  const std::filesystem::path& dir() const override { return dir_; }
  std::string name() const override;
  uint32_t block_size() const override { return block_size_; }
  const std::string& store_id() const override { return store_id_; }
  bool writable() const override { return mode_ == OpenMode::kWriter; }
  uint64_t blocks_for(uint64_t size) const override { return (size + block_size_ - 1) / block_size_; }
  std::vector<ImageRecord> images() override;
  std::optional<ImageRecord> find_image(const std::string& pool, const std::string& name) override;
  std::vector<RevisionRecord> revisions(std::optional<uint64_t> image = std::nullopt) override;
  std::optional<RevisionRecord> revision(uint64_t id) override;
  std::optional<RevisionRecord> latest_revision(uint64_t image) override;
  std::optional<ChunkRecord> chunk(const Hash& hash) override;
  void newest_entries(uint64_t image, uint64_t first, uint64_t end, uint64_t max_rev,
                      const std::function<void(uint64_t block, const std::optional<Hash>& hash)>& fn) override;
  void for_each_data_block(const RevisionRecord& rev, const std::function<void(uint64_t, const Hash&)>& fn) override;
  Hash compute_digest(const RevisionRecord& rev) override;
  std::string read_chunk(const Hash& hash) override;
  ChunkContent read_chunk_and_root(const Hash& hash) override;
  std::optional<Hash> block_content(uint64_t image, uint64_t block, uint64_t rev) override;

  // AppendStore. Writer mode only (kInvalid on a read-only open).
  uint64_t reserve_revision_id() override;
  std::unique_ptr<RevisionWriter> begin_revision(const RevisionStart& start) override;
  size_t active_writers() override;
  void set_protected(uint64_t revision, bool on) override;
  void mark_verify_failed(uint64_t revision) override;

  // MaintenanceStore. Writer mode only.
  [[nodiscard]] Exclusive exclusive(const char* operation) override;
  void forget(uint64_t revision) override;
  std::vector<DamagedChunk> find_damaged_chunks() override;
  std::optional<std::string> find_chunk_copy(const Hash& hash) override;
  void rewrite_chunk(const Hash& hash, std::string_view raw, uint64_t refs) override;

  // Operations on a closed store (revision_store.h: rebuild_index, upgrade_store).
  using RebuildStats = store::RebuildStats;
  using UpgradeStats = store::UpgradeStats;
  // `io` as for open(): the new index's files go through io.index_fs, the data area is read
  // through io.objects (the fault matrix injects faults there).
  static RebuildStats rebuild_index(const std::filesystem::path& dir, const StoreIo& io = {}, bool reuse = false);
  static UpgradeStats upgrade(const std::filesystem::path& dir);

  // Manifests (docs/format.md §16). Writes generation `generation` of `rec`'s manifest with the
  // revision's block-map entries as the index holds them now (a scan of its image's map).
  void put_manifest_from_index(const RevisionRecord& rec, uint32_t generation, const std::vector<uint64_t>& absorbed);
  // The generations of a revision's manifests in the data area, ascending.
  std::vector<uint32_t> manifest_generations(uint64_t revision);
  // Removes the revision's manifests of generations below `below`.
  void remove_manifests(uint64_t revision, uint32_t below);

  // The index (store/index.h), for the store's own operations in store/ and for tests; callers
  // outside store/ use the methods above (or the capabilities of revision_store.h).
  Index& index() { return *index_; }
  const WriterOptions& writer_options() const override { return writer_options_; }
  PackReader& packs() { return *packs_; }
  // The data area (object_store.h): pack files and revision manifests go through it alone.
  ObjectStore& objects() { return *objects_; }
  // Named steps where tests may crash the process (see crash_points.h).
  CrashPoints& crash_points() override { return crash_points_; }

 private:
  friend class RevisionWriter;
  Store() = default;
  void release_exclusive() override;
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
  std::optional<uint64_t> manifest_image(uint64_t revision);
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
  // A read-only open's lease on a shared data area (object_store.h: lease_readers); null if local.
  std::unique_ptr<ObjectStore::Lease> pool_readers_;
  std::unique_ptr<PackReader> packs_;
  CrashPoints crash_points_;
  // Guards the index and pack updates of concurrent RevisionWriters and the sets below.
  std::mutex write_mu_;
  std::set<uint64_t> active_revisions_, active_images_;
  const char* exclusive_op_ = nullptr;  // the operation holding an Exclusive, if any
  // Bumped by every writer flush and rollback (which change chunk records); a writer that sees it
  // unchanged since its own last flush knows the chunk records it read are still current.
  uint64_t chunk_generation_ = 0;
  // False only where a format 2 store could not be moved to format 3 (a backend with a
  // backend file but no marker object of its own): its writers store full chunks only.
  bool patches_allowed_ = true;
};

}  // namespace rbdvault::store
