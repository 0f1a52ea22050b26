#include "store/store.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <random>
#include <sstream>

#include "store/index.h"
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

  {
    std::unique_ptr<Index> index = Index::create(dir / "index");
    IndexBatch batch;
    batch.put(counter_key(kCounterNextRevision), encode_u64(1));
    batch.put(counter_key(kCounterNextImage), encode_u64(1));
    batch.put(counter_key(kCounterNextPack), encode_u64(1));
    index->write(batch, Sync::kYes, "initialise index");
    index->close("close index");
  }

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

  if (mode == OpenMode::kWriter)
    s->lock_ = std::make_unique<WriterLock>(dir / "lock", holder.empty() ? "rbdvault" : holder);
  else
    s->reader_lock_ = std::make_unique<ReaderLock>(dir / "readers.lock", false);
  try {
    s->index_ = mode == OpenMode::kWriter ? Index::open(dir / "index", dir.string(), io.index_fs)
                                          : Index::open_read_only(dir / "index", dir.string(), io.index_fs);
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
  s->objects_ = io.objects ? io.objects : open_object_store(dir);
  s->packs_ = std::make_unique<PackReader>(*s->objects_);
  if (mode == OpenMode::kWriter) s->recover();
  return s;
}

Store::~Store() = default;

std::unique_ptr<ReadOnlyStore> open_read_only(const fs::path& dir, const StoreIo& io) {
  return Store::open(dir, OpenMode::kReadOnly, "", {}, io);
}

std::unique_ptr<AppendStore> open_for_append(const fs::path& dir, const std::string& holder,
                                             const WriterOptions& options, const StoreIo& io) {
  return Store::open(dir, OpenMode::kWriter, holder, options, io);
}

std::unique_ptr<MaintenanceStore> open_for_maintenance(const fs::path& dir, const std::string& holder,
                                                       const WriterOptions& options, const StoreIo& io) {
  return Store::open(dir, OpenMode::kWriter, holder, options, io);
}

