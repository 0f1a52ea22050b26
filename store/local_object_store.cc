#include "store/local_object_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "store/error.h"
#include "store/posix_file.h"

namespace rbdvault::store {
namespace {

namespace fs = std::filesystem;
constexpr std::string_view kTmpSuffix = ".tmp";
constexpr size_t kWriteBuffer = 4 << 20;  // small appends are gathered into writes of this size
constexpr size_t kDirectWrite = 32 << 10;  // larger ones (chunk payloads) are written at once

bool is_tmp(const std::string& name) {
  return name.size() >= kTmpSuffix.size() && name.compare(name.size() - kTmpSuffix.size(), kTmpSuffix.size(), kTmpSuffix) == 0;
}

class FileReader final : public ObjectReader {
 public:
  FileReader(int fd, uint64_t size, std::string name) : fd_(fd), size_(size), name_(std::move(name)) {}
  ~FileReader() override { ::close(fd_); }
  FileReader(const FileReader&) = delete;
  FileReader& operator=(const FileReader&) = delete;

  bool read_at(uint64_t offset, char* buf, size_t n) const override {
    return read_split_at(offset, nullptr, 0, buf, n);
  }
  bool read_split_at(uint64_t offset, char* head, size_t head_n, char* buf, size_t n) const override {
    size_t got = 0;
    while (got < head_n + n) {
      iovec iov[2];
      int parts = 0;
      if (got < head_n) iov[parts++] = {head + got, head_n - got};
      const size_t in_buf = got > head_n ? got - head_n : 0;
      if (n > in_buf) iov[parts++] = {buf + in_buf, n - in_buf};
      const ssize_t r = ::preadv(fd_, iov, parts, static_cast<off_t>(offset + got));
      if (r < 0) {
        if (errno == EINTR) continue;
        throw_errno("read " + name_);
      }
      if (r == 0) return false;
      got += static_cast<size_t>(r);
    }
    return true;
  }
  uint64_t size() const override { return size_; }

 private:
  int fd_;
  uint64_t size_;
  std::string name_;
};

class FileSink final : public ObjectSink {
 public:
  explicit FileSink(fs::path final_path)
      : final_(std::move(final_path)), tmp_(final_.string() + std::string(kTmpSuffix)) {
    std::error_code ec;
    fs::create_directories(final_.parent_path(), ec);  // "manifests/" on first use; open() reports failure
    // A leftover of a killed writer under this name holds nothing anyone refers to: truncate it.
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw_errno("create " + tmp_.string());
    buffer_.reserve(kWriteBuffer);
  }
  ~FileSink() override {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }
  FileSink(const FileSink&) = delete;
  FileSink& operator=(const FileSink&) = delete;

  void append(std::string_view bytes) override {
    size_ += bytes.size();
    if (buffer_.size() + bytes.size() > kWriteBuffer || bytes.size() >= kDirectWrite) flush();
    if (bytes.size() >= kDirectWrite) {  // written from where it is: a copy would cost as much as the write
      write_all(fd_, bytes.data(), bytes.size(), tmp_);
    } else {
      buffer_.append(bytes);
    }
  }
  uint64_t size() const override { return size_; }

  void commit() override {
    flush();
    if (::fsync(fd_) != 0) throw_errno("fsync " + tmp_.string());
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) throw_errno("close " + tmp_.string());
    publish();
    committed_ = true;
    fsync_dir(final_.parent_path());
  }

 private:
  void flush() {
    write_all(fd_, buffer_.data(), buffer_.size(), tmp_);
    buffer_.clear();
  }
  // Renames without ever replacing an existing object: a name already taken holds data the index
  // may point into.
  void publish() {
    if (::renameat2(AT_FDCWD, tmp_.c_str(), AT_FDCWD, final_.c_str(), RENAME_NOREPLACE) == 0) return;
    if (errno == EEXIST) throw StoreError(StoreError::Kind::kExists, final_.string() + " already exists; refusing to overwrite it");
    // A file system without RENAME_NOREPLACE (EINVAL): link(2) refuses an existing name too.
    if (errno != EINVAL) throw_errno("rename " + tmp_.string());
    if (::link(tmp_.c_str(), final_.c_str()) != 0) {
      if (errno == EEXIST) throw StoreError(StoreError::Kind::kExists, final_.string() + " already exists; refusing to overwrite it");
      throw_errno("link " + tmp_.string());
    }
    ::unlink(tmp_.c_str());
  }

  fs::path final_, tmp_;
  int fd_ = -1;
  std::string buffer_;
  uint64_t size_ = 0;
  bool committed_ = false;
};

}  // namespace

