// The `Range` header of a request for a revision's bytes (RFC 9110 §14): one byte range, or none.
// Kept apart from the server so that its edge cases are unit-tested without a socket.
#pragma once

#include <cstdint>
#include <string_view>

namespace rbdvault::view {

struct ByteRange {
  enum Kind {
    kWhole,           // no Range header (or not a bytes range we understand): 200 with everything
    kPart,            // 206 with [first, last]
    kUnsatisfiable,   // 416: starts at or past the end, or the resource is empty
    kMultiple,        // more than one range: we answer 416 (documented; librbd asks one at a time)
  } kind = kWhole;
  uint64_t first = 0, last = 0;  // inclusive, only for kPart
  [[nodiscard]] uint64_t length() const { return last - first + 1; }
};

// `header`: the Range header's value ("" when absent); `size`: the length of the representation.
// "bytes=A-B", "bytes=A-" and "bytes=-N" are understood; an end past the size is clamped. A header
// that is not a valid bytes range is ignored (kWhole), as RFC 9110 allows.
[[nodiscard]] ByteRange parse_range(std::string_view header, uint64_t size);

}  // namespace rbdvault::view
