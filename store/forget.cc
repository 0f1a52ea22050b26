// Removing revisions: forget and protect.
#include <spdlog/spdlog.h>

#include <cstring>
#include <unordered_map>

#include "store/index.h"
#include "store/ref_updates.h"
#include "store/store.h"

namespace rbdvault::store {
namespace {

constexpr uint64_t kForgetBatchEntries = 100000;

}  // namespace

void Store::set_protected(uint64_t id, bool on) {
  if (mode_ != OpenMode::kWriter) throw StoreError(StoreError::Kind::kInvalid, "store opened read-only");
  auto rev = revision(id);
  if (!rev || (rev->flags & kRevisionForgetting))
    throw StoreError(StoreError::Kind::kNotFound, "revision " + std::to_string(id) + " does not exist");
  rev->flags = on ? (rev->flags | kRevisionProtected) : (rev->flags & ~kRevisionProtected);
  rewrite_flags(*rev, "protect.manifest_put");
}

void Store::mark_verify_failed(uint64_t id) {
  if (mode_ != OpenMode::kWriter) throw StoreError(StoreError::Kind::kInvalid, "store opened read-only");
  auto rev = revision(id);
  if (!rev || (rev->flags & kRevisionForgetting))
    throw StoreError(StoreError::Kind::kNotFound, "revision " + std::to_string(id) + " does not exist");
  rev->flags |= kRevisionVerifyFailed;
  rewrite_flags(*rev, "verify_failed.manifest_put");
}

void Store::forget(uint64_t id) {
  if (mode_ != OpenMode::kWriter) throw StoreError(StoreError::Kind::kInvalid, "store opened read-only");
  const Exclusive alone = exclusive("forget");
  auto rev = revision(id);
  if (!rev || (rev->flags & kRevisionForgetting))
    throw StoreError(StoreError::Kind::kNotFound, "revision " + std::to_string(id) + " does not exist");
  const std::string spec = rev->pool + "/" + rev->name + "@" + std::to_string(id);
  if (rev->flags & kRevisionProtected)
    throw StoreError(StoreError::Kind::kInvalid, "revision " + spec + " is protected; unprotect it first");
  auto latest = latest_revision(rev->image);
  if (latest && latest->id == id)
    throw StoreError(StoreError::Kind::kInvalid,
                     "revision " + spec + " is the newest of its image; its snapshot is the base of the next backup");
  // Step 1, durable: the revision disappears from view. Everything after is idempotent and is
  // completed by recover() if we are killed.
  rev->flags |= kRevisionForgetting;
  index_->put(revision_key(id), encode(*rev), Sync::kYes, "mark revision " + spec + " for removal");
  crash_points_.reached("forget.marked");
  finish_forget(*rev);
  spdlog::info("forget {}: removed", spec);
}

// Moves or drops the revision's block map entries, then removes its records. For each block where
// the revision R has an entry: if the next revision C of the image has its own entry, R's entry
// served only R and is dropped (one chunk reference less); otherwise C (and later revisions, until
// they overwrite the block) read R's entry, so it moves to C unchanged. No other revision's view
// changes. Batches are atomic and each leaves a consistent map, so a rerun continues where a killed
// one stopped.
//
// Damage does not stop it (it runs in every writer's recovery; an error would lock writers out):
// a later revision listed without a readable record is passed over, and if no successor is left at
// all, nothing reads R's entries any more and all of them are dropped.
void Store::finish_forget(RevisionRecord rev) {
  uint64_t child = 0;
  std::optional<RevisionRecord> c;
  {
    const std::string prefix = image_rev_prefix(rev.image);
    IndexCursor it = index_->cursor(prefix);
    for (it.seek(image_rev_key(rev.image, rev.id + 1)); it.valid(); it.next()) {
      const auto id = parse_image_rev_key(it.key());
      try {
        if (id) c = revision(*id);
      } catch (const StoreError& e) {
        if (e.kind() != StoreError::Kind::kCorrupt) throw;
      }
      if (c) {
        child = *id;
        break;
      }
      spdlog::warn("forget revision {}: a later revision of its image is listed without a readable record; passed over",
                   rev.id);
    }
    it.check("find next revision");
  }
  if (child == 0)
    spdlog::warn("forget revision {}: no later revision of its image is left; its block map entries serve no other "
                 "revision and are dropped",
                 rev.id);

  IndexBatch batch;
  ChunkRefUpdates chunks(*index_);  // reference counts lowered by this batch
  uint64_t moved = 0, dropped = 0;
  auto flush = [&](bool sync) {
    chunks.write_to(batch);
    index_->write(batch, sync ? Sync::kYes : Sync::kNo, "forget revision " + std::to_string(rev.id));
    batch.clear();
    crash_points_.reached(sync ? "forget.done" : "forget.batch");
  };

  // The scan reads a snapshot taken when it starts; our own batches do not disturb it.
  const std::string prefix = block_prefix(rev.image);
  IndexCursor it = index_->scan(prefix);
  std::optional<std::string> pending_key, pending_value;  // R's entry of the current block
  uint64_t pending_block = 0;
  bool child_has_entry = false;
  auto settle = [&] {
    if (!pending_key) return;
    batch.remove(*pending_key);
    if (child == 0 || child_has_entry) {
      if (pending_value->size() == 32) chunks.unref(*pending_value);
      ++dropped;
    } else {
      batch.put(block_key(rev.image, pending_block, child), *pending_value);
      ++moved;
    }
    pending_key.reset();
    if (batch.count() >= kForgetBatchEntries) flush(false);
  };
  for (; it.valid(); it.next()) {
    auto k = parse_block_key(it.key());
    if (!k) throw StoreError(StoreError::Kind::kCorrupt, "malformed block map key");
    if (pending_key && k->block != pending_block) settle();
    if (k->rev == rev.id) {
      pending_key = std::string(it.key());
      pending_value = std::string(it.value());
      pending_block = k->block;
      child_has_entry = false;
    } else if (pending_key && k->rev > rev.id && k->rev <= child) {
      child_has_entry = true;  // the child reads this newer entry (of the child or a revision passed over)
    }
  }
  it.check("scan block map");
  settle();

  // The data area's commit point: the successor's next manifest generation holds its entries as
  // they are now (the moved ones included) and names R as absorbed (docs/format.md §16.3).
  uint32_t child_generation = 0;
  if (c) {
    if (batch.count() > 0) flush(false);
    c->parent = rev.parent;
    const std::vector<uint32_t> gens = manifest_generations(child);
    child_generation = gens.empty() ? 0 : gens.back() + 1;
    put_manifest_from_index(*c, child_generation, {rev.id});
    crash_points_.reached("forget.manifest_put");
    batch.put(revision_key(child), encode(*c));
  }
  batch.remove(revision_key(rev.id));
  batch.remove(image_rev_key(rev.image, rev.id));
  flush(true);
  remove_manifests(rev.id, UINT32_MAX);
  if (c) remove_manifests(child, child_generation);
  spdlog::debug("forget revision {}: {} entries moved to {}, {} dropped", rev.id, moved, child, dropped);
}

}  // namespace rbdvault::store
