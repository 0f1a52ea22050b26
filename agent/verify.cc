#include "agent/verify.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <optional>
#include <random>
#include <set>

#include "rbd/cluster.h"
#include "rbd/error.h"
#include "rbd/image.h"
#include "store/chunk_codec.h"
#include "store/store.h"

namespace rbdvault::agent {
namespace {

bool all_zero(std::string_view d) { return d.empty() || (d[0] == 0 && std::equal(d.begin() + 1, d.end(), d.begin())); }

// Opens the revision's snapshot, insisting it is the very snapshot the revision was read from.
rbd::Image open_source(rbd::Cluster& cluster, const store::RevisionRecord& rev) {
  rbd::Image img = rbd::Image::open(cluster, rev.pool, rev.name, rev.snap_name, /*read_only=*/true);
  rbd::ImageInfo info = img.info();
  auto snap = img.find_snapshot(rev.snap_name);
  if (info.id != rev.ceph_image_id || !snap || snap->id != rev.snap_id)
    throw rbd::CephError("snapshot " + rev.pool + "/" + rev.name + "@" + rev.snap_name + " is not the one revision " +
                             std::to_string(rev.id) + " was taken from (image re-created?)",
                         -ENOENT);
  return img;
}

}  // namespace

VerifyResult verify_revision(rbd::Cluster& cluster, store::ReadOnlyStore& store, const store::RevisionRecord& rev,
                             const VerifyOptions& options) {
  rbd::Image img = open_source(cluster, rev);
  const uint64_t bs = store.block_size();
  const uint64_t nblocks = store.blocks_for(rev.size);
  std::mt19937_64 rng(options.seed ? options.seed : std::random_device{}());
  std::bernoulli_distribution pick(std::clamp(options.sample_percent, 0.0, 100.0) / 100.0);
  VerifyResult result;
  rbd::AsyncReader reader(img, options.reads_in_flight, [&](uint64_t, uint64_t block, std::string_view data) {
    std::string padded(data);
    padded.resize(bs, '\0');
    std::optional<store::Hash> actual;
    if (!all_zero(padded)) actual = store::sha256(padded);
    ++result.blocks_compared;
    // Compare with the stored data itself, not only the index: a chunk that no longer reads back
    // (corrupt, missing) is a mismatch too.
    std::optional<store::Hash> stored = store.block_content(rev.image, block, rev.id);
    bool same = actual == stored;
    if (same && stored) {
      try {
        same = store.read_chunk(*stored) == padded;
      } catch (const store::StoreError& e) {
        spdlog::warn("verify {}/{}@{} block {}: {}", rev.pool, rev.name, rev.id, block, e.what());
        same = false;
      }
    }
    if (!same) {
      if (result.first_mismatches.size() < 10) result.first_mismatches.push_back(block);
      ++result.mismatches;
    }
  });
  auto submit = [&](uint64_t b) { reader.submit(b * bs, std::min<uint64_t>(bs, rev.size - b * bs), b); };
  uint64_t submitted = 0;
  for (uint64_t b = 0; b < nblocks; ++b) {
    if (options.sample_percent < 100 && !pick(rng)) continue;
    submit(b);
    ++submitted;
  }
  // A small sample of a small image can pick nothing; a check must check something.
  if (submitted == 0 && nblocks > 0) submit(std::uniform_int_distribution<uint64_t>(0, nblocks - 1)(rng));
  reader.drain();
  if (result.blocks_compared == 0 && rev.size > 0)
    throw std::runtime_error("verify " + rev.pool + "/" + rev.name + "@" + std::to_string(rev.id) +
                             ": no block was compared; nothing is verified");
  spdlog::info("verify {}/{}@{}: {} blocks compared with {}, {} mismatches", rev.pool, rev.name, rev.id,
               result.blocks_compared, rev.snap_name, result.mismatches);
  return result;
}

namespace {

bool is_patch_chunk(store::MaintenanceStore& store, const store::Hash& hash) {
  try {
    const std::optional<store::ChunkRecord> rec = store.chunk(hash);
    return rec && store::is_patch(rec->flags);
  } catch (const store::StoreError& e) {
    if (e.kind() != store::StoreError::Kind::kCorrupt) throw;
    return false;  // a malformed record: repaired as a full chunk
  }
}

bool reads_again(store::MaintenanceStore& store, const store::Hash& hash) {
  try {
    (void)store.read_chunk(hash);
    return true;
  } catch (const store::StoreError& e) {
    if (e.kind() != store::StoreError::Kind::kCorrupt) throw;
    return false;
  }
}

// Full chunks before patches. A patch damaged only through its base reads again once the base is
// rewritten, and needs nothing more; a patch rewritten whole releases its base reference, which a
// base rewritten after it would put back (its count was taken before either).
std::vector<store::MaintenanceStore::DamagedChunk> full_chunks_first(
    store::MaintenanceStore& store, std::vector<store::MaintenanceStore::DamagedChunk> damaged) {
  std::stable_partition(damaged.begin(), damaged.end(), [&](const auto& d) { return !is_patch_chunk(store, d.hash); });
  return damaged;
}

}  // namespace

RepairResult repair_store(rbd::Cluster* cluster, store::MaintenanceStore& store) {
  const store::MaintenanceStore::Exclusive alone = store.exclusive("repair");  // no revision can begin meanwhile
  RepairResult result;
  const uint64_t bs = store.block_size();
  std::map<uint64_t, std::vector<store::RevisionRecord>> revs_by_image;
  for (auto& r : store.revisions()) revs_by_image[r.image].push_back(r);
  std::set<uint64_t> still_damaged;
  for (const auto& d : full_chunks_first(store, store.find_damaged_chunks())) {
    ++result.damaged_chunks;
    const std::string name = store::to_hex(d.hash).substr(0, 16);
    if (is_patch_chunk(store, d.hash) && reads_again(store, d.hash)) {
      ++result.repaired_with_base;
      spdlog::info("repair: patch chunk {} reads correctly again, now that its base is repaired", name);
      continue;
    }
    std::optional<std::string> good;
    std::set<uint64_t> readers;  // revisions reading the chunk
    // Source first: a revision reading the chunk whose snapshot still exists.
    for (auto& [image, block, entry_rev] : d.uses) {
      for (auto& r : revs_by_image[image]) {
        if (r.id < entry_rev || block >= store.blocks_for(r.size)) continue;
        if (store.block_content(image, block, r.id) != d.hash) continue;
        readers.insert(r.id);
        if (good || !cluster) continue;
        try {
          rbd::Image img = open_source(*cluster, r);
          std::string buf(bs, '\0');
          size_t n = img.read(block * bs, std::min<uint64_t>(bs, r.size - block * bs), buf.data());
          std::fill(buf.begin() + static_cast<long>(n), buf.end(), '\0');
          if (store::sha256(buf) == d.hash) {
            good = std::move(buf);
            ++result.repaired_from_source;
            spdlog::info("repair: chunk {} re-read from {}/{}@{} block {}", name, r.pool, r.name, r.snap_name, block);
          } else {
            spdlog::info("repair: {}/{}@{} block {} no longer holds chunk {}", r.pool, r.name, r.snap_name, block,
                         name);
          }
        } catch (const rbd::CephError& e) {
          spdlog::debug("repair: no source for chunk {} in revision {}: {}", name, r.id, e.what());
        }
      }
    }
    if (!good) {
      good = store.find_chunk_copy(d.hash);
      if (good) {
        ++result.repaired_from_copy;
        spdlog::info("repair: chunk {} restored from an intact copy in the store", name);
      }
    }
    if (good) {
      store.rewrite_chunk(d.hash, *good, d.entries);
    } else {
      result.unrepaired.push_back("chunk " + name + " (" + d.problem + ")");
      still_damaged.insert(readers.begin(), readers.end());
    }
  }
  result.damaged_revisions.assign(still_damaged.begin(), still_damaged.end());
  spdlog::info("repair {}: {} damaged chunks, {} re-read from Ceph, {} from copies, {} not repairable",
               store.name(), result.damaged_chunks, result.repaired_from_source, result.repaired_from_copy,
               result.unrepaired.size());
  return result;
}

}  // namespace rbdvault::agent
