// The HTTP/2 client codec against the server codec, in memory (no sockets): both sides are real
// nghttp2 sessions, so every frame the client writes is checked by a real peer and back.
#include "h2/client.h"

#include <gtest/gtest.h>
#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "h2/server.h"

namespace hsp::h2 {
namespace {

std::string pattern(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + (i * 7) % 23);
  return s;
}

// ---------------------------------------------------------------------------------------------
// The upstream: a ServerConnection and a handler that records requests and answers as told.

struct Upstream : Handler {
  struct Req {
    http::Request request;
    std::string body;
    size_t unconsumed = 0;
    bool ended = false;
    http::HeaderMap trailers;
    bool reset = false;
    bool closed = false;
    // Response body still to push (with back-pressure), then end with `trailers_out`.
    std::string out;
    size_t out_off = 0;
    bool out_pending = false;
    std::optional<http::HeaderMap> trailers_out;
  };

  explicit Upstream(Settings s = {}) : conn(s, *this) {}

  ServerConnection conn;
  std::map<int32_t, Req> reqs;
  bool auto_consume = true;
  std::function<void(int32_t)> on_head;  // called after recording the head
  std::function<void(int32_t)> on_end;   // called when the request body ended
  size_t open = 0;
  size_t max_open = 0;

  // Answers `id` with a head, then `body` pushed as the client's window allows.
  void respond(int32_t id, int status, std::string body,
               std::optional<http::HeaderMap> trailers = {}, http::HeaderMap headers = {}) {
    http::ResponseHead head;
    head.status = status;
    head.headers = std::move(headers);
    bool empty = body.empty() && !trailers;
    ASSERT_TRUE(conn.submit_response(id, head, empty).ok());
    if (empty) return;
    Req& q = reqs[id];
    q.out = std::move(body);
    q.out_off = 0;
    q.out_pending = true;
    q.trailers_out = std::move(trailers);
    push(id);
  }
  void push(int32_t id) {
    Req& q = reqs[id];
    if (!q.out_pending) return;
    while (q.out_off < q.out.size()) {
      auto n = conn.send_data(id, std::string_view(q.out).substr(q.out_off));
      ASSERT_TRUE(n.ok());
      if (*n == 0) return;  // on_send_ready continues
      q.out_off += *n;
    }
    q.out_pending = false;
    ASSERT_TRUE(conn.end_stream(id, std::move(q.trailers_out)).ok());
  }
  void consume_all() {
    for (auto& [id, q] : reqs) {
      conn.consume(id, q.unconsumed);
      q.unconsumed = 0;
    }
  }

  void on_request(int32_t id, http::Request&& r, bool end_stream) override {
    Req& q = reqs[id];
    q.request = std::move(r);
    q.ended = end_stream;
    max_open = std::max(max_open, ++open);
    if (on_head) on_head(id);
    if (end_stream && on_end) on_end(id);
  }
  void on_request_data(int32_t id, std::string_view data) override {
    Req& q = reqs[id];
    q.body.append(data);
    if (auto_consume) {
      conn.consume(id, data.size());
    } else {
      q.unconsumed += data.size();
    }
  }
  void on_request_trailers(int32_t id, http::HeaderMap&& t) override { reqs[id].trailers = t; }
  void on_request_end(int32_t id) override {
    reqs[id].ended = true;
    if (on_end) on_end(id);
  }
  void on_stream_reset(int32_t id, uint32_t) override { reqs[id].reset = true; }
  void on_stream_closed(int32_t id, uint32_t) override {
    reqs[id].closed = true;
    --open;
  }
  void on_send_ready(int32_t id) override { push(id); }
};

// ---------------------------------------------------------------------------------------------
// The gateway side: a ClientConnection and a handler that records every event.

struct Gateway : ClientHandler {
  struct Resp {
    int status = 0;
    http::HeaderMap headers;
    bool head_end_stream = false;
    std::string body;
    size_t unconsumed = 0;
    http::HeaderMap trailers;
    bool got_trailers = false;
    bool ended = false;
    std::optional<uint32_t> reset_code;
    bool refused = false;
    bool closed = false;
    uint32_t close_code = 0;
    std::vector<std::string> events;
    // Request body still to push, then end with `trailers_out`.
    std::string out;
    size_t out_off = 0;
    bool out_pending = false;
    std::optional<http::HeaderMap> trailers_out;
  };

  explicit Gateway(ClientSettings s = {}) : conn(s, *this) {}

