// rbdvault: the command line. Thin by design: parse, call agent/ or store/, print.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "agent/backup.h"
#include "agent/batch_config.h"
#include "agent/expire.h"
#include "agent/numbers.h"
#include "agent/restore.h"
#include "agent/retention.h"
#include "agent/verify.h"
#include "rbd/cluster.h"
#include "rbd/error.h"
#include "rbd/image.h"
#include "store/gc.h"
#include "store/oplog.h"
#include "store/scrub.h"
#include "store/store.h"
#include "tools/batch_commands.h"
#include "tools/human.h"
#include "tools/journal_log.h"
#include "tools/version.h"

namespace po = boost::program_options;
using namespace rbdvault;

namespace {

constexpr const char* kUsage = R"(usage: rbdvault COMMAND [OPTIONS] [ARGS]

commands:
  init     --store DIR [--block-size 64K]          create a revision store
  backup   --store DIR POOL/IMAGE [--full]         back up an image (incremental when possible)
  restore  --store DIR POOL/IMAGE[@REV] --to POOL/NAME | --to-file PATH
                                                   restore a revision (default: the latest); the
                                                   target appears complete and digest-checked or not at all
  ls       --store DIR [POOL/IMAGE]                list revisions
  forget   --store DIR POOL/IMAGE@REV              remove one revision (merged into the next)
  expire   --store DIR [POOL/IMAGE] --keep-last N --keep-hourly N --keep-daily N
           --keep-weekly N --keep-monthly N [--dry-run]
                                                   apply a retention policy
  protect | unprotect --store DIR POOL/IMAGE@REV   exempt a revision from forget/expire
  gc       --store DIR [--max-unused 5] [--dry-run]  free chunk data no revision references
  du       --store DIR [POOL/IMAGE]                stored bytes per image and per revision
  scrub    --store DIR [POOL/IMAGE[@REV]] [--deep] check the store's consistency
  verify   --store DIR POOL/IMAGE[@REV] [--sample PERCENT]
                                                   compare a revision with its Ceph snapshot
  repair   --store DIR                             rewrite damaged chunks from Ceph or copies
  log      --store DIR [POOL/IMAGE]                the operation log
  images   POOL                                    list the RBD images of a pool

batch commands (a config file describes the cluster's backups, see deploy/rbdvault.conf.example):
  run      --config FILE [--job NAME] [--dry-run] [--force]
                                                   back up every image that is due, then expire
  agent    --config FILE [--poll 60s]              the scheduler, for systemd (SIGHUP reloads)
  status   --config FILE | --store DIR             per image: last success, age, errors, size
  check    --config FILE | --store DIR --max-age 26h [--warn-age 20h]
                                                   Nagios/Icinga plugin (exit 0/1/2/3, perfdata)

Ceph options (like rbd): -c/--conf PATH, --id NAME, --keyring PATH, --connect-timeout SECONDS (15),
                         --op-timeout SECONDS (0: wait like rbd does)
output: --format plain|json, -v/--verbose, -q/--quiet
)";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Every numeric option, parsed and range-checked up front for every command (whether or not the
// command uses it): a value outside its range is a usage error, never silently taken.
struct Numbers {
  int connect_timeout = 15, op_timeout = 0;
  unsigned full_every = 0;
  size_t reads_in_flight = 16, hash_threads = 2;
  uint32_t block_size = 64 << 10;
  agent::RetentionPolicy keep;
  double max_unused = 5, sample = 100, time_scale = 1, verify_sample = 0;
  int64_t poll = 60, max_age = 26 * 3600, warn_age = 0;
};

struct Args {
  std::string command;
  Numbers n;
  std::string command_line;  // for the operation log
  std::vector<std::string> positional;
  po::variables_map vm;

  std::string str(const char* name) const { return vm.count(name) ? vm[name].as<std::string>() : std::string(); }
  bool flag(const char* name) const { return vm.count(name) && vm[name].as<bool>(); }
  bool json() const { return str("format") == "json"; }
};

// Parses option `name` with `parse` (one of agent/numbers.h's parsers); its error becomes one usage
// line naming the option and the value as typed.
template <class Parse>
auto numeric(const Args& a, const char* name, Parse parse) {
  const std::string text = a.str(name);
  try {
    return parse(text);
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("bad --") + name + " '" + text + "': " + e.what());
  }
}

uint32_t parse_block_size(const std::string& text) {
  const std::invalid_argument bad("expected a power of two from 64K to 4M");
  uint64_t v = 0;
  try {
    v = agent::parse_bytes(text);
  } catch (const std::invalid_argument&) {
    throw bad;
  }
  if (v < (64u << 10) || v > (4u << 20) || (v & (v - 1)) != 0) throw bad;
  return static_cast<uint32_t>(v);
}

