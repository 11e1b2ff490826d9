// The HTTP/1.1 data plane in-process: a DataPlane on a Caddyfile-built snapshot, real sockets on
// 127.0.0.1, tiny blocking upstreams on threads, and a raw-socket client. Every socket read has
// a 10 s receive timeout so a broken feature fails a test instead of hanging it.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config/compile.h"
#include "engine/engine.h"
#include "http1/access_log.h"
#include "http1/server.h"

namespace hsp::http1 {
namespace {

// ---------------------------------------------------------------------------------------------
// Sockets.

void set_timeouts(int fd) {
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

int listen_any(uint16_t& port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return -1;
  ::listen(fd, 64);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  port = ntohs(a.sin_port);
  return fd;
}

// A port nothing listens on (bound then closed; nobody else binds loopback ports here).
uint16_t free_port() {
  uint16_t port = 0;
  int fd = listen_any(port);
  ::close(fd);
  return port;
}

// A free port below Linux's ephemeral range (32768+), for tests that need two listeners at
// once: a port taken from the ephemeral range can be grabbed by an outgoing connection before
// the gateway binds it.
uint16_t fixed_free_port() {
  static std::atomic<unsigned> next{20000 + static_cast<unsigned>(::getpid() % 5000) * 2};
  for (;;) {
    uint16_t port = static_cast<uint16_t>(next.fetch_add(1));
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    if (ok) return port;
  }
}

int connect_to(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  set_timeouts(fd);
  return fd;
}

bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Reads more bytes into buf; false on EOF, error or timeout.
bool read_more(int fd, std::string& buf) {
  char tmp[16384];
  ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
  if (n <= 0) return false;
  buf.append(tmp, static_cast<size_t>(n));
  return true;
}

struct Message {
  std::string start_line;
  std::map<std::string, std::string> headers;  // lower-case names, last value wins
  std::vector<std::pair<std::string, std::string>> fields;
  std::string body;
  bool ok = false;
  int status() const { return start_line.size() > 12 ? std::stoi(start_line.substr(9, 3)) : 0; }
  bool has(const std::string& name) const { return headers.count(name) > 0; }
};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Reads one message head from fd (buf keeps what follows it).
bool read_head(int fd, std::string& buf, Message& m) {
  size_t end;
  while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
    if (!read_more(fd, buf)) return false;
  }
  std::string head = buf.substr(0, end);
  buf.erase(0, end + 4);
  size_t eol = head.find("\r\n");
  m.start_line = head.substr(0, eol);
  size_t pos = eol == std::string::npos ? head.size() : eol + 2;
  while (pos < head.size()) {
    size_t e = head.find("\r\n", pos);
    if (e == std::string::npos) e = head.size();
    std::string line = head.substr(pos, e - pos);
    size_t colon = line.find(':');
    std::string name = line.substr(0, colon);
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    m.fields.emplace_back(name, value);
    m.headers[lower(name)] = value;
    pos = e + 2;
  }
  return true;
}

bool read_exact(int fd, std::string& buf, size_t n, std::string& out) {
  while (buf.size() < n) {
    if (!read_more(fd, buf)) return false;
  }
  out.append(buf, 0, n);
  buf.erase(0, n);
  return true;
}

bool read_line(int fd, std::string& buf, std::string& line) {
  size_t e;
  while ((e = buf.find("\r\n")) == std::string::npos) {
    if (!read_more(fd, buf)) return false;
  }
  line = buf.substr(0, e);
  buf.erase(0, e + 2);
  return true;
}

// Reads a chunked body (trailers ignored).
bool read_chunked(int fd, std::string& buf, std::string& body) {
  for (;;) {
    std::string line;
    if (!read_line(fd, buf, line)) return false;
    size_t n = std::stoul(line, nullptr, 16);
    if (n == 0) {
      std::string trailer;
      do {
        if (!read_line(fd, buf, trailer)) return false;
      } while (!trailer.empty());
      return true;
    }
    if (!read_exact(fd, buf, n, body)) return false;
    std::string crlf;
    if (!read_exact(fd, buf, 2, crlf)) return false;
  }
}

// A whole message. Requests without length have no body; responses read to EOF.
Message read_message(int fd, std::string& buf, bool is_response, bool head_request = false) {
  Message m;
  if (!read_head(fd, buf, m)) return m;
  int status = is_response ? m.status() : 0;
  bool no_body = head_request || (is_response && (status < 200 || status == 204 || status == 304));
  if (no_body) {
    m.ok = true;
  } else if (m.has("transfer-encoding")) {
    m.ok = read_chunked(fd, buf, m.body);
  } else if (m.has("content-length")) {
    m.ok = read_exact(fd, buf, std::stoul(m.headers["content-length"]), m.body);
  } else if (is_response) {
    while (read_more(fd, buf)) {
    }
    m.body = buf;
    buf.clear();
    m.ok = true;
  } else {
    m.ok = true;
  }
  return m;
}

// ---------------------------------------------------------------------------------------------
// A blocking upstream: one thread per connection running `handler(fd, conn_index)`.

class Upstream {
 public:
  using Handler = std::function<void(int fd, int conn_index)>;

