#include "store/store.h"

#include <fcntl.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <random>
#include <sstream>

#include "store/object_store.h"
#include "store/open_object_store.h"
#include "store/posix_file.h"
#include "store/lock.h"
#include "store/manifest.h"
#include "store/pack.h"
#include "store/ref_updates.h"
#include "store/revision_writer.h"
#include "store/store_internal.h"

namespace fs = std::filesystem;

namespace rbdvault::store {
namespace {

constexpr const char* kMarkerFile = "rbdvault.store";
constexpr const char* kMarkerMagic = "rbdvault-store";

void check(const rocksdb::Status& s, const std::string& what) {
  if (!s.ok()) throw StoreError(StoreError::Kind::kIO, what + ": " + s.ToString());
}

rocksdb::Options db_options() {
  rocksdb::Options o;
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
rocksdb::DB* open_index_read_only(const fs::path& index, const std::string& what, rocksdb::Env* env) {
  rocksdb::Options o = db_options();
  if (env) o.env = env;
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
    if (!vanished || attempt == kTries) check(st, "open index of " + what);
    spdlog::debug("open index of {}: {} (the writer replaced a file); trying again", what, st.ToString());
  }
}

void write_file_durably(const fs::path& path, const std::string& content) {
  fs::path tmp = path;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw_errno("create " + tmp.string());
  if (::write(fd, content.data(), content.size()) != static_cast<ssize_t>(content.size()) || ::fsync(fd) != 0) {
    int saved = errno;
    ::close(fd);
    errno = saved;
    throw_errno("write " + tmp.string());
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) throw_errno("rename " + tmp.string());
  fsync_dir(path.parent_path());
}

// "does not exist" or "non-empty directory" would send the operator looking in the wrong place
// when --store names a file (or a device, a socket...).
void require_directory_or_absent(const fs::path& dir) {
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (ec || !fs::exists(st) || fs::is_directory(st)) return;
  const char* what = fs::is_regular_file(st) ? "a file" : "a special file";
  throw StoreError(StoreError::Kind::kInvalid, dir.string() + " is " + what + ", not a store directory");
}

std::string random_id() {
  std::random_device rd;
  std::string s;
  static const char* digits = "0123456789abcdef";
  for (int i = 0; i < 16; ++i) s.push_back(digits[rd() & 15]);
  return s;
}

// The marker's text, read no further than kMaxMarkerBytes + 1 so a huge file is refused (by
// parse_store_marker) without being loaded.
std::string read_marker(const fs::path& dir) {
  std::ifstream in(dir / kMarkerFile, std::ios::binary);
  if (!in)
    throw StoreError(StoreError::Kind::kInvalid, dir.string() + " is not an rbdvault store (no " + kMarkerFile +
                                                     "; create one with `rbdvault init`)");
  std::string text(kMaxMarkerBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) throw StoreError(StoreError::Kind::kIO, "read " + (dir / kMarkerFile).string());
  text.resize(static_cast<size_t>(in.gcount()));
  return text;
}

}  // namespace

rocksdb::Options index_db_options() { return db_options(); }
StoreError format_1_error(const fs::path& dir) {
  return StoreError(StoreError::Kind::kInvalid, "store " + dir.string() +
                                                    " is format 1 (no revision manifests); upgrade it in place with "
                                                    "`rbdvault upgrade --store " +
                                                    dir.string() + "`");
}
void write_marker_durably(const fs::path& dir, const std::string& text) { write_file_durably(dir / kMarkerFile, text); }
std::string read_marker_text(const fs::path& dir) { return read_marker(dir); }

void Store::init(const fs::path& dir, const StoreOptions& options) {
  const uint32_t bs = options.block_size;
  if (bs < (64u << 10) || bs > (4u << 20) || (bs & (bs - 1)) != 0)
    throw StoreError(StoreError::Kind::kInvalid,
                     "block size " + std::to_string(bs) + " is not a power of two from 64 KiB to 4 MiB");
  std::error_code ec;
  require_directory_or_absent(dir);
  if (fs::exists(dir / kMarkerFile))
    throw StoreError(StoreError::Kind::kExists, "a store already exists in " + dir.string());
  if (fs::exists(dir) && !fs::is_empty(dir, ec))
    throw StoreError(StoreError::Kind::kExists, "refusing to create a store in non-empty directory " + dir.string());
  fs::create_directories(dir / "data", ec);
  if (ec) throw StoreError(StoreError::Kind::kIO, "create " + (dir / "data").string() + ": " + ec.message());

  rocksdb::Options o = db_options();
  o.create_if_missing = true;
  o.error_if_exists = true;
  rocksdb::DB* raw = nullptr;
  check(rocksdb::DB::Open(o, (dir / "index").string(), &raw), "create index in " + dir.string());
  std::unique_ptr<rocksdb::DB> db(raw);
  rocksdb::WriteBatch batch;
  batch.Put(counter_key(kCounterNextRevision), encode_u64(1));
  batch.Put(counter_key(kCounterNextImage), encode_u64(1));
  batch.Put(counter_key(kCounterNextPack), encode_u64(1));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  check(db->Write(wo, &batch), "initialise index");
  check(db->Close(), "close index");
  db.reset();

  std::ostringstream marker;
  marker << kMarkerMagic << " " << kFormatVersion << "\n"
         << "store_id " << random_id() << "\n"
         << "block_size " << bs << "\n";
  // The marker is written last: a directory without it is not a store, so a crash during init
  // leaves something `init` can be rerun over after removing it.
  write_file_durably(dir / kMarkerFile, marker.str());
  spdlog::info("initialised store {} (block size {} bytes)", dir.string(), bs);
}

bool Store::is_store(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / kMarkerFile, ec);
}

