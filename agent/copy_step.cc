// The batch [copy] step (agent/copy_step.h).
#include "agent/copy_step.h"

#include <spdlog/spdlog.h>

#include <optional>
#include <sstream>
#include <utility>

#include "agent/copy.h"
#include "agent/expire.h"
#include "agent/numbers.h"
#include "store/oplog.h"
#include "store/store.h"

namespace rbdvault::agent {
namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

std::pair<std::string, std::string> split_spec(const std::string& spec) {
  const size_t slash = spec.find('/');
  return {spec.substr(0, slash), spec.substr(slash + 1)};
}

}  // namespace

bool apply_copy_key(CopyConfig& c, const std::string& key, const std::string& v) {
  if (key == "to") {
    if (v.empty()) throw std::invalid_argument("must name a store");
    c.to = v;
  } else if (key == "images") {
    std::istringstream list(v);
    for (std::string item; std::getline(list, item, ',');) {
      item = trim(item);
      const size_t slash = item.find('/');
      if (slash == std::string::npos || slash == 0 || slash + 1 == item.size() ||
          item.find('/', slash + 1) != std::string::npos)
        throw std::invalid_argument("'" + item + "': expected POOL/NAME");
      c.images.push_back(item);
    }
  } else if (key == "conf") {
    c.access.conf = v;
  } else if (key == "id") {
    c.access.id = v;
  } else if (key == "keyring") {
    c.access.keyring = v;
  } else if (key == "index-dir") {
    c.access.index_dir = v;
  } else if (key == "keep-last") {
    c.retention.keep_last = static_cast<int>(parse_whole(v, kKeepRange));
  } else if (key == "keep-hourly") {
    c.retention.keep_hourly = static_cast<int>(parse_whole(v, kKeepRange));
  } else if (key == "keep-daily") {
    c.retention.keep_daily = static_cast<int>(parse_whole(v, kKeepRange));
  } else if (key == "keep-weekly") {
    c.retention.keep_weekly = static_cast<int>(parse_whole(v, kKeepRange));
  } else if (key == "keep-monthly") {
    c.retention.keep_monthly = static_cast<int>(parse_whole(v, kKeepRange));
  } else {
    return false;
  }
  return true;
}

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
