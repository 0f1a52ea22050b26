// Commands that read a revision back: restore (to an image or a file), verify (against Ceph).
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <iostream>
#include <optional>

#include "agent/error_class.h"
#include "agent/instant_restore.h"
#include "agent/restore.h"
#include "agent/verify.h"
#include "store/error.h"
#include "tools/command.h"
#include "view/presentation.h"
#include "tools/progress.h"
#include "tools/signals.h"

namespace rbdvault::tools {
namespace {

// The revision a restore is asked for, unless the store knows its bytes are wrong: a revision whose
// post-backup check found mismatches (a wrong Ceph diff) is not restored by default. Named with
// @REV it is restored, with a warning (salvage); without, the error names the newest one not marked.
store::RevisionRecord revision_to_restore(store::ReadOnlyStore& st, const std::string& spec_text) {
  const store::RevisionRecord rev = resolve_revision(st, spec_text);
  if (!(rev.flags & store::kRevisionVerifyFailed)) return rev;
  const std::string name = rev.pool + "/" + rev.name;
  if (spec_text.find('@') != std::string::npos) {
    spdlog::warn("revision {} of {} differs from its snapshot (its check after the backup found mismatches); "
                 "restoring it as asked",
                 rev.id, name);
    return rev;
  }
  std::optional<uint64_t> good;
  for (const store::RevisionRecord& r : st.revisions(rev.image))
    if (!(r.flags & (store::kRevisionVerifyFailed | store::kRevisionForgetting))) good = r.id;
  throw store::StoreError(store::StoreError::Kind::kCorrupt,
                          "the newest revision of " + name + " (" + std::to_string(rev.id) +
                              ") differs from its snapshot (its check after the backup found mismatches); restore " +
                              (good ? name + "@" + std::to_string(*good) + ", the newest revision without that mark, or " : "") +
                              name + "@" + std::to_string(rev.id) + " to take it anyway");
}

std::string fixed_seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1fs", s);
  return buf;
}

// --instant: the target is usable at once, filled in the background (agent/instant_restore.h).
int instant_restore(const Args& a, const std::string& spec_text, const rbd::ImageSpec& dst) {
  const rbd::ConnectOptions connect = connect_options(a);
  agent::InstantRestoreOptions o;
  if (!a.str("listen").empty()) std::tie(o.listen_host, o.listen_port) = listen_option(a);
  if (agent::is_wildcard_listen_address(o.listen_host))
    throw UsageError("restore: --listen " + o.listen_host +
                     " is a wildcard: name the address the clients reach (127.0.0.1 for this host only, or this "
                     "host's address on the storage network)");
  // Before any thread starts: librados', RocksDB's (require_store may rebuild a rados: store's
  // index) and the server's threads inherit the blocked mask.
  SignalFlags signals("");  // the stop is reported below, with what it did to the target
  o.store_dir = require_store(a);
  o.check_digest = !a.flag("skip-digest-check");
  o.stop = [&] { return signals.stop_requested(); };
  return logged(a, "restore", spec_text, [&](uint64_t& bytes) {
    auto st = store::Store::open(o.store_dir, store::OpenMode::kReadOnly);
    const store::RevisionRecord rev = revision_to_restore(*st, spec_text);
    Progress progress(!a.quiet());
    o.progress = progress.callback();
    o.on_usable = [&](const std::string& target, const std::string& address) {
      if (a.json() || a.quiet()) return;
      std::cout << target << " is usable now (reads go to revision " << rev.id << " through this process until the "
                << "copy is committed; clients must reach " << address << " until then)" << std::endl;
    };
    rbd::Cluster cluster(connect);
    const agent::InstantRestoreResult r = agent::instant_restore(cluster, *st, rev, dst.pool, dst.image, o);
    if (r.stopped) {
      const int sig = signals.stop_signal() ? signals.stop_signal() : SIGTERM;
      std::fprintf(stderr, "rbdvault: error: %s: instant restore stopped; the migration is aborted and %s removed\n",
                   sig == SIGINT ? "SIGINT" : "SIGTERM", dst.str().c_str());
      return agent::kSignalExitBase + sig;
    }
    if (a.json()) {
      print_json(Json{{"image", rev.pool + "/" + rev.name},
                      {"revision", rev.id},
                      {"target", dst.str()},
                      {"size", rev.size},
                      {"instant", true},
                      {"usable_seconds", r.usable_seconds},
                      {"seconds", r.seconds}});
    } else if (!a.quiet()) {
      std::cout << "restored " << rev.pool << "/" << rev.name << "@" << rev.id << " to " << dst.str() << " ("
                << view::human_size(rev.size) << ", usable after " << fixed_seconds(r.usable_seconds)
                << ", copy committed after " << fixed_seconds(r.seconds) << ")\n";
    }
    bytes = rev.size;
    return 0;
  });
}

int cmd_restore(const Args& a) {
  const std::string spec_text = one_positional(a, "POOL/IMAGE[@REV]");
  const std::string to = a.str("to"), to_file = a.str("to-file");
  if (to.empty() == to_file.empty()) throw UsageError("restore: give exactly one of --to POOL/NAME or --to-file PATH");
  std::optional<rbd::ImageSpec> dst;
  if (!to.empty()) {
    dst = parse_spec(to);
    if (!dst->snap.empty()) throw UsageError("restore: --to takes POOL/NAME without @SNAP");
  }
  if (a.flag("instant") && !dst) throw UsageError("restore: --instant restores to an image (--to POOL/NAME)");
  if (!a.flag("instant") && !a.str("listen").empty()) throw UsageError("restore: --listen needs --instant");
  if (a.flag("instant")) return instant_restore(a, spec_text, *dst);
  const rbd::ConnectOptions connect = connect_options(a);
  // Before any thread starts (they inherit the blocked mask): SIGTERM and SIGINT stop the restore
  // between blocks, and the partial target is removed as after any failure.
  SignalFlags signals("");
  return logged(a, "restore", spec_text, [&](uint64_t& bytes) {
    auto st = store::open_read_only(require_store(a));
    const store::RevisionRecord rev = revision_to_restore(*st, spec_text);
    Progress progress(!a.quiet());
    agent::RestoreOptions o;
    o.progress = progress.callback();
    o.check_digest = !a.flag("skip-digest-check");
    o.stop = [&] { return signals.stop_requested(); };
    agent::RestoreResult r;
    std::string target;
    try {
      if (dst) {
        rbd::Cluster cluster(connect);
        r = agent::restore_to_image(cluster, *st, rev, dst->pool, dst->image, o);
        target = dst->str();
      } else {
        r = agent::restore_to_file(*st, rev, to_file, o);
        target = to_file;
      }
    } catch (const agent::RestoreStopped&) {
      const int sig = signals.stop_signal() ? signals.stop_signal() : SIGTERM;
      std::fprintf(stderr, "rbdvault: error: %s: restore stopped; %s was not created\n",
                   sig == SIGINT ? "SIGINT" : "SIGTERM", dst ? dst->str().c_str() : to_file.c_str());
      return agent::kSignalExitBase + sig;
    }
    if (a.json()) {
      print_json(Json{{"image", rev.pool + "/" + rev.name},
                      {"revision", rev.id},
                      {"target", target},
                      {"size", rev.size},
                      {"bytes_written", r.bytes_written},
                      {"zero_blocks_skipped", r.zero_blocks_skipped},
                      {"seconds", r.seconds}});
    } else if (!a.quiet()) {
      std::cout << "restored " << rev.pool << "/" << rev.name << "@" << rev.id << " to " << target << " ("
                << view::human_size(rev.size) << ", " << view::human_size(r.bytes_written) << " written)\n";
    }
    bytes = r.bytes_written;
    return 0;
  });
}

int cmd_verify(const Args& a) {
  agent::VerifyOptions o;
  o.sample_percent = real_option(a, "sample", agent::kSampleRange);
  const rbd::ConnectOptions connect = connect_options(a);
  const std::string target = one_positional(a, "POOL/IMAGE[@REV]");
  return logged(a, "verify", target, [&](uint64_t& bytes) {
    auto st = store::open_read_only(require_store(a));
    const store::RevisionRecord rev = resolve_revision(*st, target);
    rbd::Cluster cluster(connect);
    const agent::VerifyResult r = agent::verify_revision(cluster, *st, rev, o);
    bytes = r.blocks_compared * st->block_size();
    if (a.json()) {
      print_json(Json{{"image", rev.pool + "/" + rev.name},
                      {"revision", rev.id},
                      {"blocks_compared", r.blocks_compared},
                      {"mismatches", r.mismatches}});
    } else {
      std::cout << rev.pool << "/" << rev.name << "@" << rev.id << ": " << r.blocks_compared << " blocks compared with "
                << rev.snap_name << ", " << r.mismatches << " mismatch(es)";
      for (auto b : r.first_mismatches) std::cout << (b == r.first_mismatches.front() ? ": blocks " : ", ") << b;
      std::cout << "\n";
    }
    return r.mismatches ? agent::exit_code(agent::ErrorClass::kDamage) : 0;
  });
}

}  // namespace

