#include "store/oplog.h"

#include <fcntl.h>
#include <pwd.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <vector>

#include "store/error.h"

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
  ::close(fd);
  if (w != static_cast<ssize_t>(l.size())) {
    errno = saved;
    throw_errno("append to operation log " + path_.string());
  }
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

std::vector<OpRecord> OpLog::read(size_t* skipped) const {
  std::ifstream in(path_);
  return parse_oplog(in, skipped);
}

std::vector<OpRecord> parse_oplog(std::istream& in, size_t* skipped) {
  std::vector<OpRecord> out;
  std::map<std::string, size_t> by_id;
  size_t bad = 0;
  std::string line;
  bool too_long = false;
  while (in.rdbuf() && read_line(in, line, too_long)) {
    if (too_long) {
      ++bad;
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
      ++bad;
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
      by_id[r.id] = out.size();
      out.push_back(std::move(r));
    } else {
      auto it = by_id.find(kv["id"]);
      if (it == by_id.end()) continue;  // its start line was torn (and counted)
      OpRecord& r = out[it->second];
      r.end_ms = num("time");
      r.result = kv["result"];
      r.error = kv["error"];
      r.bytes = static_cast<uint64_t>(num("bytes"));
    }
  }
  if (skipped) *skipped = bad;
  return out;
}

}  // namespace rbdvault::store