Numbers parse_numbers(const Args& a) {
  using namespace agent;
  auto whole = [](Range r) { return [r](const std::string& t) { return parse_whole(t, r); }; };
  auto duration = [](Range r) { return [r](const std::string& t) { return parse_duration_in(t, r); }; };
  auto real = [](RealRange r) { return [r](const std::string& t) { return parse_real(t, r); }; };
  Numbers n;
  n.connect_timeout = static_cast<int>(numeric(a, "connect-timeout", duration(kConnectTimeoutRange)));
  n.op_timeout = static_cast<int>(numeric(a, "op-timeout", duration(kOpTimeoutRange)));
  n.full_every = static_cast<unsigned>(numeric(a, "full-every", whole(kFullEveryRange)));
  n.reads_in_flight = static_cast<size_t>(numeric(a, "reads-in-flight", whole(kReadsInFlightRange)));
  n.hash_threads = static_cast<size_t>(numeric(a, "hash-threads", whole(kHashThreadsRange)));
  n.block_size = numeric(a, "block-size", parse_block_size);
  n.keep.keep_last = static_cast<int>(numeric(a, "keep-last", whole(kKeepRange)));
  n.keep.keep_hourly = static_cast<int>(numeric(a, "keep-hourly", whole(kKeepRange)));
  n.keep.keep_daily = static_cast<int>(numeric(a, "keep-daily", whole(kKeepRange)));
  n.keep.keep_weekly = static_cast<int>(numeric(a, "keep-weekly", whole(kKeepRange)));
  n.keep.keep_monthly = static_cast<int>(numeric(a, "keep-monthly", whole(kKeepRange)));
  n.max_unused = numeric(a, "max-unused", real(kMaxUnusedRange));
  n.sample = numeric(a, "sample", real(kSampleRange));
  n.verify_sample = numeric(a, "verify-sample", real(kVerifySampleRange));
  n.time_scale = numeric(a, "time-scale", real(kTimeScaleRange));
  n.poll = numeric(a, "poll", duration(kPollRange));
  n.max_age = numeric(a, "max-age", duration(kMaxAgeRange));
  n.warn_age = numeric(a, "warn-age", duration(kWarnAgeRange));
  return n;
}

Args parse(int argc, char** argv, std::string& command) {
  po::options_description opts;
  // clang-format off
  opts.add_options()
      ("help,h", "")
      ("store,s", po::value<std::string>(), "")
      ("conf,c", po::value<std::string>(), "")
      ("id", po::value<std::string>(), "")
      ("keyring,k", po::value<std::string>(), "")
      ("connect-timeout", po::value<std::string>()->default_value("15"), "")
      ("op-timeout", po::value<std::string>()->default_value("0"), "")
      ("format", po::value<std::string>()->default_value("plain"), "")
      ("verbose,v", po::bool_switch(), "")
      ("quiet,q", po::bool_switch(), "")
      ("full", po::bool_switch(), "")
      ("full-every", po::value<std::string>()->default_value("0"), "")
      ("whole-object", po::bool_switch(), "")
      ("exact-diff", po::bool_switch(), "")
      ("reads-in-flight", po::value<std::string>()->default_value("16"), "")
      ("hash-threads", po::value<std::string>()->default_value("2"), "")
      ("to", po::value<std::string>(), "")
      ("to-file", po::value<std::string>(), "")
      ("skip-digest-check", po::bool_switch(), "")
      ("block-size", po::value<std::string>()->default_value("64K"), "")
      ("keep-last", po::value<std::string>()->default_value("0"), "")
      ("keep-hourly", po::value<std::string>()->default_value("0"), "")
      ("keep-daily", po::value<std::string>()->default_value("0"), "")
      ("keep-weekly", po::value<std::string>()->default_value("0"), "")
      ("keep-monthly", po::value<std::string>()->default_value("0"), "")
      ("dry-run", po::bool_switch(), "")
      ("max-unused", po::value<std::string>()->default_value("5"), "")
      ("deep", po::bool_switch(), "")
      ("sample", po::value<std::string>()->default_value("100"), "")
      ("verify-sample", po::value<std::string>()->default_value("0"), "")
      ("config", po::value<std::string>(), "")
      ("job", po::value<std::string>(), "")
      ("force", po::bool_switch(), "")
      ("poll", po::value<std::string>()->default_value("60s"), "")
      ("time-scale", po::value<std::string>()->default_value("1"), "")
      ("max-age", po::value<std::string>()->default_value("26h"), "")
      ("warn-age", po::value<std::string>()->default_value("0"), "")
      ("args", po::value<std::vector<std::string>>(), "");
  // clang-format on
  po::positional_options_description pos;
  pos.add("args", -1);
  Args a;
  po::store(po::command_line_parser(argc, argv).options(opts).positional(pos).run(), a.vm);
  po::notify(a.vm);
  if (a.vm.count("args")) a.positional = a.vm["args"].as<std::vector<std::string>>();
  if (a.vm.count("help") || a.positional.empty()) {
    std::cout << kUsage;
    std::exit(a.vm.count("help") ? 0 : 2);
  }
  a.command = command = a.positional.front();
  for (int i = 0; i < argc; ++i) a.command_line += (i ? " " : "") + std::string(argv[i]);
  a.positional.erase(a.positional.begin());
  const std::string fmt = a.str("format");
  if (fmt != "plain" && fmt != "json") throw UsageError("--format must be plain or json");
  a.n = parse_numbers(a);
  return a;
}

std::string require_store(const Args& a) {
  std::string s = a.str("store");
  if (s.empty()) throw UsageError(a.command + ": --store DIR is required");
  return s;
}

std::string one_positional(const Args& a, const char* what) {
  if (a.positional.size() != 1) throw UsageError(a.command + ": expected exactly one " + what);
  return a.positional.front();
}

rbd::ConnectOptions connect_options(const Args& a) {
  rbd::ConnectOptions o;
  o.conf_path = a.str("conf");
  o.client_id = a.str("id");
  o.keyring = a.str("keyring");
  o.timeout_seconds = a.n.connect_timeout;
  o.op_timeout_seconds = a.n.op_timeout;
  return o;
}

