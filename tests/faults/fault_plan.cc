#include "fault_plan.h"

namespace rbdvault::faults {

const char* mode_name(FaultMode mode) {
  switch (mode) {
    case FaultMode::kCount: return "count";
    case FaultMode::kEio: return "EIO";
    case FaultMode::kNoSpace: return "ENOSPC";
    case FaultMode::kCrash: return "crash";
  }
  return "?";
}

void FaultPlan::arm(FaultMode mode, uint64_t at) {
  std::lock_guard<std::mutex> guard(mu_);
  armed_ = true;
  mode_ = mode;
  at_ = at;
  count_ = 0;
  trace_.clear();
}

void FaultPlan::disarm() {
  std::lock_guard<std::mutex> guard(mu_);
  armed_ = false;
}

FaultPlan::Verdict FaultPlan::step(const std::string& what) {
  std::lock_guard<std::mutex> guard(mu_);
  if (dead_) return Verdict::kDead;
  if (!armed_) return Verdict::kGo;
  ++count_;
  trace_.push_back(what);
  if (count_ != at_ || mode_ == FaultMode::kCount) return Verdict::kGo;
  switch (mode_) {
    case FaultMode::kEio: return Verdict::kEio;
    case FaultMode::kNoSpace: return Verdict::kNoSpace;
    default: dead_ = true; return Verdict::kDead;
  }
}

void FaultPlan::crash_now() {
  std::lock_guard<std::mutex> guard(mu_);
  dead_ = true;
}

bool FaultPlan::dead() const {
  std::lock_guard<std::mutex> guard(mu_);
  return dead_;
}

uint64_t FaultPlan::points() const {
  std::lock_guard<std::mutex> guard(mu_);
  return count_;
}

std::vector<std::string> FaultPlan::trace() const {
  std::lock_guard<std::mutex> guard(mu_);
  return trace_;
}

}  // namespace rbdvault::faults
