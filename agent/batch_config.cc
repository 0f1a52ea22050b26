#include "agent/batch_config.h"

#include <fnmatch.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "agent/numbers.h"
#include "agent/restore.h"
#include "store/format.h"
#include "store/rados_cache.h"

namespace rbdvault::agent {
namespace {

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

bool parse_bool(const std::string& v) {
  if (v == "true" || v == "yes" || v == "on" || v == "1") return true;
  if (v == "false" || v == "no" || v == "off" || v == "0") return false;
  throw std::invalid_argument("expected true or false");
}

// Applies one hook key (jobs, images and groups share them); false if `key` is not one.
bool apply_hook_key(SnapshotHooks& h, const std::string& key, const std::string& v) {
  if (key == "pre-snapshot")
    h.pre = v;
  else if (key == "post-snapshot")
    h.post = v;
  else if (key == "hook-timeout")
    h.timeout_seconds = parse_duration_in(v, kHookTimeoutRange);
  else if (key == "on-hook-failure")
    h.on_failure = parse_hook_policy(v);
  else
    return false;
  return true;
}

// Applies one per-image key to `s`; false if `key` is not a per-image key.
bool apply_image_key(ImageSettings& s, const std::string& key, const std::string& v) {
  if (apply_hook_key(s.hooks, key, v)) return true;
  if (key == "schedule")
    s.schedule = Schedule::parse(v);
  else if (key == "jitter")
    s.jitter_seconds = parse_duration_in(v, kJitterRange);
  else if (key == "keep-last")
    s.retention.keep_last = static_cast<int>(parse_whole(v, kKeepRange));
  else if (key == "keep-hourly")
    s.retention.keep_hourly = static_cast<int>(parse_whole(v, kKeepRange));
  else if (key == "keep-daily")
    s.retention.keep_daily = static_cast<int>(parse_whole(v, kKeepRange));
  else if (key == "keep-weekly")
    s.retention.keep_weekly = static_cast<int>(parse_whole(v, kKeepRange));
  else if (key == "keep-monthly")
    s.retention.keep_monthly = static_cast<int>(parse_whole(v, kKeepRange));
  else if (key == "full-every")
    s.full_every = static_cast<unsigned>(parse_whole(v, kFullEveryRange));
  else if (key == "verify-sample")
    s.verify_sample_percent = parse_real(v, kVerifySampleRange);
  else if (key == "reads-in-flight")
    s.reads_in_flight = static_cast<size_t>(parse_whole(v, kReadsInFlightRange));
  else if (key == "retries")
    s.retries = static_cast<unsigned>(parse_whole(v, kRetriesRange));
  else if (key == "retry-delay")
    s.retry_delay_seconds = parse_duration_in(v, kRetryDelayRange);
  else if (key == "skip")
    s.skip = parse_bool(v);
  else if (key == "fsck")
    s.fsck = parse_bool(v);
  else
    return false;
  return true;
}

// "pool/name" with both parts non-empty and no snapshot.
bool valid_image_spec(const std::string& image) {
  const size_t slash = image.find('/');
  return slash != std::string::npos && slash != 0 && slash + 1 != image.size() &&
         image.find('@') == std::string::npos && image.find('/', slash + 1) == std::string::npos;
}

struct Line {
  std::string key, value;
  int line = 0;
};

struct Section {
  std::string name;  // "" for keys before any header
  int line = 0;
  std::vector<Line> lines;
};

}  // namespace

uint64_t parse_bytes(const std::string& text) {
  const std::string t = trim(text);
  const std::invalid_argument bad("expected a size such as 0, 512K, 200M or 1G");
  const size_t used = t.find_first_not_of("0123456789.");
  const std::string number = t.substr(0, used);
  if (!plain_decimal(number)) throw bad;  // no hex, sign, exponent, inf or nan
  if (number.size() > 40) throw std::invalid_argument("size too large");  // stod: out_of_range beyond 1e308
  const double n = std::stod(number);
  std::string unit = used == std::string::npos ? "" : t.substr(used);
  if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b')) unit.pop_back();
  if (!unit.empty() && unit.back() == 'i') unit.pop_back();
  static const std::string kUnits = "KMGTP";
  double mult = 1;
  if (!unit.empty()) {
    const size_t i = unit.size() == 1 ? kUnits.find(static_cast<char>(std::toupper(unit[0]))) : std::string::npos;
    if (i == std::string::npos) throw bad;
    mult = std::pow(1024.0, static_cast<double>(i + 1));
  }
  // 2^64 and beyond would wrap (99999999999999999999 became 0); a size that large is a typo anyway.
  if (n * mult >= 18446744073709551616.0) throw std::invalid_argument("size too large");
  // Below one byte it would become 0, which means "unlimited" or "none" to every caller.
  if (n > 0 && n * mult < 1) throw std::invalid_argument("size '" + t + "' is less than one byte");
  return static_cast<uint64_t>(n * mult);
}

bool glob_match(const std::string& pattern, const std::string& name) {
  return ::fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

bool JobConfig::selects(const std::string& p, const std::string& name) const {
  if (p != pool) return false;
  // An unfinished restore is never worth a backup, and a backup snapshot on it would keep the
  // next restore to that target from removing it.
  if (is_partial_name(name)) return false;
  bool in = include.empty();
  for (auto& g : include) in = in || glob_match(g, name);
  if (!in) return false;
  for (auto& g : exclude)
    if (glob_match(g, name)) return false;
  return true;
}

std::optional<ImageSettings> BatchConfig::find_settings(const std::string& pool, const std::string& name) const {
  for (const JobConfig& job : jobs)
    if (job.selects(pool, name)) return settings_for(job, pool + "/" + name);
  return std::nullopt;
}

const GroupConfig* BatchConfig::group_of(const std::string& image) const {
  for (const GroupConfig& g : groups)
    if (std::find(g.images.begin(), g.images.end(), image) != g.images.end()) return &g;
  return nullptr;
}

ImageSettings BatchConfig::settings_for(const JobConfig& job, const std::string& image) const {
  ImageSettings s = job.settings;
  auto o = image_overrides.find(image);
  if (o != image_overrides.end())
    for (auto& [k, v] : o->second.values) apply_image_key(s, k, v);  // validated at load
  return s;
}

namespace {

// A '#' at the start of a line or after a blank starts a comment, as the example config uses it
// ("index-dir = ...   # the local index cache"); a '#' inside a value ("a#b") or inside quotes (a
// hook's `notify "nightly #3"`) stays.
std::string strip_comment(const std::string& line) {
  char quote = 0;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quote) {
      if (c == quote) quote = 0;
    } else if (c == '"' || c == '\'') {
      quote = c;
    } else if (c == '#' && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) {
      return line.substr(0, i);
    }
  }
  return line;
}

}  // namespace

