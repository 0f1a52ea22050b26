#include "agent/batch_plan.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <set>
#include <string>

#include "agent/stoppable_sleep.h"
#include "rbd/error.h"

namespace rbdvault::agent {
namespace {

rbd::ImageSpec group_member_spec(const std::string& image) {
  const size_t slash = image.find('/');
  return rbd::ImageSpec{image.substr(0, slash), image.substr(slash + 1), ""};
}

ImageOutcome outcome(const std::string& image, const std::string& job) {
  ImageOutcome out;
  out.image = image;
  out.job = job;
  return out;
}

class Planner {
 public:
  Planner(const BatchConfig& c, const RunOptions& o, rbd::Cluster& cluster, store::ReadOnlyStore& st,
          const std::function<int64_t()>& now, const std::function<bool()>& stop)
      : c_(c), o_(o), cluster_(cluster), st_(st), now_(now), stop_(stop) {}

  BatchPlan run() {
    for (const JobConfig& job : c_.jobs)
      if (o_.job.empty() || job.name == o_.job) plan_job(job);
    plan_group_members();
    for (const auto& [image, override] : c_.image_overrides)
      if (o_.job.empty() && !claimed_.count(image))
        spdlog::warn("{}: [image.{}] matches no image a job selected", override.where, image);
    return std::move(plan_);
  }

 private:
  size_t add(ImageOutcome out, const ImageSettings& s) {
    plan_.report.images.push_back(std::move(out));
    plan_.settings.push_back(s);
    return plan_.report.images.size() - 1;
  }

  // The pool's images, retried on transient errors; nullopt (reported as POOL/* failed) if not.
  std::optional<std::vector<rbd::ImageEntry>> list_pool(const JobConfig& job) {
    ImageOutcome failed = outcome(job.pool + "/*", job.name);
    failed.result = ImageResult::kFailed;
    for (unsigned attempt = 1;; ++attempt) {
      try {
        return cluster_.list_images(job.pool);
      } catch (const rbd::CephError& e) {
        failed.error = e.what();
        failed.error_class = classify(std::current_exception());
        if (!transient_ceph_error(e.code()) || attempt > job.settings.retries || stop_()) break;
        const double delay = retry_backoff(job.settings, attempt);
        spdlog::warn("job {}: {} (attempt {} of {}, retrying in {:.0f}s)", job.name, e.what(), attempt,
                     job.settings.retries + 1, delay);
        if (!sleep_unless(delay, stop_)) break;
      }
    }
    spdlog::error("job {}: {}", job.name, failed.error);
    add(std::move(failed), job.settings);
    return std::nullopt;
  }

  void plan_job(const JobConfig& job) {
    const auto listing = list_pool(job);
    if (!listing) return;
    std::set<std::string> present;
    for (const rbd::ImageEntry& e : *listing) {
      present.insert(e.name);
      const std::string full = job.pool + "/" + e.name;
      if (!job.selects(job.pool, e.name) || !owns(job, job.pool, e.name) || !claimed_.insert(full).second) continue;
      plan_image(job, e.name, full);
    }
    // Backed up before, gone from the pool now: reported, history kept.
    for (const store::ImageRecord& img : st_.images()) {
      const std::string full = img.pool + "/" + img.name;
      if (img.pool != job.pool || present.count(img.name) || !job.selects(img.pool, img.name) ||
          !owns(job, img.pool, img.name) || !claimed_.insert(full).second)
        continue;
      ImageOutcome out = outcome(full, job.name);
      out.result = ImageResult::kMissing;
      out.error = "no longer in pool " + img.pool + "; its revisions are kept";
      add(std::move(out), job.settings);
    }
  }

  // An image selected by two jobs belongs to the first of them in the config, also when only a
  // later one runs (`run --job`): its schedule, hooks and retention are the first job's, and the
  // later job's retention must never apply to it.
  bool owns(const JobConfig& job, const std::string& pool, const std::string& name) const {
    for (const JobConfig& j : c_.jobs)
      if (j.pool == pool && j.selects(pool, name)) return j.name == job.name;
    return false;
  }

  void plan_image(const JobConfig& job, const std::string& name, const std::string& full) {
    const ImageSettings s = c_.settings_for(job, full);
    ImageOutcome out = outcome(full, job.name);
    if (s.skip) {
      out.result = ImageResult::kSkipped;
    } else {
      auto img = st_.find_image(job.pool, name);
      auto latest = img ? st_.latest_revision(img->key) : std::nullopt;
      const int64_t t = now_();
      bool due = o_.force || s.schedule.due(latest ? latest->created : 0, t, jitter_offset(full, s.jitter_seconds));
      auto nb = o_.not_before.find(full);
      if (!o_.force && nb != o_.not_before.end() && t < nb->second) due = false;
      out.result = !due ? ImageResult::kNotDue : o_.dry_run ? ImageResult::kWouldBackUp : ImageResult::kCancelled;
    }
    const size_t index = add(std::move(out), s);
    if (plan_.report.images[index].result == ImageResult::kCancelled)
      plan_.tasks.push_back(BatchTask{index, rbd::ImageSpec{job.pool, name, ""}, std::nullopt});
  }

  // A consistency group is backed up whole once a member is due.
  void plan_group_members() {
    const ImageResult planned = o_.dry_run ? ImageResult::kWouldBackUp : ImageResult::kCancelled;
    plan_.groups = plan_groups(c_, plan_.report, planned, o_.job, [&](const std::string& spec) {
      const rbd::ImageSpec g = group_member_spec(spec);
      return cluster_.list_group_images(g.pool, g.image);
    });
    auto& tasks = plan_.tasks;
    for (const GroupPlan& g : plan_.groups)
      for (size_t i : g.members)
        if (g.due && !o_.dry_run &&
            std::none_of(tasks.begin(), tasks.end(), [&](const BatchTask& t) { return t.index == i; }))
          tasks.push_back(BatchTask{i, group_member_spec(plan_.report.images[i].image), std::nullopt});
  }

  const BatchConfig& c_;
  const RunOptions& o_;
  rbd::Cluster& cluster_;
  store::ReadOnlyStore& st_;
  const std::function<int64_t()>& now_;
  const std::function<bool()>& stop_;
  BatchPlan plan_;
  std::set<std::string> claimed_;  // an image selected by two jobs belongs to the first
};

}  // namespace

bool transient_ceph_error(int code) {
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

double retry_backoff(const ImageSettings& s, unsigned attempt) {
  // Doubling, but no single wait longer than an hour (or the configured delay, if longer): a run
  // waiting holds the store's writer lock, and 10 retries from 5 minutes would wait 85 hours.
  const double delay = static_cast<double>(s.retry_delay_seconds);
  return std::min(delay * static_cast<double>(1ull << std::min(attempt - 1, 16u)), std::max(delay, 3600.0));
}

BatchPlan plan_batch(const BatchConfig& c, const RunOptions& o, rbd::Cluster& cluster, store::ReadOnlyStore& st,
                     const std::function<int64_t()>& now, const std::function<bool()>& stop) {
  return Planner(c, o, cluster, st, now, stop).run();
}

}  // namespace rbdvault::agent
