// Recovery at a writer's open (docs/format.md §7.3): what a killed writer left is rolled back
// (its uncommitted entries and their chunk references, packs the index does not know) or, when its
// manifest was put, rolled forward (manifest_ops.cc); an interrupted forget is completed.
#include <spdlog/spdlog.h>

#include "store/index.h"
#include "store/manifest.h"
#include "store/object_store.h"
#include "store/ref_updates.h"
#include "store/store.h"

namespace rbdvault::store {

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
      spdlog::warn("store {}: removing uncommitted pack file {}", Store::name(), file);
      try {
        objects_->remove(name);
      } catch (const StoreError& e) {
        spdlog::warn("store {}: {}; left for the next writer", Store::name(), e.what());
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
        spdlog::warn("store {}: a revision record is damaged ({}); scrub reports it", Store::name(), e.what());
      }
    }
    it.check("scan revisions");
  }
  for (auto& r : forgetting) {
    spdlog::warn("store {}: completing interrupted forget of revision {}", Store::name(), r.id);
    const uint64_t id = r.id;
    try {
      finish_forget(std::move(r));
    } catch (const StoreError& e) {
      // Damage in the image's block map: the revision stays hidden (forgetting) and the next
      // writer tries again; writers and repair must not be locked out meanwhile.
      if (e.kind() != StoreError::Kind::kCorrupt) throw;
      spdlog::warn("store {}: the interrupted forget of revision {} cannot be completed ({}); run rbdvault scrub "
                   "and rebuild-index",
                   Store::name(), id, e.what());
    }
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
    spdlog::warn("store {}: removing a damaged unfinished-revision mark of committed revision {}", Store::name(), rev);
    index_->remove(pending_key(rev), Sync::kYes, "remove mark of revision " + std::to_string(rev));
    return;
  }
  // Its manifest, the data area's commit point, may have been put: then the revision is completed
  // from it. A manifest that cannot complete it goes before the rollback, or a rebuild of the index
  // would bring the rolled-back revision back under its successors.
  if (!manifest_generations(rev).empty()) {
    if (const std::optional<uint64_t> image = manifest_image(rev); image && roll_forward(PendingRecord{rev, *image}))
      return;
    remove_manifests(rev, UINT32_MAX);
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

// The image the newest manifest generation of `rev` names, if it is readable and names `rev`.
std::optional<uint64_t> Store::manifest_image(uint64_t rev) {
  const std::vector<uint32_t> gens = manifest_generations(rev);
  if (gens.empty()) return std::nullopt;
  try {
    auto obj = objects_->open(manifest_name(rev, gens.back()));
    const ManifestReader m(*obj);
    if (m.tail().rev.id == rev) return m.tail().rev.image;
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kCorrupt && e.kind() != StoreError::Kind::kNotFound) throw;
  }
  return std::nullopt;
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

}  // namespace rbdvault::store