  explicit Upstream(Handler h) : handler_(std::move(h)) {
    fd_ = listen_any(port_);
    accept_thread_ = std::thread([this] { accept_loop(); });
  }

  ~Upstream() {
    ::shutdown(fd_, SHUT_RDWR);
    accept_thread_.join();
    ::close(fd_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (int c : conns_) ::shutdown(c, SHUT_RDWR);
    }
    for (auto& t : threads_) t.join();
    for (int c : conns_) ::close(c);
  }

  uint16_t port() const { return port_; }
  int accepts() const { return accepts_.load(); }

 private:
  void accept_loop() {
    for (;;) {
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) return;
      set_timeouts(c);
      int idx = accepts_.fetch_add(1);
      std::lock_guard<std::mutex> lock(mu_);
      conns_.push_back(c);
      threads_.emplace_back([this, c, idx] { handler_(c, idx); });
    }
  }

  Handler handler_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<int> accepts_{0};
  std::thread accept_thread_;
  std::mutex mu_;
  std::vector<int> conns_;
  std::vector<std::thread> threads_;
};

// Answers every request on the connection with 200 and "path|method|body", keep-alive.
void echo_handler(int fd, int) {
  std::string buf;
  for (;;) {
    Message req = read_message(fd, buf, false);
    if (!req.ok) return;
    std::string target = req.start_line.substr(req.start_line.find(' ') + 1);
    target = target.substr(0, target.find(' '));
    std::string method = req.start_line.substr(0, req.start_line.find(' '));
    std::string body = target + "|" + method + "|" + req.body;
    if (!send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
                          "\r\nX-Upstream: yes\r\n\r\n" + body)) {
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The gateway under test.

// The site most tests use: everything proxied to the test upstream (UP).
const char* kProxySite =
    "http://127.0.0.1:0 {\n\tbind 127.0.0.1\n\treverse_proxy 127.0.0.1:UP\n}\n";

// Global options every test config starts with.
const char* kGlobal = "{\n\tadmin off\n}\n";

std::string subst(std::string text, const std::map<std::string, std::string>& vars) {
  for (const auto& [k, v] : vars) {
    for (size_t pos; (pos = text.find(k)) != std::string::npos;) text.replace(pos, k.size(), v);
  }
  return text;
}

class Gateway {
 public:
  ~Gateway() {
    if (dp_) dp_->stop();
  }

  // Compiles and publishes a Caddyfile; starts the data plane the first time.
  void load(const std::string& text) {
    auto cfg = config::load_caddyfile_text(text, "test.caddy");
    ASSERT_TRUE(cfg.ok()) << (cfg.ok() ? "" : cfg.errors().front().str());
    auto snap = engine::Snapshot::build(*cfg, registry_, ++generation_);
    ASSERT_TRUE(snap.ok()) << (snap.ok() ? "" : snap.errors().front().str());
    store_.publish(*snap);
    if (!dp_) {
      dp_ = std::make_unique<DataPlane>(store_, registry_, Options{1, true});
      Errors errs = dp_->start();
      ASSERT_TRUE(errs.empty()) << errs.front().str();
    } else {
      Errors errs = dp_->sync_listeners();
      ASSERT_TRUE(errs.empty()) << errs.front().str();
    }
  }

  DataPlane& dp() { return *dp_; }
  // The port bound for a site written as "http://host:0" with `bind 127.0.0.1`.
  uint16_t port() const { return dp_ ? dp_->bound_port("127.0.0.1", 0) : 0; }
  // Loads kGlobal plus `sites` (UP stands for the upstream's port) and returns the port the
  // gateway bound for "http://127.0.0.1:0".
  uint16_t load_sites(const std::string& sites, uint16_t up_port) {
    load(subst(std::string(kGlobal) + sites, {{"UP", std::to_string(up_port)}}));
    return port();
  }

 private:
  engine::UpstreamRegistry registry_;
  engine::SnapshotStore store_;
  std::unique_ptr<DataPlane> dp_;
  uint64_t generation_ = 0;
};

std::string get(const std::string& path, const std::string& extra = "") {
  return "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + "\r\n";
}

// One request on a fresh connection.
Message roundtrip(uint16_t port, const std::string& request, bool head_request = false) {
  int fd = connect_to(port);
  EXPECT_GE(fd, 0);
  if (fd < 0) return {};
  send_all(fd, request);
  std::string buf;
  Message m = read_message(fd, buf, true, head_request);
  ::close(fd);
  return m;
}

// ---------------------------------------------------------------------------------------------

TEST(DataPlane, RespondWritesStatusBodyAndHeaders) {
  Gateway g;
  uint16_t gw = g.load_sites(
      "http://127.0.0.1:0 {\n\tbind 127.0.0.1\n\theader X-Test yes\n"
      "\trespond \"hello\" 201\n}\n",
      0);
  Message m = roundtrip(gw, get("/"));
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.status(), 201);
  EXPECT_EQ(m.body, "hello");
  EXPECT_EQ(m.headers["x-test"], "yes");
  EXPECT_EQ(m.headers["server"], "hsp-gateway");
  EXPECT_EQ(m.headers["content-length"], "5");
  EXPECT_EQ(m.headers["content-type"], "text/plain; charset=utf-8");
}

TEST(DataPlane, UnknownHostGetsEmpty200) {
  Gateway g;
  uint16_t gw = g.load_sites("http://a.example:0 {\n\tbind 127.0.0.1\n\trespond \"a\"\n}\n", 0);
  Message m = roundtrip(gw, "GET / HTTP/1.1\r\nHost: other.example\r\n\r\n");
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.status(), 200);
  EXPECT_EQ(m.body, "");
  Message a = roundtrip(gw, "GET / HTTP/1.1\r\nHost: A.example:" + std::to_string(gw) + "\r\n\r\n");
  EXPECT_EQ(a.body, "a");
}

TEST(DataPlane, ProxyKeepsUpstreamConnectionsAlive) {
  Upstream up(echo_handler);
  Gateway g;
  uint16_t gw = g.load_sites(kProxySite, up.port());
  // Three requests on one client connection, then two more on new client connections.
  int fd = connect_to(gw);
  ASSERT_GE(fd, 0);
  std::string buf;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(send_all(fd, get("/k" + std::to_string(i))));
    Message m = read_message(fd, buf, true);
    ASSERT_TRUE(m.ok);
    EXPECT_EQ(m.status(), 200);
    EXPECT_EQ(m.body, "/k" + std::to_string(i) + "|GET|");
    EXPECT_EQ(m.headers["x-upstream"], "yes");
  }
  ::close(fd);
  for (int i = 0; i < 2; ++i) {
    Message m = roundtrip(gw, get("/n"));
    EXPECT_EQ(m.status(), 200);
  }
  EXPECT_EQ(up.accepts(), 1);
}

