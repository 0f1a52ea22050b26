#include "store/rados_object_store.h"

#include <rados/librados.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include "store/error.h"
#include "store/rados_cache.h"
#include "store/rados_fence.h"
#include "store/rados_impl.h"
#include "store/rados_read_ahead.h"

namespace rbdvault::store {
namespace {

constexpr const char* kSizeXattr = "rbdvault.size";
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
    case ESHUTDOWN:  // librados' EBLOCKLISTED (rados_fence.h)
      throw StoreError(StoreError::Kind::kLocked, what + ": " + kFencedText);
    case ETIMEDOUT:
    case ENOTCONN:
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

}  // namespace

namespace {

// A decimal attribute value, bounded (20 digits) and checked before use.
uint64_t parse_u64_attr(std::string_view value, const std::string& oid, const char* name) {
  char buf[32];
  char* end = nullptr;
  errno = 0;
  const bool fits = !value.empty() && value.size() < sizeof(buf);
  if (fits) std::memcpy(buf, value.data(), value.size());
  buf[fits ? value.size() : 0] = '\0';
  const unsigned long long v = std::strtoull(buf, &end, 10);
  if (!fits || errno != 0 || *end != '\0')
    throw StoreError(StoreError::Kind::kCorrupt, "attribute " + std::string(name) + " of " + oid + " is damaged");
  return v;
}

}  // namespace

// Reads a decimal xattr; nullopt if absent.
std::optional<uint64_t> get_u64_xattr(rados_ioctx_t io, const std::string& oid, const char* name) {
  char buf[32];
  const int r = rados_getxattr(io, oid.c_str(), name, buf, sizeof(buf) - 1);
  if (r == -ENOENT || r == -ENODATA) return std::nullopt;
  check(r, "read attribute of " + oid);
  return parse_u64_attr(std::string_view(buf, static_cast<size_t>(r)), oid, name);
}

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
  m.crash.load_environment();
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
  m_->require_lease("read " + oid_);  // a reader whose lease lapsed reads nothing gc may have removed
  if (ahead_.try_read(offset, buf, n)) return true;
  size_t got = 0;
  while (got < n) {
    const size_t want = std::min(n - got, kExtentBytes);
    const int r = rados_read(m_->io, oid_.c_str(), buf + got, want, offset + got);
    // A read may be held up (the process frozen, the network cut) past a lease it began under:
    // an object gone by then says the lease lapsed, not that the store is damaged.
    if (r == -ENOENT) m_->require_lease("read " + oid_);
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
  m_->crash.reached("rados.commit_checked." + oid_.substr(0, oid_.find('/')));
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

// The committed size of `name`, or nullopt (not committed, or its size attribute is damaged: said
// once, as a warning). One damaged attribute must not fail every listing, refresh and recovery.
std::optional<uint64_t> RadosObjectStore::listed_size(const std::string& name) {
  try {
    return size(name);
  } catch (const StoreError& e) {
    if (e.kind() != StoreError::Kind::kCorrupt) throw;
    spdlog::warn("pool {}: {}; object left out and not removed (run rbdvault scrub)", impl_->where.pool, e.what());
    return std::nullopt;
  }
}

std::vector<std::string> RadosObjectStore::list(const std::string& prefix) {
  std::vector<std::string> out;
  for (std::string& n : list_all(impl_->io, prefix))
    if (listed_size(n)) out.push_back(std::move(n));
  return out;
}

void RadosObjectStore::remove(const std::string& name) {
  impl_->require_lease("remove " + name);
  const int r = rados_remove(impl_->io, name.c_str());
  if (r != -ENOENT) check(r, "remove " + name);
}

bool RadosObjectStore::replace_marker(const std::string& from, const std::string& to) {
  const std::string from_size = decimal(from.size()), to_size = decimal(to.size());
  WriteOp op;
  int cmp = 0;
  // All or nothing, and only over `from` whole: the same bytes and the same committed size.
  rados_write_op_cmpxattr(op.op, kSizeXattr, LIBRADOS_CMPXATTR_OP_EQ, from_size.data(), from_size.size());
  rados_write_op_cmpext(op.op, from.data(), from.size(), 0, &cmp);
  rados_write_op_write_full(op.op, to.data(), to.size());
  rados_write_op_setxattr(op.op, kSizeXattr, to_size.data(), to_size.size());
  impl_->require_lease(std::string("rewrite ") + kRadosMarkerObject);
  const int r = rados_write_op_operate(op.op, impl_->io, kRadosMarkerObject, nullptr, 0);
  constexpr int kMaxErrno = 4095;  // cmpext reports a mismatch at offset N as -(4095 + N)
  if (r == -ECANCELED || r <= -kMaxErrno)
    throw StoreError(StoreError::Kind::kLocked, "the marker of " + display_name() +
                                                    " was changed by another host; run the command again");
  check(r, std::string("rewrite ") + kRadosMarkerObject);
  return true;
}

void RadosObjectStore::remove_incomplete(const std::string& prefix) {
  for (const std::string& n : list_all(impl_->io, prefix)) {
    std::optional<uint64_t> committed;
    try {
      committed = size(n);
    } catch (const StoreError& e) {
      // A damaged size attribute says nothing about whether the object was committed: kept.
      if (e.kind() != StoreError::Kind::kCorrupt) throw;
      spdlog::warn("pool {}: {}; object kept (run rbdvault scrub)", impl_->where.pool, e.what());
      continue;
    }
    if (!committed) {
      spdlog::warn("pool {}: removing unfinished object {}", impl_->where.pool, n);
      remove(n);
    }
  }
}

std::string RadosObjectStore::display_name() const {
  return kRadosStoreScheme + impl_->where.pool + (impl_->where.ns.empty() ? "" : "/" + impl_->where.ns);
}

std::optional<std::string> RadosObjectStore::identity(const std::string& name) {
  // One round trip: the attributes (the committed size) and a stat, through an asynchronous op
  // whose completion carries the object's version, which the synchronous calls leave only in the
  // shared ioctx (racing with other threads' ops).
  rados_read_op_t op = rados_create_read_op();
  rados_xattrs_iter_t attrs = nullptr;
  int attrs_r = 0, stat_r = 0;
  uint64_t bytes = 0;
  time_t mtime = 0;
  rados_read_op_getxattrs(op, &attrs, &attrs_r);
  rados_read_op_stat(op, &bytes, &mtime, &stat_r);
  Completion c;
  int r = rados_aio_read_op_operate(op, impl_->io, c.c, name.c_str(), 0);
  if (r == 0) {
    rados_aio_wait_for_complete(c.c);
    r = rados_aio_get_return_value(c.c);
  }
  const uint64_t version = r == 0 ? rados_aio_get_version(c.c) : 0;
  rados_release_read_op(op);
  std::optional<std::string_view> committed;
  std::string size_value;
  if (r == 0 && attrs_r == 0 && attrs) {
    for (;;) {
      const char *key = nullptr, *val = nullptr;
      size_t len = 0;
      if (rados_getxattrs_next(attrs, &key, &val, &len) != 0 || !key) break;
      if (std::strcmp(key, kSizeXattr) != 0) continue;
      size_value.assign(val, len);
      committed = size_value;
    }
  }
  if (attrs) rados_getxattrs_end(attrs);
  if (r == -ENOENT || stat_r == -ENOENT) return std::nullopt;
  check(r, "stat " + name);
  check(stat_r, "stat " + name);
  check(attrs_r, "read attributes of " + name);
  if (!committed) return std::nullopt;  // not committed: no identity to remember
  return "v" + std::to_string(version) + "/" + std::to_string(parse_u64_attr(*committed, name, kSizeXattr));
}

}  // namespace rbdvault::store
