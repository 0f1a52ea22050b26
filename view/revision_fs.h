// The read-only FUSE file system of a store (rbdvault mount, and fsck's private mount):
//   MOUNT/POOL/IMAGE/REV            the revision's bytes (REV: decimal revision id), sparse
//   MOUNT/POOL/IMAGE/latest         symlink to the newest REV
//   MOUNT/POOL/IMAGE/REV.parts/N    partition N of a partitioned revision (MBR or GPT)
// Directory lookups reread the store (at most once per TTL), so new revisions appear while mounted.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>

struct fuse;

namespace rbdvault::view {

class RevisionFs;
struct RevisionFsDeleter {  // RevisionFs is complete only in revision_fs.cc
  void operator()(RevisionFs* fs) const;
};

struct MountOptions {
  std::string store_dir;
  std::string mountpoint;
  std::optional<std::pair<std::string, std::string>> only;  // POOL, IMAGE
  uint64_t cache_bytes = 64ull << 20;
  std::chrono::milliseconds ttl{1000};
  bool allow_other = false;
  bool check_digest = true;  // false: open a revision whose block map fails its digest (salvage)
  // Unmounted by fusermount3 even if the process dies (a private mount nobody else should see).
  bool auto_unmount = false;
};

// A mounted RevisionFs. The constructor mounts (and fails with one clear error if it cannot); the
// destructor unmounts. serve() or start() runs the request loop.
class FuseMount {
 public:
  explicit FuseMount(const MountOptions& options);
  ~FuseMount();
  FuseMount(const FuseMount&) = delete;
  FuseMount& operator=(const FuseMount&) = delete;

  // Serves in this thread until `fusermount3 -u`, SIGINT, SIGTERM or SIGHUP; all of them are a
  // clean end (returns normally). Throws on a failure of the loop itself.
  void serve();
  // Serves in a background thread until the destructor (fsck's private mount).
  void start();
  [[nodiscard]] const std::string& mountpoint() const { return mountpoint_; }

 private:
  std::string mountpoint_;
  std::unique_ptr<RevisionFs, RevisionFsDeleter> fs_;
  struct fuse* fuse_ = nullptr;
  bool mounted_ = false;
  std::thread thread_;
};

}  // namespace rbdvault::view
