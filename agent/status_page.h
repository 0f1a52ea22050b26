// The status page of `rbdvault serve`: one self-contained HTML page (no scripts, no external
// assets) with what `rbdvault status` shows, from the same collect_status(), so they never disagree.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "agent/status.h"

namespace rbdvault::agent {

// `now`: unix seconds, for the ages. Image names are HTML-escaped (they come from Ceph).
[[nodiscard]] std::string status_page(const std::vector<ImageStatus>& images, int64_t now);

}  // namespace rbdvault::agent
