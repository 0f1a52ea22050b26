// Store-side pieces of repair: finding damaged chunks, finding intact copies, rewriting chunks.
#include <cstring>
#include <map>

#include "store/chunk_codec.h"
#include "store/chunk_scan.h"
#include "store/external_sort.h"
#include "store/index.h"
#include "store/pack.h"
#include "store/ref_updates.h"
#include "store/store.h"

namespace rbdvault::store {
std::optional<Hash> Store::block_content(uint64_t image, uint64_t block, uint64_t rev) {
  IndexCursor it = index_->cursor({});
  it.seek_for_prev(block_key(image, block, rev));
  if (!it.valid()) {
    it.check("read block map");  // an index error is not "no data there" (verify would count a match)
    return std::nullopt;
  }
  auto k = parse_block_key(it.key());
  if (!k || k->image != image || k->block != block) return std::nullopt;
  if (it.value().empty()) return std::nullopt;  // a zero block
  if (it.value().size() != 32)
    throw StoreError(StoreError::Kind::kCorrupt, "malformed block map entry for block " + std::to_string(block));
  Hash h;
  std::memcpy(h.data(), it.value().data(), 32);
  return h;
}

// Bounded memory at any store size (docs/format.md §7.7): the hashes of all block map entries are
// counted by an external sort and merged with the chunk records in hash order; the chunks are then
// read in pack order. Only the damaged chunks are held, with their first 64 uses.
std::vector<Store::DamagedChunk> Store::find_damaged_chunks() {
  ExternalSorter<32> counts;
  const std::string prefix(1, kKeyBlock);
  {
    IndexCursor it = index_->scan(prefix, Caching::kBypass);
    for (; it.valid(); it.next()) {
      if (it.value().size() != 32) continue;
      ExternalSorter<32>::Key k;
      std::memcpy(k.data(), it.value().data(), 32);
      counts.add(k);
    }
    it.check("scan block maps");
  }
  // A patch's base counts one reference per patch (docs/format.md §4.2), so a damaged base read by
  // no revision directly is still found, and its rewrite keeps the patches' references.
  for (ChunkRecordCursor cursor(*index_); cursor.valid(); cursor.next()) {
    if (!cursor.record() || !is_patch(cursor.record()->flags)) continue;
    ExternalSorter<32>::Key k;
    std::memcpy(k.data(), cursor.record()->base.data(), 32);
    counts.add(k);
  }
  std::map<Hash, DamagedChunk> damaged;
  // pack (be32), offset (be64), hash, entries: the recorded chunks to read, in pack order.
  ExternalSorter<4 + 8 + 32 + 8> to_read;
  {
    ChunkRecordCursor cursor(*index_);
    ExternalSorter<32>::Entry e;
    while (counts.next(e)) {
      Hash h;
      std::memcpy(h.data(), e.key.data(), 32);
      std::string problem;
      if (!cursor.seek_forward(h)) {
        problem = "no index record";
      } else if (!cursor.record()) {
        problem = cursor.error();
      } else {
        ExternalSorter<52>::Key k;
        put_be(k.data(), cursor.record()->pack, 4);
        put_be(k.data() + 4, cursor.record()->offset, 8);
        std::memcpy(k.data() + 12, h.data(), 32);
        std::memcpy(k.data() + 44, &e.count, 8);
        to_read.add(k);
        continue;
      }
      damaged[h] = DamagedChunk{h, problem, e.count, {}};
    }
  }
  {
    ExternalSorter<52>::Entry e;
    while (to_read.next(e)) {
      Hash h;
      std::memcpy(h.data(), e.key.data() + 12, 32);
      auto rec = chunk(h);  // the whole record (lengths, flags) for the verified read
      if (!rec) continue;   // cannot happen in one process holding the writer lock
      try {
        (void)read_chunk(h);  // a patch is resolved: a damaged base makes its patches damaged
      } catch (const StoreError& ex) {
        if (ex.kind() != StoreError::Kind::kCorrupt) throw;  // I/O trouble is not damage to repair
        uint64_t entries;
        std::memcpy(&entries, e.key.data() + 44, 8);
        damaged[h] = DamagedChunk{h, ex.what(), entries, {}};
      }
    }
  }
  if (damaged.empty()) return {};
  // The first uses of each damaged chunk, for repair to find good data.
  IndexCursor it = index_->scan(prefix, Caching::kBypass);
  for (; it.valid(); it.next()) {
    if (it.value().size() != 32) continue;
    Hash h;
    std::memcpy(h.data(), it.value().data(), 32);
    auto d = damaged.find(h);
    if (d == damaged.end() || d->second.uses.size() >= 64) continue;
    auto k = parse_block_key(it.key());
    if (k) d->second.uses.emplace_back(k->image, k->block, k->rev);
  }
  it.check("scan block maps");
  std::vector<DamagedChunk> out;
  for (auto& [h, d] : damaged) out.push_back(std::move(d));
  return out;
}

namespace {

// The pack id an object name promises ("data/0000002a.pack" -> 42), if it is one of ours.
std::optional<uint32_t> pack_id_of(const std::string& name) {
  const std::string stem = name.substr(5, name.size() - 5 - 5);  // between "data/" and ".pack"
  if (stem.size() != 8 || stem.find_first_not_of("0123456789abcdef") != std::string::npos) return std::nullopt;
  return static_cast<uint32_t>(std::stoul(stem, nullptr, 16));
}

// A verified copy of `hash` in the pack `name`, if the pack holds an intact one before any damage.
std::optional<std::string> copy_in_pack(ObjectStore& objects, const std::string& name, const Hash& hash) {
  std::unique_ptr<ObjectReader> pack;
  try {
    pack = objects.open(name);
  } catch (const StoreError&) {
    return std::nullopt;  // gone or unreadable: another pack may hold a copy
  }
  std::optional<std::string> found;
  const ReadAt read = [&](uint64_t off, char* buf, size_t n) { return pack->read_at(off, buf, n); };
  try {
    scan_pack(pack->size(), read, pack_id_of(name), [&](uint64_t off, const ChunkHeader& h) {
      if (h.hash != hash) return true;
      std::string payload(h.stored_len, '\0');  // bounded: scan_pack checked it against raw_len
      if (!pack->read_at(off + kChunkHeaderSize, payload.data(), payload.size())) return true;
      try {
        std::string raw = decode_chunk(h.flags, payload, h.raw_len);
        if (sha256(raw) == hash) found = std::move(raw);
      } catch (const StoreError&) {
      }
      return !found;
    });
  } catch (const StoreError& e) {
    // Damage past this point (lost sync, truncation): this pack has no more copies to offer.
    if (e.kind() != StoreError::Kind::kCorrupt) throw;
  }
  return found;
}

}  // namespace

std::optional<std::string> Store::find_chunk_copy(const Hash& hash) {
  for (const std::string& name : objects_->list("data/")) {
    if (!name.ends_with(".pack")) continue;
    if (auto raw = copy_in_pack(*objects_, name, hash)) return raw;
  }
  return std::nullopt;
}

void Store::rewrite_chunk(const Hash& hash, std::string_view raw, uint64_t refs) {
  require_no_writers("repair");
  if (mode_ != OpenMode::kWriter) throw StoreError(StoreError::Kind::kInvalid, "store opened read-only");
  if (sha256(raw) != hash)
    throw StoreError(StoreError::Kind::kInvalid, "replacement data does not match chunk " + to_hex(hash));
  const uint32_t id = static_cast<uint32_t>(counter(kCounterNextPack, 1));
  PackWriter writer(*objects_, id);
  EncodedChunk enc = encode_chunk(raw, writer_options_.zstd_level);
  ChunkRecord rec;
  rec.pack = id;
  rec.offset = writer.append(hash, enc.flags, static_cast<uint32_t>(raw.size()), enc.payload);
  rec.stored_len = static_cast<uint32_t>(enc.payload.size());
  rec.raw_len = static_cast<uint32_t>(raw.size());
  rec.flags = enc.flags;
  rec.refs = refs;
  PackRecord p = writer.seal();
  IndexBatch batch;
  // A patch rewritten whole no longer holds its base: the reference goes in the same write.
  ChunkRefUpdates bases(*index_);
  std::optional<ChunkRecord> old;
  try {
    old = chunk(hash);
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kCorrupt) throw;  // a malformed record: nothing to release
  }
  if (old && is_patch(old->flags)) bases.unref(as_view(old->base));
  bases.write_to(batch);
  batch.put(chunk_key(hash), encode(rec));
  batch.put(pack_key(id), encode(p));
  batch.put(counter_key(kCounterNextPack), encode_u64(id + 1));
  index_->write(batch, Sync::kYes, "rewrite chunk " + to_hex(hash));
  crash_points_.reached("repair.chunk_rewritten");
}

}  // namespace rbdvault::store