std::vector<Command> restore_commands() {
  std::vector<Command> c;
  c.push_back(
      {"restore", "--store DIR POOL/IMAGE[@REV] --to POOL/NAME [--instant [--listen HOST:PORT]] | --to-file PATH",
       "Restore a revision (default: the latest) to a new RBD image or a file. The target appears "
       "complete and digest-checked, or not at all. With --instant the image is usable at once (an "
       "RBD live migration reading through to this process) and is filled in the background.",
       kStoreOption | kCephOptions | kFormatOption,
       [](po::options_description& o) {
         // clang-format off
                 o.add_options()
                     ("to", po::value<std::string>()->value_name("POOL/NAME"), "restore to this new RBD image")
                     ("to-file", po::value<std::string>()->value_name("PATH"), "restore to this new file")
                     ("instant", po::bool_switch(),
                      "make the image usable at once and copy in the background (live migration)")
                     ("listen", po::value<std::string>()->value_name("HOST:PORT"),
                      "with --instant: serve the revision on this loopback address (default 127.0.0.1:0, any port)")
                     ("skip-digest-check", po::bool_switch(),
                      "restore even when the recomputed digest differs (salvage only)");
         // clang-format on
       },
       cmd_restore});
  c.push_back({"verify", "--store DIR POOL/IMAGE[@REV] [--sample PERCENT]",
               "Compare a revision with the Ceph snapshot it was taken from.",
               kStoreOption | kCephOptions | kFormatOption,
               [](po::options_description& o) {
                 o.add_options()("sample", po::value<std::string>()->default_value("100")->value_name("PERCENT"),
                                 "percent of the blocks to compare (0.01 to 100)");
               },
               cmd_verify});
  return c;
}

}  // namespace rbdvault::tools