BatchConfig parse_batch_config(const std::string& text, const std::string& path) {
  // Split into sections first, with line numbers, so every error can name its line.
  std::vector<Section> sections(1);
  std::istringstream in(text);
  std::string raw;
  for (int n = 1; std::getline(in, raw); ++n) {
    std::string l = trim(strip_comment(raw));
    if (l.empty()) continue;
    const std::string where = path + ":" + std::to_string(n) + ": ";
    if (l[0] == '[') {
      if (l.back() != ']') throw ConfigError(where + "section header '" + l + "' lacks its closing ']'");
      sections.push_back(Section{trim(l.substr(1, l.size() - 2)), n, {}});
      continue;
    }
    const size_t eq = l.find('=');
    if (eq == std::string::npos) throw ConfigError(where + "expected 'key = value', got '" + l + "'");
    std::string key = trim(l.substr(0, eq)), value = trim(l.substr(eq + 1));
    if (key.empty()) throw ConfigError(where + "missing key before '='");
    sections.back().lines.push_back(Line{key, value, n});
  }

  BatchConfig c;
  c.path = path;
  ImageSettings defaults;
  std::set<std::string> job_names;
  auto fail = [&](const Line& l, const std::string& section, const std::string& msg) -> ConfigError {
    return ConfigError(path + ":" + std::to_string(l.line) + ": key '" + l.key + "' in [" + section + "]: " + msg);
  };
  auto unknown = [&](const Line& l, const std::string& section) {
    return ConfigError(path + ":" + std::to_string(l.line) + ": unknown key '" + l.key + "' in [" + section + "]");
  };
  // Calls `fn(line)` for each key, turning value errors into ConfigErrors that name the line; keys
  // that may not repeat are checked here too.
  auto each = [&](const Section& s, const std::set<std::string>& lists, const std::function<bool(const Line&)>& fn) {
    std::set<std::string> seen;
    for (const Line& l : s.lines) {
      if (!lists.count(l.key) && !seen.insert(l.key).second)
        throw ConfigError(path + ":" + std::to_string(l.line) + ": key '" + l.key + "' in [" + s.name +
                          "] is given twice");
      bool known = false;
      try {
        known = fn(l);
      } catch (const ConfigError&) {
        throw;
      } catch (const std::exception& e) {
        throw fail(l, s.name, "bad value '" + l.value + "': " + e.what());
      }
      if (!known) throw unknown(l, s.name);
    }
  };

  // [defaults] first: jobs inherit it wherever it appears in the file.
  for (const Section& s : sections)
    if (s.name == "defaults") each(s, {}, [&](const Line& l) { return apply_image_key(defaults, l.key, l.value); });

  std::set<std::string> section_names;
  std::map<std::string, int> member_line;  // group member -> line naming it
  for (const Section& s : sections) {
    if (!s.name.empty() && !section_names.insert(s.name).second)
      throw ConfigError(path + ":" + std::to_string(s.line) + ": section [" + s.name +
                        "] appears twice; merge the two");
    if (s.name.empty()) {
      if (!s.lines.empty())
        throw ConfigError(path + ":" + std::to_string(s.lines.front().line) + ": key '" + s.lines.front().key +
                          "' comes before any [section]");
    } else if (s.name == "defaults") {
      // done above
    } else if (s.name == "ceph") {
      each(s, {}, [&](const Line& l) {
        if (l.key == "conf")
          c.ceph_conf = l.value;
        else if (l.key == "id")
          c.ceph_id = l.value;
        else if (l.key == "keyring")
          c.ceph_keyring = l.value;
        else if (l.key == "connect-timeout")
          c.connect_timeout = static_cast<int>(parse_duration_in(l.value, kConnectTimeoutRange));
        else if (l.key == "op-timeout")
          c.op_timeout = static_cast<int>(parse_duration_in(l.value, kOpTimeoutRange));
        else
          return false;
        return true;
      });
    } else if (s.name == "store") {
      each(s, {}, [&](const Line& l) {
        if (l.key == "path")
          c.store = l.value;
        else if (l.key == "metrics-file")
          c.metrics_file = l.value;
        else if (l.key == "log-file")
          c.log_file = l.value;
        else if (l.key == "conf")
          c.store_conf = l.value;
        else if (l.key == "id")
          c.store_id = l.value;
        else if (l.key == "keyring")
          c.store_keyring = l.value;
        else if (l.key == "index-dir")
          c.index_dir = l.value;
        else
          return false;
        return true;
      });
    } else if (s.name == "limits") {
      each(s, {}, [&](const Line& l) {
        if (l.key == "images-in-parallel")
          c.limits.images_in_parallel = static_cast<size_t>(parse_whole(l.value, kImagesInParallelRange));
        else if (l.key == "read-bandwidth")
          c.limits.read_bandwidth = parse_bandwidth(l.value);
        else if (l.key == "write-bandwidth")
          c.limits.write_bandwidth = parse_bandwidth(l.value);
        else if (l.key == "host-slots")
          c.limits.host_slots = static_cast<size_t>(parse_whole(l.value, kHostSlotsRange));
        else if (l.key == "host-slots-dir")
          c.limits.host_slots_dir = l.value;
        else
          return false;
        return true;
      });
    } else if (s.name == "maintenance") {
      each(s, {}, [&](const Line& l) {
        if (l.key == "gc-schedule")
          c.maintenance.gc = Schedule::parse(l.value);
        else if (l.key == "scrub-schedule")
          c.maintenance.scrub = Schedule::parse(l.value);
        else if (l.key == "scrub-deep")
          c.maintenance.scrub_deep = parse_bool(l.value);
        else if (l.key == "gc-max-unused")
          c.maintenance.gc_max_unused_percent = parse_real(l.value, kMaxUnusedRange);
        else
          return false;
        return true;
      });
    } else if (s.name.rfind("job.", 0) == 0) {
      JobConfig job;
      job.name = s.name.substr(4);
      if (job.name.empty() || !job_names.insert(job.name).second)
        throw ConfigError(path + ":" + std::to_string(s.line) + ": job name '" + job.name + "' is empty or repeated");
      job.settings = defaults;
      each(s, {"include", "exclude"}, [&](const Line& l) {
        if (l.key == "pool")
          job.pool = l.value;
        else if (l.key == "include")
          job.include.push_back(l.value);
        else if (l.key == "exclude")
          job.exclude.push_back(l.value);
        else
          return apply_image_key(job.settings, l.key, l.value);
        if (l.value.empty()) throw std::invalid_argument("must not be empty");
        return true;
      });
      if (job.pool.empty())
        throw ConfigError(path + ":" + std::to_string(s.line) + ": [" + s.name + "] needs 'pool = NAME'");
      c.jobs.push_back(std::move(job));
    } else if (s.name.rfind("image.", 0) == 0) {
      const std::string image = s.name.substr(6);
      const size_t slash = image.find('/');
      if (slash == std::string::npos || slash == 0 || slash + 1 == image.size() || image.find('@') != std::string::npos)
        throw ConfigError(path + ":" + std::to_string(s.line) + ": [" + s.name + "]: expected [image.POOL/NAME]");
      BatchConfig::Override o;
      o.where = path + ":" + std::to_string(s.line);
      ImageSettings probe;
      each(s, {}, [&](const Line& l) {
        if (!apply_image_key(probe, l.key, l.value)) return false;
        o.values[l.key] = l.value;
        return true;
      });
      c.image_overrides[image] = std::move(o);
    } else if (s.name.rfind("group.", 0) == 0) {
      GroupConfig g;
      g.name = s.name.substr(6);
      g.where = path + ":" + std::to_string(s.line);
      if (g.name.empty() || g.name.size() > store::kMaxGroupName)
        throw ConfigError(g.where + ": [" + s.name + "]: expected [group.NAME], NAME 1 to 255 characters");
      each(s, {"images"}, [&](const Line& l) {
        if (l.key == "rbd-group") {
          if (!valid_image_spec(l.value)) throw std::invalid_argument("expected POOL/GROUP");
          g.rbd_group = l.value;
          return true;
        }
        if (l.key != "images") return apply_hook_key(g.hooks, l.key, l.value);
        if (l.value.empty()) throw std::invalid_argument("must not be empty");
        std::istringstream list(l.value);
        for (std::string item; std::getline(list, item, ',');) {
          item = trim(item);
          const std::string at = path + ":" + std::to_string(l.line) + ": [" + s.name + "] image '" + item + "'";
          if (!valid_image_spec(item)) throw ConfigError(at + ": expected POOL/NAME");
          if (member_line.count(item))
            throw ConfigError(at + " is already in a group (line " + std::to_string(member_line[item]) +
                              "); an image can be in one group only");
          member_line[item] = l.line;
          g.images.push_back(item);
        }
        return true;
      });
      if (g.images.empty() == g.rbd_group.empty())
        throw ConfigError(g.where + ": [" + s.name + "] needs 'images = POOL/NAME, POOL/NAME' or 'rbd-group = POOL/GROUP'" +
                          (g.images.empty() ? "" : ", not both"));
      c.groups.push_back(std::move(g));
    } else if (s.name == "copy") {
      CopyConfig cc;
      each(s, {"images"}, [&](const Line& l) { return apply_copy_key(cc, l.key, l.value); });
      if (cc.to.empty()) throw ConfigError(path + ":" + std::to_string(s.line) + ": [copy] needs 'to = STORE'");
      c.copy = std::move(cc);
    } else {
      throw ConfigError(path + ":" + std::to_string(s.line) + ": unknown section [" + s.name +
                        "] (expected ceph, store, defaults, limits, maintenance, copy, job.NAME, image.POOL/NAME or "
                        "group.NAME)");
    }
  }
  // A group member must be backed up by some job (checked once every job is known).
  for (const GroupConfig& g : c.groups)
    for (const std::string& image : g.images) {
      const size_t slash = image.find('/');
      if (std::none_of(c.jobs.begin(), c.jobs.end(),
                       [&](const JobConfig& j) { return j.selects(image.substr(0, slash), image.substr(slash + 1)); }))
        throw ConfigError(path + ":" + std::to_string(member_line[image]) + ": [group." + g.name + "] image '" +
                          image + "' is selected by no [job.NAME]; a group member must be backed up by a job");
    }
  if (c.store.empty()) throw ConfigError(path + ": [store] needs 'path = DIR'");
  try {
    const bool rados = store::parse_rados_spec(c.store).has_value();
    if (!rados && !(c.store_conf.empty() && c.store_id.empty() && c.store_keyring.empty() && c.index_dir.empty()))
      throw ConfigError(path + ": [store] conf, id, keyring and index-dir are only for path = rados:POOL");
  } catch (const store::StoreError& e) {
    throw ConfigError(path + ": [store] path: " + e.what());
  }
  if (c.jobs.empty()) throw ConfigError(path + ": no [job.NAME] sections: nothing to back up");
  return c;
}

BatchConfig load_batch_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot read the config file");
  // Read one byte past the limit: enough to tell a too-large file without loading it (a path
  // naming /dev/zero or a huge log by mistake must not exhaust memory).
  std::string text(kMaxBatchConfigBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) throw ConfigError(path + ": read error");
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxBatchConfigBytes)
    throw ConfigError(path + ": larger than " + std::to_string(kMaxBatchConfigBytes >> 20) +
                      " MiB; not a batch config file");
  return parse_batch_config(text, path);
}

std::string BatchConfig::local_dir() const {
  const auto where = store::parse_rados_spec(store);
  if (!where) return store;
  return index_dir.empty() ? store::default_index_dir(*where).string() : index_dir;
}

std::string BatchConfig::store_dir() const {
  auto where = store::parse_rados_spec(store);
  if (!where) return store;
  where->conf = store_conf.empty() ? ceph_conf : store_conf;
  where->id = store_id.empty() ? ceph_id : store_id;
  where->keyring = store_keyring.empty() ? ceph_keyring : store_keyring;
  if (op_timeout > 0) where->op_timeout_seconds = op_timeout;
  const std::string dir = local_dir();
  store::refresh_rados_cache(*where, dir);
  return dir;
}

}  // namespace rbdvault::agent