TEST(DataPlane, PipelinedRequestsAreAnsweredInOrder) {
  Upstream up(echo_handler);
  Gateway g;
  uint16_t gw = g.load_sites(kProxySite, up.port());
  int fd = connect_to(gw);
  ASSERT_TRUE(send_all(fd, get("/p1") + get("/p2") + get("/p3")));
  std::string buf;
  for (int i = 1; i <= 3; ++i) {
    Message m = read_message(fd, buf, true);
    ASSERT_TRUE(m.ok);
    EXPECT_EQ(m.body, "/p" + std::to_string(i) + "|GET|");
  }
  ::close(fd);
}

TEST(DataPlane, ForwardedHeadersAndHopByHopFields) {
  std::mutex mu;
  Message seen;
  Upstream up([&](int fd, int) {
    std::string buf;
    Message req = read_message(fd, buf, false);
    {
      std::lock_guard<std::mutex> lock(mu);
      seen = req;
    }
    send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nKeep-Alive: timeout=5\r\n\r\n");
  });
  Gateway g;
  uint16_t gw = g.load_sites(kProxySite, up.port());
  Message m = roundtrip(gw, get("/f",
                                "Connection: X-Private\r\nX-Private: 1\r\n"
                                "X-Forwarded-For: 6.6.6.6\r\n"));
  ASSERT_TRUE(m.ok);
  EXPECT_FALSE(m.has("keep-alive"));
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_FALSE(seen.has("x-private"));
  EXPECT_FALSE(seen.has("connection"));
  EXPECT_EQ(seen.headers["x-forwarded-for"], "127.0.0.1");  // the untrusted client value is gone
  EXPECT_EQ(seen.headers["x-forwarded-proto"], "http");
  EXPECT_EQ(seen.headers["host"], "127.0.0.1");
}

