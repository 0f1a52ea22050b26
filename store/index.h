// The index of a store (docs/format.md §4-§7): the only code that includes RocksDB. It stores and
// fetches the keys and records whose encodings format.{h,cc} define (images, revisions, pending
// marks, block-map entries, chunk and pack records, counters) and knows nothing of what they mean:
// point lookups, ordered scans (a key prefix or a key range) and atomic write batches whose
// durability the caller states every time.
//
// Hot paths (newest_entries, block_content, RevisionWriter flushes, chunk lookups) use it without
// copies: cursor keys and values are views into RocksDB's own buffers, valid until the cursor moves;
// a lookup fills a string the caller may reuse.
//
// Thread safety: as RocksDB's DB: any method from any thread; one cursor or batch per thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "store/format.h"
#include "store/index_fs.h"

namespace rocksdb {
class DB;
class Env;
class Iterator;
class WriteBatch;
}  // namespace rocksdb

namespace rbdvault::store {

// Whether a write must be on disk when it returns. A synced write also makes every earlier write
// durable (one log, in order): a run of batches need only sync its last.
enum class Sync : bool { kNo = false, kYes = true };

// Whether a scan should fill the block cache: a pass over a whole map should not evict the chunk
// records that point lookups need.
enum class Caching : bool { kFill = true, kBypass = false };

// A set of puts and deletes applied all or nothing by Index::write.
class IndexBatch {
 public:
  IndexBatch();
  ~IndexBatch();
  IndexBatch(IndexBatch&&) noexcept;
  IndexBatch& operator=(IndexBatch&&) noexcept;

  void put(std::string_view key, std::string_view value);
  void remove(std::string_view key);
  [[nodiscard]] size_t count() const;
  void clear();

 private:
  friend class Index;
  std::unique_ptr<rocksdb::WriteBatch> batch_;
};

// An ordered scan over the keys of a prefix (or of a range [lower, upper)). valid() is false past
// its end; a read error shows as !valid() and is thrown by check(). Keys and values are views valid
// until the cursor moves.
class IndexCursor {
 public:
  ~IndexCursor();
  IndexCursor(IndexCursor&&) noexcept;
  IndexCursor& operator=(IndexCursor&&) noexcept;

  [[nodiscard]] bool valid() const;
  void next();
  // Positions at the first key >= `key` / the last key <= `key` (still bounded by the prefix).
  void seek(std::string_view key);
  void seek_for_prev(std::string_view key);
  [[nodiscard]] std::string_view key() const;
  [[nodiscard]] std::string_view value() const;
  // Throws StoreError(kIO) "what: ..." if the scan stopped on a read error.
  void check(const std::string& what) const;

 private:
  friend class Index;
  struct Bound;  // a range's upper bound, at a stable address while the iterator reads it
  IndexCursor(std::string_view prefix, std::unique_ptr<Bound> bound);
  std::string prefix_;  // valid() requires it (empty: any key); short enough to need no allocation
  std::unique_ptr<Bound> bound_;
  std::unique_ptr<rocksdb::Iterator> it_;
};

class Index {
 public:
  // Creates an empty index in `path` (which must not hold one) and opens it for writing; `fs` as
  // for open().
  [[nodiscard]] static std::unique_ptr<Index> create(const std::filesystem::path& path,
                                                     const IndexFileSystem& fs = nullptr);
  // Opens the index in `path` for writing (the caller holds the store's writer lock). `fs`, if set,
  // replaces RocksDB's file system (tests inject faults there). `what` names the store in errors.
  [[nodiscard]] static std::unique_ptr<Index> open(const std::filesystem::path& path, const std::string& what,
                                                   const IndexFileSystem& fs = nullptr);
  // Opens a read-only view of what was committed when it is opened, while a writer may flush and
  // compact (see index.cc for how the view is kept whole).
  [[nodiscard]] static std::unique_ptr<Index> open_read_only(const std::filesystem::path& path, const std::string& what,
                                                             const IndexFileSystem& fs = nullptr);
  ~Index();
  Index(const Index&) = delete;
  Index& operator=(const Index&) = delete;

  // Point lookup by raw key: false if absent; `value` is overwritten (reuse it across calls).
  [[nodiscard]] bool get(std::string_view key, std::string& value, const std::string& what);

  // Typed point lookups (nullopt: absent). Decoders throw StoreError(kCorrupt) on a bad record.
  [[nodiscard]] std::optional<uint64_t> counter_value(std::string_view name);
  [[nodiscard]] std::optional<uint64_t> image_id(std::string_view pool, std::string_view name);
  [[nodiscard]] std::optional<ImageRecord> image_record(uint64_t image);
  [[nodiscard]] std::optional<RevisionRecord> revision_record(uint64_t revision);
  [[nodiscard]] std::optional<ChunkRecord> chunk_record(const Hash& hash);
  [[nodiscard]] std::optional<PackRecord> pack_record(uint32_t pack);

  // A scan of every key starting with `prefix` (empty: the whole index), positioned at the first.
  [[nodiscard]] IndexCursor scan(std::string_view prefix, Caching caching = Caching::kFill);
  // The same, not positioned: the caller seeks first (lookups by seek_for_prev pay one seek each).
  [[nodiscard]] IndexCursor cursor(std::string_view prefix, Caching caching = Caching::kFill);
  // A scan of [lower, upper), positioned at lower; reads stop at `upper` inside RocksDB.
  [[nodiscard]] IndexCursor range(std::string_view lower, std::string_view upper, Caching caching = Caching::kFill);

  void write(IndexBatch& batch, Sync sync, const std::string& what);
  void put(std::string_view key, std::string_view value, Sync sync, const std::string& what);
  void remove(std::string_view key, Sync sync, const std::string& what);

  // Closes the index, reporting an error (the destructor closes quietly).
  void close(const std::string& what);

  // Tests only: the database itself (flushes, compactions, corrupting records on purpose).
  rocksdb::DB& db_for_tests() { return *db_; }

 private:
  Index() = default;
  std::unique_ptr<rocksdb::Env> env_;  // set when a file system is given; outlives db_
  std::unique_ptr<rocksdb::DB> db_;
};

}  // namespace rbdvault::store
