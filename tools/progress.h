// A progress line on stderr (percent, sizes, rate, ETA), only when stderr is a terminal and the
// command is not quiet.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

#include "view/presentation.h"

namespace rbdvault::tools {

class Progress {
 public:
  explicit Progress(bool enabled) : enabled_(enabled && ::isatty(STDERR_FILENO)) {}
  ~Progress() {
    if (shown_) std::fprintf(stderr, "\r\033[K");
  }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void update(uint64_t done, uint64_t total) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(200)) return;
    last_ = now;
    const double secs = std::chrono::duration<double>(now - start_).count();
    const double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
    const int pct = total ? static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total)) : 100;
    const std::string eta = rate > 0 && total > done
                                ? std::to_string(static_cast<int>(static_cast<double>(total - done) / rate)) + "s"
                                : "-";
    std::fprintf(stderr, "\r\033[K%3d%%  %s / %s  %s/s  ETA %s", pct, view::human_size(done).c_str(),
                 view::human_size(total).c_str(), view::human_size(static_cast<uint64_t>(rate)).c_str(), eta.c_str());
    shown_ = true;
  }
  // For agent options' progress callbacks; empty when disabled (the agent then skips the calls).
  std::function<void(uint64_t, uint64_t)> callback() {
    if (!enabled_) return {};
    return [this](uint64_t d, uint64_t t) { update(d, t); };
  }

 private:
  bool enabled_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now(), last_{};
};

}  // namespace rbdvault::tools
