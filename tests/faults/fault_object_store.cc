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

class FaultReader final : public store::ObjectReader {
 public:
  FaultReader(std::unique_ptr<store::ObjectReader> inner, FaultObjectStore& owner, std::string name)
      : inner_(std::move(inner)), owner_(owner), name_(std::move(name)) {}
  bool read_at(uint64_t offset, char* buf, size_t n) const override {
    const bool flip = owner_.read_point("read_at " + name_, /*is_read_at=*/true);
    const bool ok = inner_->read_at(offset, buf, n);
    if (ok && flip && n > 0) buf[n / 2] ^= 0x10;  // the middle of the range: header or payload
    return ok;
  }
  uint64_t size() const override { return inner_->size(); }

 private:
  std::unique_ptr<store::ObjectReader> inner_;
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

bool FaultObjectStore::read_point(const std::string& what, bool is_read_at) {
  if (plan_.dead()) throw StoreError(StoreError::Kind::kIO, "injected crash: no I/O after it");
  switch (plan_.read_step(what, is_read_at)) {
    case FaultPlan::ReadVerdict::kGo: return false;
    case FaultPlan::ReadVerdict::kEio: throw StoreError(StoreError::Kind::kIO, "injected read EIO: " + what);
    case FaultPlan::ReadVerdict::kFlip: return true;
  }
  return false;
}

std::unique_ptr<store::ObjectSink> FaultObjectStore::create(const std::string& name) {
  point("create " + name);
  return std::make_unique<FaultSink>(inner_->create(name), *this, name);
}

std::unique_ptr<store::ObjectReader> FaultObjectStore::open(const std::string& name) {
  read_point("open " + name);
  return std::make_unique<FaultReader>(inner_->open(name), *this, name);
}

std::optional<uint64_t> FaultObjectStore::size(const std::string& name) {
  read_point("size " + name);
  return inner_->size(name);
}

std::vector<std::string> FaultObjectStore::list(const std::string& prefix) {
  read_point("list " + prefix);
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
