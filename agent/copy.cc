// rbdvault copy (agent/copy.h). Per image: find where the target's chain of the image stands in the
// source's history, then copy each newer source revision, oldest first, as a delta against the
// target's newest revision: only blocks whose content hash differs get an entry, a chunk the target
// already holds is referenced without being read, the others are read from the source (hash
// checked) and stored. One source revision = one target commit, so a killed copy leaves whole
// revisions only and the next run goes on from the target's newest one.
#include "agent/copy.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <optional>

#include "store/error.h"
#include "store/rados_cache.h"
#include "store/revision_writer.h"

namespace rbdvault::agent {
namespace {

using store::Hash;
using store::RevisionRecord;
using store::Store;
using store::StoreError;

// Blocks compared per step: bounds the memory of the block-map merge whatever the image size.
constexpr uint64_t kWindowBlocks = 4096;

// The same backup in both stores: the revision ids differ (each store numbers its own), the
// snapshot and the image it came from do not.
bool same_revision(const RevisionRecord& s, const RevisionRecord& t) {
  return s.pool == t.pool && s.name == t.name && s.ceph_image_id == t.ceph_image_id && s.snap_id == t.snap_id &&
         s.snap_name == t.snap_name && s.created == t.created;
}

std::vector<RevisionRecord> visible_revisions(Store& st, uint64_t image) {
  std::vector<RevisionRecord> out;
  for (auto& r : st.revisions(image))
    if (!(r.flags & store::kRevisionForgetting)) out.push_back(std::move(r));
  return out;
}

struct ImagePlan {
  size_t result = 0;  // index into CopyResult::images
  std::vector<RevisionRecord> to_copy;
};

// Decides which source revisions of one image the target gets (see docs/operations.md).
ImagePlan plan_image(Store& source, Store& target, const store::ImageRecord& image, CopyImageResult& r) {
  ImagePlan plan;
  const std::vector<RevisionRecord> src = visible_revisions(source, image.key);
  std::vector<RevisionRecord> tgt;
  if (auto t = target.find_image(image.pool, image.name)) tgt = visible_revisions(target, t->key);
  const RevisionRecord* newest = tgt.empty() ? nullptr : &tgt.back();
  // Where the target's chain stands in the source: the source revision its newest one copies, if
  // the source still has it; else its creation time (the source may have forgotten it since).
  std::optional<uint64_t> matched;
  if (newest)
    for (const auto& s : src)
      if (same_revision(s, *newest)) matched = s.id;
  for (const auto& s : src) {
    auto present = std::find_if(tgt.begin(), tgt.end(), [&](const RevisionRecord& t) { return same_revision(s, t); });
    if (present != tgt.end()) {
      // The same revision must read the same in both stores. A copy whose digest differed was
      // committed before the check failed: every later run says so too, not only the first.
      if (present->digest != s.digest)
        throw StoreError(StoreError::Kind::kCorrupt,
                         "revision " + std::to_string(present->id) + " of " + image.pool + "/" + image.name +
                             " in the target does not match source revision " + std::to_string(s.id) +
                             " (digest differs); run rbdvault scrub on both stores");
      ++r.present;
      // A copy killed between its commit and its flag steps is completed here; a protect set on
      // the source since is carried over too (an unprotect is the target's own decision), and so is
      // a failed verification (a revision known to differ from its snapshot).
      if ((s.flags & store::kRevisionProtected) && !(present->flags & store::kRevisionProtected))
        target.set_protected(present->id, true);
      if ((s.flags & store::kRevisionVerifyFailed) && !(present->flags & store::kRevisionVerifyFailed))
        target.mark_verify_failed(present->id);
      continue;
    }
    const bool newer = !newest || (matched ? s.id > *matched : s.created > newest->created);
    if (newer) {
      plan.to_copy.push_back(s);
    } else {
      r.skipped.push_back({s.id, "older than the target's newest revision of " + image.pool + "/" + image.name +
                                     " (" + std::to_string(newest->id) + "); a chain only grows at its newest end"});
    }
  }
  return plan;
}

// The data entries of [first, end) of `image` as of `max_rev`, ascending (absent: zeros).
std::vector<std::pair<uint64_t, Hash>> data_entries(Store& st, uint64_t image, uint64_t first, uint64_t end,
                                                    uint64_t max_rev) {
  std::vector<std::pair<uint64_t, Hash>> out;
  st.newest_entries(image, first, end, max_rev, [&](uint64_t b, const std::optional<Hash>& h) {
    if (h) out.emplace_back(b, *h);
  });
  return out;
}

class RevisionCopier {
 public:
  RevisionCopier(Store& source, Store& target, CopyImageResult& r, uint64_t& done, uint64_t total,
                 const CopyOptions& o)
      : source_(source), target_(target), r_(r), done_(done), total_(total), o_(o) {}

