#include "view/presentation.h"

#include <cstdio>
#include <ctime>

#include "store/sha256.h"

namespace rbdvault::view {

std::string human_size(uint64_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof(buf), "%llu B", static_cast<unsigned long long>(bytes));
  else
    std::snprintf(buf, sizeof(buf), "%.1f %s", v, units[u]);
  return buf;
}

std::string iso_time(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

nlohmann::ordered_json revision_json(const store::RevisionRecord& r) {
  using Json = nlohmann::ordered_json;
  Json j;
  j["id"] = r.id;
  j["image"] = r.pool + "/" + r.name;
  j["created"] = iso_time(r.created);
  j["size"] = r.size;
  j["parent"] = r.parent ? Json(r.parent) : Json(nullptr);
  j["kind"] = r.kind == store::RevisionKind::kFull ? "full" : "delta";
  j["bytes_read"] = r.bytes_read;
  j["bytes_stored"] = r.bytes_stored;
  j["new_chunks"] = r.new_chunks;
  j["map_entries"] = r.map_entries;
  j["ceph_image_id"] = r.ceph_image_id;
  j["snapshot"] = r.snap_name;
  j["snapshot_id"] = r.snap_id;
  j["digest"] = store::to_hex(r.digest);
  j["protected"] = (r.flags & store::kRevisionProtected) != 0;
  j["verify_failed"] = (r.flags & store::kRevisionVerifyFailed) != 0;
  j["consistency"] = store::consistency_name(r.flags);
  // Revisions snapshotted together share the group run.
  j["group"] = (r.flags & store::kRevisionGroup)
                   ? Json{{"name", r.group}, {"run", r.group_run}, {"gap_us", r.group_gap_us}}
                   : Json(nullptr);
  return j;
}

}  // namespace rbdvault::view
