#include "view/http_server.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "store/error.h"
#include "store/store.h"
#include "view/block_cache.h"
#include "view/http_api.h"
#include "view/http_auth.h"
#include "view/http_range.h"
#include "view/pipelined_server.h"
#include "view/revision_bytes.h"
#include "view/store_view.h"

namespace rbdvault::view {
namespace {

// Bytes read from the store and handed to the socket per step of a response body. The socket
// write blocks while a slow client drains it, so this is all a response ever holds in memory.
constexpr size_t kBodyChunk = 1 << 20;
// Requests carry no body (the server is read-only); anything larger is refused before it is read.
constexpr size_t kMaxPayload = 64 << 10;
// Requests served on one connection before it is closed (a client then reconnects): bounds how
// long one client can keep a worker thread while others wait.
constexpr size_t kRequestsPerConnection = 10000;

std::string pct_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::pair<std::string, int> default_classify(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const store::StoreError& se) {
    using K = store::StoreError::Kind;
    switch (se.kind()) {
      case K::kNotFound: return {"not-found", 3};
      case K::kInvalid: return {"usage", 2};
      case K::kLocked: return {"locked", 4};
      case K::kCorrupt: return {"damage", 5};
      case K::kNoSpace: return {"no-space", 7};
      case K::kExists: return {"exists", 8};
      case K::kIO: return {"failed", 1};
      case K::kUnreachable: return {"unreachable", 6};
    }
  } catch (const std::logic_error&) {
    return {"internal", 70};
  } catch (...) {
  }
  return {"failed", 1};
}

}  // namespace

class RevisionServer::Impl {
 public:
  Impl(const std::string& dir, ServeOptions o)
      : o_(std::move(o)), view_(dir, std::nullopt, o_.ttl), cache_(o_.cache_bytes) {
    if (!o_.classify) o_.classify = default_classify;
  }

