#include "store/open_object_store.h"

#include "store/local_object_store.h"

namespace rbdvault::store {

std::shared_ptr<ObjectStore> open_object_store(const std::filesystem::path& dir) {
  return std::make_shared<LocalObjectStore>(dir);
}

}  // namespace rbdvault::store
