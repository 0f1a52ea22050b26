// The doing half of a batch run: the plan (agent/batch_plan.h) is carried out: group snapshots,
// backups in parallel within the limits, retries, then fsck, retention, the copy step and metrics.
#include "agent/batch_run.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <memory>
#include <mutex>
#include <thread>

#include "agent/backup.h"
#include "agent/batch_plan.h"
#include "agent/expire.h"
#include "agent/host_slots.h"
#include "agent/rate_limiter.h"
#include "agent/status.h"
#include "agent/stoppable_sleep.h"
#include "rbd/error.h"
#include "store/oplog.h"
#include "store/store.h"

namespace rbdvault::agent {
namespace {

int64_t realtime_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

rbd::ConnectOptions connect_options(const BatchConfig& c) {
  rbd::ConnectOptions co;
  co.conf_path = c.ceph_conf;
  co.client_id = c.ceph_id;
  co.keyring = c.ceph_keyring;
  co.timeout_seconds = c.connect_timeout;
  co.op_timeout_seconds = c.op_timeout;
  return co;
}

void record_success(ImageOutcome& out, const BackupResult& r) {
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
  if (r.verify_mismatches) {  // committed, but wrong somewhere: an alarm, not a success
    out.result = ImageResult::kFailed;
    out.error = verify_failure_message(r);
    out.error_class = ErrorClass::kDamage;
  }
}

void record_failure(ImageOutcome& out, const std::string& what) {
  out.result = ImageResult::kFailed;
  out.error = what;
  out.error_class = classify(std::current_exception());
}

const char* oplog_result(ImageResult r) {
  return r == ImageResult::kOk ? "ok" : r == ImageResult::kCancelled ? "cancelled" : "failed";
}

class Runner {
 public:
  Runner(const BatchConfig& c, const RunOptions& o, rbd::Cluster& cluster, BatchPlan& plan,
         const std::function<int64_t()>& now, const std::function<bool()>& stop)
      : c_(c), o_(o), cluster_(cluster), plan_(plan), report_(plan.report), now_(now), stop_(stop),
        read_limit_(c.limits.read_bandwidth), write_limit_(c.limits.write_bandwidth), oplog_(c.store_dir()) {}

  void run(store::Store& st) {
    st_ = &st;
    take_group_snapshots();
    // Members without a snapshot (it failed, or a stop came first) are not backed up on their own.
    // A failed one is still a failed backup of that image in the operation log, which status,
    // check and the metrics read: else its last result stayed the previous run's "ok".
    for (const BatchTask& t : plan_.tasks)
      if (!t.taken && !report_.images[t.index].group.empty() && report_.images[t.index].result == ImageResult::kFailed)
        log_failed_backup(report_.images[t.index]);
    std::erase_if(plan_.tasks, [&](const BatchTask& t) { return !t.taken && !report_.images[t.index].group.empty(); });
    run_workers();
    report_.peak_parallel = peak_.load();
    report_.stopped = stop_();
    // A group snapshot whose backup did not commit (failed, stopped, never started) is removed, as
    // backup_image removes its own.
    for (const BatchTask& t : plan_.tasks)
      if (t.taken && report_.images[t.index].revision == 0) remove_group_snapshot(cluster_, t.spec, t.taken->name);
    for (size_t k = 0; k < plan_.groups.size(); ++k) finish_group(plan_.groups[k], report_, report_.groups[k]);
    if (!o_.dry_run) fsck_new_revisions(st, oplog_, o_.fsck, plan_.settings, stop_, o_.command_line, report_);
    if (!o_.dry_run && !report_.stopped && !plan_.tasks.empty()) {
      expire_backed_up();
      copy_offsite();
    }
  }

 private:
  // Group snapshots first, each group's members back to back; the backups then read from them in
  // parallel like any other. A member without its snapshot does not run.
  void take_group_snapshots() {
    for (size_t k = 0; k < plan_.groups.size() && !o_.dry_run && !stop_(); ++k) {
      const GroupPlan& g = plan_.groups[k];
      if (!g.due) continue;
      auto taken = snapshot_group(cluster_, *st_, g, report_, report_.groups[k], o_.now ? now_() : 0);
      for (size_t j = 0; j < g.members.size(); ++j)
        for (BatchTask& t : plan_.tasks)
          if (t.index == g.members[j]) t.taken = std::move(taken[j]);
    }
  }

  // Images in parallel. Every task's outcome starts as "cancelled" and is overwritten when it runs,
  // so a stop leaves the untouched ones correctly reported.
  void run_workers() {
    std::vector<std::thread> threads;
    const size_t n = std::min(c_.limits.images_in_parallel, plan_.tasks.size());
    for (size_t i = 0; i < n; ++i) threads.emplace_back([this] { worker(); });
    for (auto& t : threads) t.join();
  }