  ClientConnection conn;
  std::map<int32_t, Resp> resps;
  bool auto_consume = true;
  std::optional<std::pair<int32_t, uint32_t>> goaway;
  int ping_acks = 0;

  int32_t get(const std::string& path, http::HeaderMap headers = {}) {
    http::Request r;
    r.method = "GET";
    r.scheme = "http";
    r.authority = "backend.internal:9000";
    size_t q = path.find('?');
    r.path = path.substr(0, q);
    if (q != std::string::npos) r.query = path.substr(q + 1);
    r.headers = std::move(headers);
    auto id = conn.submit_request(r, true);
    EXPECT_TRUE(id.ok());
    return id.ok() ? *id : -1;
  }
  int32_t post(const std::string& path, std::string body,
               std::optional<http::HeaderMap> trailers = {}, http::HeaderMap headers = {}) {
    http::Request r;
    r.method = "POST";
    r.scheme = "http";
    r.authority = "backend.internal:9000";
    r.path = path;
    r.headers = std::move(headers);
    auto id = conn.submit_request(r, false);
    EXPECT_TRUE(id.ok());
    if (!id.ok()) return -1;
    Resp& q = resps[*id];
    q.out = std::move(body);
    q.out_pending = true;
    q.trailers_out = std::move(trailers);
    push(*id);
    return *id;
  }
  void push(int32_t id) {
    Resp& q = resps[id];
    if (!q.out_pending) return;
    while (q.out_off < q.out.size()) {
      auto n = conn.send_data(id, std::string_view(q.out).substr(q.out_off));
      ASSERT_TRUE(n.ok());
      if (*n == 0) return;
      q.out_off += *n;
    }
    q.out_pending = false;
    ASSERT_TRUE(conn.end_stream(id, std::move(q.trailers_out)).ok());
  }
  void consume_all() {
    for (auto& [id, q] : resps) {
      conn.consume(id, q.unconsumed);
      q.unconsumed = 0;
    }
  }

