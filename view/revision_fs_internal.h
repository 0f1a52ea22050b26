// Between revision_fs.cc (the file system's operations) and fuse_mount.cc (mounting it).
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse3/fuse.h>

#include <memory>

#include "view/block_cache.h"
#include "view/revision_fs.h"

namespace rbdvault::view {

[[nodiscard]] std::unique_ptr<RevisionFs, RevisionFsDeleter> new_revision_fs(const MountOptions& options);
// The operations; each finds its RevisionFs as the FUSE context's private data (fuse_new's user_data).
[[nodiscard]] fuse_operations revision_fs_operations();
[[nodiscard]] BlockCache::Stats cache_stats(RevisionFs& fs);

}  // namespace rbdvault::view
