// The HTTP/2 server codec against a real nghttp2 client session, in memory (no sockets), and
// against hand-made frames where nghttp2's client refuses to send what an attacker would.
#include "h2/server.h"

#include <gtest/gtest.h>
#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace hsp::h2 {
namespace {

// ---------------------------------------------------------------------------------------------
// The server side: a handler that records every event.

struct Recorder : Handler {
  struct Req {
    http::Request request;
    bool end_stream = false;
    std::string body;
    size_t unconsumed = 0;
    bool ended = false;
    http::HeaderMap trailers;
    bool reset = false;
    uint32_t reset_code = 0;
    bool closed = false;
    uint32_t close_code = 0;
  };
  ServerConnection* conn = nullptr;
  std::map<int32_t, Req> reqs;
  std::vector<int32_t> order;
  bool auto_consume = true;
  std::function<void(int32_t)> on_head;   // called after recording the head
  std::function<void(int32_t)> on_ready;  // on_send_ready

  void on_request(int32_t id, http::Request&& r, bool end_stream) override {
    Req& q = reqs[id];
    q.request = std::move(r);
    q.end_stream = end_stream;
    order.push_back(id);
    if (on_head) on_head(id);
  }
  void on_request_data(int32_t id, std::string_view data) override {
    Req& q = reqs[id];
    q.body.append(data);
    if (auto_consume) {
      conn->consume(id, data.size());
    } else {
      q.unconsumed += data.size();
    }
  }
  void on_request_trailers(int32_t id, http::HeaderMap&& t) override { reqs[id].trailers = t; }
  void on_request_end(int32_t id) override { reqs[id].ended = true; }
  void on_stream_reset(int32_t id, uint32_t code) override {
    reqs[id].reset = true;
    reqs[id].reset_code = code;
  }
  void on_stream_closed(int32_t id, uint32_t code) override {
    reqs[id].closed = true;
    reqs[id].close_code = code;
  }
  void on_send_ready(int32_t id) override {
    if (on_ready) on_ready(id);
  }
};

// ---------------------------------------------------------------------------------------------
// The client side: a real nghttp2 client session.

struct Client {
  struct Stream {
    int status = 0;
    http::HeaderMap headers;
    http::HeaderMap trailers;
    std::string body;
    bool closed = false;
    uint32_t close_code = 0;
    bool headers_done = false;
    // upload
    std::string upload;
    size_t upload_off = 0;
    bool upload_end = true;
    std::optional<http::HeaderMap> upload_trailers;
  };
  nghttp2_session* s = nullptr;
  std::map<int32_t, Stream> streams;
  std::optional<uint32_t> goaway_code;
  int32_t goaway_last = -1;
  std::vector<std::pair<int32_t, uint32_t>> rst_received;
  bool auto_window = true;

