#include "view/http_api.h"

#include <nlohmann/json.hpp>

#include <ctime>

#include "store/sha256.h"

namespace rbdvault::view {
namespace {

using Json = nlohmann::ordered_json;

std::string iso_time(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Json revision_json(const store::RevisionRecord& r) {
  Json j;
  j["id"] = r.id;
  j["created"] = iso_time(r.created);
  j["size"] = r.size;
  j["parent"] = r.parent ? Json(r.parent) : Json(nullptr);
  j["kind"] = r.kind == store::RevisionKind::kFull ? "full" : "delta";
  j["bytes_read"] = r.bytes_read;
  j["bytes_stored"] = r.bytes_stored;
  j["snapshot"] = r.snap_name;
  j["digest"] = store::to_hex(r.digest);
  j["protected"] = (r.flags & store::kRevisionProtected) != 0;
  j["verify_failed"] = (r.flags & store::kRevisionVerifyFailed) != 0;
  j["consistency"] = store::consistency_name(r.flags);
  j["group"] = (r.flags & store::kRevisionGroup) ? Json{{"name", r.group}, {"run", r.group_run}} : Json(nullptr);
  return j;
}

}  // namespace

std::string images_json(const Snapshot& snap) {
  Json list = Json::array();
  for (const auto& [key, revs] : snap.images) {
    if (revs.empty()) continue;
    const auto& last = revs.back();
    list.push_back(Json{{"pool", key.first},
                        {"image", key.second},
                        {"revisions", revs.size()},
                        {"latest", Json{{"id", last.id}, {"created", iso_time(last.created)}, {"size", last.size}}}});
  }
  return list.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

std::string image_json(const Snapshot& snap, const std::string& pool, const std::string& image) {
  Json list = Json::array();
  if (auto* revs = snap.revisions(pool, image))
    for (const auto& r : *revs) list.push_back(revision_json(r));
  return Json{{"pool", pool}, {"image", image}, {"revisions", list}}.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

std::string error_json(const std::string& error_class, int exit_code, const std::string& message) {
  return Json{{"error", Json{{"class", error_class}, {"exit_code", exit_code}, {"message", message}}}}.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

}  // namespace rbdvault::view