// A progress line on stderr, only when stderr is a terminal and not quiet.
class Progress {
 public:
  explicit Progress(bool enabled) : enabled_(enabled && ::isatty(STDERR_FILENO)) {}
  ~Progress() {
    if (shown_) std::fprintf(stderr, "\r\033[K");
  }
  void update(uint64_t done, uint64_t total) {
    if (!enabled_) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(200)) return;
    last_ = now;
    double secs = std::chrono::duration<double>(now - start_).count();
    double rate = secs > 0 ? done / secs : 0;
    int pct = total ? static_cast<int>(100.0 * done / total) : 100;
    std::string eta = rate > 0 && total > done ? std::to_string(static_cast<int>((total - done) / rate)) + "s" : "-";
    std::fprintf(stderr, "\r\033[K%3d%%  %s / %s  %s/s  ETA %s", pct, tools::human_size(done).c_str(),
                 tools::human_size(total).c_str(), tools::human_size(static_cast<uint64_t>(rate)).c_str(), eta.c_str());
    shown_ = true;
  }
  std::function<void(uint64_t, uint64_t)> callback() {
    if (!enabled_) return {};
    return [this](uint64_t d, uint64_t t) { update(d, t); };
  }

 private:
  bool enabled_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now(), last_{};
};

const char* kind_name(store::RevisionKind k) { return k == store::RevisionKind::kFull ? "full" : "delta"; }

std::string revision_json(const store::RevisionRecord& r) {
  std::ostringstream o;
  o << "{\"id\":" << r.id << ",\"image\":" << tools::json_string(r.pool + "/" + r.name)
    << ",\"created\":" << tools::json_string(tools::iso_time(r.created)) << ",\"size\":" << r.size
    << ",\"parent\":" << (r.parent ? std::to_string(r.parent) : "null") << ",\"kind\":\"" << kind_name(r.kind)
    << "\",\"bytes_read\":" << r.bytes_read << ",\"bytes_stored\":" << r.bytes_stored
    << ",\"new_chunks\":" << r.new_chunks << ",\"map_entries\":" << r.map_entries
    << ",\"ceph_image_id\":" << tools::json_string(r.ceph_image_id)
    << ",\"snapshot\":" << tools::json_string(r.snap_name) << ",\"snapshot_id\":" << r.snap_id << ",\"digest\":\""
    << store::to_hex(r.digest) << "\",\"protected\":" << ((r.flags & store::kRevisionProtected) ? "true" : "false")
    << ",\"verify_failed\":" << ((r.flags & store::kRevisionVerifyFailed) ? "true" : "false") << "}";
  return o.str();
}

// Resolves POOL/IMAGE[@REV] to a committed revision; REV defaults to the latest.
store::RevisionRecord resolve_revision(store::Store& st, const std::string& text) {
  rbd::ImageSpec spec = rbd::ImageSpec::parse(text);
  auto image = st.find_image(spec.pool, spec.image);
  if (!image)
    throw store::StoreError(store::StoreError::Kind::kNotFound,
                            "no backups of " + spec.pool + "/" + spec.image + " in this store");
  if (spec.snap.empty()) {
    auto latest = st.latest_revision(image->key);
    if (!latest)
      throw store::StoreError(store::StoreError::Kind::kNotFound,
                              "no revisions of " + spec.pool + "/" + spec.image + " in this store");
    return *latest;
  }
  uint64_t id = 0;
  try {
    size_t used = 0;
    id = std::stoull(spec.snap, &used);
    if (used != spec.snap.size()) throw std::invalid_argument("");
  } catch (const std::exception&) {
    throw UsageError("bad revision '" + spec.snap + "' in " + text + ": expected a revision number (see rbdvault ls)");
  }
  auto rev = st.revision(id);
  if (!rev || rev->image != image->key || (rev->flags & store::kRevisionForgetting))
    throw store::StoreError(store::StoreError::Kind::kNotFound,
                            "revision " + spec.snap + " of " + spec.pool + "/" + spec.image + " does not exist");
  return *rev;
}

// Runs `body` as a logged operation: a start line in the store's operation log before, an end line
// with the result after (also when it throws). Directories that are not stores get no log.
int logged(const Args& a, const std::string& op, const std::string& image, const std::function<int(uint64_t&)>& body) {
  const std::string dir = require_store(a);
  if (!store::Store::is_store(dir)) {
    uint64_t ignored = 0;
    return body(ignored);
  }
  store::OpLog log(dir);
  std::string id;
  try {
    id = log.begin(op, image, a.command_line);
  } catch (const store::StoreError& e) {
    // A store on read-only media can still be restored from; the log is not worth failing for.
    spdlog::warn("{} (continuing without the operation log)", e.what());
    uint64_t ignored = 0;
    return body(ignored);
  }
  uint64_t bytes = 0;
  auto end = [&](bool ok, const std::string& error) {
    try {
      log.end(id, ok, error, bytes);
    } catch (const store::StoreError& e) {
      spdlog::warn("{}", e.what());  // never mask the operation's own result
    }
  };
  try {
    int rc = body(bytes);
    end(rc == 0, rc == 0 ? "" : "exit status " + std::to_string(rc));
    return rc;
  } catch (const std::exception& e) {
    end(false, e.what());
    throw;
  }
}