TEST(DataPlane, RefusedUpstreamIs502) {
  uint16_t dead = free_port();
  Gateway g;
  g.load(subst(std::string(kGlobal) + kProxySite, {{"UP", std::to_string(dead)}}));
  uint16_t gw = g.port();
  Message m = roundtrip(gw, get("/"));
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.status(), 502);
}

TEST(DataPlane, ResponseHeaderTimeoutIs504) {
  Upstream up([](int fd, int) {
    std::string buf;
    Message req = read_message(fd, buf, false);
    while (read_more(fd, buf)) {
    }  // never answers; returns when the gateway gives up
  });
  Gateway g;
  uint16_t gw = g.load_sites(
      "http://127.0.0.1:0 {\n\tbind 127.0.0.1\n\treverse_proxy 127.0.0.1:UP {\n"
      "\t\ttransport http {\n\t\t\tresponse_header_timeout 200ms\n\t\t}\n\t}\n}\n",
      up.port());
  Message m = roundtrip(gw, get("/slow"));
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.status(), 504);
}

TEST(DataPlane, HeadLimitsGive431And414) {
  Upstream up(echo_handler);
  Gateway g;
  uint16_t gw = g.load_sites(kProxySite, up.port());
  Message big = roundtrip(gw, get("/", "X-Huge: " + std::string(2 << 20, 'h') + "\r\n"));
  ASSERT_TRUE(big.ok);
  EXPECT_EQ(big.status(), 431);
  std::string many;
  for (int i = 0; i < 500; ++i) many += "X-H" + std::to_string(i) + ": v\r\n";
  Message count = roundtrip(gw, get("/", many));
  EXPECT_EQ(count.status(), 431);
  Message line = roundtrip(gw, get("/" + std::string(64 << 10, 'u')));
  EXPECT_EQ(line.status(), 414);
  EXPECT_EQ(up.accepts(), 0);
}

TEST(DataPlane, RequestBodyMaxSizeGives413) {
  Upstream up(echo_handler);
  Gateway g;
  uint16_t gw = g.load_sites(
      "http://127.0.0.1:0 {\n\tbind 127.0.0.1\n\trequest_body {\n\t\tmax_size 10\n\t}\n"
      "\treverse_proxy 127.0.0.1:UP\n}\n",
      up.port());
  std::string body(100, 'b');
  Message known =
      roundtrip(gw, "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n" + body);
  ASSERT_TRUE(known.ok);
  EXPECT_EQ(known.status(), 413);
  EXPECT_EQ(up.accepts(), 0);  // refused before any upstream work
  Message chunked =
      roundtrip(gw,
                "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                "64\r\n" +
                    body + "\r\n0\r\n\r\n");
  ASSERT_TRUE(chunked.ok);
  EXPECT_EQ(chunked.status(), 413);
  Message small = roundtrip(gw,
                            "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\n"
                            "small");
  EXPECT_EQ(small.status(), 200);
  EXPECT_EQ(small.body, "/|POST|small");
}

TEST(DataPlane, ChunkedBodiesBothWays) {
  std::mutex mu;
  std::string upstream_te;
  Upstream up([&](int fd, int) {
    std::string buf;
    Message req = read_message(fd, buf, false);
    {
      std::lock_guard<std::mutex> lock(mu);
      upstream_te = req.headers["transfer-encoding"];
    }
    // Answers chunked, in two pieces.
    std::string half = req.body.substr(0, req.body.size() / 2);
    std::string rest = req.body.substr(req.body.size() / 2);
    char l1[16], l2[16];
    snprintf(l1, sizeof l1, "%zx", half.size());
    snprintf(l2, sizeof l2, "%zx", rest.size());
    send_all(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + std::string(l1) +
                     "\r\n" + half + "\r\n" + l2 + "\r\n" + rest + "\r\n0\r\n\r\n");
    read_message(fd, buf, false);
  });
  Gateway g;
  uint16_t gw = g.load_sites(kProxySite, up.port());
  std::string payload(100000, 'x');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>('a' + i % 26);
  std::string req = "POST /c HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (size_t off = 0; off < payload.size(); off += 30000) {
    std::string piece = payload.substr(off, 30000);
    char len[16];
    snprintf(len, sizeof len, "%zx", piece.size());
    req += std::string(len) + "\r\n" + piece + "\r\n";
  }
  req += "0\r\n\r\n";
  Message m = roundtrip(gw, req);
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.status(), 200);
  EXPECT_EQ(m.headers["transfer-encoding"], "chunked");
  EXPECT_EQ(m.body, payload);
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(upstream_te, "chunked");
}

