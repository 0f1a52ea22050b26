// Presentation helpers for the command line: sizes and times (JSON comes from nlohmann-json).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace rbdvault::tools {

std::string human_size(uint64_t bytes);      // "1.5 GiB", "512 B"
std::string iso_time(int64_t unix_seconds);  // "2026-11-25T18:42:31Z"

}  // namespace rbdvault::tools