int cmd_init(const Args& a) {
  if (!a.positional.empty()) throw UsageError("init: unexpected argument " + a.positional.front());
  store::StoreOptions o;
  o.block_size = a.n.block_size;
  store::Store::init(require_store(a), o);
  if (!a.flag("quiet"))
    std::cout << "initialised store " << require_store(a) << " (block size " << tools::human_size(o.block_size)
              << ")\n";
  return 0;
}

int cmd_backup(const Args& a) {
  const std::string spec_text = one_positional(a, "POOL/IMAGE");
  rbd::ImageSpec spec = rbd::ImageSpec::parse(spec_text);
  if (!spec.snap.empty()) throw UsageError("backup: give POOL/IMAGE without @SNAP; rbdvault takes its own snapshot");
  return logged(a, "backup", spec.str(), [&](uint64_t& bytes) {
    auto st = store::Store::open(require_store(a), store::OpenMode::kWriter, "rbdvault backup " + spec.str());
    rbd::Cluster cluster(connect_options(a));
    agent::BackupOptions o;
    o.full_every = a.n.full_every;
    o.full = a.flag("full");
    o.whole_object = a.flag("whole-object");
    o.object_map_filter = !a.flag("exact-diff");
    o.reads_in_flight = a.n.reads_in_flight;
    o.hash_threads = a.n.hash_threads;
    o.verify_sample_percent = a.n.verify_sample;
    Progress progress(!a.flag("quiet"));
    o.progress = progress.callback();
    agent::BackupResult r = agent::backup_image(cluster, *st, spec, o);
    const auto& rev = r.revision;
    bytes = rev.bytes_read;
    if (a.json()) {
      std::cout << "{\"image\":" << tools::json_string(spec.str()) << ",\"revision\":" << rev.id
                << ",\"size\":" << rev.size << ",\"parent\":" << (rev.parent ? std::to_string(rev.parent) : "null")
                << ",\"kind\":\"" << kind_name(rev.kind)
                << "\",\"base_snapshot\":" << tools::json_string(r.base_snapshot)
                << ",\"full_reason\":" << tools::json_string(r.full_reason)
                << ",\"exact_diff_reason\":" << tools::json_string(r.exact_diff_reason) << ",\"bytes_read\":" << rev.bytes_read
                << ",\"bytes_stored\":" << rev.bytes_stored << ",\"new_chunks\":" << rev.new_chunks
                << ",\"map_entries\":" << rev.map_entries << ",\"peak_reads_in_flight\":" << r.peak_reads_in_flight
                << ",\"peak_blocks_pending\":" << r.peak_blocks_pending << ",\"seconds\":" << r.seconds
                << ",\"verify_blocks_compared\":" << r.verify_blocks_compared
                << ",\"verify_mismatches\":" << r.verify_mismatches << "}\n";
    } else {
      std::cout << spec.str() << ": " << kind_name(rev.kind) << " backup, size " << tools::human_size(rev.size)
                << ", read " << tools::human_size(rev.bytes_read) << ", stored " << tools::human_size(rev.bytes_stored)
                << "\n"
                << "revision " << rev.id << "\n";
    }
    if (r.verify_mismatches)
      throw std::runtime_error(agent::verify_failure_message(r));
    return 0;
  });
}

int cmd_restore(const Args& a) {
  const std::string spec_text = one_positional(a, "POOL/IMAGE[@REV]");
  const std::string to = a.str("to"), to_file = a.str("to-file");
  if (to.empty() == to_file.empty()) throw UsageError("restore: give exactly one of --to POOL/NAME or --to-file PATH");
  return logged(a, "restore", spec_text, [&](uint64_t& bytes) {
    auto st = store::Store::open(require_store(a), store::OpenMode::kReadOnly);
    store::RevisionRecord rev = resolve_revision(*st, spec_text);
    Progress progress(!a.flag("quiet"));
    agent::RestoreOptions o;
    o.progress = progress.callback();
    o.check_digest = !a.flag("skip-digest-check");
    agent::RestoreResult r;
    std::string target;
    if (!to.empty()) {
      rbd::ImageSpec dst = rbd::ImageSpec::parse(to);
      if (!dst.snap.empty()) throw UsageError("restore: --to takes POOL/NAME without @SNAP");
      rbd::Cluster cluster(connect_options(a));
      r = agent::restore_to_image(cluster, *st, rev, dst.pool, dst.image, o);
      target = dst.str();
    } else {
      r = agent::restore_to_file(*st, rev, to_file, o);
      target = to_file;
    }
    if (a.json()) {
      std::cout << "{\"image\":" << tools::json_string(rev.pool + "/" + rev.name) << ",\"revision\":" << rev.id
                << ",\"target\":" << tools::json_string(target) << ",\"size\":" << rev.size
                << ",\"bytes_written\":" << r.bytes_written << ",\"zero_blocks_skipped\":" << r.zero_blocks_skipped
                << ",\"seconds\":" << r.seconds << "}\n";
    } else if (!a.flag("quiet")) {
      std::cout << "restored " << rev.pool << "/" << rev.name << "@" << rev.id << " to " << target << " ("
                << tools::human_size(rev.size) << ", " << tools::human_size(r.bytes_written) << " written)\n";
    }
    bytes = r.bytes_written;
    return 0;
  });
}

