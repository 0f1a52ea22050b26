// libFuzzer target: the batch config parser (agent/batch_config.cc). Its contract: a usable
// config or ConfigError naming the line; any other exception escapes and is reported as a crash.
#include <cstdint>
#include <string>

#include "agent/batch_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto c = rbdvault::agent::parse_batch_config(text, "fuzz.conf");
    for (const auto& job : c.jobs) (void)c.find_settings(job.pool, "vm-1");
  } catch (const rbdvault::agent::ConfigError&) {
  }
  return 0;
}
