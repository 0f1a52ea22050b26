#include "store/pack_identities.h"

#include <cstdio>
#include <fstream>

#include "store/error.h"
#include "store/store_internal.h"

namespace fs = std::filesystem;

namespace rbdvault::store {
namespace {

constexpr std::string_view kHeader = "rbdvault pack identities 1 ";

std::optional<uint32_t> parse_pack_id(std::string_view hex) {
  if (hex.size() != 8) return std::nullopt;
  uint32_t id = 0;
  for (char c : hex) {
    const int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (d < 0) return std::nullopt;
    id = id * 16 + static_cast<uint32_t>(d);
  }
  return id;
}

}  // namespace

bool valid_identity(std::string_view identity) {
  if (identity.empty() || identity.size() > kMaxIdentityLength) return false;
  for (char c : identity)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' || c == '.' ||
          c == '_' || c == '-'))
      return false;
  return true;
}

std::string encode_pack_identities(const std::string& store_id, const PackIdentities& ids) {
  std::string out = std::string(kHeader) + store_id + "\n";
  char id[16];
  for (const auto& [pack, identity] : ids) {
    std::snprintf(id, sizeof id, "%08x", pack);
    out += std::string(id) + " " + identity + "\n";
  }
  return out;
}

std::optional<PackIdentities> parse_pack_identities(std::string_view text, const std::string& store_id) {
  if (text.size() > kMaxPackIdentitiesBytes) return std::nullopt;
  const std::string header = std::string(kHeader) + store_id + "\n";
  if (text.substr(0, header.size()) != header) return std::nullopt;
  text.remove_prefix(header.size());
  PackIdentities ids;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    if (nl == std::string_view::npos) return std::nullopt;  // a torn last line: not ours
    const std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl + 1);
    if (line.size() < 10 || line[8] != ' ') return std::nullopt;
    const auto pack = parse_pack_id(line.substr(0, 8));
    const std::string_view identity = line.substr(9);
    if (!pack || !valid_identity(identity)) return std::nullopt;
    if (!ids.empty() && ids.rbegin()->first >= *pack) return std::nullopt;  // ascending, no duplicates
    ids.emplace_hint(ids.end(), *pack, std::string(identity));
  }
  return ids;
}

std::optional<PackIdentities> read_pack_identities(const fs::path& dir, const std::string& store_id) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(dir / kPackIdentitiesFile, ec);
  if (ec || size > kMaxPackIdentitiesBytes) return std::nullopt;  // bounded before the allocation
  std::ifstream in(dir / kPackIdentitiesFile, std::ios::binary);
  std::string text(static_cast<size_t>(size), '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(text.size()))) return std::nullopt;
  return parse_pack_identities(text, store_id);
}

void write_pack_identities(const fs::path& dir, const std::string& store_id, const PackIdentities& ids) {
  write_file_durably(dir / kPackIdentitiesFile, encode_pack_identities(store_id, ids));
}

void remove_pack_identities(const fs::path& dir) {
  std::error_code ec;
  fs::remove(dir / kPackIdentitiesFile, ec);
  if (ec) throw StoreError(StoreError::Kind::kIO, "remove " + (dir / kPackIdentitiesFile).string() + ": " + ec.message());
}

}  // namespace rbdvault::store
