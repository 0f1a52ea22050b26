// A RocksDB FileSystem that injects the faults of a FaultPlan into the index (written for these
// tests: Debian's RocksDB ships no utilities/fault_injection_fs.h). Points: creating, appending to,
// truncating, syncing and closing a writable file, renaming, deleting, and fsyncing a directory.
//
// Crash model (as RocksDB's own FaultInjectionTestFS, simplified): a file keeps what was last
// synced (Sync/Fsync) and loses the rest; a file created but never synced vanishes. Renames are
// taken as durable (RocksDB fsyncs the directory right after each one), deletions too.
#pragma once

#include <rocksdb/file_system.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "fault_plan.h"

namespace rbdvault::faults {

class FaultFs final : public rocksdb::FileSystemWrapper {
 public:
  explicit FaultFs(FaultPlan& plan)
      : rocksdb::FileSystemWrapper(rocksdb::FileSystem::Default()), plan_(plan) {}
  const char* Name() const override { return "FaultFs"; }

  // After a crash and after the store is closed: truncates every file written since to its synced
  // size and deletes the files never synced. Forgets its bookkeeping.
  void drop_unsynced();

  // Fault point; a non-OK status to return instead of doing `what`.
  rocksdb::IOStatus point(const std::string& what);
  rocksdb::IOStatus read_check() const;
  void wrote(const std::string& file, uint64_t new_size);
  void synced(const std::string& file);

  rocksdb::IOStatus NewWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* r, rocksdb::IODebugContext* d) override;
  rocksdb::IOStatus ReopenWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                       std::unique_ptr<rocksdb::FSWritableFile>* r,
                                       rocksdb::IODebugContext* d) override;
  rocksdb::IOStatus ReuseWritableFile(const std::string& f, const std::string& old, const rocksdb::FileOptions& o,
                                      std::unique_ptr<rocksdb::FSWritableFile>* r,
                                      rocksdb::IODebugContext* d) override;
  rocksdb::IOStatus NewRandomRWFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSRandomRWFile>* r, rocksdb::IODebugContext* d) override;
  rocksdb::IOStatus NewSequentialFile(const std::string& f, const rocksdb::FileOptions& o,
                                      std::unique_ptr<rocksdb::FSSequentialFile>* r,
                                      rocksdb::IODebugContext* d) override;
  rocksdb::IOStatus NewRandomAccessFile(const std::string& f, const rocksdb::FileOptions& o,
                                        std::unique_ptr<rocksdb::FSRandomAccessFile>* r,
                                        rocksdb::IODebugContext* d) override;
  rocksdb::IOStatus NewDirectory(const std::string& name, const rocksdb::IOOptions& o,
                                 std::unique_ptr<rocksdb::FSDirectory>* r, rocksdb::IODebugContext* d) override;
  rocksdb::IOStatus RenameFile(const std::string& s, const std::string& t, const rocksdb::IOOptions& o,
                               rocksdb::IODebugContext* d) override;
  rocksdb::IOStatus LinkFile(const std::string& s, const std::string& t, const rocksdb::IOOptions& o,
                             rocksdb::IODebugContext* d) override;
  rocksdb::IOStatus DeleteFile(const std::string& f, const rocksdb::IOOptions& o, rocksdb::IODebugContext* d) override;
  rocksdb::IOStatus Truncate(const std::string& f, size_t size, const rocksdb::IOOptions& o,
                             rocksdb::IODebugContext* d) override;

 private:
  struct FileState {
    uint64_t size = 0, synced = 0;
    bool ever_synced = false;
  };
  FaultPlan& plan_;
  std::mutex mu_;
  std::map<std::string, FileState> files_;  // written since the last drop_unsynced
};

}  // namespace rbdvault::faults
