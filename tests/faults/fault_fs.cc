#include "fault_fs.h"

#include <filesystem>

namespace rbdvault::faults {
namespace {

using rocksdb::IODebugContext;
using rocksdb::IOOptions;
using rocksdb::IOStatus;
using rocksdb::Slice;

// The last path component, for the trace; RocksDB's rotated info logs carry the time in their
// name (LOG.old.<microseconds>), which would make equal runs look different.
std::string base_name(const std::string& path) {
  std::string name = std::filesystem::path(path).filename().string();
  if (name.starts_with("LOG.old.")) name.resize(7);
  return name;
}

class FaultFile final : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  FaultFile(std::unique_ptr<rocksdb::FSWritableFile> f, FaultFs& fs, std::string name, uint64_t size)
      : FSWritableFileOwnerWrapper(std::move(f)), fs_(fs), name_(std::move(name)), label_(base_name(name_)), size_(size) {}

  IOStatus Append(const Slice& data, const IOOptions& o, IODebugContext* d) override {
    return append(data, [&] { return target()->Append(data, o, d); });
  }
  IOStatus Append(const Slice& data, const IOOptions& o, const rocksdb::DataVerificationInfo& v,
                  IODebugContext* d) override {
    return append(data, [&] { return target()->Append(data, o, v, d); });
  }
  IOStatus PositionedAppend(const Slice& data, uint64_t off, const IOOptions& o, IODebugContext* d) override {
    size_ = off;
    return append(data, [&] { return target()->PositionedAppend(data, off, o, d); });
  }
  IOStatus PositionedAppend(const Slice& data, uint64_t off, const IOOptions& o,
                            const rocksdb::DataVerificationInfo& v, IODebugContext* d) override {
    size_ = off;
    return append(data, [&] { return target()->PositionedAppend(data, off, o, v, d); });
  }
  IOStatus Truncate(uint64_t size, const IOOptions& o, IODebugContext* d) override {
    if (IOStatus s = fs_.point("truncate " + label_); !s.ok()) return s;
    IOStatus s = target()->Truncate(size, o, d);
    if (s.ok()) fs_.wrote(name_, size_ = size);
    return s;
  }
  IOStatus Flush(const IOOptions& o, IODebugContext* d) override {
    if (IOStatus s = fs_.read_check(); !s.ok()) return s;
    return target()->Flush(o, d);
  }
  IOStatus Sync(const IOOptions& o, IODebugContext* d) override {
    return sync([&] { return target()->Sync(o, d); });
  }
  IOStatus Fsync(const IOOptions& o, IODebugContext* d) override {
    return sync([&] { return target()->Fsync(o, d); });
  }
  IOStatus RangeSync(uint64_t, uint64_t, const IOOptions&, IODebugContext*) override {
    return IOStatus::OK();  // a hint only; durability comes from Sync
  }
  IOStatus Close(const IOOptions& o, IODebugContext* d) override {
    if (IOStatus s = fs_.point("close " + label_); !s.ok()) {
      target()->Close(o, d).PermitUncheckedError();  // the descriptor goes either way
      return s;
    }
    return target()->Close(o, d);
  }

 private:
  template <typename F>
  IOStatus append(const Slice& data, F&& op) {
    if (IOStatus s = fs_.point("append " + label_); !s.ok()) return s;
    IOStatus s = op();
    if (s.ok()) fs_.wrote(name_, size_ += data.size());
    return s;
  }
  template <typename F>
  IOStatus sync(F&& op) {
    if (IOStatus s = fs_.point("sync " + label_); !s.ok()) return s;
    IOStatus s = op();
    if (s.ok()) fs_.synced(name_);
    return s;
  }

  FaultFs& fs_;
  std::string name_, label_;  // the path, and its last component for the trace
  uint64_t size_;
};

class FaultDir final : public rocksdb::FSDirectoryWrapper {
 public:
  FaultDir(std::unique_ptr<rocksdb::FSDirectory> d, FaultFs& fs, std::string name)
      : FSDirectoryWrapper(std::move(d)), fs_(fs), name_(std::move(name)) {}
  IOStatus Fsync(const IOOptions& o, IODebugContext* d) override {
    if (IOStatus s = fs_.point("fsync dir " + name_); !s.ok()) return s;
    return FSDirectoryWrapper::Fsync(o, d);
  }
  IOStatus FsyncWithDirOptions(const IOOptions& o, IODebugContext* d, const rocksdb::DirFsyncOptions& opts) override {
    if (IOStatus s = fs_.point("fsync dir " + name_); !s.ok()) return s;
    return FSDirectoryWrapper::FsyncWithDirOptions(o, d, opts);
  }

 private:
  FaultFs& fs_;
  std::string name_;
};

}  // namespace

IOStatus FaultFs::point(const std::string& what) {
  switch (plan_.step("index: " + what)) {
    case FaultPlan::Verdict::kGo: return IOStatus::OK();
    case FaultPlan::Verdict::kEio: return IOStatus::IOError("injected EIO: " + what);
    case FaultPlan::Verdict::kNoSpace: return IOStatus::NoSpace("injected ENOSPC: " + what);
    case FaultPlan::Verdict::kDead: break;
  }
  return IOStatus::IOError("injected crash: " + what);
}

IOStatus FaultFs::read_check() const {
  return plan_.dead() ? IOStatus::IOError("injected crash: no I/O after it") : IOStatus::OK();
}