  void setup() {
    const size_t threads = std::max<size_t>(2, o_.threads);
    // httplib owns the queue it gets from this factory (its API takes a raw pointer).
    http_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    http_.set_payload_max_length(kMaxPayload);
    // cpp-httplib's default sets SO_REUSEPORT, with which a second server (another store, another
    // user's instant restore) binds the same port and the kernel splits the connections between
    // the two: a port in use must be refused instead. SO_REUSEADDR only lets a restart bind while
    // the old connections linger.
    http_.set_socket_options([](socket_t sock) {
      int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    });
    // Keep-alive with pipelining (view/pipelined_server.h): librbd's migration client sends its
    // reads one after another on one connection. An idle connection holds a worker thread, so it
    // is closed after a short while.
    http_.set_keep_alive_max_count(kRequestsPerConnection);
    http_.set_idle_timeout(std::chrono::milliseconds(2000));
    http_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      note_activity();
      // httplib would apply the Range header again to what we answer (and, for a streamed body,
      // without 416): ranges are ours alone. The request is a non-const local of httplib's.
      const_cast<httplib::Request&>(req).ranges.clear();
      if (o_.path_secret) {
        // /s/SECRET/v1/raw/...: authorised by the path; routed as the path without the prefix.
        const std::string prefix = "/s/" + *o_.path_secret + "/";
        if (req.path.size() > prefix.size() && secret_matches(std::string_view(req.path).substr(0, prefix.size()), prefix)) {
          std::string rest = req.path.substr(prefix.size() - 1);
          if (rest.rfind("/v1/raw/", 0) != 0) {
            error(res, 404, "not-found", 3, "no such endpoint");
            return httplib::Server::HandlerResponse::Handled;
          }
          const_cast<httplib::Request&>(req).path = std::move(rest);
          return httplib::Server::HandlerResponse::Unhandled;
        }
      }
      if (o_.token && !bearer_matches(req.get_header_value("Authorization"), *o_.token)) {
        res.set_header("WWW-Authenticate", "Bearer realm=\"rbdvault\"");
        error(res, 401, "unauthorized", 2, "a bearer token is required (Authorization: Bearer TOKEN)");
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    http_.set_exception_handler([this](const httplib::Request& req, httplib::Response& res, std::exception_ptr e) {
      fail(req, res, e);
    });
    http_.set_error_handler([this](const httplib::Request&, httplib::Response& res) {
      if (res.status == 404 && res.body.empty()) error(res, 404, "not-found", 3, "no such endpoint");
    });
    http_.set_logger([](const httplib::Request& req, const httplib::Response& res) {
      spdlog::debug("{}:{} {} {} {} -> {}", req.remote_addr, req.remote_port, req.method, req.path,
                    req.get_header_value("Range"), res.status);
    });
    const auto raw = [this](const httplib::Request& req, httplib::Response& res) { serve_raw(req, res); };
    http_.Get(R"(/v1/raw/([^/]+)/([^/]+)/([0-9]{1,19}))", raw);  // HEAD is routed to GET handlers
    http_.Get("/v1/images", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(images_json(*view_.get(true)), "application/json");
    });
    http_.Get(R"(/v1/images/([^/]+)/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
      auto snap = find_image(req.matches[1], req.matches[2]);
      if (!snap) return error(res, 404, "not-found", 3, "no backups of " + std::string(req.matches[1]) + "/" +
                                                         std::string(req.matches[2]) + " in this store");
      res.set_content(image_json(*snap, req.matches[1], req.matches[2]), "application/json");
    });
    if (o_.status_page) {
      http_.Get("/", [this](const httplib::Request&, httplib::Response& res) {
        auto snap = view_.get(true);
        res.set_header("Cache-Control", "no-store");
        res.set_content(o_.status_page(*snap->store), "text/html; charset=utf-8");
      });
    }
  }

  void serve_raw(const httplib::Request& req, httplib::Response& res) {
    const std::string pool = req.matches[1], image = req.matches[2];
    const uint64_t id = std::stoull(req.matches[3]);
    auto r = find_revision(pool, image, id);
    if (!r) return error(res, 404, "not-found", 3, "no revision " + std::to_string(id) + " of " + pool + "/" + image);
    view_.check_block_map(*r->store, r->rev, o_.check_digest);  // before any header: an error, not bytes
    res.set_header("Accept-Ranges", "bytes");
    res.set_header("ETag", "\"" + store::to_hex(r->rev.digest) + "\"");  // a revision never changes
    const uint64_t size = r->length;
    const ByteRange range = parse_range(req.get_header_value("Range"), size);
    uint64_t first = 0, length = size;
    switch (range.kind) {
      case ByteRange::kWhole: res.status = 200; break;
      case ByteRange::kPart:
        res.status = 206;
        first = range.first;
        length = range.length();
        res.set_header("Content-Range", "bytes " + std::to_string(range.first) + "-" + std::to_string(range.last) +
                                            "/" + std::to_string(size));
        break;
      case ByteRange::kUnsatisfiable:
      case ByteRange::kMultiple:
        res.set_header("Content-Range", "bytes */" + std::to_string(size));
        return error(res, 416, "usage", 2,
                     range.kind == ByteRange::kMultiple ? "only a single byte range is supported"
                                                        : "range starts past the end (" + std::to_string(size) + " bytes)");
    }
    if (length == 0) {  // httplib sends no Content-Length for an empty provider: an empty body does
      res.set_content("", "application/octet-stream");
      return;
    }
    auto bytes = std::make_shared<RevisionBytes>(std::move(*r));
    res.set_content_provider(
        static_cast<size_t>(length), "application/octet-stream",
        [this, bytes, first](size_t offset, size_t want, httplib::DataSink& sink) {
          std::vector<char> buf(std::min(want, kBodyChunk));
          note_activity();
          try {
            const size_t n = read_at(*bytes, cache_, first + offset, buf.data(), buf.size());
            if (n == 0) return false;  // cannot happen within the revision's length
            return sink.write(buf.data(), n);
          } catch (const std::exception& e) {
            // Headers are gone already: cutting the connection is the only way to say "not this".
            const std::string what = fmt::format("serving {}/{}@{} at {}: {}", bytes->rev.pool, bytes->rev.name,
                                                 bytes->rev.id, first + offset, e.what());
            spdlog::error("{}", what);
            if (o_.on_failure) o_.on_failure(what);
            return false;
          }
        });
  }

  // The revision from the current snapshot, or from a refreshed one when it is not there yet.
  std::optional<RevisionBytes> find_revision(const std::string& pool, const std::string& image, uint64_t id) {
    for (bool refresh : {false, true}) {
      auto snap = view_.get(refresh);
      if (auto* revs = snap->revisions(pool, image))
        for (const auto& r : *revs)
          if (r.id == id) return RevisionBytes{snap->store, r, 0, r.size};
    }
    return std::nullopt;
  }

  std::shared_ptr<const Snapshot> find_image(const std::string& pool, const std::string& image) {
    auto snap = view_.get(true);
    return snap->revisions(pool, image) ? snap : nullptr;
  }

  void error(httplib::Response& res, int status, const std::string& cls, int code, const std::string& message) {
    res.status = status;
    res.set_content(error_json(cls, code, message), "application/json");
  }

  void fail(const httplib::Request& req, httplib::Response& res, const std::exception_ptr& e) {
    auto [cls, code] = o_.classify(e);
    std::string what = "unknown error";
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      what = ex.what();
    } catch (...) {
    }
    spdlog::error("{} {}: {}", req.method, req.path, what);
    if (o_.on_failure) o_.on_failure(req.method + " " + req.path + ": " + what);
    const int status = cls == "not-found" ? 404 : cls == "locked" || cls == "unreachable" ? 503 : 500;
    error(res, status, cls, code, what);
  }

  void note_activity() { last_activity_ = std::chrono::steady_clock::now().time_since_epoch().count(); }
  std::chrono::steady_clock::time_point last_activity() const {
    return std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(last_activity_.load()));
  }

  ServeOptions o_;
  StoreView view_;
  BlockCache cache_;
  PipelinedServer http_;
  std::thread thread_;
  uint16_t port_ = 0;
  std::atomic<bool> stopped_{false}, listen_returned_{false};
  std::atomic<std::chrono::steady_clock::rep> last_activity_{0};
};