TEST(DataPlane, UpgradeIsTunnelledBothWays) {
  Upstream up([](int fd, int) {
    std::string buf;
    Message req = read_message(fd, buf, false);
    if (lower(req.headers["upgrade"]) != "echo") {
      send_all(fd, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
      return;
    }
    send_all(fd,
             "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n");
    send_all(fd, buf);  // anything that came behind the head
    char tmp[4096];
    for (;;) {
      ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
      if (n <= 0) return;
      if (!send_all(fd, std::string_view(tmp, static_cast<size_t>(n)))) return;
    }
  });
  Gateway g;
  uint16_t gw = g.load_sites(kProxySite, up.port());
  int fd = connect_to(gw);
  ASSERT_TRUE(send_all(fd, get("/ws", "Connection: Upgrade\r\nUpgrade: echo\r\n")));
  std::string buf;
  Message head;
  ASSERT_TRUE(read_head(fd, buf, head));
  EXPECT_EQ(head.status(), 101);
  EXPECT_EQ(lower(head.headers["upgrade"]), "echo");
  for (std::string msg :
       std::vector<std::string>{"ping", "second message", std::string(50000, 'z')}) {
    ASSERT_TRUE(send_all(fd, msg));
    std::string got;
    ASSERT_TRUE(read_exact(fd, buf, msg.size(), got));
    EXPECT_EQ(got, msg);
  }
  ::close(fd);
}

TEST(DataPlane, EventStreamChunkArrivesWhileUpstreamKeepsStreamOpen) {
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  Upstream up([&](int fd, int) {
    std::string buf;
    read_message(fd, buf, false);
    send_all(fd,
             "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
             "Transfer-Encoding: chunked\r\n\r\nb\r\ndata: one\n\n\r\n");
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return release; });  // the stream stays open until the client saw it
    send_all(fd, "b\r\ndata: two\n\n\r\n0\r\n\r\n");
  });
  Gateway g;
  uint16_t gw = g.load_sites(kProxySite, up.port());
  int fd = connect_to(gw);
  ASSERT_TRUE(send_all(fd, get("/events")));
  std::string buf;
  Message head;
  ASSERT_TRUE(read_head(fd, buf, head));
  EXPECT_EQ(head.headers["content-type"], "text/event-stream");
  while (buf.find("data: one") == std::string::npos) {
    if (!read_more(fd, buf)) break;
  }
  bool first_event_seen = buf.find("data: one") != std::string::npos;
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  EXPECT_TRUE(first_event_seen);
  while (buf.find("0\r\n\r\n") == std::string::npos) {
    if (!read_more(fd, buf)) break;
  }
  EXPECT_NE(buf.find("data: two"), std::string::npos);
  ::close(fd);
}

// The upstream answers the first request of each connection and silently closes on the
// second: to the gateway, a pooled connection that died. Bodyless idempotent requests are
// retried once on a fresh connection; a POST is not.
TEST(DataPlane, StalePooledConnectionRetriedOnlyForIdempotentRequests) {
  std::atomic<int> requests{0};
  Upstream up([&](int fd, int) {
    std::string buf;
    Message req = read_message(fd, buf, false);
    if (!req.ok) return;
    ++requests;
    send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    Message second = read_message(fd, buf, false);
    if (second.ok) ++requests;
    ::shutdown(fd, SHUT_RDWR);  // closes without answering
  });
  Gateway g;
  uint16_t gw = g.load_sites(kProxySite, up.port());
  EXPECT_EQ(roundtrip(gw, get("/1")).status(), 200);
  Message retried = roundtrip(gw, get("/2"));
  EXPECT_EQ(retried.status(), 200);
  EXPECT_EQ(up.accepts(), 2);
  Message post = roundtrip(gw, "POST /3 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n\r\nx");
  EXPECT_EQ(post.status(), 502);
  EXPECT_EQ(up.accepts(), 2);  // not retried on a new connection
}

TEST(DataPlane, DialFailuresRetriedWithinTryDuration) {
  Upstream good(echo_handler);
  uint16_t dead = free_port();
  Gateway g;
  g.load(subst(
      std::string(kGlobal) +
          "http://127.0.0.1:0 {\n\tbind 127.0.0.1\n\treverse_proxy 127.0.0.1:DEAD 127.0.0.1:UP {\n"
          "\t\tlb_policy first\n\t\tlb_try_duration 5s\n\t\tlb_try_interval 10ms\n"
          "\t}\n}\n",
      {{"UP", std::to_string(good.port())}, {"DEAD", std::to_string(dead)}}));
  uint16_t gw = g.port();
  Message m = roundtrip(gw, "POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n\r\nz");
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.status(), 200);
  EXPECT_EQ(m.body, "/x|POST|z");
}