  void on_response_head(int32_t id, int status, http::HeaderMap&& h, bool end_stream) override {
    Resp& q = resps[id];
    q.status = status;
    q.headers = std::move(h);
    q.head_end_stream = end_stream;
    q.events.push_back("head");
  }
  void on_response_data(int32_t id, std::string_view data) override {
    Resp& q = resps[id];
    q.body.append(data);
    if (q.events.empty() || q.events.back() != "data") q.events.push_back("data");
    if (auto_consume) {
      conn.consume(id, data.size());
    } else {
      q.unconsumed += data.size();
    }
  }
  void on_response_trailers(int32_t id, http::HeaderMap&& t) override {
    resps[id].trailers = std::move(t);
    resps[id].got_trailers = true;
    resps[id].events.push_back("trailers");
  }
  void on_response_end(int32_t id) override {
    resps[id].ended = true;
    resps[id].events.push_back("end");
  }
  void on_stream_reset(int32_t id, uint32_t code) override {
    resps[id].reset_code = code;
    resps[id].events.push_back("reset");
  }
  void on_stream_refused(int32_t id) override {
    resps[id].refused = true;
    resps[id].events.push_back("refused");
  }
  void on_stream_closed(int32_t id, uint32_t code) override {
    resps[id].closed = true;
    resps[id].close_code = code;
    resps[id].events.push_back("closed");
  }
  void on_goaway(int32_t last, uint32_t code) override { goaway = {last, code}; }
  void on_send_ready(int32_t id) override { push(id); }
  void on_ping_ack() override { ++ping_acks; }
};

// Moves bytes both ways until neither side has anything to write.
void pump(Gateway& g, Upstream& u) {
  for (int i = 0; i < 100000; ++i) {
    std::string c2s(g.conn.pending_output());
    g.conn.consume_output(c2s.size());
    std::string s2c(u.conn.pending_output());
    u.conn.consume_output(s2c.size());
    if (c2s.empty() && s2c.empty()) return;
    if (!c2s.empty()) {
      ASSERT_TRUE(u.conn.recv(c2s).ok());
    }
    if (!s2c.empty()) {
      ASSERT_TRUE(g.conn.recv(s2c).ok());
    }
  }
  FAIL() << "pump did not settle";
}

// Only client -> server.
void to_server(Gateway& g, Upstream& u) {
  std::string c2s(g.conn.pending_output());
  g.conn.consume_output(c2s.size());
  if (!c2s.empty()) {
    ASSERT_TRUE(u.conn.recv(c2s).ok());
  }
}

// ---------------------------------------------------------------------------------------------

TEST(H2Client, WritesPrefaceAndSettingsFirst) {
  Gateway g;
  std::string out(g.conn.pending_output());
  ASSERT_GE(out.size(), 24u + 9u);
  EXPECT_EQ(out.substr(0, 24), "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
  EXPECT_EQ(out[24 + 3], NGHTTP2_SETTINGS);  // frame type of the first frame
}

TEST(H2Client, GetWithPseudoHeadersAndStrippedFields) {
  Gateway g;
  Upstream u;
  u.on_head = [&](int32_t id) {
    http::HeaderMap h;
    h.add("content-type", "text/plain");
    h.add("x-upstream", "yes");
    u.respond(id, 200, "hello");
  };
  http::HeaderMap h;
  h.add("Host", "ignored.example");
  h.add("Connection", "keep-alive, X-Hop");
  h.add("Keep-Alive", "timeout=5");
  h.add("X-Hop", "1");
  h.add("Transfer-Encoding", "chunked");
  h.add("Upgrade", "h2c");
  h.add("TE", "gzip, trailers");
  h.add("X-Request-ID", "abc");
  h.add("Cookie", "a=1; b=2");
  int32_t id = g.get("/v1/items?x=1&y=2", h);
  pump(g, u);

  ASSERT_EQ(u.reqs.count(id), 1u);
  const http::Request& r = u.reqs[id].request;
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.scheme, "http");
  EXPECT_EQ(r.authority, "backend.internal:9000");
  EXPECT_EQ(r.path, "/v1/items");
  EXPECT_EQ(r.query, "x=1&y=2");
  EXPECT_FALSE(r.headers.has("connection"));
  EXPECT_FALSE(r.headers.has("keep-alive"));
  EXPECT_FALSE(r.headers.has("x-hop"));
  EXPECT_FALSE(r.headers.has("transfer-encoding"));
  EXPECT_FALSE(r.headers.has("upgrade"));
  EXPECT_EQ(r.headers.joined("te"), "trailers");
  EXPECT_EQ(r.headers.joined("x-request-id"), "abc");
  EXPECT_EQ(r.headers.joined("cookie"), "a=1; b=2");

  const auto& resp = g.resps[id];
  EXPECT_EQ(resp.status, 200);
  EXPECT_EQ(resp.body, "hello");
  EXPECT_TRUE(resp.ended);
  EXPECT_TRUE(resp.closed);
  EXPECT_EQ(resp.close_code, 0u);
  EXPECT_FALSE(resp.refused);
  EXPECT_EQ(resp.events, (std::vector<std::string>{"head", "data", "end", "closed"}));
  EXPECT_EQ(g.conn.open_streams(), 0u);
}

TEST(H2Client, HeadOnlyResponseEndsWithTheHead) {
  Gateway g;
  Upstream u;
  u.on_head = [&](int32_t id) { u.respond(id, 204, ""); };
  int32_t id = g.get("/");
  pump(g, u);
  EXPECT_EQ(g.resps[id].status, 204);
  EXPECT_TRUE(g.resps[id].head_end_stream);
  EXPECT_EQ(g.resps[id].events, (std::vector<std::string>{"head", "closed"}));
}

TEST(H2Client, PostBiggerThanTheWindowsBothWaysWithBackPressure) {
  ClientSettings cs;
  cs.initial_window_size = 64 * 1024;
  cs.stream_buffer_bytes = 16 * 1024;
  Gateway g(cs);
  g.auto_consume = false;
  Settings ss;  // 64 KiB stream window for request bodies
  Upstream u(ss);
  u.auto_consume = false;
  const std::string up = pattern(1 << 20, 'a');
  const std::string down = pattern(1 << 20, 'A');
  u.on_end = [&](int32_t id) { u.respond(id, 200, down); };

  int32_t id = g.post("/upload", up);
  pump(g, u);
  // Nothing is consumed upstream: the server got at most its stream window, and the client
  // holds at most its stream buffer; the rest waits in the caller.
  EXPECT_LE(u.reqs[id].body.size(), ss.initial_window_size);
  EXPECT_GT(u.reqs[id].body.size(), 0u);
  EXPECT_EQ(g.conn.send_capacity(id), 0u);
  EXPECT_LE(g.resps[id].out_off, ss.initial_window_size + cs.stream_buffer_bytes);

  for (int round = 0; round < 1000 && !u.reqs[id].ended; ++round) {
    u.consume_all();
    pump(g, u);
  }
  ASSERT_TRUE(u.reqs[id].ended);
  EXPECT_EQ(u.reqs[id].body, up);

  // The response: the client does not consume, so the server may send one window only.
  EXPECT_EQ(g.resps[id].status, 200);
  EXPECT_LE(g.resps[id].body.size(), cs.initial_window_size);
  EXPECT_GT(g.resps[id].body.size(), 0u);
  EXPECT_FALSE(g.resps[id].ended);
  EXPECT_EQ(u.conn.send_capacity(id), 0u);
  for (int round = 0; round < 1000 && !g.resps[id].ended; ++round) {
    g.consume_all();
    pump(g, u);
  }
  ASSERT_TRUE(g.resps[id].ended);
  EXPECT_EQ(g.resps[id].body, down);
  EXPECT_TRUE(g.resps[id].closed);
}

TEST(H2Client, FiftyConcurrentStreams) {
  Gateway g;
  Upstream u;
  u.on_head = [&](int32_t id) {
    u.respond(id, 200, "r" + u.reqs[id].request.path + pattern(3000, 'k'));
  };
  std::vector<int32_t> ids;
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(g.conn.can_submit());
    ids.push_back(g.get("/s" + std::to_string(i)));
  }
  EXPECT_EQ(g.conn.open_streams(), 50u);
  pump(g, u);
  EXPECT_EQ(u.max_open, 50u);
  for (int i = 0; i < 50; ++i) {
    const auto& r = g.resps[ids[i]];
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "r/s" + std::to_string(i) + pattern(3000, 'k'));
    EXPECT_TRUE(r.ended && r.closed);
  }
  EXPECT_EQ(g.conn.open_streams(), 0u);
}

