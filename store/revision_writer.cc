#include "store/revision_writer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <mutex>
#include <stdexcept>

#include "store/chunk_codec.h"
#include "store/error.h"
#include "store/manifest.h"
#include "store/object_store.h"
#include "store/pack.h"
#include "store/store.h"

namespace rbdvault::store {
namespace {

bool all_zero(std::string_view d) {
  if (d.empty()) return true;
  if (d[0] != 0) return false;
  return std::memcmp(d.data(), d.data() + 1, d.size() - 1) == 0;
}

}  // namespace

size_t RevisionWriter::HashHasher::operator()(const Hash& h) const {
  size_t v;
  std::memcpy(&v, h.data(), sizeof(v));
  return v;
}

RevisionWriter::RevisionWriter(Store& store, uint64_t id, uint64_t image, uint64_t size, bool from_empty,
                               std::optional<RevisionRecord> parent)
    : store_(store),
      id_(id),
      image_(image),
      size_(size),
      parent_(std::move(parent)) {
  if (parent_) {
    parent_blocks_ = store_.blocks_for(parent_->size);
    digest_ = parent_->digest;
    RevisionDigest::subtract(digest_, RevisionDigest::size_term(parent_->size));
    // Blocks cut off by a shrink leave the revision: take them out of the checksum.
    store_.newest_entries(image_, store_.blocks_for(size_), parent_blocks_, id_ - 1,
                          [&](uint64_t block, const std::optional<Hash>& h) {
                            if (h) RevisionDigest::subtract(digest_, RevisionDigest::term(block, *h));
                          });
  }
  stale_cursor_ = from_empty ? 0 : std::min(parent_blocks_, store_.blocks_for(size_));
  lookup_.emplace(store_.index().cursor({}));
  chunk_generation_seen_ = store_.chunk_generation_;  // constructed under the write mutex
  manifest_sink_ = store_.objects().create(manifest_name(id_, 0));
  manifest_ = std::make_unique<ManifestEncoder>(*manifest_sink_);
}

RevisionWriter::~RevisionWriter() {
  std::lock_guard<std::mutex> guard(store_.write_mu_);
  if (committed_) return;
  lookup_.reset();
  pack_.reset();  // deletes the unsealed pack
  manifest_.reset();
  manifest_sink_.reset();  // an unfinished manifest leaves nothing
  if (manifest_put_) {
    // The manifest is the commit point (docs/format.md §7.2): the revision is committed, only the
    // index did not record it (its write may even have landed). Rolling back now could leave a
    // manifest naming chunks whose references are gone. The next process to open the store rolls
    // it forward from the manifest; until then the image stays blocked here.
    spdlog::error("revision {} is committed in the data area but the index could not record it; it is completed "
                  "when the store is next opened",
                  id_);
    return;
  }
  try {
    // A manifest whose commit failed may still have been published (a rename done, its directory's
    // fsync failed): it goes before the entries do.
    store_.objects().remove(manifest_name(id_, 0));
    store_.roll_back(PendingRecord{id_, image_}, Store::RollBack::kOwnFailure);
    store_.end_write(id_, image_);
  } catch (const std::exception& e) {
    // The entries stay in the index; a later revision of this image would read them as its
    // parent's content. Keep the image (and the store's maintenance) blocked in this process: the
    // next process to open the store rolls the revision back before anything else.
    spdlog::error("could not roll back revision {}: {}; image blocked until the store is reopened", id_, e.what());
  }
}

// The content a reader of this revision would see for `block` if we wrote nothing: the newest entry
// before this revision (for a block beyond the parent's size that may be stale data of an older,
// larger revision, which is why callers zero such blocks explicitly).
std::optional<Hash> RevisionWriter::current_content(uint64_t block) {
  const std::string key = block_key(image_, block, id_ - 1);
  lookup_->seek_for_prev(key);
  if (!lookup_->valid()) {
    lookup_->check("look up block map");
    return std::nullopt;
  }
  auto k = parse_block_key(lookup_->key());
  if (!k || k->image != image_ || k->block != block) return std::nullopt;
  const std::string_view v = lookup_->value();
  if (v.empty()) return std::nullopt;  // a zero block
  // Taken as "no data", the parent's term for this block would stay in the new revision's digest
  // (and in every later one's): a malformed entry fails the backup instead.
  if (v.size() != 32)
    throw StoreError(StoreError::Kind::kCorrupt, "malformed block map entry for block " + std::to_string(block) +
                                                     "; rebuild the index with `rbdvault rebuild-index`");
  Hash h;
  std::memcpy(h.data(), v.data(), 32);
  return h;
}

void RevisionWriter::check_order(uint64_t block) {
  if (committed_) throw std::logic_error("revision already committed");
  if (last_block_ && block <= *last_block_) throw std::logic_error("blocks must be written in ascending order");
  if (block >= store_.blocks_for(size_)) throw std::invalid_argument("block beyond the revision's size");
}

// Blocks in [stale_cursor_, until) that nobody wrote must read as zeros (the whole image for a
// revision from empty, the grown part otherwise), yet older, larger revisions may have left data
// entries there. Zero exactly those; scanning existing entries keeps this proportional to history,
// not to the size of the grown range.
void RevisionWriter::zero_stale(uint64_t until) {
  if (stale_cursor_ >= until) return;
  const uint64_t from = stale_cursor_;
  stale_cursor_ = until;
  store_.newest_entries(image_, from, until, id_ - 1, [&](uint64_t block, const std::optional<Hash>& h) {
    if (h) record(block, std::nullopt, {});
  });
}

void RevisionWriter::put_zero(uint64_t block) {
  std::lock_guard<std::mutex> guard(store_.write_mu_);
  check_order(block);
  zero_stale(block);
  stale_cursor_ = std::max(stale_cursor_, block + 1);
  record(block, std::nullopt, {});
}

void RevisionWriter::put_zero_range(uint64_t first, uint64_t end) {
  if (first >= end) return;
  std::lock_guard<std::mutex> guard(store_.write_mu_);
  check_order(first);
  check_order(end - 1);
  zero_stale(first);
  // Only blocks that hold data now need an entry; a scan of existing entries finds them, so a huge
  // discard costs what the map holds there, not one lookup per block.
  store_.newest_entries(image_, first, end, id_ - 1, [&](uint64_t block, const std::optional<Hash>& h) {
    if (h) record(block, std::nullopt, {});
  });
  last_block_ = end - 1;
  stale_cursor_ = std::max(stale_cursor_, end);
}

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

PreparedBlock prepare_block(AppendStore& store, std::string_view data) {
  if (data.size() > store.block_size()) throw std::invalid_argument("block data larger than the block size");
  if (all_zero(data)) return {};
  return prepare_block(store, std::string(data));
}

PreparedBlock prepare_block(AppendStore& store, std::string&& data) {
  const uint32_t bs = store.block_size();
  if (data.size() > bs) throw std::invalid_argument("block data larger than the block size");
  PreparedBlock p;
  if (all_zero(data)) return p;
  p.raw = std::move(data);
  p.raw.resize(bs, '\0');
  const double t0 = thread_cpu_seconds();
  p.hash = sha256(p.raw);
  const double t1 = thread_cpu_seconds();
  p.hash_seconds = t1 - t0;
  // Compress only what the store does not hold yet; a chunk first seen earlier in the same revision
  // is not in the index yet and is compressed again, which costs CPU, not correctness.
  if (!store.chunk(*p.hash)) {
    const int level = store.writer_options().zstd_level;
    if (worth_compressing(p.raw, level))
      p.encoded = encode_chunk(p.raw, level);
    else
      p.store_raw = true;
    p.compress_seconds = thread_cpu_seconds() - t1;
  }
  return p;
}

PreparedBlock prepare_block(AppendStore& store, std::string&& data, const Hash& root, std::string_view root_raw,
                            std::string_view root_unverified) {
  const uint32_t bs = store.block_size();
  if (data.size() > bs) throw std::invalid_argument("block data larger than the block size");
  if (root_raw.size() != bs || all_zero(data)) return prepare_block(store, std::move(data));
  PreparedBlock p;
  p.raw = std::move(data);
  p.raw.resize(bs, '\0');
  const double t0 = thread_cpu_seconds();
  p.hash = sha256(p.raw);
  const double t1 = thread_cpu_seconds();
  p.hash_seconds = t1 - t0;
  if (!store.chunk(*p.hash)) {  // dedup first: content the store holds in any form is reused
    const int level = store.writer_options().zstd_level;
    if (auto patch = encode_patch(root, root_raw, p.raw, level, root_unverified)) {
      p.encoded = std::move(*patch);
      p.patch_base = root;
    } else if (worth_compressing(p.raw, level)) {
      p.encoded = encode_chunk(p.raw, level);
    } else {
      p.store_raw = true;
    }
    p.compress_seconds = thread_cpu_seconds() - t1;
  }
  return p;
}

PreparedBlock prepare_block_over(AppendStore& store, std::string&& data, const ChunkContent& parent) {
  const std::string& root = parent.root_content.empty() ? parent.content : parent.root_content;
  return prepare_block(store, std::move(data), parent.root, root, parent.root_unverified);
}

void RevisionWriter::put_block(uint64_t block, std::string_view data) {
  put_prepared(block, prepare_block(store_, data));
}

void RevisionWriter::put_prepared(uint64_t block, PreparedBlock&& prepared) {
  std::lock_guard<std::mutex> guard(store_.write_mu_);
  check_order(block);
  zero_stale(block);
  stale_cursor_ = std::max(stale_cursor_, block + 1);
  encoded_ = std::move(prepared.encoded);
  store_raw_ = prepared.store_raw;
  patch_base_ = prepared.patch_base;
  record(block, prepared.hash, prepared.raw);
  encoded_.reset();
  patch_base_.reset();
  store_raw_ = false;
}

bool RevisionWriter::put_existing(uint64_t block, const Hash& hash) {
  std::lock_guard<std::mutex> guard(store_.write_mu_);
  check_order(block);
  // record() falls back to storing the given bytes when the chunk is unknown; with no bytes here
  // that would store an empty chunk under `hash`, so an unknown chunk is refused first.
  if (!dirty_chunks_.count(hash) && !store_.chunk(hash)) return false;
  zero_stale(block);
  stale_cursor_ = std::max(stale_cursor_, block + 1);
  record(block, hash, {});
  return true;
}

void RevisionWriter::record(uint64_t block, const std::optional<Hash>& content, std::string_view data) {
  last_block_ = block;

  const std::optional<Hash> current = current_content(block);
  // Checksum: replace the block's old term (only blocks inside the parent count) with the new one.
  if (current && block < parent_blocks_) RevisionDigest::subtract(digest_, RevisionDigest::term(block, *current));
  if (content) RevisionDigest::add(digest_, RevisionDigest::term(block, *content));
  if (content == current) return;  // unchanged: no entry, no reference

  if (content) {
    auto dirty = dirty_chunks_.find(*content);
    if (dirty == dirty_chunks_.end()) {
      DirtyChunk d;
      if (auto existing = store_.chunk(*content)) {
        d.rec = *existing;
      } else {
        // New content: compress and append to the current pack.
        if (!pack_) {
          // The pack counter advances at once (not with our next flush) so that concurrent writers
          // never pick the same pack id.
          const uint64_t next = store_.advance_counter(kCounterNextPack, 1, /*sync=*/false);
          pack_ = std::make_unique<PackWriter>(store_.objects(), static_cast<uint32_t>(next));
        }
        // A patch only over a full chunk the store holds (depth 1); otherwise the full content.
        std::optional<Hash> base = patch_base_;
        if (base && encoded_ && is_patch(encoded_->flags) && store_.patches_allowed_) {
          const auto b = store_.chunk(*base);
          if (!b || is_patch(b->flags) || b->raw_len != data.size()) base.reset();
        } else {
          base.reset();
        }
        if (!base && encoded_ && is_patch(encoded_->flags)) encoded_.reset();
        const bool as_is = !encoded_ && store_raw_;  // the raw bytes, stored without a copy
        EncodedChunk enc;
        if (encoded_)
          enc = std::move(*encoded_);
        else if (!store_raw_)
          enc = encode_chunk(data, store_.writer_options().zstd_level);
        const std::string_view payload = as_is ? data : std::string_view(enc.payload);
        d.rec.pack = pack_->id();
        d.rec.offset = pack_->append(*content, enc.flags, static_cast<uint32_t>(data.size()), payload);
        d.rec.stored_len = static_cast<uint32_t>(payload.size());
        d.rec.raw_len = static_cast<uint32_t>(data.size());
        d.rec.flags = enc.flags;
        d.rec.refs = 0;
        d.created = true;
        bytes_stored_ += payload.size() + kChunkHeaderSize;
        ++new_chunks_;
        if (base) {
          // The patch holds a reference on its base, written in the same batch as its record.
          d.rec.base = *base;
          add_ref(*base);
          ++patch_chunks_;
          patch_bytes_ += payload.size() + kChunkHeaderSize;
        }
        store_.crash_points().reached("pack.append");
      }
      dirty = dirty_chunks_.emplace(*content, d).first;
    }
    ++dirty->second.added_refs;
    batch_.put(block_key(image_, block, id_), as_view(*content));
  } else {
    batch_.put(block_key(image_, block, id_), {});
  }
  manifest_->add(block, content);
  ++map_entries_;
  ++batch_entries_;
  // RBDVAULT_FAULT=flush.small (tests only): a flush every 16 entries, so that a kill can land
  // after entries and their references reached the index (otherwise that needs 131072 entries).
  if (batch_entries_ >= store_.writer_options().flush_entries ||
      (pack_ && pack_->size() >= store_.writer_options().pack_target_bytes) ||
      (batch_entries_ >= 16 && store_.crash_points().fault("flush.small")))
    flush(false);
}

void RevisionWriter::add_ref(const Hash& hash) {
  auto it = dirty_chunks_.find(hash);
  if (it == dirty_chunks_.end()) {
    const auto rec = store_.chunk(hash);
    if (!rec) throw std::logic_error("reference to a chunk the store does not hold");
    it = dirty_chunks_.emplace(hash, DirtyChunk{*rec, 0, false}).first;
  }
  ++it->second.added_refs;
}

void RevisionWriter::seal_pack() {
  if (!pack_) return;
  PackRecord p = pack_->seal();
  store_.crash_points().reached("pack.sealed");
  batch_.put(pack_key(pack_->id()), encode(p));
  pack_.reset();
}

// Moves buffered entries into RocksDB. Intermediate flushes are invisible to readers: entries carry
// this revision's id, which no committed revision record reaches yet, and the pending mark written
// by begin_revision lets recovery remove them.
void RevisionWriter::flush(bool final) {
  seal_pack();  // chunk records may only point into durable, sealed packs
  // References are added to the record as it is now: another writer may have changed it (or
  // stored the same new chunk) since we looked. Our own copy of such a chunk is then unreferenced
  // pack space for gc. Called with the store's write mutex held, so nobody changes it meanwhile;
  // the records are read again only if someone else changed chunk records since our last flush.
  const bool reread = store_.chunk_generation_ != chunk_generation_seen_;
  if (reread) {
    // A patch we appended whose chunk another writer recorded first stays unreferenced pack
    // space; its record is not written, so the reference it would hold on its base goes too.
    for (auto& [hash, d] : dirty_chunks_) {
      if (!d.created || !is_patch(d.rec.flags) || !store_.chunk(hash)) continue;
      d.created = false;
      auto base = dirty_chunks_.find(d.rec.base);
      if (base != dirty_chunks_.end() && base->second.added_refs > 0) --base->second.added_refs;
    }
  }
  for (auto& [hash, d] : dirty_chunks_) {
    ChunkRecord rec = d.rec;
    if (reread)
      if (auto now = store_.chunk(hash)) rec = *now;
    rec.refs += d.added_refs;
    batch_.put(chunk_key(hash), encode(rec));
  }
  dirty_chunks_.clear();
  store_.index().write(batch_, final ? Sync::kYes : Sync::kNo, final ? "commit revision" : "write block map");
  chunk_generation_seen_ = ++store_.chunk_generation_;
  store_.crash_points().reached(final ? "revision.entries_synced" : "revision.flushed");
  batch_.clear();
  batch_entries_ = 0;
  // Iterators pin the state they were created at; refresh so lookups stay cheap.
  lookup_.emplace(store_.index().cursor({}));
}

RevisionRecord RevisionWriter::commit(const RevisionInfo& info) {
  std::lock_guard<std::mutex> guard(store_.write_mu_);
  if (committed_) throw std::logic_error("revision already committed");
  zero_stale(store_.blocks_for(size_));
  RevisionRecord rec;
  rec.id = id_;
  rec.image = image_;
  const std::optional<ImageRecord> img = store_.index().image_record(image_);
  if (!img) throw StoreError(StoreError::Kind::kCorrupt, "image record " + std::to_string(image_) + " is missing");
  rec.pool = img->pool;
  rec.name = img->name;
  rec.ceph_image_id = info.ceph_image_id;
  rec.snap_name = info.snap_name;
  rec.snap_id = info.snap_id;
  rec.created = info.created ? info.created : static_cast<int64_t>(std::time(nullptr));
  rec.size = size_;
  rec.parent = parent_ ? parent_->id : 0;
  rec.kind = info.kind;
  rec.block_size = store_.block_size();
  rec.order = info.order;
  rec.features = info.features;
  rec.bytes_read = info.bytes_read;
  rec.bytes_stored = bytes_stored_;
  rec.new_chunks = new_chunks_;
  rec.map_entries = map_entries_;
  rec.digest = digest_;
  rec.flags = info.application_consistent ? kRevisionApplicationConsistent : 0;
  if (!info.group.empty()) {
    if (info.group.size() > kMaxGroupName)  // the record would commit and never decode again
      throw StoreError(StoreError::Kind::kInvalid, "group name longer than " + std::to_string(kMaxGroupName) + " bytes");
    rec.flags |= kRevisionGroup;
    rec.group = info.group;
    rec.group_run = info.group_run;
    rec.group_gap_us = info.group_gap_us;
  }
  RevisionDigest::add(rec.digest, RevisionDigest::size_term(size_));
  // 1. Every entry, chunk and pack record of the revision durable (still invisible: W is there).
  flush(true);
  // 2. The manifest: the commit point. Recovery rolls a revision whose manifest exists forward.
  manifest_->finish(ManifestTail{rec, 0, {}});
  manifest_sink_->commit();
  manifest_put_ = true;
  store_.crash_points().reached("revision.manifest_put");
  // 3. The index commit: R, V, and the mark gone, in one synced write.
  IndexBatch commit_batch;
  commit_batch.put(revision_key(id_), encode(rec));
  commit_batch.put(image_rev_key(image_, id_), {});
  commit_batch.remove(pending_key(id_));
  store_.index().write(commit_batch, Sync::kYes, "commit revision");
  store_.crash_points().reached("revision.committed");
  committed_ = true;
  store_.end_write(id_, image_);
  return rec;
}

}  // namespace rbdvault::store