std::unique_ptr<RevisionServer> RevisionServer::start(const std::string& store_dir, ServeOptions options) {
  if (!is_loopback(options.host) && !options.token)
    throw store::StoreError(store::StoreError::Kind::kInvalid,
                            "serving on " + options.host + " (not loopback) needs a token (--token-file)");
  if (options.token && options.token->empty())
    throw store::StoreError(store::StoreError::Kind::kInvalid, "the token is empty");
  auto impl = std::make_unique<Impl>(store_dir, std::move(options));
  impl->setup();
  std::string host = impl->o_.host;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const int port = impl->o_.port == 0 ? impl->http_.bind_to_any_port(host)
                                      : (impl->http_.bind_to_port(host, impl->o_.port) ? impl->o_.port : -1);
  if (port <= 0)
    throw store::StoreError(store::StoreError::Kind::kIO, "cannot listen on " + impl->o_.host + ":" +
                                                              std::to_string(impl->o_.port) + " (in use, or not an address of this host)");
  impl->port_ = static_cast<uint16_t>(port);
  Impl* p = impl.get();
  impl->thread_ = std::thread([p] {
    if (!p->http_.listen_after_bind()) spdlog::error("the HTTP server stopped accepting connections");
    p->listen_returned_ = true;
  });
  // stop() before the accept loop runs would be lost (httplib checks is_running()): wait for it.
  while (!impl->http_.is_running() && !impl->listen_returned_) std::this_thread::yield();
  return std::unique_ptr<RevisionServer>(new RevisionServer(std::move(impl)));
}

RevisionServer::RevisionServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

RevisionServer::~RevisionServer() { stop(); }

uint16_t RevisionServer::port() const { return impl_->port_; }

std::string RevisionServer::address() const {
  std::string host = impl_->o_.host;
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  if (host == "0.0.0.0" || host.empty()) host = "127.0.0.1";
  if (host == "::") host = "::1";
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return host + ":" + std::to_string(impl_->port_);
}

std::string RevisionServer::url_for(const std::string& pool, const std::string& image, uint64_t rev) const {
  const std::string secret = impl_->o_.path_secret ? "/s/" + *impl_->o_.path_secret : "";
  return "http://" + address() + secret + "/v1/raw/" + pct_encode(pool) + "/" + pct_encode(image) + "/" +
         std::to_string(rev);
}

void RevisionServer::wait_until_quiet(std::chrono::milliseconds quiet, std::chrono::milliseconds at_most,
                                      const std::function<bool()>& stop_early) const {
  constexpr auto kPoll = std::chrono::milliseconds(50);
  const auto start = std::chrono::steady_clock::now(), give_up = start + at_most;
  for (auto now = start; now < give_up; now = std::chrono::steady_clock::now()) {
    if (impl_->stopped_ || (stop_early && stop_early())) return;
    if (now - std::max(start, impl_->last_activity()) >= quiet) return;
    std::this_thread::sleep_for(kPoll);
  }
}

void RevisionServer::stop() {
  if (impl_->stopped_.exchange(true)) return;
  impl_->http_.stop();
  if (impl_->thread_.joinable()) impl_->thread_.join();
}

}  // namespace rbdvault::view
