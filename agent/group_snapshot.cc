#include "agent/group_snapshot.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <exception>
#include <latch>
#include <map>
#include <thread>

#include "rbd/error.h"
#include "store/store.h"

namespace rbdvault::agent {
namespace {

std::string joined(const std::vector<std::string>& words) {
  std::string out;
  for (const std::string& w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

void fail(GroupMemberSnapshot& m, const std::string& why, ErrorClass c) {
  m.taken.reset();
  m.error = why;
  m.error_class = c;
}

}  // namespace

GroupSnapshots take_group_snapshots(rbd::Cluster& cluster, store::Store& store, const std::string& group,
                                    const SnapshotHooks& hooks, const std::vector<rbd::ImageSpec>& images,
                                    int64_t created) {
  GroupSnapshots out;
  const std::string prefix = snapshot_prefix(store);
  const std::string label = "group " + group;
  std::vector<std::string> names, snaps;
  std::vector<std::optional<rbd::Image>> handles(images.size());
  // Everything slow (ids, opening the images) happens before the pre hook: the freeze lasts only
  // as long as the snapshots take.
  for (size_t i = 0; i < images.size(); ++i) {
    GroupMemberSnapshot m;
    m.spec = images[i];
    TakenSnapshot t;
    t.revision = store.reserve_revision_id();
    t.name = prefix + std::to_string(t.revision);
    t.group = group;
    if (!out.run) out.run = t.revision;
    m.taken = t;
    try {
      handles[i].emplace(rbd::Image::open(cluster, m.spec.pool, m.spec.image));
    } catch (const std::exception& e) {
      fail(m, e.what(), classify(std::current_exception()));
    }
    names.push_back(m.spec.pool + "/" + m.spec.image);
    snaps.push_back(t.name);
    out.members.push_back(std::move(m));
  }
  const std::map<std::string, std::string> env{{"RBDVAULT_GROUP", group},
                                               {"RBDVAULT_GROUP_RUN", std::to_string(out.run)},
                                               {"RBDVAULT_IMAGES", joined(names)},
                                               {"RBDVAULT_SNAPSHOTS", joined(snaps)}};
  // One thread per member, released together: the snapshot requests reach Ceph at once, so the
  // gap is about one snapshot's latency rather than the sum of them (each one blocks its image's
  // writes on the lock owner while it is taken, and these windows then overlap).
  auto take_all = [&] {
    const int64_t when = created ? created : static_cast<int64_t>(std::time(nullptr));
    std::vector<std::exception_ptr> errors(out.members.size());
    std::latch go(1);
    std::vector<std::thread> threads;
    try {
      for (size_t i = 0; i < out.members.size(); ++i)
        if (handles[i])
          threads.emplace_back([&, i] {
            go.wait();
            try {
              out.members[i].taken->id = handles[i]->create_snapshot(out.members[i].taken->name).id;
            } catch (...) {
              errors[i] = std::current_exception();
            }
          });
    } catch (...) {  // no thread for one of them: release and collect the others, then fail
      go.count_down();
      for (std::thread& t : threads) t.join();
      throw;
    }
    const auto first = std::chrono::steady_clock::now();
    go.count_down();
    for (std::thread& t : threads) t.join();
    const auto last = std::chrono::steady_clock::now();
    out.gap_us = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(last - first).count());
    bool all = true;
    for (size_t i = 0; i < out.members.size(); ++i) {
      GroupMemberSnapshot& m = out.members[i];
      if (errors[i]) {
        try {
          std::rethrow_exception(errors[i]);
        } catch (const std::exception& e) {
          fail(m, e.what(), classify(errors[i]));
        }
      }
      if (m.taken)
        m.taken->time = when;
      else
        all = false;
    }
    return all;
  };
  try {
    out.application = snapshots_between_hooks(hooks, env, label, take_all);
  } catch (const std::exception& e) {  // the pre hook failed (on-hook-failure skip), or no thread
    for (GroupMemberSnapshot& m : out.members)
      if (m.error.empty()) fail(m, e.what(), classify(std::current_exception()));
  }
  for (GroupMemberSnapshot& m : out.members)
    if (m.taken) {
      m.taken->application = out.application;
      m.taken->group_run = out.run;
      m.taken->group_gap_us = std::min(out.gap_us, store::kMaxGroupGapUs);
    }
  const size_t taken = static_cast<size_t>(
      std::count_if(out.members.begin(), out.members.end(), [](auto& m) { return m.taken.has_value(); }));
  spdlog::info("{}: {} of {} snapshots taken within {} us ({}-consistent)", label, taken, images.size(), out.gap_us,
               out.application ? "application" : "crash");
  return out;
}

void remove_group_snapshot(rbd::Cluster& cluster, const rbd::ImageSpec& spec, const std::string& snap_name) {
  try {
    rbd::Image::open(cluster, spec.pool, spec.image).remove_snapshot(snap_name);
    spdlog::info("group snapshot {}/{}@{} removed: its backup did not commit", spec.pool, spec.image, snap_name);
  } catch (const rbd::CephError& e) {
    if (!e.not_found())
      spdlog::warn("could not remove group snapshot {}/{}@{}: {}", spec.pool, spec.image, snap_name, e.what());
  } catch (const std::exception& e) {
    spdlog::warn("could not remove group snapshot {}/{}@{}: {}", spec.pool, spec.image, snap_name, e.what());
  }
}

}  // namespace rbdvault::agent
