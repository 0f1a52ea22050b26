// Scrub: proves a store consistent, per revision, from the index and the pack files alone.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace rbdvault::store {

class Store;

struct ScrubOptions {
  std::optional<uint64_t> image;     // only this image's revisions (store-wide checks still run)
  std::optional<uint64_t> revision;  // only this revision
  // Read and re-hash every referenced chunk's data, not only its header.
  bool deep = false;
};

struct ScrubIssue {
  uint64_t revision = 0;  // 0: not tied to one revision (store-wide accounting)
  std::string image;      // pool/name, empty when store-wide
  std::string problem;
};

struct ScrubReport {
  uint64_t revisions_checked = 0;
  uint64_t chunks_checked = 0;
  uint64_t bytes_verified = 0;  // chunk payload bytes re-hashed (deep)
  std::vector<ScrubIssue> issues;
  std::vector<uint64_t> damaged_revisions() const;
  bool clean() const { return issues.empty(); }
};

// Checks, per revision: parent pointer chain, block map entries within the revision's size, every
// referenced chunk present (index record, pack file, header, length; deep: content hash), and the
// whole-revision checksum. Store-wide: chunk reference counts against the block maps, pack records
// against pack files. Never modifies the store.
ScrubReport scrub(Store& store, const ScrubOptions& options);

}  // namespace rbdvault::store
