#include "store/oplog.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ext/stdio_filebuf.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <vector>

#include "store/error.h"
#include "store/format.h"

namespace rbdvault::store {
namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Values are percent-encoded so a line is space-separated key=value pairs with no surprises.
std::string enc(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c <= 0x20 || c == '%' || c == '=' || c >= 0x7f) {
      char buf[4];
      std::snprintf(buf, sizeof(buf), "%%%02X", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// '%' and two hex digits give one byte; anything else (a torn or foreign escape) is kept as it is.
// std::stoi threw on "%zz" (out of read()), and took "%-1" or "% 1" as numbers.
std::string dec(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    const int hi = s[i] == '%' && i + 2 < s.size() ? hex_digit(s[i + 1]) : -1;
    const int lo = hi >= 0 ? hex_digit(s[i + 2]) : -1;
    if (lo >= 0) {
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Reads one line without its '\n' into `line`; false at the end of input. A line longer than
// kMaxOpLogLine is consumed but returned as `too_long` with `line` empty.
bool read_line(std::istream& in, std::string& line, bool& too_long) {
  line.clear();
  too_long = false;
  std::streambuf* sb = in.rdbuf();
  bool any = false;
  for (int c = sb->sbumpc(); c != std::char_traits<char>::eof(); c = sb->sbumpc()) {
    any = true;
    if (c == '\n') return true;
    if (too_long) continue;
    if (line.size() >= kMaxOpLogLine) {
      too_long = true;
      line.clear();
      line.shrink_to_fit();
      continue;
    }
    line.push_back(static_cast<char>(c));
  }
  return any;
}

// getpwuid_r: a batch run logs from several threads at once, and getpwuid's static result is
// overwritten under a concurrent caller (found by TSan in OpLog.ConcurrentOperationsGetDistinctIds).
std::string user_name() {
  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buf(16384);
  if (::getpwuid_r(::getuid(), &pw, buf.data(), buf.size(), &found) == 0 && found) return pw.pw_name;
  return std::to_string(::getuid());
}

std::string host_name() {
  char buf[256] = {};
  ::gethostname(buf, sizeof(buf) - 1);
  return buf;
}

}  // namespace

namespace {

// Whether the file ends in the middle of a line: a writer killed mid-write (or out of space) leaves
// a torn last line, and the next line appended must not be glued onto it.
bool ends_mid_line(int fd) {
  const off_t size = ::lseek(fd, 0, SEEK_END);
  if (size <= 0) return false;
  char last = '\n';
  return ::pread(fd, &last, 1, size - 1) == 1 && last != '\n';
}

}  // namespace

namespace {

OpLogLimits limits_from_marker(const std::filesystem::path& dir) {
  OpLogLimits limits;
  std::ifstream in(dir / "rbdvault.store", std::ios::binary);
  std::string text(kMaxMarkerBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  try {
    const StoreMarker m = parse_store_marker(text, "marker");
    if (m.oplog_segment_bytes) limits.segment_bytes = *m.oplog_segment_bytes;
    if (m.oplog_keep_segments) limits.keep_segments = *m.oplog_keep_segments;
  } catch (const StoreError&) {
    // Not a store, or a bad marker: opening the store reports it; the log keeps the defaults.
  }
  return limits;
}

// The old segments DIR/oplog.N, by ascending N.
std::vector<std::pair<uint64_t, std::filesystem::path>> numbered_segments(const std::filesystem::path& dir) {
  std::vector<std::pair<uint64_t, std::filesystem::path>> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() < 7 || name.size() > 26 || name.compare(0, 6, "oplog.") != 0) continue;
    const std::string n = name.substr(6);
    if (n.find_first_not_of("0123456789") != std::string::npos || n[0] == '0') continue;
    out.emplace_back(std::stoull(n), e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

OpLog::OpLog(const std::filesystem::path& store_dir) : OpLog(store_dir, limits_from_marker(store_dir)) {}

OpLog::OpLog(const std::filesystem::path& store_dir, OpLogLimits limits)
    : dir_(store_dir), path_(store_dir / "oplog"), limits_(limits) {}

std::vector<std::filesystem::path> OpLog::old_segments() const {
  std::vector<std::filesystem::path> out;
  for (auto& [n, path] : numbered_segments(dir_)) out.push_back(path);
  return out;
}

// Renames a full DIR/oplog to the next DIR/oplog.N and drops the oldest segments beyond the limit.
// Best effort: the log works without it (only grows), so a failure here never fails a command.
// Processes rotate one at a time under an OFD lock on DIR/oplog.lock; one that finds it taken
// leaves the rotation to its holder. Appending needs no lock: a line written to a file just renamed
// lands in that segment, and read() pairs lines across segments.
void OpLog::rotate() {
  const std::filesystem::path lock_path = dir_ / "oplog.lock";
  const int lock = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock < 0) return;
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  struct stat st {};
  if (::fcntl(lock, F_OFD_SETLK, &fl) == 0 && ::stat(path_.c_str(), &st) == 0 &&
      static_cast<uint64_t>(st.st_size) >= limits_.segment_bytes) {  // not rotated meanwhile
    auto segments = numbered_segments(dir_);
    const uint64_t next = segments.empty() ? 1 : segments.back().first + 1;
    const std::filesystem::path target = dir_ / ("oplog." + std::to_string(next));
    if (::renameat2(AT_FDCWD, path_.c_str(), AT_FDCWD, target.c_str(), RENAME_NOREPLACE) == 0) {
      segments.emplace_back(next, target);
      for (size_t i = 0; i + limits_.keep_segments < segments.size(); ++i) ::unlink(segments[i].second.c_str());
    }
  }
  ::close(lock);  // releases the lock
}

void OpLog::append(const std::string& line) {
  int fd = ::open(path_.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw_errno("open operation log " + path_.string());
  // A leading newline ends a torn line; if another writer ends it first, read() skips the empty line.
  const std::string l = (ends_mid_line(fd) ? "\n" : "") + line + "\n";
  // One write(2) per line: O_APPEND keeps concurrent writers' lines whole.
  ssize_t w = ::write(fd, l.data(), l.size());
  int saved = errno;
  if (w == static_cast<ssize_t>(l.size()) && ::fdatasync(fd) != 0) {
    saved = errno;
    w = -1;
  }
  struct stat st {};
  const bool full = ::fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) >= limits_.segment_bytes;
  ::close(fd);
  if (w != static_cast<ssize_t>(l.size())) {
    errno = saved;
    throw_errno("append to operation log " + path_.string());
  }
  if (full) rotate();
}

std::string OpLog::begin(const std::string& op, const std::string& image, const std::string& args) {
  const int64_t start = now_ms();
  // Threads of one process (a batch run) start operations in the same millisecond: the thread id
  // and this log object's sequence number keep ids unique.
  const std::string id = std::to_string(start) + "-" + std::to_string(::getpid()) + "-" + std::to_string(::gettid()) +
                         "-" + std::to_string(seq_++);
  append("start id=" + id + " time=" + std::to_string(start) + " op=" + enc(op) + " image=" + enc(image) + " user=" +
         enc(user_name()) + " host=" + enc(host_name()) + " pid=" + std::to_string(::getpid()) + " args=" + enc(args));
  return id;
}

void OpLog::end(const std::string& id, bool ok, const std::string& error, uint64_t bytes) {
  end(id, ok ? "ok" : "failed", error, bytes);
}

void OpLog::end(const std::string& id, const char* result, const std::string& error, uint64_t bytes) {
  append("end id=" + id + " time=" + std::to_string(now_ms()) + " result=" + result +
         " bytes=" + std::to_string(bytes) + " error=" + enc(error));
}

namespace {

// Pairs start and end lines by id over one or more files (the segments, oldest first).
class OpLogParser {
 public:
  void feed(std::istream& in);
  std::vector<OpRecord> finish(size_t* skipped) {
    if (skipped) *skipped = bad_;
    return std::move(out_);
  }

 private:
  std::vector<OpRecord> out_;
  std::map<std::string, size_t> by_id_;
  size_t bad_ = 0;
};

}  // namespace

std::vector<OpRecord> OpLog::read(size_t* skipped) const {
  // The current file is opened first: if a rotation renames it while the old segments are listed,
  // the listing shows it under its new name, and it is read once, last (same inode).
  const int current = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  struct stat cur {};
  if (current >= 0 && ::fstat(current, &cur) != 0) cur = {};
  OpLogParser parser;
  for (auto& [n, path] : numbered_segments(dir_)) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;  // dropped by a rotation meanwhile
    struct stat st {};
    if (current >= 0 && ::fstat(fd, &st) == 0 && st.st_dev == cur.st_dev && st.st_ino == cur.st_ino) {
      ::close(fd);
      continue;
    }
    __gnu_cxx::stdio_filebuf<char> buf(fd, std::ios::in);  // closes fd
    std::istream in(&buf);
    parser.feed(in);
  }
  if (current >= 0) {
    __gnu_cxx::stdio_filebuf<char> buf(current, std::ios::in);
    std::istream in(&buf);
    parser.feed(in);
  }
  return parser.finish(skipped);
}

std::vector<OpRecord> parse_oplog(std::istream& in, size_t* skipped) {
  OpLogParser parser;
  parser.feed(in);
  return parser.finish(skipped);
}

void OpLogParser::feed(std::istream& in) {
  std::string line;
  bool too_long = false;
  while (in.rdbuf() && read_line(in, line, too_long)) {
    if (too_long) {
      ++bad_;
      continue;
    }
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::istringstream words(line);
    std::string kind, word;
    words >> kind;
    std::map<std::string, std::string> kv;
    while (words >> word) {
      auto eq = word.find('=');
      if (eq != std::string::npos) kv[word.substr(0, eq)] = dec(word.substr(eq + 1));
    }
    auto num = [&](const char* k) -> int64_t {
      try {
        return kv.count(k) ? std::stoll(kv[k]) : 0;
      } catch (const std::exception&) {
        return 0;
      }
    };
    // A line torn by a crash lacks its later keys (or its kind); it is skipped, never guessed at.
    const bool whole = kind == "start"  ? kv.count("id") && kv.count("time") && kv.count("op") && kv.count("args")
                       : kind == "end" ? kv.count("id") && kv.count("time") && kv.count("result") && kv.count("error")
                                       : false;
    if (!whole) {
      ++bad_;
      continue;
    }
    if (kind == "start") {
      OpRecord r;
      r.id = kv["id"];
      r.op = kv["op"];
      r.image = kv["image"];
      r.args = kv["args"];
      r.user = kv["user"];
      r.host = kv["host"];
      r.pid = num("pid");
      r.start_ms = num("time");
      by_id_[r.id] = out_.size();
      out_.push_back(std::move(r));
    } else {
      auto it = by_id_.find(kv["id"]);
      if (it == by_id_.end()) continue;  // its start line was torn (and counted)
      OpRecord& r = out_[it->second];
      r.end_ms = num("time");
      r.result = kv["result"];
      r.error = kv["error"];
      r.bytes = static_cast<uint64_t>(num("bytes"));
    }
  }
}

}  // namespace rbdvault::store
