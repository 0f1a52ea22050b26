// The run report's summaries (agent/batch_run.h).
#include <algorithm>

#include "agent/batch_run.h"

namespace rbdvault::agent {

const char* result_name(ImageResult r) {
  switch (r) {
    case ImageResult::kOk:
      return "ok";
    case ImageResult::kFailed:
      return "failed";
    case ImageResult::kNotDue:
      return "not-due";
    case ImageResult::kSkipped:
      return "skipped";
    case ImageResult::kMissing:
      return "missing";
    case ImageResult::kCancelled:
      return "cancelled";
    case ImageResult::kWouldBackUp:
      return "would-back-up";
  }
  return "?";
}

size_t RunReport::count(ImageResult r) const {
  return static_cast<size_t>(std::count_if(images.begin(), images.end(), [&](auto& i) { return i.result == r; }));
}

ErrorClass RunReport::failure_class() const {
  ErrorClass shared = ErrorClass::kOk;
  auto add = [&](ImageResult r, ErrorClass c) {
    if (r != ImageResult::kFailed) return true;
    if (shared != ErrorClass::kOk && c != shared) return false;
    shared = c;
    return true;
  };
  for (const auto& i : images)
    if (!add(i.result, i.error_class)) return ErrorClass::kFailed;
  for (const auto& g : groups)
    if (!add(g.result, g.error_class)) return ErrorClass::kFailed;
  if (copy.ran && !copy.ok && !add(ImageResult::kFailed, copy.error_class)) return ErrorClass::kFailed;
  return shared;
}

}  // namespace rbdvault::agent
