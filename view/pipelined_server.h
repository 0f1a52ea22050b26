// An httplib::Server that keeps a connection's read buffer from one request to the next, so that
// pipelined requests work. httplib 0.11 reads each request of a keep-alive connection through a
// fresh buffered stream: the start of a pipelined request, already in the previous stream's
// buffer, was lost. librbd's HTTP migration client pipelines every read; with one request per
// connection (the earlier way round it) it had to take down and rebuild its connection after each
// response, and librbd 16.2's reset path now and then crashed its process (SIGSEGV seen in
// `rbdvault restore --instant` and in rbd clients) or answered a read with the wrong bytes.
#pragma once

#include <httplib.h>

#include <chrono>

namespace rbdvault::view {

class PipelinedServer : public httplib::Server {
 public:
  // How long an idle connection is kept open for the next request: it holds a worker thread.
  void set_idle_timeout(std::chrono::milliseconds t) { idle_timeout_ = t; }

 private:
  // Overrides httplib's (a private virtual): one stream per connection, not per request.
  bool process_and_close_socket(socket_t sock) override;

  std::chrono::milliseconds idle_timeout_{2000};
};

}  // namespace rbdvault::view
