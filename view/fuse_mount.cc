// FuseMount: mounting a RevisionFs, its request loop and the clean end (see revision_fs.h).
#define FUSE_USE_VERSION 314
#include <fuse3/fuse.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "store/error.h"
#include "view/revision_fs.h"
#include "view/revision_fs_internal.h"

namespace rbdvault::view {

FuseMount::FuseMount(const MountOptions& o) {
  std::error_code ec;
  mountpoint_ = std::filesystem::canonical(o.mountpoint, ec).string();
  if (ec || !std::filesystem::is_directory(mountpoint_))
    throw store::StoreError(store::StoreError::Kind::kNotFound, "mount point " + o.mountpoint + " is not a directory");
  fs_ = new_revision_fs(MountOptions{o.store_dir, mountpoint_, o.only, o.cache_bytes, o.ttl});
  std::string opts = "ro,default_permissions,fsname=rbdvault,subtype=rbdvault";
  if (o.allow_other) opts += ",allow_other";
  if (o.auto_unmount) opts += ",auto_unmount";
  const char* argv[] = {"rbdvault", "-o", opts.c_str()};
  fuse_args args = FUSE_ARGS_INIT(3, const_cast<char**>(argv));
  const fuse_operations ops = revision_fs_operations();
  fuse_ = fuse_new(&args, &ops, sizeof ops, fs_.get());
  if (!fuse_) throw std::runtime_error("cannot set up FUSE (is fuse3 installed and /dev/fuse usable?)");
  if (fuse_mount(fuse_, mountpoint_.c_str()) != 0) {
    fuse_destroy(fuse_);
    throw std::runtime_error("cannot mount on " + mountpoint_ + " (see the FUSE message above)");
  }
  mounted_ = true;
}

FuseMount::~FuseMount() {
  if (thread_.joinable()) {
    fuse_exit(fuse_);
    fuse_unmount(fuse_);  // wakes the loop threads blocked on /dev/fuse
    mounted_ = false;
    thread_.join();
  }
  if (mounted_) fuse_unmount(fuse_);
  fuse_destroy(fuse_);
}

namespace {
int loop(struct fuse* f) {
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(cfg, 16);
  const int rc = fuse_loop_mt(f, cfg);
  fuse_loop_cfg_destroy(cfg);
  return rc;
}
}  // namespace

void FuseMount::serve() {
  fuse_session* se = fuse_get_session(fuse_);
  if (fuse_set_signal_handlers(se) != 0) throw std::runtime_error("cannot set up signal handlers");
  const int rc = loop(fuse_);
  fuse_remove_signal_handlers(se);
  // 0: unmounted; a positive value is the signal that ended the loop: both are a clean end.
  if (rc < 0) throw std::runtime_error(std::string("FUSE loop failed: ") + std::strerror(-rc));
  auto st = cache_stats(*fs_);
  spdlog::info("unmounting {} (block cache: {} hits, {} misses)", mountpoint_, st.hits, st.misses);
}

void FuseMount::start() {
  thread_ = std::thread([f = fuse_] { (void)loop(f); });
}


}  // namespace rbdvault::view