  explicit Client(uint32_t initial_window = 65535, bool auto_window_update = true)
      : auto_window(auto_window_update) {
    nghttp2_session_callbacks* cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, &on_header);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &on_begin_headers);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &on_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &on_frame);
    nghttp2_option* opt;
    nghttp2_option_new(&opt);
    if (!auto_window_update) nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_session_client_new2(&s, cbs, this, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, initial_window},
                                   {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1000}};
    nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, iv, 2);
  }
  ~Client() { nghttp2_session_del(s); }

  static Client& self(void* ud) { return *static_cast<Client*>(ud); }
  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* f, void* ud) {
    Stream& st = self(ud).streams[f->hd.stream_id];
    if (f->headers.cat == NGHTTP2_HCAT_HEADERS) st.headers_done = true;
    return 0;
  }
  static int on_header(nghttp2_session*, const nghttp2_frame* f, const uint8_t* n, size_t nl,
                       const uint8_t* v, size_t vl, uint8_t, void* ud) {
    Stream& st = self(ud).streams[f->hd.stream_id];
    std::string name(reinterpret_cast<const char*>(n), nl);
    std::string value(reinterpret_cast<const char*>(v), vl);
    if (name == ":status") {
      st.status = std::stoi(value);
    } else if (st.headers_done) {
      st.trailers.add(name, value);
    } else {
      st.headers.add(name, value);
    }
    return 0;
  }
  static int on_frame(nghttp2_session*, const nghttp2_frame* f, void* ud) {
    Client& c = self(ud);
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_RESPONSE) {
      c.streams[f->hd.stream_id].headers_done = true;
    }
    if (f->hd.type == NGHTTP2_GOAWAY) {
      c.goaway_code = f->goaway.error_code;
      c.goaway_last = f->goaway.last_stream_id;
    }
    if (f->hd.type == NGHTTP2_RST_STREAM) {
      c.rst_received.emplace_back(f->hd.stream_id, f->rst_stream.error_code);
    }
    return 0;
  }
  static int on_data(nghttp2_session*, uint8_t, int32_t id, const uint8_t* d, size_t n, void* ud) {
    self(ud).streams[id].body.append(reinterpret_cast<const char*>(d), n);
    return 0;
  }
  static int on_close(nghttp2_session*, int32_t id, uint32_t code, void* ud) {
    Stream& st = self(ud).streams[id];
    st.closed = true;
    st.close_code = code;
    return 0;
  }
  static ssize_t read_upload(nghttp2_session* session, int32_t id, uint8_t* buf, size_t len,
                             uint32_t* flags, nghttp2_data_source*, void* ud) {
    Stream& st = self(ud).streams[id];
    size_t n = std::min(len, st.upload.size() - st.upload_off);
    std::copy_n(st.upload.data() + st.upload_off, n, buf);
    st.upload_off += n;
    if (st.upload_off == st.upload.size()) {
      if (!st.upload_end) return n == 0 ? ssize_t{NGHTTP2_ERR_DEFERRED} : static_cast<ssize_t>(n);
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      if (st.upload_trailers) {
        std::vector<nghttp2_nv> nva;
        for (auto& [k, v] : st.upload_trailers->fields()) nva.push_back(nv(k, v));
        nghttp2_submit_trailer(session, id, nva.data(), nva.size());
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      }
    }
    return static_cast<ssize_t>(n);
  }

  static nghttp2_nv nv(const std::string& n, const std::string& v) {
    return {reinterpret_cast<uint8_t*>(const_cast<char*>(n.data())),
            reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), n.size(), v.size(),
            NGHTTP2_NV_FLAG_NONE};
  }

  // A request without a body (END_STREAM on HEADERS).
  int32_t request(std::string method, std::string path,
                  std::vector<std::pair<std::string, std::string>> extra = {}) {
    std::vector<std::pair<std::string, std::string>> f = {{":method", method},
                                                          {":scheme", "https"},
                                                          {":authority", "example.com:8443"},
                                                          {":path", path}};
    for (auto& e : extra) f.push_back(e);
    std::vector<nghttp2_nv> nva;
    for (auto& [k, v] : f) nva.push_back(nv(k, v));
    return nghttp2_submit_request(s, nullptr, nva.data(), nva.size(), nullptr, nullptr);
  }
  int32_t request_with_body(std::string method, std::string path, std::string body,
                            bool body_end = true,
                            std::optional<http::HeaderMap> trailers = std::nullopt) {
    std::vector<std::pair<std::string, std::string>> f = {
        {":method", method}, {":scheme", "https"}, {":authority", "example.com"}, {":path", path}};
    std::vector<nghttp2_nv> nva;
    for (auto& [k, v] : f) nva.push_back(nv(k, v));
    nghttp2_data_provider prov{};
    prov.read_callback = &read_upload;
    int32_t next = nghttp2_session_get_next_stream_id(s);
    Stream& st = streams[next];
    st.upload = std::move(body);
    st.upload_end = body_end;
    st.upload_trailers = std::move(trailers);
    int32_t id = nghttp2_submit_request(s, nullptr, nva.data(), nva.size(), &prov, nullptr);
    EXPECT_EQ(id, next);
    return id;
  }
  void more_upload(int32_t id, std::string data, bool end) {
    Stream& st = streams[id];
    st.upload += data;
    st.upload_end = end;
    nghttp2_session_resume_data(s, id);
  }

  std::string drain() {
    std::string out;
    for (;;) {
      const uint8_t* d;
      ssize_t n = nghttp2_session_mem_send(s, &d);
      if (n <= 0) break;
      out.append(reinterpret_cast<const char*>(d), n);
    }
    return out;
  }
  void feed(std::string_view b) {
    ssize_t rv = nghttp2_session_mem_recv(s, reinterpret_cast<const uint8_t*>(b.data()), b.size());
    EXPECT_EQ(rv, static_cast<ssize_t>(b.size())) << nghttp2_strerror(static_cast<int>(rv));
  }
};

std::string take_output(ServerConnection& conn) {
  std::string all;
  for (;;) {
    std::string_view v = conn.pending_output();
    if (v.empty()) break;
    all.append(v);
    conn.consume_output(v.size());
  }
  return all;
}

// Moves bytes both ways until neither side has anything to say.
void pump(Client& c, ServerConnection& conn, int rounds = 10000) {
  for (int i = 0; i < rounds; ++i) {
    std::string up = c.drain();
    if (!up.empty()) {
      auto r = conn.recv(up);
      EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.errors()[0].str());
    }
    std::string down = take_output(conn);
    if (!down.empty()) c.feed(down);
    if (up.empty() && down.empty()) return;
  }
  ADD_FAILURE() << "pump did not settle";
}

std::string frame(uint8_t type, uint8_t flags, uint32_t stream, std::string_view payload);
std::string request_block(std::string_view path = "/", std::string_view extra = {});
constexpr uint8_t kData = 0, kHeaders = 1, kRst = 3, kSettings = 4, kGoaway = 7, kCont = 9;
constexpr uint8_t kEndStream = 1, kEndHeaders = 4;

struct Fixture : ::testing::Test {
  Settings settings;
  Recorder rec;
  std::unique_ptr<ServerConnection> conn;
  void start() {
    conn = std::make_unique<ServerConnection>(settings, rec, 7);
    rec.conn = conn.get();
  }
  void respond(int32_t id, int status, std::string body,
               std::optional<http::HeaderMap> trailers = std::nullopt) {
    http::ResponseHead head;
    head.status = status;
    head.headers.add("Content-Type", "text/plain");
    head.headers.add("Connection", "close, x-hop");
    head.headers.add("X-Hop", "1");
    head.headers.add("Keep-Alive", "timeout=5");
    head.headers.add("Transfer-Encoding", "chunked");
    head.headers.add("X-Kept", "yes");
    ASSERT_TRUE(conn->submit_response(id, head, false).ok());
    ASSERT_EQ(*conn->send_data(id, body), body.size());
    ASSERT_TRUE(conn->end_stream(id, std::move(trailers)).ok());
  }
};