int cmd_ls(const Args& a) {
  if (a.positional.size() > 1) throw UsageError("ls: expected at most one POOL/IMAGE");
  auto st = store::Store::open(require_store(a), store::OpenMode::kReadOnly);
  std::vector<store::RevisionRecord> revs;
  if (a.positional.empty()) {
    revs = st->revisions();
  } else {
    rbd::ImageSpec spec = rbd::ImageSpec::parse(a.positional.front());
    auto image = st->find_image(spec.pool, spec.image);
    if (!image)
      throw store::StoreError(store::StoreError::Kind::kNotFound,
                              "no backups of " + spec.pool + "/" + spec.image + " in this store");
    revs = st->revisions(image->key);
  }
  if (a.json()) {
    std::cout << "[";
    for (size_t i = 0; i < revs.size(); ++i) std::cout << (i ? "," : "") << revision_json(revs[i]);
    std::cout << "]\n";
    return 0;
  }
  std::printf("%-8s %-32s %-20s %10s %8s %-5s %10s %10s %s\n", "ID", "IMAGE", "CREATED", "SIZE", "PARENT", "KIND",
              "READ", "STORED", "NOTE");
  for (auto& r : revs) {
    std::string note = (r.flags & store::kRevisionProtected) ? "protected" : "";
    if (r.flags & store::kRevisionVerifyFailed) note += note.empty() ? "differs-from-snapshot" : ",differs-from-snapshot";
    std::printf("%-8llu %-32s %-20s %10s %8s %-5s %10s %10s %s\n", static_cast<unsigned long long>(r.id),
                (r.pool + "/" + r.name).c_str(), tools::iso_time(r.created).c_str(), tools::human_size(r.size).c_str(),
                r.parent ? std::to_string(r.parent).c_str() : "-", kind_name(r.kind),
                tools::human_size(r.bytes_read).c_str(), tools::human_size(r.bytes_stored).c_str(), note.c_str());
  }
  return 0;
}

// POOL/IMAGE@REV with a revision number required.
store::RevisionRecord resolve_exact_revision(store::Store& st, const std::string& text) {
  if (rbd::ImageSpec::parse(text).snap.empty()) throw UsageError(text + ": give the revision as POOL/IMAGE@REV");
  return resolve_revision(st, text);
}

int cmd_forget(const Args& a) {
  const std::string spec = one_positional(a, "POOL/IMAGE@REV");
  return logged(a, "forget", spec, [&](uint64_t&) {
    auto st = store::Store::open(require_store(a), store::OpenMode::kWriter, "rbdvault forget " + spec);
    store::RevisionRecord rev = resolve_exact_revision(*st, spec);
    st->forget(rev.id);
    if (!a.flag("quiet"))
      std::cout << "forgot " << rev.pool << "/" << rev.name << "@" << rev.id << " (run gc to free space)\n";
    return 0;
  });
}

int cmd_protect(const Args& a, bool on) {
  const std::string spec = one_positional(a, "POOL/IMAGE@REV");
  auto st = store::Store::open(require_store(a), store::OpenMode::kWriter, "rbdvault " + a.command + " " + spec);
  store::RevisionRecord rev = resolve_exact_revision(*st, spec);
  st->set_protected(rev.id, on);
  if (!a.flag("quiet"))
    std::cout << (on ? "protected " : "unprotected ") << rev.pool << "/" << rev.name << "@" << rev.id << "\n";
  return 0;
}

int cmd_expire(const Args& a) {
  if (a.positional.size() > 1) throw UsageError("expire: expected at most one POOL/IMAGE");
  const agent::RetentionPolicy policy = a.n.keep;
  if (policy.empty()) throw UsageError("expire: give at least one --keep-* option (refusing to expire everything)");
  const bool dry = a.flag("dry-run");
  const std::string only = a.positional.empty() ? "" : a.positional.front();
  return logged(a, "expire", only, [&](uint64_t&) {
    auto st = store::Store::open(require_store(a), dry ? store::OpenMode::kReadOnly : store::OpenMode::kWriter,
                                 "rbdvault expire " + only);
    std::vector<store::ImageRecord> images;
    if (only.empty()) {
      images = st->images();
    } else {
      rbd::ImageSpec spec = rbd::ImageSpec::parse(only);
      auto img = st->find_image(spec.pool, spec.image);
      if (!img)
        throw store::StoreError(store::StoreError::Kind::kNotFound,
                                "no backups of " + spec.pool + "/" + spec.image + " in this store");
      images.push_back(*img);
    }
    std::ostringstream json;
    json << "[";
    bool first = true;
    uint64_t forgotten = 0;
    for (auto& img : images) {
      for (const auto& [d, r] : agent::expire_image(*st, img.key, policy, dry)) {
        if (a.json()) {
          json << (first ? "" : ",") << "{\"image\":" << tools::json_string(img.pool + "/" + img.name)
               << ",\"id\":" << d.id << ",\"created\":" << tools::json_string(tools::iso_time(r.created))
               << ",\"action\":\"" << (d.keep ? "keep" : "forget") << "\",\"reasons\":" << tools::json_string(d.reasons)
               << "}";
          first = false;
        } else if (!a.flag("quiet")) {
          std::printf("%-32s %-8llu %-20s %-6s %s\n", (img.pool + "/" + img.name).c_str(),
                      static_cast<unsigned long long>(d.id), tools::iso_time(r.created).c_str(),
                      d.keep ? "keep" : "forget", d.reasons.c_str());
        }
        if (!d.keep && !dry) ++forgotten;
      }
    }
    if (a.json())
      std::cout << json.str() << "]\n";
    else if (!a.flag("quiet"))
      std::cout << (dry ? "dry run: nothing removed\n"
                        : std::to_string(forgotten) + " revision(s) forgotten; run gc to free space\n");
    return 0;
  });
}

