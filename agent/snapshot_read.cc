#include "agent/snapshot_read.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <stdexcept>
#include <vector>

#include "agent/block_pipeline.h"
#include "agent/changed_bytes.h"
#include "agent/diff_trust.h"
#include "agent/read_plan.h"
#include "rbd/image.h"
#include "store/revision_writer.h"

namespace rbdvault::agent {

namespace {

struct BlockPatch {
  store::Hash base;           // the parent revision's chunk for the block
  std::vector<Piece> pieces;  // the changed bytes, read from the snapshot
};

// One read from the snapshot: whole blocks starting at offset, or one piece of a patched block (the
// last piece carries the patch).
struct ReadStep {
  uint64_t offset = 0, length = 0;
  bool piece = false, last_piece = false;
  std::optional<BlockPatch> patch;
};

// The reads for one run of blocks to read, in order: runs of whole blocks up to per_read blocks
// long, and the pieces of each block below patch_end that patch_for says can be patched.
void for_each_read(const BlockRun& r, uint64_t bs, uint64_t size, uint64_t per_read, uint64_t patch_end,
                   const std::function<std::optional<BlockPatch>(uint64_t)>& patch_for,
                   const std::function<void(ReadStep&&)>& fn) {
  uint64_t whole_from = r.first;
  auto whole_until = [&](uint64_t end) {
    while (whole_from < end) {
      const uint64_t n = std::min(per_read, end - whole_from), offset = whole_from * bs;
      fn(ReadStep{offset, std::min(n * bs, size - offset), false, false, std::nullopt});
      whole_from += n;
    }
  };
  for (uint64_t b = r.first; b < std::min(r.end, patch_end); ++b) {
    std::optional<BlockPatch> patch = patch_for(b);
    if (!patch) continue;
    whole_until(b);
    whole_from = b + 1;
    const size_t n = patch->pieces.size();
    for (size_t i = 0; i < n; ++i) {
      const Piece p = patch->pieces[i];
      ReadStep s{b * bs + p.offset, p.length, true, i + 1 == n, std::nullopt};
      if (s.last_piece) s.patch = std::move(patch);
      fn(std::move(s));
    }
  }
  whole_until(r.end);
}

// What the diff says to read: runs of blocks (or known zeros), and with `patching` the changed bytes
// of each block, so that partly changed blocks below patch_end are read in pieces.
struct Plan {
  std::vector<BlockRun> runs;
  ChangedBytes changed;
  bool patching = false;
  uint64_t patch_end = 0;
};

Plan plan_reads(rbd::Image& at_snap, store::AppendStore& store, store::RevisionWriter& writer, const SnapshotRead& what,
                const BackupOptions& options, BackupResult& result) {
  const uint64_t bs = store.block_size();
  const uint64_t nblocks = store.blocks_for(what.snap.size);
  const rbd::SnapshotInfo& snap = what.snap;
  const std::optional<store::RevisionRecord>& parent = what.parent;
  ReadPlan plan(bs, snap.size);
  // Partial reads: a block the exact diff reports partly changed is completed from the parent
  // revision's chunk, which holds the base snapshot's bytes (the diff is taken from that snapshot).
  const bool patching = !what.base_snap.empty() && options.partial_reads && writer.parent() &&
                        writer.parent()->id == parent->id;
  ChangedBytes changed(bs);
  // RBDVAULT_FAULT=diff.miss (tests only) simulates a Ceph diff that misses every change.
  const bool simulate_miss = !what.base_snap.empty() && store.crash_points().fault("diff.miss");
  auto to_plan = [&](bool exact) {
    return [&, exact](const rbd::ChangedExtent& e) {
      if (simulate_miss) return;
      plan.add_extent(e.offset, e.length, e.exists);
      if (!patching) return;
      // Object-granular extents say that something in the object changed, not which bytes.
      if (exact)
        changed.add_exact(e.offset, e.length);
      else
        changed.add_blocks(e.offset / bs, (e.offset + e.length + bs - 1) / bs);
    };
  };
  // The object-map diff (both fast modes use it) is not trusted where a known Ceph bug can make it
  // miss changes (agent/diff_trust.h); that range gets the exact diff.
  const bool fast_mode = options.whole_object || options.object_map_filter;
  uint64_t trusted_end = fast_mode ? snap.size : 0;
  if (!what.base_snap.empty() && fast_mode) {
    std::vector<SnapshotPoint> points;
    for (const auto& s : at_snap.snapshots()) points.push_back({s.id, s.size});
    const DiffTrust trust = object_map_trust({parent->snap_id, parent->size}, {snap.id, snap.size}, points);
    if (trust.exact_from < snap.size) {
      trusted_end = trust.exact_from;
      result.exact_diff_reason = trust.reason;
      spdlog::info("backup {}: exact diff from byte {}: {}", what.image_name, trusted_end, trust.reason);
    }
  }
  if (options.whole_object)
    at_snap.changed_extents(what.base_snap, 0, trusted_end, true, to_plan(false));
  else if (options.object_map_filter)
    at_snap.changed_extents_exact(what.base_snap, 0, trusted_end, to_plan(true));
  at_snap.changed_extents(what.base_snap, trusted_end, snap.size - trusted_end, false, to_plan(true));
  if (!what.base_snap.empty() && parent->size != snap.size) {
    // A block cut by the new or the old end of the image must be re-read: Ceph zeroes bytes past a
    // shrink, and a block stored at the old size was stored zero-padded.
    for (uint64_t edge : {snap.size, parent->size})
      if (edge % bs != 0 && edge / bs < nblocks) {
        plan.add_block(edge / bs);
        if (patching) changed.add_blocks(edge / bs, edge / bs + 1);
      }
  }
  Plan out{plan.finish(), std::move(changed), patching, 0};
  if (patching) out.changed.finish();
  // Blocks wholly inside both the parent's and the new size may be patched; a block the parent
  // holds as zeros (or not at all) is read whole.
  out.patch_end = patching ? std::min(parent->size, snap.size) / bs : 0;
  return out;
}

// Which blocks are read in pieces, over which parent chunk. The reads are walked twice, to plan and
// to submit, in the same order: the first walk looks up the parent's chunk of each partly changed
// block in the index, the second takes it from here.
class PatchLookup {
 public:
  PatchLookup(store::AppendStore& store, const Plan& plan, uint64_t image, uint64_t parent_rev)
      : store_(store), plan_(plan), image_(image), parent_rev_(parent_rev) {}

