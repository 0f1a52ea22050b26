#include "store/gc.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "store/chunk_codec.h"
#include "store/chunk_scan.h"
#include "store/external_sort.h"
#include "store/index.h"
#include "store/lock.h"
#include "store/pack.h"
#include "store/ref_updates.h"
#include "store/store.h"

namespace fs = std::filesystem;

namespace rbdvault::store {
namespace {

// Memory does not grow with the number of chunks (docs/format.md §7.6): per pack, only counts are
// kept; the chunks of the packs gc acts on reach it through an external sort by pack, and each
// pack's index changes are written in batches of at most kBatchChunks chunks.
constexpr uint64_t kBatchChunks = 16384;

struct PackStats {
  uint64_t live_bytes = 0, live = 0, dead = 0;
};

// pack (be32), hash, then the record's other fields: the chunks of the packs to drop or rewrite.
using PackOrder = ExternalSorter<4 + 32 + 8 + 4 + 4 + 1 + 8 + 32>;  // ... and a patch's base

PackOrder::Key pack_order_key(const Hash& h, const ChunkRecord& rec) {
  PackOrder::Key k{};
  put_be(k.data(), rec.pack, 4);
  std::memcpy(k.data() + 4, h.data(), 32);
  std::memcpy(k.data() + 36, &rec.offset, 8);
  std::memcpy(k.data() + 44, &rec.stored_len, 4);
  std::memcpy(k.data() + 48, &rec.raw_len, 4);
  k[52] = rec.flags;
  std::memcpy(k.data() + 53, &rec.refs, 8);
  std::memcpy(k.data() + 61, rec.base.data(), 32);
  return k;
}

void from_pack_order_key(const PackOrder::Key& k, Hash& h, ChunkRecord& rec) {
  rec.pack = static_cast<uint32_t>(get_be(k.data(), 4));
  std::memcpy(h.data(), k.data() + 4, 32);
  std::memcpy(&rec.offset, k.data() + 36, 8);
  std::memcpy(&rec.stored_len, k.data() + 44, 4);
  std::memcpy(&rec.raw_len, k.data() + 48, 4);
  rec.flags = k[52];
  std::memcpy(&rec.refs, k.data() + 53, 8);
  std::memcpy(rec.base.data(), k.data() + 61, 32);
}

}  // namespace

uint64_t pack_bytes_on_disk(Store& store) {
  uint64_t total = 0;
  for (const std::string& name : store.objects().list("data/"))
    if (name.ends_with(".pack")) total += store.objects().size(name).value_or(0);  // 0: removed meanwhile
  return total;
}

uint64_t index_bytes_on_disk(Store& store) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(store.dir() / "index", ec))
    if (e.is_regular_file(ec)) total += e.file_size(ec);
  return total;
}

namespace {

// Drops or rewrites one pack whose chunks arrive in hash order through next(). Every batch leaves
// a consistent index: dead records may go at any time; live ones move to a sealed new pack whose
// P record is in the same batch; the old P record goes in the last batch, then the file.
class PackRewrite {
 public:
  PackRewrite(Store& store, uint32_t id, bool rewrite) : store_(store), id_(id), rewrite_(rewrite) {}

  void add(const Hash& h, const ChunkRecord& c) {
    // A patch's record goes only with its base reference (release_dead_patches): one with no
    // references left here is kept, never dropped alone.
    if (c.refs == 0 && !is_patch(c.flags)) {
      batch_.remove(chunk_key(h));
      ++removed_;
    } else {
      if (!writer_) {
        const std::optional<uint64_t> next = store_.index().counter_value(kCounterNextPack);
        if (!next) throw StoreError(StoreError::Kind::kCorrupt, "the pack counter is missing from the index");
        writer_ = std::make_unique<PackWriter>(store_.objects(), static_cast<uint32_t>(*next));
      }
      std::string payload = store_.packs().read_payload(h, c);
      ChunkRecord moved = c;
      moved.pack = writer_->id();
      moved.offset = writer_->append(h, c.flags, c.raw_len, payload);
      batch_.put(chunk_key(h), encode(moved));
    }
    if (batch_.count() >= kBatchChunks ||
        (writer_ && writer_->size() >= store_.writer_options().pack_target_bytes))
      write(false);
  }

  // A chunk of this pack could not be copied: the batch not yet written is dropped and so is the
  // unsealed new pack (its destructor removes the .tmp). What earlier batches moved stays moved,
  // and the old pack keeps its record and file for the chunks still in it: a consistent index.
  void abandon() {
    batch_.clear();
    writer_.reset();
  }

