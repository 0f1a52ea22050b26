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
#include "store/pack_identities.h"
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

// The index a refresh replaces, and the identities of the packs its build read whole.
struct PreviousBuild {
  std::unique_ptr<Index> index;
  PackIdentities identities;
  [[nodiscard]] bool same_pack(uint32_t id, const std::string& identity) const {
    const auto it = identities.find(id);
    return it != identities.end() && it->second == identity && index->pack_record(id).has_value();
  }
};

class Builder {
 public:
  Builder(Index& index, ObjectStore& objects) : index_(index), objects_(objects) {}

  // Chunk and pack records: the first intact copy of each chunk (content checked against its
  // SHA-256), refs 0 for now. With `previous` (a refresh), a pack that is still the object the
  // previous build read whole is not read again: its records come from the previous index, after
  // every pack that is read (so a copy read now, checked, wins over one remembered).
  void scan_packs(Store::RebuildStats& st, const PreviousBuild* previous) {
    std::vector<uint32_t> reused;
    for (const std::string& name : objects_.list("data/")) {
      const auto id = pack_of(std::string_view(name).substr(5));
      if (!id) continue;
      max_pack_ = std::max(max_pack_, *id);
      const std::optional<std::string> identity = objects_.identity(name);
      if (previous && identity && previous->same_pack(*id, *identity)) {
        reused.push_back(*id);
        identities_[*id] = *identity;
        continue;
      }
      const uint64_t skipped_before = st.chunks_skipped;
      read_pack(name, *id, st);
      // Remembered only when read whole and intact: a damaged pack is read (and reported) again.
      if (identity && st.chunks_skipped == skipped_before && valid_identity(*identity)) identities_[*id] = *identity;
    }
    write();
    if (previous) reuse_packs(*previous, reused, st);
    reused_packs_.insert(reused.begin(), reused.end());
  }

