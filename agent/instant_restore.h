// Instant restore: a revision becomes a usable RBD image at once. The target is prepared as an RBD
// live migration in import-only mode whose source is the revision served over HTTP by this process
// (view::RevisionServer, the same verified bytes as `restore`); any librbd client can open it while
// librbd copies it in the background (execute); then the migration is committed and serving stops.
// docs/operations.md, "Instant restore".
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "store/format.h"

namespace rbdvault::rbd {
class Cluster;
}
namespace rbdvault::store {
class Store;
}

namespace rbdvault::agent {

struct InstantRestoreOptions {
  std::string store_dir;  // the server opens its own read-only view of the store
  // Where the revision is served. Only loopback: librbd's http stream sends no credentials, and the
  // server refuses to expose whole disks to the network without them (docs/operations.md).
  std::string listen_host = "127.0.0.1";
  uint16_t listen_port = 0;  // 0: any free port
  // Called once, as soon as the target exists and any client may open it, with the address
  // (HOST:PORT, the port bound) that clients must reach until the commit.
  std::function<void(const std::string& target, const std::string& address)> on_usable;
  // (bytes copied, revision size) during the copy; estimated from librbd's object count.
  std::function<void(uint64_t, uint64_t)> progress;
  // Polled while the restore runs (SIGTERM/SIGINT); true: abort the migration and return stopped.
  std::function<bool()> stop;
  // Check the revision's block map against its recorded digest before serving it (see
  // RestoreOptions::check_digest); every chunk served is verified against its hash in any case.
  bool check_digest = true;
};

struct InstantRestoreResult {
  bool stopped = false;         // stop() turned true: the migration was aborted, the target removed
  double usable_seconds = 0;    // from the start to the target being usable
  double seconds = 0;           // from the start to the commit
  std::string source_url;       // what the target read through to until the commit
};

// The target must not exist (StoreError kExists; a leftover migration target gets the command that
// removes it in the message). Any failure aborts the migration, which removes the target, and
// throws: a store error met while serving (a chunk failing its check: kCorrupt) keeps its class,
// Ceph's errors are CephError.
[[nodiscard]] InstantRestoreResult instant_restore(rbd::Cluster& cluster, store::Store& store,
                                                   const store::RevisionRecord& rev, const std::string& pool,
                                                   const std::string& name, const InstantRestoreOptions& options);

// True for a wildcard address (0.0.0.0, ::): the source URL must name an address the clients
// reach, so --listen refuses these (loopback serves this host only; this host's address, others too).
[[nodiscard]] bool is_wildcard_listen_address(const std::string& host);

}  // namespace rbdvault::agent