  void worker() {
    for (;;) {
      const size_t i = next_++;
      if (i >= plan_.tasks.size() || stop_()) return;
      ImageOutcome& out = report_.images[plan_.tasks[i].index];
      try {
        backup_one(plan_.tasks[i]);
      } catch (const std::exception& e) {
        record_failure(out, e.what());
        spdlog::error("backup {}: {}", out.image, e.what());
      } catch (...) {
        out.result = ImageResult::kFailed;
        out.error = "unknown error";
        out.error_class = ErrorClass::kInternal;
      }
      report_progress(++done_);
    }
  }

  void report_progress(size_t done) {
    if (!o_.progress) return;
    try {
      std::lock_guard<std::mutex> g(progress_mu_);
      o_.progress(done, plan_.tasks.size(), bytes_read_.load());
    } catch (...) {
    }
  }

  BackupOptions backup_options(const BatchTask& t, const ImageSettings& s) {
    BackupOptions bo;
    bo.full_every = s.full_every;
    bo.verify_sample_percent = s.verify_sample_percent;
    bo.reads_in_flight = s.reads_in_flight;
    bo.hooks = s.hooks;
    bo.taken = t.taken ? &*t.taken : nullptr;
    bo.cancelled = stop_;
    bo.before_read = [this](uint64_t n) { read_limit_.take(n, stop_); };
    bo.after_store = [this](uint64_t n) { write_limit_.take(n, stop_); };
    return bo;
  }

  void log_failed_backup(const ImageOutcome& out) {
    spdlog::error("backup {}: {}", out.image, out.error);
    try {
      oplog_.end(oplog_.begin("backup", out.image, o_.command_line), false, out.error, 0);
    } catch (const std::exception& e) {
      spdlog::warn("{}", e.what());
    }
  }

  void backup_one(const BatchTask& t) {
    ImageOutcome& out = report_.images[t.index];
    const ImageSettings& s = plan_.settings[t.index];
    std::string op_id;
    try {
      op_id = oplog_.begin("backup", out.image, o_.command_line);
    } catch (const std::exception& e) {
      spdlog::warn("{} (continuing without the operation log)", e.what());
    }
    BackupOptions bo = backup_options(t, s);
    // A group member's snapshot belongs to its group's instant: a second attempt would need a new
    // one, so members are not retried within the run (the next run backs the group up again).
    const unsigned retries = t.taken ? 0 : s.retries;
    for (unsigned attempt = 1;; ++attempt) {
      out.attempts = attempt;
      bo.created = o_.now ? now_() : 0;
      if (!attempt_backup(t, bo, out, attempt > retries)) break;
      const double delay = retry_backoff(s, attempt);
      spdlog::warn("backup {}: {} (attempt {} of {}, retrying in {:.0f}s)", out.image, out.error, attempt,
                   retries + 1, delay);
      if (!sleep_unless(delay, stop_)) break;
    }
    if (out.result == ImageResult::kFailed) spdlog::error("backup {}: {}", out.image, out.error);
    if (op_id.empty()) return;
    try {
      oplog_.end(op_id, oplog_result(out.result), out.error, out.bytes_read);
    } catch (const std::exception& e) {
      spdlog::warn("{}", e.what());
    }
  }

  // One attempt; true if another is worth it (a transient Ceph error, attempts left, no stop).
  bool attempt_backup(const BatchTask& t, const BackupOptions& bo, ImageOutcome& out, bool last) {
    try {
      BackupResult r;
      attempt_in_slot(out, [&] { r = backup_image(cluster_, *st_, t.spec, bo); });
      record_success(out, r);
      bytes_read_ += r.revision.bytes_read;
      return false;
    } catch (const BackupCancelled& e) {
      out.result = ImageResult::kCancelled;
      out.error = e.what();
      return false;
    } catch (const rbd::CephError& e) {
      record_failure(out, e.what());
      return transient_ceph_error(e.code()) && !last && !stop_();
    } catch (const std::exception& e) {
      record_failure(out, e.what());
      return false;
    }
  }

  // Each attempt holds a host slot only while it works: a backup waiting to retry gives its slot to
  // someone else. The interval recorded is the last attempt's.
  void attempt_in_slot(ImageOutcome& out, const std::function<void()>& body) {
    HostSlot slot;
    if (c_.limits.host_slots > 0) {
      slot = HostSlot::acquire(c_.limits.host_slots_dir, c_.limits.host_slots, stop_);
      if (!slot.held()) throw BackupCancelled("stopped while waiting for a host slot");
    }
    out.started_ns = realtime_ns();
    const size_t now_running = ++running_;
    for (size_t p = peak_.load(); now_running > p && !peak_.compare_exchange_weak(p, now_running);) {
    }
    struct Leave {
      std::atomic<size_t>& running;
      ImageOutcome& out;
      ~Leave() {
        --running;
        out.finished_ns = realtime_ns();  // before the slot is released
      }
    } leave{running_, out};
    body();
  }

