#include "tools/batch_commands.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <optional>
#include <sstream>
#include <vector>

#include "agent/batch_config.h"
#include "agent/batch_run.h"
#include "agent/scheduler.h"
#include "agent/status.h"
#include "store/store.h"
#include "tools/human.h"
#include "tools/signals.h"

namespace rbdvault::tools {
namespace {

void add_log_file(const std::string& path) {
  if (path.empty()) return;
  auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path);
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
std::vector<agent::ImageStatus> image_status(const BatchArgs& a) {
  if (a.store.empty() && a.config.empty()) throw std::invalid_argument("give --config FILE or --store DIR");
  std::optional<agent::BatchConfig> config;
  if (!a.config.empty()) config = agent::load_batch_config(a.config);
  auto st = store::Store::open(a.store.empty() ? config->store : a.store, store::OpenMode::kReadOnly);
  auto images = agent::collect_status(*st);
  if (config)
    std::erase_if(images, [&](const agent::ImageStatus& s) {
      const size_t slash = s.image.find('/');
      auto settings = config->find_settings(s.image.substr(0, slash), s.image.substr(slash + 1));
      return !settings || settings->skip;
    });
  return images;
}

}  // namespace

int cmd_run(const BatchArgs& a) {
  if (a.config.empty()) throw std::invalid_argument("run: --config FILE is required");
  const agent::BatchConfig config = agent::load_batch_config(a.config);
  add_log_file(config.log_file);
  SignalFlags signals;  // before any thread starts (and after the logger is complete)
  agent::RunOptions o;
  o.job = a.job;
  o.dry_run = a.dry_run;
  o.force = a.force;
  o.stop = [&] { return signals.stop_requested(); };
  o.command_line = a.command_line;
  const bool tty = !a.quiet && ::isatty(STDERR_FILENO);
  const auto start = std::chrono::steady_clock::now();
  if (tty) {
    o.progress = [&](size_t done, size_t total, uint64_t bytes) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double eta = done ? secs / static_cast<double>(done) * static_cast<double>(total - done) : 0;
      std::fprintf(stderr, "\r\033[K%zu/%zu images  %s read  %s/s  ETA %s", done, total, human_size(bytes).c_str(),
                   human_size(static_cast<uint64_t>(secs > 0 ? static_cast<double>(bytes) / secs : 0)).c_str(),
                   done ? age_text(static_cast<int64_t>(eta)).c_str() : "-");
    };
  }
  agent::RunReport r = agent::run_batch(config, o);
  if (tty) std::fprintf(stderr, "\r\033[K");

  if (a.json) {
    std::ostringstream j;
    j << "{\"config\":" << json_string(a.config) << ",\"dry_run\":" << (a.dry_run ? "true" : "false")
      << ",\"stopped\":" << (r.stopped ? "true" : "false") << ",\"peak_parallel\":" << r.peak_parallel;
    for (auto res : {agent::ImageResult::kOk, agent::ImageResult::kFailed, agent::ImageResult::kNotDue,
                     agent::ImageResult::kSkipped, agent::ImageResult::kMissing, agent::ImageResult::kCancelled,
                     agent::ImageResult::kWouldBackUp}) {
      std::string key = agent::result_name(res);
      for (auto& ch : key)
        if (ch == '-') ch = '_';
      j << ",\"" << key << "\":" << r.count(res);
    }
    j << ",\"images\":[";
    for (size_t i = 0; i < r.images.size(); ++i) {
      const auto& m = r.images[i];
      j << (i ? "," : "") << "{\"image\":" << json_string(m.image) << ",\"job\":" << json_string(m.job)
        << ",\"result\":\"" << agent::result_name(m.result) << "\",\"revision\":" << m.revision
        << ",\"kind\":" << json_string(m.kind) << ",\"size\":" << m.size << ",\"bytes_read\":" << m.bytes_read
        << ",\"bytes_stored\":" << m.bytes_stored << ",\"seconds\":" << m.seconds << ",\"attempts\":" << m.attempts
        << ",\"expired\":" << m.expired << ",\"started_ns\":" << m.started_ns << ",\"finished_ns\":" << m.finished_ns
        << ",\"error\":" << json_string(m.error) << "}";
    }
    std::cout << j.str() << "]}\n";
  } else if (!a.quiet) {
    std::printf("%-40s %-13s %8s %-5s %10s %10s %7s %s\n", "IMAGE", "RESULT", "REVISION", "KIND", "READ", "STORED",
                "TIME", "NOTE");
    for (const auto& m : r.images) {
      std::string note = m.error;
      if (m.attempts > 1) note = std::to_string(m.attempts) + " attempts" + (note.empty() ? "" : "; " + note);
      if (m.expired) note += (note.empty() ? "" : "; ") + std::to_string(m.expired) + " expired";
      const bool ran = m.result == agent::ImageResult::kOk;
      char secs[32];
      std::snprintf(secs, sizeof(secs), "%.1fs", m.seconds);
      std::printf("%-40s %-13s %8s %-5s %10s %10s %7s %s\n", m.image.c_str(), agent::result_name(m.result),
                  ran ? std::to_string(m.revision).c_str() : "-", ran ? m.kind.c_str() : "-",
                  ran ? human_size(m.bytes_read).c_str() : "-", ran ? human_size(m.bytes_stored).c_str() : "-",
                  ran ? secs : "-", note.c_str());
    }
    std::printf("%zu ok, %zu failed, %zu not due, %zu skipped, %zu missing%s%s\n", r.count(agent::ImageResult::kOk),
                r.count(agent::ImageResult::kFailed), r.count(agent::ImageResult::kNotDue),
                r.count(agent::ImageResult::kSkipped), r.count(agent::ImageResult::kMissing),
                a.dry_run ? ", dry run: nothing changed" : "", r.stopped ? ", stopped before the end" : "");
  }
  return r.ok() && !r.stopped ? 0 : 1;
}