  RevisionRecord copy(const RevisionRecord& s) {
    auto w = target_.begin_revision(store::RevisionStart{s.pool, s.name, s.size, /*from_empty=*/false});
    // What the writer starts from: the target's newest revision, zeros beyond its size.
    const uint64_t parent_blocks = w->parent() ? target_.blocks_for(w->parent()->size) : 0;
    const uint64_t nblocks = source_.blocks_for(s.size);
    uint64_t read_before = r_.bytes_read;
    for (uint64_t first = 0; first < nblocks; first += kWindowBlocks) {
      const uint64_t end = std::min(nblocks, first + kWindowBlocks);
      const auto want = data_entries(source_, s.image, first, end, s.id);
      const auto have = w->parent() ? data_entries(target_, w->image(), first, std::min(end, parent_blocks),
                                                   w->parent()->id)
                                    : std::vector<std::pair<uint64_t, Hash>>{};
      merge(*w, want, have);
      done_ += (end - first) * source_.block_size();
      if (o_.progress) o_.progress(std::min(done_, total_), total_);
    }
    store::RevisionInfo info;
    info.ceph_image_id = s.ceph_image_id;
    info.snap_name = s.snap_name;
    info.snap_id = s.snap_id;
    info.kind = s.kind;
    info.bytes_read = s.bytes_read;  // the backup's history, not this copy's
    info.order = s.order;
    info.features = s.features;
    info.created = s.created;
    info.application_consistent = (s.flags & store::kRevisionApplicationConsistent) != 0;
    if (s.flags & store::kRevisionGroup) {
      info.group = s.group;
      info.group_run = s.group_run;
      info.group_gap_us = s.group_gap_us;
    }
    const RevisionRecord rec = w->commit(info);
    r_.bytes_written += w->bytes_stored();
    spdlog::debug("copied {}/{}@{} as @{} ({} bytes read)", s.pool, s.name, s.id, rec.id, r_.bytes_read - read_before);
    // Same block size, same hashes, same size: the digests must agree, or the copy is not the source.
    if (rec.digest != s.digest)
      throw StoreError(StoreError::Kind::kCorrupt, "copied revision " + std::to_string(rec.id) + " of " + s.pool + "/" +
                                                       s.name + " does not match source revision " +
                                                       std::to_string(s.id) + " (digest differs)");
    if (s.flags & store::kRevisionProtected) target_.set_protected(rec.id, true);
    if (s.flags & store::kRevisionVerifyFailed) target_.mark_verify_failed(rec.id);
    return rec;
  }

 private:
  // Both lists ascending; a block in `want` holds that chunk, a block only in `have` must become zeros.
  void merge(store::RevisionWriter& w, const std::vector<std::pair<uint64_t, Hash>>& want,
             const std::vector<std::pair<uint64_t, Hash>>& have) {
    size_t i = 0, j = 0;
    while (i < want.size() || j < have.size()) {
      if (j == have.size() || (i < want.size() && want[i].first < have[j].first)) {
        put(w, want[i].first, want[i].second);
        ++i;
      } else if (i == want.size() || have[j].first < want[i].first) {
        w.put_zero(have[j].first);
        ++j;
      } else {
        if (want[i].second != have[j].second) put(w, want[i].first, want[i].second);
        ++i;
        ++j;
      }
    }
  }