TEST(H2Client, RequestAndResponseTrailersAsGrpcUsesThem) {
  Gateway g;
  Upstream u;
  u.on_end = [&](int32_t id) {
    http::HeaderMap t;
    t.add("grpc-status", "0");
    t.add("grpc-message", "OK");
    http::HeaderMap h;
    h.add("content-type", "application/grpc");
    u.respond(id, 200, std::string("\0\0\0\0\2ok", 7), t, h);
  };
  http::HeaderMap h;
  h.add("content-type", "application/grpc");
  h.add("te", "trailers");
  http::HeaderMap req_trailers;
  req_trailers.add("x-checksum", "1234");
  req_trailers.add("connection", "close");  // never allowed in HTTP/2: dropped
  int32_t id = g.post("/pkg.Service/Method", std::string("\0\0\0\0\2hi", 7), req_trailers, h);
  pump(g, u);

  const auto& q = u.reqs[id];
  EXPECT_EQ(q.request.headers.joined("te"), "trailers");
  EXPECT_EQ(q.body, std::string("\0\0\0\0\2hi", 7));
  EXPECT_EQ(q.trailers.joined("x-checksum"), "1234");
  EXPECT_FALSE(q.trailers.has("connection"));
  EXPECT_TRUE(q.ended);

  const auto& r = g.resps[id];
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers.joined("content-type"), "application/grpc");
  EXPECT_EQ(r.body, std::string("\0\0\0\0\2ok", 7));
  ASSERT_TRUE(r.got_trailers);
  EXPECT_EQ(r.trailers.joined("grpc-status"), "0");
  EXPECT_EQ(r.trailers.joined("grpc-message"), "OK");
  EXPECT_EQ(r.events, (std::vector<std::string>{"head", "data", "trailers", "end", "closed"}));
}

TEST(H2Client, TrailersOnlyResponse) {
  // gRPC's "trailers-only" error: HEADERS without END_STREAM, then trailers, no DATA.
  Gateway g;
  Upstream u;
  u.on_head = [&](int32_t id) {
    http::HeaderMap t;
    t.add("grpc-status", "5");
    u.respond(id, 200, "", t);
  };
  int32_t id = g.get("/pkg.Service/Missing");
  pump(g, u);
  EXPECT_EQ(g.resps[id].trailers.joined("grpc-status"), "5");
  EXPECT_EQ(g.resps[id].events, (std::vector<std::string>{"head", "trailers", "end", "closed"}));
}

