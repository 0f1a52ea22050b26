#include "view/http_api.h"

#include <nlohmann/json.hpp>

#include "view/presentation.h"

namespace rbdvault::view {
using Json = nlohmann::ordered_json;

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
