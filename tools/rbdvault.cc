// rbdvault: the command line. Thin by design: parse, call agent/ or store/, print.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "agent/backup.h"
#include "agent/restore.h"
#include "rbd/cluster.h"
#include "rbd/error.h"
#include "rbd/image.h"
#include "store/store.h"
#include "tools/human.h"

namespace po = boost::program_options;
using namespace rbdvault;

namespace {

constexpr const char* kUsage = R"(usage: rbdvault COMMAND [OPTIONS] [ARGS]

commands:
  init     --store DIR [--block-size 64K]          create a revision store
  backup   --store DIR POOL/IMAGE [--full]         back up an image (incremental when possible)
  restore  --store DIR POOL/IMAGE[@REV] --to POOL/NAME | --to-file PATH
                                                   restore a revision (default: the latest)
  ls       --store DIR [POOL/IMAGE]                list revisions
  images   POOL                                    list the RBD images of a pool

Ceph options (like rbd): -c/--conf PATH, --id NAME, --keyring PATH, --connect-timeout SECONDS (15)
output: --format plain|json, -v/--verbose, -q/--quiet
)";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Args {
  std::string command;
  std::vector<std::string> positional;
  po::variables_map vm;

  std::string str(const char* name) const { return vm.count(name) ? vm[name].as<std::string>() : std::string(); }
  bool flag(const char* name) const { return vm.count(name) && vm[name].as<bool>(); }
  bool json() const { return str("format") == "json"; }
};

Args parse(int argc, char** argv) {
  po::options_description opts;
  opts.add_options()
      ("help,h", "")
      ("store,s", po::value<std::string>(), "")
      ("conf,c", po::value<std::string>(), "")
      ("id", po::value<std::string>(), "")
      ("keyring,k", po::value<std::string>(), "")
      ("connect-timeout", po::value<int>()->default_value(15), "")
      ("format", po::value<std::string>()->default_value("plain"), "")
      ("verbose,v", po::bool_switch(), "")
      ("quiet,q", po::bool_switch(), "")
      ("full", po::bool_switch(), "")
      ("whole-object", po::bool_switch(), "")
      ("reads-in-flight", po::value<size_t>()->default_value(16), "")
      ("to", po::value<std::string>(), "")
      ("to-file", po::value<std::string>(), "")
      ("block-size", po::value<std::string>()->default_value("64K"), "")
      ("args", po::value<std::vector<std::string>>(), "");
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
  a.command = a.positional.front();
  a.positional.erase(a.positional.begin());
  const std::string fmt = a.str("format");
  if (fmt != "plain" && fmt != "json") throw UsageError("--format must be plain or json");
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
  o.timeout_seconds = a.vm["connect-timeout"].as<int>();
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
    << ",\"ceph_image_id\":" << tools::json_string(r.ceph_image_id) << ",\"snapshot\":" << tools::json_string(r.snap_name)
    << ",\"snapshot_id\":" << r.snap_id << ",\"digest\":\"" << store::to_hex(r.digest) << "\"}";
  return o.str();
}

