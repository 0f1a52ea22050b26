// When an image (or a maintenance task) is due: "every 6h", "hourly", "daily 02:00",
// "weekly sun 03:30". Slot times are local time, like cron; an hourly schedule also fires in the
// repeated hour at the end of summer time.
#pragma once

#include <cstdint>
#include <string>

namespace rbdvault::agent {

class Schedule {
 public:
  // Throws std::invalid_argument with a message saying what is expected.
  static Schedule parse(const std::string& text);

  // Whether a task last done at `last` (unix seconds; 0: never) is due at `now`. Interval schedules
  // ("every N") are due N after the last run, less 5% slack for timers that fire a little early; slot schedules once
  // per slot, the slot shifted by `offset` seconds (the per-image jitter) so that hundreds of images do not start at
  // one second.
  bool due(int64_t last, int64_t now, int64_t offset = 0) const;
  // The earliest time after `now` at which due() may become true for a task done at `last`.
  int64_t next_due(int64_t last, int64_t now, int64_t offset = 0) const;

  const std::string& text() const { return text_; }

 private:
  enum class Kind { kEvery, kHourly, kDaily, kWeekly };
  // The latest slot start at or before t.
  int64_t slot_at_or_before(int64_t t) const;
  Kind kind_ = Kind::kDaily;
  int64_t period_ = 86400;                   // kEvery
  int minute_ = 0, hour_ = 0, weekday_ = 0;  // weekday 0 = Sunday
  std::string text_;
};

// "90", "30s", "15m", "6h", "2d" -> seconds; throws std::invalid_argument.
int64_t parse_duration(const std::string& text);

// A stable offset in [0, jitter) for `key` (an image name): the same image starts at the same
// point of its window every day.
int64_t jitter_offset(const std::string& key, int64_t jitter_seconds);

}  // namespace rbdvault::agent