// ---------------------------------------------------------------------------------------------
// Ordinary traffic.

TEST_F(Fixture, GetBuildsRequestFromPseudoHeadersAndStripsHopByHopFromResponse) {
  start();
  Client c;
  int32_t id =
      c.request("GET", "/a/b?x=1&y=2",
                {{"cookie", "a=1"}, {"accept", "*/*"}, {"cookie", "b=2"}, {"host", "other.test"}});
  pump(c, *conn);
  ASSERT_EQ(rec.reqs.count(id), 1u);
  const http::Request& r = rec.reqs[id].request;
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.scheme, "https");
  EXPECT_EQ(r.authority, "example.com:8443");
  EXPECT_EQ(r.host, "example.com");
  EXPECT_EQ(r.path, "/a/b");
  EXPECT_EQ(r.query, "x=1&y=2");
  EXPECT_EQ(r.orig_uri, "/a/b?x=1&y=2");
  EXPECT_EQ(r.version, 20);
  EXPECT_EQ(r.conn_id, 7u);
  EXPECT_FALSE(r.headers.has("host"));  // :authority wins; the authority is not a field
  ASSERT_NE(r.headers.get("cookie"), nullptr);
  EXPECT_EQ(*r.headers.get("cookie"), "a=1; b=2");
  EXPECT_TRUE(rec.reqs[id].end_stream);

  respond(id, 200, "hello");
  pump(c, *conn);
  ASSERT_TRUE(c.streams[id].closed);
  EXPECT_EQ(c.streams[id].status, 200);
  EXPECT_EQ(c.streams[id].body, "hello");
  EXPECT_FALSE(c.streams[id].headers.has("connection"));
  EXPECT_FALSE(c.streams[id].headers.has("keep-alive"));
  EXPECT_FALSE(c.streams[id].headers.has("transfer-encoding"));
  EXPECT_FALSE(c.streams[id].headers.has("x-hop"));  // nominated by Connection
  EXPECT_TRUE(c.streams[id].headers.has("x-kept"));
  EXPECT_TRUE(rec.reqs[id].closed);
  EXPECT_EQ(rec.reqs[id].close_code, 0u);
  EXPECT_EQ(conn->open_streams(), 0u);
}

TEST_F(Fixture, PostLargerThanWindowHasBackPressureBothWays) {
  start();
  rec.auto_consume = false;
  Client c;
  std::string upload(300 * 1024, 'u');
  for (size_t i = 0; i < upload.size(); ++i) upload[i] = static_cast<char>('a' + i % 26);
  int32_t id = c.request_with_body("POST", "/up", upload);
  pump(c, *conn);
  // Nothing consumed: the client may send no more than the stream window.
  EXPECT_EQ(rec.reqs[id].body.size(), settings.initial_window_size);
  EXPECT_FALSE(rec.reqs[id].ended);
  for (int i = 0; i < 100 && !rec.reqs[id].ended; ++i) {
    size_t n = rec.reqs[id].unconsumed;
    rec.reqs[id].unconsumed = 0;
    conn->consume(id, n);
    pump(c, *conn);
  }
  EXPECT_TRUE(rec.reqs[id].ended);
  EXPECT_EQ(rec.reqs[id].body, upload);

  // Response: 1 MiB pushed through a 64 KiB stream buffer, driven by on_send_ready.
  std::string download(1024 * 1024, 'd');
  size_t sent = 0;
  int ready_calls = 0;
  auto push = [&](int32_t sid) {
    while (sent < download.size()) {
      auto n = conn->send_data(sid, std::string_view(download).substr(sent));
      ASSERT_TRUE(n.ok());
      if (*n == 0) return;
      sent += *n;
    }
    ASSERT_TRUE(conn->end_stream(sid).ok());
  };
  rec.on_ready = [&](int32_t sid) {
    ++ready_calls;
    push(sid);
  };
  http::ResponseHead head;
  ASSERT_TRUE(conn->submit_response(id, head, false).ok());
  push(id);
  EXPECT_LE(sent, settings.stream_buffer_bytes);  // accepted no more than the buffer
  pump(c, *conn);
  EXPECT_GT(ready_calls, 3);
  EXPECT_TRUE(c.streams[id].closed);
  EXPECT_EQ(c.streams[id].body.size(), download.size());
}

