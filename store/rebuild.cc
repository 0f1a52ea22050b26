// rebuild-index: a new index from the data area alone (docs/format.md §16.4). Pack files give the
// chunk and pack records, the newest intact generation of each revision's manifest gives the image,
// revision and block-map records; reference counts are counted from the block map. The new index is
// built beside the old one and swapped in by one atomic rename.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <stdio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "store/chunk_codec.h"
#include "store/chunk_scan.h"
#include "store/index.h"
#include "store/index_files.h"
#include "store/open_object_store.h"
#include "store/lock.h"
#include "store/manifest.h"
#include "store/pack.h"
#include "store/posix_file.h"
#include "store/store.h"
#include "store/store_internal.h"

namespace fs = std::filesystem;

namespace rbdvault::store {
namespace {

constexpr size_t kBatch = 16384;

// "%08x.pack" -> the id; nullopt for any other name.
std::optional<uint32_t> pack_of(std::string_view name) {
  if (name.size() != 13 || !name.ends_with(".pack")) return std::nullopt;
  uint32_t id = 0;
  for (size_t i = 0; i < 8; ++i) {
    const char c = name[i];
    const int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (d < 0) return std::nullopt;
    id = id * 16 + d;
  }
  return id;
}

class Builder {
 public:
  Builder(Index& index, ObjectStore& objects) : index_(index), objects_(objects) {}

  // Chunk and pack records: the first intact copy of each chunk (content checked against its
  // SHA-256), refs 0 for now.
  void scan_packs(Store::RebuildStats& st) {
    for (const std::string& name : objects_.list("data/")) {
      const auto id = pack_of(std::string_view(name).substr(5));
      if (!id) continue;
      max_pack_ = std::max(max_pack_, *id);
      auto obj = objects_.open(name);
      if (obj->size() < kPackHeaderSize) {
        spdlog::warn("rebuild-index: {} is shorter than a pack header; left out", name);
        continue;
      }
      uint64_t chunks = 0;
      const ReadAt read = [&](uint64_t off, char* buf, size_t n) { return obj->read_at(off, buf, n); };
      try {
        scan_pack(obj->size(), read, *id, [&](uint64_t off, const ChunkHeader& h) {
          ++chunks;
          add_chunk(*obj, *id, off, h, st);
          return true;
        });
      } catch (const StoreError& e) {
        if (e.kind() != StoreError::Kind::kCorrupt) throw;
        spdlog::warn("rebuild-index: {}: {}; its chunks from there on are left out", name, e.what());
        ++st.chunks_skipped;  // at least one: the command must not exit 0 with chunks missing
      }
      batch_.put(pack_key(*id), encode(PackRecord{obj->size(), chunks}));
      ++st.packs;
      maybe_write();
    }
    write();
  }

  // Once every pack's chunks are recorded (a base may lie in a later pack than its patch): each
  // patch is verified as every read verifies it (read again, applied to its recorded base, checked
  // against its hash; the scan could only check its structure), and then holds a reference on its
  // base. A patch that fails is left out like any damaged chunk.
  void count_patch_bases(Store::RebuildStats& st) {
    PackReader packs(objects_);
    IndexBatch drop;
    for (ChunkRecordCursor cursor(index_); cursor.valid(); cursor.next()) {
      if (!cursor.record() || !is_patch(cursor.record()->flags)) continue;
      const ChunkRecord& rec = *cursor.record();
      bool intact = false;
      try {
        const Patch patch = packs.read_patch(cursor.hash(), rec);
        const std::optional<ChunkRecord> base = index_.chunk_record(patch.base);
        if (base && !is_patch(base->flags) && base->raw_len == rec.raw_len) {
          std::string content = packs.read(patch.base, *base);
          apply_patch(patch, content);
          intact = sha256(content) == cursor.hash();
        }
      } catch (const StoreError& e) {
        if (e.kind() != StoreError::Kind::kCorrupt) throw;
      }
      if (!intact) {
        spdlog::warn("rebuild-index: patch chunk {} does not resolve against its base; left out",
                     to_hex(cursor.hash()));
        drop.remove(chunk_key(cursor.hash()));
        ++st.chunks_skipped;
        --st.chunks;
        continue;
      }
      ++refs_[rec.base];
      if (refs_.size() >= kBatch) write();
    }
    write();
    if (drop.count()) index_.write(drop, Sync::kNo, "write the new index");
  }

