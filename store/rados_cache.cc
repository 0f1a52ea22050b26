#include "store/rados_cache.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "store/error.h"
#include "store/format.h"
#include "store/pack_identities.h"
#include "store/store_internal.h"

namespace fs = std::filesystem;

namespace rbdvault::store {
namespace {

constexpr size_t kMaxSmallFile = 4096;

// A small text file of ours, bounded; nullopt if absent.
std::optional<std::string> read_small(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::string text(kMaxSmallFile + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxSmallFile) throw StoreError(StoreError::Kind::kCorrupt, path.string() + " is too large");
  return text;
}

// Written whole through a temporary file and a rename, like the marker.
void write_small(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw StoreError(StoreError::Kind::kIO, "write " + tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw StoreError(StoreError::Kind::kIO, "rename " + tmp.string() + ": " + ec.message());
}

std::string spec_of(const RadosLocation& w) { return std::string(kRadosStoreScheme) + w.pool + (w.ns.empty() ? "" : "/" + w.ns); }

}  // namespace

std::optional<RadosLocation> read_backend_file(const fs::path& dir) {
  const auto text = read_small(dir / kRadosBackendFile);
  if (!text) return std::nullopt;
  RadosLocation w;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    const auto sp = line.find(' ');
    const std::string key = line.substr(0, sp), value = sp == std::string::npos ? "" : line.substr(sp + 1);
    if (key == "pool") w.pool = value;
    else if (key == "namespace") w.ns = value;
    else if (key == "conf") w.conf = value;
    else if (key == "id") w.id = value;
    else if (key == "keyring") w.keyring = value;
    else if (key == "op_timeout") {
      try {
        w.op_timeout_seconds = std::clamp(std::stoi(value), 1, 3600);
      } catch (const std::exception&) {
        throw StoreError(StoreError::Kind::kCorrupt, (dir / kRadosBackendFile).string() + ": bad op_timeout");
      }
    }
  }
  if (w.pool.empty()) throw StoreError(StoreError::Kind::kCorrupt, (dir / kRadosBackendFile).string() + " names no pool");
  return w;
}

void write_backend_file(const fs::path& dir, const RadosLocation& w) {
  const std::string text = "pool " + w.pool + "\nnamespace " + w.ns + "\nconf " + w.conf + "\nid " + w.id +
                           "\nkeyring " + w.keyring +
                           "\nop_timeout " + std::to_string(w.op_timeout_seconds) + "\n";
  if (read_small(dir / kRadosBackendFile) == text) return;
  write_small(dir / kRadosBackendFile, text);
}

namespace {

std::optional<uint64_t> read_number(const fs::path& path) {
  const auto text = read_small(path);
  if (!text) return std::nullopt;
  try {
    return std::stoull(*text);
  } catch (const std::exception&) {
    return std::nullopt;  // a damaged record only costs a rebuild
  }
}

}  // namespace

std::optional<uint64_t> read_cache_epoch(const fs::path& dir) { return read_number(dir / kRadosEpochFile); }

void write_cache_epoch(const fs::path& dir, uint64_t epoch) { write_small(dir / kRadosEpochFile, std::to_string(epoch) + "\n"); }

std::string store_option_text(const fs::path& dir) {
  try {
    if (const auto where = read_backend_file(dir)) return spec_of(*where) + " --index-dir " + dir.string();
  } catch (const StoreError&) {  // a hint never replaces the error it is part of
  }
  return dir.string();
}

std::optional<uint64_t> read_cache_removals(const fs::path& dir) { return read_number(dir / kRadosRemovalsFile); }

void write_cache_removals(const fs::path& dir, uint64_t removals) {
  write_small(dir / kRadosRemovalsFile, std::to_string(removals) + "\n");
}

fs::path default_index_dir(const RadosLocation& w) {
  return fs::path(kDefaultIndexRoot) / ("rados-" + w.pool + (w.ns.empty() ? "" : "@" + w.ns));
}

void init_rados_store(const RadosLocation& where, const fs::path& index_dir, const StoreOptions& options) {
  RadosObjectStore pool(where);
  if (pool.size(kRadosMarkerObject))
    throw StoreError(StoreError::Kind::kExists, "a store already exists in " + spec_of(where));
  Store::init(index_dir, options);
  write_backend_file(index_dir, where);
  write_cache_epoch(index_dir, pool.epoch());
  write_cache_removals(index_dir, pool.removals());
  // The pool's marker is the commit point, created exclusively: of two concurrent inits one wins.
  pool.put(kRadosMarkerObject, read_marker_text(index_dir));
  spdlog::debug("initialised store {} (index in {})", spec_of(where), index_dir.string());
}

namespace {

// Whether two marker texts differ in their format version only (a store moved to a newer format).
bool same_store(const std::string& a, const std::string& b) {
  try {
    return marker_with_current_version(a) == marker_with_current_version(b);
  } catch (const StoreError&) {
    return false;
  }
}

}  // namespace

void refresh_rados_cache(const RadosLocation& where, const fs::path& index_dir) {
  const auto pool = std::make_shared<RadosObjectStore>(where);
  if (!pool->size(kRadosMarkerObject))
    throw StoreError(StoreError::Kind::kInvalid, spec_of(where) + " is not an rbdvault store (no " +
                                                     kRadosMarkerObject + " object; create one with `rbdvault init`)");
  // The epoch before the marker: a writer that moves the marker (store.cc) moves the epoch too, so
  // a marker newer than this epoch only makes the recorded epoch old (the next writer refreshes).
  uint64_t epoch = pool->epoch();
  const std::string marker = pool->read_all(kRadosMarkerObject, kMaxMarkerBytes);
  // Only formats 2 and 3 are ever written to a pool (init, copy): a format 1 marker was put by hand, and
  // `upgrade` (which works on a directory's index) cannot help; say what can.
  if (parse_store_marker(marker, spec_of(where) + ": " + kRadosMarkerObject).version < kFormatVersion - 1)
    throw StoreError(StoreError::Kind::kInvalid, spec_of(where) + " holds a format 1 store, which RADOS does not take: "
                                                 "upgrade it in a directory (rbdvault upgrade), then rbdvault copy it "
                                                 "into the pool");
  std::error_code ec;
  fs::create_directories(index_dir, ec);
  if (ec) throw StoreError(StoreError::Kind::kIO, "create index directory " + index_dir.string() + ": " + ec.message());
  write_backend_file(index_dir, where);
  std::string local;
  try {
    local = read_marker_text(index_dir);
  } catch (const StoreError&) {
  }
  if (local == marker && read_cache_epoch(index_dir) == epoch &&
      read_cache_removals(index_dir).value_or(0) == pool->removals() && fs::exists(index_dir / "index" / "CURRENT"))
    return;
  spdlog::info("{}: bringing the index in {} up to date from the pool", spec_of(where), index_dir.string());
  if (local != marker) {
    // Another store's: what this directory recorded of that store's pool must not pass for this
    // one's if the rebuild below does not finish (equal epochs would skip the next rebuild). The
    // same store whose marker moved to a newer format (store.cc) keeps what it recorded.
    if (!same_store(local, marker))
      for (const char* f : {kRadosEpochFile, kRadosRemovalsFile, kPackIdentitiesFile}) fs::remove(index_dir / f, ec);
    write_marker_durably(index_dir, marker);
  }
  // Under a reader lease no gc removes what the rebuild reads, so the index names only objects
  // that exist as long as the removals counter read here is the pool's (checked at each open).
  const auto reading = pool->lease_readers("rbdvault (index refresh)", false, {});
  const uint64_t removals = pool->removals();
  Store::RebuildStats r;
  bool settled_at_start = false;
  for (int attempt = 1;; ++attempt) {
    // A writer at work when the listing starts may commit after it and then die: at the end its
    // lease is gone and the epoch unchanged, yet the index lacks its revision, and this host's next
    // writer would take that revision's packs for uncommitted ones and remove them. So the pool
    // must be settled at the start too: an even epoch, or an odd one without a live writer (a new
    // writer takes the lease, then moves the epoch, which the end check sees).
    settled_at_start = epoch % 2 == 0 || pool->lease_holders().empty();
    // An unfinished writer without its lease may still be alive and land a commit after this
    // listing: fenced off first (rados_fence.h), so what is listed stays what the pool holds.
    if (epoch % 2 == 1 && settled_at_start) (void)pool->fence_unfinished_writer(epoch);
    try {
      r = Store::rebuild_index(index_dir, StoreIo{{}, pool}, /*reuse=*/true);
      break;
    } catch (const StoreError& e) {
      // A reader on this host (serve, mount, a restore) keeps the index open: it cannot be swapped
      // under it, and a view older than the pool is not shown (`latest` would be wrong): refused.
      if (e.kind() == StoreError::Kind::kLocked)
        throw StoreError(StoreError::Kind::kLocked, spec_of(where) + ": another host wrote since this host's index "
                                                                     "was brought up to date, and it cannot be now: " +
                                                        e.what());
      // A writer on another host (forget, protect) may have replaced a manifest the rebuild had
      // listed and removed the old generation: not damage, the pool moved on. Listed again, the
      // new generation is there. A missing object in a pool no writer touched is damage: thrown.
      const uint64_t now = pool->epoch();
      if (e.kind() != StoreError::Kind::kNotFound || (now == epoch && now % 2 == 0)) throw;
      if (attempt == 3)
        throw StoreError(StoreError::Kind::kLocked, spec_of(where) + " kept changing while the index in " +
                                                        index_dir.string() +
                                                        " was brought up to date (a writer on another host); "
                                                        "run the command again");
      spdlog::info("{}: changed while the index was rebuilt ({}); rebuilding again", spec_of(where), e.what());
      epoch = now;
    }
  }
  write_cache_removals(index_dir, removals);
  // A chunk or manifest that fails its check is left out of the rebuilt index: the command goes on
  // (other revisions stay usable), but the operator must hear of it, as from `rebuild-index`.
  if (r.chunks_skipped || r.manifests_skipped)
    spdlog::warn("{}: {} damaged chunk(s) and {} damaged manifest(s) left out of the index in {}: run rbdvault "
                 "scrub --deep and repair",
                 spec_of(where), r.chunks_skipped, r.manifests_skipped, index_dir.string());
  // Recorded only if the rebuild saw a settled pool from start to end: see rados_cache.h.
  if (settled_at_start && pool->epoch() == epoch && (epoch % 2 == 0 || pool->lease_holders().empty()))
    write_cache_epoch(index_dir, epoch);
}

}  // namespace rbdvault::store