  void read_pack(const std::string& name, uint32_t id, Store::RebuildStats& st) {
  auto obj = objects_.open(name);
  if (obj->size() < kPackHeaderSize) {
    spdlog::warn("rebuild-index: {} is shorter than a pack header; left out", name);
    return;
  }
  uint64_t chunks = 0;
  const ReadAt read = [&](uint64_t off, char* buf, size_t n) { return obj->read_at(off, buf, n); };
  try {
    scan_pack(obj->size(), read, id, [&](uint64_t off, const ChunkHeader& h) {
      ++chunks;
      add_chunk(*obj, id, off, h, st);
      return true;
    });
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kCorrupt) throw;
    spdlog::warn("rebuild-index: {}: {}; its chunks from there on are left out", name, e.what());
    ++st.chunks_skipped;  // at least one: the command must not exit 0 with chunks missing
  }
  batch_.put(pack_key(id), encode(PackRecord{obj->size(), chunks}));
  ++st.packs;
  maybe_write();
  }

  // The previous index's records of the reused packs, for chunks no pack read now holds.
  void reuse_packs(const PreviousBuild& previous, const std::vector<uint32_t>& packs, Store::RebuildStats& st) {
    const std::unordered_set<uint32_t> reused(packs.begin(), packs.end());
    IndexCursor c = previous.index->scan(std::string_view(&kKeyChunk, 1), Caching::kBypass);
    for (; c.valid(); c.next()) {
      ChunkRecord rec = decode_chunk_record(c.value());
      const Hash hash = chunk_hash_of_key(c.key());
      if (!reused.count(rec.pack) || recorded(hash)) continue;
      rec.refs = 0;  // counted again from the manifests
      pending_.emplace(hash, rec.flags);
      batch_.put(chunk_key(hash), encode(rec));
      ++st.chunks;
      maybe_write();
    }
    c.check("read the previous index");
    for (uint32_t id : packs) {
      batch_.put(pack_key(id), encode(*previous.index->pack_record(id)));
      ++st.packs;
      ++st.packs_reused;
    }
    write();
  }

  // Once every pack's chunks are recorded (a base may lie in a later pack than its patch): each
  // patch is verified as every read verifies it (read again, applied to its recorded base, checked
  // against its hash; the scan could only check its structure), and then holds a reference on its
  // base. A patch that fails is left out like any damaged chunk.
  void count_patch_bases(Store::RebuildStats& st) {
    PackReader packs(objects_);
    IndexBatch fixes;  // a patch that does not resolve: replaced by an intact later copy, or removed
    for (ChunkRecordCursor cursor(index_); cursor.valid(); cursor.next()) {
      if (!cursor.record() || !is_patch(cursor.record()->flags)) continue;
      const ChunkRecord& rec = *cursor.record();
      if (reused_packs_.count(rec.pack)) {
        // Checked when its pack was read; its base must still be recorded as a full chunk, or the
        // refresh is not trusted (unrecorded: every pack is read).
        const std::optional<ChunkRecord> base = index_.chunk_record(rec.base);
        if (!base || is_patch(base->flags)) ++unrecorded_;
        else ++refs_[rec.base];
        if (refs_.size() >= kBatch) write();
        continue;
      }
      std::optional<ChunkRecord> chosen;
      if (patch_resolves(packs, cursor.hash(), rec)) {
        chosen = rec;
      } else {
        ++st.chunks_skipped;
        chosen = intact_spare(packs, cursor.hash(), st);
        spdlog::warn("rebuild-index: patch chunk {} does not resolve against its base; {}", to_hex(cursor.hash()),
                     chosen ? "another copy in pack " + std::to_string(chosen->pack) + " does" : "left out");
        if (chosen)
          fixes.put(chunk_key(cursor.hash()), encode(*chosen));
        else
          fixes.remove(chunk_key(cursor.hash()));
      }
      if (!chosen) {
        --st.chunks;
        continue;
      }
      if (is_patch(chosen->flags)) ++refs_[chosen->base];
      if (refs_.size() >= kBatch) write();
    }
    write();
    if (fixes.count()) index_.write(fixes, Sync::kNo, "write the new index");
    spares_.clear();
  }

  // Verified as every read verifies a patch: applied to its recorded base (itself a full chunk of
  // the same length), the result has the patch's hash.
  bool patch_resolves(PackReader& packs, const Hash& hash, const ChunkRecord& rec) {
    try {
      const Patch patch = packs.read_patch(hash, rec);
      const std::optional<ChunkRecord> base = index_.chunk_record(patch.base);
      if (!base || is_patch(base->flags) || base->raw_len != rec.raw_len) return false;
      std::string content = packs.read_unhashed(patch.base, *base);  // the result's hash covers it
      apply_patch(patch, content);
      return sha256(content) == hash;
    } catch (const StoreError& e) {
      if (e.kind() != StoreError::Kind::kCorrupt) throw;
      return false;
    }
  }

  // A later copy of a chunk whose first copy, a patch, does not resolve: a full copy (its content
  // was checked by the scan) or a patch that resolves. nullopt when none is intact; each damaged
  // copy tried counts as skipped.
  std::optional<ChunkRecord> intact_spare(PackReader& packs, const Hash& hash, Store::RebuildStats& st) {
    const auto [first, last] = spares_.equal_range(hash);
    for (auto it = first; it != last; ++it) {
      if (!is_patch(it->second.flags) || patch_resolves(packs, hash, it->second)) return it->second;
      ++st.chunks_skipped;
    }
    return std::nullopt;
  }

  // Image, revision and block-map records from the newest intact manifest of each revision that no
  // newer manifest names as absorbed.
  void read_manifests(Store::RebuildStats& st, CrashPoints& crash) {
    std::map<uint64_t, std::vector<uint32_t>> gens;
    for (const std::string& name : objects_.list(std::string(kManifestPrefix))) {
      if (auto p = parse_manifest_name(name)) {
        gens[p->first].push_back(p->second);
        max_rev_ = std::max(max_rev_, p->first);
      }
    }
    crash.reached("rebuild.manifests_listed");
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

  // Block map entries naming a chunk no pack holds intact (0 for a sound store).
  [[nodiscard]] uint64_t unrecorded() const { return unrecorded_; }
  [[nodiscard]] const PackIdentities& identities() const { return identities_; }

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
    const ChunkRecord rec{pack, off, h.stored_len, h.raw_len, h.flags, 0, base};
    if (const std::optional<uint8_t> first = recorded_flags(h.hash)) {
      // A later copy (gc, repair, copy): the first one serves, unless it is a patch whose content
      // count_patch_bases finds damaged; this copy is then the next candidate.
      if (is_patch(*first)) spares_.emplace(h.hash, rec);
      return;
    }
    pending_.emplace(h.hash, h.flags);
    batch_.put(chunk_key(h.hash), encode(rec));
    ++st.chunks;
    maybe_write();
  }

  // Memory stays bounded: only the chunks of the batch being built are held; the rest are looked
  // up in the new index.
  bool recorded(const Hash& h) { return recorded_flags(h).has_value(); }

  // The flags of the copy recorded for h; nullopt when none is.
  std::optional<uint8_t> recorded_flags(const Hash& h) {
    if (const auto it = pending_.find(h); it != pending_.end()) return it->second;
    if (const std::optional<ChunkRecord> rec = index_.chunk_record(h)) return rec->flags;
    return std::nullopt;
  }

  void maybe_write() {
    if (batch_.count() >= kBatch) write();
  }

  // Reference counts gathered since the last write are added to the records as the new index has
  // them; a hash with no intact copy gets none (scrub reports it).
  void write(bool sync = false) {
    for (const auto& [hash, n] : refs_) {
      std::optional<ChunkRecord> rec = index_.chunk_record(hash);
      if (!rec) {
        unrecorded_ += n;
        continue;
      }
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
  std::unordered_map<Hash, uint8_t, HashHasher> pending_;  // chunks recorded in batch_, with their flags
  // Later copies of chunks whose first copy is a patch (only its structure is checked by the scan).
  std::unordered_multimap<Hash, ChunkRecord, HashHasher> spares_;
  uint64_t max_rev_ = 0, max_image_ = 0;
  uint32_t max_pack_ = 0;
  uint64_t unrecorded_ = 0;
  std::unordered_set<uint32_t> reused_packs_;  // packs whose records came from the previous index
  PackIdentities identities_;  // of the packs read whole and intact, or reused
};

// The previous build of a refresh: nullopt (read every pack) without an index or identities.
std::optional<PreviousBuild> open_previous(const fs::path& dir, const std::string& store_id,
                                           const IndexFileSystem& files) {
  auto identities = read_pack_identities(dir, store_id);
  if (!identities || identities->empty() || !fs::exists(dir / "index" / "CURRENT")) return std::nullopt;
  try {
    return PreviousBuild{Index::open_read_only(dir / "index", dir.string(), files), std::move(*identities)};
  } catch (const StoreError& e) {
    spdlog::warn("{}: the previous index cannot be read ({}); reading every pack", dir.string(), e.what());
    return std::nullopt;
  }
}

}  // namespace

