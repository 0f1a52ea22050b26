// The host-local side of a RADOS store (rados_object_store.h): its "index directory" holds what a
// local store directory holds apart from the data area — a copy of the pool's marker, index/
// (RocksDB), the lock files and the operation log — plus rados.backend, which says where the data
// area is (open_object_store reads it), and rados.epoch, the pool epoch the index reflects.
//
// The index is a cache of the pool. At every open it is compared with the pool (marker and epoch);
// if it is missing, belongs to another store or another host wrote since, it is rebuilt from the
// pool's manifests and packs (Store::rebuild_index). The epoch is recorded only when nothing
// changed during the rebuild and no writer was at work (an odd epoch with a live lease) when it
// started nor when it ended: otherwise
// the next open rebuilds again, so a reader never keeps a view older than the last finished write.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "store/rados_object_store.h"
#include "store/store.h"

namespace rbdvault::store {

inline constexpr const char* kRadosBackendFile = "rados.backend";
inline constexpr const char* kRadosEpochFile = "rados.epoch";
inline constexpr const char* kRadosRemovalsFile = "rados.removals";
inline constexpr const char* kDefaultIndexRoot = "/var/lib/rbdvault";

// DIR/rados.backend; nullopt if absent (a local store).
[[nodiscard]] std::optional<RadosLocation> read_backend_file(const std::filesystem::path& dir);
void write_backend_file(const std::filesystem::path& dir, const RadosLocation& where);
[[nodiscard]] std::optional<uint64_t> read_cache_epoch(const std::filesystem::path& dir);
void write_cache_epoch(const std::filesystem::path& dir, uint64_t epoch);
// DIR/rados.removals: the pool's removals counter (RadosObjectStore::removals) the index reflects.
[[nodiscard]] std::optional<uint64_t> read_cache_removals(const std::filesystem::path& dir);
void write_cache_removals(const std::filesystem::path& dir, uint64_t removals);

// How a command names the store of `dir` in a hint: "rados:POOL[/NS] --index-dir DIR" for a
// RADOS store's index directory (what the operator typed), else DIR.
[[nodiscard]] std::string store_option_text(const std::filesystem::path& dir);

// /var/lib/rbdvault/rados-POOL[@NAMESPACE]: the index directory when --index-dir is not given.
[[nodiscard]] std::filesystem::path default_index_dir(const RadosLocation& where);

// Creates a store in the pool (its marker object, exclusively: kExists if there is one) and its
// index directory `index_dir` (absent or empty).
void init_rados_store(const RadosLocation& where, const std::filesystem::path& index_dir,
                      const StoreOptions& options);
// Makes `index_dir` the up-to-date index directory of the store in the pool (see above); then
// Store::open(index_dir, ...) opens it. kInvalid if the pool holds no store.
void refresh_rados_cache(const RadosLocation& where, const std::filesystem::path& index_dir);

}  // namespace rbdvault::store
