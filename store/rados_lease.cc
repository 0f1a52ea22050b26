#include "store/rados_lease.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>

#include "store/error.h"
#include "store/rados_cache.h"
#include "store/rados_fence.h"
#include "store/rados_impl.h"

namespace rbdvault::store {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kMaxCookie = 400;

std::string hostname() {
  char h[256] = {};
  (void)::gethostname(h, sizeof(h) - 1);
  return h;
}

// "rbdvault restore rbd/x@3 --to-file /tmp/x" from /proc/self/cmdline, program name without its
// directory; bounded. Only for humans reading a refusal.
std::string command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string raw(1024, '\0');
  in.read(raw.data(), static_cast<std::streamsize>(raw.size()));
  raw.resize(static_cast<size_t>(in.gcount()));
  std::string out;
  size_t pos = 0;
  while (pos < raw.size()) {
    std::string arg(raw.c_str() + pos);
    pos += arg.size() + 1;
    if (out.empty()) arg = arg.substr(arg.rfind('/') == std::string::npos ? 0 : arg.rfind('/') + 1);
    if (!out.empty()) out += ' ';
    out += arg;
  }
  return out.empty() ? "rbdvault" : out;
}

std::string errno_text(int r) { return std::strerror(-r); }

constexpr const char* kEpochXattr = "rbdvault.epoch";
constexpr const char* kRemovalsXattr = "rbdvault.removals";

void set_xattr(rados_ioctx_t io, const char* oid, const char* name, const std::string& v, const std::string& what) {
  const int r = rados_setxattr(io, oid, name, v.data(), v.size());
  if (r < 0) throw rados_call_error(r, what);
}

}  // namespace

LeaseTimes LeaseTimes::from_environment() {
  LeaseTimes t;
  t.duration = std::chrono::seconds(kLeaseSeconds);
  t.margin = std::chrono::seconds(kLeaseMarginSeconds);
  if (const char* v = std::getenv("RBDVAULT_RADOS_LEASE_SECONDS")) {
    char* end = nullptr;
    const long s = std::strtol(v, &end, 10);
    if (end == v || *end != '\0' || s < 3 || s > 300)
      throw StoreError(StoreError::Kind::kInvalid, "RBDVAULT_RADOS_LEASE_SECONDS must be 3..300 (seconds)");
    t.duration = std::chrono::seconds(s);
    t.margin = t.duration / 6;
  }
  return t;
}

std::string lease_cookie(const std::string& holder) {
  char when[32] = {};
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  (void)gmtime_r(&now, &tm);
  (void)std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
  std::string c = "host " + hostname() + " pid " + std::to_string(::getpid()) + " started " + when + ": " +
                  (holder.empty() ? command_line() : holder);
  if (c.size() > kMaxCookie) c.resize(kMaxCookie);
  return c;
}

std::vector<std::pair<std::string, std::string>> lease_lockers(rados_ioctx_t io, const char* name) {
  // Bounded buffers: a refusal names the holders that fit, which is every holder in practice
  // (about 10 readers' cookies per KiB... 64 KiB is far more than any store sees at once).
  int exclusive = 0;
  size_t tag_len = 256, clients_len = 64 << 10, cookies_len = 64 << 10, addrs_len = 64 << 10;
  std::string tag(tag_len, '\0'), clients(clients_len, '\0'), cookies(cookies_len, '\0'), addrs(addrs_len, '\0');
  const ssize_t n = rados_list_lockers(io, kRadosMarkerObject, name, &exclusive, tag.data(), &tag_len,
                                       clients.data(), &clients_len, cookies.data(), &cookies_len, addrs.data(),
                                       &addrs_len);
  if (n == -ENOENT) return {};
  if (n < 0)
    throw StoreError(StoreError::Kind::kIO, std::string("list the holders of lease ") + name + ": " +
                                                errno_text(static_cast<int>(n)));
  std::vector<std::pair<std::string, std::string>> out;
  size_t cpos = 0, kpos = 0;
  for (ssize_t i = 0; i < n && cpos < clients_len && kpos < cookies_len; ++i) {
    std::string client(clients.data() + cpos), cookie(cookies.data() + kpos);
    cpos += client.size() + 1;
    kpos += cookie.size() + 1;
    out.emplace_back(std::move(client), std::move(cookie));
  }
  return out;
}