  // The last batch drops the old pack's record; then its file goes.
  uint64_t finish() {
    write(true);
    store_.crash_points().reached(rewrite_ ? "gc.pack_switched" : "gc.pack_dropped");
    store_.packs().forget_pack(id_);
    try {
      store_.objects().remove(pack_object_name(id_));
    } catch (const StoreError& e) {
      // The index no longer names the pack: the next writer's recovery removes it.
      spdlog::warn("gc {}: {}; left for the next writer to remove", store_.name(), e.what());
    }
    store_.crash_points().reached("gc.file_removed");
    return removed_;
  }

 private:
  void write(bool last) {
    if (writer_) {
      const uint32_t new_id = writer_->id();
      PackRecord sealed = writer_->seal();
      writer_.reset();
      store_.crash_points().reached("gc.pack_written");
      batch_.put(pack_key(new_id), encode(sealed));
      batch_.put(counter_key(kCounterNextPack), encode_u64(new_id + 1));
    }
    if (last) batch_.remove(pack_key(id_));
    if (batch_.count() == 0) return;
    store_.index().write(batch_, Sync::kYes, (rewrite_ ? "rewrite pack " : "drop pack ") + pack_file_name(id_));
    batch_.clear();
  }

  Store& store_;
  uint32_t id_;
  bool rewrite_;
  std::unique_ptr<PackWriter> writer_;
  IndexBatch batch_;
  uint64_t removed_ = 0;
};

// Passes 2 and 3 of gc: the chunks of the packs to act on (pack -> rewrite, false: drop), sorted
// by pack (then hash, as the chunk keys are); then pack by pack, in ascending id order. Returns the
// packs skipped because a chunk in them is damaged.
std::vector<uint32_t> rewrite_packs(Store& store, const std::map<uint32_t, bool>& act) {
  std::vector<uint32_t> skipped;
  PackOrder chunks;
  for (ChunkRecordCursor cursor(store.index()); cursor.valid(); cursor.next())
    if (act.count(cursor.record()->pack)) chunks.add(pack_order_key(cursor.hash(), *cursor.record()));
  PackOrder::Entry e;
  bool have = chunks.next(e);
  for (auto& [id, rewrite] : act) {
    PackRewrite pack(store, id, rewrite);
    Hash h;
    ChunkRecord c;
    std::string damage;
    for (; have && get_be(e.key.data(), 4) == id; have = chunks.next(e)) {
      if (!damage.empty()) continue;  // the rest of a skipped pack
      from_pack_order_key(e.key, h, c);
      try {
        pack.add(h, c);
      } catch (const StoreError& err) {
        // A damaged chunk cannot be copied: this pack stays for scrub and repair; gc goes on.
        if (err.kind() != StoreError::Kind::kCorrupt) throw;
        damage = err.what();
        pack.abandon();
      }
    }
    if (damage.empty()) {
      pack.finish();
      continue;
    }
    spdlog::warn("gc {}: skipping {}: {} (run scrub and repair)", store.name(), pack_file_name(id), damage);
    skipped.push_back(id);
  }
  return skipped;
}

// Pass 0: patch chunks no block map entry references any more go first, each record removed in
// the same atomic index write that lowers its base's count (docs/format.md §7.6): a crash leaves
// either both or neither, never a base freed under a live patch nor a reference scrub would call
// wrong. A base this brings to 0 is dead for pass 1 and collected in this same run. Returns the
// records removed.
uint64_t release_dead_patches(Store& store) {
  uint64_t removed = 0;
  IndexBatch batch;
  ChunkRefUpdates bases(store.index());
  auto write = [&] {
    if (batch.count() == 0) return;
    bases.write_to(batch);
    store.index().write(batch, Sync::kYes, "release unreferenced patch chunks");
    batch.clear();
    store.crash_points().reached("gc.patches_released");
  };
  for (ChunkRecordCursor cursor(store.index()); cursor.valid(); cursor.next()) {
    if (!cursor.record()) throw StoreError(StoreError::Kind::kCorrupt, cursor.error());
    const ChunkRecord& rec = *cursor.record();
    if (!is_patch(rec.flags) || rec.refs != 0) continue;
    batch.remove(chunk_key(cursor.hash()));
    bases.unref(as_view(rec.base));
    ++removed;
    if (batch.count() >= kBatchChunks) write();
  }
  write();
  return removed;
}

// A dry run's stand-in for pass 0, which it must not do: the references the dead patches hold on
// their bases, counted per base (bounded memory; read back in hash order, the order of pass 1's
// scan), so that pass 1 sees the bases pass 0 would free. Adds the dead patches to `removed`.
ExternalSorter<32> bases_of_dead_patches(Store& store, uint64_t& removed) {
  ExternalSorter<32> bases;
  for (ChunkRecordCursor cursor(store.index()); cursor.valid(); cursor.next()) {
    if (!cursor.record()) throw StoreError(StoreError::Kind::kCorrupt, cursor.error());
    const ChunkRecord& rec = *cursor.record();
    if (!is_patch(rec.flags) || rec.refs != 0) continue;
    ExternalSorter<32>::Key k;
    std::memcpy(k.data(), rec.base.data(), 32);
    bases.add(k);
    ++removed;
  }
  return bases;
}

// The references of the chunk `hash` that pass 0 would release, from `bases` (advanced in hash
// order alongside the chunk records).
class ReleasedRefs {
 public:
  explicit ReleasedRefs(ExternalSorter<32>& bases) : bases_(bases) { have_ = bases_.next(next_); }
  uint64_t of(const Hash& hash) {
    while (have_ && std::memcmp(next_.key.data(), hash.data(), 32) < 0) have_ = bases_.next(next_);
    return have_ && std::memcmp(next_.key.data(), hash.data(), 32) == 0 ? next_.count : 0;
  }