std::unique_ptr<Store> Store::open(const fs::path& dir, OpenMode mode, const std::string& holder,
                                   const WriterOptions& writer_options, const StoreIo& io) {
  return open_impl(dir, mode, holder, writer_options, io, false);
}

std::unique_ptr<Store> Store::open_impl(const fs::path& dir, OpenMode mode, const std::string& holder,
                                        const WriterOptions& writer_options, const StoreIo& io,
                                        bool allow_format_1) {
  require_directory_or_absent(dir);
  if (!fs::is_directory(dir))
    throw StoreError(StoreError::Kind::kNotFound, "store directory " + dir.string() + " does not exist");
  const std::string marker_text = read_marker(dir);
  const StoreMarker marker = parse_store_marker(marker_text, dir.string() + ": " + kMarkerFile);
  if (marker.version != kFormatVersion && !allow_format_1) throw format_1_error(dir);
  std::unique_ptr<Store> s(new Store());
  s->dir_ = dir;
  s->mode_ = mode;
  s->writer_options_ = writer_options;
  s->crash_points_.load_environment();
  s->store_id_ = marker.store_id;
  s->block_size_ = marker.block_size;

  rocksdb::Options o = db_options();
  if (io.index_fs) {
    s->index_env_ = rocksdb::NewCompositeEnv(io.index_fs);
    o.env = s->index_env_.get();
  }
  rocksdb::DB* raw = nullptr;
  if (mode == OpenMode::kWriter)
    s->lock_ = std::make_unique<WriterLock>(dir / "lock", holder.empty() ? "rbdvault" : holder);
  else
    s->reader_lock_ = std::make_unique<ReaderLock>(dir / "readers.lock", false);
  try {
    if (mode == OpenMode::kWriter)
      check(rocksdb::DB::Open(o, (dir / "index").string(), &raw), "open index of " + dir.string());
    else
      raw = open_index_read_only(dir / "index", dir.string(), s->index_env_.get());
  } catch (const StoreError& e) {
    // A lost or damaged index is not the end: the data area describes every revision.
    const std::string what = e.what();
    if (e.kind() != StoreError::Kind::kIO || what.find("Permission denied") != std::string::npos ||
        what.find("No space") != std::string::npos || what.find("kept changing") != std::string::npos)
      throw;
    throw StoreError(StoreError::Kind::kCorrupt, what +
                                                     "; if the index is lost or damaged, rebuild it from the "
                                                     "data area with `rbdvault rebuild-index --store " +
                                                     dir.string() + "`");
  }
  s->db_.reset(raw);
  s->objects_ = io.objects ? io.objects : open_object_store(dir);
  if (mode == OpenMode::kWriter) {
    s->objects_->begin_writing(holder.empty() ? "rbdvault" : holder, dir);
    s->writer_options_.pack_target_bytes =
        std::min(s->writer_options_.pack_target_bytes, s->objects_->pack_target_cap());
  }
  s->packs_ = std::make_unique<PackReader>(*s->objects_);
  if (mode == OpenMode::kWriter) s->recover();
  return s;
}