RadosLease::RadosLease(rados_ioctx_t io, const char* name, Mode mode, std::string cookie, LeaseTimes times,
                       const std::string& refusal)
    : io_(io), name_(name), mode_(mode), times_(times), cookie_(std::move(cookie)) {
  const auto started = Clock::now();
  const int r = lock_call(0);
  if (r == -EBUSY || r == -EEXIST) {
    std::string who;
    for (const auto& [client, cookie] : lease_lockers(io_, name_)) who += (who.empty() ? "" : "; ") + cookie;
    throw StoreError(StoreError::Kind::kLocked, refusal + " (" + (who.empty() ? std::string("holder unknown") : who) +
                                                    "); try again later");
  }
  if (r < 0) {
    const std::string what = std::string("take the lease ") + name_ + ": " + errno_text(r);
    if (r == -ESHUTDOWN) throw StoreError(StoreError::Kind::kLocked, what + " (" + kFencedText + ")");
    if (r == -ETIMEDOUT || r == -ENOTCONN)
      throw StoreError(StoreError::Kind::kUnreachable, what + " (is the backup cluster up?)");
    throw StoreError(r == -ENOENT ? StoreError::Kind::kNotFound : StoreError::Kind::kIO, what);
  }
  valid_until_ = started + times_.duration;
  renewer_ = std::thread([this] { renew_loop(); });
}

RadosLease::~RadosLease() {
  stop_renewing();
  const int r = rados_unlock(io_, kRadosMarkerObject, name_, cookie_.c_str());
  if (r < 0 && r != -ENOENT)
    spdlog::debug("unlock lease {}: {} (it expires by itself)", name_, errno_text(r));
}