RebuildStats rebuild_index(const fs::path& dir, const StoreIo& io, bool reuse_unchanged_packs) {
  return Store::rebuild_index(dir, io, reuse_unchanged_packs);
}

Store::RebuildStats Store::rebuild_index(const fs::path& dir, const StoreIo& io, bool reuse) {
  const StoreMarker marker = parse_store_marker(read_marker_text(dir), dir.string() + ": rbdvault.store");
  if (marker.version < kFormatVersion - 1) throw format_1_error(dir);
  WriterLock lock(dir / "lock", "rbdvault rebuild-index");
  ReaderLock readers(dir / "readers.lock", /*exclusive=*/true, "rebuild-index");
  const std::shared_ptr<ObjectStore> data_area = io.objects ? io.objects : open_object_store(dir);
  ObjectStore& objects = *data_area;
  // The rebuild reads every pack: in a pool, as a reader, so that no gc elsewhere removes them.
  const auto pool_readers = objects.lease_readers("rbdvault rebuild-index", false, {});
  const IndexFileSystem& files = io.index_fs;  // null: RocksDB's own
  const fs::path fresh = dir / "index.rebuild";
  std::optional<PreviousBuild> previous = reuse ? open_previous(dir, marker.store_id, files) : std::nullopt;
  RebuildStats st;
  PackIdentities identities;
  for (;;) {
    remove_index_tree(files, fresh);  // what a killed or failed rebuild left
    st = RebuildStats{};
    std::unique_ptr<Index> index = Index::create(fresh, files);
    Builder b(*index, objects);
    b.scan_packs(st, previous ? &*previous : nullptr);
    b.count_patch_bases(st);
    CrashPoints crash;
    crash.load_environment();
    b.read_manifests(st, crash);
    if (previous && b.unrecorded() > 0) {
      // A remembered pack lacks a chunk the block map needs (a store changed in a way the
      // identities did not show): the refresh is not trusted, every pack is read.
      spdlog::warn("{}: {} block map entries name chunks the reused packs do not hold; reading every pack",
                   dir.string(), b.unrecorded());
      index->close("close the new index");
      previous.reset();
      continue;
    }
    b.write_counters();
    index->close("close the new index");
    identities = b.identities();
    break;
  }
  previous.reset();  // the old index is closed before it is swapped out
  sync_index_dir(files, fresh);
  swap_in_index(files, dir, fresh);
  if (!identities.empty()) {
    try {
      write_pack_identities(dir, marker.store_id, identities);
    } catch (const StoreError& e) {  // only a cache: the next refresh reads more
      spdlog::warn("{}", e.what());
    }
  }
  spdlog::info("rebuilt the index of {}: {} images, {} revisions, {} block map entries, {} packs ({} read, {} "
               "unchanged since the last build), {} chunks",
               dir.string(), st.images, st.revisions, st.entries, st.packs, st.packs - st.packs_reused,
               st.packs_reused, st.chunks);
  return st;
}

}  // namespace rbdvault::store
