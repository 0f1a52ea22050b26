#include "tools/signals.h"

#include <pthread.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

namespace rbdvault::tools {

SignalFlags::SignalFlags(std::string stopping_note) : stopping_note_(std::move(stopping_note)) {
  sigemptyset(&set_);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&set_, s);
  pthread_sigmask(SIG_BLOCK, &set_, &old_mask_);
  thread_ = std::thread([this] {
    while (!done_) {
      int sig = 0;
      if (sigwait(&set_, &sig) != 0) continue;
      if (sig == SIGHUP) {
        reload_ = true;
        spdlog::info("SIGHUP: reloading the configuration");
      } else if (sig == SIGTERM || sig == SIGINT) {
        int none = 0;
        stop_signal_.compare_exchange_strong(none, sig);
        if (stop_.exchange(true) && sig == SIGINT) _exit(128 + SIGINT);  // a second ^C: leave now (recovery cleans up)
        if (!stopping_note_.empty()) spdlog::info("{}: stopping; {}", sig == SIGTERM ? "SIGTERM" : "SIGINT", stopping_note_);
      }
    }
  });
}

SignalFlags::~SignalFlags() {
  done_ = true;
  pthread_kill(thread_.native_handle(), SIGUSR1);
  thread_.join();
  pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
}

}  // namespace rbdvault::tools
