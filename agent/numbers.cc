#include "agent/numbers.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

#include "agent/batch_config.h"
#include "agent/schedule.h"

namespace rbdvault::agent {
namespace {

std::string real_text(double v) {
  std::string s = std::to_string(v);
  s.erase(s.find_last_not_of('0') + 1);
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

}  // namespace

bool plain_decimal(std::string_view text) {
  // strtod and stod also take hex ("0x10"), exponents, signs, "inf" and "nan": none is a plain
  // number to an operator, and a hex size once passed as something else than was meant.
  const size_t dot = text.find('.');
  const std::string_view whole = text.substr(0, dot);
  const std::string_view frac = dot == std::string_view::npos ? std::string_view() : text.substr(dot + 1);
  const auto digits = [](std::string_view s) { return s.find_first_not_of("0123456789") == std::string_view::npos; };
  return !whole.empty() && digits(whole) && digits(frac) && (dot == std::string_view::npos || !frac.empty());
}

int64_t parse_whole(const std::string& text, Range r) {
  const std::invalid_argument bad("expected a whole number from " + std::to_string(r.min) + " to " +
                                  std::to_string(r.max));
  // std::stoll and boost would take "-1", " 7", "+3" or "12abc"; an unsigned parse wraps "-1".
  if (text.empty() || text.size() > 18 || text.find_first_not_of("0123456789") != std::string::npos) throw bad;
  const int64_t v = std::stoll(text);  // at most 18 digits: cannot overflow
  if (v < r.min || v > r.max) throw bad;
  return v;
}

int64_t parse_duration_in(const std::string& text, Range r) {
  const std::invalid_argument bad("expected a duration from " + duration_text(r.min) + " to " +
                                  duration_text(r.max) + " (such as 90s, 15m, 6h or 2d)");
  int64_t v = 0;
  try {
    v = parse_duration(text);
  } catch (const std::invalid_argument&) {
    throw bad;
  }
  if (v < r.min || v > r.max) throw bad;
  return v;
}

double parse_real(const std::string& text, RealRange r) {
  const std::invalid_argument bad("expected a number from " + real_text(r.min) + " to " + real_text(r.max));
  if (!plain_decimal(text)) throw bad;
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  // NaN fails both comparisons, so test for "inside" rather than "outside".
  if (errno == ERANGE || *end != '\0' || !std::isfinite(v) || !(v >= r.min && v <= r.max)) throw bad;
  return v;
}

uint64_t parse_bandwidth(const std::string& text) {
  const std::invalid_argument bad("expected 0 (unlimited) or a rate from 64K to 1P bytes per second");
  uint64_t v = 0;
  try {
    v = parse_bytes(text);
  } catch (const std::invalid_argument&) {
    throw bad;
  }
  if (v != 0 && (v < kMinBandwidth || v > kMaxBandwidth)) throw bad;
  return v;
}

std::string duration_text(int64_t s) {
  if (s == 0) return "0s";
  if (s % kDay == 0) return std::to_string(s / kDay) + "d";
  if (s % 3600 == 0) return std::to_string(s / 3600) + "h";
  if (s % 60 == 0) return std::to_string(s / 60) + "m";
  return std::to_string(s) + "s";
}

}  // namespace rbdvault::agent
