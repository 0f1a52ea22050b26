// The partial-name helpers of restore.h, in a file of their own: the batch config (and its fuzzer,
// built without librbd) needs them without the rest of restore.
#include <string_view>

#include "agent/restore.h"

namespace rbdvault::agent {
namespace {
constexpr std::string_view kPartialSuffix = ".rbdvault-partial";
}

std::string partial_name(const std::string& name) { return name + std::string(kPartialSuffix); }

bool is_partial_name(const std::string& name) {
  return name.size() > kPartialSuffix.size() && name.ends_with(kPartialSuffix);
}

}  // namespace rbdvault::agent
