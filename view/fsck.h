// fsck of a revision: the file systems libblkid finds in it (on the whole disk, or in each MBR/GPT
// partition) are checked by their own read-only checker (e2fsck -fn, xfs_repair -n, fsck.vfat -n)
// through a private FUSE mount of the revision, so nothing is ever written and no root-only loop
// device is needed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "store/format.h"

namespace rbdvault::view {

// Nagios plugin states, which are also fsck's exit codes.
enum class FsckState { kOk = 0, kWarning = 1, kCritical = 2, kUnknown = 3 };
[[nodiscard]] const char* state_name(FsckState s);

struct FsckEntry {
  std::string where;  // "disk" or "part N"
  uint64_t offset = 0, size = 0;
  std::string type;     // blkid TYPE, empty when nothing was recognised
  std::string label;
  std::string checker;  // the command run, empty when none
  int exit_code = -1;   // the checker's, -1 when none ran
  FsckState state = FsckState::kOk;
  std::string summary;  // why the state, and the checker's last line
};

struct FsckResult {
  std::vector<FsckEntry> entries;
  FsckState state = FsckState::kOk;  // the worst of the entries (critical > unknown > warning > ok)
};

struct FsckOptions {
  uint64_t cache_bytes = 64ull << 20;
};

// Mounts the revision privately (a temporary directory, unmounted at the end even if we are
// killed: auto_unmount), probes it and runs the checkers one after another.
[[nodiscard]] FsckResult fsck_revision(const std::string& store_dir, const store::RevisionRecord& rev,
                                       const FsckOptions& options);

}  // namespace rbdvault::view
