#include "agent/scheduler.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <ctime>
#include <map>
#include <optional>
#include <stdexcept>

#include "agent/batch_config.h"
#include "agent/batch_run.h"
#include "agent/stoppable_sleep.h"
#include "store/gc.h"
#include "store/oplog.h"
#include "store/scrub.h"
#include "store/store.h"

namespace rbdvault::agent {
namespace {

// Real time, or real time running `scale` times faster from the moment the agent started.
class AgentClock {
 public:
  explicit AgentClock(double scale) : scale_(scale) {}
  int64_t now() const {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    return start_time_ + static_cast<int64_t>(elapsed * scale_);
  }
  // Sleeps `virtual_seconds` of agent time; returns early once `wake` turns true.
  void sleep(int64_t virtual_seconds, const std::function<bool()>& wake) const {
    sleep_unless(static_cast<double>(virtual_seconds) / scale_, wake);
  }

 private:
  double scale_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  int64_t start_time_ = static_cast<int64_t>(std::time(nullptr));
};

// When `op` last succeeded according to the store's operation log (unix seconds; 0: never).
int64_t last_success(const std::string& store_dir, const std::string& op) {
  int64_t last = 0;
  try {
    for (const store::OpRecord& r : store::OpLog(store_dir).read())
      if (r.op == op && r.result == "ok") last = std::max(last, r.end_ms / 1000);
  } catch (const std::exception& e) {
    spdlog::warn("agent: cannot read the operation log: {}", e.what());
  }
  return last;
}

// Runs a logged maintenance operation; errors are logged, never fatal to the agent. True if it
// succeeded.
// A maintenance run that completed and found damage: logged as failed, but done for its schedule
// (run again at once, a scrub that finds damage would scrub the whole store at every poll).
class FoundDamage : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

bool maintenance(const BatchConfig& c, const std::string& op, const std::string& args,
                 const std::function<uint64_t(store::Store&)>& body) {
  std::string id;
  std::optional<store::OpLog> log;
  try {
    const std::string dir = c.store_dir();
    log.emplace(dir);
    id = log->begin(op, "", args);
    auto st = store::Store::open(dir, op == "gc" ? store::OpenMode::kWriter : store::OpenMode::kReadOnly,
                                 "rbdvault agent " + op);
    const uint64_t bytes = body(*st);
    log->end(id, true, "", bytes);
    return true;
  } catch (const FoundDamage& e) {
    spdlog::error("agent: {} found damage: {}; run rbdvault scrub and repair", op, e.what());
    try {
      log->end(id, false, e.what(), 0);
    } catch (const std::exception&) {
    }
    return true;
  } catch (const std::exception& e) {
    spdlog::error("agent: {} failed: {}", op, e.what());
    if (!id.empty()) {
      try {
        log->end(id, false, e.what(), 0);
      } catch (const std::exception&) {
      }
    }
    return false;
  }
}

}  // namespace

void run_agent(const AgentOptions& o) {
  const AgentClock clock(o.time_scale > 0 ? o.time_scale : 1);
  const std::function<bool()> stop = [&] { return o.stop && o.stop(); };
  BatchConfig config = load_batch_config(o.config_path);
  spdlog::info("agent: started with {} ({} jobs){}", o.config_path, config.jobs.size(),
               o.time_scale != 1 ? " [time scale " + std::to_string(o.time_scale) + "]" : "");
  std::map<std::string, int64_t> not_before;  // images that failed: next try
  // Without history, maintenance waits for its first slot rather than starting with the agent.
  int64_t last_gc = last_success(config.local_dir(), "gc"), last_scrub = last_success(config.local_dir(), "scrub");
  if (last_gc == 0) last_gc = clock.now();
  if (last_scrub == 0) last_scrub = clock.now();
  bool reload = false;
  const std::function<bool()> wake = [&] {
    if (o.take_reload && o.take_reload()) reload = true;
    return reload || stop();
  };

  while (!stop()) {
    if (reload) {
      reload = false;
      try {
        config = load_batch_config(o.config_path);
        spdlog::info("agent: reloaded {} ({} jobs)", o.config_path, config.jobs.size());
      } catch (const std::exception& e) {
        spdlog::error("agent: {}; keeping the previous configuration", e.what());
      }
    }

    RunOptions ro;
    ro.stop = stop;
    ro.now = [&] { return clock.now(); };
    ro.not_before = not_before;
    ro.command_line = o.command_line;
    ro.metrics_when_idle = false;
    ro.fsck = o.fsck;
    try {
      RunReport report = run_batch(config, ro);
      for (const ImageOutcome& i : report.images) {
        if (i.result == ImageResult::kFailed)
          not_before[i.image] = clock.now() + 10 * o.poll_seconds;
        else if (i.result == ImageResult::kOk)
          not_before.erase(i.image);
      }
    } catch (const std::exception& e) {
      // Cluster unreachable, store locked by a manual run, ...: try again at the next poll.
      spdlog::error("agent: run failed: {}", e.what());
    }
    if (stop()) break;

    const int64_t now = clock.now();
    // A failed run (e.g. the store was locked by a manual command) is tried again at the next poll.
    if (config.maintenance.gc && config.maintenance.gc->due(last_gc, now) &&
        maintenance(config, "gc", o.command_line, [&](store::Store& st) {
          store::GcOptions g;
          g.max_unused = config.maintenance.gc_max_unused_percent / 100.0;
          store::GcResult r = store::gc(st, g);
          spdlog::info("agent: gc removed {} chunks, {} -> {} bytes of packs", r.chunks_removed, r.bytes_before,
                       r.bytes_after);
          if (r.packs_skipped)
            throw FoundDamage(std::to_string(r.packs_skipped) + " pack(s) not rewritten: a chunk in each is damaged");
          return r.bytes_before - r.bytes_after;
        }))
      last_gc = now;
    if (config.maintenance.scrub && config.maintenance.scrub->due(last_scrub, now) &&
        maintenance(config, "scrub", o.command_line, [&](store::Store& st) {
          store::ScrubOptions so;
          so.deep = config.maintenance.scrub_deep;
          store::ScrubReport r = store::scrub(st, so);
          for (auto& issue : r.issues) spdlog::error("agent: scrub: revision {}: {}", issue.revision, issue.problem);
          if (!r.clean()) throw FoundDamage(std::to_string(r.issues.size()) + " problems found");
          spdlog::info("agent: scrub checked {} revisions, clean", r.revisions_checked);
          return r.bytes_verified;
        }))
      last_scrub = now;
    clock.sleep(o.poll_seconds, wake);
  }
  spdlog::info("agent: stopped");
}

}  // namespace rbdvault::agent
