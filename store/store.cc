#include "store/store.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "store/index.h"
#include "store/object_store.h"
#include "store/open_object_store.h"
#include "store/lock.h"
#include "store/manifest.h"
#include "store/pack.h"
#include "store/rados_cache.h"
#include "store/patch_codec.h"
#include "store/revision_writer.h"
#include "store/store_internal.h"

namespace fs = std::filesystem;

namespace rbdvault::store {
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
  const std::string marker_text = read_marker_text(dir);
  const StoreMarker marker = parse_store_marker(marker_text, dir.string() + ": " + kMarkerFileName);
  // Format 2 is format 3 without patch chunks: readable as it is; a writer (which may store
  // patches) first moves it to format 3 below.
  if (marker.version < kFormatVersion - 1 && !allow_format_1) throw format_1_error(dir);
  std::unique_ptr<Store> s(new Store());
  s->dir_ = dir;
  s->mode_ = mode;
  s->writer_options_ = writer_options;
  s->crash_points_.load_environment();
  s->store_id_ = marker.store_id;
  s->block_size_ = marker.block_size;

  bool in_pool = false;  // a RADOS store's index directory (looked at by a writer only)
  if (mode == OpenMode::kWriter) {
    s->lock_ = std::make_unique<WriterLock>(dir / "lock", holder.empty() ? "rbdvault" : holder);
    in_pool = read_backend_file(dir).has_value();
    // Before anything can store a patch chunk: an older rbdvault then refuses the store as too new
    // instead of reporting its patches as damage (docs/format.md §14). A store in a RADOS pool is
    // moved once this writer holds the pool's lease (below): its pool's marker is the authority.
    if (marker.version == kFormatVersion - 1 && !in_pool)
      write_marker_durably(dir, marker_with_current_version(marker_text));
  }
  else
    s->reader_lock_ = std::make_unique<ReaderLock>(dir / "readers.lock", false);
  try {
    s->index_ = mode == OpenMode::kWriter ? Index::open(dir / "index", dir.string(), io.index_fs)
                                          : Index::open_read_only(dir / "index", dir.string(), io.index_fs);
  } catch (const StoreError& e) {
    // A lost or damaged index is not the end: the data area describes every revision.
    // (Other kinds say what else to do: free space, fix permissions, retry.)
    if (e.kind() != StoreError::Kind::kCorrupt) throw;
    const std::string what = e.what();
    throw StoreError(StoreError::Kind::kCorrupt, what +
                                                     "; if the index is lost or damaged, rebuild it from the "
                                                     "data area with `rbdvault rebuild-index --store " +
                                                     store_option_text(dir) + "`");
  }
  s->objects_ = io.objects ? io.objects : open_object_store(dir);
  // Across hosts, DIR/readers.lock is the pool's reader lease: gc on another host removes nothing
  // while this store is open for reading (ls included: the rule is simpler than a list of
  // commands that read no pack, and a refusal costs them nothing but a retry).
  if (mode == OpenMode::kReadOnly) s->pool_readers_ = s->objects_->lease_readers(holder, false, dir);
  if (mode == OpenMode::kWriter) {
    s->objects_->begin_writing(holder.empty() ? "rbdvault" : holder, dir);
    if (marker.version == kFormatVersion - 1 && in_pool) {
      // The pool's marker first (the commit point: other hosts follow it), then this host's copy. A
      // crash between leaves the copy at 2, which the next refresh brings level with the pool.
      const std::string moved = marker_with_current_version(marker_text);
      s->patches_allowed_ = s->objects_->replace_marker(marker_text, moved);
      if (s->patches_allowed_) {
        s->crash_points_.reached("store.pool_marker_moved");
        write_marker_durably(dir, moved);
        spdlog::info("{}: moved the store to format {} (patch chunks)", s->objects_->display_name(), kFormatVersion);
      }
    }
    s->writer_options_.pack_target_bytes =
        std::min(s->writer_options_.pack_target_bytes, s->objects_->pack_target_cap());
  }
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

std::string Store::name() const {
  std::string where = objects_->display_name();
  return where.empty() ? dir_.string() : where;
}

std::string Store::read_chunk(const Hash& hash) { return read_chunk_and_root(hash).content; }

// The one path every reader takes (restore, mount, serve, verify, copy, repair, the backup's
// parent blocks): a patch is resolved here, its base read and verified, and the patched content
// checked against the chunk's own hash, so a wrong patch or base is an error, never wrong bytes.
ChunkContent Store::read_chunk_and_root(const Hash& hash) {
  auto rec = chunk(hash);
  if (!rec)
    throw StoreError(StoreError::Kind::kCorrupt, "chunk " + to_hex(hash) + " is referenced but not in the index");
  // Every chunk is one whole block (a short last block is stored padded): readers place blocks by
  // their number, and one of another length would move or overrun its neighbours.
  if (rec->raw_len != block_size_)
    throw StoreError(StoreError::Kind::kCorrupt, "chunk " + to_hex(hash) + " holds " + std::to_string(rec->raw_len) +
                                                     " bytes, not a block of " + std::to_string(block_size_));
  ChunkContent out;
  out.root = hash;
  if (!is_patch(rec->flags)) {
    out.content = packs_->read(hash, *rec);
    return out;
  }
  const Patch patch = packs_->read_patch(hash, *rec);
  const std::string what = "chunk " + to_hex(hash) + " (a patch of " + to_hex(patch.base) + ")";
  auto base = chunk(patch.base);
  if (!base) throw StoreError(StoreError::Kind::kCorrupt, what + ": its base is not in the index");
  if (is_patch(base->flags)) throw StoreError(StoreError::Kind::kCorrupt, what + ": its base is itself a patch");
  if (base->raw_len != rec->raw_len)
    throw StoreError(StoreError::Kind::kCorrupt, what + ": its base has another length");
  // The base is not hashed on its own: the patched result is, and it covers every byte of the base
  // that reaches the result (a base damaged only in pages the patch replaces still gives the right
  // bytes; scrub reports it). One 64 KiB hash per patch read instead of two. Only on a mismatch is
  // the base checked, to say which of the two is damaged.
  try {
    out.root_content = packs_->read_unhashed(patch.base, *base);
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kCorrupt) throw;
    throw StoreError(StoreError::Kind::kCorrupt, what + ": its base is damaged: " + e.what());
  }
  out.content = out.root_content;
  apply_patch(patch, out.content);
  if (sha256(out.content) != hash) {
    if (sha256(out.root_content) != patch.base)
      throw StoreError(StoreError::Kind::kCorrupt, what + ": its base is damaged: content does not match its SHA-256");
    throw StoreError(StoreError::Kind::kCorrupt, what + ": patched content does not match its SHA-256");
  }
  out.root = patch.base;
  out.root_unverified = patch.bitmap;
  return out;
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
