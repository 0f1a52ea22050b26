#include "agent/fsck_step.h"

#include <spdlog/spdlog.h>

#include "agent/batch_run.h"
#include "store/oplog.h"
#include "store/store.h"

namespace rbdvault::agent {

const char* fsck_state_name(int state) {
  static const char* const kNames[] = {"OK", "WARNING", "CRITICAL", "UNKNOWN"};
  return state >= 0 && state <= 3 ? kNames[state] : "";
}

namespace {

FsckVerdict check_one(store::Store& st, const FsckFunction& fsck, uint64_t revision) {
  if (!fsck) return {3, "fsck is not available in this program"};
  const auto rev = st.revision(revision);
  if (!rev) return {3, "revision " + std::to_string(revision) + " is gone"};
  try {
    return fsck(st.dir().string(), *rev);
  } catch (const std::exception& e) {
    return {3, e.what()};  // the checker could not run: say so, the backup stands
  }
}

}  // namespace

void fsck_new_revisions(store::Store& st, store::OpLog& oplog, const FsckFunction& fsck,
                        const std::vector<ImageSettings>& settings, const std::function<bool()>& stop,
                        const std::string& command_line, RunReport& report) {
  for (size_t i = 0; i < report.images.size(); ++i) {
    ImageOutcome& out = report.images[i];
    if (!settings[i].fsck || out.result != ImageResult::kOk || out.revision == 0) continue;
    if (stop && stop()) return;
    const std::string target = out.image + "@" + std::to_string(out.revision);
    std::string op_id;
    try {
      op_id = oplog.begin("fsck", target, command_line);
    } catch (const std::exception& e) {
      spdlog::warn("{} (continuing without the operation log)", e.what());
    }
    const FsckVerdict v = check_one(st, fsck, out.revision);
    out.fsck_state = v.state;
    out.fsck_summary = v.summary;
    const std::string line = std::string(fsck_state_name(v.state)) + ": " + v.summary;
    if (v.state == 0)
      spdlog::info("fsck {}: {}", target, line);
    else
      spdlog::warn("fsck {}: {}", target, line);
    if (op_id.empty()) continue;
    try {
      oplog.end(op_id, v.state == 0, v.state == 0 ? "" : line, 0);
    } catch (const std::exception& e) {
      spdlog::warn("{}", e.what());
    }
  }
}

}  // namespace rbdvault::agent
