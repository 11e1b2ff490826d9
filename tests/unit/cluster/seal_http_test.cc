// The cluster's sealing (AES-256-GCM under a key derived from the shared secret) and its small
// HTTP/1.1 endpoint: request-head parsing, addresses, CIDR checks, and a real exchange over
// loopback with peer filtering.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "../acme/acme_test_util.h"
#include "cluster/admin_http.h"
#include "cluster/seal.h"

namespace hsp::cluster {
namespace {

using std::chrono::milliseconds;
using tls::testing::TempDir;

PushKey key_of(std::string_view secret) {
  auto k = PushKey::from_secret(secret);
  EXPECT_TRUE(k) << k.errors().front().message;
  return *k;
}

TEST(ClusterSeal, RoundTripAndEveryWayToFail) {
  PushKey a = key_of("correct horse battery staple\n");
  PushKey same = key_of("correct horse battery staple");  // a trailing newline is not secret
  PushKey other = key_of("another secret of enough length");
  std::string sealed = a.seal("/hsp/v1/config", "the config");
  EXPECT_EQ(sealed.substr(0, 4), "HSP1");
  EXPECT_NE(sealed.find("the config"), 0u);
  EXPECT_EQ(sealed.find("the config"), std::string::npos);  // encrypted, not only signed
  auto opened = same.open("/hsp/v1/config", sealed);
  ASSERT_TRUE(opened) << opened.errors().front().message;
  EXPECT_EQ(*opened, "the config");
  // Two seals of one text differ (random nonce).
  EXPECT_NE(a.seal("/p", "x"), a.seal("/p", "x"));

  EXPECT_FALSE(other.open("/hsp/v1/config", sealed));
  EXPECT_FALSE(a.open("/hsp/v1/version", sealed));  // bound to its endpoint
  std::string flipped = sealed;
  flipped[20] ^= 1;
  auto tampered = a.open("/hsp/v1/config", flipped);
  ASSERT_FALSE(tampered);
  EXPECT_NE(tampered.errors().front().message.find("wrong push secret or a tampered body"),
            std::string::npos);
  EXPECT_FALSE(a.open("/hsp/v1/config", sealed.substr(0, 20)));
  EXPECT_FALSE(a.open("/hsp/v1/config", "XXXX" + sealed.substr(4)));
  EXPECT_FALSE(a.open("/hsp/v1/config", ""));
}

TEST(ClusterSeal, ShortOrMissingSecretsAreErrorsNamingTheFile) {
  auto k = PushKey::from_secret("short\n");
  ASSERT_FALSE(k);
  EXPECT_NE(k.errors().front().message.find("at least 16"), std::string::npos);
  TempDir tmp;
  auto missing = PushKey::from_file(tmp.file("none"));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.errors().front().str(),
            tmp.file("none") + ": push secret: the file does not exist");
  acme::testing::write_text(tmp.file("s"), "0123456789abcdef0123\n");
  EXPECT_TRUE(PushKey::from_file(tmp.file("s")));
}

TEST(ClusterHttp, RequestHeadParsing) {
  auto h = parse_request_head(
      "POST /hsp/v1/config HTTP/1.1\r\nHost: a:2019\r\nContent-Length: 12\r\n\r\n");
  ASSERT_TRUE(h) << h.errors().front().message;
  EXPECT_EQ(h->method, "POST");
  EXPECT_EQ(h->target, "/hsp/v1/config");
  EXPECT_EQ(h->content_length, 12u);
  EXPECT_EQ(h->headers.at("host"), "a:2019");
  auto bad = [](std::string_view head) {
    auto r = parse_request_head(head);
    return r ? std::string("accepted") : r.errors().front().message;
  };
  EXPECT_EQ(bad("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "bad request head: Transfer-Encoding is not accepted");
  EXPECT_EQ(bad("GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"),
            "bad request head: repeated field content-length");
  EXPECT_EQ(bad("GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            "bad request head: Content-Length is not a number");
  EXPECT_EQ(bad("GET http://x/ HTTP/1.1\r\n\r\n"), "bad request head: target must start with '/'");
  EXPECT_EQ(bad("GET / HTTP/2\r\n\r\n"), "bad request head: not HTTP/1.x");
  EXPECT_EQ(bad("GET /  HTTP/1.1\r\n\r\n"),
            "bad request head: the request line is not 'METHOD TARGET VERSION'");
  EXPECT_EQ(bad("GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"), "bad request head: obsolete line folding");
  EXPECT_EQ(bad("GET / HTTP/1.1\r\nA b\r\n\r\n"), "bad request head: field without a name");
  EXPECT_EQ(bad("GET / HTTP/1.1\r\nA: b\x01\r\n\r\n"),
            "bad request head: control byte in a field value");
  EXPECT_EQ(bad("GET / HTTP/1.1\r\nA: b\r\n"), "bad request head: unterminated header section");
}

TEST(ClusterHttp, AddressesAndCidrs) {
  EXPECT_EQ(parse_host_port("10.0.0.1:2019")->host, "10.0.0.1");
  EXPECT_EQ(parse_host_port("[fd00::1]:2019")->host, "fd00::1");
  EXPECT_EQ(parse_host_port("edge:80")->port, "80");
  EXPECT_FALSE(parse_host_port("10.0.0.1"));
  EXPECT_FALSE(parse_host_port("fd00::1:2019"));  // IPv6 needs brackets
  EXPECT_FALSE(parse_host_port("a:0"));
  EXPECT_FALSE(parse_host_port("a:65536"));
  EXPECT_TRUE(address_in_cidr("10.200.200.7", "10.200.200.0/24"));
  EXPECT_FALSE(address_in_cidr("10.200.201.7", "10.200.200.0/24"));
  EXPECT_TRUE(address_in_cidr("10.200.201.7", "10.200.200.0/23"));
  EXPECT_TRUE(address_in_cidr("1.2.3.4", "0.0.0.0/0"));
  EXPECT_TRUE(address_in_cidr("fd00::20", "fd00::/64"));
  EXPECT_FALSE(address_in_cidr("fd01::20", "fd00::/64"));
  EXPECT_FALSE(address_in_cidr("10.0.0.1", "fd00::/64"));
  EXPECT_FALSE(address_in_cidr("10.0.0.1", "10.0.0.0/33"));
  EXPECT_FALSE(address_in_cidr("10.0.0.1", "10.0.0.0"));
  // Found by fuzzing: inet_pton stops at a NUL, and from_chars takes a minus sign.
  EXPECT_FALSE(address_in_cidr(std::string_view("10.0.0.1\0junk", 13), "10.0.0.0/8"));
  EXPECT_FALSE(address_in_cidr("1.2.3.4", "10.0.0.0/-0"));
  EXPECT_EQ(local_addresses_in("127.0.0.0/8").front(), "127.0.0.1");
  EXPECT_TRUE(local_addresses_in("0.0.0.0/32").empty());  // never an interface's address
}

// A free loopback port (bound and released; the tests run on loopback only).
std::string free_listen() {
  for (int port = 20000 + (::getpid() * 7) % 20000;; ++port) {
    AdminServer::Options o;
    o.listen = "127.0.0.1:" + std::to_string(port);
    AdminServer probe(o, nullptr);
    if (probe.start().empty()) return "127.0.0.1:" + std::to_string(port);
  }
}

TEST(ClusterHttp, ServerAndClientExchangeAndLimits) {
  AdminServer::Options o;
  o.listen = free_listen();
  o.body_limit = 100;
  o.deadline = milliseconds(500);
  AdminServer server(o, [](const AdminRequest& r) {
    return AdminResponse{200, "text/plain", r.head.method + " " + r.head.target + " " + r.body};
  });
  ASSERT_TRUE(server.start().empty());
  auto to = *parse_host_port(o.listen);
  auto r = http_request(to, "POST", "/echo", "hello", milliseconds(2000));
  ASSERT_TRUE(r) << r.errors().front().message;
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "POST /echo hello");
  auto big = http_request(to, "POST", "/echo", std::string(101, 'x'), milliseconds(2000));
  ASSERT_TRUE(big) << big.errors().front().message;
  EXPECT_EQ(big->status, 413);
  // Nothing listens: an Error naming the address, not a hang.
  server.stop();
  auto refused = http_request(to, "GET", "/", "", milliseconds(500));
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.errors().front().message.find(o.listen), std::string::npos);
}

TEST(ClusterHttp, PeersOutsideTheAllowedNetworksGetNoAnswer) {
  AdminServer::Options o;
  o.listen = free_listen();
  o.allowed = {"10.0.0.0/8"};
  int calls = 0;
  AdminServer server(o, [&](const AdminRequest&) {
    ++calls;
    return AdminResponse{};
  });
  ASSERT_TRUE(server.start().empty());
  auto r = http_request(*parse_host_port(o.listen), "GET", "/", "", milliseconds(1000));
  EXPECT_FALSE(r);
  EXPECT_EQ(calls, 0);
}

int connect_loopback(const std::string& port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(std::stoi(port)));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  return fd;
}

TEST(ClusterHttp, ASlowPeerHoldsNobodyAndIsCutAtTheDeadline) {
  AdminServer::Options o;
  o.listen = free_listen();
  o.deadline = milliseconds(400);
  AdminServer server(o, [](const AdminRequest&) { return AdminResponse{200, "text/plain", "ok"}; });
  ASSERT_TRUE(server.start().empty());
  auto to = *parse_host_port(o.listen);
  // Half a head, then nothing: the next request is served at once, beside it.
  int fd = connect_loopback(to.port);
  ASSERT_EQ(::send(fd, "GET / HT", 8, 0), 8);
  auto start = std::chrono::steady_clock::now();
  auto r = http_request(to, "GET", "/", "", milliseconds(3000));
  ASSERT_TRUE(r) << r.errors().front().message;
  EXPECT_EQ(r->body, "ok");
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(300));
  char c;
  EXPECT_EQ(::recv(fd, &c, 1, 0), 0);  // closed at its deadline without an answer
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(300));
  ::close(fd);
}

