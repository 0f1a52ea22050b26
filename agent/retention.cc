#include "agent/retention.h"

#include <algorithm>
#include <ctime>
#include <optional>

namespace rbdvault::agent {
namespace {

std::tm utc(int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  return tm;
}

int64_t hour_bucket(int64_t t) { return t >= 0 ? t / 3600 : (t - 3599) / 3600; }
int64_t day_bucket(int64_t t) { return t >= 0 ? t / 86400 : (t - 86399) / 86400; }
int64_t week_bucket(int64_t t) {
  std::tm tm = utc(t);
  char buf[16];
  std::strftime(buf, sizeof(buf), "%G%V", &tm);  // ISO 8601 year and week
  return std::stoll(buf);
}
int64_t month_bucket(int64_t t) {
  std::tm tm = utc(t);
  return (tm.tm_year + 1900) * 12 + tm.tm_mon;
}

}  // namespace

std::vector<RetentionDecision> apply_retention(std::vector<RetentionInput> revs, const RetentionPolicy& policy) {
  std::sort(revs.begin(), revs.end(),
            [](auto& a, auto& b) { return a.created != b.created ? a.created > b.created : a.id > b.id; });
  // The newest revision is the one backed up last (the highest id): its snapshot is the next
  // diff's base, and forget refuses it. By creation time it may not be first (the clock went back).
  uint64_t newest_id = 0;
  for (const RetentionInput& r : revs) newest_id = std::max(newest_id, r.id);
  std::vector<RetentionDecision> out;
  struct Rule {
    const char* name;
    int limit;
    int64_t (*bucket)(int64_t);
    int used = 0;
    std::optional<int64_t> last;
  };
  Rule rules[] = {{"hourly", policy.keep_hourly, hour_bucket, 0, std::nullopt},
                  {"daily", policy.keep_daily, day_bucket, 0, std::nullopt},
                  {"weekly", policy.keep_weekly, week_bucket, 0, std::nullopt},
                  {"monthly", policy.keep_monthly, month_bucket, 0, std::nullopt}};
  for (size_t i = 0; i < revs.size(); ++i) {
    RetentionDecision d{revs[i].id, false, {}};
    auto reason = [&](const char* r) {
      d.keep = true;
      if (!d.reasons.empty()) d.reasons += ", ";
      d.reasons += r;
    };
    if (revs[i].id == newest_id) reason("newest");
    if (revs[i].is_protected) reason("protected");
    if (static_cast<int>(i) < policy.keep_last) reason("last");
    for (Rule& rule : rules) {
      if (rule.used >= rule.limit) continue;
      int64_t b = rule.bucket(revs[i].created);
      if (rule.last && *rule.last == b) continue;
      rule.last = b;
      ++rule.used;
      reason(rule.name);
    }
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace rbdvault::agent