  void put(store::RevisionWriter& w, uint64_t block, const Hash& hash) {
    if (w.put_existing(block, hash)) {
      r_.bytes_deduplicated += target_.block_size();
      return;
    }
    // Checked against its SHA-256 by the source. A patch there stays a patch of the same base here
    // where the target holds that base as a full chunk (the writer falls back to the full content
    // where it does not): a copied steady-state delta costs what it cost the source.
    store::ChunkContent c = source_.read_chunk_and_root(hash);
    r_.bytes_read += c.content.size();
    store::PreparedBlock p = c.root_content.empty()
                                 ? store::prepare_block(target_, std::move(c.content))
                                 : store::prepare_block(target_, std::move(c.content), c.root, c.root_content,
                                                        c.root_unverified);
    // Hashed again as the target stores it: what lands is what the source's map names.
    if (!p.hash || *p.hash != hash)
      throw StoreError(StoreError::Kind::kCorrupt,
                       "chunk " + store::to_hex(hash) + " read from the source does not match its hash");
    w.put_prepared(block, std::move(p));
  }

  Store& source_;
  Store& target_;
  CopyImageResult& r_;
  uint64_t& done_;
  uint64_t total_;
  const CopyOptions& o_;
};

}  // namespace

std::string resolve_store_location(const std::string& location, const StoreAccess& access) {
  if (auto where = store::parse_rados_spec(location)) {
    where->conf = access.conf;
    where->id = access.id;
    where->keyring = access.keyring;
    if (access.op_timeout_seconds > 0) where->op_timeout_seconds = access.op_timeout_seconds;
    const std::filesystem::path dir =
        access.index_dir.empty() ? store::default_index_dir(*where) : std::filesystem::path(access.index_dir);
    store::refresh_rados_cache(*where, dir);
    return dir.string();
  }
  // Like --store: a missing directory is not found (3), something that is not a store is a usage
  // error (2, from Store::open).
  if (!std::filesystem::exists(location))
    throw StoreError(StoreError::Kind::kNotFound,
                     "no store at '" + location + "' (create one with rbdvault init --store " + location + ")");
  return location;
}

std::unique_ptr<store::Store> open_store_location(const std::string& location, store::OpenMode mode,
                                                  const std::string& holder, const StoreAccess& access) {
  return Store::open(resolve_store_location(location, access), mode, holder);
}

uint64_t CopyResult::copied() const {
  uint64_t n = 0;
  for (const auto& i : images) n += i.copied.size();
  return n;
}
uint64_t CopyResult::skipped() const {
  uint64_t n = 0;
  for (const auto& i : images) n += i.skipped.size();
  return n;
}
uint64_t CopyResult::bytes_read() const {
  uint64_t n = 0;
  for (const auto& i : images) n += i.bytes_read;
  return n;
}
uint64_t CopyResult::bytes_written() const {
  uint64_t n = 0;
  for (const auto& i : images) n += i.bytes_written;
  return n;
}
uint64_t CopyResult::bytes_deduplicated() const {
  uint64_t n = 0;
  for (const auto& i : images) n += i.bytes_deduplicated;
  return n;
}

CopyResult copy_store(Store& source, Store& target, const CopyOptions& options) {
  if (source.block_size() != target.block_size())
    throw StoreError(StoreError::Kind::kInvalid,
                     "the stores have different block sizes (" + std::to_string(source.block_size()) + " and " +
                         std::to_string(target.block_size()) + " bytes); copy needs equal ones");
  std::vector<store::ImageRecord> images;
  if (options.images.empty()) {
    images = source.images();
  } else {
    // Every named image is checked before anything is written.
    for (const auto& [pool, name] : options.images) {
      auto img = source.find_image(pool, name);
      if (!img || visible_revisions(source, img->key).empty())
        throw StoreError(StoreError::Kind::kNotFound, "no backups of " + pool + "/" + name + " in the source store");
      images.push_back(*img);
    }
  }
  CopyResult result;
  std::vector<ImagePlan> plans;
  uint64_t total = 0;
  for (const auto& img : images) {
    result.images.push_back(CopyImageResult{img.pool, img.name, {}, {}, 0, 0, 0, 0});
    ImagePlan plan = plan_image(source, target, img, result.images.back());
    plan.result = result.images.size() - 1;
    for (const auto& s : plan.to_copy) total += s.size;
    plans.push_back(std::move(plan));
  }
  uint64_t done = 0;
  for (const auto& plan : plans) {
    CopyImageResult& r = result.images[plan.result];
    RevisionCopier copier(source, target, r, done, total, options);
    for (const auto& s : plan.to_copy) {
      const RevisionRecord rec = copier.copy(s);
      r.copied.push_back({s.id, rec.id, s.created, s.size});
    }
  }
  return result;
}

}  // namespace rbdvault::agent
