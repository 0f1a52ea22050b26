// Which backend holds a store's data area. The one place that names a backend: a second one (RADOS)
// plugs in here and in its own file, nowhere else.
#pragma once

#include <filesystem>
#include <memory>

#include "store/object_store.h"

namespace rbdvault::store {

// The data area of the store in `dir`: objects "data/..." are the files DIR/data/...
[[nodiscard]] std::shared_ptr<ObjectStore> open_object_store(const std::filesystem::path& dir);

}  // namespace rbdvault::store
