// SHA-256 (OpenSSL) and the 32-byte hash type used to address chunks.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace rbdvault::store {

using Hash = std::array<uint8_t, 32>;

Hash sha256(std::string_view data);
// SHA-256 over the concatenation of two byte strings, without copying them together.
Hash sha256(std::string_view a, std::string_view b);
std::string to_hex(const Hash& hash);
inline std::string_view as_view(const Hash& h) { return {reinterpret_cast<const char*>(h.data()), h.size()}; }

}  // namespace rbdvault::store
