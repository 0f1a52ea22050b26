// Fencing a RADOS store's writer that lost its lease (rados_lease.h). A lease check before a
// commit leaves a window: a holder that passed it and then stalled (a frozen VM, a slow network,
// up to the OSD op timeout) could land its commit after its lease lapsed and another host took
// over, and that host's recovery may already have removed the packs the late commit names. So a
// host that finds a writer's epoch unfinished (odd, rados_cache.h) with no live holder of the
// writer lease blocklists that writer's client (as librbd does to a dead exclusive-lock holder) and
// waits for the OSD map that says so: from then on the OSDs refuse everything that client sends.
//
// Each writer records "EPOCH ADDRESS" (xattr "rbdvault.writer_client" on the marker) before it
// sets its odd epoch, in one xattr so the address is the one of that epoch's writer; a fence is
// only done while the epoch is still that odd value (a writer that ends cleanly moves it to even
// before it unlocks, so a clean writer is never fenced).
#pragma once

#include <rados/librados.h>

#include <cstdint>
#include <string>

#include "store/error.h"

namespace rbdvault::store {

inline constexpr const char* kWriterClientXattr = "rbdvault.writer_client";
// What a fenced client is told when the cluster refuses it (ESHUTDOWN, librados' EBLOCKLISTED).
inline constexpr const char* kFencedText =
    "this client was fenced off (blocklisted) by the backup cluster: another host found its writer lease lapsed "
    "and took over; nothing more is written";
// How long the OSDs refuse a fenced client: far beyond any op timeout, so nothing it sent lands.
inline constexpr uint32_t kFenceSeconds = 3600;

// The error of a failed librados call `what` (r < 0): fenced off (ESHUTDOWN) is kLocked, a cluster
// that does not answer kUnreachable, anything else kIO.
[[nodiscard]] StoreError rados_call_error(int r, const std::string& what);

// This client's address as the cluster sees it ("IP:PORT/NONCE"); throws StoreError.
[[nodiscard]] std::string rados_client_address(rados_t cluster);

// Records this client as the writer of odd epoch `epoch`; throws StoreError.
void record_writer_client(rados_t cluster, rados_ioctx_t io, uint64_t epoch);

// If the marker's epoch is still the odd `epoch` and the writer recorded for it is another client,
// blocklists that client for kFenceSeconds and waits for the OSD map. Returns the address fenced
// (empty: nothing to fence). A failed fence (no permission, a malformed record) is logged as a
// warning and returns empty: the lease checks still stand, as before fencing existed.
std::string fence_unfinished_writer(rados_t cluster, rados_ioctx_t io, uint64_t epoch, const std::string& pool);

// "EPOCH ADDRESS" -> (epoch, address), or epoch 0 if malformed: an odd epoch, one space, one
// printable address of at most 200 bytes naming one client (a nonzero nonce after its last '/').
struct WriterClient {
  uint64_t epoch = 0;
  std::string address;
};
[[nodiscard]] WriterClient parse_writer_client(const std::string& value);

}  // namespace rbdvault::store