uint64_t Store::counter(std::string_view name, uint64_t initial) {
  return index_->counter_value(name).value_or(initial);
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
    const std::string prefix(1, kKeyPending);
    IndexCursor it = index_->scan(prefix);
    for (; it.valid(); it.next()) {
      try {
        pending.push_back(decode_pending(it.value()));
      } catch (const StoreError& e) {
        if (e.kind() != StoreError::Kind::kCorrupt) throw;
        const std::string_view key = it.key();
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
    it.check("scan pending revisions");
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
    const bool stale = !index_->get(pack_key(id), v, "read pack record of " + file);
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
    const std::string prefix(1, kKeyRevision);
    IndexCursor it = index_->scan(prefix);
    for (; it.valid(); it.next()) {
      try {
        RevisionRecord r = decode_revision(it.value());
        if (r.flags & kRevisionForgetting) forgetting.push_back(std::move(r));
      } catch (const StoreError& e) {
        if (e.kind() != StoreError::Kind::kCorrupt) throw;
        spdlog::warn("store {}: a revision record is damaged ({}); scrub reports it", dir_.string(), e.what());
      }
    }
    it.check("scan revisions");
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
  // An R record, even a damaged one (scrub reports it), says the revision was committed.
  bool committed = true;
  try {
    committed = revision(rev).has_value();
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kCorrupt) throw;
  }
  if (committed) {
    spdlog::warn("store {}: removing a damaged unfinished-revision mark of committed revision {}", dir_.string(), rev);
    index_->remove(pending_key(rev), Sync::kYes, "remove mark of revision " + std::to_string(rev));
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
  index_->remove(pending_key(rev), Sync::kYes, "remove mark of revision " + std::to_string(rev));
}

// In batches of at most kRollBackBatch entries, so that rolling back a huge killed backup needs
// bounded memory. Each batch deletes entries together with the references they held, and the W mark
// goes only with the last one: a rollback killed halfway is simply run again by the next writer
// (docs/format.md §7.3), and finds only the entries not yet removed.
void Store::roll_back(const PendingRecord& p, RollBack why, bool keep_mark) {
  constexpr uint64_t kRollBackBatch = 16384;
  IndexBatch batch;
  ChunkRefUpdates chunks(*index_);
  uint64_t removed = 0;
  auto write = [&](bool last) {
    chunks.write_to(batch);
    if (last && !keep_mark) {
      batch.remove(pending_key(p.revision));
      batch.remove(std::string(1, kKeyPending));  // the mark of format 1.0 stores (a single W key)
    }
    // The synced last batch makes the earlier ones durable too (one log, in order).
    index_->write(batch, last ? Sync::kYes : Sync::kNo, "roll back unfinished revision " + std::to_string(p.revision));
    batch.clear();
    ++chunk_generation_;
    if (!last) crash_points_.reached("revision.rollback_batch");
  };
  // The scan reads a snapshot taken when it starts; our own batches do not disturb it.
  const std::string prefix = block_prefix(p.image);
  IndexCursor it = index_->scan(prefix, Caching::kBypass);
  for (; it.valid(); it.next()) {
    auto k = parse_block_key(it.key());
    if (!k || k->rev != p.revision) continue;
    batch.remove(it.key());
    ++removed;
    if (it.value().size() == 32) chunks.unref(it.value());
    if (batch.count() >= kRollBackBatch) write(false);
  }
  it.check("scan block map");
  write(true);
  crash_points_.reached("revision.rolled_back");
  spdlog::log(why == RollBack::kRecovery ? spdlog::level::warn : spdlog::level::debug,
              "store {}: rolled back unfinished revision {} ({} block map entries)", dir_.string(), p.revision,
              removed);
}

uint64_t Store::advance_counter(std::string_view name, uint64_t initial, bool sync) {
  const uint64_t value = counter(name, initial);
  index_->put(counter_key(name), encode_u64(value + 1), sync ? Sync::kYes : Sync::kNo,
              "advance counter " + std::string(name));
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

void Store::release_exclusive() {
  std::lock_guard<std::mutex> guard(write_mu_);
  exclusive_op_ = nullptr;
}

std::vector<ImageRecord> Store::images() {
  std::vector<ImageRecord> out;
  const std::string prefix(1, kKeyImage);
  IndexCursor it = index_->scan(prefix);
  for (; it.valid(); it.next())
    out.push_back(decode_image(it.value()));
  it.check("list images");
  return out;
}

std::optional<ImageRecord> Store::find_image(const std::string& pool, const std::string& name) {
  const std::optional<uint64_t> key = index_->image_id(pool, name);
  if (!key) return std::nullopt;
  auto rec = index_->image_record(*key);
  if (!rec) throw StoreError(StoreError::Kind::kCorrupt, "image record of " + pool + "/" + name + " is missing");
  return rec;
}

std::vector<RevisionRecord> Store::revisions(std::optional<uint64_t> image) {
  std::vector<RevisionRecord> out;
  IndexCursor it = index_->scan(image ? image_rev_prefix(*image) : std::string(1, kKeyRevision));
  if (!image) {
    for (; it.valid(); it.next()) {
      RevisionRecord r = decode_revision(it.value());
      if (!(r.flags & kRevisionForgetting)) out.push_back(std::move(r));
    }
  } else {
    for (; it.valid(); it.next()) {
      auto rev = parse_image_rev_key(it.key());
      if (!rev) throw StoreError(StoreError::Kind::kCorrupt, "malformed image revision key");
      auto r = revision(*rev);
      if (!r)
        throw StoreError(StoreError::Kind::kCorrupt, "revision " + std::to_string(*rev) + " is listed but missing");
      if (!(r->flags & kRevisionForgetting)) out.push_back(std::move(*r));
    }
  }
  it.check("list revisions");
  return out;
}

std::optional<RevisionRecord> Store::revision(uint64_t id) {
  return index_->revision_record(id);
}

std::optional<RevisionRecord> Store::latest_revision(uint64_t image) {
  const std::string prefix = image_rev_prefix(image);
  IndexCursor it = index_->cursor(prefix);
  it.seek_for_prev(image_rev_key(image, UINT64_MAX));
  if (!it.valid()) {
    it.check("find latest revision");
    return std::nullopt;
  }
  auto rev = parse_image_rev_key(it.key());
  if (!rev) throw StoreError(StoreError::Kind::kCorrupt, "malformed image revision key");
  return revision(*rev);
}

std::optional<ChunkRecord> Store::chunk(const Hash& hash) {
  return index_->chunk_record(hash);
}

void Store::newest_entries(uint64_t image, uint64_t first, uint64_t end, uint64_t max_rev,
                           const std::function<void(uint64_t, const std::optional<Hash>&)>& fn) {
  if (first >= end) return;
  // A whole-map scan should not evict the chunk records lookups need.
  IndexCursor it = index_->range(block_key(image, first, 0), block_key(image, end, 0), Caching::kBypass);
  bool have = false;
  uint64_t cur_block = 0;
  std::optional<Hash> cur;
  auto emit = [&] {
    if (have) fn(cur_block, cur);
    have = false;
  };
  for (; it.valid(); it.next()) {
    auto k = parse_block_key(it.key());
    if (!k || k->image != image) throw StoreError(StoreError::Kind::kCorrupt, "malformed block map key");
    if (have && k->block != cur_block) emit();
    if (k->rev > max_rev) continue;
    auto v = it.value();
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
  it.check("scan block map");
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
  IndexBatch batch;
  auto image = find_image(start.pool, start.name);
  uint64_t image_id;
  if (image) {
    image_id = image->key;
    if (active_images_.count(image_id))
      throw StoreError(StoreError::Kind::kLocked,
                       "a revision of " + start.pool + "/" + start.name + " is already being written");
  } else {
    image_id = counter(kCounterNextImage, 1);
    batch.put(counter_key(kCounterNextImage), encode_u64(image_id + 1));
    batch.put(image_name_key(start.pool, start.name), encode_u64(image_id));
    batch.put(image_key(image_id), encode(ImageRecord{image_id, start.pool, start.name}));
  }
  if (rev >= counter(kCounterNextRevision, 1) || active_revisions_.count(rev))
    throw std::logic_error("revision id " + std::to_string(rev) + " was not reserved");
  // Mark the revision as in progress before any of its entries can reach the index; recovery uses
  // the mark to roll back after a crash.
  batch.put(pending_key(rev), encode(PendingRecord{rev, image_id}));
  index_->write(batch, Sync::kYes, "begin revision");
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