  std::optional<BlockPatch> operator()(uint64_t b) {
    if (b >= plan_.patch_end) return std::nullopt;
    std::vector<Piece> pieces = plan_.changed.pieces(b);
    if (pieces.empty() || ChangedBytes::whole(pieces, store_.block_size())) return std::nullopt;
    std::optional<store::Hash> base;
    if (planning_) {
      base = store_.block_content(image_, b, parent_rev_);
      parent_chunks_.push_back(base);
    } else {
      if (parent_chunks_.empty()) throw std::logic_error("the reads were walked differently twice");
      base = parent_chunks_.front();
      parent_chunks_.pop_front();
    }
    if (!base) return std::nullopt;
    return BlockPatch{*base, std::move(pieces)};
  }
  void planned() { planning_ = false; }
  void check_all_taken() const {
    if (!parent_chunks_.empty()) throw std::logic_error("the reads were walked differently twice");
  }

 private:
  store::AppendStore& store_;
  const Plan& plan_;
  uint64_t image_, parent_rev_;
  std::deque<std::optional<store::Hash>> parent_chunks_;
  bool planning_ = true;
};

}  // namespace

void check_cancelled(const BackupOptions& options, const std::string& image_name) {
  if (options.cancelled && options.cancelled())
    throw BackupCancelled("backup " + image_name + " cancelled; nothing was committed");
}

namespace {

// What the reads deliver, in submission order: each step's bytes go to the pipeline as whole blocks
// or, for a patched block, are gathered until its last piece; the zero runs between them are
// recorded in block order as the reads around them complete.
class ReadDelivery {
 public:
  ReadDelivery(BlockPipeline& pipeline, const store::RevisionWriter& writer, const BackupOptions& options, uint64_t bs,
               uint64_t planned)
      : pipeline_(pipeline), writer_(writer), options_(options), bs_(bs), planned_(planned) {}

  void expect(ReadStep&& s) { steps_.push_back(std::move(s)); }
  void zero_run(const BlockRun& r) { zeros_due_.push_back(r); }

  // The data of the oldest step not yet delivered.
  void deliver(std::string_view data) {
    ReadStep step = std::move(steps_.front());
    steps_.pop_front();
    const uint64_t first = step.offset / bs_;
    put_zeros_before(first);
    if (step.piece) {
      if (data.size() != step.length) throw std::runtime_error("short read inside the image");
      patch_data_.append(data);
      if (step.last_piece) {
        pipeline_.add_patched(first, step.patch->base, std::move(patch_data_), std::move(step.patch->pieces));
        patch_data_.clear();
      }
    } else {
      for (uint64_t i = 0; i * bs_ < step.length; ++i) {
        const uint64_t pos = i * bs_;
        pipeline_.add_block(first + i, pos < data.size() ? data.substr(pos, bs_) : std::string_view());
      }
    }
    report(data.size());
  }

  // After the last read: the zero runs after it.
  void finish() { put_zeros_before(UINT64_MAX); }

