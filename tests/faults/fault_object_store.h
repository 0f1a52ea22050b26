// An ObjectStore wrapper that injects the faults of a FaultPlan into the data area. Points: create,
// append, commit, remove, remove_incomplete. Reads are read points of their own (FaultPlan::arm_reads). A failed point does nothing and throws (kIO for EIO,
// kNoSpace for ENOSPC). After a crash every call throws kIO and nothing more reaches the inner
// store; a sink not committed by then leaves nothing (the inner sink is dropped, as a killed
// process's leftover would be by the next writer's remove_incomplete).
#pragma once

#include <memory>

#include "fault_plan.h"
#include "store/object_store.h"

namespace rbdvault::faults {

class FaultObjectStore final : public store::ObjectStore {
 public:
  FaultObjectStore(std::shared_ptr<store::ObjectStore> inner, FaultPlan& plan)
      : inner_(std::move(inner)), plan_(plan) {}

  std::unique_ptr<store::ObjectSink> create(const std::string& name) override;
  std::unique_ptr<store::ObjectReader> open(const std::string& name) override;
  std::optional<uint64_t> size(const std::string& name) override;
  std::vector<std::string> list(const std::string& prefix) override;
  void remove(const std::string& name) override;
  void remove_incomplete(const std::string& prefix) override;

  // Throws for a failed or crashed point; returns when the operation may go ahead.
  void point(const std::string& what);
  // A read: throws after a crash or for a read point failed with EIO; true to flip a bit of it.
  bool read_point(const std::string& what, bool is_read_at = false);

 private:
  std::shared_ptr<store::ObjectStore> inner_;
  FaultPlan& plan_;
};

}  // namespace rbdvault::faults
