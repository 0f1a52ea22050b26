// Issue 19: bad input and odd states get one clear error, never a wrapped number, a merged log line
// or a misleading message. No cluster needed.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "agent/batch_config.h"
#include "agent/numbers.h"
#include "store/error.h"
#include "store/oplog.h"
#include "store_fixture.h"

namespace rbdvault {
namespace {

namespace fs = std::filesystem;

fs::path scratch(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("rbdvault-bad-input-" + std::to_string(::getpid()) + "-" + name);
  fs::remove_all(p);
  return p;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(Numbers, WholeNumbersAreStrictAndNeverWrap) {
  using agent::parse_whole;
  EXPECT_EQ(parse_whole("0", agent::kKeepRange), 0);
  EXPECT_EQ(parse_whole("1000000", agent::kKeepRange), 1000000);
  EXPECT_EQ(parse_whole("1024", agent::kReadsInFlightRange), 1024);
  for (const char* bad : {"-1", "", " 3", "3 ", "+3", "1e3", "0x10", "12abc", "3.0", "99999999999999999999",
                          "18446744073709551615", "1000001"})
    EXPECT_THROW(parse_whole(bad, agent::kKeepRange), std::invalid_argument) << bad;
  EXPECT_THROW(parse_whole("0", agent::kReadsInFlightRange), std::invalid_argument);
  EXPECT_THROW(parse_whole("1025", agent::kReadsInFlightRange), std::invalid_argument);
  EXPECT_THROW(parse_whole("100000", agent::kHashThreadsRange), std::invalid_argument);
  EXPECT_EQ(error_of([] { parse_whole("-1", agent::kKeepRange); }), "expected a whole number from 0 to 1000000");
}

TEST(Numbers, RealsRejectNanInfinityAndOutOfRange) {
  using agent::parse_real;
  EXPECT_DOUBLE_EQ(parse_real("100", agent::kSampleRange), 100);
  EXPECT_DOUBLE_EQ(parse_real("0.01", agent::kSampleRange), 0.01);
  EXPECT_DOUBLE_EQ(parse_real("2.5", agent::kSampleRange), 2.5);
  EXPECT_DOUBLE_EQ(parse_real("0", agent::kMaxUnusedRange), 0);
  for (const char* bad : {"-5", "0", "1e-300", "1e-400", "0.001", "100.5", "500", "nan", "NaN", "inf", "-inf", "",
                          "5%", " 5", "5 "})
    EXPECT_THROW(parse_real(bad, agent::kSampleRange), std::invalid_argument) << bad;
  for (const char* bad : {"-1", "150", "nan"})
    EXPECT_THROW(parse_real(bad, agent::kMaxUnusedRange), std::invalid_argument) << bad;
  EXPECT_EQ(error_of([] { parse_real("-5", agent::kSampleRange); }), "expected a number from 0.01 to 100");
  // strtod's other syntaxes are not numbers to an operator (0x10 was taken as 16).
  for (const char* bad : {"0x10", "1e1", "+5", ".5", "5.", "1.2.3", "0X1p3"})
    EXPECT_THROW(parse_real(bad, agent::kMaxUnusedRange), std::invalid_argument) << bad;
}

// A size is a plain decimal with a unit; one that rounds to 0 would mean "unlimited" or "none".
TEST(Numbers, SizesArePlainDecimalsOfAtLeastOneByte) {
  EXPECT_EQ(agent::parse_bytes("1.5K"), 1536u);
  EXPECT_EQ(agent::parse_bytes("0"), 0u);
  EXPECT_EQ(agent::parse_bytes("64KiB"), 64u << 10);
  EXPECT_EQ(agent::parse_bytes(" 2G "), 2ull << 30);
  for (const char* bad : {"0x100000", "0x10K", "1e3", "-1", "+1K", "0.5", "0.0001K", "inf", "nan", "K", ".5M", ""})
    EXPECT_THROW(agent::parse_bytes(bad), std::invalid_argument) << bad;
  EXPECT_THROW(agent::parse_bandwidth("0.5"), std::invalid_argument);
  EXPECT_THROW(agent::parse_bytes(std::string(400, '9')), std::invalid_argument);  // not out_of_range (exit 70)
  for (const char* bad : {"+5m", "-0", "+5"})
    EXPECT_THROW(agent::parse_duration(bad), std::invalid_argument) << bad;
}

TEST(Numbers, DurationsAndSizesRefuseOverflow) {
  EXPECT_EQ(agent::parse_duration_in("15", agent::kConnectTimeoutRange), 15);
  EXPECT_EQ(agent::parse_duration_in("1h", agent::kConnectTimeoutRange), 3600);
  for (const char* bad : {"0", "-1", "2h", "soon", "99999999999999999999", "999999999999999999d"})
    EXPECT_THROW(agent::parse_duration_in(bad, agent::kConnectTimeoutRange), std::invalid_argument) << bad;
  // Without the overflow check n * 86400 wrapped to a small or negative number of seconds.
  EXPECT_THROW(agent::parse_duration("999999999999999999d"), std::invalid_argument);
  EXPECT_THROW(agent::parse_bytes("99999999999999999999"), std::invalid_argument);
  EXPECT_THROW(agent::parse_bytes("16E"), std::invalid_argument);
  EXPECT_EQ(agent::parse_bytes("4M"), 4u << 20);
  EXPECT_EQ(agent::parse_bandwidth("0"), 0u);
  EXPECT_EQ(agent::parse_bandwidth("2M"), 2u << 20);
  EXPECT_THROW(agent::parse_bandwidth("1"), std::invalid_argument);
  EXPECT_THROW(agent::parse_bandwidth("99999999999999999999"), std::invalid_argument);
  EXPECT_EQ(agent::duration_text(86400), "1d");
  EXPECT_EQ(agent::duration_text(3600), "1h");
  EXPECT_EQ(agent::duration_text(90), "90s");
}

// Every numeric key of the batch config refuses a value outside its range, naming file and line.
TEST(BatchConfigRanges, OutOfRangeValuesAreRefusedWithTheirLine) {
  const std::string head = "[store]\npath = /srv/x\n[job.j]\npool = rbd\n";
  struct Case {
    const char* section;
    const char* line;
  };
  const Case cases[] = {
      {"defaults", "keep-last = -1"},          {"defaults", "keep-daily = 1000001"},
      {"defaults", "full-every = 4294967296"}, {"defaults", "full-every = -3"},
      {"defaults", "reads-in-flight = 0"},     {"defaults", "reads-in-flight = 1025"},
      {"defaults", "retries = -1"},            {"defaults", "retries = 101"},
      {"defaults", "jitter = 2d"},             {"defaults", "retry-delay = 99999999999999999999"},
      {"limits", "images-in-parallel = 0"},    {"limits", "images-in-parallel = 1000"},
      {"limits", "host-slots = -1"},           {"limits", "read-bandwidth = 99999999999999999999"},
      {"limits", "write-bandwidth = 1"},       {"maintenance", "gc-max-unused = 150"},
      {"maintenance", "gc-max-unused = -1"},   {"maintenance", "gc-max-unused = nan"},
      {"ceph", "connect-timeout = 0"},         {"ceph", "op-timeout = 2d"},
      {"image.rbd/x", "keep-last = -1"},       {"defaults", "schedule = every 999999999999999999d"},
  };
  for (const Case& c : cases) {
    const std::string text = head + "[" + c.section + "]\n" + c.line + "\n";
    const std::string err = error_of([&] { agent::parse_batch_config(text, "t.conf"); });
    EXPECT_NE(err.find("t.conf:6: "), std::string::npos) << c.line << ": " << err;
    EXPECT_EQ(err.find('\n'), std::string::npos) << err;
  }
  // The edges are accepted.
  const std::string ok = head +
                         "[defaults]\nkeep-last = 1000000\nfull-every = 0\nreads-in-flight = 1024\nretries = 0\n"
                         "[limits]\nimages-in-parallel = 256\nread-bandwidth = 0\nwrite-bandwidth = 64K\n"
                         "[maintenance]\ngc-max-unused = 0\n[ceph]\nconnect-timeout = 1h\nop-timeout = 0\n";
  EXPECT_NO_THROW(agent::parse_batch_config(ok, "t.conf"));
}

// The config's comments: a '#' at a line's start or after a blank ends the line; one inside a value
// stays. An inline comment once became part of the include glob, which then selected no image.
TEST(BatchConfigComments, ACommentAfterAValueIsNotPartOfIt) {
  const std::string text =
      "# nightly\n[store]\npath = /srv/x   # the store\n[job.j]\npool = rbd\t# the pool\n"
      "include = cp-*   # all cp images\nexclude = a#b\n[defaults]\npre-snapshot = /x/notify \"nightly #3\" # why\n";
  const agent::BatchConfig c = agent::parse_batch_config(text, "t.conf");
  ASSERT_EQ(c.jobs.size(), 1u);
  EXPECT_EQ(c.jobs[0].pool, "rbd");
  EXPECT_EQ(c.jobs[0].include, std::vector<std::string>{"cp-*"});
  EXPECT_EQ(c.jobs[0].exclude, std::vector<std::string>{"a#b"});
  EXPECT_EQ(c.jobs[0].settings.hooks.pre, "/x/notify \"nightly #3\"");
}

// A torn last line (a writer killed mid-line) must not swallow the next operation's start line.
TEST(OpLogTorn, AppendStartsOnAFreshLineAndTheTornLineIsCounted) {
  const fs::path dir = scratch("oplog");
  fs::create_directories(dir);
  store::OpLog log(dir);
  log.end(log.begin("backup", "rbd/a", "rbdvault backup rbd/a"), true, "", 1);
  {
    std::ofstream f(dir / "oplog", std::ios::app);
    f << "torn";  // what `printf 'torn' >> oplog` leaves
  }
  const std::string id = log.begin("backup", "rbd/b", "rbdvault backup rbd/b");
  log.end(id, false, "boom", 2);
  size_t skipped = 99;
  const auto ops = log.read(&skipped);
  ASSERT_EQ(ops.size(), 2u);
  EXPECT_EQ(ops[1].image, "rbd/b");
  EXPECT_EQ(ops[1].result, "failed");
  EXPECT_EQ(ops[1].error, "boom");
  EXPECT_EQ(skipped, 1u);
  // On disk: the fragment stays alone on its line.
  std::ifstream in(dir / "oplog");
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    if (++n == 3) {
      EXPECT_EQ(line, "torn");
    }
  }
  EXPECT_EQ(n, 5);
  // A start line torn mid-way (no args key) is skipped too, and its end line with it.
  {
    std::ofstream f(dir / "oplog", std::ios::app);
    f << "start id=1-2-3-4 time=5 op=backup image=rbd/c";
  }
  log.end(log.begin("gc", "", "rbdvault gc"), true, "", 0);
  EXPECT_EQ(log.read(&skipped).size(), 3u);
  EXPECT_EQ(skipped, 2u);
  fs::remove_all(dir);
}

TEST(StoreDirectory, AFileIsNamedAsAFile) {
  const fs::path file = scratch("file");
  std::ofstream(file) << "x";
  const std::string open_err = error_of([&] { store::Store::open(file, store::OpenMode::kReadOnly); });
  EXPECT_EQ(open_err, file.string() + " is a file, not a store directory");
  const std::string init_err = error_of([&] { store::Store::init(file, store::StoreOptions{64 << 10}); });
  EXPECT_EQ(init_err, file.string() + " is a file, not a store directory");
  fs::remove(file);
  // A missing directory still says so.
  EXPECT_NE(error_of([&] { store::Store::open(file, store::OpenMode::kReadOnly); }).find("does not exist"),
            std::string::npos);
}

// Bytes the files under `dir` occupy on disk (allocated blocks, so fallocate counts).
uint64_t allocated_bytes(const fs::path& dir) {
  uint64_t total = 0;
  for (auto& e : fs::recursive_directory_iterator(dir)) {
    struct stat st {};
    if (e.is_regular_file() && ::stat(e.path().c_str(), &st) == 0) total += static_cast<uint64_t>(st.st_blocks) * 512;
  }
  return total;
}

using store::testing::StoreTest;

// RocksDB preallocated ~35 MiB of WAL and 4 MiB of MANIFEST: a 16 MiB backup did not fit on a
// 48 MiB file system. The index of a small store must stay small on disk.
TEST_F(StoreTest, IndexOfASmallStoreStaysSmallOnDisk) {
  std::string image(16 << 20, '\0');
  std::mt19937_64 rng(19);
  for (auto& c : image) c = static_cast<char>(rng());
  put("small", image);
  store_.reset();  // closes the index; the WAL stays
  store_ = store::Store::open(dir_, store::OpenMode::kWriter, "unit test");
  put("small", image);
  const uint64_t index = allocated_bytes(dir_ / "index");
  EXPECT_LT(index, 4u << 20) << "index occupies " << index << " bytes";
}

// A failed revision's own error is the one line an operator sees; the rollback is a debug detail.
TEST_F(StoreTest, OwnFailedRevisionRollsBackQuietly) {
  std::ostringstream captured;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(captured);
  sink->set_level(spdlog::level::info);
  spdlog::default_logger()->sinks().push_back(sink);
  {
    auto w = store_->begin_revision(store::RevisionStart{"rbd", "fails", 1 << 20, true});
    w->put_block(0, std::string(64 << 10, 'x'));
  }  // destroyed uncommitted, as when a backup throws
  spdlog::default_logger()->sinks().pop_back();
  EXPECT_EQ(captured.str().find("rolled back"), std::string::npos) << captured.str();
  EXPECT_TRUE(store_->revisions().empty());
}

}  // namespace
}  // namespace rbdvault
