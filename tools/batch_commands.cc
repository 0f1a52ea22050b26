// The batch commands of the CLI: run, agent, status, check (a config file describes the cluster's
// backups). Like the other command groups they only parse, call agent/ and print.
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <optional>
#include <vector>

#include "agent/batch_config.h"
#include "agent/batch_run.h"
#include "agent/scheduler.h"
#include "agent/status.h"
#include "store/store.h"
#include "tools/command.h"
#include "view/presentation.h"
#include "tools/signals.h"

namespace rbdvault::tools {
namespace {

void add_log_file(const std::string& path) {
  if (path.empty()) return;
  std::shared_ptr<spdlog::sinks::basic_file_sink_mt> sink;
  try {
    sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path);
  } catch (const spdlog::spdlog_ex& e) {
    // spdlog_ex is no runtime_error: uncaught here it would read as an internal error (exit 70).
    throw store::StoreError(store::StoreError::Kind::kIO, "cannot open the log file ([store] log-file): " +
                                                              std::string(e.what()));
  }
  sink->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l [%P] %v");
  spdlog::default_logger()->sinks().push_back(sink);
}

std::string age_text(int64_t seconds) {
  if (seconds < 0) return "-";
  if (seconds < 120) return std::to_string(seconds) + "s";
  if (seconds < 7200) return std::to_string(seconds / 60) + "m";
  if (seconds < 172800) return std::to_string(seconds / 3600) + "h";
  return std::to_string(seconds / 86400) + "d";
}

// The store's images; with --config only those a job selects and does not skip, so that images
// taken out of the backup plan stop alarming (their history stays until forgotten).
std::vector<agent::ImageStatus> image_status(const Args& a) {
  const std::string config_path = a.str("config"), store_dir = a.str("store");
  if (store_dir.empty() && config_path.empty()) throw UsageError(a.command + ": give --config FILE or --store DIR");
  std::optional<agent::BatchConfig> config;
  if (!config_path.empty()) config = agent::load_batch_config(config_path);
  auto st = store::Store::open(store_dir.empty() ? config->store_dir() : require_store(a), store::OpenMode::kReadOnly);
  auto images = agent::collect_status(*st);
  if (config)
    std::erase_if(images, [&](const agent::ImageStatus& s) {
      const size_t slash = s.image.find('/');
      auto settings = config->find_settings(s.image.substr(0, slash), s.image.substr(slash + 1));
      return !settings || settings->skip;
    });
  return images;
}

std::string require_config(const Args& a) {
  std::string c = a.str("config");
  if (c.empty()) throw UsageError(a.command + ": --config FILE is required");
  return c;
}

Json run_json(const Args& a, const agent::RunReport& r) {
  Json j;
  j["config"] = a.str("config");
  j["dry_run"] = a.flag("dry-run");
  j["stopped"] = r.stopped;
  j["peak_parallel"] = r.peak_parallel;
  for (auto res :
       {agent::ImageResult::kOk, agent::ImageResult::kFailed, agent::ImageResult::kNotDue, agent::ImageResult::kSkipped,
        agent::ImageResult::kMissing, agent::ImageResult::kCancelled, agent::ImageResult::kWouldBackUp}) {
    std::string key = agent::result_name(res);
    std::replace(key.begin(), key.end(), '-', '_');
    j[key] = r.count(res);
  }
  Json images = Json::array();
  for (const auto& m : r.images) {
    const bool failed = m.result == agent::ImageResult::kFailed;
    images.push_back(Json{{"image", m.image},
                          {"job", m.job},
                          {"result", agent::result_name(m.result)},
                          {"revision", m.revision},
                          {"kind", m.kind},
                          {"consistency", m.consistency.empty() ? Json(nullptr) : Json(m.consistency)},
                          {"group", m.group.empty() ? Json(nullptr) : Json(m.group)},
                          {"group_run", m.group_run ? Json(m.group_run) : Json(nullptr)},
                          {"size", m.size},
                          {"bytes_read", m.bytes_read},
                          {"bytes_stored", m.bytes_stored},
                          {"seconds", m.seconds},
                          {"attempts", m.attempts},
                          {"expired", m.expired},
                          {"fsck", m.fsck_state < 0 ? Json(nullptr)
                                                    : Json{{"state", agent::fsck_state_name(m.fsck_state)},
                                                           {"summary", m.fsck_summary}}},
                          {"started_ns", m.started_ns},
                          {"finished_ns", m.finished_ns},
                          {"error", m.error},
                          {"error_class", failed ? Json(agent::class_name(m.error_class)) : Json(nullptr)}});
  }
  j["images"] = std::move(images);
  Json groups = Json::array();
  for (const auto& g : r.groups) {
    const bool failed = g.result == agent::ImageResult::kFailed;
    groups.push_back(Json{{"group", g.name},
                          {"images", g.images},
                          {"result", agent::result_name(g.result)},
                          {"run", g.run ? Json(g.run) : Json(nullptr)},
                          {"gap_us", g.run ? Json(g.gap_us) : Json(nullptr)},
                          {"consistency", g.consistency.empty() ? Json(nullptr) : Json(g.consistency)},
                          {"error", g.error},
                          {"error_class", failed ? Json(agent::class_name(g.error_class)) : Json(nullptr)}});
  }
  j["groups"] = std::move(groups);
  const agent::CopyStepOutcome& cp = r.copy;
  j["copy"] = !cp.ran ? Json(nullptr)
                      : Json{{"to", cp.to},
                             {"result", cp.ok ? "ok" : "failed"},
                             {"revisions_copied", cp.revisions_copied},
                             {"revisions_skipped", cp.revisions_skipped},
                             {"bytes_read", cp.bytes_read},
                             {"bytes_written", cp.bytes_written},
                             {"bytes_deduplicated", cp.bytes_deduplicated},
                             {"expired", cp.expired},
                             {"error", cp.error},
                             {"error_class", cp.ok ? Json(nullptr) : Json(agent::class_name(cp.error_class))}};
  return j;
}

// One line per consistency group: its result, run, snapshot gap and, on failure, the images.
void print_group_table(const agent::RunReport& r) {
  if (r.groups.empty()) return;
  std::printf("%-40s %-13s %8s %10s %-11s %s\n", "GROUP", "RESULT", "RUN", "GAP", "CONSISTENCY", "NOTE");
  for (const auto& g : r.groups) {
    char gap[32] = "-";
    if (g.run) std::snprintf(gap, sizeof(gap), "%.1fms", static_cast<double>(g.gap_us) / 1000);
    const std::string note = g.result == agent::ImageResult::kFailed
                                 ? std::string(agent::class_name(g.error_class)) + ": " + g.error
                                 : g.error;
    std::printf("%-40s %-13s %8s %10s %-11s %s\n", g.name.c_str(), agent::result_name(g.result),
                g.run ? std::to_string(g.run).c_str() : "-", gap, g.consistency.empty() ? "-" : g.consistency.c_str(),
                note.c_str());
  }
}

void print_run_table(const Args& a, const agent::RunReport& r) {
  std::printf("%-40s %-13s %8s %-5s %10s %10s %7s %s\n", "IMAGE", "RESULT", "REVISION", "KIND", "READ", "STORED",
              "TIME", "NOTE");
  for (const auto& m : r.images) {
    // A failure's note starts with its class, the one `run` exits with (docs/usage.md "Exit codes").
    std::string note = m.result == agent::ImageResult::kFailed
                           ? std::string(agent::class_name(m.error_class)) + ": " + m.error
                           : m.error;
    if (m.attempts > 1) note = std::to_string(m.attempts) + " attempts" + (note.empty() ? "" : "; " + note);
    if (m.expired) note += (note.empty() ? "" : "; ") + std::to_string(m.expired) + " expired";
    if (m.fsck_state >= 0)
      note += (note.empty() ? "" : "; ") + std::string("fsck ") + agent::fsck_state_name(m.fsck_state) +
              (m.fsck_state ? ": " + m.fsck_summary : "");
    const bool ran = m.result == agent::ImageResult::kOk;
    char secs[32];
    std::snprintf(secs, sizeof(secs), "%.1fs", m.seconds);
    std::printf("%-40s %-13s %8s %-5s %10s %10s %7s %s\n", m.image.c_str(), agent::result_name(m.result),
                ran ? std::to_string(m.revision).c_str() : "-", ran ? m.kind.c_str() : "-",
                ran ? view::human_size(m.bytes_read).c_str() : "-", ran ? view::human_size(m.bytes_stored).c_str() : "-",
                ran ? secs : "-", note.c_str());
  }
  print_group_table(r);
  if (r.copy.ran)
    std::printf("copy to %s: %s\n", r.copy.to.c_str(),
                r.copy.ok ? (std::to_string(r.copy.revisions_copied) + " revision(s) copied, " +
                             std::to_string(r.copy.revisions_skipped) + " skipped, " + view::human_size(r.copy.bytes_read) +
                             " read, " + std::to_string(r.copy.expired) + " expired")
                                .c_str()
                          : (std::string("failed: ") + agent::class_name(r.copy.error_class) + ": " + r.copy.error).c_str());
  const size_t groups_failed = static_cast<size_t>(std::count_if(
      r.groups.begin(), r.groups.end(), [](auto& g) { return g.result == agent::ImageResult::kFailed; }));
  std::printf("%zu ok, %zu failed, %zu not due, %zu skipped, %zu missing%s%s%s\n", r.count(agent::ImageResult::kOk),
              r.count(agent::ImageResult::kFailed), r.count(agent::ImageResult::kNotDue),
              r.count(agent::ImageResult::kSkipped), r.count(agent::ImageResult::kMissing),
              groups_failed ? (", " + std::to_string(groups_failed) + " group(s) failed").c_str() : "",
              a.flag("dry-run") ? ", dry run: nothing changed" : "", r.stopped ? ", stopped before the end" : "");
}

int cmd_run(const Args& a) {
  no_positional(a);
  const std::string config_path = require_config(a);
  const agent::BatchConfig config = agent::load_batch_config(config_path);
  add_log_file(config.log_file);
  SignalFlags signals;  // before any thread starts (and after the logger is complete)
  agent::RunOptions o;
  o.job = a.str("job");
  o.dry_run = a.flag("dry-run");
  o.force = a.flag("force");
  o.stop = [&] { return signals.stop_requested(); };
  o.command_line = a.command_line;
  o.fsck = batch_fsck();
  const bool tty = !a.quiet() && ::isatty(STDERR_FILENO);
  const auto start = std::chrono::steady_clock::now();
  if (tty) {
    o.progress = [&](size_t done, size_t total, uint64_t bytes) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double eta = done ? secs / static_cast<double>(done) * static_cast<double>(total - done) : 0;
      std::fprintf(stderr, "\r\033[K%zu/%zu images  %s read  %s/s  ETA %s", done, total, view::human_size(bytes).c_str(),
                   view::human_size(static_cast<uint64_t>(secs > 0 ? static_cast<double>(bytes) / secs : 0)).c_str(),
                   done ? age_text(static_cast<int64_t>(eta)).c_str() : "-");
    };
  }
  const agent::RunReport r = agent::run_batch(config, o);
  if (tty) std::fprintf(stderr, "\r\033[K");
  if (a.json())
    print_json(run_json(a, r));
  else if (!a.quiet())
    print_run_table(a, r);
  // Stopped by a signal: 128+N like a killed process. Failed images: the class they share (all
  // unreachable: retry later), 1 when their classes differ.
  if (r.stopped) return agent::kSignalExitBase + (signals.stop_signal() ? signals.stop_signal() : SIGTERM);
  return agent::exit_code(r.failure_class());
}

