#include "store/gc.h"

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <unordered_map>

#include "store/lock.h"
#include "store/pack.h"
#include "store/store.h"

namespace fs = std::filesystem;

namespace rbdvault::store {
namespace {

void check(const rocksdb::Status& s, const std::string& what) {
  if (!s.ok()) throw StoreError(StoreError::Kind::kIO, what + ": " + s.ToString());
}

struct PackChunks {
  uint64_t live_bytes = 0;
  std::vector<std::pair<Hash, ChunkRecord>> live, dead;
};

}  // namespace

uint64_t pack_bytes_on_disk(Store& store) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(store.data_dir(), ec))
    if (e.path().extension() == ".pack") total += e.file_size(ec);
  return total;
}

uint64_t index_bytes_on_disk(Store& store) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(store.dir() / "index", ec))
    if (e.is_regular_file(ec)) total += e.file_size(ec);
  return total;
}

GcResult gc(Store& store, const GcOptions& options) {
  if (!store.writable()) throw StoreError(StoreError::Kind::kInvalid, "gc needs the store opened as writer");
  const Store::Exclusive alone = store.exclusive("gc");  // no revision can begin until gc is done
  ReaderLock readers(store.dir() / "readers.lock", /*exclusive=*/true);
  GcResult result;
  result.bytes_before = pack_bytes_on_disk(store);

  std::map<uint32_t, PackChunks> packs;
  std::map<uint32_t, PackRecord> pack_records;
  {
    std::unique_ptr<rocksdb::Iterator> it(store.db().NewIterator(rocksdb::ReadOptions()));
    for (it->Seek(std::string(1, kKeyPack)); it->Valid() && it->key().starts_with(std::string(1, kKeyPack));
         it->Next()) {
      // Pack ids start at 1, so 0 means a malformed key; gc must not act on a pack it cannot name.
      const uint32_t id = parse_pack_key(it->key().ToStringView());
      if (id == 0) throw StoreError(StoreError::Kind::kCorrupt, "malformed pack key in index");
      pack_records[id] = decode_pack(it->value().ToStringView());
    }
    for (it->Seek(std::string(1, kKeyChunk)); it->Valid() && it->key().starts_with(std::string(1, kKeyChunk));
         it->Next()) {
      const Hash h = chunk_hash_of_key(it->key().ToStringView());
      ChunkRecord rec = decode_chunk_record(it->value().ToStringView());
      PackChunks& p = packs[rec.pack];
      if (rec.refs > 0) {
        p.live_bytes += kChunkHeaderSize + rec.stored_len;
        p.live.emplace_back(h, rec);
      } else {
        p.dead.emplace_back(h, rec);
      }
    }
    check(it->status(), "scan chunk records");
  }

  rocksdb::WriteOptions sync;
  sync.sync = true;
  for (auto& [id, rec] : pack_records) {
    PackChunks& p = packs[id];
    const uint64_t size = rec.bytes;
    const uint64_t unused = size - std::min(size, p.live_bytes + kPackHeaderSize);
    if (p.live.empty()) {
      // Nothing referenced: drop the records, then the file.
      if (options.dry_run) {
        ++result.packs_deleted;
        result.chunks_removed += p.dead.size();
        continue;
      }
      rocksdb::WriteBatch batch;
      for (auto& [h, c] : p.dead) batch.Delete(chunk_key(h));
      batch.Delete(pack_key(id));
      check(store.db().Write(sync, &batch), "drop pack " + pack_file_name(id));
      store.crash_points().reached("gc.pack_dropped");
      store.packs().forget_pack(id);
      fs::remove(store.data_dir() / pack_file_name(id));
      store.crash_points().reached("gc.file_removed");
      ++result.packs_deleted;
      result.chunks_removed += p.dead.size();
      continue;
    }
    // Unused bytes include chunks without any record (e.g. a copy repair replaced), not only dead ones.
    if (unused == 0 || static_cast<double>(unused) <= options.max_unused * static_cast<double>(size)) continue;
    if (options.dry_run) {
      ++result.packs_rewritten;
      result.chunks_removed += p.dead.size();
      continue;
    }
    // Copy the referenced chunks, verbatim and verified, into a new pack; switch the index to it in
    // one write; then delete the old file.
    std::string v;
    check(store.db().Get(rocksdb::ReadOptions(), counter_key(kCounterNextPack), &v), "read pack counter");
    const uint32_t new_id = static_cast<uint32_t>(decode_u64(v));
    PackWriter writer(store.data_dir(), new_id);
    rocksdb::WriteBatch batch;
    try {
      for (auto& [h, c] : p.live) {
        std::string payload = store.packs().read_payload(h, c);
        ChunkRecord moved = c;
        moved.pack = new_id;
        moved.offset = writer.append(h, c.flags, c.raw_len, payload);
        batch.Put(chunk_key(h), encode(moved));
      }
    } catch (const StoreError& e) {
      // A damaged chunk cannot be copied: this pack stays as it is (the new one, unsealed, is
      // removed with `writer`) for scrub and repair, and gc goes on with the others.
      if (e.kind() != StoreError::Kind::kCorrupt) throw;
      spdlog::warn("gc {}: skipping {}: {} (run scrub and repair)", store.dir().string(), pack_file_name(id), e.what());
      ++result.packs_skipped;
      continue;
    }
    PackRecord sealed = writer.seal();
    store.crash_points().reached("gc.pack_written");
    for (auto& [h, c] : p.dead) batch.Delete(chunk_key(h));
    batch.Put(pack_key(new_id), encode(sealed));
    batch.Put(counter_key(kCounterNextPack), encode_u64(new_id + 1));
    batch.Delete(pack_key(id));
    check(store.db().Write(sync, &batch), "rewrite pack " + pack_file_name(id));
    store.crash_points().reached("gc.pack_switched");
    store.packs().forget_pack(id);
    fs::remove(store.data_dir() / pack_file_name(id));
    store.crash_points().reached("gc.file_removed");
    ++result.packs_rewritten;
    result.chunks_removed += p.dead.size();
  }
  if (!options.dry_run) fsync_dir(store.data_dir());
  result.bytes_after = options.dry_run ? result.bytes_before : pack_bytes_on_disk(store);
  spdlog::info("gc {}: {} chunks removed, {} packs deleted, {} rewritten, {} skipped as damaged, {} -> {} bytes",
               store.dir().string(), result.chunks_removed, result.packs_deleted, result.packs_rewritten,
               result.packs_skipped, result.bytes_before, result.bytes_after);
  return result;
}

