#include "agent/schedule.h"

#include <cstdint>
#include <ctime>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "agent/numbers.h"

namespace rbdvault::agent {
namespace {

void parse_hhmm(const std::string& t, int& hour, int& minute) {
  if (t.size() != 5 || t[2] != ':') throw std::invalid_argument("");
  for (int i : {0, 1, 3, 4})
    if (t[i] < '0' || t[i] > '9') throw std::invalid_argument("");
  hour = std::stoi(t.substr(0, 2));
  minute = std::stoi(t.substr(3, 2));
  if (hour > 23 || minute > 59) throw std::invalid_argument("");
}

int parse_weekday(const std::string& t) {
  static const char* kDays[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};
  for (int i = 0; i < 7; ++i)
    if (t == kDays[i]) return i;
  throw std::invalid_argument("");
}

int64_t local_time(std::tm tm) {
  tm.tm_isdst = -1;
  return static_cast<int64_t>(std::mktime(&tm));
}

}  // namespace

Schedule Schedule::parse(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> w;
  for (std::string s; in >> s;) w.push_back(s);
  Schedule s;
  s.text_ = text;
  try {
    if (w.size() == 2 && w[0] == "every") {
      s.kind_ = Kind::kEvery;
      s.period_ = parse_duration(w[1]);
      if (s.period_ < kEveryRange.min || s.period_ > kEveryRange.max) throw std::invalid_argument("");
    } else if (w.size() == 1 && w[0] == "hourly") {
      s.kind_ = Kind::kHourly;
    } else if (w.size() == 2 && w[0] == "daily") {
      s.kind_ = Kind::kDaily;
      parse_hhmm(w[1], s.hour_, s.minute_);
    } else if (w.size() == 3 && w[0] == "weekly") {
      s.kind_ = Kind::kWeekly;
      s.weekday_ = parse_weekday(w[1]);
      parse_hhmm(w[2], s.hour_, s.minute_);
    } else {
      throw std::invalid_argument("");
    }
  } catch (const std::invalid_argument&) {
    throw std::invalid_argument("bad schedule '" + text +
                                "' (expected 'every N[s|m|h|d]' up to 366d, 'hourly', 'daily HH:MM' or 'weekly DAY HH:MM')");
  }
  return s;
}

int64_t Schedule::slot_at_or_before(int64_t t) const {
  const std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  localtime_r(&tt, &tm);
  tm.tm_sec = 0;
  switch (kind_) {
    case Kind::kEvery:
      return t - t % period_;
    case Kind::kHourly:
      // Keep localtime_r's DST flag: in the repeated hour at the end of summer time, "the start
      // of this hour" is ambiguous and mktime would otherwise pick the first one.
      tm.tm_min = 0;
      return static_cast<int64_t>(std::mktime(&tm));
    case Kind::kDaily: {
      tm.tm_hour = hour_;
      tm.tm_min = minute_;
      int64_t slot = local_time(tm);
      if (slot > t) {
        tm.tm_mday -= 1;
        slot = local_time(tm);
      }
      return slot;
    }
    case Kind::kWeekly: {
      tm.tm_hour = hour_;
      tm.tm_min = minute_;
      tm.tm_mday -= (tm.tm_wday - weekday_ + 7) % 7;
      int64_t slot = local_time(tm);
      if (slot > t) {
        tm.tm_mday -= 7;
        slot = local_time(tm);
      }
      return slot;
    }
  }
  return t;
}

bool Schedule::due(int64_t last, int64_t now, int64_t offset) const {
  if (last <= 0) return true;
  // Slack for interval schedules: a nightly timer firing a few seconds before the previous
  // night's snapshot time must still find the image due.
  if (kind_ == Kind::kEvery) return now >= last + period_ - period_ / 20;
  return last < slot_at_or_before(now - offset) + offset;
}

int64_t Schedule::next_due(int64_t last, int64_t now, int64_t offset) const {
  if (due(last, now, offset)) return now;
  if (kind_ == Kind::kEvery) return last + period_ - period_ / 20;
  // The next slot after now: step forward from the current one until it moves.
  const int64_t current = slot_at_or_before(now - offset);
  int64_t probe = now - offset + 60;
  for (int i = 0; i < 8 * 24 * 60 && slot_at_or_before(probe) == current; ++i) probe += 60;
  return slot_at_or_before(probe) + offset;
}

int64_t parse_duration(const std::string& text) {
  const size_t b = text.find_first_not_of(" \t"), e = text.find_last_not_of(" \t");
  const std::string t = b == std::string::npos ? "" : text.substr(b, e - b + 1);
  size_t used = 0;
  long long n = 0;
  try {
    // Digits first: stoll alone also takes "+5" and "-0".
    if (!t.empty() && t[0] >= '0' && t[0] <= '9') n = std::stoll(t, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string unit = used ? t.substr(used) : "";
  if (used == 0 || n < 0) throw std::invalid_argument("expected a duration such as 90s, 15m, 6h or 2d");
  const int64_t mult = unit.empty() || unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : unit == "d" ? 86400 : 0;
  // A multiplication that overflows would turn a huge duration into a small or negative one.
  if (mult == 0 || n > INT64_MAX / mult) throw std::invalid_argument("expected a duration such as 90s, 15m, 6h or 2d");
  return n * mult;
}

int64_t jitter_offset(const std::string& key, int64_t jitter_seconds) {
  if (jitter_seconds <= 0) return 0;
  return static_cast<int64_t>(std::hash<std::string>{}(key) % static_cast<uint64_t>(jitter_seconds));
}

}  // namespace rbdvault::agent
