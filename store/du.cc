// Space accounting (du), docs/format.md §12.

#include <cstring>
#include <map>

#include "store/chunk_scan.h"
#include "store/external_sort.h"
#include "store/gc.h"
#include "store/index.h"
#include "store/store.h"

namespace rbdvault::store {
namespace {

// hash, then a be64 id (image key or revision id): block map entries naming a chunk, per image
// and per revision, counted by external sorts so that memory does not grow with the store.
using Sorter = ExternalSorter<40>;

Sorter::Key sort_key(const char* hash, uint64_t id) {
  Sorter::Key k;
  std::memcpy(k.data(), hash, 32);
  put_be(k.data() + 32, id, 8);
  return k;
}

}  // namespace

StoreUsage du(Store& store, const std::string& only_image) {
  StoreUsage usage;
  Sorter per_image;    // (hash, image key): entries of the image naming the chunk
  Sorter per_dropped;  // (hash, revision): entries forgetting the revision would drop
  std::map<uint64_t, size_t> image_index;                    // image key -> usage.images
  std::map<uint64_t, std::pair<size_t, size_t>> rev_index;  // revision -> (image, per_revision)
  std::map<uint64_t, double> share;                          // image key -> stored bytes
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
    for (size_t i = 0; i < revs.size(); ++i) {
      if (i + 1 < revs.size()) next[revs[i].id] = revs[i + 1].id;
      rev_index[revs[i].id] = {usage.images.size(), i};
      iu.per_revision.push_back(RevisionUsage{revs[i].id, 0});
    }
    image_index[image.key] = usage.images.size();
    usage.images.push_back(std::move(iu));
    // Forgetting R drops exactly R's entries that the next revision overwrites (see forget).
    IndexCursor it = store.index().scan(block_prefix(image.key), Caching::kBypass);
    std::optional<BlockKey> prev;
    std::string prev_value;
    for (; it.valid(); it.next()) {
      auto k = parse_block_key(it.key());
      if (!k) throw StoreError(StoreError::Kind::kCorrupt, "malformed block map key");
      if (it.value().size() == 32) per_image.add(sort_key(it.value().data(), image.key));
      if (prev && prev->block == k->block && prev_value.size() == 32) {
        auto n = next.find(prev->rev);
        if (n != next.end() && n->second == k->rev) per_dropped.add(sort_key(prev_value.data(), prev->rev));
      }
      prev = *k;
      prev_value = std::string(it.value());
    }
    it.check("scan block map");
  }

  // One pass over the chunk records, in hash order, settles both sums and the store totals.
  ChunkRecordCursor cursor(store.index());
  Sorter::Entry a{}, d{};
  bool have_a = per_image.next(a), have_d = per_dropped.next(d);
  auto before = [](const Sorter::Key& k, const Hash& h) { return std::memcmp(k.data(), h.data(), 32) < 0; };
  auto names = [](const Sorter::Key& k, const Hash& h) { return std::memcmp(k.data(), h.data(), 32) == 0; };
  auto unrecorded = [](const Sorter::Key& k) {
    Hash h;
    std::memcpy(h.data(), k.data(), 32);
    return StoreError(StoreError::Kind::kCorrupt, "chunk " + to_hex(h) + " is referenced but has no index record");
  };
  for (; cursor.valid(); cursor.next()) {
    const Hash& h = cursor.hash();
    if (have_a && before(a.key, h)) throw unrecorded(a.key);
    if (have_d && before(d.key, h)) throw unrecorded(d.key);
    const bool used = (have_a && names(a.key, h)) || (have_d && names(d.key, h));
    if (!cursor.record()) {
      if (used) throw StoreError(StoreError::Kind::kCorrupt, cursor.error());
      continue;
    }
    const ChunkRecord& c = *cursor.record();
    const uint64_t bytes = kChunkHeaderSize + c.stored_len;
    (c.refs ? usage.referenced_bytes : usage.unreferenced_bytes) += bytes;
    for (; have_a && names(a.key, h); have_a = per_image.next(a))
      if (c.refs) share[get_be(a.key.data() + 32, 8)] += double(bytes) * double(a.count) / double(c.refs);
    for (; have_d && names(d.key, h); have_d = per_dropped.next(d)) {
      if (c.refs != d.count) continue;
      auto [img, r] = rev_index.at(get_be(d.key.data() + 32, 8));
      usage.images[img].per_revision[r].unique_bytes += bytes;
    }
  }
  if (have_a) throw unrecorded(a.key);
  if (have_d) throw unrecorded(d.key);
  for (auto& [key, bytes] : share) usage.images[image_index.at(key)].stored_bytes = static_cast<uint64_t>(bytes + 0.5);

  usage.pack_bytes = pack_bytes_on_disk(store);
  usage.index_bytes = index_bytes_on_disk(store);
  return usage;
}

}  // namespace rbdvault::store