TEST_F(Fixture, AStalledUploadDoesNotBlockTheOtherStreams) {
  start();
  Client c;
  std::string upload(300 * 1024, 'x');
  int32_t stalled = c.request_with_body("POST", "/stalled", upload);
  int32_t flowing = c.request_with_body("POST", "/flowing", upload);
  rec.auto_consume = false;
  for (int i = 0; i < 100 && !rec.reqs[flowing].ended; ++i) {
    pump(c, *conn);
    size_t n = rec.reqs[flowing].unconsumed;
    rec.reqs[flowing].unconsumed = 0;
    conn->consume(flowing, n);  // only this stream's handler forwards its bytes
  }
  EXPECT_TRUE(rec.reqs[flowing].ended);
  EXPECT_EQ(rec.reqs[flowing].body.size(), upload.size());
  EXPECT_EQ(rec.reqs[stalled].body.size(), settings.initial_window_size);
  EXPECT_FALSE(rec.reqs[stalled].ended);
}

TEST_F(Fixture, FiftyStreamsOnOneConnection) {
  start();
  Client c;
  std::vector<int32_t> ids;
  for (int i = 0; i < 50; ++i) ids.push_back(c.request("GET", "/s/" + std::to_string(i)));
  pump(c, *conn);
  ASSERT_EQ(rec.reqs.size(), 50u);
  for (int32_t id : ids) respond(id, 200, rec.reqs[id].request.path);
  pump(c, *conn);
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(c.streams[ids[i]].status, 200);
    EXPECT_EQ(c.streams[ids[i]].body, "/s/" + std::to_string(i));
  }
  EXPECT_EQ(conn->open_streams(), 0u);
}

TEST_F(Fixture, TrailersBothWays) {
  start();
  Client c;
  http::HeaderMap up;
  up.add("x-checksum", "abc");
  int32_t id = c.request_with_body("POST", "/grpc.Svc/Call", "payload", true, up);
  pump(c, *conn);
  EXPECT_EQ(rec.reqs[id].body, "payload");
  ASSERT_NE(rec.reqs[id].trailers.get("x-checksum"), nullptr);
  EXPECT_TRUE(rec.reqs[id].ended);
  http::HeaderMap down;
  down.add("grpc-status", "0");
  down.add("grpc-message", "ok");
  down.add("Connection", "close");
  respond(id, 200, "reply", down);
  pump(c, *conn);
  EXPECT_EQ(c.streams[id].body, "reply");
  ASSERT_NE(c.streams[id].trailers.get("grpc-status"), nullptr);
  EXPECT_EQ(*c.streams[id].trailers.get("grpc-status"), "0");
  EXPECT_FALSE(c.streams[id].trailers.has("connection"));
  EXPECT_TRUE(c.streams[id].closed);
}

TEST_F(Fixture, ResponseBeforeRequestEnd) {
  start();
  Client c;
  int32_t id = c.request_with_body("POST", "/early", "part1", /*body_end=*/false);
  pump(c, *conn);
  EXPECT_EQ(rec.reqs[id].body, "part1");
  EXPECT_FALSE(rec.reqs[id].ended);
  respond(id, 413, "too much");
  pump(c, *conn);
  EXPECT_EQ(c.streams[id].status, 413);
  EXPECT_EQ(c.streams[id].body, "too much");
  c.more_upload(id, "part2", true);
  pump(c, *conn);
  EXPECT_TRUE(c.streams[id].closed);
  EXPECT_TRUE(rec.reqs[id].closed);
}

// A response to a request whose body the handler will not read: stop_reading() sends
// RST_STREAM NO_ERROR only after the response's last frame (RFC 9113 §8.1). nghttp2 puts
// RST_STREAM ahead of queued DATA, so a reset right away cut the body off (a 502 at an HTTP/2
// client such as the gateway's own upstream side).
TEST_F(Fixture, StopReadingResetsOnlyAfterTheResponse) {
  start();
  Client c;
  int32_t id = c.request_with_body("POST", "/unread", "part1", /*body_end=*/false);
  pump(c, *conn);
  ASSERT_TRUE(rec.reqs.count(id));
  respond(id, 200, std::string(20000, 'r'));
  conn->stop_reading(id);
  pump(c, *conn);
  EXPECT_EQ(c.streams[id].status, 200);
  EXPECT_EQ(c.streams[id].body.size(), 20000u);
  EXPECT_TRUE(c.streams[id].closed);
  EXPECT_EQ(c.streams[id].close_code, 0u);  // closed cleanly: END_STREAM then NO_ERROR
  ASSERT_EQ(c.rst_received.size(), 1u);
  EXPECT_EQ(c.rst_received[0], std::make_pair(id, uint32_t{0}));
}

