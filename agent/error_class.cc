#include "agent/error_class.h"

#include <cerrno>
#include <new>
#include <system_error>

#include "agent/batch_config.h"
#include "agent/hooks.h"
#include "rbd/error.h"
#include "store/error.h"

namespace rbdvault::agent {

ErrorClass classify_errno(int negative_errno) noexcept {
  switch (-negative_errno) {
    case 0:
      return ErrorClass::kOk;
    case ENOENT:
      return ErrorClass::kNotFound;
    case EBUSY:
    case EAGAIN:
      return ErrorClass::kLocked;
    case EEXIST:
      return ErrorClass::kExists;
    case ENOSPC:
    case EDQUOT:
      return ErrorClass::kNoSpace;
    case ETIMEDOUT:
    case ECONNREFUSED:
    case ECONNRESET:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case ENOTCONN:
    case ESHUTDOWN:
      return ErrorClass::kUnreachable;
    default:
      return ErrorClass::kFailed;
  }
}

namespace {

ErrorClass classify_store(store::StoreError::Kind kind) {
  using K = store::StoreError::Kind;
  switch (kind) {
    case K::kNotFound:
      return ErrorClass::kNotFound;
    case K::kInvalid:
      return ErrorClass::kUsage;
    case K::kLocked:
      return ErrorClass::kLocked;
    case K::kCorrupt:
      return ErrorClass::kDamage;
    case K::kExists:
      return ErrorClass::kExists;
    case K::kNoSpace:
      return ErrorClass::kNoSpace;
    case K::kUnreachable:
      return ErrorClass::kUnreachable;
    case K::kIO:
      return ErrorClass::kFailed;
  }
  return ErrorClass::kInternal;
}

}  // namespace

ErrorClass classify(const std::exception_ptr& error) noexcept {
  if (!error) return ErrorClass::kOk;
  try {
    std::rethrow_exception(error);
  } catch (const UsageError&) {
    return ErrorClass::kUsage;
  } catch (const ConfigError&) {
    return ErrorClass::kUsage;
  } catch (const HookError&) {
    return ErrorClass::kHookFailed;
  } catch (const store::StoreError& e) {
    return classify_store(e.kind());
  } catch (const rbd::CephError& e) {
    return classify_errno(e.code());
  } catch (const std::system_error& e) {
    if (e.code().category() == std::generic_category() || e.code().category() == std::system_category()) {
      return classify_errno(-e.code().value());
    }
    return ErrorClass::kFailed;
  } catch (const std::bad_alloc&) {
    return ErrorClass::kFailed;  // a resource, not a bug
  } catch (const std::logic_error&) {
    return ErrorClass::kInternal;  // invalid_argument included: user input is checked before use
  } catch (const std::runtime_error&) {
    return ErrorClass::kFailed;
  } catch (...) {
    return ErrorClass::kInternal;  // bad_cast, bad_optional_access, a non-std exception
  }
}

const char* class_name(ErrorClass c) noexcept {
  switch (c) {
    case ErrorClass::kOk:
      return "ok";
    case ErrorClass::kFailed:
      return "failed";
    case ErrorClass::kUsage:
      return "usage";
    case ErrorClass::kNotFound:
      return "not-found";
    case ErrorClass::kLocked:
      return "locked";
    case ErrorClass::kDamage:
      return "damage";
    case ErrorClass::kUnreachable:
      return "unreachable";
    case ErrorClass::kNoSpace:
      return "no-space";
    case ErrorClass::kExists:
      return "exists";
    case ErrorClass::kHookFailed:
      return "hook-failed";
    case ErrorClass::kInternal:
      return "internal";
  }
  return "internal";
}

}  // namespace rbdvault::agent
