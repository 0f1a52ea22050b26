#include "store/index.h"

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <utility>

#include "store/error.h"

namespace fs = std::filesystem;

namespace rbdvault::store {
namespace {

// A full disk is no-space (exit 7: free space). Anything else RocksDB reports stays an I/O error,
// corruption included: kCorrupt means "this chunk, manifest or record is damaged" to the code that
// catches it (recovery drops such a manifest, forget passes over such a record), and a RocksDB that
// failed mid-way says nothing about the item at hand. Its message names rebuild-index.
StoreError::Kind kind_of(const rocksdb::Status& s) {
  return s.IsNoSpace() ? StoreError::Kind::kNoSpace : StoreError::Kind::kIO;
}

void check(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return;
  throw StoreError(kind_of(s), what + ": " + s.ToString() +
                                   (s.IsCorruption() ? "; if the index is damaged, rebuild it from the data area "
                                                       "with `rbdvault rebuild-index`"
                                                     : ""));
}

// Opening: an index that is missing (no CURRENT, no directory) is lost, which is damage as well;
// Store::open names the command that rebuilds it.
void check_open(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return;
  const bool lost = s.IsPathNotFound() || s.IsInvalidArgument() || s.IsNotFound() || s.IsCorruption();
  throw StoreError(lost ? StoreError::Kind::kCorrupt : kind_of(s), what + ": " + s.ToString());
}

rocksdb::Slice slice(std::string_view v) { return rocksdb::Slice(v.data(), v.size()); }

// A point lookup whose error message is built only when there is an error (chunk lookups are on
// the backup's hot path).
template <class What>
bool get_value(rocksdb::DB& db, std::string_view key, std::string& value, What&& what) {
  const rocksdb::Status st = db.Get(rocksdb::ReadOptions(), slice(key), &value);
  if (st.IsNotFound()) return false;
  if (!st.ok()) check(st, what());
  return true;
}

// The options every open of an index uses.
rocksdb::Options db_options(rocksdb::Env* env) {
  rocksdb::Options o;
  if (env) o.env = env;
  rocksdb::BlockBasedTableOptions t;
  // Chunk lookups by hash are point reads that mostly miss on new data: bloom filters make the
  // misses cheap at 10 million chunks.
  t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
  o.max_open_files = 512;
  // Block map entries are small; a 32 MiB memtable holds ~300k of them and keeps a backup's
  // memory bounded (RocksDB's 64 MiB default would be a quarter of our budget).
  o.write_buffer_size = 32 << 20;
  o.keep_log_file_num = 4;
  // RocksDB fallocates each WAL file in steps of ~1.1 x write_buffer_size (35 MiB here) and each
  // MANIFEST by 4 MiB: about 40 MiB before the first byte of data, which made a backup to a small
  // file system fail with ENOSPC. The index of a backup store is small and written in batches;
  // preallocation buys it nothing.
  o.allow_fallocate = false;
  o.manifest_preallocation_size = 64 << 10;
  o.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  return o;
}

std::unique_ptr<rocksdb::Env> env_for(const IndexFileSystem& fs) {
  return fs ? rocksdb::NewCompositeEnv(fs) : nullptr;
}

// Which version of the index a reader would open: CURRENT's text (the MANIFEST's name) and that
// MANIFEST's size; every flush or compaction the writer commits appends to it (or starts another).
std::pair<std::string, int64_t> index_version(const fs::path& index) {
  std::ifstream in(index / "CURRENT", std::ios::binary);
  std::string current(256, '\0');
  in.read(current.data(), static_cast<std::streamsize>(current.size()));
  current.resize(static_cast<size_t>(in.gcount()));
  while (!current.empty() && current.back() == '\n') current.pop_back();
  std::error_code ec;
  const auto size = current.empty() ? 0 : fs::file_size(index / current, ec);
  return {current, ec ? -1 : static_cast<int64_t>(size)};
}

// A reader opens the index while the writer may flush and compact it, deleting the files it
// replaces. Three measures keep the reader's view whole and stable (OpenAsSecondary was the
// alternative; it needs a writable directory of its own and still reads files the primary deletes):
//  - max_open_files = -1: every table file of the version read at open is opened then and kept open
//    (the table readers are pinned), so a file the writer deletes later stays readable through our
//    descriptor; no read opens a file by name after the open.
//  - The open reads the MANIFEST, then lists and replays the write-ahead logs. A flush committed in
//    between moves data from a log (then deleted) to a table file the version read does not name:
//    the open succeeds but misses that data. So the version is compared before and after, and an
//    open that overlapped a change is thrown away and done again (found by
//    StoreTest.ConcurrentReadersOpenAndReadWhileTheWriterCompacts).
//  - A file the version names may be deleted before the open gets to it ("No such file"): again.
rocksdb::DB* open_db_read_only(const fs::path& index, const std::string& what, rocksdb::Env* env) {
  rocksdb::Options o = db_options(env);
  o.max_open_files = -1;
  constexpr int kTries = 100;
  for (int attempt = 1;; ++attempt) {
    const auto before = index_version(index);
    rocksdb::DB* raw = nullptr;
    const rocksdb::Status st = rocksdb::DB::OpenForReadOnly(o, index.string(), &raw);
    if (st.ok()) {
      std::unique_ptr<rocksdb::DB> db(raw);
      if (index_version(index) == before) return db.release();
      if (attempt == kTries)
        throw StoreError(StoreError::Kind::kIO, "open index of " + what + ": it kept changing while being opened");
      continue;
    }
    // RocksDB reports a vanished file as IOError, PathNotFound or (a table file listed by the
    // MANIFEST) Corruption "Can't access ...: No such file or directory".
    const bool vanished = st.IsPathNotFound() || st.ToString().find("No such file") != std::string::npos;
    if (!vanished || attempt == kTries) check_open(st, "open index of " + what);
    spdlog::debug("open index of {}: {} (the writer replaced a file); trying again", what, st.ToString());
  }
}

}  // namespace

// ---- IndexBatch

IndexBatch::IndexBatch() : batch_(std::make_unique<rocksdb::WriteBatch>()) {}
IndexBatch::~IndexBatch() = default;
IndexBatch::IndexBatch(IndexBatch&&) noexcept = default;
IndexBatch& IndexBatch::operator=(IndexBatch&&) noexcept = default;
void IndexBatch::put(std::string_view key, std::string_view value) { batch_->Put(slice(key), slice(value)); }
void IndexBatch::remove(std::string_view key) { batch_->Delete(slice(key)); }
size_t IndexBatch::count() const { return static_cast<size_t>(batch_->Count()); }
void IndexBatch::clear() { batch_->Clear(); }

// ---- IndexCursor

struct IndexCursor::Bound {
  std::string upper;
  rocksdb::Slice slice;
};

IndexCursor::IndexCursor(std::string_view prefix, std::unique_ptr<Bound> bound)
    : prefix_(prefix), bound_(std::move(bound)) {}
IndexCursor::~IndexCursor() = default;
IndexCursor::IndexCursor(IndexCursor&&) noexcept = default;
IndexCursor& IndexCursor::operator=(IndexCursor&&) noexcept = default;

bool IndexCursor::valid() const {
  return it_->Valid() && (prefix_.empty() || it_->key().starts_with(prefix_));
}
void IndexCursor::next() { it_->Next(); }
void IndexCursor::seek(std::string_view key) { it_->Seek(slice(key)); }
void IndexCursor::seek_for_prev(std::string_view key) { it_->SeekForPrev(slice(key)); }
std::string_view IndexCursor::key() const { return it_->key().ToStringView(); }
std::string_view IndexCursor::value() const { return it_->value().ToStringView(); }
void IndexCursor::check(const std::string& what) const { store::check(it_->status(), what); }

// ---- Index

std::unique_ptr<Index> Index::create(const fs::path& path, const IndexFileSystem& fs) {
  std::unique_ptr<Index> index(new Index());
  index->env_ = env_for(fs);  // outlives db_
  rocksdb::Options o = db_options(index->env_.get());
  o.create_if_missing = true;
  o.error_if_exists = true;
  rocksdb::DB* raw = nullptr;
  check(rocksdb::DB::Open(o, path.string(), &raw), "create index in " + path.parent_path().string());
  index->db_.reset(raw);
  return index;
}

std::unique_ptr<Index> Index::open(const fs::path& path, const std::string& what,
                                   const IndexFileSystem& fs) {
  std::unique_ptr<Index> index(new Index());
  index->env_ = env_for(fs);
  rocksdb::DB* raw = nullptr;
  check_open(rocksdb::DB::Open(db_options(index->env_.get()), path.string(), &raw), "open index of " + what);
  index->db_.reset(raw);
  return index;
}

std::unique_ptr<Index> Index::open_read_only(const fs::path& path, const std::string& what,
                                             const IndexFileSystem& fs) {
  std::unique_ptr<Index> index(new Index());
  index->env_ = env_for(fs);
  index->db_.reset(open_db_read_only(path, what, index->env_.get()));
  return index;
}

Index::~Index() {
  if (db_) db_->Close();
}

void Index::close(const std::string& what) {
  check(db_->Close(), what);
  db_.reset();
}

bool Index::get(std::string_view key, std::string& value, const std::string& what) {
  return get_value(*db_, key, value, [&] { return what; });
}

std::optional<uint64_t> Index::counter_value(std::string_view name) {
  std::string v;
  if (!get_value(*db_, counter_key(name), v, [&] { return "read counter " + std::string(name); })) return std::nullopt;
  return decode_u64(v);
}

std::optional<uint64_t> Index::image_id(std::string_view pool, std::string_view name) {
  std::string v;
  if (!get_value(*db_, image_name_key(pool, name), v,
                 [&] { return "look up image " + std::string(pool) + "/" + std::string(name); }))
    return std::nullopt;
  return decode_u64(v);
}

std::optional<ImageRecord> Index::image_record(uint64_t image) {
  std::string v;
  if (!get_value(*db_, image_key(image), v, [&] { return "read image " + std::to_string(image); })) return std::nullopt;
  return decode_image(v);
}

std::optional<RevisionRecord> Index::revision_record(uint64_t revision) {
  std::string v;
  if (!get_value(*db_, revision_key(revision), v, [&] { return "read revision " + std::to_string(revision); }))
    return std::nullopt;
  return decode_revision(v);
}

std::optional<ChunkRecord> Index::chunk_record(const Hash& hash) {
  std::string v;
  if (!get_value(*db_, chunk_key(hash), v, [&] { return "read chunk " + to_hex(hash); })) return std::nullopt;
  return decode_chunk_record(v);
}

std::optional<PackRecord> Index::pack_record(uint32_t pack) {
  std::string v;
  if (!get_value(*db_, pack_key(pack), v, [&] { return "read pack record " + std::to_string(pack); }))
    return std::nullopt;
  return decode_pack(v);
}

IndexCursor Index::cursor(std::string_view prefix, Caching caching) {
  IndexCursor c(prefix, nullptr);
  rocksdb::ReadOptions ro;
  ro.fill_cache = caching == Caching::kFill;
  c.it_.reset(db_->NewIterator(ro));
  return c;
}

IndexCursor Index::scan(std::string_view prefix, Caching caching) {
  IndexCursor c = cursor(prefix, caching);
  c.seek(prefix);
  return c;
}

IndexCursor Index::range(std::string_view lower, std::string_view upper, Caching caching) {
  auto bound = std::make_unique<IndexCursor::Bound>();
  bound->upper = std::string(upper);
  bound->slice = rocksdb::Slice(bound->upper);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &bound->slice;
  ro.fill_cache = caching == Caching::kFill;
  IndexCursor c({}, std::move(bound));
  c.it_.reset(db_->NewIterator(ro));
  c.it_->Seek(slice(lower));
  return c;
}

void Index::write(IndexBatch& batch, Sync sync, const std::string& what) {
  rocksdb::WriteOptions wo;
  wo.sync = sync == Sync::kYes;
  check(db_->Write(wo, batch.batch_.get()), what);
}

void Index::put(std::string_view key, std::string_view value, Sync sync, const std::string& what) {
  rocksdb::WriteOptions wo;
  wo.sync = sync == Sync::kYes;
  check(db_->Put(wo, slice(key), slice(value)), what);
}

void Index::remove(std::string_view key, Sync sync, const std::string& what) {
  rocksdb::WriteOptions wo;
  wo.sync = sync == Sync::kYes;
  check(db_->Delete(wo, slice(key)), what);
}

}  // namespace rbdvault::store