TEST(H2Client, ResetFromTheServer) {
  Gateway g;
  Upstream u;
  u.on_head = [&](int32_t id) {
    if (u.reqs[id].request.path == "/after-head") {
      u.respond(id, 200, pattern(200000, 'x'));  // more than one window
    } else {
      u.conn.reset_stream(id, NGHTTP2_REFUSED_STREAM);
    }
  };
  g.auto_consume = false;
  int32_t a = g.get("/after-head");
  int32_t b = g.get("/refuse");
  pump(g, u);
  ASSERT_EQ(g.resps[a].status, 200);
  u.conn.reset_stream(a, NGHTTP2_INTERNAL_ERROR);  // mid-body
  pump(g, u);

  const auto& ra = g.resps[a];
  EXPECT_EQ(ra.status, 200);
  ASSERT_TRUE(ra.reset_code.has_value());
  EXPECT_EQ(*ra.reset_code, static_cast<uint32_t>(NGHTTP2_INTERNAL_ERROR));
  EXPECT_FALSE(ra.ended);
  EXPECT_FALSE(ra.refused);  // a response had started: not retryable
  EXPECT_TRUE(ra.closed);
  EXPECT_EQ(ra.close_code, static_cast<uint32_t>(NGHTTP2_INTERNAL_ERROR));

  // REFUSED_STREAM before any response: nothing was processed (RFC 9113 §8.7).
  const auto& rb = g.resps[b];
  EXPECT_EQ(rb.events, (std::vector<std::string>{"reset", "refused", "closed"}));
  EXPECT_TRUE(g.conn.can_submit());  // the connection itself is fine
}

TEST(H2Client, GoawayMidFlightRefusesStreamsAboveTheLastId) {
  Gateway g;
  Upstream u;
  std::vector<int32_t> seen;
  u.on_head = [&](int32_t id) { seen.push_back(id); };
  int32_t a = g.get("/a");
  int32_t b = g.get("/b");
  pump(g, u);
  ASSERT_EQ(seen.size(), 2u);

  // The server starts draining (its GOAWAY is on the wire) while the client, not knowing yet,
  // sends two more requests.
  u.conn.shutdown_graceful();
  std::string s2c(u.conn.pending_output());
  u.conn.consume_output(s2c.size());
  int32_t c = g.get("/c");
  int32_t d = g.post("/d", "body");
  to_server(g, u);  // the server ignores streams above its GOAWAY's last id
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_TRUE(g.conn.can_submit());

  // The GOAWAY reaches the client: c and d are refused, a and b still complete.
  ASSERT_TRUE(g.conn.recv(s2c).ok());
  ASSERT_TRUE(g.goaway.has_value());
  EXPECT_EQ(g.goaway->first, b);
  EXPECT_EQ(g.goaway->second, static_cast<uint32_t>(NGHTTP2_NO_ERROR));
  EXPECT_EQ(g.resps[c].events, (std::vector<std::string>{"refused", "closed"}));
  EXPECT_EQ(g.resps[d].events, (std::vector<std::string>{"refused", "closed"}));
  EXPECT_FALSE(g.conn.can_submit());
  http::Request r;
  r.method = "GET";
  r.path = "/late";
  EXPECT_FALSE(g.conn.submit_request(r, true).ok());

  u.respond(a, 200, "A");
  u.respond(b, 200, "B");
  pump(g, u);
  EXPECT_EQ(g.resps[a].body, "A");
  EXPECT_EQ(g.resps[b].body, "B");
  EXPECT_TRUE(g.resps[a].ended && g.resps[b].ended);
  EXPECT_FALSE(g.resps[a].refused || g.resps[b].refused);
  EXPECT_EQ(g.conn.open_streams(), 0u);
  EXPECT_FALSE(u.conn.want_read() || u.conn.want_write());  // the server is done
}

TEST(H2Client, GoawayRefusesRequestsNotSentYet) {
  Gateway g;
  Upstream u;
  pump(g, u);
  u.conn.shutdown_graceful();
  int32_t late = g.get("/queued");  // submitted, still inside the client codec
  EXPECT_FALSE(g.conn.request_sent(late));
  std::string s2c(u.conn.pending_output());
  u.conn.consume_output(s2c.size());
  ASSERT_TRUE(g.conn.recv(s2c).ok());
  ASSERT_TRUE(g.goaway.has_value());
  EXPECT_EQ(g.goaway->first, 0);
  // nghttp2 drops the HEADERS when it would send them; the codec reports the request refused.
  std::string c2s(g.conn.pending_output());
  g.conn.consume_output(c2s.size());
  EXPECT_EQ(g.resps[late].events, (std::vector<std::string>{"refused", "closed"}));
  EXPECT_EQ(g.conn.open_streams(), 0u);
}