TEST_F(Fixture, ResetByClientReachesHandlerAndStreamIsGone) {
  start();
  Client c;
  int32_t id = c.request_with_body("POST", "/slow", "x", false);
  pump(c, *conn);
  ASSERT_EQ(rec.reqs.count(id), 1u);
  nghttp2_submit_rst_stream(c.s, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
  pump(c, *conn);
  EXPECT_TRUE(rec.reqs[id].reset);
  EXPECT_EQ(rec.reqs[id].reset_code, static_cast<uint32_t>(NGHTTP2_CANCEL));
  EXPECT_TRUE(rec.reqs[id].closed);
  http::ResponseHead head;
  EXPECT_FALSE(conn->submit_response(id, head, true).ok());
  EXPECT_FALSE(conn->send_data(id, "late").ok());
  EXPECT_EQ(conn->open_streams(), 0u);
}

TEST_F(Fixture, GracefulGoawayLetsStreamsInFlightComplete) {
  start();
  Client c;
  std::vector<int32_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(c.request("GET", "/inflight"));
  pump(c, *conn);
  ASSERT_EQ(rec.reqs.size(), 3u);
  conn->shutdown_graceful();
  pump(c, *conn);
  ASSERT_TRUE(c.goaway_code.has_value());
  EXPECT_EQ(*c.goaway_code, static_cast<uint32_t>(NGHTTP2_NO_ERROR));
  EXPECT_EQ(c.goaway_last, ids.back());
  EXPECT_TRUE(conn->want_read());  // streams still open
  // A stream opened after the GOAWAY (hand-made: nghttp2's client would not send it; literal
  // fields without indexing leave the HPACK state alone) never reaches the handler.
  ASSERT_TRUE(conn->recv(frame(kHeaders, kEndStream | kEndHeaders, 101, request_block())).ok());
  EXPECT_EQ(rec.reqs.size(), 3u);
  for (int32_t id : ids) respond(id, 200, "done");
  pump(c, *conn);
  for (int32_t id : ids) {
    EXPECT_EQ(c.streams[id].body, "done");
    EXPECT_EQ(c.streams[id].close_code, 0u);
  }
  EXPECT_FALSE(conn->want_read());
  EXPECT_FALSE(conn->want_write());
}

TEST_F(Fixture, ImmediateGoawayStopsTheConnection) {
  start();
  Client c;
  int32_t id = c.request("GET", "/x");
  pump(c, *conn);
  conn->shutdown_now(NGHTTP2_INTERNAL_ERROR);
  pump(c, *conn);
  ASSERT_TRUE(c.goaway_code.has_value());
  EXPECT_EQ(*c.goaway_code, static_cast<uint32_t>(NGHTTP2_INTERNAL_ERROR));
  EXPECT_EQ(c.goaway_last, id);
  EXPECT_FALSE(conn->want_read());
  EXPECT_FALSE(conn->want_write());
  ASSERT_TRUE(conn->goaway_sent().has_value());
}

// ---------------------------------------------------------------------------------------------
// Memory bounds.

TEST_F(Fixture, ZeroWindowClientDoesNotMakeTheCodecBufferTheResponse) {
  settings.output_buffer_bytes = 16 * 1024;
  start();
  Client c(/*initial_window=*/0, /*auto_window_update=*/false);
  int32_t id = c.request("GET", "/big");
  pump(c, *conn);
  http::ResponseHead head;
  ASSERT_TRUE(conn->submit_response(id, head, false).ok());
  std::string chunk(64 * 1024, 'z');
  size_t accepted = 0;
  for (int i = 0; i < 160; ++i) {  // tries to push 10 MiB
    auto n = conn->send_data(id, chunk);
    ASSERT_TRUE(n.ok());
    accepted += *n;
    pump(c, *conn);
  }
  EXPECT_LE(accepted, settings.stream_buffer_bytes);
  EXPECT_EQ(c.streams[id].body.size(), 0u);
  EXPECT_EQ(conn->send_capacity(id), 0u);
}

TEST_F(Fixture, OutputBufferIsCapped) {
  settings.output_buffer_bytes = 8 * 1024;
  start();
  Client c(1 << 30);
  std::vector<int32_t> ids;
  for (int i = 0; i < 20; ++i) ids.push_back(c.request("GET", "/o"));
  pump(c, *conn);
  std::string body(60 * 1024, 'o');
  for (int32_t id : ids) respond(id, 200, body);
  size_t biggest = 0;
  for (int i = 0; i < 10000; ++i) {
    std::string_view v = conn->pending_output();
    biggest = std::max(biggest, v.size());
    std::string down(v);
    conn->consume_output(v.size());
    if (!down.empty()) c.feed(down);
    std::string up = c.drain();
    if (!up.empty()) {
      ASSERT_TRUE(conn->recv(up).ok());
    }
    if (down.empty() && up.empty()) break;
  }
  EXPECT_LE(biggest, settings.output_buffer_bytes + settings.max_frame_size + 9);
  for (int32_t id : ids) EXPECT_EQ(c.streams[id].body.size(), body.size());
}

// ---------------------------------------------------------------------------------------------
// Hand-made frames for abuse.

void put24(std::string& b, uint32_t v) {
  b.push_back(static_cast<char>(v >> 16));
  b.push_back(static_cast<char>(v >> 8));
  b.push_back(static_cast<char>(v));
}
void put32(std::string& b, uint32_t v) {
  b.push_back(static_cast<char>(v >> 24));
  put24(b, v & 0xffffff);
}
std::string frame(uint8_t type, uint8_t flags, uint32_t stream, std::string_view payload) {
  std::string b;
  put24(b, static_cast<uint32_t>(payload.size()));
  b.push_back(static_cast<char>(type));
  b.push_back(static_cast<char>(flags));
  put32(b, stream);
  b.append(payload);
  return b;
}
// HPACK integer with an N-bit prefix (RFC 7541 §5.1).
void hpack_int(std::string& b, uint8_t first, int prefix, size_t v) {
  size_t max = (1u << prefix) - 1;
  if (v < max) {
    b.push_back(static_cast<char>(first | v));
    return;
  }
  b.push_back(static_cast<char>(first | max));
  v -= max;
  while (v >= 128) {
    b.push_back(static_cast<char>((v % 128) + 128));
    v /= 128;
  }
  b.push_back(static_cast<char>(v));
}
// Literal field, new name, without (0x00) or with (0x40) incremental indexing; no Huffman.
std::string literal(std::string_view name, std::string_view value, bool index = false) {
  std::string b;
  if (index) {
    b.push_back(0x40);
  } else {
    b.push_back(0x00);
  }
  hpack_int(b, 0, 7, name.size());
  b.append(name);
  hpack_int(b, 0, 7, value.size());
  b.append(value);
  return b;
}
std::string request_block(std::string_view path, std::string_view extra) {
  std::string b =
      literal(":method", "GET") + literal(":scheme", "https") + literal(":authority", "a.test");
  if (!path.empty()) b += literal(":path", path);
  b.append(extra);
  return b;
}
std::string preface() {
  return std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") + frame(kSettings, 0, 0, "");
}
std::string rst_payload(uint32_t code) {
  std::string p;
  put32(p, code);
  return p;
}

struct Frame {
  uint8_t type, flags;
  uint32_t stream;
  std::string payload;
  uint32_t code() const {  // RST_STREAM / GOAWAY error code
    size_t off = type == kGoaway ? 4 : 0;
    const auto* p = reinterpret_cast<const uint8_t*>(payload.data()) + off;
    return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
  }
};
std::vector<Frame> parse(std::string_view b) {
  std::vector<Frame> out;
  while (b.size() >= 9) {
    const auto* p = reinterpret_cast<const uint8_t*>(b.data());
    size_t len = (size_t{p[0]} << 16) | (size_t{p[1]} << 8) | p[2];
    if (b.size() < 9 + len) break;
    Frame f{p[3], p[4],
            ((uint32_t{p[5]} << 24) | (uint32_t{p[6]} << 16) | (uint32_t{p[7]} << 8) | p[8]) &
                0x7fffffff,
            std::string(b.substr(9, len))};
    out.push_back(std::move(f));
    b.remove_prefix(9 + len);
  }
  return out;
}
int count(const std::vector<Frame>& fs, uint8_t type, std::optional<uint32_t> code = {}) {
  return static_cast<int>(std::count_if(fs.begin(), fs.end(), [&](const Frame& f) {
    return f.type == type && (!code || f.code() == *code);
  }));
}

// :status of the first HEADERS on `stream` (decoded with nghttp2's inflater), or 0.
int response_status(const std::vector<Frame>& fs, uint32_t stream) {
  nghttp2_hd_inflater* inf;
  nghttp2_hd_inflate_new(&inf);
  int status = 0;
  for (const Frame& f : fs) {
    if (f.type != kHeaders) continue;
    std::string_view block = f.payload;
    for (;;) {
      nghttp2_nv nv;
      int flags = 0;
      ssize_t n = nghttp2_hd_inflate_hd2(
          inf, &nv, &flags, reinterpret_cast<const uint8_t*>(block.data()), block.size(), 1);
      if (n < 0) break;
      block.remove_prefix(static_cast<size_t>(n));
      if ((flags & NGHTTP2_HD_INFLATE_EMIT) && f.stream == stream && status == 0 &&
          std::string_view(reinterpret_cast<char*>(nv.name), nv.namelen) == ":status") {
        status = std::stoi(std::string(reinterpret_cast<char*>(nv.value), nv.valuelen));
      }
      if (flags & NGHTTP2_HD_INFLATE_FINAL) {
        nghttp2_hd_inflate_end_headers(inf);
        break;
      }
      if (n == 0 && block.empty()) break;
    }
  }
  nghttp2_hd_inflate_del(inf);
  return status;
}

TEST_F(Fixture, H01RapidResetInOneWriteReachesNoHandlerAndGetsGoaway) {
  start();
  std::string b = preface();
  for (uint32_t i = 0; i < 2000; ++i) {
    uint32_t id = 1 + 2 * i;
    b += frame(kHeaders, kEndStream | kEndHeaders, id, request_block());
    b += frame(kRst, 0, id, rst_payload(NGHTTP2_CANCEL));
  }
  auto r = conn->recv(b);
  (void)r;  // either way: the connection must be over
  auto fs = parse(take_output(*conn));
  EXPECT_EQ(count(fs, kGoaway), 1);
  EXPECT_TRUE(rec.reqs.empty());  // every stream was reset within the read that opened it
  EXPECT_FALSE(conn->want_read());
}

TEST_F(Fixture, H01RapidResetSpreadOverReadsIsBoundedByTheResetBudget) {
  start();
  ASSERT_TRUE(conn->recv(preface()).ok());
  std::string out;
  for (uint32_t i = 0; i < 2000; ++i) {
    uint32_t id = 1 + 2 * i;
    (void)conn->recv(frame(kHeaders, kEndStream | kEndHeaders, id, request_block()));
    (void)conn->recv(frame(kRst, 0, id, rst_payload(NGHTTP2_CANCEL)));
    out += take_output(*conn);
  }
  auto fs = parse(out);
  EXPECT_EQ(count(fs, kGoaway), 1);
  EXPECT_LE(rec.reqs.size(), settings.reset_burst + 1);
  EXPECT_GE(rec.reqs.size(), settings.reset_burst);  // a legitimate rate of cancels is served
  EXPECT_FALSE(conn->want_read());
}

// Found by hsp_h2_server_fuzz: once the reset budget is spent, Debian's nghttp2 queues a GOAWAY
// but goes on opening the streams later in the same read; a later error then sent a second
// GOAWAY with a higher last stream id. The codec stops reading at the budget instead.
TEST_F(Fixture, H01GoawayLastStreamIdNeverIncreases) {
  start();
  std::string b = preface();
  uint32_t id = 1;
  for (uint32_t i = 0; i < 300; ++i, id += 2) {
    b += frame(kHeaders, kEndStream | kEndHeaders, id, request_block());
    b += frame(kRst, 0, id, rst_payload(NGHTTP2_CANCEL));
  }
  b += frame(kHeaders, kEndStream | kEndHeaders, id, request_block());
  b += frame(kHeaders, kEndStream | kEndHeaders, id + 2, std::string("\xff\xff\xff\xff", 4));
  (void)conn->recv(b);
  uint32_t last = UINT32_MAX;
  int goaways = 0;
  for (const Frame& f : parse(take_output(*conn))) {
    if (f.type != kGoaway) continue;
    ++goaways;
    const auto* p = reinterpret_cast<const uint8_t*>(f.payload.data());
    uint32_t l = ((uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3]) &
                 0x7fffffff;
    EXPECT_LE(l, last);
    last = l;
  }
  EXPECT_GE(goaways, 1);
  EXPECT_TRUE(rec.reqs.empty());
  EXPECT_FALSE(conn->want_read());
}

// `Upgrade: h2c` (RFC 7540 §3.2): the upgraded request is stream 1, answered before the
// client's preface has even arrived; a bad HTTP2-Settings value is an error.
TEST_F(Fixture, UpgradeMakesTheRequestStreamOne) {
  start();
  http::Request r;
  r.method = "GET";
  r.path = "/up";
  r.authority = "a.test";
  // SETTINGS_MAX_CONCURRENT_STREAMS = 100, base64url without padding.
  ASSERT_TRUE(conn->upgrade("AAMAAABk", r).ok());
  ASSERT_EQ(rec.reqs.count(1), 1u);
  EXPECT_EQ(rec.reqs[1].request.version, 20);
  EXPECT_EQ(rec.reqs[1].request.path, "/up");
  EXPECT_TRUE(rec.reqs[1].end_stream);
  respond(1, 200, "upgraded");
  ASSERT_TRUE(conn->recv(preface()).ok());
  auto fs = parse(take_output(*conn));
  EXPECT_EQ(response_status(fs, 1), 200);

  Recorder other_rec;
  ServerConnection other(settings, other_rec, 8);
  EXPECT_FALSE(other.upgrade("not base64!", r).ok());
  EXPECT_TRUE(other_rec.reqs.empty());
}

TEST_F(Fixture, H02ContinuationFloodIsCutOff) {
  start();
  std::string value(1000, 'c');
  ASSERT_TRUE(conn->recv(preface() + frame(kHeaders, 0, 1, request_block())).ok());
  size_t sent = 0;
  bool failed = false;
  for (int i = 0; i < 20000 && !failed; ++i) {
    auto r = conn->recv(frame(kCont, 0, 1, literal("x-c" + std::to_string(i), value)));
    sent += 1009;
    failed = !r.ok();
  }
  EXPECT_TRUE(failed);
  EXPECT_LE(sent, 20u * 1009);
  EXPECT_TRUE(rec.reqs.empty());
}

TEST_F(Fixture, H03HpackBombIsRefusedWith431) {
  start();
  std::string block = request_block("/", literal("x-bomb", std::string(4000, 'b'), true));
  for (int i = 0; i < 4000; ++i) block.push_back(static_cast<char>(0xbe));  // index 62
  ASSERT_LT(block.size(), 16384u);
  ASSERT_TRUE(conn->recv(preface() + frame(kHeaders, kEndStream | kEndHeaders, 1, block)).ok());
  auto fs = parse(take_output(*conn));
  EXPECT_TRUE(rec.reqs.empty());
  EXPECT_EQ(response_status(fs, 1), 431);
}

TEST_F(Fixture, HeaderListOverTheLimitIsRefused) {
  start();
  std::string extra;
  for (int i = 0; i < 40; ++i) extra += literal("x-f" + std::to_string(i), std::string(900, 'v'));
  std::string block = request_block("/", extra);
  // Split over HEADERS + CONTINUATION frames (each under 16 KiB).
  std::string b = preface();
  b += frame(kHeaders, kEndStream, 1, block.substr(0, 16000));
  b += frame(kCont, 0, 1, block.substr(16000, 16000));
  b += frame(kCont, kEndHeaders, 1, block.substr(32000));
  ASSERT_TRUE(conn->recv(b).ok());
  auto fs = parse(take_output(*conn));
  EXPECT_TRUE(rec.reqs.empty());
  EXPECT_EQ(response_status(fs, 1), 431);
}

TEST_F(Fixture, H06StreamsBeyondTheLimitAreRefused) {
  start();
  std::string b = preface();
  for (uint32_t i = 0; i < 110; ++i) b += frame(kHeaders, kEndHeaders, 1 + 2 * i, request_block());
  ASSERT_TRUE(conn->recv(b).ok());
  auto fs = parse(take_output(*conn));
  EXPECT_EQ(rec.reqs.size(), 100u);
  EXPECT_EQ(count(fs, kRst, NGHTTP2_REFUSED_STREAM), 10);
}

struct Malformed {
  const char* name;
  std::string block;
};

TEST_F(Fixture, H07MalformedRequestsAreStreamErrorsNeverRequests) {
  std::vector<Malformed> cases = {
      {"uppercase name", request_block("/", literal("X-Upper", "1"))},
      {"connection", request_block("/", literal("connection", "keep-alive"))},
      {"te gzip", request_block("/", literal("te", "gzip"))},
      {"transfer-encoding", request_block("/", literal("transfer-encoding", "chunked"))},
      {"keep-alive", request_block("/", literal("keep-alive", "1"))},
      {"upgrade", request_block("/", literal("upgrade", "websocket"))},
      {"crlf in value", request_block("/", literal("x-a", "1\r\nx-injected: 1"))},
      {"lf in value", request_block("/", literal("x-a", "1\nGET /smuggled HTTP/1.1"))},
      {"nul in value", request_block("/", literal("x-a", std::string("1\0x", 3)))},
      {"missing :path", request_block("")},
      {"pseudo after regular", literal(":method", "GET") + literal(":scheme", "https") +
                                   literal("x-a", "1") + literal(":path", "/") +
                                   literal(":authority", "a.test")},
      {"unknown pseudo", request_block("/", literal(":foo", "bar"))},
      {"space in name", request_block("/", literal("x a", "1"))},
  };
  for (const Malformed& m : cases) {
    SCOPED_TRACE(m.name);
    rec.reqs.clear();
    start();
    ASSERT_TRUE(conn->recv(preface() + frame(kHeaders, kEndStream | kEndHeaders, 1, m.block)).ok());
    auto fs = parse(take_output(*conn));
    EXPECT_TRUE(rec.reqs.empty());
    bool stream_error = std::any_of(fs.begin(), fs.end(), [](const Frame& f) {
      return (f.type == kRst && f.stream == 1 && f.code() == NGHTTP2_PROTOCOL_ERROR) ||
             f.type == kGoaway;
    });
    EXPECT_TRUE(stream_error);
  }
  // The control: the same connection setup with a clean request does reach the handler.
  rec.reqs.clear();
  start();
  ASSERT_TRUE(conn->recv(preface() + frame(kHeaders, kEndStream | kEndHeaders, 1,
                                           request_block("/", literal("te", "trailers"))))
                  .ok());
  EXPECT_EQ(rec.reqs.size(), 1u);
}

TEST_F(Fixture, H08ContentLengthMismatchIsAStreamErrorNeverComplete) {
  start();
  std::string b = preface();
  b += frame(kHeaders, kEndHeaders, 1,
             literal(":method", "POST") + literal(":scheme", "https") +
                 literal(":authority", "a.test") + literal(":path", "/") +
                 literal("content-length", "10"));
  b += frame(kData, kEndStream, 1, "12345");
  ASSERT_TRUE(conn->recv(b).ok());
  auto fs = parse(take_output(*conn));
  EXPECT_EQ(count(fs, kRst, NGHTTP2_PROTOCOL_ERROR), 1);
  // The head may have been delivered, but the body never completes.
  for (auto& [id, q] : rec.reqs) {
    EXPECT_FALSE(q.ended);
    EXPECT_TRUE(q.closed);
    EXPECT_NE(q.close_code, 0u);
  }

  // Longer body than announced.
  rec.reqs.clear();
  start();
  b = preface();
  b += frame(kHeaders, kEndHeaders, 1,
             literal(":method", "POST") + literal(":scheme", "https") +
                 literal(":authority", "a.test") + literal(":path", "/") +
                 literal("content-length", "2"));
  b += frame(kData, kEndStream, 1, "12345");
  ASSERT_TRUE(conn->recv(b).ok());
  fs = parse(take_output(*conn));
  EXPECT_EQ(count(fs, kRst, NGHTTP2_PROTOCOL_ERROR), 1);
  for (auto& [id, q] : rec.reqs) {
    EXPECT_FALSE(q.ended);
    EXPECT_LE(q.body.size(), 2u);
  }
}

TEST_F(Fixture, H04PingFloodFromAClientThatNeverReadsEndsTheConnection) {
  start();
  ASSERT_TRUE(conn->recv(preface()).ok());
  std::string ping = frame(6, 0, 0, std::string(8, 'p'));
  std::string burst;
  for (int i = 0; i < 2000; ++i) burst += ping;
  // The client never reads: PING ACKs pile up inside nghttp2 until max_outbound_ack.
  bool failed = false;
  for (int round = 0; round < 10 && !failed; ++round) failed = !conn->recv(burst).ok();
  EXPECT_TRUE(failed);
}

TEST_F(Fixture, BadPrefaceIsAConnectionError) {
  start();
  auto r = conn->recv("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace hsp::h2