void RadosLease::stop_renewing() {
  {
    std::lock_guard g(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (renewer_.joinable()) renewer_.join();
}

int RadosLease::lock_call(uint8_t flags) {
  const auto ms = times_.duration.count();
  timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
  // The cookie is also the description: rados_list_lockers returns cookies, not descriptions.
  if (mode_ == Mode::kExclusive)
    return rados_lock_exclusive(io_, kRadosMarkerObject, name_, cookie_.c_str(), cookie_.c_str(), &tv, flags);
  return rados_lock_shared(io_, kRadosMarkerObject, name_, cookie_.c_str(), "", cookie_.c_str(), &tv, flags);
}

void RadosLease::renew_loop() {
  std::unique_lock g(mu_);
  while (!stopping_) {
    cv_.wait_for(g, times_.duration / 3, [&] { return stopping_; });
    if (stopping_) break;
    const auto started = Clock::now();
    g.unlock();
    const int r = lock_call(LIBRADOS_LOCK_FLAG_MUST_RENEW);
    g.lock();
    if (r == 0)
      valid_until_ = started + times_.duration;
    else if (lost_.empty())
      lost_ = "renewal failed: " + (r == -ESHUTDOWN ? std::string(kFencedText) : errno_text(r));
  }
}

void RadosLease::require(const std::string& what) const {
  std::lock_guard g(mu_);
  if (lost_.empty() && Clock::now() + times_.margin < valid_until_) return;
  const bool writer = std::strcmp(name_, kWriterLockName) == 0;
  const std::string which = writer ? "the writer lease" : mode_ == Mode::kShared ? "the reader lease" : "the exclusive reader lease";
  throw StoreError(StoreError::Kind::kLocked,
                   what + ": refused, " + which + " on the backup pool was not renewed in time" +
                       (lost_.empty() ? std::string() : " (" + lost_ + ")") +
                       (writer || mode_ == Mode::kExclusive ? "; nothing more is committed"
                                                            : "; gc may have removed data since, nothing more is read"));
}

bool break_dead_local_holder(rados_ioctx_t io, const char* name, const std::string& pool) {
  const std::string me = "host " + hostname() + " pid ";
  for (const auto& [client, cookie] : lease_lockers(io, name)) {
    if (cookie.rfind(me, 0) != 0) continue;
    const long pid = std::strtol(cookie.c_str() + me.size(), nullptr, 10);
    if (pid <= 0 || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    spdlog::warn("backup pool {}: breaking the {} lease of dead process {} on this host", pool, name, pid);
    if (rados_break_lock(io, kRadosMarkerObject, name, client.c_str(), cookie.c_str()) == 0) return true;
  }
  return false;
}

// ---- The leases of a RadosObjectStore (rados_object_store.h) --------------------------------

RadosObjectStore::~RadosObjectStore() {
  Impl& m = *impl_;
  std::unique_ptr<RadosLease> writer;
  {
    std::lock_guard g(m.leases_mu);
    writer = std::move(m.writer);
  }
  if (!writer) return;
  writer->stop_renewing();
  // The write is over: an even epoch tells other hosts' caches that this one's index is complete.
  try {
    writer->require("end of writing");
    const uint64_t e = get_u64_xattr(m.io, kRadosMarkerObject, kEpochXattr).value_or(0);
    const std::string v = std::to_string(e + 1);
    set_xattr(m.io, kRadosMarkerObject, kEpochXattr, v, "advance the store epoch");
    write_cache_epoch(m.cache_dir, e + 1);
  } catch (const std::exception& e) {
    spdlog::warn("backup pool {}: {} (other hosts rebuild their index)", m.where.pool, e.what());
  }
}  // `writer` unlocks


uint64_t RadosObjectStore::epoch() { return get_u64_xattr(impl_->io, kRadosMarkerObject, kEpochXattr).value_or(0); }


std::vector<std::string> RadosObjectStore::lease_holders() {
  std::vector<std::string> out;
  for (auto& [client, cookie] : lease_lockers(impl_->io, kWriterLockName)) out.push_back(std::move(cookie));
  return out;
}

std::string RadosObjectStore::fence_unfinished_writer(uint64_t epoch) {
  Impl& m = *impl_;
  if (epoch % 2 == 1 && epoch == m.fenced_epoch) return {};  // done by this process's refresh
  std::string fenced = store::fence_unfinished_writer(m.cluster, m.io, epoch, m.where.pool);
  if (!fenced.empty()) m.fenced_epoch = epoch;
  return fenced;
}

uint64_t RadosObjectStore::removals() {
  return get_u64_xattr(impl_->io, kRadosMarkerObject, kRemovalsXattr).value_or(0);
}

void RadosObjectStore::begin_writing(const std::string& holder, const std::filesystem::path& cache_dir) {
  Impl& m = *impl_;
  const std::string refusal = "backup pool " + m.where.pool + " is locked by another writer";
  std::unique_ptr<RadosLease> lease;
  try {
    lease = std::make_unique<RadosLease>(m.io, kWriterLockName, RadosLease::Mode::kExclusive, lease_cookie(holder), m.times,
                                         refusal);
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kLocked || !break_dead_local_holder(m.io, kWriterLockName, m.where.pool)) throw;
    lease = std::make_unique<RadosLease>(m.io, kWriterLockName, RadosLease::Mode::kExclusive, lease_cookie(holder), m.times,
                                         refusal);
  }
  // The local index must reflect the pool as it is now; another host may have written since it
  // was brought up to date (rados_cache.cc) and before this lease. On a throw `lease` unlocks.
  const uint64_t e = epoch();
  // An odd epoch here: the last writer did not finish, and its lease has lapsed (this one holds it).
  // It may still be alive and stalled past its lease checks: fenced off before anything relies on
  // the pool as it is now.
  (void)fence_unfinished_writer(e);
  if (read_cache_epoch(cache_dir) != e)
    throw StoreError(StoreError::Kind::kLocked, "backup pool " + m.where.pool +
                                                    " was written by another host while this host's index was "
                                                    "being brought up to date; run the command again");
  const std::string v = std::to_string(e % 2 == 0 ? e + 1 : e + 2);  // odd: a writer is (or was) at work
  lease->require("start writing");
  record_writer_client(m.cluster, m.io, std::stoull(v));  // before the epoch: rados_fence.h
  set_xattr(m.io, kRadosMarkerObject, kEpochXattr, v, "advance the store epoch");
  write_cache_epoch(cache_dir, std::stoull(v));
  std::lock_guard g(m.leases_mu);
  m.cache_dir = cache_dir;
  m.writer = std::move(lease);
}

namespace {

// A reader lease registered with its store, so that every read and removal checks it.
class ReadersLease final : public ObjectStore::Lease {
 public:
  ReadersLease(std::shared_ptr<RadosObjectStore::Impl> m, std::unique_ptr<RadosLease> lease)
      : m_(std::move(m)), lease_(std::move(lease)) {
    std::lock_guard g(m_->leases_mu);
    m_->readers.push_back(lease_.get());
  }
  ~ReadersLease() override {
    std::lock_guard g(m_->leases_mu);
    std::erase(m_->readers, lease_.get());
  }
  ReadersLease(const ReadersLease&) = delete;
  ReadersLease& operator=(const ReadersLease&) = delete;

 private:
  std::shared_ptr<RadosObjectStore::Impl> m_;  // outlives lease_, which uses its io context
  std::unique_ptr<RadosLease> lease_;
};

}  // namespace

// The removals counter (xattr "rbdvault.removals" on the marker) is advanced by each exclusive
// holder before it removes anything. An index brought up to date under a shared lease records
// the counter it saw (rados_cache.cc); a reader whose index records another value than the pool's
// (taken after gc ran between the refresh and this lease) may name removed packs: refused.
std::unique_ptr<ObjectStore::Lease> RadosObjectStore::lease_readers(const std::string& holder, bool exclusive,
                                                                     const std::filesystem::path& cache_dir) {
  Impl& m = *impl_;
  const std::string refusal =
      exclusive ? "backup pool " + m.where.pool + " is being read; removing data needs it alone"
                : "backup pool " + m.where.pool + " is being garbage-collected";
  std::string cookie = lease_cookie(holder);
  {
    // Two leases of one client need two cookies (a refresh and the rebuild it runs, say).
    std::lock_guard g(m.leases_mu);
    if (const unsigned n = m.leases_taken++; n > 0) cookie += " #" + std::to_string(n);
  }
  auto lease = std::make_unique<RadosLease>(m.io, kReadersLockName,
                                            exclusive ? RadosLease::Mode::kExclusive : RadosLease::Mode::kShared,
                                            std::move(cookie), m.times, refusal);
  const uint64_t now = removals();
  if (exclusive) {
    const std::string v = std::to_string(now + 1);
    lease->require("start removing");
    set_xattr(m.io, kRadosMarkerObject, kRemovalsXattr, v, "advance the removals counter");
    if (!cache_dir.empty()) write_cache_removals(cache_dir, now + 1);  // this host's index sees them
  } else if (!cache_dir.empty() && read_cache_removals(cache_dir).value_or(0) != now) {
    throw StoreError(StoreError::Kind::kLocked, "backup pool " + m.where.pool +
                                                    " was garbage-collected by another host while this host's index "
                                                    "was being brought up to date; run the command again");
  }
  return std::make_unique<ReadersLease>(impl_, std::move(lease));
}

}  // namespace rbdvault::store
