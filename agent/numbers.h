// The ranges of every numeric option of the command line and of the batch config, and strict
// parsers for them. A value outside its range is refused with one line naming the range, never
// wrapped, clamped or taken as "unlimited": a typo like `--keep-last -1` must not forget history.
// docs/usage.md has the table; keep the two in step.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace rbdvault::agent {

struct Range {  // inclusive
  int64_t min, max;
};

// Counts.
inline constexpr Range kKeepRange{0, 1000000};         // keep-last/-hourly/-daily/-weekly/-monthly
inline constexpr Range kFullEveryRange{0, 1000000};    // 0: never forced
inline constexpr Range kReadsInFlightRange{1, 1024};   // aio reads per image
inline constexpr Range kHashThreadsRange{0, 64};       // 0: hash on the reading thread
inline constexpr Range kRetriesRange{0, 100};
inline constexpr Range kImagesInParallelRange{1, 256};
inline constexpr Range kHostSlotsRange{0, 1024};       // 0: off
// Durations, in seconds.
inline constexpr int64_t kDay = 86400;
inline constexpr Range kConnectTimeoutRange{1, 3600};
inline constexpr Range kOpTimeoutRange{0, kDay};       // 0: wait as Ceph does
inline constexpr Range kJitterRange{0, kDay};
inline constexpr Range kRetryDelayRange{0, kDay};
inline constexpr Range kPollRange{1, kDay};
inline constexpr Range kHookTimeoutRange{1, kDay};  // pre/post-snapshot hooks
inline constexpr Range kMaxAgeRange{1, 366 * kDay};
inline constexpr Range kWarnAgeRange{0, 366 * kDay};   // 0: no warning level
inline constexpr Range kEveryRange{1, 366 * kDay};     // schedule "every N"
// Bytes per second; 0 means unlimited, anything else at least kMinBandwidth.
inline constexpr uint64_t kMinBandwidth = 64 << 10;
inline constexpr uint64_t kMaxBandwidth = uint64_t{1} << 50;  // 1 PiB/s
// Real numbers.
struct RealRange {
  double min, max;
};
inline constexpr RealRange kMaxUnusedRange{0, 100};  // percent
// A sample below 0.01 % compares nothing on most images; verify compares at least one block anyway.
inline constexpr RealRange kSampleRange{0.01, 100};  // percent
inline constexpr RealRange kVerifySampleRange{0, 100};  // percent checked after each backup; 0: off
inline constexpr RealRange kTimeScaleRange{1, 1e6};  // agent clock speed-up (tests)

// Digits with at most one '.' between digits ("12", "0.5"): no sign, exponent, hex, inf or nan.
[[nodiscard]] bool plain_decimal(std::string_view text);
// Decimal digits only, in `r`. Throws std::invalid_argument("expected a whole number from A to B").
int64_t parse_whole(const std::string& text, Range r);
// A duration (parse_duration's syntax) in `r`; the error names the range ("from 1s to 1h").
int64_t parse_duration_in(const std::string& text, Range r);
// A finite decimal number in `r` (nan, inf and trailing text refused).
double parse_real(const std::string& text, RealRange r);
// A rate (parse_bytes' syntax): 0, or from kMinBandwidth to kMaxBandwidth.
uint64_t parse_bandwidth(const std::string& text);

// "90s", "15m", "6h", "2d": the largest unit that divides `seconds`.
std::string duration_text(int64_t seconds);

}  // namespace rbdvault::agent