fs::path LocalObjectStore::path_of(const std::string& name) const {
  const bool bad_char = std::any_of(name.begin(), name.end(), [](char c) {
    return !((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' || c == '/');
  });
  if (name.empty() || bad_char || name.front() == '/' || name.find("..") != std::string::npos || is_tmp(name))
    throw StoreError(StoreError::Kind::kInvalid, "bad object name '" + name + "'");
  return root_ / name;
}

std::unique_ptr<ObjectSink> LocalObjectStore::create(const std::string& name) {
  return std::make_unique<FileSink>(path_of(name));
}

std::unique_ptr<ObjectReader> LocalObjectStore::open(const std::string& name) {
  const fs::path path = path_of(name);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) throw StoreError(StoreError::Kind::kNotFound, "object missing: " + path.string());
    throw_errno("open " + path.string());
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    errno = e;
    throw_errno("stat " + path.string());
  }
  return std::make_unique<FileReader>(fd, static_cast<uint64_t>(st.st_size), path.string());
}

std::optional<uint64_t> LocalObjectStore::size(const std::string& name) {
  const fs::path path = path_of(name);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return std::nullopt;
    throw_errno("stat " + path.string());
  }
  return static_cast<uint64_t>(st.st_size);
}

std::vector<std::string> LocalObjectStore::list(const std::string& prefix) {
  const size_t slash = prefix.rfind('/');
  const std::string dir_part = slash == std::string::npos ? "" : prefix.substr(0, slash + 1);
  const std::string file_prefix = prefix.substr(dir_part.size());
  const fs::path dir = root_ / dir_part;
  std::vector<std::string> out;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec == std::errc::no_such_file_or_directory) return out;
  if (ec) throw StoreError(StoreError::Kind::kIO, "list " + dir.string() + ": " + ec.message());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    const std::string file = it->path().filename().string();
    if (file.compare(0, file_prefix.size(), file_prefix) != 0 || is_tmp(file)) continue;
    if (!it->is_regular_file(ec)) continue;
    out.push_back(dir_part + file);
  }
  if (ec) throw StoreError(StoreError::Kind::kIO, "list " + dir.string() + ": " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

void LocalObjectStore::remove(const std::string& name) {
  const fs::path path = path_of(name);
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return;
    throw_errno("remove " + path.string());
  }
  fsync_dir(path.parent_path());
}

void LocalObjectStore::remove_incomplete(const std::string& prefix) {
  const size_t slash = prefix.rfind('/');
  const std::string dir_part = slash == std::string::npos ? "" : prefix.substr(0, slash + 1);
  const std::string file_prefix = prefix.substr(dir_part.size());
  const fs::path dir = root_ / dir_part;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec == std::errc::no_such_file_or_directory) return;
  if (ec) throw StoreError(StoreError::Kind::kIO, "list " + dir.string() + ": " + ec.message());
  bool removed = false;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    const std::string file = it->path().filename().string();
    if (file.compare(0, file_prefix.size(), file_prefix) != 0 || !is_tmp(file)) continue;
    if (::unlink(it->path().c_str()) != 0 && errno != ENOENT) throw_errno("remove " + it->path().string());
    removed = true;
  }
  if (ec) throw StoreError(StoreError::Kind::kIO, "list " + dir.string() + ": " + ec.message());
  if (removed) fsync_dir(dir);
}

bool ObjectReader::read_split_at(uint64_t offset, char* head, size_t head_n, char* buf, size_t n) const {
  // One request for both parts: a backend that reads into one buffer at a time (RADOS) would pay a
  // round trip for each.
  std::string all(head_n + n, '\0');
  if (!read_at(offset, all.data(), all.size())) return false;
  std::memcpy(head, all.data(), head_n);
  std::memcpy(buf, all.data() + head_n, n);
  return true;
}

void ObjectStore::put(const std::string& name, std::string_view bytes) {
  auto sink = create(name);
  sink->append(bytes);
  sink->commit();
}

std::string ObjectStore::read_all(const std::string& name, uint64_t max_bytes) {
  auto reader = open(name);
  const uint64_t n = reader->size();
  if (n > max_bytes)
    throw StoreError(StoreError::Kind::kCorrupt,
                     name + " is " + std::to_string(n) + " bytes, more than the " + std::to_string(max_bytes) + " allowed");
  std::string out(n, '\0');
  if (!reader->read_at(0, out.data(), out.size())) throw StoreError(StoreError::Kind::kCorrupt, name + " shrank while read");
  return out;
}

}  // namespace rbdvault::store
