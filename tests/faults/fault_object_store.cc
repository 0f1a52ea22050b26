#include "fault_object_store.h"

#include "store/error.h"

namespace rbdvault::faults {
namespace {

using store::StoreError;

class FaultSink final : public store::ObjectSink {
 public:
  FaultSink(std::unique_ptr<store::ObjectSink> inner, FaultObjectStore& owner, std::string name)
      : inner_(std::move(inner)), owner_(owner), name_(std::move(name)) {}
  void append(std::string_view bytes) override {
    owner_.point("append " + name_);
    inner_->append(bytes);
  }
  uint64_t size() const override { return inner_->size(); }
  void commit() override {
    owner_.point("commit " + name_);
    inner_->commit();
  }

 private:
  std::unique_ptr<store::ObjectSink> inner_;
  FaultObjectStore& owner_;
  std::string name_;
};

}  // namespace

void FaultObjectStore::point(const std::string& what) {
  switch (plan_.step("data: " + what)) {
    case FaultPlan::Verdict::kGo: return;
    case FaultPlan::Verdict::kEio: throw StoreError(StoreError::Kind::kIO, "injected EIO: " + what);
    case FaultPlan::Verdict::kNoSpace: throw StoreError(StoreError::Kind::kNoSpace, "injected ENOSPC: " + what);
    case FaultPlan::Verdict::kDead: break;
  }
  throw StoreError(StoreError::Kind::kIO, "injected crash: " + what);
}

void FaultObjectStore::read_check() const {
  if (plan_.dead()) throw StoreError(StoreError::Kind::kIO, "injected crash: no I/O after it");
}

std::unique_ptr<store::ObjectSink> FaultObjectStore::create(const std::string& name) {
  point("create " + name);
  return std::make_unique<FaultSink>(inner_->create(name), *this, name);
}

std::unique_ptr<store::ObjectReader> FaultObjectStore::open(const std::string& name) {
  read_check();
  return inner_->open(name);
}

std::optional<uint64_t> FaultObjectStore::size(const std::string& name) {
  read_check();
  return inner_->size(name);
}

std::vector<std::string> FaultObjectStore::list(const std::string& prefix) {
  read_check();
  return inner_->list(prefix);
}

void FaultObjectStore::remove(const std::string& name) {
  point("remove " + name);
  inner_->remove(name);
}

void FaultObjectStore::remove_incomplete(const std::string& prefix) {
  point("remove_incomplete " + prefix);
  inner_->remove_incomplete(prefix);
}

}  // namespace rbdvault::faults