void FaultFs::wrote(const std::string& file, uint64_t new_size) {
  std::lock_guard<std::mutex> guard(mu_);
  files_[file].size = new_size;
}

void FaultFs::synced(const std::string& file) {
  std::lock_guard<std::mutex> guard(mu_);
  FileState& st = files_[file];
  st.synced = st.size;
  st.ever_synced = true;
}

void FaultFs::drop_unsynced() {
  std::lock_guard<std::mutex> guard(mu_);
  for (auto& [file, st] : files_) {
    std::error_code ec;
    if (!st.ever_synced)
      std::filesystem::remove(file, ec);
    else if (std::filesystem::exists(file, ec))
      std::filesystem::resize_file(file, st.synced, ec);
  }
  files_.clear();
}

IOStatus FaultFs::NewWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                  std::unique_ptr<rocksdb::FSWritableFile>* r, IODebugContext* d) {
  if (IOStatus s = point("create " + base_name(f)); !s.ok()) return s;
  std::unique_ptr<rocksdb::FSWritableFile> file;
  IOStatus s = target()->NewWritableFile(f, o, &file, d);
  if (!s.ok()) return s;
  {
    std::lock_guard<std::mutex> guard(mu_);
    files_[f] = FileState{};  // created (or truncated) now: nothing of it is durable yet
  }
  *r = std::make_unique<FaultFile>(std::move(file), *this, f, 0);
  return s;
}

IOStatus FaultFs::ReopenWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                     std::unique_ptr<rocksdb::FSWritableFile>* r, IODebugContext* d) {
  if (IOStatus s = point("reopen " + base_name(f)); !s.ok()) return s;
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(f, ec);
  std::unique_ptr<rocksdb::FSWritableFile> file;
  IOStatus s = target()->ReopenWritableFile(f, o, &file, d);
  if (!s.ok()) return s;
  {
    std::lock_guard<std::mutex> guard(mu_);
    if (!files_.count(f)) files_[f] = FileState{ec ? 0 : size, ec ? 0 : size, true};
  }
  *r = std::make_unique<FaultFile>(std::move(file), *this, f, ec ? 0 : size);
  return s;
}

IOStatus FaultFs::ReuseWritableFile(const std::string& f, const std::string& old, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* r, IODebugContext* d) {
  if (IOStatus s = RenameFile(old, f, IOOptions(), d); !s.ok()) return s;
  return NewWritableFile(f, o, r, d);
}

IOStatus FaultFs::NewRandomRWFile(const std::string& f, const rocksdb::FileOptions&,
                                  std::unique_ptr<rocksdb::FSRandomRWFile>*, IODebugContext*) {
  return IOStatus::NotSupported("FaultFs: random read-write files are not modelled (" + f + ")");
}

IOStatus FaultFs::NewSequentialFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSSequentialFile>* r, IODebugContext* d) {
  if (IOStatus s = read_check(); !s.ok()) return s;
  return target()->NewSequentialFile(f, o, r, d);
}

IOStatus FaultFs::NewRandomAccessFile(const std::string& f, const rocksdb::FileOptions& o,
                                      std::unique_ptr<rocksdb::FSRandomAccessFile>* r, IODebugContext* d) {
  if (IOStatus s = read_check(); !s.ok()) return s;
  return target()->NewRandomAccessFile(f, o, r, d);
}

IOStatus FaultFs::NewDirectory(const std::string& name, const IOOptions& o, std::unique_ptr<rocksdb::FSDirectory>* r,
                               IODebugContext* d) {
  if (IOStatus s = read_check(); !s.ok()) return s;
  std::unique_ptr<rocksdb::FSDirectory> dir;
  IOStatus s = target()->NewDirectory(name, o, &dir, d);
  if (s.ok()) *r = std::make_unique<FaultDir>(std::move(dir), *this, base_name(name));
  return s;
}

IOStatus FaultFs::RenameFile(const std::string& s, const std::string& t, const IOOptions& o, IODebugContext* d) {
  if (IOStatus st = point("rename " + base_name(s) + " " + base_name(t)); !st.ok()) return st;
  IOStatus st = target()->RenameFile(s, t, o, d);
  if (st.ok()) {
    std::lock_guard<std::mutex> guard(mu_);
    auto it = files_.find(s);
    files_.erase(t);
    if (it != files_.end()) {
      files_[t] = it->second;
      files_.erase(s);
    }
  }
  return st;
}

IOStatus FaultFs::LinkFile(const std::string& s, const std::string& t, const IOOptions& o, IODebugContext* d) {
  if (IOStatus st = point("link " + base_name(s) + " " + base_name(t)); !st.ok()) return st;
  return target()->LinkFile(s, t, o, d);
}

IOStatus FaultFs::DeleteFile(const std::string& f, const IOOptions& o, IODebugContext* d) {
  if (IOStatus s = point("delete " + base_name(f)); !s.ok()) return s;
  IOStatus s = target()->DeleteFile(f, o, d);
  if (s.ok()) {
    std::lock_guard<std::mutex> guard(mu_);
    files_.erase(f);
  }
  return s;
}

IOStatus FaultFs::Truncate(const std::string& f, size_t size, const IOOptions& o, IODebugContext* d) {
  if (IOStatus s = point("truncate " + base_name(f)); !s.ok()) return s;
  return target()->Truncate(f, size, o, d);
}

}  // namespace rbdvault::faults
