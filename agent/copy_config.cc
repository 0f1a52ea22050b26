#include "agent/copy_config.h"

#include <sstream>
#include <stdexcept>

#include "agent/numbers.h"

namespace rbdvault::agent {
namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

}  // namespace

bool apply_copy_key(CopyConfig& c, const std::string& key, const std::string& v) {
  if (key == "to") {
    if (v.empty()) throw std::invalid_argument("must name a store");
    c.to = v;
  } else if (key == "images") {
    std::istringstream list(v);
    for (std::string item; std::getline(list, item, ',');) {
      item = trim(item);
      const size_t slash = item.find('/');
      if (slash == std::string::npos || slash == 0 || slash + 1 == item.size() ||
          item.find('/', slash + 1) != std::string::npos)
        throw std::invalid_argument("'" + item + "': expected POOL/NAME");
      c.images.push_back(item);
    }
  } else if (key == "conf") {
    c.access.conf = v;
  } else if (key == "id") {
    c.access.id = v;
  } else if (key == "keyring") {
    c.access.keyring = v;
  } else if (key == "index-dir") {
    c.access.index_dir = v;
  } else if (key == "keep-last") {
    c.retention.keep_last = static_cast<int>(parse_whole(v, kKeepRange));
  } else if (key == "keep-hourly") {
    c.retention.keep_hourly = static_cast<int>(parse_whole(v, kKeepRange));
  } else if (key == "keep-daily") {
    c.retention.keep_daily = static_cast<int>(parse_whole(v, kKeepRange));
  } else if (key == "keep-weekly") {
    c.retention.keep_weekly = static_cast<int>(parse_whole(v, kKeepRange));
  } else if (key == "keep-monthly") {
    c.retention.keep_monthly = static_cast<int>(parse_whole(v, kKeepRange));
  } else {
    return false;
  }
  return true;
}

}  // namespace rbdvault::agent
