// What a host's index cache of a shared store (rados_cache.h) remembers about the packs its last
// build read: each pack's identity (ObjectStore::identity) when it was read whole and found intact.
// A later refresh reads again only the packs that are new or no longer the same object.
//
// The file `pack.identities` in the index directory (docs/format.md §16.5):
//   rbdvault pack identities 1 STOREID\n
//   PACK IDENTITY\n            (PACK: 8 lowercase hex digits, ascending; IDENTITY: 1-64 of [A-Za-z0-9/._-])
// It is only a cache: a missing, foreign or damaged file means every pack is read again.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace rbdvault::store {

inline constexpr const char* kPackIdentitiesFile = "pack.identities";
inline constexpr size_t kMaxIdentityLength = 64;
inline constexpr size_t kMaxPackIdentitiesBytes = 64u << 20;  // ~1.3 million packs, ~80 PiB

using PackIdentities = std::map<uint32_t, std::string>;

[[nodiscard]] std::string encode_pack_identities(const std::string& store_id, const PackIdentities& ids);
// nullopt unless `text` is a well-formed file of the store `store_id`.
[[nodiscard]] std::optional<PackIdentities> parse_pack_identities(std::string_view text, const std::string& store_id);
[[nodiscard]] bool valid_identity(std::string_view identity);

// Reading never throws (nullopt: read every pack); writing is atomic (temporary file and rename)
// and durable, and throws StoreError(kIO) when it fails.
[[nodiscard]] std::optional<PackIdentities> read_pack_identities(const std::filesystem::path& dir,
                                                                  const std::string& store_id);
void write_pack_identities(const std::filesystem::path& dir, const std::string& store_id, const PackIdentities& ids);
void remove_pack_identities(const std::filesystem::path& dir);

}  // namespace rbdvault::store