int cmd_gc(const Args& a) {
  if (!a.positional.empty()) throw UsageError("gc: unexpected argument " + a.positional.front());
  return logged(a, "gc", "", [&](uint64_t& bytes) {
    auto st = store::Store::open(require_store(a), store::OpenMode::kWriter, "rbdvault gc");
    store::GcOptions o;
    o.max_unused = a.n.max_unused / 100.0;
    o.dry_run = a.flag("dry-run");
    store::GcResult r = store::gc(*st, o);
    bytes = r.bytes_before - r.bytes_after;
    if (a.json()) {
      std::cout << "{\"chunks_removed\":" << r.chunks_removed << ",\"packs_deleted\":" << r.packs_deleted
                << ",\"packs_rewritten\":" << r.packs_rewritten << ",\"bytes_before\":" << r.bytes_before
                << ",\"bytes_after\":" << r.bytes_after << ",\"dry_run\":" << (o.dry_run ? "true" : "false") << "}\n";
    } else if (!a.flag("quiet")) {
      std::cout << (o.dry_run ? "would remove " : "removed ") << r.chunks_removed << " chunks; packs deleted "
                << r.packs_deleted << ", rewritten " << r.packs_rewritten << "; pack data "
                << tools::human_size(r.bytes_before) << " -> " << tools::human_size(r.bytes_after) << "\n";
    }
    return 0;
  });
}

int cmd_du(const Args& a) {
  if (a.positional.size() > 1) throw UsageError("du: expected at most one POOL/IMAGE");
  auto st = store::Store::open(require_store(a), store::OpenMode::kReadOnly);
  std::string only;
  if (!a.positional.empty()) {
    rbd::ImageSpec spec = rbd::ImageSpec::parse(a.positional.front());
    only = spec.pool + "/" + spec.image;
    if (!st->find_image(spec.pool, spec.image))
      throw store::StoreError(store::StoreError::Kind::kNotFound, "no backups of " + only + " in this store");
  }
  store::StoreUsage u = store::du(*st, only);
  if (a.json()) {
    std::cout << "{\"pack_bytes\":" << u.pack_bytes << ",\"referenced_bytes\":" << u.referenced_bytes
              << ",\"unreferenced_bytes\":" << u.unreferenced_bytes << ",\"index_bytes\":" << u.index_bytes
              << ",\"images\":[";
    for (size_t i = 0; i < u.images.size(); ++i) {
      auto& im = u.images[i];
      std::cout << (i ? "," : "") << "{\"image\":" << tools::json_string(im.image) << ",\"revisions\":" << im.revisions
                << ",\"size\":" << im.logical_bytes << ",\"stored_bytes\":" << im.stored_bytes << ",\"per_revision\":[";
      for (size_t j = 0; j < im.per_revision.size(); ++j)
        std::cout << (j ? "," : "") << "{\"id\":" << im.per_revision[j].revision
                  << ",\"unique_bytes\":" << im.per_revision[j].unique_bytes << "}";
      std::cout << "]}";
    }
    std::cout << "]}\n";
    return 0;
  }
  std::printf("%-32s %9s %10s %10s\n", "IMAGE", "REVISIONS", "SIZE", "STORED");
  for (auto& im : u.images) {
    std::printf("%-32s %9llu %10s %10s\n", im.image.c_str(), static_cast<unsigned long long>(im.revisions),
                tools::human_size(im.logical_bytes).c_str(), tools::human_size(im.stored_bytes).c_str());
    for (auto& r : im.per_revision)
      std::printf("  @%-29llu %9s %10s %10s unique\n", static_cast<unsigned long long>(r.revision), "", "",
                  tools::human_size(r.unique_bytes).c_str());
  }
  std::printf("pack data %s (referenced %s, reclaimable by gc %s), index %s\n", tools::human_size(u.pack_bytes).c_str(),
              tools::human_size(u.referenced_bytes).c_str(), tools::human_size(u.unreferenced_bytes).c_str(),
              tools::human_size(u.index_bytes).c_str());
  return 0;
}

int cmd_scrub(const Args& a) {
  if (a.positional.size() > 1) throw UsageError("scrub: expected at most one POOL/IMAGE[@REV]");
  const std::string target = a.positional.empty() ? "" : a.positional.front();
  return logged(a, "scrub", target, [&](uint64_t& bytes) {
    auto st = store::Store::open(require_store(a), store::OpenMode::kReadOnly);
    store::ScrubOptions o;
    o.deep = a.flag("deep");
    if (!target.empty()) {
      rbd::ImageSpec spec = rbd::ImageSpec::parse(target);
      auto img = st->find_image(spec.pool, spec.image);
      if (!img)
        throw store::StoreError(store::StoreError::Kind::kNotFound,
                                "no backups of " + spec.pool + "/" + spec.image + " in this store");
      o.image = img->key;
      if (!spec.snap.empty()) o.revision = resolve_revision(*st, target).id;
    }
    store::ScrubReport r = store::scrub(*st, o);
    bytes = r.bytes_verified;
    if (a.json()) {
      std::cout << "{\"clean\":" << (r.clean() ? "true" : "false") << ",\"revisions_checked\":" << r.revisions_checked
                << ",\"chunks_checked\":" << r.chunks_checked << ",\"bytes_verified\":" << r.bytes_verified
                << ",\"damaged_revisions\":[";
      auto d = r.damaged_revisions();
      for (size_t i = 0; i < d.size(); ++i) std::cout << (i ? "," : "") << d[i];
      std::cout << "],\"issues\":[";
      for (size_t i = 0; i < r.issues.size(); ++i)
        std::cout << (i ? "," : "") << "{\"image\":" << tools::json_string(r.issues[i].image)
                  << ",\"revision\":" << r.issues[i].revision
                  << ",\"problem\":" << tools::json_string(r.issues[i].problem) << "}";
      std::cout << "]}\n";
    } else {
      for (auto& i : r.issues)
        std::cout << (i.revision ? i.image + "@" + std::to_string(i.revision) : std::string("store")) << ": "
                  << i.problem << "\n";
      if (!a.flag("quiet"))
        std::cout << (r.clean() ? "clean: " : "DAMAGED: ") << r.revisions_checked << " revisions, " << r.chunks_checked
                  << " chunks" << (o.deep ? ", " + tools::human_size(r.bytes_verified) + " re-hashed" : "") << ", "
                  << r.issues.size() << " issue(s)\n";
    }
    return r.clean() ? 0 : 1;
  });
}

