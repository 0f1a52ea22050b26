#include "agent/group_run.h"

#include <cerrno>
#include <map>
#include <set>

#include "agent/group_snapshot.h"
#include "rbd/error.h"
#include "rbd/image.h"

namespace rbdvault::agent {
namespace {

rbd::ImageSpec spec_of(const std::string& image) {
  const size_t slash = image.find('/');
  return rbd::ImageSpec{image.substr(0, slash), image.substr(slash + 1), ""};
}

// The job an image belongs to (the first selecting it, as in the run's plan).
std::string owner_job(const BatchConfig& c, const std::string& image) {
  const rbd::ImageSpec s = spec_of(image);
  for (const JobConfig& j : c.jobs)
    if (j.selects(s.pool, s.image)) return j.name;
  return "";
}

void add_problem(GroupOutcome& g, const std::string& what, ErrorClass c) {
  g.error += (g.error.empty() ? "" : "; ") + what;
  if (g.error_class == ErrorClass::kOk) g.error_class = c;
}

}  // namespace

std::vector<GroupPlan> plan_groups(const BatchConfig& c, RunReport& report, ImageResult planned,
                                   const std::string& only_job, const GroupLister& list_rbd_group) {
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < report.images.size(); ++i) index[report.images[i].image] = i;
  std::set<std::string> grouped;  // members seen so far: an image is in one group only
  for (const GroupConfig& g : c.groups) grouped.insert(g.images.begin(), g.images.end());
  std::vector<GroupPlan> plans;
  for (const GroupConfig& g : c.groups) {
    GroupPlan p;
    p.group = &g;
    GroupOutcome out;
    out.name = g.name;
    bool listed = true;
    std::vector<std::string> images = g.images;
    if (!g.rbd_group.empty()) {  // members from Ceph: the config's checks are made here
      images.clear();
      try {
        const std::vector<std::string> listed_images = list_rbd_group(g.rbd_group);
        // librbd 16.2 lists a group that does not exist as empty.
        if (listed_images.empty())
          throw rbd::CephError("no such group, or it has no images", -ENOENT);
        for (const std::string& image : listed_images) {
          if (owner_job(c, image).empty())
            add_problem(out, image + " (RBD group " + g.rbd_group + ") is selected by no job", ErrorClass::kUsage);
          else if (!grouped.insert(image).second)
            add_problem(out, image + " (RBD group " + g.rbd_group + ") is in another group", ErrorClass::kUsage);
          else
            images.push_back(image);
        }
      } catch (const std::exception& e) {
        add_problem(out, std::string("RBD group ") + g.rbd_group + ": " + e.what(), classify(std::current_exception()));
        listed = false;
      }
    }
    for (const std::string& image : images) {
      if (!only_job.empty() && owner_job(c, image) != only_job) continue;  // run --job: not in this run
      out.images.push_back(image);
      auto it = index.find(image);
      if (it == index.end()) {
        add_problem(out, image + " is not in its pool", ErrorClass::kNotFound);
        continue;
      }
      ImageOutcome& m = report.images[it->second];
      m.group = g.name;
      if (m.result == ImageResult::kMissing) {
        add_problem(out, image + " " + m.error, ErrorClass::kNotFound);
      } else if (m.result == planned || m.result == ImageResult::kNotDue) {
        p.due = p.due || m.result == planned;
        p.members.push_back(it->second);
      }  // skipped (skip = true): left out of the group
    }
    // An RBD group that cannot be listed, or lists members the config could not have held, fails.
    const bool bad = !listed || (!g.rbd_group.empty() && !out.error.empty());
    if (out.images.empty() && !bad) continue;
    if (p.due)
      for (size_t i : p.members) report.images[i].result = planned;
    out.result = bad ? ImageResult::kFailed : p.due ? planned : ImageResult::kNotDue;
    report.groups.push_back(std::move(out));
    plans.push_back(std::move(p));
  }
  return plans;
}

std::vector<std::optional<TakenSnapshot>> snapshot_group(rbd::Cluster& cluster, store::Store& store,
                                                         const GroupPlan& plan, RunReport& report, GroupOutcome& group,
                                                         int64_t created) {
  std::vector<rbd::ImageSpec> specs;
  for (size_t i : plan.members) specs.push_back(spec_of(report.images[i].image));
  GroupSnapshots snaps = take_group_snapshots(cluster, store, plan.group->name, plan.group->hooks, specs, created);
  group.run = snaps.run;
  group.gap_us = snaps.gap_us;
  std::vector<std::optional<TakenSnapshot>> taken;
  for (size_t j = 0; j < plan.members.size(); ++j) {
    GroupMemberSnapshot& m = snaps.members[j];
    if (m.taken) {
      group.consistency = snaps.application ? "application" : "crash";
    } else {
      ImageOutcome& out = report.images[plan.members[j]];
      out.result = ImageResult::kFailed;
      out.error = m.error;
      out.error_class = m.error_class;
      out.attempts = 1;
    }
    taken.push_back(std::move(m.taken));
  }
  return taken;
}

void finish_group(const GroupPlan& plan, const RunReport& report, GroupOutcome& group) {
  if (!plan.due) return;  // not-due or would-back-up, as planned
  size_t ok = 0, cancelled = 0;
  for (size_t i : plan.members) {
    const ImageOutcome& m = report.images[i];
    if (m.result == ImageResult::kOk)
      ++ok;
    else if (m.result == ImageResult::kCancelled)
      ++cancelled;
    else if (m.result == ImageResult::kFailed)
      add_problem(group, m.image + " failed: " + m.error, m.error_class);
  }
  if (!group.error.empty() && group.result != ImageResult::kWouldBackUp)
    group.result = ImageResult::kFailed;
  else if (cancelled)
    group.result = ImageResult::kCancelled;
  else if (ok == plan.members.size())
    group.result = ImageResult::kOk;
}

}  // namespace rbdvault::agent
