#include "store/rados_object_store.h"

#include <rados/librados.h>
#include <spdlog/spdlog.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include "store/error.h"
#include "store/rados_cache.h"
#include "store/rados_read_ahead.h"

namespace rbdvault::store {
namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kSizeXattr = "rbdvault.size";
constexpr const char* kEpochXattr = "rbdvault.epoch";
constexpr const char* kLockName = "rbdvault.writer";
constexpr const char* kSinkXattr = "rbdvault.sink";  // an unfinished sink's token on its object
constexpr size_t kExtentBytes = 4 << 20;  // one write op; far below osd_max_write_size (90 MiB)
// Asynchronous extent writes per sink (the create included): 32 MiB in flight keeps the OSD busy
// while the backup prepares the next blocks (4 left the writer waiting on acks, docs/benchmarks.md).
constexpr size_t kMaxInFlight = 8;

[[noreturn]] void fail(int r, const std::string& what) {
  const std::string msg = what + ": " + std::strerror(-r);
  switch (-r) {
    case ENOENT:
      throw StoreError(StoreError::Kind::kNotFound, msg);
    case EEXIST:
      throw StoreError(StoreError::Kind::kExists, msg);
    case ENOSPC:
    case EDQUOT:
      throw StoreError(StoreError::Kind::kNoSpace, msg);
    case EBUSY:
      throw StoreError(StoreError::Kind::kLocked, msg);
    case ETIMEDOUT:
    case ENOTCONN:
    case ESHUTDOWN:
      throw StoreError(StoreError::Kind::kUnreachable, msg + " (is the backup cluster up?)");
    default:
      throw StoreError(StoreError::Kind::kIO, msg);
  }
}

void check(int r, const std::string& what) {
  if (r < 0) fail(r, what);
}

struct WriteOp {
  rados_write_op_t op = rados_create_write_op();
  ~WriteOp() { rados_release_write_op(op); }
  WriteOp() = default;
  WriteOp(const WriteOp&) = delete;
  WriteOp& operator=(const WriteOp&) = delete;
};

struct Completion {
  rados_completion_t c = nullptr;
  std::string buf;  // the extent in flight; must outlive the write
  WriteOp op;       // released only once the write completed
  bool submitted = false;  // never waited for otherwise: an op never sent never completes
  Completion() { check(rados_aio_create_completion2(nullptr, nullptr, &c), "create an aio completion"); }
  ~Completion() {
    if (c) {
      if (submitted) rados_aio_wait_for_complete(c);
      rados_aio_release(c);
    }
  }
  Completion(const Completion&) = delete;
  Completion& operator=(const Completion&) = delete;
};

// 128 random bits as hex: names one sink's unfinished object.
std::string sink_token() {
  std::random_device rd;
  char out[33];
  for (int i = 0; i < 4; ++i) std::snprintf(out + 8 * i, 9, "%08x", static_cast<unsigned>(rd()));
  return std::string(out, 32);
}

std::string decimal(uint64_t v) { return std::to_string(v); }

// Reads a decimal xattr; nullopt if absent. Values are bounded (20 digits).
std::optional<uint64_t> get_u64_xattr(rados_ioctx_t io, const std::string& oid, const char* name) {
  char buf[32];
  const int r = rados_getxattr(io, oid.c_str(), name, buf, sizeof(buf) - 1);
  if (r == -ENOENT || r == -ENODATA) return std::nullopt;
  check(r, "read attribute of " + oid);
  buf[r] = '\0';
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(buf, &end, 10);
  if (r == 0 || errno != 0 || *end != '\0')
    throw StoreError(StoreError::Kind::kCorrupt, "attribute " + std::string(name) + " of " + oid + " is damaged");
  return v;
}

std::string hostname() {
  char h[256] = {};
  (void)::gethostname(h, sizeof(h) - 1);
  return h;
}

}  // namespace

