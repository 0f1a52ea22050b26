// The store directory's marker file (docs/format.md §3): reading it, replacing it durably, and
// creating a store (`init`), whose last step is the marker.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <fstream>
#include <random>
#include <sstream>
#include <vector>

#include "store/index.h"
#include "store/posix_file.h"
#include "store/store.h"
#include "store/store_internal.h"

namespace fs = std::filesystem;

namespace rbdvault::store {
namespace {

constexpr const char* kMarkerFile = kMarkerFileName;
constexpr const char* kMarkerMagic = "rbdvault-store";

}  // namespace

void write_file_durably(const fs::path& path, const std::string& content) {
  fs::path tmp = path;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw_errno("create " + tmp.string());
  if (::write(fd, content.data(), content.size()) != static_cast<ssize_t>(content.size()) || ::fsync(fd) != 0) {
    int saved = errno;
    ::close(fd);
    errno = saved;
    throw_errno("write " + tmp.string());
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) throw_errno("rename " + tmp.string());
  fsync_dir(path.parent_path());
}

// "does not exist" or "non-empty directory" would send the operator looking in the wrong place
// when --store names a file (or a device, a socket...).
void require_directory_or_absent(const fs::path& dir) {
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (ec || !fs::exists(st) || fs::is_directory(st)) return;
  const char* what = fs::is_regular_file(st) ? "a file" : "a special file";
  throw StoreError(StoreError::Kind::kInvalid, dir.string() + " is " + what + ", not a store directory");
}

namespace {

std::string random_id() {
  std::random_device rd;
  std::string s;
  static const char* digits = "0123456789abcdef";
  for (int i = 0; i < 16; ++i) s.push_back(digits[rd() & 15]);
  return s;
}

// The marker's text, read no further than kMaxMarkerBytes + 1 so a huge file is refused (by
// parse_store_marker) without being loaded.
std::string read_marker(const fs::path& dir) {
  std::ifstream in(dir / kMarkerFile, std::ios::binary);
  if (!in)
    throw StoreError(StoreError::Kind::kInvalid, dir.string() + " is not an rbdvault store (no " + kMarkerFile +
                                                     "; create one with `rbdvault init`)");
  std::string text(kMaxMarkerBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) throw StoreError(StoreError::Kind::kIO, "read " + (dir / kMarkerFile).string());
  text.resize(static_cast<size_t>(in.gcount()));
  return text;
}

}  // namespace

StoreError format_1_error(const fs::path& dir) {
  return StoreError(StoreError::Kind::kInvalid, "store " + dir.string() +
                                                    " is format 1 (no revision manifests); upgrade it in place with "
                                                    "`rbdvault upgrade --store " +
                                                    dir.string() + "`");
}
std::string marker_with_current_version(const std::string& text) {
  const size_t start = text.find("rbdvault-store");
  const size_t nl = text.find('\n', start);
  if (start == std::string::npos || nl == std::string::npos)
    throw StoreError(StoreError::Kind::kCorrupt, "the store marker has no first line to rewrite");
  return text.substr(0, start) + "rbdvault-store " + std::to_string(kFormatVersion) + text.substr(nl);
}
void write_marker_durably(const fs::path& dir, const std::string& text) { write_file_durably(dir / kMarkerFile, text); }
std::string read_marker_text(const fs::path& dir) { return read_marker(dir); }

void Store::init(const fs::path& dir, const StoreOptions& options) {
  const uint32_t bs = options.block_size;
  if (bs < (64u << 10) || bs > (4u << 20) || (bs & (bs - 1)) != 0)
    throw StoreError(StoreError::Kind::kInvalid,
                     "block size " + std::to_string(bs) + " is not a power of two from 64 KiB to 4 MiB");
  std::error_code ec;
  require_directory_or_absent(dir);
  if (fs::exists(dir / kMarkerFile))
    throw StoreError(StoreError::Kind::kExists, "a store already exists in " + dir.string());
  if (fs::exists(dir) && !fs::is_empty(dir, ec))
    throw StoreError(StoreError::Kind::kExists, "refusing to create a store in non-empty directory " + dir.string());
  fs::create_directories(dir / "data", ec);
  if (ec) throw StoreError(StoreError::Kind::kIO, "create " + (dir / "data").string() + ": " + ec.message());

  {
    std::unique_ptr<Index> index = Index::create(dir / "index");
    IndexBatch batch;
    batch.put(counter_key(kCounterNextRevision), encode_u64(1));
    batch.put(counter_key(kCounterNextImage), encode_u64(1));
    batch.put(counter_key(kCounterNextPack), encode_u64(1));
    index->write(batch, Sync::kYes, "initialise index");
    index->close("close index");
  }

  std::ostringstream marker;
  marker << kMarkerMagic << " " << kFormatVersion << "\n"
         << "store_id " << random_id() << "\n"
         << "block_size " << bs << "\n";
  // The marker is written last: a directory without it is not a store, so a crash during init
  // leaves something `init` can be rerun over after removing it.
  write_file_durably(dir / kMarkerFile, marker.str());
  spdlog::info("initialised store {} (block size {} bytes)", dir.string(), bs);
}

bool Store::is_store(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / kMarkerFile, ec);
}

