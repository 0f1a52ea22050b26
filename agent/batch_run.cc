#include "agent/batch_run.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "agent/backup.h"
#include "agent/expire.h"
#include "agent/group_run.h"
#include "agent/group_snapshot.h"
#include "agent/host_slots.h"
#include "agent/rate_limiter.h"
#include "agent/status.h"
#include "agent/stoppable_sleep.h"
#include "rbd/cluster.h"
#include "rbd/error.h"
#include "rbd/image.h"
#include "store/oplog.h"
#include "store/store.h"

namespace rbdvault::agent {
namespace {

// Errors worth another attempt: the cluster was busy or briefly unreachable. Anything else (no
// such image, permission, corruption) fails at once.
bool transient(int code) {
  switch (-code) {
    case ETIMEDOUT:
    case EAGAIN:
    case EBUSY:
    case ESHUTDOWN:
    case ECONNRESET:
    case ECONNREFUSED:
    case ENOTCONN:
    case EINTR:
      return true;
    default:
      return false;
  }
}

int64_t realtime_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Seconds to wait after failed attempt `attempt` (1-based): retry-delay, doubling each time.
double backoff(const ImageSettings& s, unsigned attempt) {
  return static_cast<double>(s.retry_delay_seconds) * static_cast<double>(1ull << std::min(attempt - 1, 16u));
}

struct Task {
  size_t index;  // into report.images
  rbd::ImageSpec spec;
  std::optional<TakenSnapshot> taken;  // a consistency group's snapshot to back up from
};

rbd::ImageSpec group_member_spec(const std::string& image) {
  const size_t slash = image.find('/');
  return rbd::ImageSpec{image.substr(0, slash), image.substr(slash + 1), ""};
}

}  // namespace

RunReport run_batch(const BatchConfig& c, const RunOptions& o) {
  const std::function<int64_t()> now = o.now ? o.now : [] { return static_cast<int64_t>(std::time(nullptr)); };
  const std::function<bool()> stop = [&] { return o.stop && o.stop(); };
  if (!o.job.empty() && std::none_of(c.jobs.begin(), c.jobs.end(), [&](const JobConfig& j) { return j.name == o.job; }))
    throw ConfigError(c.path + ": no [job." + o.job + "] section");

  rbd::ConnectOptions co;
  co.conf_path = c.ceph_conf;
  co.client_id = c.ceph_id;
  co.keyring = c.ceph_keyring;
  co.timeout_seconds = c.connect_timeout;
  co.op_timeout_seconds = c.op_timeout;
  rbd::Cluster cluster(co);
  // Plan on a read-only view: a pass with nothing due (most of the agent's polls) neither takes
  // the writer lock nor writes anything, so manual commands are not refused meanwhile.
  const std::string store_dir = c.store_dir();
  auto st = store::Store::open(store_dir, store::OpenMode::kReadOnly);

  // Plan: which images each job selects, and which of them are due.
  RunReport report;
  std::vector<ImageSettings> settings;
  std::vector<Task> tasks;
  std::set<std::string> claimed;  // an image selected by two jobs belongs to the first
  auto outcome = [](const std::string& image, const std::string& job) {
    ImageOutcome out;
    out.image = image;
    out.job = job;
    return out;
  };
  auto add = [&](ImageOutcome out, const ImageSettings& s) {
    report.images.push_back(std::move(out));
    settings.push_back(s);
    return report.images.size() - 1;
  };
  for (const JobConfig& job : c.jobs) {
    if (!o.job.empty() && job.name != o.job) continue;
    std::vector<rbd::ImageEntry> listing;
    std::string list_error;
    ErrorClass list_class = ErrorClass::kOk;
    for (unsigned attempt = 1;; ++attempt) {
      try {
        listing = cluster.list_images(job.pool);
        list_error.clear();
        break;
      } catch (const rbd::CephError& e) {
        list_error = e.what();
        list_class = classify(std::current_exception());
        if (!transient(e.code()) || attempt > job.settings.retries || stop()) break;
        const double delay = backoff(job.settings, attempt);
        spdlog::warn("job {}: {} (attempt {} of {}, retrying in {:.0f}s)", job.name, e.what(), attempt,
                     job.settings.retries + 1, delay);
        if (!sleep_unless(delay, stop)) break;
      }
    }
    if (!list_error.empty()) {
      ImageOutcome out = outcome(job.pool + "/*", job.name);
      out.result = ImageResult::kFailed;
      out.error = list_error;
      out.error_class = list_class;
      spdlog::error("job {}: {}", job.name, list_error);
      add(std::move(out), job.settings);
      continue;
    }
    std::set<std::string> present;
    for (const rbd::ImageEntry& e : listing) {
      present.insert(e.name);
      const std::string full = job.pool + "/" + e.name;
      if (!job.selects(job.pool, e.name) || !claimed.insert(full).second) continue;
      const ImageSettings s = c.settings_for(job, full);
      ImageOutcome out = outcome(full, job.name);
      if (s.skip) {
        out.result = ImageResult::kSkipped;
      } else {
        auto img = st->find_image(job.pool, e.name);
        auto latest = img ? st->latest_revision(img->key) : std::nullopt;
        const int64_t t = now();
        bool due = o.force || s.schedule.due(latest ? latest->created : 0, t, jitter_offset(full, s.jitter_seconds));
        auto nb = o.not_before.find(full);
        if (!o.force && nb != o.not_before.end() && t < nb->second) due = false;
        out.result = !due ? ImageResult::kNotDue : o.dry_run ? ImageResult::kWouldBackUp : ImageResult::kCancelled;
      }
      const size_t index = add(std::move(out), s);
      if (report.images[index].result == ImageResult::kCancelled)
        tasks.push_back(Task{index, rbd::ImageSpec{job.pool, e.name, ""}, std::nullopt});
    }
    // Backed up before, gone from the pool now: reported, history kept.
    for (const store::ImageRecord& img : st->images()) {
      const std::string full = img.pool + "/" + img.name;
      if (img.pool != job.pool || present.count(img.name) || !job.selects(img.pool, img.name) ||
          !claimed.insert(full).second)
        continue;
      ImageOutcome out = outcome(full, job.name);
      out.result = ImageResult::kMissing;
      out.error = "no longer in pool " + img.pool + "; its revisions are kept";
      add(std::move(out), job.settings);
    }
  }
  // A consistency group is backed up whole once a member is due.
  const ImageResult planned = o.dry_run ? ImageResult::kWouldBackUp : ImageResult::kCancelled;
  const std::vector<GroupPlan> groups = plan_groups(c, report, planned, o.job, [&](const std::string& spec) {
    const rbd::ImageSpec g = group_member_spec(spec);
    return cluster.list_group_images(g.pool, g.image);
  });
  for (const GroupPlan& g : groups)
    for (size_t i : g.members)
      if (g.due && !o.dry_run && std::none_of(tasks.begin(), tasks.end(), [&](const Task& t) { return t.index == i; }))
        tasks.push_back(Task{i, group_member_spec(report.images[i].image), std::nullopt});
  for (const auto& [image, override] : c.image_overrides)
    if (o.job.empty() && !claimed.count(image))
      spdlog::warn("{}: [image.{}] matches no image a job selected", override.where, image);
  spdlog::info("run {}: {} images selected, {} due{}", c.path, report.images.size(), tasks.size(),
               o.dry_run ? " (dry run)" : "");

  // Back up, images in parallel. Every task's outcome starts as "cancelled" and is overwritten
  // when it runs, so a stop leaves the untouched ones correctly reported.
  RateLimiter read_limit(c.limits.read_bandwidth), write_limit(c.limits.write_bandwidth);
  store::OpLog oplog(store_dir);
  std::atomic<size_t> next{0}, running{0}, peak{0}, done{0};
  std::atomic<uint64_t> bytes_read{0};
  std::mutex progress_mu;
  if (!tasks.empty()) {
    st.reset();
    st = store::Store::open(store_dir, store::OpenMode::kWriter, "rbdvault run --config " + c.path);
  }
  // Group snapshots first, each group's members back to back; the backups then read from them
  // in parallel like any other. A member without its snapshot does not run.
  for (size_t k = 0; k < groups.size() && !o.dry_run && !stop(); ++k) {
    if (!groups[k].due) continue;
    auto taken = snapshot_group(cluster, *st, groups[k], report, report.groups[k], o.now ? now() : 0);
    for (size_t j = 0; j < groups[k].members.size(); ++j)
      for (Task& t : tasks)
        if (t.index == groups[k].members[j]) t.taken = std::move(taken[j]);
  }
  // Members without a snapshot (it failed, or a stop came first) are not backed up on their own.
  std::erase_if(tasks, [&](const Task& t) { return !t.taken && !report.images[t.index].group.empty(); });
  // Each attempt holds a host slot only while it works: a backup waiting to retry gives its slot
  // to someone else. The interval recorded is the last attempt's.
  auto attempt_in_slot = [&](ImageOutcome& out, const std::function<void()>& body) {
    HostSlot slot;
    if (c.limits.host_slots > 0) {
      slot = HostSlot::acquire(c.limits.host_slots_dir, c.limits.host_slots, stop);
      if (!slot.held()) throw BackupCancelled("stopped while waiting for a host slot");
    }
    out.started_ns = realtime_ns();
    const size_t now_running = ++running;
    for (size_t p = peak.load(); now_running > p && !peak.compare_exchange_weak(p, now_running);) {
    }
    struct Leave {
      std::atomic<size_t>& running;
      ImageOutcome& out;
      ~Leave() {
        --running;
        out.finished_ns = realtime_ns();  // before the slot is released
      }
    } leave{running, out};
    body();
  };
  auto backup_one = [&](const Task& t) {
    ImageOutcome& out = report.images[t.index];
    const ImageSettings& s = settings[t.index];
    std::string op_id;
    try {
      op_id = oplog.begin("backup", out.image, o.command_line);
    } catch (const std::exception& e) {
      spdlog::warn("{} (continuing without the operation log)", e.what());
    }
    BackupOptions bo;
    bo.full_every = s.full_every;
    bo.verify_sample_percent = s.verify_sample_percent;
    bo.reads_in_flight = s.reads_in_flight;
    bo.hooks = s.hooks;
    bo.taken = t.taken ? &*t.taken : nullptr;
    // A group member's snapshot belongs to its group's instant: a second attempt would need a new
    // one, so members are not retried within the run (the next run backs the group up again).
    const unsigned retries = t.taken ? 0 : s.retries;
    bo.cancelled = stop;
    bo.before_read = [&](uint64_t n) { read_limit.take(n, stop); };
    bo.after_store = [&](uint64_t n) { write_limit.take(n, stop); };
    for (unsigned attempt = 1;; ++attempt) {
      out.attempts = attempt;
      bo.created = o.now ? now() : 0;
      try {
        BackupResult r;
        attempt_in_slot(out, [&] { r = backup_image(cluster, *st, t.spec, bo); });
        out.result = ImageResult::kOk;
        out.error.clear();
        out.error_class = ErrorClass::kOk;
        out.revision = r.revision.id;
        out.kind = r.revision.kind == store::RevisionKind::kFull ? "full" : "delta";
        out.consistency = store::consistency_name(r.revision.flags);
        out.group_run = r.revision.group_run;
        out.size = r.revision.size;
        out.bytes_read = r.revision.bytes_read;
        out.bytes_stored = r.revision.bytes_stored;
        out.seconds = r.seconds;
        bytes_read += r.revision.bytes_read;
        if (r.verify_mismatches) {  // committed, but wrong somewhere: an alarm, not a success
          out.result = ImageResult::kFailed;
          out.error = verify_failure_message(r);
          out.error_class = ErrorClass::kDamage;
        }
        break;
      } catch (const BackupCancelled& e) {
        out.result = ImageResult::kCancelled;
        out.error = e.what();
        break;
      } catch (const rbd::CephError& e) {
        out.result = ImageResult::kFailed;
        out.error = e.what();
        out.error_class = classify(std::current_exception());
        if (!transient(e.code()) || attempt > retries || stop()) break;
        const double delay = backoff(s, attempt);
        spdlog::warn("backup {}: {} (attempt {} of {}, retrying in {:.0f}s)", out.image, e.what(), attempt,
                     retries + 1, delay);
        if (!sleep_unless(delay, stop)) break;
      } catch (const std::exception& e) {
        out.result = ImageResult::kFailed;
        out.error = e.what();
        out.error_class = classify(std::current_exception());
        break;
      }
    }
    if (out.result == ImageResult::kFailed) spdlog::error("backup {}: {}", out.image, out.error);
    if (!op_id.empty()) {
      try {
        oplog.end(op_id,
                  out.result == ImageResult::kOk          ? "ok"
                  : out.result == ImageResult::kCancelled ? "cancelled"
                                                          : "failed",
                  out.error, out.bytes_read);
      } catch (const std::exception& e) {
        spdlog::warn("{}", e.what());
      }
    }
  };
  auto worker = [&] {
    for (;;) {
      const size_t i = next++;
      if (i >= tasks.size() || stop()) return;
      ImageOutcome& out = report.images[tasks[i].index];
      try {
        backup_one(tasks[i]);
      } catch (const std::exception& e) {
        out.result = ImageResult::kFailed;
        out.error = e.what();
        out.error_class = classify(std::current_exception());
        spdlog::error("backup {}: {}", out.image, e.what());
      } catch (...) {
        out.result = ImageResult::kFailed;
        out.error = "unknown error";
        out.error_class = ErrorClass::kInternal;
      }
      const size_t d = ++done;
      if (o.progress) {
        try {
          std::lock_guard<std::mutex> g(progress_mu);
          o.progress(d, tasks.size(), bytes_read.load());
        } catch (...) {
        }
      }
    }
  };
  {
    std::vector<std::thread> threads;
    const size_t n = std::min(c.limits.images_in_parallel, tasks.size());
    for (size_t i = 0; i < n; ++i) threads.emplace_back(worker);
    for (auto& t : threads) t.join();
  }
  report.peak_parallel = peak.load();
  report.stopped = stop();
  // A group snapshot whose backup did not commit (failed, stopped, never started) is removed, as
  // backup_image removes its own.
  for (const Task& t : tasks)
    if (t.taken && report.images[t.index].revision == 0) remove_group_snapshot(cluster, t.spec, t.taken->name);
  for (size_t k = 0; k < groups.size(); ++k) finish_group(groups[k], report, report.groups[k]);
  if (!o.dry_run) fsck_new_revisions(*st, oplog, o.fsck, settings, stop, o.command_line, report);

  // Retention for the images backed up now (for the others nothing changed since their last
  // backup's pass); missing images keep their history exactly as it was.
  if (!o.dry_run && !report.stopped && !tasks.empty()) {
    for (size_t i = 0; i < report.images.size(); ++i) {
      ImageOutcome& out = report.images[i];
      const RetentionPolicy& policy = settings[i].retention;
      if (policy.empty() || out.result != ImageResult::kOk) continue;
      const size_t slash = out.image.find('/');
      auto img = st->find_image(out.image.substr(0, slash), out.image.substr(slash + 1));
      if (!img) continue;
      std::string op_id;
      try {
        op_id = oplog.begin("expire", out.image, o.command_line);
        for (auto& d : expire_image(*st, img->key, policy, false))
          if (!d.decision.keep) ++out.expired;
        oplog.end(op_id, true, "", 0);
        if (out.expired) spdlog::info("expire {}: {} revision(s) forgotten", out.image, out.expired);
      } catch (const std::exception& e) {
        spdlog::error("expire {}: {}", out.image, e.what());
        if (!op_id.empty()) oplog.end(op_id, false, e.what(), 0);
        if (out.result != ImageResult::kFailed) {
          out.result = ImageResult::kFailed;
          out.error = std::string("retention: ") + e.what();
          out.error_class = classify(std::current_exception());
        }
      }
    }
  }

  // The offsite copy, after the backups it copies (only when some were due: a poll with nothing
  // new has nothing to copy; a failed copy is retried by the next run that backs something up).
  if (c.copy && !o.dry_run && !report.stopped && !tasks.empty()) {
    CopyConfig copy = *c.copy;  // a rados: target's cluster: [copy]'s keys, else [store]'s, else [ceph]'s
    auto pick = [](std::string& v, const std::string& store, const std::string& ceph) {
      if (v.empty()) v = store.empty() ? ceph : store;
    };
    pick(copy.access.conf, c.store_conf, c.ceph_conf);
    pick(copy.access.id, c.store_id, c.ceph_id);
    pick(copy.access.keyring, c.store_keyring, c.ceph_keyring);
    copy.access.op_timeout_seconds = c.op_timeout;
    report.copy = run_copy_step(*st, copy, o.command_line);
  }

  if (!o.dry_run && !c.metrics_file.empty() && (o.metrics_when_idle || !tasks.empty() || !report.ok())) {
    try {
      write_file_atomically(c.metrics_file,
                            prometheus_metrics(collect_status(*st), now()) + prometheus_store_metrics(*st));
    } catch (const std::exception& e) {
      spdlog::error("metrics file {}: {}", c.metrics_file, e.what());
    }
  }
  spdlog::info("run {}: {} ok, {} failed, {} not due, {} missing{}", c.path, report.count(ImageResult::kOk),
               report.count(ImageResult::kFailed), report.count(ImageResult::kNotDue),
               report.count(ImageResult::kMissing), report.stopped ? ", stopped early" : "");
  return report;
}

}  // namespace rbdvault::agent
