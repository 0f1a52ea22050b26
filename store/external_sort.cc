#include "store/external_sort.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>

#include "store/error.h"

namespace rbdvault::store {
namespace {

constexpr size_t kFileBuffer = 64 << 10;

}  // namespace

size_t sort_budget_bytes() {
  if (const char* v = std::getenv("RBDVAULT_SORT_BUDGET")) {
    char* end = nullptr;
    const unsigned long long n = std::strtoull(v, &end, 10);
    if (end != v && *end == '\0' && n > 0) return static_cast<size_t>(n);
  }
  return 16 << 20;
}

SpillFile::SpillFile() {
  std::error_code ec;
  std::filesystem::path dir = std::filesystem::temp_directory_path(ec);
  if (ec) dir = "/tmp";
  // O_TMPFILE: no name, so nothing is left behind whatever happens to the process.
  fd_ = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    std::string tmpl = (dir / "rbdvault-sort-XXXXXX").string();
    fd_ = ::mkostemp(tmpl.data(), O_CLOEXEC);
    if (fd_ < 0) throw_errno("create a temporary sort file in " + dir.string());
    ::unlink(tmpl.c_str());
  }
  buf_.reserve(kFileBuffer);
}

SpillFile::~SpillFile() {
  if (fd_ >= 0) ::close(fd_);
}

void SpillFile::flush() {
  size_t done = 0;
  while (done < buf_.size()) {
    ssize_t r = ::write(fd_, buf_.data() + done, buf_.size() - done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) throw_errno("write a temporary sort file");
    done += static_cast<size_t>(r);
  }
  buf_.clear();
}

void SpillFile::write(const void* data, size_t n) {
  if (buf_.size() + n > kFileBuffer) flush();
  buf_.append(static_cast<const char*>(data), n);
}

void SpillFile::end_writing() {
  flush();
  pos_ = 0;
  file_off_ = 0;
}

bool SpillFile::read(void* data, size_t n) {
  char* out = static_cast<char*>(data);
  while (n > 0) {
    if (pos_ == buf_.size()) {
      buf_.resize(kFileBuffer);
      ssize_t r = ::pread(fd_, buf_.data(), buf_.size(), static_cast<off_t>(file_off_));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) throw_errno("read a temporary sort file");
      buf_.resize(static_cast<size_t>(r));
      pos_ = 0;
      file_off_ += static_cast<uint64_t>(r);
      if (r == 0) return false;
    }
    const size_t take = std::min(n, buf_.size() - pos_);
    std::memcpy(out, buf_.data() + pos_, take);
    pos_ += take;
    out += take;
    n -= take;
  }
  return true;
}

}  // namespace rbdvault::store