// The marker's text (docs/format.md §3); declared with the other codecs in format.h.
namespace {

std::vector<std::string_view> words_of(std::string_view line) {
  std::vector<std::string_view> words;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i]))) ++i;
    size_t j = i;
    while (j < line.size() && !std::isspace(static_cast<unsigned char>(line[j]))) ++j;
    if (j > i) words.push_back(line.substr(i, j - i));
    i = j;
  }
  return words;
}

// Decimal digits only: from_chars alone would take a leading '-' for signed types, and istream
// parses "-1" into an unsigned as 4294967295.
template <typename T = uint32_t>
std::optional<T> parse_decimal(std::string_view s) {
  T v = 0;
  if (s.empty() || s.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

StoreMarker parse_store_marker(std::string_view text, const std::string& where) {
  auto invalid = [&](const std::string& msg) { return StoreError(StoreError::Kind::kInvalid, where + ": " + msg); };
  auto corrupt = [&](const std::string& msg) { return StoreError(StoreError::Kind::kCorrupt, where + ": " + msg); };
  auto damaged = [&] {
    return corrupt("the store marker is damaged (its first line is not `rbdvault-store VERSION`); the store's "
                   "data is not touched: rewrite the marker as docs/format.md §3 shows, with the store's "
                   "store_id and block_size");
  };
  if (text.size() > kMaxMarkerBytes) throw corrupt("marker file is too large to be a store marker");
  StoreMarker m;
  bool header = false, have_id = false, have_bs = false;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    const std::vector<std::string_view> w = words_of(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (w.empty()) continue;
    if (!header) {
      // The first line: magic word and format version. The file has the marker's name, which only
      // init writes: text that is not a marker is a damaged marker, not someone else's directory.
      if (w.size() < 2 || w[0] != "rbdvault-store") throw damaged();
      auto version = parse_decimal(w[1]);
      if (!version) throw damaged();
      m.version = *version;
      if (m.version < kOldestFormatVersion || m.version > kFormatVersion)
        throw invalid("store format " + std::to_string(m.version) + " is not supported (this rbdvault reads format " +
                      std::to_string(kFormatVersion) + ")");
      header = true;
    } else if (w[0] == "store_id") {
      const bool ok = w.size() >= 2 && w[1].size() == 16 && w[1].find_first_not_of("0123456789abcdef") == std::string_view::npos;
      if (!ok) throw corrupt("store_id is not 16 lowercase hex digits");
      m.store_id = std::string(w[1]);
      have_id = true;
    } else if (w[0] == "block_size") {
      auto bs = w.size() >= 2 ? parse_decimal(w[1]) : std::nullopt;
      if (!bs || !valid_block_size(*bs)) throw corrupt("block_size is not a power of two from 64 KiB to 4 MiB");
      m.block_size = *bs;
      have_bs = true;
    } else if (w[0] == "oplog_segment_bytes") {
      auto n = w.size() >= 2 ? parse_decimal<uint64_t>(w[1]) : std::nullopt;
      if (!n || *n < 4096 || *n > (1ull << 40)) throw corrupt("oplog_segment_bytes is not a number from 4096 to 2^40");
      m.oplog_segment_bytes = *n;
    } else if (w[0] == "oplog_keep_segments") {
      auto n = w.size() >= 2 ? parse_decimal(w[1]) : std::nullopt;
      if (!n || *n > 1000) throw corrupt("oplog_keep_segments is not a number from 0 to 1000");
      m.oplog_keep_segments = static_cast<uint32_t>(*n);
    }  // other keys: the rest of the line is ignored (§3)
  }
  if (!header) throw damaged();  // empty, or blank lines only
  if (!have_id || !have_bs) throw corrupt("marker lacks block_size or store_id");
  return m;
}

}  // namespace rbdvault::store
