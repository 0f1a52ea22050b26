// `rbdvault upgrade`: format 1 -> 2 in place (docs/format.md §14). Format 2 adds the revision
// manifests (§16) and nothing else, so the upgrade writes each committed revision's manifest from
// the index and then rewrites the marker, the commit point. A killed upgrade leaves a format 1
// store with some manifests; the next run checks those against the index (format 1 code may have
// changed the store in between) and goes on.
#include <spdlog/spdlog.h>

#include <map>

#include "store/manifest.h"
#include "store/object_store.h"
#include "store/rados_cache.h"
#include "store/store.h"
#include "store/store_internal.h"

namespace fs = std::filesystem;

namespace rbdvault::store {


UpgradeStats upgrade_store(const fs::path& dir) { return Store::upgrade(dir); }

Store::UpgradeStats Store::upgrade(const fs::path& dir) {
  UpgradeStats st;
  const std::string text = read_marker_text(dir);
  const uint32_t version = parse_store_marker(text, dir.string() + ": rbdvault.store").version;
  if (version == kFormatVersion) return st;
  if (version == kFormatVersion - 1) {
    if (read_backend_file(dir)) {
      // A RADOS store: its pool's marker moves under the writer lease, as any writer's open does.
      auto s = open_impl(dir, OpenMode::kWriter, "rbdvault upgrade", {}, {}, /*allow_format_1=*/false);
      st.upgraded = s->patches_allowed_;
      return st;
    }
    // Format 2 -> 3 adds patch chunks only: the marker alone changes (a writer's open does the same).
    write_marker_durably(dir, marker_with_current_version(text));
    st.upgraded = true;
    return st;
  }
  // Opening for writing runs recovery as format 1 code would (no manifest exists for a revision
  // being written, so every unfinished one is rolled back) and takes the writer lock.
  auto s = open_impl(dir, OpenMode::kWriter, "rbdvault upgrade", {}, {}, /*allow_format_1=*/true);

  std::map<uint64_t, std::vector<uint32_t>> found;
  for (const std::string& name : s->objects().list(std::string(kManifestPrefix)))
    if (auto p = parse_manifest_name(name)) found[p->first].push_back(p->second);
  for (const auto& [rev, gens] : found) {
    bool keep = false;
    try {
      const auto rec = s->revision(rev);
      if (rec && !(rec->flags & kRevisionForgetting) && gens.size() == 1) {
        auto obj = s->objects().open(manifest_name(rev, gens[0]));
        const ManifestReader m(*obj);
        keep = m.tail().absorbed.empty() && encode(m.tail().rev) == encode(*rec);
      }
    } catch (const StoreError& e) {
      if (e.kind() != StoreError::Kind::kCorrupt) throw;
    }
    if (!keep) {
      s->remove_manifests(rev, UINT32_MAX);
      ++st.manifests_removed;
    }
  }
  for (const RevisionRecord& rec : s->revisions()) {
    if (!s->manifest_generations(rec.id).empty()) continue;
    s->put_manifest_from_index(rec, 0, {});
    ++st.manifests_written;
    s->crash_points().reached("upgrade.manifest_put");
  }
  write_marker_durably(dir, marker_with_current_version(text));
  s->crash_points().reached("upgrade.marker_written");
  st.upgraded = true;
  spdlog::info("upgraded store {} to format {}: {} manifests written", dir.string(), kFormatVersion,
               st.manifests_written);
  return st;
}

}  // namespace rbdvault::store
