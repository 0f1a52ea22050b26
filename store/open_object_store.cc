#include "store/open_object_store.h"

#include "store/local_object_store.h"
#include "store/rados_cache.h"
#include "store/rados_object_store.h"

namespace rbdvault::store {

std::shared_ptr<ObjectStore> open_object_store(const std::filesystem::path& dir) {
  // The index directory of a RADOS store says where its data area is (rados_cache.h).
  if (auto where = read_backend_file(dir)) return std::make_shared<RadosObjectStore>(*where);
  return std::make_shared<LocalObjectStore>(dir);
}

}  // namespace rbdvault::store
