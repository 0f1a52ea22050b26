// Who may read revisions over HTTP: a bearer token, required whenever the server listens on an
// address other than loopback (revisions are whole disks: anyone who can read them owns the data).
#pragma once

#include <string>
#include <string_view>

namespace rbdvault::view {

// True for 127.0.0.0/8, ::1, ::ffff:127.x.y.z and "localhost": addresses other hosts cannot reach.
// Anything else (0.0.0.0, ::, a host name, an interface address) counts as exposed.
[[nodiscard]] bool is_loopback(std::string_view host);

// Whether an `Authorization` header value carries `token` ("Bearer TOKEN"). Compares SHA-256
// digests of both in constant time, so neither the length nor a prefix of the token leaks by timing.
[[nodiscard]] bool bearer_matches(std::string_view authorization, std::string_view token);
// Whether `given` equals `secret` (non-empty), in constant time as above.
[[nodiscard]] bool secret_matches(std::string_view given, std::string_view secret);

// The token in `path`: its first line, without surrounding white space. Refused (StoreError kInvalid,
// one line) like ssh refuses a private key: when group or others may read or write it, when it is
// not a regular file, or when the token is shorter than 16 or longer than 4096 characters.
[[nodiscard]] std::string read_token_file(const std::string& path);

// A fresh secret from the kernel's random source: `bytes` bytes as lower-case hex.
[[nodiscard]] std::string random_secret_hex(size_t bytes = 32);

}  // namespace rbdvault::view