  // Retention for the images backed up now (for the others nothing changed since their last
  // backup's pass); missing images keep their history exactly as it was.
  void expire_backed_up() {
    for (size_t i = 0; i < report_.images.size(); ++i) {
      ImageOutcome& out = report_.images[i];
      const RetentionPolicy& policy = plan_.settings[i].retention;
      if (policy.empty() || out.result != ImageResult::kOk) continue;
      const size_t slash = out.image.find('/');
      auto img = st_->find_image(out.image.substr(0, slash), out.image.substr(slash + 1));
      if (img) expire_one(out, img->key, policy);
    }
  }

  void expire_one(ImageOutcome& out, uint64_t image, const RetentionPolicy& policy) {
    std::string op_id;
    try {
      op_id = oplog_.begin("expire", out.image, o_.command_line);
      for (auto& d : expire_image(*st_, image, policy, false))
        if (!d.decision.keep) ++out.expired;
      oplog_.end(op_id, true, "", 0);
      if (out.expired) spdlog::info("expire {}: {} revision(s) forgotten", out.image, out.expired);
    } catch (const std::exception& e) {
      spdlog::error("expire {}: {}", out.image, e.what());
      if (!op_id.empty()) oplog_.end(op_id, false, e.what(), 0);
      if (out.result != ImageResult::kFailed) record_failure(out, std::string("retention: ") + e.what());
    }
  }

  // The offsite copy, after the backups it copies (only when some were due: a poll with nothing
  // new has nothing to copy; a failed copy is retried by the next run that backs something up).
  void copy_offsite() {
    if (!c_.copy) return;
    CopyConfig copy = *c_.copy;  // a rados: target's cluster: [copy]'s keys, else [store]'s, else [ceph]'s
    auto pick = [](std::string& v, const std::string& store, const std::string& ceph) {
      if (v.empty()) v = store.empty() ? ceph : store;
    };
    pick(copy.access.conf, c_.store_conf, c_.ceph_conf);
    pick(copy.access.id, c_.store_id, c_.ceph_id);
    pick(copy.access.keyring, c_.store_keyring, c_.ceph_keyring);
    copy.access.op_timeout_seconds = c_.op_timeout;
    report_.copy = run_copy_step(*st_, copy, o_.command_line);
  }

  const BatchConfig& c_;
  const RunOptions& o_;
  rbd::Cluster& cluster_;
  BatchPlan& plan_;
  RunReport& report_;
  const std::function<int64_t()>& now_;
  const std::function<bool()>& stop_;
  store::Store* st_ = nullptr;
  RateLimiter read_limit_, write_limit_;
  store::OpLog oplog_;
  std::atomic<size_t> next_{0}, running_{0}, peak_{0}, done_{0};
  std::atomic<uint64_t> bytes_read_{0};
  std::mutex progress_mu_;
};

void write_metrics(const BatchConfig& c, store::Store& st, int64_t now) {
  try {
    write_file_atomically(c.metrics_file, prometheus_metrics(collect_status(st), now) + prometheus_store_metrics(st));
  } catch (const std::exception& e) {
    spdlog::error("metrics file {}: {}", c.metrics_file, e.what());
  }
}

}  // namespace

RunReport run_batch(const BatchConfig& c, const RunOptions& o) {
  const std::function<int64_t()> now = o.now ? o.now : [] { return static_cast<int64_t>(std::time(nullptr)); };
  const std::function<bool()> stop = [&] { return o.stop && o.stop(); };
  if (!o.job.empty() && std::none_of(c.jobs.begin(), c.jobs.end(), [&](const JobConfig& j) { return j.name == o.job; }))
    throw ConfigError(c.path + ": no [job." + o.job + "] section");
  rbd::Cluster cluster(connect_options(c));
  // Plan on a read-only view: a pass with nothing due (most of the agent's polls) neither takes
  // the writer lock nor writes anything, so manual commands are not refused meanwhile.
  const std::string store_dir = c.store_dir();
  auto st = store::Store::open(store_dir, store::OpenMode::kReadOnly);
  BatchPlan plan = plan_batch(c, o, cluster, *st, now, stop);
  spdlog::info("run {}: {} images selected, {} due{}", c.path, plan.report.images.size(), plan.tasks.size(),
               o.dry_run ? " (dry run)" : "");
  if (!plan.tasks.empty()) {
    st.reset();
    st = store::Store::open(store_dir, store::OpenMode::kWriter, "rbdvault run --config " + c.path);
  }
  Runner(c, o, cluster, plan, now, stop).run(*st);
  RunReport& report = plan.report;
  if (!o.dry_run && !c.metrics_file.empty() && (o.metrics_when_idle || !plan.tasks.empty() || !report.ok()))
    write_metrics(c, *st, now());
  spdlog::info("run {}: {} ok, {} failed, {} not due, {} missing{}", c.path, report.count(ImageResult::kOk),
               report.count(ImageResult::kFailed), report.count(ImageResult::kNotDue),
               report.count(ImageResult::kMissing), report.stopped ? ", stopped early" : "");
  return std::move(report);
}

}  // namespace rbdvault::agent
