// Keeping the revision manifests of the data area in step with the index (docs/format.md §16):
// the roll-forward of a commit whose manifest was put, new generations for forget and for flag
// changes, and the clean-up of a step a crash interrupted.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "store/index.h"
#include "store/manifest.h"
#include "store/object_store.h"
#include "store/store.h"

namespace rbdvault::store {
namespace {

std::string revision_prefix(uint64_t revision) {
  std::string name = manifest_name(revision, 0);
  return name.substr(0, name.size() - 8);  // "manifests/<16 hex>."
}

}  // namespace

std::vector<uint32_t> Store::manifest_generations(uint64_t revision) {
  std::vector<uint32_t> gens;
  for (const std::string& name : objects_->list(revision_prefix(revision)))
    if (auto p = parse_manifest_name(name); p && p->first == revision) gens.push_back(p->second);
  std::sort(gens.begin(), gens.end());
  return gens;
}

void Store::remove_manifests(uint64_t revision, uint32_t below) {
  for (uint32_t g : manifest_generations(revision))
    if (g < below) objects_->remove(manifest_name(revision, g));
}

void Store::put_manifest_from_index(const RevisionRecord& rec, uint32_t generation,
                                    const std::vector<uint64_t>& absorbed) {
  auto sink = objects_->create(manifest_name(rec.id, generation));
  ManifestEncoder enc(*sink);
  IndexCursor it = index_->scan(block_prefix(rec.image), Caching::kBypass);
  for (; it.valid(); it.next()) {
    auto k = parse_block_key(it.key());
    if (!k) throw StoreError(StoreError::Kind::kCorrupt, "malformed block map key");
    if (k->rev != rec.id) continue;
    std::optional<Hash> h;
    if (it.value().size() == 32) {
      h.emplace();
      std::memcpy(h->data(), it.value().data(), 32);
    } else if (!it.value().empty()) {
      throw StoreError(StoreError::Kind::kCorrupt,
                       "block map entry of revision " + std::to_string(rec.id) + " is neither a hash nor empty");
    }
    enc.add(k->block, h);
  }
  it.check("scan block map");
  RevisionRecord r = rec;
  r.flags &= ~kRevisionForgetting;
  enc.finish(ManifestTail{r, generation, absorbed});
  sink->commit();
}

bool Store::roll_forward(const PendingRecord& p) {
  const std::vector<uint32_t> gens = manifest_generations(p.revision);
  if (gens.empty()) return false;
  const std::string name = manifest_name(p.revision, gens.back());
  try {
    auto obj = objects_->open(name);
    const ManifestReader m(*obj);
    const RevisionRecord& rec = m.tail().rev;
    if (rec.id != p.revision || rec.image != p.image)
      throw StoreError(StoreError::Kind::kCorrupt, "it names revision " + std::to_string(rec.id));
    IndexBatch batch;
    batch.put(revision_key(rec.id), encode(rec));
    batch.put(image_rev_key(rec.image, rec.id), {});
    batch.remove(pending_key(rec.id));
    index_->write(batch, Sync::kYes, "complete the commit of revision " + std::to_string(rec.id));
    spdlog::warn("store {}: completed the commit of revision {} from its manifest", Store::name(), rec.id);
    return true;
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kCorrupt) throw;
    spdlog::warn("store {}: the manifest of unfinished revision {} is damaged ({}); rolling the revision back",
                 dir_.string(), p.revision, e.what());
    remove_manifests(p.revision, UINT32_MAX);
    return false;
  }
}

// Every multi-generation step (forget, a flag change) puts its new generation first (the commit
// point) and removes the old ones last, so several generations of one revision mean a step was
// cut short after its commit point: finish it from the newest generation. Only those are read, so
// this costs a listing, not a read of every manifest.
void Store::tidy_manifests() {
  std::map<uint64_t, std::vector<uint32_t>> gens;
  for (const std::string& name : objects_->list(std::string(kManifestPrefix)))
    if (auto p = parse_manifest_name(name)) gens[p->first].push_back(p->second);
  for (auto& [rev, g] : gens) {
    if (g.size() < 2) continue;
    const uint32_t newest = *std::max_element(g.begin(), g.end());
    ManifestTail tail;
    try {
      auto obj = objects_->open(manifest_name(rev, newest));
      tail = ManifestReader(*obj).tail();
    } catch (const StoreError& e) {
      if (e.kind() != StoreError::Kind::kCorrupt) throw;
      spdlog::warn("store {}: manifest generation {} of revision {} is damaged ({}); left for scrub", Store::name(),
                   newest, rev, e.what());
      continue;
    }
    for (uint64_t gone : tail.absorbed) remove_manifests(gone, UINT32_MAX);
    // A flag change whose index write did not happen: the manifest is its commit point.
    if (auto cur = revision(rev); cur && !(cur->flags & kRevisionForgetting) && cur->flags != tail.rev.flags) {
      cur->flags = tail.rev.flags;
      index_->put(revision_key(rev), encode(*cur), Sync::kYes, "update revision " + std::to_string(rev));
    }
    remove_manifests(rev, newest);
    spdlog::warn("store {}: completed an interrupted manifest update of revision {}", Store::name(), rev);
  }
}

void Store::rewrite_flags(RevisionRecord rev, const char* crash_point) {
  const std::vector<uint32_t> gens = manifest_generations(rev.id);
  const uint32_t next = gens.empty() ? 0 : gens.back() + 1;
  put_manifest_from_index(rev, next, {});
  crash_points_.reached(crash_point);
  index_->put(revision_key(rev.id), encode(rev), Sync::kYes, "update revision " + std::to_string(rev.id));
  remove_manifests(rev.id, next);
}

}  // namespace rbdvault::store
