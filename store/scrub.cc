#include "store/scrub.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "store/chunk_check.h"
#include "store/chunk_scan.h"
#include "store/index.h"
#include "store/external_sort.h"
#include "store/pack.h"
#include "store/store.h"


namespace rbdvault::store {
namespace {

// Memory does not grow with the number of chunks (docs/format.md §11): the hashes the checked
// revisions read and the hashes of all block map entries go through external sorters and are
// merged with the chunk records in hash order; the chunks are then checked in pack order (one
// sequential pass over each pack for --deep). What stays in memory is one small record per revision
// and per pack, and the list of damaged chunks (up to kMaxDamaged; beyond it, the revisions' blocks
// are checked again one by one).
constexpr size_t kMaxDamaged = 1 << 20;

using HashSorter = ExternalSorter<32>;
// pack (be32), offset (be64), hash, stored_len, raw_len, flags: chunks to check, in pack order.
using LocationSorter = ExternalSorter<4 + 8 + 32 + 4 + 4 + 1 + 32>;  // ... and a patch's base

HashSorter::Key key_of(const Hash& h) {
  HashSorter::Key k;
  std::memcpy(k.data(), h.data(), 32);
  return k;
}

LocationSorter::Key location_key(const Hash& h, const ChunkRecord& rec) {
  LocationSorter::Key k{};
  put_be(k.data(), rec.pack, 4);
  put_be(k.data() + 4, rec.offset, 8);
  std::memcpy(k.data() + 12, h.data(), 32);
  std::memcpy(k.data() + 44, &rec.stored_len, 4);
  std::memcpy(k.data() + 48, &rec.raw_len, 4);
  k[52] = rec.flags;
  std::memcpy(k.data() + 53, rec.base.data(), 32);
  return k;
}

void location_of(const LocationSorter::Key& k, Hash& h, ChunkRecord& rec) {
  rec.pack = static_cast<uint32_t>(get_be(k.data(), 4));
  rec.offset = get_be(k.data() + 4, 8);
  std::memcpy(h.data(), k.data() + 12, 32);
  std::memcpy(&rec.stored_len, k.data() + 44, 4);
  std::memcpy(&rec.raw_len, k.data() + 48, 4);
  rec.flags = k[52];
  std::memcpy(rec.base.data(), k.data() + 53, 32);
}

// What the per-revision pass found, kept until the chunk verdicts are in so that each revision's
// issues stay in their documented order.
struct RevisionState {
  RevisionRecord rev;
  std::vector<std::string> record_problems;  // image, parent, block size
  bool digest_ok = true;
};

// The revision a parent pointer leads to once revisions being forgotten are passed over: they are
// hidden from the list scrub walks (a forget running now, or one killed that the next writer
// finishes) yet still link the chain until the forget is done. Ids only go down, so it ends.
uint64_t linked_parent(ReadOnlyStore& store, const RevisionRecord& rev) {
  uint64_t parent = rev.parent;
  while (parent != 0) {
    const std::optional<RevisionRecord> p = store.revision(parent);
    if (!p || !(p->flags & kRevisionForgetting) || p->image != rev.image || p->parent >= parent) break;
    parent = p->parent;
  }
  return parent;
}

}  // namespace

std::vector<uint64_t> ScrubReport::damaged_revisions() const {
  std::set<uint64_t> revs;
  for (auto& i : issues)
    if (i.revision) revs.insert(i.revision);
  return {revs.begin(), revs.end()};
}

ScrubReport scrub(Store& store, const ScrubOptions& options) {
  ScrubReport report;
  ChunkChecker chunks(store, options.deep);
  // Store-wide issues follow every revision's, as documented; they are found first.
  std::vector<ScrubIssue> store_wide;
  auto add = [&](const RevisionRecord* r, std::string problem) {
    if (r)
      report.issues.push_back({r->id, r->pool + "/" + r->name, std::move(problem)});
    else
      store_wide.push_back({0, std::string(), std::move(problem)});
  };

  // Pass 1: each checked revision's records and checksum; the hashes it reads go to `reads`.
  std::vector<RevisionState> checked;
  HashSorter reads;
  for (const ImageRecord& image : store.images()) {
    if (options.image && *options.image != image.key) continue;
    uint64_t previous = 0;
    for (RevisionRecord& rev : store.revisions(image.key)) {
      const uint64_t expected_parent = previous;
      previous = rev.id;
      if (options.revision && *options.revision != rev.id) continue;
      ++report.revisions_checked;
      RevisionState st;
      if (rev.image != image.key || rev.pool != image.pool || rev.name != image.name)
        st.record_problems.push_back("revision record names another image");
      if (linked_parent(store, rev) != expected_parent)
        st.record_problems.push_back("broken parent pointer: parent " + std::to_string(rev.parent) +
                                     ", previous revision is " + std::to_string(expected_parent));
      if (rev.block_size != store.block_size()) st.record_problems.push_back("block size differs from the store's");
      Hash digest{};
      store.for_each_data_block(rev, [&](uint64_t block, const Hash& h) {
        RevisionDigest::add(digest, RevisionDigest::term(block, h));
        reads.add(key_of(h));
      });
      RevisionDigest::add(digest, RevisionDigest::size_term(rev.size));
      st.digest_ok = digest == rev.digest;
      st.rev = std::move(rev);
      checked.push_back(std::move(st));
    }
  }

  // Every block map entry's hash, for the reference counts.
  HashSorter refs;
  {
    IndexCursor it = store.index().scan(std::string(1, kKeyBlock), Caching::kBypass);
    for (; it.valid(); it.next()) {
      if (it.value().size() == 32) {
        HashSorter::Key k;
        std::memcpy(k.data(), it.value().data(), 32);
        refs.add(k);
      }
    }
    it.check("scan block maps");
  }
  // ... and every patch chunk's base: a patch record holds a reference on it (docs/format.md §4.2).
  for (ChunkRecordCursor cursor(store.index()); cursor.valid(); cursor.next()) {
    if (cursor.record() && is_patch(cursor.record()->flags)) refs.add(key_of(cursor.record()->base));
  }

  // Merge, in hash order: reference counts against the chunk records; the chunks read go to the
  // pack-order check, or are damaged at once (no record, malformed record).
  std::vector<Hash> damaged;
  bool damaged_overflow = false;
  auto note_damaged = [&](const Hash& h) {
    if (damaged.size() < kMaxDamaged)
      damaged.push_back(h);
    else
      damaged_overflow = true;
  };
  LocationSorter to_check;
  uint64_t wrong_refs = 0, unrecorded = 0;
  std::map<uint32_t, uint64_t> pack_end;
  {
    ChunkRecordCursor cursor(store.index());
    HashSorter::Entry r{}, q{};
    bool have_r = refs.next(r), have_q = reads.next(q);
    auto referenced_by_reads = [&](const Hash& h) {
      while (have_q && std::memcmp(q.key.data(), h.data(), 32) < 0) have_q = reads.next(q);
      return have_q && std::memcmp(q.key.data(), h.data(), 32) == 0;
    };
    auto hash_of = [](const HashSorter::Key& k) {
      Hash h;
      std::memcpy(h.data(), k.data(), 32);
      return h;
    };
    while (cursor.valid() || have_r) {
      // The smaller of the next chunk record and the next referenced hash.
      const bool take_record =
          cursor.valid() && (!have_r || std::memcmp(cursor.hash().data(), r.key.data(), 32) <= 0);
      const Hash h = take_record ? cursor.hash() : hash_of(r.key);
      const bool counted = have_r && std::memcmp(r.key.data(), h.data(), 32) == 0;
      const uint64_t count = counted ? r.count : 0;
      const bool read = referenced_by_reads(h);
      if (!take_record) {
        ++unrecorded;
        if (read) {
          ++report.chunks_checked;
          note_damaged(h);
        }
      } else if (!cursor.record()) {
        // Reported once here; the revisions reading it are named by the per-revision pass.
        add(nullptr, "chunk " + to_hex(h).substr(0, 16) + " has a malformed index record (" + cursor.error() + ")");
        if (read) {
          ++report.chunks_checked;
          note_damaged(h);
        }
      } else {
        const ChunkRecord& rec = *cursor.record();
        if (count != rec.refs && wrong_refs++ < 5)
          add(nullptr, "chunk " + to_hex(h).substr(0, 16) + " has reference count " + std::to_string(rec.refs) +
                           " but " + std::to_string(count) + " block map entries");
        if (read) to_check.add(location_key(h, rec));
        uint64_t& end = pack_end[rec.pack];
        end = std::max(end, rec.offset + kChunkHeaderSize + rec.stored_len);
      }
      if (take_record) cursor.next();
      if (counted) have_r = refs.next(r);
    }
  }
  if (wrong_refs > 5) add(nullptr, std::to_string(wrong_refs) + " chunks in all have wrong reference counts");
  if (unrecorded)
    add(nullptr, std::to_string(unrecorded) + " chunks are referenced by block maps but have no index record");

  // Each chunk read by a checked revision, once, in pack order.
  {
    LocationSorter::Entry e;
    Hash h;
    ChunkRecord rec;
    while (to_check.next(e)) {
      location_of(e.key, h, rec);
      ++report.chunks_checked;
      if (!chunks.examine(h, rec, report.bytes_verified).empty()) note_damaged(h);
    }
  }
  std::sort(damaged.begin(), damaged.end());

  // Pass 2, only when something is damaged: which blocks of which revisions read it.
  for (RevisionState& st : checked) {
    const RevisionRecord* rev = &st.rev;
    for (auto& p : st.record_problems) add(rev, std::move(p));
    if (!damaged.empty()) {
      uint64_t bad_chunks = 0;
      std::string first_problem;
      store.for_each_data_block(st.rev, [&](uint64_t block, const Hash& h) {
        std::string problem;
        if (damaged_overflow)
          problem = chunks.examine(h);
        else if (std::binary_search(damaged.begin(), damaged.end(), h) && bad_chunks == 0) {
          problem = chunks.examine(h);  // the text, for the first one
          // Pass 1 read it wrong: that stays damage even if this second read is right (a flipped
          // bit on the way, a failing disk), or the report would say clean after a bad read.
          if (problem.empty()) problem = "damaged when read once, intact when read again (a bad read: check the disk)";
        }
        else if (std::binary_search(damaged.begin(), damaged.end(), h))
          problem = "damaged";
        if (!problem.empty() && bad_chunks++ == 0) first_problem = "block " + std::to_string(block) + ": " + problem;
      });
      if (bad_chunks) add(rev, std::to_string(bad_chunks) + " damaged block(s), first " + first_problem);
    }
    if (!st.digest_ok)
      add(rev, "whole-revision checksum does not match the block map (entries missing, altered or wrong size)");
  }

  {
    IndexCursor it = store.index().scan(std::string(1, kKeyPack));
    for (; it.valid(); it.next()) {
      const uint32_t id = parse_pack_key(it.key());
      PackRecord p = decode_pack(it.value());
      const auto size = store.objects().size(pack_object_name(id));
      if (!size)
        add(nullptr, "pack " + pack_file_name(id) + " is missing");
      else if (*size != p.bytes)
        add(nullptr, "pack " + pack_file_name(id) + " is " + std::to_string(*size) + " bytes, index says " +
                         std::to_string(p.bytes));
      pack_end.erase(id);
    }
  }
  for (auto& [id, end] : pack_end)
    add(nullptr, "chunks point into pack " + pack_file_name(id) + " which has no pack record");
  for (auto& i : store_wide) report.issues.push_back(std::move(i));
  spdlog::info("scrub {}: {} revisions, {} chunks{}, {} issue(s)", store.name(), report.revisions_checked,
               report.chunks_checked, options.deep ? " (deep)" : "", report.issues.size());
  return report;
}

}  // namespace rbdvault::store