struct RadosObjectStore::Impl {
  RadosLocation where;
  rados_t cluster = nullptr;
  rados_ioctx_t io = nullptr;
  std::shared_ptr<ReadAheadBudget> read_ahead = std::make_shared<ReadAheadBudget>(kReadAheadBudgetBytes);

  // The writer lease; all under mu.
  std::mutex mu;
  std::condition_variable cv;
  bool leased = false, stopping = false;
  std::string cookie;
  Clock::time_point valid_until{};
  std::string lost;  // why the lease was lost, if it was
  std::thread renewer;
  std::filesystem::path cache_dir;

  ~Impl() {
    if (io) rados_ioctx_destroy(io);
    if (cluster) rados_shutdown(cluster);
  }

  // Throws unless the lease (if this store writes) is held with a margin: the commit-point check.
  void require_lease(const std::string& what) {
    std::lock_guard g(mu);
    if (!leased) return;
    if (!lost.empty() || Clock::now() + std::chrono::seconds(kLeaseMarginSeconds) >= valid_until)
      throw StoreError(StoreError::Kind::kLocked,
                       what + ": refused, the writer lease on the backup pool was not renewed in time" +
                           (lost.empty() ? std::string() : " (" + lost + ")") + "; nothing more is committed");
  }

  int lock_call(uint8_t flags) {
    timeval tv{kLeaseSeconds, 0};
    return rados_lock_exclusive(io, kRadosMarkerObject, kLockName, cookie.c_str(), cookie.c_str(), &tv, flags);
  }

  void renew_loop() {
    std::unique_lock g(mu);
    while (!stopping) {
      cv.wait_for(g, std::chrono::seconds(kLeaseSeconds / 3), [&] { return stopping; });
      if (stopping) break;
      const auto started = Clock::now();
      g.unlock();
      const int r = lock_call(LIBRADOS_LOCK_FLAG_MUST_RENEW);
      g.lock();
      if (r == 0)
        valid_until = started + std::chrono::seconds(kLeaseSeconds);
      else if (lost.empty())
        lost = std::string("renewal failed: ") + std::strerror(-r);
    }
  }
};

std::optional<RadosLocation> parse_rados_spec(const std::string& spec) {
  const std::string scheme = kRadosStoreScheme;
  if (spec.rfind(scheme, 0) != 0) return std::nullopt;
  RadosLocation loc;
  const std::string rest = spec.substr(scheme.size());
  const auto slash = rest.find('/');
  loc.pool = rest.substr(0, slash);
  if (slash != std::string::npos) loc.ns = rest.substr(slash + 1);
  auto bad = [](const std::string& s) {
    return s.empty() || s.size() > 128 || s.find_first_of("/\n\t ") != std::string::npos;
  };
  if (bad(loc.pool) || (slash != std::string::npos && bad(loc.ns)))
    throw StoreError(StoreError::Kind::kInvalid, "bad store " + spec + " (expected rados:POOL or rados:POOL/NAMESPACE)");
  return loc;
}

RadosObjectStore::RadosObjectStore(const RadosLocation& where) : impl_(std::make_shared<Impl>()) {
  Impl& m = *impl_;
  m.where = where;
  const std::string name = "client." + (where.id.empty() ? std::string("admin") : where.id);
  check(rados_create2(&m.cluster, "ceph", name.c_str(), 0), "create a RADOS client");
  check(rados_conf_read_file(m.cluster, where.conf.empty() ? nullptr : where.conf.c_str()),
        "read backup cluster configuration " + (where.conf.empty() ? std::string("(default)") : where.conf));
  if (!where.keyring.empty()) check(rados_conf_set(m.cluster, "keyring", where.keyring.c_str()), "set keyring");
  const std::string t = std::to_string(where.op_timeout_seconds);
  check(rados_conf_set(m.cluster, "rados_mon_op_timeout", t.c_str()), "set rados_mon_op_timeout");
  check(rados_conf_set(m.cluster, "rados_osd_op_timeout", t.c_str()), "set rados_osd_op_timeout");
  check(rados_conf_set(m.cluster, "client_mount_timeout", t.c_str()), "set client_mount_timeout");
  int r = rados_connect(m.cluster);
  if (r < 0) {
    rados_shutdown(m.cluster);
    m.cluster = nullptr;
    throw StoreError(StoreError::Kind::kUnreachable,
                     std::string("connect to the backup cluster: ") + std::strerror(-r));
  }
  r = rados_ioctx_create(m.cluster, where.pool.c_str(), &m.io);
  if (r == -ENOENT) throw StoreError(StoreError::Kind::kNotFound, "pool " + where.pool + " does not exist in the backup cluster");
  check(r, "open pool " + where.pool);
  rados_ioctx_set_namespace(m.io, where.ns.c_str());
}

