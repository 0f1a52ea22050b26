// The batch run's fsck step (`fsck = yes`): after the backups, the file systems in each image's new
// revision are checked read-only from the store (never from Ceph). The check itself lives in view/
// (FUSE + libblkid + the checkers), which the agent does not link: the command line passes it in.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "agent/batch_config.h"
#include "store/format.h"

namespace rbdvault::store {
class OpLog;
class Store;
}  // namespace rbdvault::store

namespace rbdvault::agent {

struct RunReport;

// A checker's verdict in Nagios terms (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN) and one line why.
struct FsckVerdict {
  int state = 3;
  std::string summary;
};
// (store directory, revision)
using FsckFunction = std::function<FsckVerdict(const std::string&, const store::RevisionRecord&)>;

// "OK", "WARNING", "CRITICAL", "UNKNOWN"; "" for anything else (no check ran).
[[nodiscard]] const char* fsck_state_name(int state);

// Checks the new revision of every image backed up by this run whose settings ask for it, one
// after another, each as an "fsck" operation in the log (image "POOL/NAME@REV"; the error of a
// non-OK result starts with its state). A damaged file system does not fail the image: it is
// reported in the outcome (fsck_state/fsck_summary), and `status`/`check` raise it.
void fsck_new_revisions(store::Store& st, store::OpLog& oplog, const FsckFunction& fsck,
                        const std::vector<ImageSettings>& settings, const std::function<bool()>& stop,
                        const std::string& command_line, RunReport& report);

}  // namespace rbdvault::agent
