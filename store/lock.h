// The single-writer lock of a store: an open-file-description (OFD) record lock on DIR/lock, held for
// a whole operation; a second open in the same process is refused like another process.
// The kernel drops it when the holder dies, so a lock can never go stale; the file also records
// the holder's pid and command for humans.
#pragma once

#include <filesystem>
#include <string>

namespace rbdvault::store {

class WriterLock {
 public:
  // Takes the lock or throws StoreError(kLocked) naming the holder's pid, at once (never waits).
  WriterLock(const std::filesystem::path& path, const std::string& holder_description);
  ~WriterLock();
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;

 private:
  int fd_ = -1;
};

// Readers (restore, scrub, verify, mount, serve) hold DIR/readers.lock shared; gc, which deletes
// pack files, and rebuild-index, which swaps the index, hold it exclusive (`exclusive_for` names
// which, in the refusal). Either side is refused at once, naming a holder, when the other has it.
class ReaderLock {
 public:
  ReaderLock(const std::filesystem::path& path, bool exclusive, const char* exclusive_for = "gc");
  ~ReaderLock();
  ReaderLock(const ReaderLock&) = delete;
  ReaderLock& operator=(const ReaderLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace rbdvault::store
