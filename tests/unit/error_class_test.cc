// The exception -> error class -> exit code table (agent/error_class.h, docs/usage.md "Exit codes").
#include "agent/error_class.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <optional>
#include <system_error>
#include <typeinfo>

#include "agent/batch_config.h"
#include "agent/batch_run.h"
#include "rbd/error.h"
#include "store/error.h"

namespace rbdvault::agent {
namespace {

template <class E>
ErrorClass of(E e) {
  return classify(std::make_exception_ptr(e));
}

TEST(ErrorClass, ExitCodesAreTheDocumentedOnes) {
  EXPECT_EQ(exit_code(ErrorClass::kOk), 0);
  EXPECT_EQ(exit_code(ErrorClass::kFailed), 1);
  EXPECT_EQ(exit_code(ErrorClass::kUsage), 2);
  EXPECT_EQ(exit_code(ErrorClass::kNotFound), 3);
  EXPECT_EQ(exit_code(ErrorClass::kLocked), 4);
  EXPECT_EQ(exit_code(ErrorClass::kDamage), 5);
  EXPECT_EQ(exit_code(ErrorClass::kUnreachable), 6);
  EXPECT_EQ(exit_code(ErrorClass::kNoSpace), 7);
  EXPECT_EQ(exit_code(ErrorClass::kExists), 8);
  EXPECT_EQ(exit_code(ErrorClass::kInternal), 70);
  EXPECT_STREQ(class_name(ErrorClass::kNotFound), "not-found");
  EXPECT_STREQ(class_name(ErrorClass::kUnreachable), "unreachable");
}

TEST(ErrorClass, UsageAndConfig) {
  EXPECT_EQ(of(UsageError("bad --keep-last")), ErrorClass::kUsage);
  EXPECT_EQ(of(ConfigError("f:3: unknown key")), ErrorClass::kUsage);
  EXPECT_EQ(of(store::StoreError(store::StoreError::Kind::kInvalid, "not an rbdvault store")), ErrorClass::kUsage);
}

TEST(ErrorClass, StoreKinds) {
  using K = store::StoreError::Kind;
  EXPECT_EQ(of(store::StoreError(K::kNotFound, "")), ErrorClass::kNotFound);
  EXPECT_EQ(of(store::StoreError(K::kLocked, "")), ErrorClass::kLocked);
  EXPECT_EQ(of(store::StoreError(K::kCorrupt, "")), ErrorClass::kDamage);
  EXPECT_EQ(of(store::StoreError(K::kIO, "")), ErrorClass::kFailed);
  EXPECT_EQ(of(store::StoreError(K::kExists, "")), ErrorClass::kExists);
  EXPECT_EQ(of(store::StoreError(K::kNoSpace, "")), ErrorClass::kNoSpace);
}

TEST(ErrorClass, ThrowErrnoKeepsNoSpaceApart) {
  for (int e : {ENOSPC, EDQUOT}) {
    errno = e;
    try {
      store::throw_errno("write pack");
    } catch (const store::StoreError& err) {
      EXPECT_EQ(err.kind(), store::StoreError::Kind::kNoSpace) << e;
    }
  }
  errno = EIO;
  EXPECT_EQ(classify([] {
              try {
                store::throw_errno("write pack");
              } catch (...) {
                return std::current_exception();
              }
              return std::exception_ptr();
            }()),
            ErrorClass::kFailed);
}

TEST(ErrorClass, CephErrnos) {
  EXPECT_EQ(of(rbd::CephError("open image rbd/x", -ENOENT)), ErrorClass::kNotFound);
  EXPECT_EQ(of(rbd::CephError("connect to cluster", -ETIMEDOUT)), ErrorClass::kUnreachable);
  EXPECT_EQ(of(rbd::CephError("connect to cluster", -ECONNREFUSED)), ErrorClass::kUnreachable);
  EXPECT_EQ(of(rbd::CephError("lock image", -EBUSY)), ErrorClass::kLocked);
  EXPECT_EQ(of(rbd::CephError("create image", -EEXIST)), ErrorClass::kExists);
  EXPECT_EQ(of(rbd::CephError("write", -EDQUOT)), ErrorClass::kNoSpace);
  EXPECT_EQ(of(rbd::CephError("write", -ENOSPC)), ErrorClass::kNoSpace);
  EXPECT_EQ(of(rbd::CephError("open", -EACCES)), ErrorClass::kFailed);
  // librbd's EINVAL may be our own mistake: never reported as the user's.
  EXPECT_EQ(of(rbd::CephError("resize", -EINVAL)), ErrorClass::kFailed);
  EXPECT_EQ(of(std::system_error(ENOSPC, std::generic_category(), "write")), ErrorClass::kNoSpace);
}

// An internal error is never "usage", whatever its type says.
TEST(ErrorClass, InternalErrorsAreNotUsage) {
  EXPECT_EQ(of(std::logic_error("revision already committed")), ErrorClass::kInternal);
  EXPECT_EQ(of(std::invalid_argument("block beyond the revision's size")), ErrorClass::kInternal);
  EXPECT_EQ(of(std::out_of_range("map::at")), ErrorClass::kInternal);
  EXPECT_EQ(of(std::bad_cast()), ErrorClass::kInternal);
  EXPECT_EQ(of(std::bad_optional_access()), ErrorClass::kInternal);
  EXPECT_EQ(of(42), ErrorClass::kInternal);
  EXPECT_EQ(of(std::runtime_error("something failed")), ErrorClass::kFailed);
  EXPECT_EQ(of(std::bad_alloc()), ErrorClass::kFailed);
  EXPECT_EQ(classify(nullptr), ErrorClass::kOk);
}

TEST(ErrorClass, RunReportSharesOrGeneralises) {
  RunReport r;
  EXPECT_EQ(r.failure_class(), ErrorClass::kOk);
  ImageOutcome ok;
  ok.result = ImageResult::kOk;
  ImageOutcome down;
  down.result = ImageResult::kFailed;
  down.error_class = ErrorClass::kUnreachable;
  r.images = {ok, down, down};
  EXPECT_EQ(r.failure_class(), ErrorClass::kUnreachable);
  ImageOutcome damaged = down;
  damaged.error_class = ErrorClass::kDamage;
  r.images.push_back(damaged);
  EXPECT_EQ(r.failure_class(), ErrorClass::kFailed);
}

}  // namespace
}  // namespace rbdvault::agent
