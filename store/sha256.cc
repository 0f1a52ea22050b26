#include "store/sha256.h"

#include <openssl/evp.h>

#include <memory>

#include "store/error.h"

namespace rbdvault::store {

Hash sha256(std::string_view a, std::string_view b) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  Hash out{};
  unsigned int len = 0;
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), a.data(), a.size()) != 1 ||
      (!b.empty() && EVP_DigestUpdate(ctx.get(), b.data(), b.size()) != 1) ||
      EVP_DigestFinal_ex(ctx.get(), out.data(), &len) != 1)
    throw StoreError(StoreError::Kind::kIO, "SHA-256 failed in OpenSSL");
  return out;
}

Hash sha256(std::string_view data) { return sha256(data, {}); }

std::string to_hex(const Hash& hash) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  s.reserve(64);
  for (uint8_t b : hash) {
    s.push_back(digits[b >> 4]);
    s.push_back(digits[b & 15]);
  }
  return s;
}

}  // namespace rbdvault::store