RadosObjectStore::~RadosObjectStore() {
  Impl& m = *impl_;
  bool leased = false;
  {
    std::lock_guard g(m.mu);
    m.stopping = true;
    leased = m.leased;
  }
  m.cv.notify_all();
  if (m.renewer.joinable()) m.renewer.join();
  if (!leased) return;
  // The write is over: an even epoch tells other hosts' caches that this one's index is complete.
  try {
    m.require_lease("end of writing");
    const uint64_t e = get_u64_xattr(m.io, kRadosMarkerObject, kEpochXattr).value_or(0);
    const std::string v = decimal(e + 1);
    check(rados_setxattr(m.io, kRadosMarkerObject, kEpochXattr, v.data(), v.size()), "advance the store epoch");
    write_cache_epoch(m.cache_dir, e + 1);
  } catch (const std::exception& e) {
    spdlog::warn("backup pool {}: {} (other hosts rebuild their index)", m.where.pool, e.what());
  }
  (void)rados_unlock(m.io, kRadosMarkerObject, kLockName, m.cookie.c_str());
}

const RadosLocation& RadosObjectStore::location() const { return impl_->where; }

uint64_t RadosObjectStore::read_ahead_bytes_served() const { return impl_->read_ahead->served.load(); }

namespace {

class RadosReader final : public ObjectReader {
 public:
  RadosReader(std::shared_ptr<RadosObjectStore::Impl> m, std::string oid, uint64_t size)
      : m_(std::move(m)), oid_(std::move(oid)), size_(size), ahead_(m_->io, oid_, size_, m_->read_ahead) {}
  bool read_at(uint64_t offset, char* buf, size_t n) const override;
  uint64_t size() const override { return size_; }

 private:
  std::shared_ptr<RadosObjectStore::Impl> m_;
  std::string oid_;
  uint64_t size_;
  mutable RadosReadAhead ahead_;  // declared last: destroyed (its reads waited for) before m_ goes
};

class RadosSink final : public ObjectSink {
 public:
  RadosSink(std::shared_ptr<RadosObjectStore::Impl> m, std::string oid)
      : m_(std::move(m)), oid_(std::move(oid)), token_(sink_token()) {}
  ~RadosSink() override;
  void append(std::string_view bytes) override;
  uint64_t size() const override { return size_; }
  void commit() override;

 private:
  void flush_extent();
  void wait_oldest();
  std::shared_ptr<RadosObjectStore::Impl> m_;
  std::string oid_;
  std::string token_;  // in kSinkXattr from the create on: every later op asserts it
  std::string pending_;
  uint64_t size_ = 0, written_ = 0;
  bool created_ = false, committed_ = false;  // created_: the create was sent
  std::deque<std::unique_ptr<Completion>> in_flight_;
};

}  // namespace