 private:
  ExternalSorter<32>& bases_;
  ExternalSorter<32>::Entry next_{};
  bool have_ = false;
};

}  // namespace

GcResult gc(Store& store, const GcOptions& options) {
  if (!store.writable()) throw StoreError(StoreError::Kind::kInvalid, "gc needs the store opened as writer");
  const Store::Exclusive alone = store.exclusive("gc");  // no revision can begin until gc is done
  ReaderLock readers(store.dir() / "readers.lock", /*exclusive=*/true);
  // And across hosts: no reader on any host while packs are removed or rewritten.
  const auto pool_readers = store.objects().lease_readers("rbdvault gc", true, store.dir());
  GcResult result;
  result.bytes_before = pack_bytes_on_disk(store);
  // A dry run leaves them, but counts what releasing them would free, so that its plan is the
  // one the real run carries out (a base freed this way can turn a rewrite into a drop).
  ExternalSorter<32> released_bases =
      options.dry_run ? bases_of_dead_patches(store, result.chunks_removed) : ExternalSorter<32>();
  if (!options.dry_run) result.chunks_removed += release_dead_patches(store);

  // Pass 1: the packs, and per pack the counts of live and dead chunks.
  std::map<uint32_t, PackRecord> pack_records;
  std::map<uint32_t, PackStats> stats;
  {
    IndexCursor it = store.index().scan(std::string(1, kKeyPack));
    for (; it.valid(); it.next()) {
      // Pack ids start at 1, so 0 means a malformed key; gc must not act on a pack it cannot name.
      const uint32_t id = parse_pack_key(it.key());
      if (id == 0) throw StoreError(StoreError::Kind::kCorrupt, "malformed pack key in index");
      pack_records[id] = decode_pack(it.value());
    }
    it.check("scan pack records");
    ReleasedRefs released(released_bases);  // empty unless a dry run
    for (ChunkRecordCursor cursor(store.index()); cursor.valid(); cursor.next()) {
      if (!cursor.record()) throw StoreError(StoreError::Kind::kCorrupt, cursor.error());
      const ChunkRecord& rec = *cursor.record();
      if (options.dry_run && is_patch(rec.flags) && rec.refs == 0) continue;  // gone in pass 0
      PackStats& p = stats[rec.pack];
      if (rec.refs > released.of(cursor.hash())) {
        p.live_bytes += kChunkHeaderSize + rec.stored_len;
        ++p.live;
      } else {
        ++p.dead;
      }
    }
  }

  // Decide, per pack: drop (no live chunk), rewrite (too much unused), or keep.
  std::map<uint32_t, bool> act;  // pack -> rewrite (false: drop)
  for (auto& [id, rec] : pack_records) {
    const PackStats& p = stats[id];
    const uint64_t size = rec.bytes;
    const uint64_t unused = size - std::min(size, p.live_bytes + kPackHeaderSize);
    // Unused bytes include chunks without any record (e.g. a copy repair replaced), not only dead ones.
    const bool rewrite = p.live > 0;
    if (rewrite && (unused == 0 || static_cast<double>(unused) <= options.max_unused * static_cast<double>(size)))
      continue;
    act[id] = rewrite;
    ++(rewrite ? result.packs_rewritten : result.packs_deleted);
    result.chunks_removed += p.dead;
  }
  if (options.dry_run) {
    result.bytes_after = result.bytes_before;
    return result;
  }
  if (!act.empty()) {
    for (uint32_t id : rewrite_packs(store, act)) {
      // Its chunks may have moved in part; the counts of what was planned for it are taken back.
      ++result.packs_skipped;
      --(act[id] ? result.packs_rewritten : result.packs_deleted);
      result.chunks_removed -= stats[id].dead;
    }
  }
  result.bytes_after = pack_bytes_on_disk(store);
  spdlog::info("gc {}: {} chunks removed, {} packs deleted, {} rewritten, {} skipped as damaged, {} -> {} bytes",
               store.dir().string(), result.chunks_removed, result.packs_deleted, result.packs_rewritten,
               result.packs_skipped, result.bytes_before, result.bytes_after);
  return result;
}

}  // namespace rbdvault::store
