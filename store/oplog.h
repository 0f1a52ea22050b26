// The operation log: DIR/oplog, one line per operation start and one per end, appended with
// O_APPEND and fdatasync so it survives crashes and several processes can write it at once (readers
// and the writer log side by side). See docs/format.md for the line format.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <istream>
#include <string>
#include <vector>

namespace rbdvault::store {

struct OpRecord {
  std::string id;     // unique per operation: <start unix ms>-<pid>-<thread id>-<sequence>
  std::string op;     // backup, restore, forget, expire, gc, scrub, verify, repair, ...
  std::string image;  // pool/name or empty
  std::string args;   // the command line
  std::string user, host;
  int64_t pid = 0;
  int64_t start_ms = 0;
  int64_t end_ms = 0;  // 0: no end line (still running, or the process died)
  std::string result;  // ok, failed, cancelled; empty when no end line
  std::string error;
  uint64_t bytes = 0;  // bytes read, written or freed, whatever the operation moves
};

// A line longer than this is not one this code wrote (a command line is at most ARG_MAX, 2 MiB,
// percent-encoded): it is skipped as torn without being held in memory.
inline constexpr size_t kMaxOpLogLine = 8u << 20;

// Parses operation log text (docs/format.md §13); what OpLog::read does with the file.
[[nodiscard]] std::vector<OpRecord> parse_oplog(std::istream& in, size_t* skipped = nullptr);

// Rotation: once DIR/oplog reaches segment_bytes it is renamed to DIR/oplog.N (N one more than the
// newest old segment) and a new DIR/oplog starts; only the newest keep_segments old segments are
// kept. So the log, and the time read() takes, is bounded by (keep_segments + 1) x segment_bytes
// whatever the store's age.
struct OpLogLimits {
  uint64_t segment_bytes = 16ull << 20;
  uint32_t keep_segments = 3;
};

class OpLog {
 public:
  // Limits from the store marker's optional oplog_segment_bytes and oplog_keep_segments lines
  // (docs/format.md §3); the defaults if it has none or cannot be read.
  explicit OpLog(const std::filesystem::path& store_dir);
  OpLog(const std::filesystem::path& store_dir, OpLogLimits limits);

  // Appends the start line; returns the operation id. Throws StoreError on I/O failure.
  std::string begin(const std::string& op, const std::string& image, const std::string& args);
  void end(const std::string& id, bool ok, const std::string& error, uint64_t bytes);
  // result: "ok", "failed" or "cancelled" (stopped on request; neither a success nor a failure).
  void end(const std::string& id, const char* result, const std::string& error, uint64_t bytes);

  // All operations of the kept segments, oldest first; start and end lines paired by id (also
  // across segments). Lines torn by a crash are skipped; `skipped`, if given, receives their number.
  [[nodiscard]] std::vector<OpRecord> read(size_t* skipped = nullptr) const;

  // The old segments kept now, oldest first (for tests and tools).
  [[nodiscard]] std::vector<std::filesystem::path> old_segments() const;

 private:
  void append(const std::string& line);
  void rotate();
  std::filesystem::path dir_, path_;
  OpLogLimits limits_;
  std::atomic<uint64_t> seq_{0};
};

}  // namespace rbdvault::store
