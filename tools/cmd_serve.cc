// rbdvault serve: the store's revisions over read-only HTTP until SIGINT/SIGTERM. The server is
// view/http_server.h; this file parses the options, reads the token and waits for the signal.
#include <chrono>
#include <ctime>
#include <iostream>
#include <thread>

#include "agent/status.h"
#include "agent/status_page.h"
#include "tools/command.h"
#include "tools/signals.h"
#include "view/http_auth.h"
#include "view/http_server.h"

namespace rbdvault::tools {
namespace {

constexpr agent::Range kCacheMibRange{0, 4096};
// How often the main thread looks at the signal flags: the latency of a clean stop, nothing else.
constexpr auto kSignalPoll = std::chrono::milliseconds(100);

int cmd_serve(const Args& a) {
  no_positional(a);
  view::ServeOptions o;
  o.cache_bytes = static_cast<uint64_t>(whole_option(a, "cache-size", kCacheMibRange)) << 20;
  o.check_digest = !a.flag("skip-digest-check");
  if (a.str("listen").empty()) throw UsageError("serve: --listen HOST:PORT is required");
  std::tie(o.host, o.port) = listen_option(a);
  // Before any thread starts: the server's, librados' and RocksDB's (a rados: store's index is
  // brought up to date by require_store) all inherit the blocked mask, else SIGTERM may kill.
  SignalFlags signals("serving ends");
  const std::string store_dir = require_store(a);
  if (!a.str("token-file").empty()) {
    try {
      o.token = view::read_token_file(a.str("token-file"));
    } catch (const store::StoreError& e) {
      if (e.kind() == store::StoreError::Kind::kInvalid) throw UsageError(e.what());
      throw;
    }
  }
  if (!view::is_loopback(o.host) && !o.token)
    throw UsageError("serve: listening on " + o.host + " (not loopback) needs --token-file");
  if (!store::Store::is_store(store_dir)) throw UsageError("serve: " + store_dir + " is not an rbdvault store");
  o.classify = [](const std::exception_ptr& e) {
    const agent::ErrorClass c = agent::classify(e);
    return std::make_pair(std::string(agent::class_name(c)), agent::exit_code(c));
  };
  o.status_page = [](store::ReadOnlyStore& st) {
    return agent::status_page(agent::collect_status(st), static_cast<int64_t>(std::time(nullptr)));
  };
  auto server = view::RevisionServer::start(store_dir, o);
  std::string shown = o.host.find(':') != std::string::npos ? "[" + o.host + "]" : o.host;
  // The URL on stdout (with the port chosen when --listen asked for port 0), the rest on stderr.
  std::cout << "http://" << shown << ":" << server->port() << "/" << std::endl;
  if (!a.quiet())
    std::cerr << "serving " << store_dir << " read-only" << (o.token ? " (bearer token required)" : "")
              << "; Ctrl-C ends it\n";
  while (!signals.stop_requested()) std::this_thread::sleep_for(kSignalPoll);
  server->stop();
  return 0;
}

}  // namespace

std::vector<Command> serve_commands() {
  std::vector<Command> c;
  c.push_back({"serve", "--store DIR --listen HOST:PORT [--token-file FILE]",
               "Serve the store's revisions over read-only HTTP/1.1 (raw bytes with ranges, JSON lists, a "
               "status page at /) until SIGINT or SIGTERM. Off loopback a bearer token is required.",
               kStoreOption,
               [](po::options_description& o) {
                 // clang-format off
                 o.add_options()
                     ("listen", po::value<std::string>()->value_name("HOST:PORT"),
                      "address to listen on ([ADDR]:PORT for IPv6; port 0: any free port, printed)")
                     ("token-file", po::value<std::string>()->value_name("FILE"),
                      "bearer token, first line of FILE (mode 600 or stricter); required off loopback")
                     ("cache-size", po::value<std::string>()->default_value("64")->value_name("MIB"),
                      "block cache for repeated reads, MiB (0 to 4096)")
                     ("skip-digest-check", po::bool_switch(),
                      "serve a revision whose block map does not match its digest (salvage only)");
                 // clang-format on
               },
               cmd_serve});
  return c;
}

}  // namespace rbdvault::tools
