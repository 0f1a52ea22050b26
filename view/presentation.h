// How a store's contents are shown to people and programs, the same everywhere: sizes and times as
// the command line prints them, and a revision as JSON (`rbdvault ls --format json` and the HTTP
// API of `rbdvault serve` give the same object, so a script can read either).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "store/format.h"

namespace rbdvault::view {

std::string human_size(uint64_t bytes);      // "1.5 GiB", "512 B"
std::string iso_time(int64_t unix_seconds);  // "2026-11-25T18:42:31Z"

// Every field of a revision record (docs/usage.md "ls --format json"), in the documented order.
nlohmann::ordered_json revision_json(const store::RevisionRecord& r);

}  // namespace rbdvault::view
