#include "view/http_range.h"

#include <optional>

namespace rbdvault::view {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A decimal number; nullopt when empty, not digits, or too large for 64 bits (20 digits bound the
// loop before any arithmetic, so a hostile header costs nothing).
std::optional<uint64_t> number(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - digit) / 10) return std::nullopt;
    v = v * 10 + digit;
  }
  return v;
}

}  // namespace

ByteRange parse_range(std::string_view header, uint64_t size) {
  ByteRange r;
  header = trim(header);
  constexpr std::string_view kUnit = "bytes=";
  if (header.size() < kUnit.size()) return r;
  for (size_t i = 0; i < kUnit.size(); ++i)  // the unit is case-insensitive
    if ((header[i] | 0x20) != kUnit[i] && header[i] != kUnit[i]) return r;
  std::string_view spec = trim(header.substr(kUnit.size()));
  if (spec.find(',') != std::string_view::npos) {
    r.kind = ByteRange::kMultiple;
    return r;
  }
  const size_t dash = spec.find('-');
  if (dash == std::string_view::npos) return r;
  const std::string_view a = trim(spec.substr(0, dash)), b = trim(spec.substr(dash + 1));
  if (a.empty()) {  // suffix range: the last N bytes
    auto n = number(b);
    if (!n) return r;
    if (*n == 0 || size == 0) {
      r.kind = ByteRange::kUnsatisfiable;
      return r;
    }
    r.kind = ByteRange::kPart;
    r.first = *n >= size ? 0 : size - *n;
    r.last = size - 1;
    return r;
  }
  auto first = number(a);
  if (!first) return r;
  std::optional<uint64_t> last;
  if (!b.empty()) {
    last = number(b);
    if (!last || *last < *first) return r;  // invalid: ignored, the whole representation
  }
  if (*first >= size) {
    r.kind = ByteRange::kUnsatisfiable;
    return r;
  }
  r.kind = ByteRange::kPart;
  r.first = *first;
  r.last = last && *last < size ? *last : size - 1;
  return r;
}

}  // namespace rbdvault::view
