#include "view/pipelined_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

namespace rbdvault::view {
namespace {

// Waits up to `timeout` for `events` on `sock`, in slices, so that a stopped server (`running`
// false) ends an idle wait soon. Returns whether the socket became ready.
template <typename Running>
bool wait_for(int sock, short events, std::chrono::milliseconds timeout, const Running& running) {
  constexpr std::chrono::milliseconds kSlice{100};
  auto left = timeout;
  for (;;) {
    pollfd p{sock, events, 0};
    const auto slice = std::min(left, kSlice);
    const int r = ::poll(&p, 1, static_cast<int>(slice.count()));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
    if (r == 0) left -= slice;
    if (left.count() <= 0 || !running()) return false;
  }
}

void ip_and_port(const sockaddr_storage& addr, std::string& ip, int& port) {
  char host[NI_MAXHOST] = {}, serv[NI_MAXSERV] = {};
  if (::getnameinfo(reinterpret_cast<const sockaddr*>(&addr), sizeof addr, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
    ip = host;
    port = std::atoi(serv);
  }
}

// A socket with a read buffer that lives as long as the connection.
class ConnectionStream final : public httplib::Stream {
 public:
  ConnectionStream(int sock, std::chrono::milliseconds read_timeout, std::chrono::milliseconds write_timeout)
      : sock_(sock), read_timeout_(read_timeout), write_timeout_(write_timeout), buf_(16 * 1024) {}

  bool is_readable() const override { return buffered() || wait_for(sock_, POLLIN, read_timeout_, always); }
  bool is_writable() const override { return wait_for(sock_, POLLOUT, write_timeout_, always); }

  ssize_t read(char* ptr, size_t size) override {
    if (!buffered()) {
      if (!is_readable()) return -1;
      ssize_t n;
      do n = ::recv(sock_, buf_.data(), buf_.size(), 0);
      while (n < 0 && errno == EINTR);
      if (n <= 0) return n;
      begin_ = 0;
      end_ = static_cast<size_t>(n);
    }
    const size_t n = std::min(size, end_ - begin_);
    std::memcpy(ptr, buf_.data() + begin_, n);
    begin_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    ssize_t n;
    do n = ::send(sock_, ptr, size, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (::getpeername(sock_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) ip_and_port(addr, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (::getsockname(sock_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) ip_and_port(addr, ip, port);
  }
  socket_t socket() const override { return sock_; }

  // Whether a next request has begun (buffered, or bytes on the socket) within `idle`.
  template <typename Running>
  bool next_request(std::chrono::milliseconds idle, const Running& running) const {
    return buffered() || wait_for(sock_, POLLIN, idle, running);
  }

 private:
  static bool always() { return true; }
  bool buffered() const { return begin_ < end_; }

  const int sock_;
  const std::chrono::milliseconds read_timeout_, write_timeout_;
  std::vector<char> buf_;
  size_t begin_ = 0, end_ = 0;
};

}  // namespace

bool PipelinedServer::process_and_close_socket(socket_t sock) {
  using std::chrono::milliseconds;
  using std::chrono::seconds;
  const auto read_timeout = std::chrono::duration_cast<milliseconds>(
      seconds(read_timeout_sec_) + std::chrono::microseconds(read_timeout_usec_));
  const auto write_timeout = std::chrono::duration_cast<milliseconds>(
      seconds(write_timeout_sec_) + std::chrono::microseconds(write_timeout_usec_));
  // A response goes out as headers and body in separate writes: with Nagle's algorithm the body
  // of a kept-alive connection waits for the client's delayed ACK (40 ms per read with librbd).
  const int one = 1;
  ::setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ConnectionStream stream(sock, read_timeout, write_timeout);
  const auto running = [this] { return svr_sock_ != INVALID_SOCKET; };
  bool ok = false;
  for (size_t left = keep_alive_max_count_; left > 0 && running() && stream.next_request(idle_timeout_, running);
       --left) {
    bool closed = false;
    ok = process_request(stream, /*close_connection=*/left == 1, closed, nullptr);
    if (!ok || closed) break;
  }
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
  return ok;
}

}  // namespace rbdvault::view