  // Image, revision and block-map records from the newest intact manifest of each revision that no
  // newer manifest names as absorbed.
  void read_manifests(Store::RebuildStats& st) {
    std::map<uint64_t, std::vector<uint32_t>> gens;
    for (const std::string& name : objects_.list(std::string(kManifestPrefix))) {
      if (auto p = parse_manifest_name(name)) {
        gens[p->first].push_back(p->second);
        max_rev_ = std::max(max_rev_, p->first);
      }
    }
    std::map<uint64_t, std::string> chosen;  // revision -> manifest name
    std::set<uint64_t> absorbed;
    for (auto& [rev, g] : gens) {
      std::sort(g.rbegin(), g.rend());
      for (uint32_t gen : g) {
        const std::string name = manifest_name(rev, gen);
        try {
          auto obj = objects_.open(name);
          const ManifestReader m(*obj);
          if (m.tail().rev.id != rev) throw StoreError(StoreError::Kind::kCorrupt, "it names another revision");
          for (uint64_t a : m.tail().absorbed) absorbed.insert(a);
          chosen[rev] = name;
          break;
        } catch (const StoreError& e) {
          if (e.kind() != StoreError::Kind::kCorrupt) throw;
          spdlog::warn("rebuild-index: {} is damaged ({}); left out", name, e.what());
          ++st.manifests_skipped;
        }
      }
    }
    std::set<uint64_t> images;
    for (const auto& [rev, name] : chosen) {
      if (absorbed.count(rev)) continue;
      auto obj = objects_.open(name);
      const ManifestReader m(*obj);
      const RevisionRecord& r = m.tail().rev;
      if (images.insert(r.image).second) {
        batch_.put(image_name_key(r.pool, r.name), encode_u64(r.image));
        batch_.put(image_key(r.image), encode(ImageRecord{r.image, r.pool, r.name}));
        max_image_ = std::max(max_image_, r.image);
        ++st.images;
      }
      batch_.put(revision_key(r.id), encode(r));
      batch_.put(image_rev_key(r.image, r.id), {});
      m.for_each_entry([&](uint64_t block, const std::optional<Hash>& h) {
        batch_.put(block_key(r.image, block, r.id), h ? as_view(*h) : std::string_view());
        if (h) ++refs_[*h];
        ++st.entries;
        maybe_write();
      });
      ++st.revisions;
    }
    write();
  }

  void write_counters() {
    batch_.put(counter_key(kCounterNextRevision), encode_u64(max_rev_ + 1));
    batch_.put(counter_key(kCounterNextImage), encode_u64(max_image_ + 1));
    batch_.put(counter_key(kCounterNextPack), encode_u64(uint64_t{max_pack_} + 1));
    write(/*sync=*/true);
  }