TEST(DataPlane, ReloadSwapsRoutesAndListeners) {
  uint16_t p1 = fixed_free_port();
  uint16_t p2 = fixed_free_port();
  Gateway g;
  auto vars =
      std::map<std::string, std::string>{{"P1", std::to_string(p1)}, {"P2", std::to_string(p2)}};
  g.load(subst(
      std::string(kGlobal) + "http://127.0.0.1:P1 {\n\tbind 127.0.0.1\n\trespond \"one\"\n}\n",
      vars));
  int fd = connect_to(p1);
  std::string buf;
  ASSERT_TRUE(send_all(fd, get("/")));
  EXPECT_EQ(read_message(fd, buf, true).body, "one");

  g.load(subst(std::string(kGlobal) +
                   "http://127.0.0.1:P1 {\n\tbind 127.0.0.1\n\trespond \"two\"\n}\n"
                   "http://127.0.0.1:P2 {\n\tbind 127.0.0.1\n\trespond \"new\"\n}\n",
               vars));
  // The same keep-alive connection sees the new snapshot on its next request.
  ASSERT_TRUE(send_all(fd, get("/")));
  EXPECT_EQ(read_message(fd, buf, true).body, "two");
  EXPECT_EQ(roundtrip(p2, get("/")).body, "new");
  ::close(fd);
  EXPECT_EQ(g.dp().listeners().size(), 2u);

  g.load(subst(
      std::string(kGlobal) + "http://127.0.0.1:P2 {\n\tbind 127.0.0.1\n\trespond \"only\"\n}\n",
      vars));
  EXPECT_EQ(g.dp().listeners().size(), 1u);
  EXPECT_EQ(g.dp().bound_port("127.0.0.1", p1), 0);
  EXPECT_EQ(roundtrip(p2, get("/")).body, "only");
}

TEST(DataPlane, DrainLetsRequestInFlightFinish) {
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  Upstream up([&](int fd, int) {
    std::string buf;
    read_message(fd, buf, false);
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return release; });
    send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone");
  });
  Gateway g;
  uint16_t gw = g.load_sites(kProxySite, up.port());
  int idle = connect_to(gw);  // an idle keep-alive connection: closed by the drain
  int busy = connect_to(gw);
  ASSERT_TRUE(send_all(busy, get("/slow")));
  while (up.accepts() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  g.dp().stop_accepting();
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::lock_guard<std::mutex> lock(mu);
    release = true;
    cv.notify_all();
  });
  bool drained = g.dp().drain(std::chrono::steady_clock::now() + std::chrono::seconds(10));
  releaser.join();
  EXPECT_TRUE(drained);
  std::string buf;
  Message m = read_message(busy, buf, true);
  EXPECT_EQ(m.body, "done");
  EXPECT_EQ(m.headers["connection"], "close");
  std::string ibuf;
  EXPECT_FALSE(read_more(idle, ibuf));  // closed
  ::close(idle);
  ::close(busy);
}

TEST(DataPlane, ExpectContinueIsAnsweredBeforeTheBodyIsRead) {
  Upstream up(echo_handler);
  Gateway g;
  uint16_t gw = g.load_sites(kProxySite, up.port());
  int fd = connect_to(gw);
  ASSERT_TRUE(send_all(fd,
                       "PUT /e HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n"
                       "Expect: 100-continue\r\n\r\n"));
  std::string buf;
  Message interim;
  ASSERT_TRUE(read_head(fd, buf, interim));
  EXPECT_EQ(interim.status(), 100);
  ASSERT_TRUE(send_all(fd, "data"));
  Message m = read_message(fd, buf, true);
  EXPECT_EQ(m.status(), 200);
  EXPECT_EQ(m.body, "/e|PUT|data");
  ::close(fd);
}