// Resolves POOL/IMAGE[@REV] to a committed revision; REV defaults to the latest.
store::RevisionRecord resolve_revision(store::Store& st, const std::string& text) {
  rbd::ImageSpec spec = rbd::ImageSpec::parse(text);
  auto image = st.find_image(spec.pool, spec.image);
  if (!image) throw store::StoreError(store::StoreError::Kind::kNotFound, "no backups of " + spec.pool + "/" + spec.image + " in this store");
  if (spec.snap.empty()) {
    auto latest = st.latest_revision(image->key);
    if (!latest) throw store::StoreError(store::StoreError::Kind::kNotFound, "no revisions of " + spec.pool + "/" + spec.image + " in this store");
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
  if (!rev || rev->image != image->key)
    throw store::StoreError(store::StoreError::Kind::kNotFound, "revision " + spec.snap + " of " + spec.pool + "/" + spec.image + " does not exist");
  return *rev;
}

int cmd_init(const Args& a) {
  if (!a.positional.empty()) throw UsageError("init: unexpected argument " + a.positional.front());
  store::StoreOptions o;
  o.block_size = static_cast<uint32_t>(tools::parse_size(a.str("block-size")));
  store::Store::init(require_store(a), o);
  if (!a.flag("quiet")) std::cout << "initialised store " << require_store(a) << " (block size " << tools::human_size(o.block_size) << ")\n";
  return 0;
}

int cmd_backup(const Args& a) {
  const std::string spec_text = one_positional(a, "POOL/IMAGE");
  rbd::ImageSpec spec = rbd::ImageSpec::parse(spec_text);
  if (!spec.snap.empty()) throw UsageError("backup: give POOL/IMAGE without @SNAP; rbdvault takes its own snapshot");
  auto st = store::Store::open(require_store(a), store::OpenMode::kWriter, "rbdvault backup " + spec.str());
  rbd::Cluster cluster(connect_options(a));
  agent::BackupOptions o;
  o.full = a.flag("full");
  o.whole_object = a.flag("whole-object");
  o.reads_in_flight = a.vm["reads-in-flight"].as<size_t>();
  Progress progress(!a.flag("quiet"));
  o.progress = progress.callback();
  agent::BackupResult r = agent::backup_image(cluster, *st, spec, o);
  const auto& rev = r.revision;
  if (a.json()) {
    std::cout << "{\"image\":" << tools::json_string(spec.str()) << ",\"revision\":" << rev.id << ",\"size\":" << rev.size
              << ",\"parent\":" << (rev.parent ? std::to_string(rev.parent) : "null") << ",\"kind\":\"" << kind_name(rev.kind)
              << "\",\"base_snapshot\":" << tools::json_string(r.base_snapshot)
              << ",\"full_reason\":" << tools::json_string(r.full_reason) << ",\"bytes_read\":" << rev.bytes_read
              << ",\"bytes_stored\":" << rev.bytes_stored << ",\"new_chunks\":" << rev.new_chunks
              << ",\"map_entries\":" << rev.map_entries << ",\"peak_reads_in_flight\":" << r.peak_reads_in_flight
              << ",\"seconds\":" << r.seconds << "}\n";
  } else {
    std::cout << spec.str() << ": " << kind_name(rev.kind) << " backup, size " << tools::human_size(rev.size) << ", read "
              << tools::human_size(rev.bytes_read) << ", stored " << tools::human_size(rev.bytes_stored) << "\n"
              << "revision " << rev.id << "\n";
  }
  return 0;
}

int cmd_restore(const Args& a) {
  const std::string spec_text = one_positional(a, "POOL/IMAGE[@REV]");
  const std::string to = a.str("to"), to_file = a.str("to-file");
  if (to.empty() == to_file.empty()) throw UsageError("restore: give exactly one of --to POOL/NAME or --to-file PATH");
  auto st = store::Store::open(require_store(a), store::OpenMode::kReadOnly);
  store::RevisionRecord rev = resolve_revision(*st, spec_text);
  Progress progress(!a.flag("quiet"));
  agent::RestoreOptions o;
  o.progress = progress.callback();
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
  return 0;
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
    if (!image) throw store::StoreError(store::StoreError::Kind::kNotFound, "no backups of " + spec.pool + "/" + spec.image + " in this store");
    revs = st->revisions(image->key);
  }
  if (a.json()) {
    std::cout << "[";
    for (size_t i = 0; i < revs.size(); ++i) std::cout << (i ? "," : "") << revision_json(revs[i]);
    std::cout << "]\n";
    return 0;
  }
  std::printf("%-8s %-32s %-20s %10s %8s %-5s %10s %10s\n", "ID", "IMAGE", "CREATED", "SIZE", "PARENT", "KIND", "READ", "STORED");
  for (auto& r : revs) {
    std::printf("%-8llu %-32s %-20s %10s %8s %-5s %10s %10s\n", static_cast<unsigned long long>(r.id),
                (r.pool + "/" + r.name).c_str(), tools::iso_time(r.created).c_str(), tools::human_size(r.size).c_str(),
                r.parent ? std::to_string(r.parent).c_str() : "-", kind_name(r.kind), tools::human_size(r.bytes_read).c_str(),
                tools::human_size(r.bytes_stored).c_str());
  }
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
      std::cout << (first ? "" : ",") << "{\"name\":" << tools::json_string(e.name) << ",\"id\":" << tools::json_string(e.id)
                << ",\"size\":" << info.size << ",\"object_size\":" << info.object_size << ",\"features\":" << info.features << "}";
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
  auto logger = spdlog::stderr_color_mt("rbdvault");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%^%l%$: %v");
  try {
    Args a = parse(argc, argv);
    spdlog::set_level(a.flag("verbose") ? spdlog::level::debug : a.flag("quiet") ? spdlog::level::warn : spdlog::level::info);
    if (a.command == "init") return cmd_init(a);
    if (a.command == "backup") return cmd_backup(a);
    if (a.command == "restore") return cmd_restore(a);
    if (a.command == "ls") return cmd_ls(a);
    if (a.command == "images") return cmd_images(a);
    throw UsageError("unknown command '" + a.command + "' (see rbdvault --help)");
  } catch (const UsageError& e) {
    std::fprintf(stderr, "rbdvault: %s\n", e.what());
    return 2;
  } catch (const po::error& e) {
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