TEST(H2Client, MaxConcurrentStreamsFromTheServerIsRespected) {
  Gateway g;
  Settings ss;
  ss.max_concurrent_streams = 5;
  Upstream u(ss);
  std::vector<int32_t> waiting;
  u.on_head = [&](int32_t id) { waiting.push_back(id); };  // answered later
  EXPECT_EQ(g.conn.available_streams(), 100u);             // before the server's SETTINGS
  pump(g, u);
  EXPECT_EQ(g.conn.available_streams(), 5u);

  std::vector<int32_t> ids;
  while (g.conn.can_submit()) ids.push_back(g.get("/" + std::to_string(ids.size())));
  EXPECT_EQ(ids.size(), 5u);
  EXPECT_EQ(g.conn.available_streams(), 0u);
  pump(g, u);
  EXPECT_EQ(u.open, 5u);

  u.respond(waiting[0], 200, "done");
  pump(g, u);
  EXPECT_TRUE(g.resps[ids[0]].ended);
  EXPECT_EQ(g.conn.available_streams(), 1u);
  EXPECT_TRUE(g.conn.can_submit());

  // A caller that ignores can_submit(): nghttp2 holds the extra requests back instead of
  // having them refused, and the server never sees more than 5 at once.
  for (int i = 0; i < 15; ++i) ids.push_back(g.get("/extra" + std::to_string(i)));
  u.on_head = [&](int32_t id) { u.respond(id, 200, "ok"); };
  for (int32_t id : waiting)
    if (id != waiting[0]) u.respond(id, 200, "ok");
  pump(g, u);
  EXPECT_EQ(u.max_open, 5u);
  for (int32_t id : ids) {
    EXPECT_TRUE(g.resps[id].ended) << id;
    EXPECT_FALSE(g.resps[id].refused) << id;
  }
}

TEST(H2Client, ResponseHeaderListLimit) {
  ClientSettings cs;
  cs.max_header_bytes = 1024;
  Gateway g(cs);
  Upstream u;
  u.on_head = [&](int32_t id) {
    http::HeaderMap h;
    if (u.reqs[id].request.path == "/big") h.add("x-big", std::string(2000, 'v'));
    u.respond(id, 200, "body", {}, h);
  };
  int32_t big = g.get("/big");
  int32_t small = g.get("/small");
  pump(g, u);
  EXPECT_EQ(g.resps[big].events, (std::vector<std::string>{"closed"}));
  EXPECT_EQ(g.resps[big].close_code, static_cast<uint32_t>(NGHTTP2_CANCEL));
  EXPECT_EQ(g.resps[small].body, "body");  // the connection survives
  EXPECT_TRUE(g.resps[small].ended);
}

TEST(H2Client, ClientResetCancelsTheStream) {
  Gateway g;
  Upstream u;
  u.on_head = [&](int32_t id) { u.respond(id, 200, pattern(200000, 'z')); };
  g.auto_consume = false;
  int32_t id = g.get("/long");
  pump(g, u);
  ASSERT_EQ(g.resps[id].status, 200);
  g.conn.reset_stream(id, NGHTTP2_CANCEL);
  pump(g, u);
  EXPECT_TRUE(u.reqs[id].reset);
  EXPECT_TRUE(g.resps[id].closed);
  EXPECT_FALSE(g.resps[id].refused);
  EXPECT_FALSE(g.resps[id].ended);
  EXPECT_EQ(g.conn.open_streams(), 0u);
}

TEST(H2Client, PingAndShutdown) {
  Gateway g;
  Upstream u;
  pump(g, u);
  ASSERT_TRUE(g.conn.ping());
  pump(g, u);
  EXPECT_EQ(g.ping_acks, 1);

  int32_t id = g.get("/last");
  u.on_head = [&](int32_t sid) { u.respond(sid, 200, "bye"); };
  g.conn.shutdown();
  EXPECT_FALSE(g.conn.can_submit());
  pump(g, u);
  EXPECT_EQ(g.resps[id].body, "bye");  // streams opened before the GOAWAY complete
  EXPECT_FALSE(g.conn.want_write());
}