TEST(DataPlane, ActiveHealthChecksSteerAwayFromFailingUpstream) {
  // "first" would always pick the failing upstream unless the health checker marks it down.
  auto make = [](std::string name, int health_status) {
    return [name, health_status](int fd, int) {
      std::string buf;
      for (;;) {
        Message req = read_message(fd, buf, false);
        if (!req.ok) return;
        bool health = req.start_line.find("/health") != std::string::npos;
        int status = health ? health_status : 200;
        std::string body = health ? "" : name;
        if (!send_all(fd, "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body)) {
          return;
        }
      }
    };
  };
  Upstream bad(make("bad", 503));
  Upstream good(make("good", 200));
  Gateway g;
  g.load(subst(
      std::string(kGlobal) +
          "http://127.0.0.1:0 {\n\tbind 127.0.0.1\n\treverse_proxy 127.0.0.1:BAD 127.0.0.1:GOOD {\n"
          "\t\tlb_policy first\n\t\thealth_uri /health\n"
          "\t\thealth_interval 50ms\n\t}\n}\n",
      {{"BAD", std::to_string(bad.port())}, {"GOOD", std::to_string(good.port())}}));
  uint16_t gw = g.port();
  std::string last;
  for (int i = 0; i < 200 && last != "good"; ++i) {
    last = roundtrip(gw, get("/")).body;
    if (last != "good") std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  EXPECT_EQ(last, "good");
}

TEST(DataPlane, MaxConnsPerHostMakesRequestsWaitForAConnection) {
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  Upstream up([&](int fd, int) {
    std::string buf;
    for (;;) {
      Message req = read_message(fd, buf, false);
      if (!req.ok) return;
      if (req.start_line.find("/hold") != std::string::npos) {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return release; });
      }
      if (!send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) return;
    }
  });
  Gateway g;
  uint16_t gw = g.load_sites(
      "http://127.0.0.1:0 {\n\tbind 127.0.0.1\n\treverse_proxy 127.0.0.1:UP {\n"
      "\t\ttransport http {\n\t\t\tmax_conns_per_host 1\n"
      "\t\t\tdial_timeout 10s\n\t\t}\n\t}\n}\n",
      up.port());
  int a = connect_to(gw);
  ASSERT_TRUE(send_all(a, get("/hold")));
  while (up.accepts() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  int b = connect_to(gw);
  ASSERT_TRUE(send_all(b, get("/next")));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  std::string abuf, bbuf;
  EXPECT_EQ(read_message(a, abuf, true).status(), 200);
  EXPECT_EQ(read_message(b, bbuf, true).status(), 200);
  EXPECT_EQ(up.accepts(), 1);  // the second request waited for the first one's connection
  ::close(a);
  ::close(b);
}

TEST(DataPlane, CloseDelimitedUpstreamBodyIsChunkedForHttp11AndHeadHasNoBody) {
  Upstream up([](int fd, int) {
    std::string buf;
    for (;;) {
      Message req = read_message(fd, buf, false);
      if (!req.ok) return;
      if (req.start_line.rfind("HEAD", 0) == 0) {
        send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n");
        continue;
      }
      send_all(fd, "HTTP/1.0 200 OK\r\n\r\nuntil the end");
      ::shutdown(fd, SHUT_RDWR);
      return;
    }
  });
  Gateway g;
  g.load(subst(std::string(kGlobal) + kProxySite, {{"UP", std::to_string(up.port())}}));
  uint16_t gw = g.port();
  Message m = roundtrip(gw, get("/"));
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.headers["transfer-encoding"], "chunked");
  EXPECT_EQ(m.body, "until the end");
  int fd = connect_to(gw);
  ASSERT_TRUE(send_all(fd, "HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + get("/after")));
  std::string buf;
  Message head = read_message(fd, buf, true, true);
  EXPECT_EQ(head.status(), 200);
  EXPECT_EQ(head.headers["content-length"], "11");
  Message after = read_message(fd, buf, true);  // no stray body bytes between the two
  EXPECT_EQ(after.body, "until the end");
  ::close(fd);
}

TEST(DataPlane, AccessLogLineGoesToTheConfiguredFile) {
  Upstream up(echo_handler);
  std::string path = ::testing::TempDir() + "hsp-access-XXXXXX";
  int tmp = ::mkstemp(path.data());
  ASSERT_GE(tmp, 0);
  ::close(tmp);
  Gateway g;
  g.load(subst(std::string(kGlobal) +
                   "http://127.0.0.1:0 {\n\tbind 127.0.0.1\n\tlog {\n\t\toutput file PATH\n"
                   "\t}\n\treverse_proxy 127.0.0.1:UP\n}\n",
               {{"UP", std::to_string(up.port())}, {"PATH", path}}));
  uint16_t gw = g.port();
  EXPECT_EQ(roundtrip(gw,
                      "POST /logged?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Content-Length: 5\r\n\r\n12345")
                .status(),
            200);
  // The line is written right after the response, which the client may see first.
  std::string text;
  for (int i = 0; i < 500 && text.find('\n') == std::string::npos; ++i) {
    text.clear();
    FILE* f = std::fopen(path.c_str(), "r");
    ASSERT_NE(f, nullptr);
    char chunk[4096];
    size_t n;
    while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0) text.append(chunk, n);
    std::fclose(f);
    if (text.find('\n') == std::string::npos) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  ::unlink(path.c_str());
  for (const char* want : {"\"uri\":\"/logged?x=1\"", "\"method\":\"POST\"", "\"status\":200",
                           "\"bytes_read\":5", "\"end_reason\":\"ok\"", "\"size\":22"}) {
    EXPECT_NE(text.find(want), std::string::npos) << want << " in " << text;
  }
  EXPECT_NE(text.find("\"upstream\":\"127.0.0.1:" + std::to_string(up.port()) + "\""),
            std::string::npos);
}

TEST(DataPlane, DrainClosesUpgradedTunnels) {
  Upstream up([](int fd, int) {
    std::string buf;
    read_message(fd, buf, false);
    send_all(fd,
             "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n");
    char tmp[4096];
    while (::recv(fd, tmp, sizeof tmp, 0) > 0) {
    }
  });
  Gateway g;
  g.load(subst(std::string(kGlobal) + kProxySite, {{"UP", std::to_string(up.port())}}));
  uint16_t gw = g.port();
  int fd = connect_to(gw);
  ASSERT_TRUE(send_all(fd, get("/ws", "Connection: Upgrade\r\nUpgrade: echo\r\n")));
  std::string buf;
  Message head;
  ASSERT_TRUE(read_head(fd, buf, head));
  ASSERT_EQ(head.status(), 101);
  g.dp().stop_accepting();
  EXPECT_TRUE(g.dp().drain(std::chrono::steady_clock::now() + std::chrono::seconds(10)));
  EXPECT_FALSE(read_more(fd, buf));  // the tunnel was closed
  ::close(fd);
}

TEST(DataPlane, Http10ClientsGetHttp10AnswersAndCloseDelimitedBodies) {
  Upstream up([](int fd, int) {
    std::string buf;
    Message req = read_message(fd, buf, false);
    if (!req.ok) return;
    send_all(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    read_message(fd, buf, false);
  });
  Gateway g;
  g.load(subst(std::string(kGlobal) + kProxySite, {{"UP", std::to_string(up.port())}}));
  uint16_t gw = g.port();
  // No Host (allowed in 1.0): routed as an unknown host; with Host: proxied.
  Message m = roundtrip(gw, "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  ASSERT_TRUE(m.ok);
  EXPECT_EQ(m.start_line.substr(0, 8), "HTTP/1.0");
  EXPECT_FALSE(m.has("transfer-encoding"));
  EXPECT_EQ(m.body, "hello");  // read to EOF: the gateway closed after the body
  Message no_host = roundtrip(gw, "GET / HTTP/1.0\r\n\r\n");
  EXPECT_EQ(no_host.status(), 200);
}

TEST(AccessLog, CaddyFieldNames) {
  http::Request r;
  r.method = "GET";
  r.remote_ip = "127.0.0.1";
  r.remote_port = 5555;
  r.client_ip = "127.0.0.1";
  r.authority = "example.com";
  r.conn_id = 7;
  r.headers.add("User-Agent", "t\"q");
  r.headers.add("X-A", "1");
  r.headers.add("x-a", "2");
  AccessRecord rec;
  rec.req = &r;
  rec.uri = "/x?y=1";
  rec.status = 502;
  rec.size = 0;
  rec.upstream = "127.0.0.1:9";
  rec.end_reason = "upstream_refused";
  std::string line = format_access_line(rec);
  for (const char* want :
       {"\"level\":\"error\"", "\"logger\":\"http.log.access\"", "\"msg\":\"handled request\"",
        "\"remote_ip\":\"127.0.0.1\"", "\"remote_port\":\"5555\"", "\"method\":\"GET\"",
        "\"host\":\"example.com\"", "\"uri\":\"/x?y=1\"", "\"status\":502", "\"size\":0",
        "\"upstream\":\"127.0.0.1:9\"", "\"end_reason\":\"upstream_refused\"", "\"conn_id\":7",
        "\"User-Agent\":[\"t\\\"q\"]", "\"X-A\":[\"1\",\"2\"]", "\"duration\":"}) {
    EXPECT_NE(line.find(want), std::string::npos) << want << " in " << line;
  }
}

}  // namespace
}  // namespace hsp::http1
