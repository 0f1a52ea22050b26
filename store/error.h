// Errors of the store/ layer. The store reports every failure by throwing StoreError; the kind
// lets callers (the CLI, the scheduler) decide on exit codes and retries without parsing text.
#pragma once

#include <stdexcept>
#include <string>

namespace rbdvault::store {

class StoreError : public std::runtime_error {
 public:
  enum class Kind {
    kNotFound,  // unknown image or revision, missing store directory
    kInvalid,   // bad argument, not a store, unsupported format version
    kLocked,    // another writer holds the store lock
    kCorrupt,   // stored data or index fails a check
    kIO,        // the operating system or RocksDB failed
    kExists,    // the target already exists (init on a store or a non-empty directory)
    kNoSpace,   // ENOSPC/EDQUOT from the file system
    kUnreachable,  // a remote backend (a RADOS store's cluster) did not answer in time: retry later
  };
  StoreError(Kind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

[[noreturn]] void throw_errno(const std::string& what);  // kIO (kNoSpace for ENOSPC/EDQUOT) with strerror(errno)

}  // namespace rbdvault::store