int cmd_agent(const BatchArgs& a) {
  if (a.config.empty()) throw std::invalid_argument("agent: --config FILE is required");
  add_log_file(agent::load_batch_config(a.config).log_file);
  SignalFlags signals;  // before any thread starts (and after the logger is complete)
  agent::AgentOptions o;
  o.config_path = a.config;
  o.poll_seconds = a.poll_seconds;
  o.time_scale = a.time_scale;
  o.stop = [&] { return signals.stop_requested(); };
  o.take_reload = [&] { return signals.take_reload(); };
  o.command_line = a.command_line;
  agent::run_agent(o);
  return 0;
}

int cmd_status(const BatchArgs& a) {
  const auto images = image_status(a);
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  if (a.json) {
    std::ostringstream j;
    j << "[";
    for (size_t i = 0; i < images.size(); ++i) {
      const auto& s = images[i];
      j << (i ? "," : "") << "{\"image\":" << json_string(s.image)
        << ",\"last_success\":" << (s.last_success ? json_string(iso_time(s.last_success)) : "null")
        << ",\"age_seconds\":" << (s.last_success ? std::to_string(now - s.last_success) : "null")
        << ",\"last_result\":" << json_string(s.last_result) << ",\"last_error\":" << json_string(s.last_error)
        << ",\"revisions\":" << s.revisions << ",\"size\":" << s.size << ",\"stored_bytes\":" << s.stored_bytes
        << ",\"running\":" << (s.running ? "true" : "false")
        << ",\"verify_failed\":" << (s.verify_failed ? "true" : "false") << "}";
    }
    std::cout << j.str() << "]\n";
    return 0;
  }
  std::printf("%-40s %-20s %6s %-7s %5s %10s %10s %-7s %s\n", "IMAGE", "LAST SUCCESS", "AGE", "RESULT", "REVS", "SIZE",
              "STORED", "RUNNING", "LAST ERROR");
  for (const auto& s : images)
    std::printf("%-40s %-20s %6s %-7s %5llu %10s %10s %-7s %s\n", s.image.c_str(),
                s.last_success ? iso_time(s.last_success).c_str() : "never",
                age_text(s.last_success ? now - s.last_success : -1).c_str(),
                s.last_result.empty() ? "-" : s.last_result.c_str(), static_cast<unsigned long long>(s.revisions),
                human_size(s.size).c_str(), human_size(s.stored_bytes).c_str(), s.running ? "yes" : "no",
                s.last_error.c_str());
  return 0;
}

int cmd_check(const BatchArgs& a) {
  try {
    agent::CheckResult r =
        agent::check_status(image_status(a), static_cast<int64_t>(std::time(nullptr)), a.max_age, a.warn_age);
    std::cout << r.line << "\n";
    return r.code;
  } catch (const std::exception& e) {
    std::cout << "RBDVAULT UNKNOWN - " << e.what() << "\n";
    return 3;
  }
}

}  // namespace rbdvault::tools