int cmd_verify(const Args& a) {
  const std::string target = one_positional(a, "POOL/IMAGE[@REV]");
  return logged(a, "verify", target, [&](uint64_t& bytes) {
    auto st = store::Store::open(require_store(a), store::OpenMode::kReadOnly);
    store::RevisionRecord rev = resolve_revision(*st, target);
    rbd::Cluster cluster(connect_options(a));
    agent::VerifyOptions o;
    o.sample_percent = a.n.sample;
    agent::VerifyResult r = agent::verify_revision(cluster, *st, rev, o);
    bytes = r.blocks_compared * st->block_size();
    if (a.json()) {
      std::cout << "{\"image\":" << tools::json_string(rev.pool + "/" + rev.name) << ",\"revision\":" << rev.id
                << ",\"blocks_compared\":" << r.blocks_compared << ",\"mismatches\":" << r.mismatches << "}\n";
    } else {
      std::cout << rev.pool << "/" << rev.name << "@" << rev.id << ": " << r.blocks_compared << " blocks compared with "
                << rev.snap_name << ", " << r.mismatches << " mismatch(es)";
      for (auto b : r.first_mismatches) std::cout << (b == r.first_mismatches.front() ? ": blocks " : ", ") << b;
      std::cout << "\n";
    }
    return r.mismatches ? 1 : 0;
  });
}

int cmd_repair(const Args& a) {
  if (!a.positional.empty()) throw UsageError("repair: unexpected argument " + a.positional.front());
  return logged(a, "repair", "", [&](uint64_t&) {
    auto st = store::Store::open(require_store(a), store::OpenMode::kWriter, "rbdvault repair");
    std::unique_ptr<rbd::Cluster> cluster;
    try {
      cluster = std::make_unique<rbd::Cluster>(connect_options(a));
    } catch (const rbd::CephError& e) {
      spdlog::warn("repair: no cluster ({}); only copies inside the store can be used", e.what());
    }
    agent::RepairResult r = agent::repair_store(cluster.get(), *st);
    for (auto& u : r.unrepaired) std::cout << "not repaired: " << u << "\n";
    if (!r.damaged_revisions.empty()) {
      std::cout << "revisions still damaged:";
      for (auto id : r.damaged_revisions) std::cout << " " << id;
      std::cout << "\n";
    }
    if (!a.flag("quiet"))
      std::cout << r.damaged_chunks << " damaged chunk(s): " << r.repaired_from_source << " re-read from Ceph, "
                << r.repaired_from_copy << " from copies, " << r.unrepaired.size() << " not repairable\n";
    return r.unrepaired.empty() ? 0 : 1;
  });
}

int cmd_log(const Args& a) {
  if (a.positional.size() > 1) throw UsageError("log: expected at most one POOL/IMAGE");
  const std::string dir = require_store(a);
  store::Store::open(dir, store::OpenMode::kReadOnly);  // validates the directory
  std::string only;
  if (!a.positional.empty()) {
    rbd::ImageSpec spec = rbd::ImageSpec::parse(a.positional.front());
    only = spec.pool + "/" + spec.image;
  }
  size_t torn = 0;
  auto records = store::OpLog(dir).read(&torn);
  if (torn) spdlog::warn("operation log: skipped {} torn line(s) (a process died or the disk filled mid-line)", torn);
  if (a.json()) std::cout << "[";
  bool first = true;
  for (auto& r : records) {
    if (!only.empty() && r.image.rfind(only, 0) != 0) continue;
    const std::string result = r.end_ms ? r.result : "unfinished";
    const double secs = r.end_ms ? (r.end_ms - r.start_ms) / 1000.0 : 0;
    if (a.json()) {
      std::cout << (first ? "" : ",") << "{\"id\":" << tools::json_string(r.id)
                << ",\"op\":" << tools::json_string(r.op) << ",\"image\":" << tools::json_string(r.image)
                << ",\"start\":" << tools::json_string(tools::iso_time(r.start_ms / 1000))
                << ",\"end\":" << (r.end_ms ? tools::json_string(tools::iso_time(r.end_ms / 1000)) : "null")
                << ",\"seconds\":" << secs << ",\"result\":" << tools::json_string(result) << ",\"bytes\":" << r.bytes
                << ",\"error\":" << tools::json_string(r.error) << ",\"user\":" << tools::json_string(r.user)
                << ",\"host\":" << tools::json_string(r.host) << ",\"pid\":" << r.pid
                << ",\"args\":" << tools::json_string(r.args) << "}";
    } else {
      std::printf("%-20s %-8s %-28s %-10s %8.1fs %10s %s@%s pid %lld%s%s\n", tools::iso_time(r.start_ms / 1000).c_str(),
                  r.op.c_str(), r.image.empty() ? "-" : r.image.c_str(), result.c_str(), secs,
                  tools::human_size(r.bytes).c_str(), r.user.c_str(), r.host.c_str(), static_cast<long long>(r.pid),
                  r.error.empty() ? "" : ": ", r.error.c_str());
    }
    first = false;
  }
  if (a.json()) std::cout << "]\n";
  return 0;
}

