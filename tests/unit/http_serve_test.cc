// The HTTP server of revisions (view/http_server.h) and its pure parts: Range parsing, the bearer
// check, the token file's permissions. The server tests use a real store and a real socket.
#include <gtest/gtest.h>
#include <httplib.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <mutex>

#include <rocksdb/db.h>

#include "store/index.h"
#include "store/pack.h"
#include "store_fixture.h"
#include "view/http_auth.h"
#include "view/http_range.h"
#include "view/http_server.h"

namespace rbdvault::view {
namespace {

TEST(HttpRange, WholeWhenAbsentOrInvalid) {
  EXPECT_EQ(parse_range("", 100).kind, ByteRange::kWhole);
  EXPECT_EQ(parse_range("items=0-5", 100).kind, ByteRange::kWhole);
  EXPECT_EQ(parse_range("bytes=5-2", 100).kind, ByteRange::kWhole);   // last < first: invalid, ignored
  EXPECT_EQ(parse_range("bytes=x-2", 100).kind, ByteRange::kWhole);
  EXPECT_EQ(parse_range("bytes=-", 100).kind, ByteRange::kWhole);
  EXPECT_EQ(parse_range("bytes=99999999999999999999-", 100).kind, ByteRange::kWhole);  // > 2^64
}

TEST(HttpRange, SingleRanges) {
  auto r = parse_range("bytes=0-0", 100);
  ASSERT_EQ(r.kind, ByteRange::kPart);
  EXPECT_EQ(r.first, 0u);
  EXPECT_EQ(r.length(), 1u);
  r = parse_range("bytes=10-19", 100);
  EXPECT_EQ(r.first, 10u);
  EXPECT_EQ(r.last, 19u);
  r = parse_range("bytes=90-500", 100);  // an end past the size is clamped
  EXPECT_EQ(r.kind, ByteRange::kPart);
  EXPECT_EQ(r.last, 99u);
  r = parse_range("bytes=95-", 100);
  EXPECT_EQ(r.first, 95u);
  EXPECT_EQ(r.last, 99u);
  r = parse_range("bytes=-10", 100);  // the last 10 bytes
  EXPECT_EQ(r.first, 90u);
  EXPECT_EQ(r.last, 99u);
  r = parse_range("bytes=-1000", 100);  // more than there is: everything
  EXPECT_EQ(r.first, 0u);
  EXPECT_EQ(r.last, 99u);
  r = parse_range(" Bytes=1-2 ", 100);
  EXPECT_EQ(r.kind, ByteRange::kPart);
  EXPECT_EQ(r.first, 1u);
}

TEST(HttpRange, UnsatisfiableAndMultiple) {
  EXPECT_EQ(parse_range("bytes=100-", 100).kind, ByteRange::kUnsatisfiable);
  EXPECT_EQ(parse_range("bytes=100-200", 100).kind, ByteRange::kUnsatisfiable);
  EXPECT_EQ(parse_range("bytes=-0", 100).kind, ByteRange::kUnsatisfiable);
  EXPECT_EQ(parse_range("bytes=0-", 0).kind, ByteRange::kUnsatisfiable);
  EXPECT_EQ(parse_range("bytes=-5", 0).kind, ByteRange::kUnsatisfiable);
  EXPECT_EQ(parse_range("bytes=0-1,5-6", 100).kind, ByteRange::kMultiple);
}

TEST(HttpAuth, Loopback) {
  for (const char* h : {"127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "::ffff:127.0.0.1"})
    EXPECT_TRUE(is_loopback(h)) << h;
  for (const char* h : {"0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "example.com", "", "[::]", "::ffff:10.0.0.1"})
    EXPECT_FALSE(is_loopback(h)) << h;
}

TEST(HttpAuth, BearerMatches) {
  const std::string token = "0123456789abcdef-secret";
  EXPECT_TRUE(bearer_matches("Bearer " + token, token));
  EXPECT_FALSE(bearer_matches("Bearer " + token + "x", token));
  EXPECT_FALSE(bearer_matches("Bearer " + token.substr(1), token));
  EXPECT_FALSE(bearer_matches("Basic " + token, token));
  EXPECT_FALSE(bearer_matches(token, token));
  EXPECT_FALSE(bearer_matches("", token));
  EXPECT_FALSE(bearer_matches("Bearer ", ""));  // an empty token never matches
}

class TokenFile : public ::testing::Test {
 protected:
  std::string path_ = ::testing::TempDir() + "rbdvault-token-" + std::to_string(::getpid());
  void write(const std::string& content, mode_t mode) {
    std::ofstream(path_, std::ios::trunc) << content;
    ASSERT_EQ(::chmod(path_.c_str(), mode), 0);
  }
  void TearDown() override { std::remove(path_.c_str()); }
  // The error's message, "" when read_token_file accepted the file.
  std::string refusal() {
    try {
      (void)read_token_file(path_);
    } catch (const store::StoreError& e) {
      return e.what();
    }
    return "";
  }
};

TEST_F(TokenFile, ReadsTheFirstLine) {
  write("  0123456789abcdef0123 \nsecond line\n", 0600);
  EXPECT_EQ(read_token_file(path_), "0123456789abcdef0123");
  write("0123456789abcdef0123", 0400);
  EXPECT_EQ(read_token_file(path_), "0123456789abcdef0123");
}

TEST_F(TokenFile, RefusesOpenPermissionsAndShortTokens) {
  for (mode_t mode : {0644, 0640, 0604, 0660, 0602}) {
    write("0123456789abcdef0123\n", mode);
    EXPECT_NE(refusal().find("accessible by group or others"), std::string::npos) << std::oct << mode;
  }
  write("short\n", 0600);
  EXPECT_THROW((void)read_token_file(path_), store::StoreError);
  EXPECT_THROW((void)read_token_file(path_ + ".missing"), store::StoreError);
}

class HttpServer : public store::testing::StoreTest {
 protected:
  std::unique_ptr<RevisionServer> start(ServeOptions o = {}) {
    return RevisionServer::start(dir_.string(), std::move(o));
  }
};

TEST_F(HttpServer, RawBytesHeadAndRanges) {
  // Three and a half blocks, with a hole: what a reader gets must be exactly the image.
  std::string image = random_bytes(3 * store::testing::kBs + 1000, 7);
  std::fill(image.begin() + store::testing::kBs, image.begin() + 2 * store::testing::kBs, '\0');
  const auto rev = put("disk", image);
  store_.reset();  // the server reads the committed store like any other reader
  auto server = start();
  httplib::Client cli("127.0.0.1", server->port());
  const std::string path = "/v1/raw/rbd/disk/" + std::to_string(rev.id);
  EXPECT_EQ(server->url_for("rbd", "disk", rev.id), "http://127.0.0.1:" + std::to_string(server->port()) + path);

  auto head = cli.Head(path.c_str());
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->get_header_value("Content-Length"), std::to_string(image.size()));
  EXPECT_EQ(head->get_header_value("Accept-Ranges"), "bytes");
  EXPECT_TRUE(head->body.empty());

  auto all = cli.Get(path.c_str());
  ASSERT_TRUE(all);
  EXPECT_EQ(all->status, 200);
  EXPECT_TRUE(all->body == image);

  const uint64_t n = image.size();
  const std::vector<std::pair<uint64_t, uint64_t>> ranges = {
      {0, 0}, {0, 4095}, {store::testing::kBs - 10, 2 * store::testing::kBs + 10}, {n - 1000, n - 1}, {n - 1, n - 1}};
  for (auto [a, b] : ranges) {
    auto res = cli.Get(path.c_str(), {{"Range", "bytes=" + std::to_string(a) + "-" + std::to_string(b)}});
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 206) << a << "-" << b;
    EXPECT_EQ(res->get_header_value("Content-Range"),
              "bytes " + std::to_string(a) + "-" + std::to_string(b) + "/" + std::to_string(n));
    EXPECT_TRUE(res->body == image.substr(a, b - a + 1)) << a << "-" << b;
  }
  auto past = cli.Get(path.c_str(), {{"Range", "bytes=" + std::to_string(n) + "-"}});
  ASSERT_TRUE(past);
  EXPECT_EQ(past->status, 416);
  EXPECT_EQ(past->get_header_value("Content-Range"), "bytes */" + std::to_string(n));
  auto multi = cli.Get(path.c_str(), {{"Range", "bytes=0-1,4-5"}});
  ASSERT_TRUE(multi);
  EXPECT_EQ(multi->status, 416);

  auto missing = cli.Get(("/v1/raw/rbd/disk/" + std::to_string(rev.id + 100)).c_str());
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_NE(missing->body.find("\"not-found\""), std::string::npos);
  auto other = cli.Get("/v1/raw/rbd/nosuch/1");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
  server->stop();
  server->stop();  // idempotent
}

// Pipelined requests on one connection, as librbd's migration client sends its reads: every one is
// answered, in order, on that connection. httplib 0.11 lost a pipelined request's start in the
// previous request's buffer; one request per connection made librbd tear down and rebuild its
// connection after each read, a path on which librbd 16.2 crashed now and then.
TEST_F(HttpServer, PipelinedRequestsAreAnsweredInOrderOnOneConnection) {
  const std::string image = random_bytes(4 * store::testing::kBs, 13);
  const auto rev = put("disk", image);
  store_.reset();
  auto server = start();
  const int sock = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(sock, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(server->port());
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const std::string path = "/v1/raw/rbd/disk/" + std::to_string(rev.id);
  const std::vector<std::pair<uint64_t, uint64_t>> ranges = {
      {0, 4095}, {3 * store::testing::kBs, 3 * store::testing::kBs + 99}, {70000, 70000 + 8191}, {5, 5}};
  std::string requests;
  for (auto [a, b] : ranges)
    requests += "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=" + std::to_string(a) + "-" +
                std::to_string(b) + "\r\n\r\n";
  ASSERT_EQ(::send(sock, requests.data(), requests.size(), MSG_NOSIGNAL), static_cast<ssize_t>(requests.size()));
  // Reads the responses one after another: headers, then Content-Length bytes of body.
  std::string in;
  auto fill = [&](size_t need) {
    char buf[65536];
    while (in.size() < need) {
      timeval tv{10, 0};
      ::setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      const ssize_t n = ::recv(sock, buf, sizeof buf, 0);
      if (n <= 0) return false;
      in.append(buf, static_cast<size_t>(n));
    }
    return true;
  };
  for (auto [a, b] : ranges) {
    size_t end;
    while ((end = in.find("\r\n\r\n")) == std::string::npos)
      ASSERT_TRUE(fill(in.size() + 1)) << "no response for bytes " << a << "-" << b << " on the same connection";
    const std::string head = in.substr(0, end);
    EXPECT_EQ(head.rfind("HTTP/1.1 206", 0), 0u) << head;
    EXPECT_NE(head.find("Content-Range: bytes " + std::to_string(a) + "-" + std::to_string(b) + "/"), std::string::npos)
        << head;
    const size_t len_at = head.find("Content-Length: ");
    ASSERT_NE(len_at, std::string::npos) << head;
    const size_t len = std::stoul(head.substr(len_at + 16));
    ASSERT_TRUE(fill(end + 4 + len));
    EXPECT_TRUE(in.substr(end + 4, len) == image.substr(a, b - a + 1)) << a << "-" << b;
    in.erase(0, end + 4 + len);
  }
  ::close(sock);
  server->stop();
}

// A port in use is refused: with SO_REUSEPORT (cpp-httplib's default) a second server bound the
// same port and the two shared its connections, each answering from its own store. (Found in review.)
TEST_F(HttpServer, APortInUseIsRefused) {
  (void)put("disk", random_bytes(store::testing::kBs, 9));
  store_.reset();
  auto first = start();
  ServeOptions o;
  o.port = first->port();
  try {
    auto second = start(std::move(o));
    ADD_FAILURE() << "a second server listens on port " << first->port();
  } catch (const store::StoreError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot listen"), std::string::npos) << e.what();
  }
  first->stop();
}

// A block map that lost an entry would serve that block as zeros, each chunk passing its own check:
// the revision's digest is checked before its first byte, as a restore checks it. (Found in review.)
TEST_F(HttpServer, ARevisionWhoseBlockMapLostAnEntryIsNotServed) {
  const std::string image = random_bytes(3 * store::testing::kBs, 11);
  const auto rev = put("disk", image);
  ASSERT_TRUE(store_->index()
                  .db_for_tests()
                  .Delete(rocksdb::WriteOptions(), store::block_key(rev.image, 1, rev.id))
                  .ok());
  store_.reset();
  auto server = start();
  httplib::Client cli("127.0.0.1", server->port());
  for (int attempt = 0; attempt < 2; ++attempt) {  // a failed check is not remembered as passed
    auto res = cli.Get(("/v1/raw/rbd/disk/" + std::to_string(rev.id)).c_str());
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 500);
    EXPECT_NE(res->body.find("does not match its recorded digest"), std::string::npos)
        << res->body.size() << " bytes of body, not the error";
    EXPECT_EQ(res->body.find(image.substr(0, 64)), std::string::npos) << "bytes of the revision were sent";
  }
  server->stop();
  // --skip-digest-check (salvage): served as the map has it, the lost block as zeros.
  ServeOptions salvage;
  salvage.check_digest = false;
  auto anyway = start(std::move(salvage));
  httplib::Client cli2("127.0.0.1", anyway->port());
  auto res = cli2.Get(("/v1/raw/rbd/disk/" + std::to_string(rev.id)).c_str());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  std::string expected = image;
  std::fill(expected.begin() + store::testing::kBs, expected.begin() + 2 * store::testing::kBs, '\0');
  EXPECT_TRUE(res->body == expected);
  anyway->stop();
}

TEST_F(HttpServer, NewRevisionsAppearWhileServing) {
  const auto first = put("disk", random_bytes(store::testing::kBs, 1));
  ServeOptions o;
  o.ttl = std::chrono::milliseconds(0);
  auto server = start(o);
  const std::string image2 = random_bytes(2 * store::testing::kBs, 2);
  const auto second = put("disk", image2);
  httplib::Client cli("127.0.0.1", server->port());
  auto res = cli.Get(("/v1/raw/rbd/disk/" + std::to_string(second.id)).c_str());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_TRUE(res->body == image2);
  auto list = cli.Get("/v1/images/rbd/disk");
  ASSERT_TRUE(list);
  EXPECT_NE(list->body.find("\"id\": " + std::to_string(first.id)), std::string::npos);
  EXPECT_NE(list->body.find("\"id\": " + std::to_string(second.id)), std::string::npos);
}

TEST_F(HttpServer, TokenRequiredOffLoopbackAndChecked) {
  put("disk", random_bytes(1000, 3));
  ServeOptions open;
  open.host = "0.0.0.0";
  EXPECT_THROW((void)start(open), store::StoreError);  // exposed without a token: refused

  ServeOptions o;
  o.token = "0123456789abcdef-token";
  auto server = start(o);
  httplib::Client cli("127.0.0.1", server->port());
  auto none = cli.Get("/v1/images");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(none->get_header_value("WWW-Authenticate"), "Bearer realm=\"rbdvault\"");
  auto wrong = cli.Get("/v1/images", {{"Authorization", "Bearer 0123456789abcdef-tokeX"}});
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  auto raw = cli.Head("/v1/raw/rbd/disk/1");
  ASSERT_TRUE(raw);
  EXPECT_EQ(raw->status, 401);
  auto ok = cli.Get("/v1/images", {{"Authorization", "Bearer 0123456789abcdef-token"}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_NE(ok->body.find("\"disk\""), std::string::npos);
}

}  // namespace
}  // namespace rbdvault::view

namespace rbdvault::view {
namespace {

TEST_F(HttpServer, NamesArePercentEncodedAndDecoded) {
  const std::string image = random_bytes(5000, 9);
  const auto rev = put("vm 101%x", image);
  auto server = start();
  const std::string url = server->url_for("rbd", "vm 101%x", rev.id);
  EXPECT_NE(url.find("/v1/raw/rbd/vm%20101%25x/"), std::string::npos) << url;
  httplib::Client cli("127.0.0.1", server->port());
  auto res = cli.Get(url.substr(url.find("/v1/")).c_str());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_TRUE(res->body == image);
}

}  // namespace
}  // namespace rbdvault::view

namespace rbdvault::view {
namespace {

// Instant restore's source: librbd sends no header, so the raw bytes are reachable by a secret in
// the path alone, and nothing else is (the token locks the rest).
TEST_F(HttpServer, PathSecretOpensTheRawEndpointOnly) {
  const std::string image = random_bytes(3000, 11);
  const auto rev = put("disk", image);
  ServeOptions o;
  o.token = random_secret_hex();
  o.path_secret = random_secret_hex();
  ASSERT_EQ(o.path_secret->size(), 64u);
  EXPECT_NE(*o.path_secret, *o.token);
  auto server = start(o);
  const std::string url = server->url_for("rbd", "disk", rev.id);
  const std::string path = url.substr(url.find("/s/"));
  EXPECT_EQ(path, "/s/" + *o.path_secret + "/v1/raw/rbd/disk/" + std::to_string(rev.id));
  httplib::Client cli("127.0.0.1", server->port());
  auto ok = cli.Get(path.c_str(), {{"Range", "bytes=10-19"}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 206);
  EXPECT_TRUE(ok->body == image.substr(10, 10));
  auto head = cli.Head(path.c_str());
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->get_header_value("Content-Length"), std::to_string(image.size()));
  std::string wrong = path;
  wrong[4] = wrong[4] == 'a' ? 'b' : 'a';  // one character of the secret
  for (const std::string& p : {wrong, "/v1/raw/rbd/disk/" + std::to_string(rev.id), std::string("/v1/images")}) {
    auto res = cli.Get(p.c_str());
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 401) << p;
  }
  auto list = cli.Get(("/s/" + *o.path_secret + "/v1/images").c_str());  // the secret opens raw bytes only
  ASSERT_TRUE(list);
  EXPECT_EQ(list->status, 404);
}

TEST_F(HttpServer, AFailedReadIsReportedToTheOwner) {
  // Instant restore learns of a damaged source only through on_failure (librbd just retries).
  const auto rev = put("disk", random_bytes(3 * store::testing::kBs, 9));
  const auto hash = store_->block_content(rev.image, 1, rev.id);
  ASSERT_TRUE(hash.has_value());
  flip_payload_byte(*hash);
  store_.reset();
  std::mutex mu;
  std::vector<std::string> failures;
  ServeOptions o;
  o.on_failure = [&](const std::string& what) {
    std::lock_guard<std::mutex> l(mu);
    failures.push_back(what);
  };
  auto server = start(std::move(o));
  httplib::Client cli("127.0.0.1", server->port());
  const std::string path = "/v1/raw/rbd/disk/" + std::to_string(rev.id);
  auto first = cli.Get(path.c_str(), {{"Range", "bytes=0-4095"}});  // block 0 is sound
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 206);
  {
    std::lock_guard<std::mutex> l(mu);
    EXPECT_TRUE(failures.empty());
  }
  auto all = cli.Get(path.c_str());
  EXPECT_TRUE(!all || all->body.size() < 3 * store::testing::kBs);  // cut, never wrong bytes
  server->stop();
  std::lock_guard<std::mutex> l(mu);
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_NE(failures[0].find("rbd/disk@" + std::to_string(rev.id)), std::string::npos) << failures[0];
  EXPECT_NE(failures[0].find("SHA-256"), std::string::npos) << failures[0];
}

}  // namespace
}  // namespace rbdvault::view