Store::~Store() {
  if (db_) db_->Close();
}

uint64_t Store::counter(std::string_view name, uint64_t initial) {
  std::string v;
  auto st = db_->Get(rocksdb::ReadOptions(), counter_key(name), &v);
  if (st.IsNotFound()) return initial;
  check(st, "read counter");
  return decode_u64(v);
}

// Rolls back what a killed writer left: block map entries of an uncommitted revision (with the
// chunk references they held), pack files the index does not know. Committed data is untouched.
void Store::recover() {
  // Every W mark names a revision a killed (or failed) writer left behind; this process has the
  // writer lock and no writer of its own yet, so none of them is still running.
  // Damage is reported and worked around, never thrown: recovery runs at every writer's open, so
  // an error here would lock out every later backup, and repair too.
  std::vector<PendingRecord> pending;
  std::vector<uint64_t> damaged_marks;  // revisions whose W record cannot be decoded
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    const std::string prefix(1, kKeyPending);
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      try {
        pending.push_back(decode_pending(it->value().ToStringView()));
      } catch (const StoreError& e) {
        if (e.kind() != StoreError::Kind::kCorrupt) throw;
        const std::string_view key = it->key().ToStringView();
        if (key.size() == 9) {
          uint64_t rev = 0;  // W + be64 revision
          for (size_t i = 1; i < 9; ++i) rev = (rev << 8) | static_cast<uint8_t>(key[i]);
          damaged_marks.push_back(rev);
        } else {
          spdlog::warn("store {}: an unfinished-revision mark is damaged and names no revision ({}); left as it is",
                       dir_.string(), e.what());
        }
      }
    }
    check(it->status(), "scan pending revisions");
  }
  objects_->remove_incomplete(std::string(kManifestPrefix));
  for (auto& p : pending)
    if (!roll_forward(p)) roll_back(p, RollBack::kRecovery);
  for (uint64_t rev : damaged_marks) roll_back_damaged_mark(rev);
  // Pack objects without a pack record were never committed; nothing points into them. Damage is
  // worked around here too: a pack that cannot be removed now is left for the next writer.
  objects_->remove_incomplete("data/");
  for (const std::string& name : objects_->list("data/")) {
    const std::string file = name.substr(5);
    const bool ours = file.size() == 13 && file.ends_with(".pack") &&
                      file.find_first_not_of("0123456789abcdef") == 8;  // exactly %08x.pack
    if (!ours) continue;
    const uint32_t id = static_cast<uint32_t>(std::stoul(file.substr(0, 8), nullptr, 16));
    std::string v;
    const bool stale = db_->Get(rocksdb::ReadOptions(), pack_key(id), &v).IsNotFound();
    if (stale) {
      spdlog::warn("store {}: removing uncommitted pack file {}", dir_.string(), file);
      try {
        objects_->remove(name);
      } catch (const StoreError& e) {
        spdlog::warn("store {}: {}; left for the next writer", dir_.string(), e.what());
      }
    }
  }
  // A forget that was interrupted is rolled forward: its revision is already invisible.
  std::vector<RevisionRecord> forgetting;
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    const std::string prefix(1, kKeyRevision);
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      try {
        RevisionRecord r = decode_revision(it->value().ToStringView());
        if (r.flags & kRevisionForgetting) forgetting.push_back(std::move(r));
      } catch (const StoreError& e) {
        if (e.kind() != StoreError::Kind::kCorrupt) throw;
        spdlog::warn("store {}: a revision record is damaged ({}); scrub reports it", dir_.string(), e.what());
      }
    }
    check(it->status(), "scan revisions");
  }
  for (auto& r : forgetting) {
    spdlog::warn("store {}: completing interrupted forget of revision {}", dir_.string(), r.id);
    finish_forget(std::move(r));
  }
  tidy_manifests();
}