int cmd_images(const Args& a) {
  const std::string pool = one_positional(a, "POOL");
  rbd::Cluster cluster(connect_options(a));
  auto images = cluster.list_images(pool);
  if (a.json()) std::cout << "[";
  bool first = true;
  for (auto& e : images) {
    rbd::Image img = rbd::Image::open(cluster, pool, e.name, {}, true);
    rbd::ImageInfo info = img.info();
    if (a.json()) {
      std::cout << (first ? "" : ",") << "{\"name\":" << tools::json_string(e.name)
                << ",\"id\":" << tools::json_string(e.id) << ",\"size\":" << info.size
                << ",\"object_size\":" << info.object_size << ",\"features\":" << info.features << "}";
    } else {
      std::printf("%-32s %-16s %10s\n", e.name.c_str(), e.id.c_str(), tools::human_size(info.size).c_str());
    }
    first = false;
  }
  if (a.json()) std::cout << "]\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "--version") {
    std::cout << tools::version_text();
    return 0;
  }
  auto logger = tools::make_stderr_logger("rbdvault");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%^%l%$: %v");
  std::string command;  // known once parse() has found it
  // A monitoring plugin answers UNKNOWN (3), never CRITICAL, for its own usage errors.
  auto is_check = [&] { return command == "check" || (command.empty() && argc > 1 && std::string(argv[1]) == "check"); };
  try {
    Args a = parse(argc, argv, command);
    spdlog::set_level(a.flag("verbose") ? spdlog::level::debug
                      : a.flag("quiet") ? spdlog::level::warn
                                        : spdlog::level::info);
    if (a.flag("verbose")) spdlog::set_pattern("%H:%M:%S.%e %^%l%$: %v");
    if (a.command == "init") return cmd_init(a);
    if (a.command == "backup") return cmd_backup(a);
    if (a.command == "restore") return cmd_restore(a);
    if (a.command == "ls") return cmd_ls(a);
    if (a.command == "images") return cmd_images(a);
    if (a.command == "forget") return cmd_forget(a);
    if (a.command == "expire") return cmd_expire(a);
    if (a.command == "protect") return cmd_protect(a, true);
    if (a.command == "unprotect") return cmd_protect(a, false);
    if (a.command == "gc") return cmd_gc(a);
    if (a.command == "du") return cmd_du(a);
    if (a.command == "scrub") return cmd_scrub(a);
    if (a.command == "verify") return cmd_verify(a);
    if (a.command == "repair") return cmd_repair(a);
    if (a.command == "log") return cmd_log(a);
    if (a.command == "check") {
      // A monitoring plugin answers UNKNOWN (3), never CRITICAL, for its own usage errors.
      try {
        if (!a.positional.empty()) throw UsageError("check: unexpected argument " + a.positional.front());
        tools::BatchArgs b;
        b.config = a.str("config");
        b.store = a.str("store");
        b.max_age = a.n.max_age;
        b.warn_age = a.n.warn_age;
        return tools::cmd_check(b);
      } catch (const std::exception& e) {
        std::cout << "RBDVAULT UNKNOWN - " << e.what() << "\n";
        return 3;
      }
    }
    if (a.command == "run" || a.command == "agent" || a.command == "status") {
      if (!a.positional.empty()) throw UsageError(a.command + ": unexpected argument " + a.positional.front());
      tools::BatchArgs b;
      b.config = a.str("config");
      b.store = a.str("store");
      b.job = a.str("job");
      b.dry_run = a.flag("dry-run");
      b.force = a.flag("force");
      b.json = a.json();
      b.quiet = a.flag("quiet");
      b.time_scale = a.n.time_scale;
      b.poll_seconds = a.n.poll;
      b.command_line = a.command_line;
      if (a.command == "run") return tools::cmd_run(b);
      if (a.command == "agent") return tools::cmd_agent(b);
      return tools::cmd_status(b);
    }
    throw UsageError("unknown command '" + a.command + "' (see rbdvault --help)");
  } catch (const UsageError& e) {
    if (is_check()) {
      std::printf("RBDVAULT UNKNOWN - %s\n", e.what());
      return 3;
    }
    std::fprintf(stderr, "rbdvault: %s\n", e.what());
    return 2;
  } catch (const po::error& e) {
    if (is_check()) {
      std::printf("RBDVAULT UNKNOWN - %s\n", e.what());
      return 3;
    }
    std::fprintf(stderr, "rbdvault: %s\n", e.what());
    return 2;
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "rbdvault: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rbdvault: error: %s\n", e.what());
    return 1;
  }
}
