#include "store/rados_fence.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "store/error.h"
#include "store/rados_object_store.h"

namespace rbdvault::store {
namespace {

constexpr size_t kMaxAddress = 200;

std::string errno_text(int r) { return std::strerror(-r); }

bool printable(const std::string& s) {
  for (const char c : s)
    if (c <= ' ' || c > '~') return false;
  return true;
}

// One client: "IP:PORT/NONCE" (IPv6 as "[IP]:PORT/NONCE", maybe with a "v1:"/"v2:"/"any:" type)
// with a nonzero NONCE. Nonce 0 (or none) would make a blocklist entry cover every client of the
// host: never fenced.
bool one_client(const std::string& a) {
  const size_t slash = a.rfind('/');
  if (slash == std::string::npos || slash + 1 == a.size() || a.size() - slash - 1 > 10) return false;
  const std::string nonce = a.substr(slash + 1);
  return nonce.find_first_not_of("0123456789") == std::string::npos &&
         nonce.find_first_not_of('0') != std::string::npos;
}

// The first address of an address vector "[v2:A,v1:B]" (A itself may hold "[...]" for IPv6); a
// plain address as it is.
std::string first_address(const std::string& a) {
  if (a.rfind("[v1:", 0) != 0 && a.rfind("[v2:", 0) != 0 && a.rfind("[any:", 0) != 0) return a;
  const std::string inner = a.substr(1, a.size() >= 2 && a.back() == ']' ? a.size() - 2 : std::string::npos);
  int depth = 0;
  for (size_t i = 0; i < inner.size(); ++i) {
    if (inner[i] == '[') ++depth;
    if (inner[i] == ']') --depth;
    if (inner[i] == ',' && depth == 0) return inner.substr(0, i);
  }
  return inner;
}

// The recorded writer, then the epoch (rados_lease.cc's kEpochXattr). In this order, a record and an
// epoch that agree belong to one writer: a new writer records itself before it moves the epoch.
struct Recorded {
  std::string writer, epoch;
};

Recorded read_recorded(rados_ioctx_t io) {
  Recorded out;
  for (auto [name, value] : {std::pair{kWriterClientXattr, &out.writer}, std::pair{"rbdvault.epoch", &out.epoch}}) {
    char buf[256];
    const int n = rados_getxattr(io, kRadosMarkerObject, name, buf, sizeof(buf));
    if (n == -ENODATA || n == -ENOENT) continue;
    if (n < 0 && n != -ERANGE) throw rados_call_error(n, std::string("read ") + name);
    if (n > 0) value->assign(buf, static_cast<size_t>(n));
  }
  return out;
}

}  // namespace

StoreError rados_call_error(int r, const std::string& what) {
  if (r == -ESHUTDOWN) return StoreError(StoreError::Kind::kLocked, what + ": " + kFencedText);
  if (r == -ETIMEDOUT || r == -ENOTCONN)
    return StoreError(StoreError::Kind::kUnreachable, what + ": " + errno_text(r) + " (is the backup cluster up?)");
  return StoreError(StoreError::Kind::kIO, what + ": " + errno_text(r));
}

WriterClient parse_writer_client(const std::string& value) {
  WriterClient w;
  const size_t space = value.find(' ');
  if (space == std::string::npos || value.size() - space - 1 > kMaxAddress) return {};
  const char* end = value.data() + space;
  if (std::from_chars(value.data(), end, w.epoch).ptr != end || w.epoch % 2 == 0) return {};
  w.address = value.substr(space + 1);
  if (!printable(w.address) || !one_client(w.address)) return {};
  return w;
}

std::string rados_client_address(rados_t cluster) {
  char* addrs = nullptr;
  const int r = rados_getaddrs(cluster, &addrs);
  if (r < 0) throw rados_call_error(r, "read this client's address");
  std::string a(addrs);
  rados_buffer_free(addrs);
  // A client has one address, "IP:PORT/NONCE"; a vector "[v2:...,v1:...]" gives its first.
  a = first_address(a);
  if (a.size() > kMaxAddress || !printable(a) || !one_client(a))
    throw StoreError(StoreError::Kind::kIO, "this client's address is not usable: '" + a + "'");
  return a;
}

void record_writer_client(rados_t cluster, rados_ioctx_t io, uint64_t epoch) {
  const std::string v = std::to_string(epoch) + " " + rados_client_address(cluster);
  const int r = rados_setxattr(io, kRadosMarkerObject, kWriterClientXattr, v.data(), v.size());
  if (r < 0) throw rados_call_error(r, "record the writer's client");
}

std::string fence_unfinished_writer(rados_t cluster, rados_ioctx_t io, uint64_t epoch, const std::string& pool) {
  if (epoch % 2 == 0) return {};
  const Recorded rec = read_recorded(io);
  if (rec.epoch != std::to_string(epoch)) return {};  // the writer ended, or another began
  const WriterClient w = parse_writer_client(rec.writer);
  if (w.epoch != epoch) {
    if (!rec.writer.empty() && w.epoch == 0)
      spdlog::warn("backup pool {}: the record of the unfinished writer is malformed; it cannot be fenced off", pool);
    return {};  // a writer from before fencing existed, or the record of another epoch
  }
  if (w.address == rados_client_address(cluster)) return {};
  std::string addr = w.address;
  int r = rados_blocklist_add(cluster, addr.data(), kFenceSeconds);
  if (r == 0) r = rados_wait_for_latest_osdmap(cluster);
  if (r < 0) {
    spdlog::warn("backup pool {}: could not fence off the writer {} whose lease lapsed: {}{}", pool, addr,
                 errno_text(r),
                 r == -EPERM || r == -EACCES ? " (the client needs the mon capability of 'profile rbd': osd blocklist)"
                                             : "");
    return {};
  }
  spdlog::warn("backup pool {}: the writer {} lost its lease before it finished; it is fenced off (blocklisted for "
               "{} s), so nothing it still sends lands",
               pool, addr, kFenceSeconds);
  return addr;
}

}  // namespace rbdvault::store
