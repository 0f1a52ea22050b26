// The batch [copy] step (agent/copy_step.h).
#include "agent/copy_step.h"

#include <spdlog/spdlog.h>

#include <optional>
#include <utility>

#include "agent/copy.h"
#include "agent/expire.h"
#include "agent/numbers.h"
#include "store/oplog.h"
#include "store/store.h"

namespace rbdvault::agent {
namespace {

std::pair<std::string, std::string> split_spec(const std::string& spec) {
  const size_t slash = spec.find('/');
  return {spec.substr(0, slash), spec.substr(slash + 1)};
}

}  // namespace

CopyStepOutcome run_copy_step(store::Store& source, const CopyConfig& c, const std::string& command_line) {
  CopyStepOutcome out;
  out.ran = true;
  out.to = c.to;
  std::optional<store::OpLog> log;
  std::string op_id;
  try {
    const std::string to_dir = resolve_store_location(c.to, c.access);
    if (store::Store::is_store(to_dir)) {
      log.emplace(to_dir);
      op_id = log->begin("copy", "", command_line);
    }
    auto target = store::Store::open(to_dir, store::OpenMode::kWriter, "rbdvault run: copy step");
    CopyOptions o;
    for (const auto& spec : c.images) o.images.push_back(split_spec(spec));
    const CopyResult r = copy_store(source, *target, o);
    out.revisions_copied = r.copied();
    out.revisions_skipped = r.skipped();
    out.bytes_read = r.bytes_read();
    out.bytes_written = r.bytes_written();
    out.bytes_deduplicated = r.bytes_deduplicated();
    if (!c.retention.empty()) {
      for (const auto& img : r.images) {
        auto t = target->find_image(img.pool, img.name);
        if (!t) continue;
        for (const auto& d : expire_image(*target, t->key, c.retention, false))
          if (!d.decision.keep) ++out.expired;
      }
    }
    out.ok = true;
    spdlog::info("copy to {}: {} revision(s) copied, {} skipped, {} expired", c.to, out.revisions_copied,
                 out.revisions_skipped, out.expired);
  } catch (const std::exception& e) {
    out.error = e.what();
    out.error_class = classify(std::current_exception());
    spdlog::error("copy to {}: {}", c.to, e.what());
  }
  if (log && !op_id.empty()) {
    try {
      log->end(op_id, out.ok, out.error, out.bytes_written);
    } catch (const std::exception& e) {
      spdlog::warn("{}", e.what());
    }
  }
  return out;
}

}  // namespace rbdvault::agent
