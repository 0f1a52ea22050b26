// The JSON bodies of the HTTP server (view/http_server.h): field names as `rbdvault ls --format
// json` uses them, so a script can switch between the CLI and the server.
#pragma once

#include <string>

#include "view/store_view.h"

namespace rbdvault::view {

// [{"pool","image","revisions","latest":{id,created,size},"url"}...] for every image.
[[nodiscard]] std::string images_json(const Snapshot& snap);
// {"pool","image","revisions":[{id,created,size,parent,kind,digest,protected,consistency,...}]}.
[[nodiscard]] std::string image_json(const Snapshot& snap, const std::string& pool, const std::string& image);
// {"error":{"class":"not-found","exit_code":3,"message":"..."}}: the CLI's error classes.
[[nodiscard]] std::string error_json(const std::string& error_class, int exit_code, const std::string& message);

}  // namespace rbdvault::view