 private:
  void add_chunk(const ObjectReader& obj, uint32_t pack, uint64_t off, const ChunkHeader& h, Store::RebuildStats& st) {
    std::string payload(h.stored_len, '\0');  // bounded: scan_pack checked it against raw_len
    bool intact = obj.read_at(off + kChunkHeaderSize, payload.data(), payload.size());
    Hash base{};
    if (intact && is_patch(h.flags)) {
      // A patch's content needs its base, which may lie in a later pack: here only its structure
      // is checked; scrub --deep (and every read) checks the patched content against its hash.
      try {
        base = decode_patch(h.flags, payload, h.raw_len).base;
        intact = base != h.hash;
      } catch (const StoreError& e) {
        if (e.kind() != StoreError::Kind::kCorrupt) throw;
        intact = false;
      }
    } else if (intact) {
      try {
        intact = sha256(decode_chunk(h.flags, payload, h.raw_len)) == h.hash;
      } catch (const StoreError& e) {
        if (e.kind() != StoreError::Kind::kCorrupt) throw;
        intact = false;
      }
    }
    if (!intact) {
      ++st.chunks_skipped;
      return;
    }
    if (recorded(h.hash)) return;  // a later copy (gc, repair); the first one serves
    pending_.insert(h.hash);
    batch_.put(chunk_key(h.hash), encode(ChunkRecord{pack, off, h.stored_len, h.raw_len, h.flags, 0, base}));
    ++st.chunks;
    maybe_write();
  }

  // Memory stays bounded: only the chunks of the batch being built are held; the rest are looked
  // up in the new index.
  bool recorded(const Hash& h) {
    if (pending_.count(h)) return true;
    std::string v;
    return index_.get(chunk_key(h), v, "read chunk record");
  }

  void maybe_write() {
    if (batch_.count() >= kBatch) write();
  }

  // Reference counts gathered since the last write are added to the records as the new index has
  // them; a hash with no intact copy gets none (scrub reports it).
  void write(bool sync = false) {
    for (const auto& [hash, n] : refs_) {
      std::optional<ChunkRecord> rec = index_.chunk_record(hash);
      if (!rec) continue;
      rec->refs += n;
      batch_.put(chunk_key(hash), encode(*rec));
    }
    refs_.clear();
    pending_.clear();
    index_.write(batch_, sync ? Sync::kYes : Sync::kNo, "write the new index");
    batch_.clear();
  }

  struct HashHasher {
    size_t operator()(const Hash& h) const {
      size_t v;
      std::memcpy(&v, h.data(), sizeof(v));
      return v;
    }
  };
  Index& index_;
  ObjectStore& objects_;
  IndexBatch batch_;
  std::unordered_map<Hash, uint64_t, HashHasher> refs_;  // references since the last write
  std::unordered_set<Hash, HashHasher> pending_;         // chunks recorded in batch_
  uint64_t max_rev_ = 0, max_image_ = 0;
  uint32_t max_pack_ = 0;
};

}  // namespace

RebuildStats rebuild_index(const fs::path& dir, const StoreIo& io) { return Store::rebuild_index(dir, io); }

Store::RebuildStats Store::rebuild_index(const fs::path& dir, const StoreIo& io) {
  const StoreMarker marker = parse_store_marker(read_marker_text(dir), dir.string() + ": rbdvault.store");
  if (marker.version < kFormatVersion - 1) throw format_1_error(dir);
  WriterLock lock(dir / "lock", "rbdvault rebuild-index");
  ReaderLock readers(dir / "readers.lock", /*exclusive=*/true);
  const std::shared_ptr<ObjectStore> data_area = io.objects ? io.objects : open_object_store(dir);
  ObjectStore& objects = *data_area;
  const IndexFileSystem& files = io.index_fs;  // null: RocksDB's own
  const fs::path fresh = dir / "index.rebuild";
  remove_index_tree(files, fresh);  // what a killed or failed rebuild left
  RebuildStats st;
  {
    std::unique_ptr<Index> index = Index::create(fresh, files);
    Builder b(*index, objects);
    b.scan_packs(st);
    b.count_patch_bases(st);
    b.read_manifests(st);
    b.write_counters();
    index->close("close the new index");
  }
  sync_index_dir(files, fresh);
  swap_in_index(files, dir, fresh);
  spdlog::info("rebuilt the index of {}: {} images, {} revisions, {} block map entries, {} packs, {} chunks",
               dir.string(), st.images, st.revisions, st.entries, st.packs, st.chunks);
  return st;
}

}  // namespace rbdvault::store