 private:
  void put_zeros_before(uint64_t block) {
    while (!zeros_due_.empty() && zeros_due_.front().first < block) {
      pipeline_.add_zero_range(zeros_due_.front().first, zeros_due_.front().end);
      zeros_due_.pop_front();
    }
  }

  void report(uint64_t bytes) {
    done_ += bytes;
    if (options_.progress) options_.progress(done_, std::max(done_, planned_));
    if (options_.after_store && writer_.bytes_stored() > stored_reported_) {
      options_.after_store(writer_.bytes_stored() - stored_reported_);
      stored_reported_ = writer_.bytes_stored();
    }
  }

  BlockPipeline& pipeline_;
  const store::RevisionWriter& writer_;
  const BackupOptions& options_;
  const uint64_t bs_, planned_;
  std::deque<ReadStep> steps_;
  std::deque<BlockRun> zeros_due_;
  std::string patch_data_;  // the pieces of the block being patched, as they arrive
  uint64_t done_ = 0, stored_reported_ = 0;
};

using PatchFn = std::function<std::optional<BlockPatch>(uint64_t)>;

// The first walk over the reads: the bytes they will read (and, through patch_for, the parent
// chunks they will patch, looked up once here).
uint64_t bytes_to_read(const Plan& plan, uint64_t bs, uint64_t size, uint64_t per_read, const PatchFn& patch_for,
                       const std::string& image_name) {
  uint64_t bytes = 0, zero_blocks = 0;
  for (const BlockRun& r : plan.runs) {
    if (r.zero) {
      zero_blocks += r.end - r.first;
      continue;
    }
    for_each_read(r, bs, size, per_read, plan.patch_end, patch_for, [&](ReadStep&& s) { bytes += s.length; });
  }
  spdlog::debug("backup {}: {} runs, {} bytes to read, {} blocks known zero", image_name, plan.runs.size(), bytes,
                zero_blocks);
  return bytes;
}

void record_stats(BackupResult& result, const BlockPipeline& pipeline, const rbd::AsyncReader& reader) {
  result.peak_blocks_pending = pipeline.peak_pending();
  result.bytes_read_store = pipeline.stats().bytes_read_store;
  result.cpu_hash = pipeline.stats().hash;
  result.cpu_compress = pipeline.stats().compress;
  result.cpu_patch = pipeline.stats().patch;
  result.cpu_index = pipeline.stats().index;
  result.peak_reads_in_flight = reader.peak_in_flight();
}

}  // namespace

SnapshotReadTotals read_snapshot(rbd::Image& at_snap, store::AppendStore& store, store::RevisionWriter& writer,
                                 const SnapshotRead& what, const BackupOptions& options, BackupResult& result) {
  const uint64_t bs = store.block_size();
  const Plan plan = plan_reads(at_snap, store, writer, what, options, result);
  PatchLookup patch_for(store, plan, writer.image(), what.parent ? what.parent->id : 0);
  const PatchFn patch_fn = std::ref(patch_for);
  const uint64_t per_read = std::max<uint64_t>(1, options.max_read_bytes / bs);
  result.bytes_planned = bytes_to_read(plan, bs, what.snap.size, per_read, patch_fn, what.image_name);
  patch_for.planned();

  BlockPipeline pipeline(store, writer, options.hash_threads, options.max_blocks_pending);
  pipeline.set_reread([&](uint64_t b) {
    std::string whole(bs, '\0');  // blocks patched lie wholly inside the image
    if (at_snap.read(b * bs, bs, whole.data()) != bs) throw std::runtime_error("short read inside the image");
    return whole;
  });
  ReadDelivery delivery(pipeline, writer, options, bs, result.bytes_planned);
  rbd::AsyncReader reader(at_snap, options.reads_in_flight,
                          [&](uint64_t, uint64_t, std::string_view data) { delivery.deliver(data); });
  for (const BlockRun& r : plan.runs) {
    if (r.zero) {
      delivery.zero_run(r);
      continue;
    }
    for_each_read(r, bs, what.snap.size, per_read, plan.patch_end, patch_fn, [&](ReadStep&& s) {
      check_cancelled(options, what.image_name);
      if (options.before_read) {
        options.before_read(s.length);
        check_cancelled(options, what.image_name);
      }
      const uint64_t offset = s.offset, length = s.length;
      delivery.expect(std::move(s));
      reader.submit(offset, length, 0);
    });
  }
  reader.drain();
  patch_for.check_all_taken();
  delivery.finish();
  pipeline.finish();
  record_stats(result, pipeline, reader);
  if (pipeline.stats().blocks_reread)
    spdlog::warn("backup {}: {} blocks read whole because their parent chunk was damaged; run rbdvault scrub",
                 what.image_name, pipeline.stats().blocks_reread);
  return {reader.bytes_read() + pipeline.stats().bytes_reread, pipeline.stats().blocks_reread};
}

}  // namespace rbdvault::agent
