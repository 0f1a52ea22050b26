#include "view/http_auth.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "store/error.h"
#include "store/sha256.h"

namespace rbdvault::view {
namespace {

constexpr size_t kMinToken = 16, kMaxToken = 4096;

[[noreturn]] void refuse(const std::string& why) { throw store::StoreError(store::StoreError::Kind::kInvalid, why); }

}  // namespace

bool is_loopback(std::string_view host) {
  if (host == "localhost") return true;
  std::string h(host);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  in_addr v4{};
  if (inet_pton(AF_INET, h.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, h.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;
}

bool secret_matches(std::string_view given, std::string_view secret) {
  // Digests have a fixed length: the comparison below takes the same time whatever was sent.
  const store::Hash a = store::sha256(given), b = store::sha256(secret);
  unsigned diff = given.empty() ? 1u : 0u;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned>(a[i] ^ b[i]);
  return diff == 0;
}

bool bearer_matches(std::string_view authorization, std::string_view token) {
  constexpr std::string_view kScheme = "Bearer ";
  std::string_view given;
  if (authorization.size() > kScheme.size() && authorization.substr(0, kScheme.size()) == kScheme)
    given = authorization.substr(kScheme.size());
  return secret_matches(given, token);
}

std::string read_token_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) throw store::StoreError(store::StoreError::Kind::kNotFound, "token file " + path + " does not exist");
    refuse("cannot open token file " + path + ": " + std::strerror(errno));
  }
  struct stat st {};
  std::string data;
  const bool ok = fstat(fd, &st) == 0;
  const bool too_open = ok && (st.st_mode & 077) != 0;  // group or others may read or write it
  if (ok && S_ISREG(st.st_mode) && !too_open && st.st_size <= static_cast<off_t>(kMaxToken + 2)) {
    data.resize(static_cast<size_t>(st.st_size));
    size_t got = 0;
    while (got < data.size()) {
      const ssize_t n = ::read(fd, data.data() + got, data.size() - got);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    data.resize(got);
  }
  ::close(fd);
  if (!ok || !S_ISREG(st.st_mode)) refuse("token file " + path + " is not a regular file");
  if (too_open)
    refuse("token file " + path + " is accessible by group or others (mode " +
           std::to_string((st.st_mode >> 6) & 7) + std::to_string((st.st_mode >> 3) & 7) + std::to_string(st.st_mode & 7) +
           "); chmod 600 it");
  const size_t eol = data.find('\n');
  if (eol != std::string::npos) data.resize(eol);
  while (!data.empty() && (data.back() == '\r' || data.back() == ' ' || data.back() == '\t')) data.pop_back();
  while (!data.empty() && (data.front() == ' ' || data.front() == '\t')) data.erase(0, 1);
  if (data.size() < kMinToken || data.size() > kMaxToken)
    refuse("token file " + path + ": the token must be 16 to 4096 characters on its first line");
  return data;
}

std::string random_secret_hex(size_t bytes) {
  std::string raw(bytes, '\0');
  for (size_t got = 0; got < bytes;) {
    const ssize_t n = ::getrandom(raw.data() + got, bytes - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw store::StoreError(store::StoreError::Kind::kIO, std::string("getrandom: ") + std::strerror(errno));
    }
    got += static_cast<size_t>(n);
  }
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) out += kHex[c >> 4], out += kHex[c & 15];
  return out;
}

}  // namespace rbdvault::view