bool RadosReader::read_at(uint64_t offset, char* buf, size_t n) const {
  if (ahead_.try_read(offset, buf, n)) return true;
  size_t got = 0;
  while (got < n) {
    const size_t want = std::min(n - got, kExtentBytes);
    const int r = rados_read(m_->io, oid_.c_str(), buf + got, want, offset + got);
    check(r, "read " + oid_);
    if (r == 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

RadosSink::~RadosSink() {
  in_flight_.clear();  // waits for every write in flight
  if (created_ && !committed_) {
    // What a failed sink wrote goes; a leftover (the process died) is for remove_incomplete. Only
    // an object holding this sink's token is removed: if the create found the name taken, the
    // object there is someone else's and stays.
    WriteOp op;
    rados_write_op_cmpxattr(op.op, kSinkXattr, LIBRADOS_CMPXATTR_OP_EQ, token_.data(), token_.size());
    rados_write_op_remove(op.op);
    const int r = rados_write_op_operate(op.op, m_->io, oid_.c_str(), nullptr, 0);
    if (r < 0 && r != -ENOENT && r != -ECANCELED && r != -ENODATA)
      spdlog::warn("remove unfinished object {}: {}", oid_, std::strerror(-r));
  }
}

void RadosSink::append(std::string_view bytes) {
  size_ += bytes.size();
  while (!bytes.empty()) {
    const size_t take = std::min(bytes.size(), kExtentBytes - pending_.size());
    pending_.append(bytes.substr(0, take));
    bytes.remove_prefix(take);
    if (pending_.size() == kExtentBytes) flush_extent();
  }
}

void RadosSink::wait_oldest() {
  std::unique_ptr<Completion> c = std::move(in_flight_.front());
  in_flight_.pop_front();
  rados_aio_wait_for_complete(c->c);
  check(rados_aio_get_return_value(c->c), "write " + oid_);
}

// Every extent goes asynchronously, at most kMaxInFlight at once, the first one too: it creates
// the object exclusively and stores the sink's token; each later write asserts the token in the
// same op. RADOS applies one client's ops on one object in order, so if the name was taken the
// create fails (kExists, reported by the first wait) and every write after it fails its assertion
// on the existing object: nothing is written over it, and no round trip is spent before streaming.
void RadosSink::flush_extent() {
  if (in_flight_.size() >= kMaxInFlight) wait_oldest();
  if (!created_) m_->require_lease("create " + oid_);  // a writer that lost its lease writes nothing more
  auto c = std::make_unique<Completion>();
  c->buf = std::move(pending_);
  if (!created_) {
    rados_write_op_create(c->op.op, LIBRADOS_CREATE_EXCLUSIVE, nullptr);
    rados_write_op_setxattr(c->op.op, kSinkXattr, token_.data(), token_.size());
  } else {
    rados_write_op_cmpxattr(c->op.op, kSinkXattr, LIBRADOS_CMPXATTR_OP_EQ, token_.data(), token_.size());
  }
  rados_write_op_write(c->op.op, c->buf.data(), c->buf.size(), written_);
  check(rados_aio_write_op_operate(c->op.op, m_->io, c->c, oid_.c_str(), nullptr, 0),
        (created_ ? "write " : "create ") + oid_);
  c->submitted = created_ = true;
  written_ += c->buf.size();
  in_flight_.push_back(std::move(c));
  pending_.clear();
}

void RadosSink::commit() {
  if (committed_) throw std::logic_error("commit of " + oid_ + " twice");
  const std::string size = decimal(size_);
  WriteOp op;
  if (!created_) {
    // Small: created, written and marked complete in one atomic op.
    rados_write_op_create(op.op, LIBRADOS_CREATE_EXCLUSIVE, nullptr);
    if (!pending_.empty()) rados_write_op_write(op.op, pending_.data(), pending_.size(), 0);
  } else {
    if (!pending_.empty()) flush_extent();
    // Durable before marked complete: every extent acknowledged, the create's kExists first.
    while (!in_flight_.empty()) wait_oldest();
    rados_write_op_cmpxattr(op.op, kSinkXattr, LIBRADOS_CMPXATTR_OP_EQ, token_.data(), token_.size());
    rados_write_op_rmxattr(op.op, kSinkXattr);
  }
  rados_write_op_setxattr(op.op, kSizeXattr, size.data(), size.size());
  m_->require_lease("commit " + oid_);  // the commit point: never without the lease
  check(rados_write_op_operate(op.op, m_->io, oid_.c_str(), nullptr, 0), "commit " + oid_);
  created_ = committed_ = true;
}

std::unique_ptr<ObjectSink> RadosObjectStore::create(const std::string& name) {
  return std::make_unique<RadosSink>(impl_, name);
}

std::optional<uint64_t> RadosObjectStore::size(const std::string& name) {
  return get_u64_xattr(impl_->io, name, kSizeXattr);
}

std::unique_ptr<ObjectReader> RadosObjectStore::open(const std::string& name) {
  const auto n = size(name);
  if (!n) throw StoreError(StoreError::Kind::kNotFound, "object " + name + " not found in pool " + impl_->where.pool);
  return std::make_unique<RadosReader>(impl_, name, *n);
}

namespace {

// Every object of the namespace starting with `prefix`, committed or not. RADOS lists in hash
// order; the caller wants byte order, so the names are sorted.
std::vector<std::string> list_all(rados_ioctx_t io, const std::string& prefix) {
  rados_list_ctx_t ctx = nullptr;
  check(rados_nobjects_list_open(io, &ctx), "list objects");
  std::vector<std::string> out;
  for (;;) {
    const char *entry = nullptr, *key = nullptr, *nspace = nullptr;
    size_t entry_len = 0, key_len = 0, ns_len = 0;
    const int r = rados_nobjects_list_next2(ctx, &entry, &key, &nspace, &entry_len, &key_len, &ns_len);
    if (r == -ENOENT) break;
    if (r < 0) {
      rados_nobjects_list_close(ctx);
      fail(r, "list objects");
    }
    std::string name(entry, entry_len);
    if (name.rfind(prefix, 0) == 0) out.push_back(std::move(name));
  }
  rados_nobjects_list_close(ctx);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::vector<std::string> RadosObjectStore::list(const std::string& prefix) {
  std::vector<std::string> out;
  for (std::string& n : list_all(impl_->io, prefix))
    if (size(n)) out.push_back(std::move(n));
  return out;
}

void RadosObjectStore::remove(const std::string& name) {
  impl_->require_lease("remove " + name);
  const int r = rados_remove(impl_->io, name.c_str());
  if (r != -ENOENT) check(r, "remove " + name);
}

void RadosObjectStore::remove_incomplete(const std::string& prefix) {
  for (const std::string& n : list_all(impl_->io, prefix))
    if (!size(n)) {
      spdlog::warn("pool {}: removing unfinished object {}", impl_->where.pool, n);
      remove(n);
    }
}

uint64_t RadosObjectStore::epoch() { return get_u64_xattr(impl_->io, kRadosMarkerObject, kEpochXattr).value_or(0); }

namespace {

// (client, cookie) of each holder of the writer lock.
std::vector<std::pair<std::string, std::string>> lockers(RadosObjectStore::Impl& m) {
  int exclusive = 0;
  size_t tag_len = 256, clients_len = 4096, cookies_len = 4096, addrs_len = 4096;
  std::string tag(tag_len, '\0'), clients(clients_len, '\0'), cookies(cookies_len, '\0'), addrs(addrs_len, '\0');
  const ssize_t n = rados_list_lockers(m.io, kRadosMarkerObject, kLockName, &exclusive, tag.data(), &tag_len,
                                       clients.data(), &clients_len, cookies.data(), &cookies_len, addrs.data(),
                                       &addrs_len);
  if (n == -ENOENT) return {};
  check(static_cast<int>(n), "list the writer lease holders");
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

// A holder on this host whose process is gone (it failed to unlock, e.g. with the cluster
// unreachable, or was killed) need not be waited out: its cookie names this host and its pid.
// We hold the local writer lock, and the pid is checked, so no live writer is broken.
bool break_dead_local_holder(RadosObjectStore::Impl& m) {
  const std::string me = "host " + hostname() + " pid ";
  for (const auto& [client, cookie] : lockers(m)) {
    if (cookie.rfind(me, 0) != 0) continue;
    const long pid = std::strtol(cookie.c_str() + me.size(), nullptr, 10);
    if (pid <= 0 || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    spdlog::warn("backup pool {}: breaking the writer lease of dead process {} on this host", m.where.pool, pid);
    if (rados_break_lock(m.io, kRadosMarkerObject, kLockName, client.c_str(), cookie.c_str()) == 0) return true;
  }
  return false;
}

}  // namespace

std::vector<std::string> RadosObjectStore::lease_holders() {
  std::vector<std::string> out;
  for (auto& [client, cookie] : lockers(*impl_)) out.push_back(std::move(cookie));
  return out;
}

void RadosObjectStore::begin_writing(const std::string& holder, const std::filesystem::path& cache_dir) {
  Impl& m = *impl_;
  char when[32] = {};
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  (void)gmtime_r(&now, &tm);
  (void)std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
  m.cookie = "host " + hostname() + " pid " + std::to_string(::getpid()) + " started " + when + ": " + holder;
  if (m.cookie.size() > 400) m.cookie.resize(400);
  const auto started = Clock::now();
  int r = m.lock_call(0);
  if ((r == -EBUSY || r == -EEXIST) && break_dead_local_holder(m)) r = m.lock_call(0);
  if (r == -EBUSY || r == -EEXIST) {
    const auto who = lease_holders();
    throw StoreError(StoreError::Kind::kLocked,
                     "backup pool " + m.where.pool + " is locked by another writer (" +
                         (who.empty() ? std::string("unknown") : who.front()) + ")");
  }
  check(r, "take the writer lease on pool " + m.where.pool);
  // The local index must reflect the pool as it is now; another host may have written since it
  // was brought up to date (rados_cache.cc) and before this lease.
  uint64_t e = 0;
  try {
    e = epoch();
    if (read_cache_epoch(cache_dir) != e)
      throw StoreError(StoreError::Kind::kLocked, "backup pool " + m.where.pool +
                                                      " was written by another host while this host's index was "
                                                      "being brought up to date; run the command again");
  } catch (...) {
    (void)rados_unlock(m.io, kRadosMarkerObject, kLockName, m.cookie.c_str());
    throw;
  }
  {
    std::lock_guard g(m.mu);
    m.leased = true;
    m.valid_until = started + std::chrono::seconds(kLeaseSeconds);
    m.cache_dir = cache_dir;
  }
  m.renewer = std::thread([&m] { m.renew_loop(); });
  const std::string v = decimal(e % 2 == 0 ? e + 1 : e + 2);  // odd: a writer is (or was) at work
  m.require_lease("start writing");
  check(rados_setxattr(m.io, kRadosMarkerObject, kEpochXattr, v.data(), v.size()), "advance the store epoch");
  write_cache_epoch(cache_dir, std::stoull(v));
}

std::optional<std::string> RadosObjectStore::identity(const std::string& name) {
  const auto committed = size(name);
  if (!committed) return std::nullopt;
  // A stat through an asynchronous op: its completion carries the object's version, which the
  // synchronous calls leave only in the shared ioctx (racing with other threads' ops).
  rados_read_op_t op = rados_create_read_op();
  uint64_t bytes = 0;
  time_t mtime = 0;
  int stat_r = 0;
  rados_read_op_stat(op, &bytes, &mtime, &stat_r);
  Completion c;
  int r = rados_aio_read_op_operate(op, impl_->io, c.c, name.c_str(), 0);
  if (r == 0) {
    rados_aio_wait_for_complete(c.c);
    r = rados_aio_get_return_value(c.c);
  }
  const uint64_t version = r == 0 ? rados_aio_get_version(c.c) : 0;
  rados_release_read_op(op);
  if (r == -ENOENT || stat_r == -ENOENT) return std::nullopt;
  check(r, "stat " + name);
  check(stat_r, "stat " + name);
  return "v" + std::to_string(version) + "/" + std::to_string(*committed);
}

}  // namespace rbdvault::store