TEST(ClusterHttp, OnePeerGetsAtMostFourConnections) {
  AdminServer::Options o;
  o.listen = free_listen();
  o.deadline = milliseconds(600);
  AdminServer server(o, [](const AdminRequest&) { return AdminResponse{200, "text/plain", "ok"}; });
  ASSERT_TRUE(server.start().empty());
  auto to = *parse_host_port(o.listen);
  std::vector<int> idle;
  for (int i = 0; i < 4; ++i) idle.push_back(connect_loopback(to.port));
  std::this_thread::sleep_for(milliseconds(100));  // all four accepted and being read
  // The fifth from the same address is closed unanswered...
  auto fifth = http_request(to, "GET", "/", "", milliseconds(300));
  EXPECT_FALSE(fifth);
  // ...and served again once a deadline frees a slot.
  std::this_thread::sleep_for(milliseconds(700));
  auto later = http_request(to, "GET", "/", "", milliseconds(2000));
  ASSERT_TRUE(later) << later.errors().front().message;
  EXPECT_EQ(later->body, "ok");
  for (int fd : idle) ::close(fd);
  // stop() does not wait for idle peers' deadlines.
  for (int i = 0; i < 3; ++i) idle[i] = connect_loopback(to.port);
  std::this_thread::sleep_for(milliseconds(50));
  auto start = std::chrono::steady_clock::now();
  server.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(300));
  for (int i = 0; i < 3; ++i) ::close(idle[i]);
}

}  // namespace
}  // namespace hsp::cluster