int cmd_agent(const Args& a) {
  no_positional(a);
  agent::AgentOptions o;
  o.poll_seconds = duration_option(a, "poll", agent::kPollRange);
  o.time_scale = real_option(a, "time-scale", agent::kTimeScaleRange);
  o.config_path = require_config(a);
  add_log_file(agent::load_batch_config(o.config_path).log_file);
  SignalFlags signals;  // before any thread starts (and after the logger is complete)
  o.stop = [&] { return signals.stop_requested(); };
  o.take_reload = [&] { return signals.take_reload(); };
  o.command_line = a.command_line;
  o.fsck = batch_fsck();
  agent::run_agent(o);
  return 0;
}

int cmd_status(const Args& a) {
  no_positional(a);
  const auto images = image_status(a);
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  if (a.json()) {
    Json list = Json::array();
    for (const auto& s : images)
      list.push_back(Json{{"image", s.image},
                          {"last_success", s.last_success ? Json(view::iso_time(s.last_success)) : Json(nullptr)},
                          {"age_seconds", s.last_success ? Json(now - s.last_success) : Json(nullptr)},
                          {"last_result", s.last_result},
                          {"last_error", s.last_error},
                          {"revisions", s.revisions},
                          {"size", s.size},
                          {"stored_bytes", s.stored_bytes},
                          {"running", s.running},
                          {"verify_failed", s.verify_failed},
                          {"fsck", s.fsck_state < 0 ? Json(nullptr)
                                                    : Json{{"state", agent::fsck_state_name(s.fsck_state)},
                                                           {"error", s.fsck_error}}},
                          {"consistency", s.consistency.empty() ? Json(nullptr) : Json(s.consistency)},
                          {"group", s.group.empty() ? Json(nullptr)
                                                    : Json{{"name", s.group},
                                                           {"run", s.group_run},
                                                           {"gap_us", s.group_gap_us}}}});
    print_json(list);
    return 0;
  }
  std::printf("%-40s %-20s %6s %-7s %5s %10s %10s %-11s %-16s %-7s %s\n", "IMAGE", "LAST SUCCESS", "AGE", "RESULT",
              "REVS", "SIZE", "STORED", "CONSISTENCY", "GROUP", "RUNNING", "LAST ERROR");
  for (const auto& s : images)
    std::printf("%-40s %-20s %6s %-7s %5llu %10s %10s %-11s %-16s %-7s %s\n", s.image.c_str(),
                s.last_success ? view::iso_time(s.last_success).c_str() : "never",
                age_text(s.last_success ? now - s.last_success : -1).c_str(),
                s.last_result.empty() ? "-" : s.last_result.c_str(), static_cast<unsigned long long>(s.revisions),
                view::human_size(s.size).c_str(), view::human_size(s.stored_bytes).c_str(),
                s.consistency.empty() ? "-" : s.consistency.c_str(),
                s.group.empty() ? "-" : (s.group + "#" + std::to_string(s.group_run)).c_str(), s.running ? "yes" : "no",
                s.last_error.c_str());
  return 0;
}