// The W record of `rev` is unreadable, so its image is unknown: the revision's uncommitted entries
// are looked for in every image (a full scan of the block maps, paid only after such damage). A
// committed revision keeps its entries; only the stray mark goes.
void Store::roll_back_damaged_mark(uint64_t rev) {
  rocksdb::WriteOptions wo;
  wo.sync = true;
  // An R record, even a damaged one (scrub reports it), says the revision was committed.
  bool committed = true;
  try {
    committed = revision(rev).has_value();
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kCorrupt) throw;
  }
  if (committed) {
    spdlog::warn("store {}: removing a damaged unfinished-revision mark of committed revision {}", dir_.string(), rev);
    check(db_->Delete(wo, pending_key(rev)), "remove mark of revision " + std::to_string(rev));
    return;
  }
  std::vector<ImageRecord> all;
  try {
    all = images();
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kCorrupt) throw;
    spdlog::warn("store {}: the mark of unfinished revision {} is damaged and the images cannot be listed ({}); "
                 "left for scrub",
                 dir_.string(), rev, e.what());
    return;
  }
  spdlog::warn("store {}: the mark of unfinished revision {} is damaged; rolling back its entries in every image",
               dir_.string(), rev);
  // The mark stays until every image is done, so a rollback killed halfway is run again in full.
  for (const ImageRecord& image : all) roll_back(PendingRecord{rev, image.key}, RollBack::kRecovery, /*keep_mark=*/true);
  check(db_->Delete(wo, pending_key(rev)), "remove mark of revision " + std::to_string(rev));
}

// In batches of at most kRollBackBatch entries, so that rolling back a huge killed backup needs
// bounded memory. Each batch deletes entries together with the references they held, and the W mark
// goes only with the last one: a rollback killed halfway is simply run again by the next writer
// (docs/format.md §7.3), and finds only the entries not yet removed.
void Store::roll_back(const PendingRecord& p, RollBack why, bool keep_mark) {
  constexpr uint64_t kRollBackBatch = 16384;
  rocksdb::WriteBatch batch;
  ChunkRefUpdates chunks(*db_);
  uint64_t removed = 0;
  auto write = [&](bool last) {
    chunks.write_to(batch);
    if (last && !keep_mark) {
      batch.Delete(pending_key(p.revision));
      batch.Delete(std::string(1, kKeyPending));  // the mark of format 1.0 stores (a single W key)
    }
    rocksdb::WriteOptions wo;
    wo.sync = last;  // the synced last batch makes the earlier ones durable too (one log, in order)
    check(db_->Write(wo, &batch), "roll back unfinished revision " + std::to_string(p.revision));
    batch.Clear();
    ++chunk_generation_;
    if (!last) crash_points_.reached("revision.rollback_batch");
  };
  rocksdb::ReadOptions ro;
  ro.fill_cache = false;
  // The scan reads a snapshot taken when it starts; our own batches do not disturb it.
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
  const std::string prefix = block_prefix(p.image);
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    auto k = parse_block_key(it->key().ToStringView());
    if (!k || k->rev != p.revision) continue;
    batch.Delete(it->key());
    ++removed;
    if (it->value().size() == 32) chunks.unref(it->value().ToStringView());
    if (static_cast<uint64_t>(batch.Count()) >= kRollBackBatch) write(false);
  }
  check(it->status(), "scan block map");
  write(true);
  crash_points_.reached("revision.rolled_back");
  spdlog::log(why == RollBack::kRecovery ? spdlog::level::warn : spdlog::level::debug,
              "store {}: rolled back unfinished revision {} ({} block map entries)", dir_.string(), p.revision,
              removed);
}

uint64_t Store::advance_counter(std::string_view name, uint64_t initial, bool sync) {
  const uint64_t value = counter(name, initial);
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  check(db_->Put(wo, counter_key(name), encode_u64(value + 1)), "advance counter " + std::string(name));
  return value;
}

uint64_t Store::reserve_revision_id() {
  if (mode_ != OpenMode::kWriter) throw StoreError(StoreError::Kind::kInvalid, "store opened read-only");
  std::lock_guard<std::mutex> guard(write_mu_);
  return advance_counter(kCounterNextRevision, 1, /*sync=*/true);
}

size_t Store::active_writers() {
  std::lock_guard<std::mutex> guard(write_mu_);
  return active_revisions_.size();
}

void Store::end_write(uint64_t revision, uint64_t image) {
  // Called by RevisionWriter with write_mu_ held.
  active_revisions_.erase(revision);
  active_images_.erase(image);
}

void Store::require_no_writers(const char* operation) {
  std::lock_guard<std::mutex> guard(write_mu_);
  if (!active_revisions_.empty())
    throw StoreError(StoreError::Kind::kLocked,
                     std::string(operation) + " needs the store to itself, but revisions are being written");
}

