#include "agent/instant_restore.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "agent/restore.h"
#include "rbd/cluster.h"
#include "rbd/error.h"
#include "rbd/migration.h"
#include "store/error.h"
#include "store/store.h"
#include "view/http_auth.h"
#include "view/http_server.h"

namespace rbdvault::agent {
namespace {

using store::StoreError;

// How often a stop request (SIGTERM/SIGINT) is looked at while librbd works.
constexpr auto kStopPoll = std::chrono::milliseconds(50);
// After the commit the source is served on until no request came for kQuietAfterCommit (at most
// kServeAfterCommit): a client whose refresh read the image header before the commit opens the
// source after it (seen 60 ms later under load), and a source already gone fails that client's
// read with ECONNREFUSED, an I/O error in a VM.
constexpr auto kQuietAfterCommit = std::chrono::seconds(2);
constexpr auto kServeAfterCommit = std::chrono::seconds(30);

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The target's name is taken: say what it is. A migration target left by a killed instant restore
// reads through to a server that is gone; its owner removes it with `rbd migration abort`.
[[noreturn]] void refuse_existing(rbd::Cluster& cluster, const std::string& pool, const std::string& name) {
  const std::string cure = "if it was left by a killed instant restore, `rbd migration abort " + pool + "/" + name +
                           "` removes it";
  std::string hint;
  try {
    if (auto st = rbd::migration_status(cluster, pool, name))
      hint = " (an unfinished migration, state " + st->state + ": " + cure + ")";
  } catch (const rbd::CephError& e) {
    // librbd opens a migration target's source to report on it: one whose server is gone fails.
    if (!e.not_found()) hint = " (it cannot be opened, " + std::string(e.what()) + ": " + cure + ")";
  }
  throw StoreError(StoreError::Kind::kExists, "image " + pool + "/" + name + " already exists" + hint +
                                                  "; refusing to overwrite it");
}

bool name_taken(rbd::Cluster& cluster, const std::string& pool, const std::string& name) {
  // Listed rather than opened: opening a leftover migration target fails when its source is gone.
  const auto images = cluster.list_images(pool);
  return std::any_of(images.begin(), images.end(), [&](const rbd::ImageEntry& e) { return e.name == name; });
}

// Calls `on_stop` on its own thread once `stop` turns true, until destroyed. librbd cannot be
// interrupted; stopping the server is what makes a running execute fail at once.
class StopWatcher {
 public:
  StopWatcher(std::function<bool()> stop, std::function<void()> on_stop)
      : stop_(std::move(stop)), on_stop_(std::move(on_stop)) {
    if (stop_) thread_ = std::thread([this] { run(); });
  }
  ~StopWatcher() {
    {
      std::lock_guard<std::mutex> l(mu_);
      done_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  StopWatcher(const StopWatcher&) = delete;
  StopWatcher& operator=(const StopWatcher&) = delete;

  bool fired() const {
    std::lock_guard<std::mutex> l(mu_);
    return fired_;
  }

 private:
  void run() {
    std::unique_lock<std::mutex> l(mu_);
    while (!done_) {
      if (stop_()) {
        fired_ = true;
        l.unlock();
        on_stop_();
        return;
      }
      cv_.wait_for(l, kStopPoll);
    }
  }

  std::function<bool()> stop_;
  std::function<void()> on_stop_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false, fired_ = false;
  std::thread thread_;
};

// librbd answers a cut connection by retrying the same read for ever: an instant restore would
// hang on a damaged chunk. The server tells this about the first failed read or request, so the
// restore can stop serving, abort and say why.
class FirstFailure {
 public:
  void note(const std::string& what) {
    std::lock_guard<std::mutex> l(mu_);
    if (!first_) first_ = what;
  }
  std::optional<std::string> get() {
    std::lock_guard<std::mutex> l(mu_);
    return first_;
  }

 private:
  std::mutex mu_;
  std::optional<std::string> first_;
};

// Aborts the migration (removing the target); empty when that worked, else what the operator does.
std::string abort_target(rbd::ImportMigration& migration) {
  try {
    migration.abort();
    return {};
  } catch (const rbd::CephError& e) {
    return "aborting the migration failed (" + std::string(e.what()) + "): remove " + migration.target() +
           " with `rbd migration abort " + migration.target() + "`";
  }
}

}  // namespace

bool is_wildcard_listen_address(const std::string& host) {
  return host.empty() || host == "0.0.0.0" || host == "::" || host == "[::]";
}

InstantRestoreResult instant_restore(rbd::Cluster& cluster, store::Store& store, const store::RevisionRecord& rev,
                                     const std::string& pool, const std::string& name,
                                     const InstantRestoreOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  const std::string target = pool + "/" + name;
  if (is_wildcard_listen_address(options.listen_host))
    throw StoreError(StoreError::Kind::kInvalid, "instant restore needs the address the clients reach, not " +
                                                     options.listen_host);
  if (name_taken(cluster, pool, name)) refuse_existing(cluster, pool, name);
  check_revision_digest(rev, store.compute_digest(rev), options.check_digest, "served");
  auto& crash = store.crash_points();

  view::ServeOptions serve;
  serve.host = options.listen_host;
  serve.port = options.listen_port;
  // librbd's http source sends no credentials: the revision is reachable through a fresh secret in
  // its URL (known to this process and, through the migration's source spec, to clients that may
  // open the target anyway); every other path needs a token nobody has.
  serve.path_secret = view::random_secret_hex();
  serve.token = view::random_secret_hex();
  // Shared with the server's threads, which may still report while the restore unwinds.
  auto failure = std::make_shared<FirstFailure>();
  serve.on_failure = [failure](const std::string& what) { failure->note(what); };
  serve.check_digest = false;  // checked (or skipped, as asked) just above: not scanned twice
  // The server is declared before the migration: an abort (the migration's destructor) runs while it
  // still serves, and needs nothing from it anyway.
  std::unique_ptr<view::RevisionServer> server = view::RevisionServer::start(options.store_dir, serve);
  InstantRestoreResult result;
  result.source_url = server->url_for(rev.pool, rev.name, rev.id);
  std::atomic<bool> source_failed{false};  // set by the watcher thread before it stops the server
  // Decides between a stop (the migration aborted) and the commit: once committing, a stop only
  // ends the serving, after the commit (which opens the target, and through it the source).
  std::mutex phase_mu;
  bool committing = false;
  const auto stop = options.stop;
  const auto source_error = [&](const std::string& removed) {
    return StoreError(StoreError::Kind::kCorrupt, "serving revision " + std::to_string(rev.id) + " of " + rev.pool +
                                                      "/" + rev.name + " failed (" + failure->get().value_or("") +
                                                      "); " + removed + "; run `rbdvault scrub`");
  };
  StopWatcher watcher(
      [&] {
        if (stop && stop()) return true;
        source_failed = failure->get().has_value();
        return source_failed.load();
      },
      [&] {
        std::lock_guard<std::mutex> l(phase_mu);
        if (committing) {
          spdlog::info("stopping: the copy is complete; serving ends once it is committed");
          return;
        }
        spdlog::info("stopping: serving ends, the migration is aborted and its target removed");
        server->stop();
      });

  rbd::NewImageOptions image;
  image.order = rev.order;
  image.features = rev.features;
  std::optional<rbd::ImportMigration> migration;
  try {
    migration.emplace(cluster, pool, name, rbd::raw_http_source_spec(result.source_url), image);
  } catch (const rbd::CephError& e) {
    if (e.code() == -EEXIST) refuse_existing(cluster, pool, name);  // created since we looked
    if (watcher.fired()) return InstantRestoreResult{true, 0, seconds_since(started), result.source_url};
    throw;
  }
  result.usable_seconds = seconds_since(started);
  spdlog::info("instant restore {}/{}@{} -> {}: usable after {:.2f}s, copying in the background", rev.pool, rev.name,
               rev.id, target, result.usable_seconds);
  if (options.on_usable) options.on_usable(target, server->address());
  crash.reached("instant.prepared");

  const bool serving_fault = crash.fault("instant.source_lost");
  try {
    migration->execute([&](uint64_t done, uint64_t total) {
      crash.reached("instant.execute");
      // Tests: the serving side dies while the copy runs (what a lost source looks like to librbd).
      if (serving_fault) server->stop();
      if (options.progress && total) {
        const uint64_t bytes = static_cast<uint64_t>(static_cast<double>(rev.size) * static_cast<double>(done) /
                                                     static_cast<double>(total));
        options.progress(std::min(bytes, rev.size), rev.size);
      }
    });
  } catch (const rbd::CephError& e) {
    const std::string cleanup = abort_target(*migration);
    const std::string removed = cleanup.empty() ? "the migration is aborted and " + target + " removed" : cleanup;
    if (source_failed) throw source_error(removed);
    if (watcher.fired() && cleanup.empty()) {
      result.stopped = true;
      result.seconds = seconds_since(started);
      return result;
    }
    throw rbd::CephError("copying revision " + std::to_string(rev.id) + " of " + rev.pool + "/" + rev.name +
                             " into " + target + " failed; " + removed,
                         e.code());
  }
  crash.reached("instant.executed");
  {
    std::lock_guard<std::mutex> l(phase_mu);
    committing = !watcher.fired();
  }
  if (!committing) {  // the copy finished as the stop came: still stop, as asked
    result.stopped = true;
    const std::string cleanup = abort_target(*migration);
    if (source_failed) throw source_error(cleanup.empty() ? "the migration is aborted and " + target + " removed" : cleanup);
    if (!cleanup.empty()) throw StoreError(StoreError::Kind::kIO, "stopped; " + cleanup);
    result.seconds = seconds_since(started);
    return result;
  }
  migration->commit();
  result.seconds = seconds_since(started);
  spdlog::info("instant restore {}/{}@{} -> {}: committed ({:.1f}s)", rev.pool, rev.name, rev.id, target,
               result.seconds);
  crash.reached("instant.committed");
  server->wait_until_quiet(kQuietAfterCommit, kServeAfterCommit, [&] { return watcher.fired(); });
  server->stop();
  return result;
}

}  // namespace rbdvault::agent
