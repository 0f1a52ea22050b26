// rbdvault copy: the revisions a target store lacks, copied from a source store (an offsite copy).
// Built on the store API alone (store/store.h, store/revision_writer.h), so any two stores work,
// whatever backend holds them. docs/operations.md "Offsite copies" explains the rules.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "store/store.h"

namespace rbdvault::agent {

// How to reach a rados:POOL[/NS] location's cluster (unused for a directory): conf, id and
// keyring of its cluster (empty: librados' defaults), and its local index directory (empty:
// store::default_index_dir, one per pool and namespace).
struct StoreAccess {
  std::string conf, id, keyring, index_dir;
  int op_timeout_seconds = 0;  // 0: the backend's default
};

// The directory Store::open takes for a location, as --from/--to and the batch [copy] section give
// it: a store directory itself, or a rados: store's index directory, brought up to date from the
// pool first (store/rados_cache.h). A missing directory is kNotFound (3).
[[nodiscard]] std::string resolve_store_location(const std::string& location, const StoreAccess& access);
// resolve_store_location, then Store::open.
[[nodiscard]] std::unique_ptr<store::Store> open_store_location(const std::string& location, store::OpenMode mode,
                                                                const std::string& holder,
                                                                const StoreAccess& access = {});

struct CopyOptions {
  // POOL/IMAGE pairs to copy; empty: every image of the source.
  std::vector<std::pair<std::string, std::string>> images;
  // Bytes of revision content examined so far, out of the total (progress line); may be empty.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

struct CopiedRevision {
  uint64_t source_revision = 0, target_revision = 0;
  int64_t created = 0;
  uint64_t size = 0;
};
struct SkippedRevision {
  uint64_t source_revision = 0;
  std::string reason;
};

struct CopyImageResult {
  std::string pool, name;
  std::vector<CopiedRevision> copied;
  std::vector<SkippedRevision> skipped;
  uint64_t present = 0;  // source revisions the target already holds
  uint64_t bytes_read = 0;          // chunk data read from the source
  uint64_t bytes_written = 0;       // stored bytes of chunks new to the target
  uint64_t bytes_deduplicated = 0;  // block data referenced from chunks the target already held
};

struct CopyResult {
  std::vector<CopyImageResult> images;
  uint64_t copied() const;
  uint64_t skipped() const;
  uint64_t bytes_read() const;
  uint64_t bytes_written() const;
  uint64_t bytes_deduplicated() const;
};

// Copies into `target` (opened as writer) the revisions of `source` (read-only is enough) that the
// target lacks, one committed target revision per source revision. Throws StoreError: kNotFound for
// an image in `images` the source has no revisions of (before anything is written), kInvalid when
// the two stores are the same or have different block sizes, kCorrupt when a chunk read from the
// source fails its hash or a copied revision's digest differs from its source's.
CopyResult copy_store(store::Store& source, store::Store& target, const CopyOptions& options);

}  // namespace rbdvault::agent
