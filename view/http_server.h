// A read-only HTTP/1.1 server of a store's revisions (rbdvault serve, and instant restore's source:
// an RBD live-migration import whose raw stream is `url_for(...)`). cpp-httplib does the protocol;
// this class does routing, authorisation, ranges and reading verified bytes. Endpoints
// (docs/usage.md, `serve`):
//   GET|HEAD /v1/raw/POOL/IMAGE/REV   the revision's bytes; a single `Range` is answered 206
//   GET /v1/images                    images with their revision counts (JSON)
//   GET /v1/images/POOL/IMAGE         the image's revisions (JSON)
//   GET /                             the status page (HTML), when ServeOptions::status_page is set
// New revisions appear while serving: the store is reopened (at most once per ttl) when a request
// names something the current snapshot does not have, as `mount` does.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace rbdvault::store {
class ReadOnlyStore;
class Store;
}

namespace rbdvault::view {

struct ServeOptions {
  std::string host = "127.0.0.1";  // an address to bind (IPv4, IPv6 with or without [], or a name)
  uint16_t port = 0;               // 0: any free port (see RevisionServer::port())
  // Required by start() when `host` is not loopback. With a token every request needs
  // `Authorization: Bearer TOKEN` (else 401), loopback included.
  std::optional<std::string> token;
  // A capability path for clients that cannot send a header (librbd's http migration source): a
  // request for `/s/SECRET/v1/raw/...` is authorised by the secret in its path alone, for the raw
  // endpoint only; url_for() names it. Instant restore sets a fresh one per run (and a random
  // token, which locks every other path). Unset: no such paths.
  std::optional<std::string> path_secret;
  uint64_t cache_bytes = 64ull << 20;  // the verified-chunk cache shared by every request
  std::chrono::milliseconds ttl{1000};
  // Worker threads, each serving one connection (kept open while requests follow, see setup()). Reads
  // are I/O and hashing on 2 cores; 8 lets a migration's parallel reads and a browser share it.
  size_t threads = 8;
  // The error class of a failed request, as the CLI names it ("not-found", "damage", ...), and its
  // exit code. Unset: store errors by kind, anything else "failed" (tools/ passes agent::classify).
  std::function<std::pair<std::string, int>(const std::exception_ptr&)> classify;
  // The status page's HTML, built from the store the request sees. Unset: no page at `/`.
  std::function<std::string(store::ReadOnlyStore&)> status_page;
  // Called, on a server thread, with what went wrong whenever a request fails or a body is cut
  // short (a chunk failing its check, an unreadable pack): the one way a client that only retries,
  // like librbd's migration source, lets its owner learn that the source is broken. Must not block.
  std::function<void(const std::string& what)> on_failure;
  // Check each revision's block map against its digest before serving it (StoreView); false:
  // serve a mismatch anyway with a warning (salvage; instant restore, which checked it itself).
  bool check_digest = true;
};

class RevisionServer {
 public:
  // Binds and starts serving on background threads; returns once connections are accepted.
  // Throws StoreError: kInvalid when `host` is not loopback and there is no token, kNotFound when
  // `store_dir` is not there, kIO when the address cannot be bound (in use, not local).
  [[nodiscard]] static std::unique_ptr<RevisionServer> start(const std::string& store_dir, ServeOptions options);
  ~RevisionServer();  // stop()
  RevisionServer(const RevisionServer&) = delete;
  RevisionServer& operator=(const RevisionServer&) = delete;

  [[nodiscard]] uint16_t port() const;
  // HOST:PORT as clients reach it: IPv6 in brackets, a wildcard host (0.0.0.0, ::) as loopback.
  [[nodiscard]] std::string address() const;
  // http://address()[/s/SECRET]/v1/raw/POOL/IMAGE/REV, names percent-encoded.
  [[nodiscard]] std::string url_for(const std::string& pool, const std::string& image, uint64_t rev) const;
  // Returns once no request has begun or sent body bytes for `quiet`, after `at_most`, or once
  // stop() was called or `stop_early` says so. Instant
  // restore serves on like this after its commit: a client whose refresh read the image header
  // before the commit opens the migration source after it, and a source already gone fails that
  // client's read (ECONNREFUSED, an I/O error in a VM).
  void wait_until_quiet(std::chrono::milliseconds quiet, std::chrono::milliseconds at_most,
                        const std::function<bool()>& stop_early = {}) const;
  // Stops accepting, ends open connections (after the request in progress) and joins the threads.
  // Idempotent.
  void stop();

  class Impl;

 private:
  explicit RevisionServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rbdvault::view
