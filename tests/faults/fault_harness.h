// The fault-injection matrix (issue 12, point 5): for one operation, a clean run counts its fault
// points (every seam operation and every index write); then, for every point, one run fails it with
// EIO, one with ENOSPC, and one crashes there. After each run the store is reopened without faults
// (recovery runs) and checked against a model of what it held (check_after_run).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "store/revision_writer.h"
#include "store/store.h"
#include "fault_plan.h"

namespace rbdvault::faults {

namespace fs = std::filesystem;

inline constexpr uint32_t kBs = 64 * 1024;
// Small enough that each operation seals several packs and flushes the index several times.
store::WriterOptions small_writer_options();

// What the store held before the operation: revision id -> image name and bytes.
struct Model {
  struct Rev {
    std::string image;
    std::string bytes;
  };
  std::map<uint64_t, Rev> revisions;
};

// Writes `bytes` as a revision of rbd/`image`: every block (full) or only those differing from
// `parent` (a delta on the image's newest revision).
uint64_t backup(store::Store& store, const std::string& image, const std::string& bytes,
                const std::string* parent = nullptr);
// A revision's bytes, read through the store (every chunk verified).
std::string read_revision(store::Store& store, const store::RevisionRecord& rev);

struct Operation {
  std::string name;
  std::function<void(store::Store&)> run;        // may throw (the faults make it fail)
  std::function<void(const fs::path&)> prepare;  // on each run's copy, before it opens (optional)
  // After the reopen and before the checks (optional): e.g. repair run again without faults.
  std::function<void(store::Store&)> settle;
  std::set<uint64_t> may_remove;  // revisions the operation removes: gone, or reading as before
  std::optional<Model::Rev> may_add;  // the revision it writes: whole, or absent
  // Runs instead of `run`, on the closed store, with the faulty StoreIo: operations that open the
  // store themselves (rebuild-index) or whose open is the operation (recovery at open).
  std::function<void(const fs::path&, const store::StoreIo&)> run_closed;
  // After the run and before the reopen (optional): e.g. "the index is there".
  std::function<void(const fs::path&, const std::string& run)> after_run;
  // false: the operation returning does not mean `may_add`/`may_remove` took effect (a recovery
  // rolls a crashed backup back, or completes a crashed forget, at its own choice).
  bool effect_on_success = true;
};

// Runs `op` once on `dir` itself (no copy, no checks) with `mode` at point `at`; a crash drops
// what was not durable. Returns whether the operation returned; `trace` gets its points.
bool run_faulted(const fs::path& dir, const Operation& op, FaultMode mode, uint64_t at,
                 std::vector<std::string>* trace);

// An extra check on the reopened store, e.g. the rebuild-index comparison.
using ExtraCheck = std::function<void(store::Store&, const fs::path& dir)>;

// Every check of one run; records GoogleTest failures naming `run`. `succeeded`: the operation
// returned, so its effect must have survived (its revision exists, the removed ones are gone).
void check_after_run(const fs::path& dir, const Model& model, const Operation& op, const std::string& run,
                     bool succeeded, const ExtraCheck& extra);

struct MatrixResult {
  uint64_t points = 0;  // in a clean run of the operation
  uint64_t runs = 0;    // 3 per point, and one crash just after the operation returned
};

// The whole matrix of `op` on copies of the store in `base` (closed), in scratch dirs under `work`.
MatrixResult run_matrix(const fs::path& base, const fs::path& work, const Model& model, const Operation& op,
                        const ExtraCheck& extra = {});

}  // namespace rbdvault::faults