// A bare nghttp2 server session, for what the server codec never sends (1xx interim heads).
struct RawServer {
  nghttp2_session* s = nullptr;
  std::vector<int32_t> requests;

  RawServer() {
    nghttp2_session_callbacks* cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_frame_recv_callback(
        cbs, [](nghttp2_session*, const nghttp2_frame* f, void* ud) {
          if (f->hd.type == NGHTTP2_HEADERS && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
            static_cast<RawServer*>(ud)->requests.push_back(f->hd.stream_id);
          return 0;
        });
    nghttp2_session_server_new(&s, cbs, this);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, nullptr, 0);
  }
  ~RawServer() { nghttp2_session_del(s); }

  void headers(int32_t id, std::vector<std::pair<std::string, std::string>> f, bool end) {
    std::vector<nghttp2_nv> nva;
    for (auto& [k, v] : f) {
      nva.push_back({reinterpret_cast<uint8_t*>(k.data()), reinterpret_cast<uint8_t*>(v.data()),
                     k.size(), v.size(), NGHTTP2_NV_FLAG_NONE});
    }
    nghttp2_submit_headers(s, end ? NGHTTP2_FLAG_END_STREAM : NGHTTP2_FLAG_NONE, id, nullptr,
                           nva.data(), nva.size(), nullptr);
  }
  void pump(Gateway& g) {
    for (int i = 0; i < 1000; ++i) {
      std::string c2s(g.conn.pending_output());
      g.conn.consume_output(c2s.size());
      std::string s2c;
      const uint8_t* data;
      for (ssize_t n; (n = nghttp2_session_mem_send(s, &data)) > 0;)
        s2c.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
      if (c2s.empty() && s2c.empty()) return;
      if (!c2s.empty()) {
        ASSERT_GE(
            nghttp2_session_mem_recv(s, reinterpret_cast<const uint8_t*>(c2s.data()), c2s.size()),
            0);
      }
      if (!s2c.empty()) {
        ASSERT_TRUE(g.conn.recv(s2c).ok());
      }
    }
  }
};

struct InterimGateway : Gateway {
  std::vector<std::pair<int, std::string>> interim;
  void on_informational(int32_t id, int status, http::HeaderMap&& h) override {
    interim.emplace_back(status, h.joined("link"));
    resps[id].events.push_back("1xx");
  }
};

TEST(H2Client, InterimResponsesAreReportedApart) {
  InterimGateway g;
  RawServer srv;
  int32_t id = g.get("/page");
  srv.pump(g);
  ASSERT_EQ(srv.requests, (std::vector<int32_t>{id}));
  srv.headers(id, {{":status", "103"}, {"link", "</style.css>; rel=preload"}}, false);
  srv.headers(id, {{":status", "100"}}, false);
  srv.headers(id, {{":status", "200"}, {"x-final", "1"}}, true);
  srv.pump(g);
  EXPECT_EQ(g.interim, (std::vector<std::pair<int, std::string>>{{103, "</style.css>; rel=preload"},
                                                                 {100, ""}}));
  EXPECT_EQ(g.resps[id].status, 200);
  EXPECT_EQ(g.resps[id].headers.joined("x-final"), "1");
  EXPECT_FALSE(g.resps[id].headers.has("link"));
  EXPECT_EQ(g.resps[id].events, (std::vector<std::string>{"1xx", "1xx", "head", "closed"}));
}

// Found by hsp_h2_client_fuzz: nghttp2 passes any three digits, and "050" must not become a
// final response (an HTTP/1.1 client would get the status line "HTTP/1.1 50").
TEST(H2Client, StatusBelow100IsAStreamError) {
  Gateway g;
  RawServer srv;
  int32_t id = g.get("/odd");
  srv.pump(g);
  srv.headers(id, {{":status", "050"}}, true);
  srv.pump(g);
  EXPECT_EQ(g.resps[id].status, 0);
  EXPECT_EQ(std::count(g.resps[id].events.begin(), g.resps[id].events.end(), "head"), 0);
  EXPECT_EQ(g.resps[id].events.back(), "closed");
}

TEST(H2Client, RejectsConnect) {
  Gateway g;
  http::Request r;
  r.method = "CONNECT";
  r.authority = "x:443";
  EXPECT_FALSE(g.conn.submit_request(r, true).ok());
  EXPECT_EQ(g.conn.open_streams(), 0u);
}

}  // namespace
}  // namespace hsp::h2