StoreUsage du(Store& store, const std::string& only_image) {
  StoreUsage usage;
  std::unordered_map<std::string, ChunkRecord> chunk_cache;  // chunk key -> record
  auto chunk_of = [&](std::string_view hash) -> const ChunkRecord& {
    std::string ck = std::string(1, kKeyChunk) + std::string(hash);
    auto it = chunk_cache.find(ck);
    if (it == chunk_cache.end()) {
      std::string v;
      check(store.db().Get(rocksdb::ReadOptions(), ck, &v), "read chunk record");
      it = chunk_cache.emplace(ck, decode_chunk_record(v)).first;
    }
    return it->second;
  };
  for (const ImageRecord& image : store.images()) {
    const std::string spec = image.pool + "/" + image.name;
    if (!only_image.empty() && spec != only_image) continue;
    std::vector<RevisionRecord> revs = store.revisions(image.key);
    if (revs.empty()) continue;
    ImageUsage iu;
    iu.image = spec;
    iu.revisions = revs.size();
    iu.logical_bytes = revs.back().size;
    std::map<uint64_t, uint64_t> next;  // revision -> the next revision of the image
    for (size_t i = 0; i + 1 < revs.size(); ++i) next[revs[i].id] = revs[i + 1].id;
    // Forgetting R drops exactly R's entries that the next revision overwrites (see forget).
    std::map<uint64_t, std::unordered_map<std::string, uint64_t>> dropped;  // rev -> chunk key -> entries
    double share = 0;
    std::unique_ptr<rocksdb::Iterator> it(store.db().NewIterator(rocksdb::ReadOptions()));
    const std::string prefix = block_prefix(image.key);
    std::optional<BlockKey> prev;
    std::string prev_value;
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      auto k = parse_block_key(it->key().ToStringView());
      if (!k) throw StoreError(StoreError::Kind::kCorrupt, "malformed block map key");
      if (it->value().size() == 32) {
        const ChunkRecord& c = chunk_of(it->value().ToStringView());
        if (c.refs) share += double(kChunkHeaderSize + c.stored_len) / double(c.refs);
      }
      if (prev && prev->block == k->block && prev_value.size() == 32) {
        auto n = next.find(prev->rev);
        if (n != next.end() && n->second == k->rev) ++dropped[prev->rev][std::string(1, kKeyChunk) + prev_value];
      }
      prev = *k;
      prev_value = it->value().ToString();
    }
    check(it->status(), "scan block map");
    iu.stored_bytes = static_cast<uint64_t>(share + 0.5);
    for (auto& r : revs) {
      RevisionUsage ru{r.id, 0};
      for (auto& [ck, count] : dropped[r.id]) {
        const ChunkRecord& c = chunk_of(std::string_view(ck).substr(1));
        if (c.refs == count) ru.unique_bytes += kChunkHeaderSize + c.stored_len;
      }
      iu.per_revision.push_back(ru);
    }
    usage.images.push_back(std::move(iu));
  }
  {
    std::unique_ptr<rocksdb::Iterator> it(store.db().NewIterator(rocksdb::ReadOptions()));
    for (it->Seek(std::string(1, kKeyChunk)); it->Valid() && it->key().starts_with(std::string(1, kKeyChunk));
         it->Next()) {
      ChunkRecord c = decode_chunk_record(it->value().ToStringView());
      (c.refs ? usage.referenced_bytes : usage.unreferenced_bytes) += kChunkHeaderSize + c.stored_len;
    }
  }
  usage.pack_bytes = pack_bytes_on_disk(store);
  usage.index_bytes = index_bytes_on_disk(store);
  return usage;
}

}  // namespace rbdvault::store
