// One sequence of fault points shared by the index's file system (FaultFs) and the data area's
// ObjectStore (FaultObjectStore): every write-side operation of either is one point, numbered from 1
// in the order it happens. A plan fails one point (EIO or ENOSPC, the rest goes on), or "crashes"
// there: that operation and every later one, of either kind and reads too, fail until the test
// drops what was not durable (FaultFs::drop_unsynced) and reopens the store without faults.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace rbdvault::faults {

enum class FaultMode { kCount, kEio, kNoSpace, kCrash };
const char* mode_name(FaultMode mode);

class FaultPlan {
 public:
  enum class Verdict { kGo, kEio, kNoSpace, kDead };

  // Starts counting from point 1; with kEio/kNoSpace/kCrash, point `at` is the one hit.
  void arm(FaultMode mode, uint64_t at);
  // Stops counting (a crash stays in force: a dead process does no more I/O).
  void disarm();
  // One write-side operation, described by `what` (kept in the trace while armed).
  Verdict step(const std::string& what);
  // A crash right now, after the last point (the operation returned): only what is durable stays.
  void crash_now();
  // Reads are not points, but nothing is read after a crash.
  bool dead() const;

  uint64_t points() const;
  std::vector<std::string> trace() const;

  // Faults on the read side, numbered on their own (FaultObjectStore's open, size, list, and each
  // reader's read_at; read_all is open + read_at). kEio fails read point `at` (kIO); kFlip numbers
  // only the read_at calls and flips one bit of what read_at number `at` returns (a corrupt read).
  enum class ReadMode { kOff, kCount, kEio, kFlip };
  enum class ReadVerdict { kGo, kEio, kFlip };
  void arm_reads(ReadMode mode, uint64_t at);
  ReadVerdict read_step(const std::string& what, bool is_read_at);
  uint64_t read_points() const;
  // The read points hit so far, for the test's message ("read_at data/00000001.pack").
  std::vector<std::string> read_trace() const;

 private:
  mutable std::mutex mu_;
  ReadMode read_mode_ = ReadMode::kOff;
  uint64_t read_at_ = 0, read_count_ = 0;
  std::vector<std::string> read_trace_;
  bool armed_ = false, dead_ = false;
  FaultMode mode_ = FaultMode::kCount;
  uint64_t at_ = 0, count_ = 0;
  std::vector<std::string> trace_;
};

}  // namespace rbdvault::faults
