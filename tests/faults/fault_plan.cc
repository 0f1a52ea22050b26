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

void FaultPlan::arm_reads(ReadMode mode, uint64_t at) {
  std::lock_guard<std::mutex> guard(mu_);
  read_mode_ = mode;
  read_at_ = at;
  read_count_ = 0;
  read_trace_.clear();
}

FaultPlan::ReadVerdict FaultPlan::read_step(const std::string& what, bool is_read_at) {
  std::lock_guard<std::mutex> guard(mu_);
  if (read_mode_ == ReadMode::kOff || (read_mode_ == ReadMode::kFlip && !is_read_at)) return ReadVerdict::kGo;
  ++read_count_;
  read_trace_.push_back(what);
  if (read_count_ != read_at_) return ReadVerdict::kGo;
  if (read_mode_ == ReadMode::kEio) return ReadVerdict::kEio;
  if (read_mode_ == ReadMode::kFlip) return ReadVerdict::kFlip;
  return ReadVerdict::kGo;
}

uint64_t FaultPlan::read_points() const {
  std::lock_guard<std::mutex> guard(mu_);
  return read_count_;
}

std::vector<std::string> FaultPlan::read_trace() const {
  std::lock_guard<std::mutex> guard(mu_);
  return read_trace_;
}

}  // namespace rbdvault::faults