Store::Exclusive Store::exclusive(const char* operation) {
  if (mode_ != OpenMode::kWriter) throw StoreError(StoreError::Kind::kInvalid, "store opened read-only");
  std::lock_guard<std::mutex> guard(write_mu_);
  if (!active_revisions_.empty())
    throw StoreError(StoreError::Kind::kInvalid,
                     std::string(operation) + " needs the store to itself, but revisions are being written");
  if (exclusive_op_)
    throw StoreError(StoreError::Kind::kLocked, std::string(operation) + " needs the store to itself, but " +
                                                    exclusive_op_ + " is running; try again later");
  exclusive_op_ = operation;
  return Exclusive(this);
}

Store::Exclusive::~Exclusive() {
  if (!store_) return;
  std::lock_guard<std::mutex> guard(store_->write_mu_);
  store_->exclusive_op_ = nullptr;
}

std::vector<ImageRecord> Store::images() {
  std::vector<ImageRecord> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  const std::string prefix(1, kKeyImage);
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next())
    out.push_back(decode_image(it->value().ToStringView()));
  check(it->status(), "list images");
  return out;
}

std::optional<ImageRecord> Store::find_image(const std::string& pool, const std::string& name) {
  std::string v;
  auto st = db_->Get(rocksdb::ReadOptions(), image_name_key(pool, name), &v);
  if (st.IsNotFound()) return std::nullopt;
  check(st, "look up image " + pool + "/" + name);
  uint64_t key = decode_u64(v);
  st = db_->Get(rocksdb::ReadOptions(), image_key(key), &v);
  if (st.IsNotFound())
    throw StoreError(StoreError::Kind::kCorrupt, "image record of " + pool + "/" + name + " is missing");
  check(st, "read image " + pool + "/" + name);
  return decode_image(v);
}

std::vector<RevisionRecord> Store::revisions(std::optional<uint64_t> image) {
  std::vector<RevisionRecord> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  if (!image) {
    const std::string prefix(1, kKeyRevision);
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      RevisionRecord r = decode_revision(it->value().ToStringView());
      if (!(r.flags & kRevisionForgetting)) out.push_back(std::move(r));
    }
  } else {
    const std::string prefix = image_rev_prefix(*image);
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      auto rev = parse_image_rev_key(it->key().ToStringView());
      if (!rev) throw StoreError(StoreError::Kind::kCorrupt, "malformed image revision key");
      auto r = revision(*rev);
      if (!r)
        throw StoreError(StoreError::Kind::kCorrupt, "revision " + std::to_string(*rev) + " is listed but missing");
      if (!(r->flags & kRevisionForgetting)) out.push_back(std::move(*r));
    }
  }
  check(it->status(), "list revisions");
  return out;
}

std::optional<RevisionRecord> Store::revision(uint64_t id) {
  std::string v;
  auto st = db_->Get(rocksdb::ReadOptions(), revision_key(id), &v);
  if (st.IsNotFound()) return std::nullopt;
  check(st, "read revision " + std::to_string(id));
  return decode_revision(v);
}

std::optional<RevisionRecord> Store::latest_revision(uint64_t image) {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  const std::string prefix = image_rev_prefix(image);
  it->SeekForPrev(image_rev_key(image, UINT64_MAX));
  if (!it->Valid() || !it->key().starts_with(prefix)) {
    check(it->status(), "find latest revision");
    return std::nullopt;
  }
  auto rev = parse_image_rev_key(it->key().ToStringView());
  if (!rev) throw StoreError(StoreError::Kind::kCorrupt, "malformed image revision key");
  return revision(*rev);
}

std::optional<ChunkRecord> Store::chunk(const Hash& hash) {
  std::string v;
  auto st = db_->Get(rocksdb::ReadOptions(), chunk_key(hash), &v);
  if (st.IsNotFound()) return std::nullopt;
  check(st, "read chunk " + to_hex(hash));
  return decode_chunk_record(v);
}

