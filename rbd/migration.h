// RBD live migration in import-only mode (Ceph 16.2+): a new image that reads through to an
// external source (a raw stream over HTTP or from a file) from the moment it is prepared, then is
// filled in the background (execute) and detached from the source (commit). The instant restore's
// target; see docs/operations.md ("Instant restore").
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "rbd/image_writer.h"

namespace rbdvault::rbd {

class Cluster;

// The source spec of a raw image streamed from `url` (http:// or https://), as
// `rbd migration prepare --import-only --source-spec` takes it.
[[nodiscard]] std::string raw_http_source_spec(const std::string& url);
// The same for a local file (tests, and clients on this host only).
[[nodiscard]] std::string raw_file_source_spec(const std::string& path);

struct MigrationStatus {
  // "error", "preparing", "prepared", "executing", "executed", "aborting" or "unknown".
  std::string state;
  std::string description;  // librbd's text, e.g. "42% complete"
};

// The migration state of pool/name; nullopt when the image exists but is not being migrated.
// Throws CephError (ENOENT: no such image).
[[nodiscard]] std::optional<MigrationStatus> migration_status(Cluster& cluster, const std::string& pool,
                                                              const std::string& name);

// Aborts the migration whose target is pool/name, which removes the target (what an operator does
// by hand with `rbd migration abort` after a killed instant restore). Throws CephError.
void abort_migration(Cluster& cluster, const std::string& pool, const std::string& name);

// A prepared import: the target image exists and is usable by any librbd client as soon as the
// constructor returns. Until commit() succeeds the destructor aborts the migration, which removes
// the target: a failed or interrupted instant restore leaves no image behind.
class ImportMigration {
 public:
  // Progress of execute(): (objects copied, objects in the image), as librbd counts; the last call
  // may come before the end. Called on librbd's threads.
  using Progress = std::function<void(uint64_t done, uint64_t total)>;

  // Creates pool/name with `image`'s size-independent options (order, features; the size comes
  // from the source). An existing image is refused with CephError(-EEXIST) and left untouched.
  ImportMigration(Cluster& cluster, const std::string& pool, const std::string& name, const std::string& source_spec,
                  const NewImageOptions& image);
  ~ImportMigration();
  ImportMigration(const ImportMigration&) = delete;
  ImportMigration& operator=(const ImportMigration&) = delete;

  // Copies every block from the source into the target. librbd gives no way to interrupt it: to
  // stop early, make the source fail (stop serving it); execute then throws and the destructor
  // aborts. Throws CephError.
  void execute(const Progress& progress);
  // Ends the migration: the target no longer needs the source. Throws CephError.
  void commit();
  // Aborts now (removing the target) and reports a failure, unlike the destructor.
  void abort();

  const std::string& target() const { return target_; }

 private:
  Cluster& cluster_;
  std::string pool_, name_, target_;
  bool done_ = false;  // committed or aborted: nothing for the destructor to do
};

}  // namespace rbdvault::rbd