// Nagios plugin conventions: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; every error of its own
// (usage included) is UNKNOWN, with its class named (main() does the same for parse errors).
int cmd_check(const Args& a) {
  try {
    const int64_t max_age = duration_option(a, "max-age", agent::kMaxAgeRange);
    const int64_t warn_age = duration_option(a, "warn-age", agent::kWarnAgeRange);
    no_positional(a);
    const agent::CheckResult r =
        agent::check_status(image_status(a), static_cast<int64_t>(std::time(nullptr)), max_age, warn_age);
    std::cout << r.line << "\n";
    return r.code;
  } catch (const std::exception& e) {
    std::cout << check_unknown_line(agent::classify(std::current_exception()), e.what()) << "\n";
    return kCheckUnknown;
  }
}

}  // namespace

std::string check_unknown_line(agent::ErrorClass c, const std::string& message) {
  return std::string("RBDVAULT UNKNOWN - ") + agent::class_name(c) + ": " + message;
}

std::vector<Command> batch_commands() {
  std::vector<Command> c;
  c.push_back({"run", "--config FILE [--job NAME] [--dry-run] [--force]",
               "Back up every image of the config that is due, then apply retention.", kFormatOption,
               [](po::options_description& o) {
                 // clang-format off
                 o.add_options()
                     ("config", po::value<std::string>()->value_name("FILE"), "the batch config")
                     ("job", po::value<std::string>()->value_name("NAME"), "only this [job.NAME]")
                     ("dry-run", po::bool_switch(), "report what is due, change nothing")
                     ("force", po::bool_switch(), "back up every selected image, due or not");
                 // clang-format on
               },
               cmd_run});
  c.push_back({"agent", "--config FILE [--poll 60s]",
               "The scheduler, for systemd: runs what is due, forever (SIGHUP reloads the config).", 0,
               [](po::options_description& o) {
                 // clang-format off
                 o.add_options()
                     ("config", po::value<std::string>()->value_name("FILE"), "the batch config")
                     ("poll", po::value<std::string>()->default_value("60s")->value_name("DURATION"),
                      "time between looks at the schedule (1s to 1d)")
                     ("time-scale", po::value<std::string>()->default_value("1")->value_name("N"),
                      "run the clock N times faster (tests)");
                 // clang-format on
               },
               cmd_agent});
  c.push_back({"status", "--config FILE | --store DIR",
               "Per image: last success, age, last result and error, revisions, size.", kStoreOption | kFormatOption,
               [](po::options_description& o) {
                 o.add_options()("config", po::value<std::string>()->value_name("FILE"),
                                 "only the images this batch config backs up");
               },
               cmd_status});
  c.push_back({"check", "--config FILE | --store DIR [--max-age 26h] [--warn-age 20h]",
               "Nagios/Icinga plugin: one line with perfdata; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
               kStoreOption,
               [](po::options_description& o) {
                 // clang-format off
                 o.add_options()
                     ("config", po::value<std::string>()->value_name("FILE"),
                      "only the images this batch config backs up")
                     ("max-age", po::value<std::string>()->default_value("26h")->value_name("DURATION"),
                      "CRITICAL when the last success is older (1s to 366d)")
                     ("warn-age", po::value<std::string>()->default_value("0")->value_name("DURATION"),
                      "WARNING when the last success is older (0: no warning level)");
                 // clang-format on
               },
               cmd_check});
  return c;
}

}  // namespace rbdvault::tools