void Store::newest_entries(uint64_t image, uint64_t first, uint64_t end, uint64_t max_rev,
                           const std::function<void(uint64_t, const std::optional<Hash>&)>& fn) {
  if (first >= end) return;
  const std::string lower = block_key(image, first, 0);
  const std::string upper = block_key(image, end, 0);
  rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper_slice;
  ro.fill_cache = false;  // a whole-map scan should not evict the chunk records lookups need
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
  bool have = false;
  uint64_t cur_block = 0;
  std::optional<Hash> cur;
  auto emit = [&] {
    if (have) fn(cur_block, cur);
    have = false;
  };
  for (it->Seek(lower); it->Valid(); it->Next()) {
    auto k = parse_block_key(it->key().ToStringView());
    if (!k || k->image != image) throw StoreError(StoreError::Kind::kCorrupt, "malformed block map key");
    if (have && k->block != cur_block) emit();
    if (k->rev > max_rev) continue;
    auto v = it->value();
    if (v.size() == 0) {
      cur.reset();
    } else if (v.size() == 32) {
      Hash h;
      std::memcpy(h.data(), v.data(), 32);
      cur = h;
    } else {
      throw StoreError(StoreError::Kind::kCorrupt, "malformed block map entry for block " + std::to_string(k->block));
    }
    cur_block = k->block;
    have = true;
  }
  check(it->status(), "scan block map");
  emit();
}

void Store::for_each_data_block(const RevisionRecord& rev, const std::function<void(uint64_t, const Hash&)>& fn) {
  newest_entries(rev.image, 0, blocks_for(rev.size), rev.id, [&](uint64_t block, const std::optional<Hash>& h) {
    if (h) fn(block, *h);
  });
}

Hash Store::compute_digest(const RevisionRecord& rev) {
  Hash acc{};
  for_each_data_block(rev,
                      [&](uint64_t block, const Hash& h) { RevisionDigest::add(acc, RevisionDigest::term(block, h)); });
  RevisionDigest::add(acc, RevisionDigest::size_term(rev.size));
  return acc;
}

std::string Store::read_chunk(const Hash& hash) {
  auto rec = chunk(hash);
  if (!rec)
    throw StoreError(StoreError::Kind::kCorrupt, "chunk " + to_hex(hash) + " is referenced but not in the index");
  return packs_->read(hash, *rec);
}

std::unique_ptr<RevisionWriter> Store::begin_revision(const RevisionStart& start) {
  if (mode_ != OpenMode::kWriter) throw StoreError(StoreError::Kind::kInvalid, "store opened read-only");
  const uint64_t rev = start.revision ? start.revision : reserve_revision_id();
  std::lock_guard<std::mutex> guard(write_mu_);
  if (exclusive_op_)
    throw StoreError(StoreError::Kind::kLocked, "cannot back up " + start.pool + "/" + start.name + " while " +
                                                    exclusive_op_ + " runs on the store; try again later");
  rocksdb::WriteBatch batch;
  auto image = find_image(start.pool, start.name);
  uint64_t image_id;
  if (image) {
    image_id = image->key;
    if (active_images_.count(image_id))
      throw StoreError(StoreError::Kind::kLocked,
                       "a revision of " + start.pool + "/" + start.name + " is already being written");
  } else {
    image_id = counter(kCounterNextImage, 1);
    batch.Put(counter_key(kCounterNextImage), encode_u64(image_id + 1));
    batch.Put(image_name_key(start.pool, start.name), encode_u64(image_id));
    batch.Put(image_key(image_id), encode(ImageRecord{image_id, start.pool, start.name}));
  }
  if (rev >= counter(kCounterNextRevision, 1) || active_revisions_.count(rev))
    throw std::logic_error("revision id " + std::to_string(rev) + " was not reserved");
  // Mark the revision as in progress before any of its entries can reach the index; recovery uses
  // the mark to roll back after a crash.
  batch.Put(pending_key(rev), encode(PendingRecord{rev, image_id}));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  check(db_->Write(wo, &batch), "begin revision");
  crash_points_.reached("revision.begun");
  std::optional<RevisionRecord> parent = image ? latest_revision(image_id) : std::nullopt;
  active_revisions_.insert(rev);
  active_images_.insert(image_id);
  try {
    return std::unique_ptr<RevisionWriter>(
        new RevisionWriter(*this, rev, image_id, start.size, start.from_empty, std::move(parent)));
  } catch (...) {
    end_write(rev, image_id);
    roll_back(PendingRecord{rev, image_id}, RollBack::kOwnFailure);
    throw;
  }
}

}  // namespace rbdvault::store
