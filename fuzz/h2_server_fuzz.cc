// libFuzzer target for the HTTP/2 server codec (gateway/h2/server.h). Build with clang:
//   cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DHSP_FUZZ=ON \
//         -DHSP_BUILD_BENCH=OFF
//   ninja -C build-fuzz hsp_h2_server_fuzz
//   build-fuzz/fuzz/hsp_h2_server_fuzz -max_total_time=300 -rss_limit_mb=2048 \
//         fuzz/corpus/h2_server            (seeds: fuzz/corpus/h2_make_seeds.py)
//
// Input layout: the last kConfigBytes bytes choose the settings, the handler's decisions (the
// seed of a small PRNG) and how the rest is cut into recv() chunks; everything before them is
// what a client sends after the connection preface, which the target writes itself so that the
// fuzzer does not spend its time finding the 24 magic bytes.
//
// The handler answers like a data plane would, with choices taken from the input: respond at
// once or after the read, with or without a body, a few bytes or more than the stream buffer
// holds (back-pressure, on_send_ready), trailers sometimes, consume request bodies all, partly or
// late, reset streams, shutdown_graceful (or shutdown_now) at some chunk. pending_output() is
// drained after every call into the connection, sometimes in small pieces.
//
// Invariants (abort on violation):
// - pending_output() never holds more than output_buffer_bytes + one frame (16384 + 9);
// - open_streams() <= max_concurrent_streams;
// - every event names a stream that had on_request and is not closed yet; on_request once per
//   stream; nothing after on_request_end but reset/closed; on_stream_closed once;
// - requests reaching on_request carry only lower-case token field names, no connection-specific
//   field, no host field, te only as "trailers", no CR/LF/NUL in any value (fields, method,
//   path, query, authority); trailers likewise, without pseudo fields;
// - the frames written, parsed back (FrameChecker): per stream HEADERS first and once (then
//   only trailers with END_STREAM), DATA after them, nothing after END_STREAM/RST_STREAM but
//   RST_STREAM/WINDOW_UPDATE/PRIORITY, no PUSH_PROMISE, GOAWAY last-stream-ids never
//   increasing (RFC 9113 §6.8) and never below a stream given to the handler (§8.7);
// - the drain loop terminates (a livelock between on_send_ready and send_data would not).
// Regression inputs of what it found (fixed since, also covered by unit tests in
// tests/unit/h2/): fuzz/corpus/h2_server_repro/.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "h2/server.h"
#include "h2_fuzz_common.h"
#include "http/message.h"
#include "util/log.h"

namespace {

using namespace h2fuzz;  // NOLINT: the shared checker and helpers

using hsp::h2::ServerConnection;

constexpr size_t kConfigBytes = 8;
constexpr std::string_view kPreface("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

struct StreamState {
  bool closed = false;
  bool ended = false;  // on_request_end seen (or the head carried END_STREAM)
  bool trailers = false;
  bool responded = false;
  bool body_open = false;  // response submitted with a body, end_stream not called yet
  size_t unconsumed = 0;   // request body bytes handed out and not consume()d yet
  size_t body_budget = 0;  // response body bytes still to send
};

class FuzzHandler : public hsp::h2::Handler {
 public:
  FuzzHandler(const hsp::h2::Settings& settings, uint64_t seed) : settings_(settings), rng_{seed} {}

  void attach(ServerConnection* conn) { conn_ = conn; }
  void watch(const FrameChecker* frames) { frames_ = frames; }

  void on_request(int32_t id, hsp::http::Request&& req, bool end_stream) override {
    if (streams_.count(id) != 0) {
      fail(streams_[id].closed ? "on_request after on_stream_closed" : "second on_request", id);
    }
    if (id <= 0 || id % 2 == 0) fail("on_request for a stream id a client cannot open", id);
    check_fields(req.headers, false, id);
    if (has_ctl(req.method) || has_ctl(req.path) || has_ctl(req.query) || has_ctl(req.authority) ||
        has_ctl(req.host) || has_ctl(req.scheme))
      fail("request line part with CR, LF or NUL", id);
    if (req.method.empty()) fail("request without a method", id);
    if (req.method == "CONNECT") fail("CONNECT reached the handler", id);
    if (req.path.empty() || (req.path.front() != '/' && req.path != "*"))
      fail("request path that is neither origin-form nor *", id);
    if (req.version != 20) fail("request version is not 20", id);
    if (id > frames_->goaway_last()) fail("on_request above the last-stream-id of our GOAWAY", id);
    if (conn_->open_streams() > settings_.max_concurrent_streams)
      fail("more open streams than max_concurrent_streams", id);
    max_delivered_ = std::max(max_delivered_, id);
    StreamState& s = streams_[id];
    s.ended = end_stream;
    switch (rng_.below(8)) {
      case 0:
      case 1:
      case 2:
        respond(id);
        break;
      case 3:
      case 4:
        later_.push_back(id);  // answered after the read, as an upstream would
        break;
      case 5:
        conn_->reset_stream(id, rng_.below(14));
        break;
      case 6:
        if (end_stream)
          respond(id);
        else
          later_.push_back(id);
        break;
      default:
        break;  // never answered (the client or a shutdown ends it)
    }
  }

  void on_request_data(int32_t id, std::string_view data) override {
    StreamState& s = live(id, "on_request_data");
    if (s.ended) fail("on_request_data after on_request_end", id);
    if (s.trailers) fail("on_request_data after trailers", id);
    if (data.empty()) fail("empty on_request_data", id);
    switch (rng_.below(4)) {
      case 0:
        s.unconsumed += data.size();  // consumed after the read
        break;
      case 1:
        conn_->consume(id, data.size() / 2);
        s.unconsumed += data.size() - data.size() / 2;
        break;
      default:
        conn_->consume(id, data.size());
        break;
    }
  }

  void on_request_trailers(int32_t id, hsp::http::HeaderMap&& trailers) override {
    StreamState& s = live(id, "on_request_trailers");
    if (s.ended) fail("trailers after on_request_end", id);
    if (s.trailers) fail("second trailer block", id);
    s.trailers = true;
    check_fields(trailers, true, id);
  }

  void on_request_end(int32_t id) override {
    StreamState& s = live(id, "on_request_end");
    if (s.ended) fail("second on_request_end (or after an END_STREAM head)", id);
    s.ended = true;
    if (!s.responded && rng_.chance(50)) respond(id);
  }

  void on_stream_reset(int32_t id, uint32_t) override { live(id, "on_stream_reset"); }

  void on_stream_closed(int32_t id, uint32_t) override {
    StreamState& s = live(id, "on_stream_closed");
    s.closed = true;
  }

  void on_send_ready(int32_t id) override {
    StreamState& s = live(id, "on_send_ready");
    if (!s.body_open) fail("on_send_ready without an open response body", id);
    pump(id, s);
  }

  // After each read: the deferred answers, late consume()s, streams finished later.
  void after_read() {
    std::vector<int32_t> ids;
    ids.swap(later_);
    for (int32_t id : ids) {
      auto it = streams_.find(id);
      if (it == streams_.end() || it->second.closed) continue;
      if (!it->second.responded) respond(id);
    }
    for (auto& [id, s] : streams_) {
      if (s.closed) continue;
      if (s.unconsumed > 0 && rng_.chance(70)) {
        conn_->consume(id, s.unconsumed);
        s.unconsumed = 0;
      }
      if (s.body_open && rng_.chance(30)) pump(id, s);
      if (!s.responded && rng_.chance(5)) conn_->reset_stream(id, rng_.below(14));
    }
  }

  Rng& rng() { return rng_; }
  int32_t max_delivered() const { return max_delivered_; }

 private:
  StreamState& live(int32_t id, const char* event) {
    auto it = streams_.find(id);
    if (it == streams_.end()) {
      std::fprintf(stderr, "h2_server_fuzz: %s\n", event);
      fail("event for a stream that never had on_request", id);
    }
    if (it->second.closed) {
      std::fprintf(stderr, "h2_server_fuzz: %s\n", event);
      fail("event after on_stream_closed", id);
    }
    return it->second;
  }

  void respond(int32_t id) {
    StreamState& s = streams_[id];
    if (s.responded || s.closed) return;
    static const int kStatus[] = {200, 204, 304, 404, 500, 503, 200, 200};
    hsp::http::ResponseHead head;
    head.status = kStatus[rng_.below(8)];
    // Names as an HTTP/1 upstream sends them: mixed case, hop-by-hop ones the codec strips.
    head.headers.add("Content-Type", "text/plain");
    if (rng_.chance(30)) head.headers.add("Connection", "keep-alive, X-Hop");
    if (rng_.chance(30)) head.headers.add("X-Hop", "1");
    if (rng_.chance(20)) head.headers.add("Transfer-Encoding", "chunked");
    if (rng_.chance(10)) head.headers.add("X-Bad", "a\r\nb");
    if (rng_.chance(10)) head.headers.add(std::string(rng_.below(3000) + 1, 'v'), "long");
    bool end = rng_.chance(20);
    auto r = conn_->submit_response(id, head, end);
    if (!r.ok()) return;  // nghttp2 may refuse (the stream is closing): not an invariant
    s.responded = true;
    if (end) return;
    s.body_open = true;
    // A few bytes mostly; sometimes more than the stream buffer holds (back-pressure).
    static const size_t kBudget[] = {0, 1, 5, 100, 1000, 20000, 70000, 300000};
    s.body_budget = kBudget[rng_.below(8)];
    pump(id, s);
  }

  void pump(int32_t id, StreamState& s) {
    static const std::string kChunk(8192, 'x');
    while (s.body_budget > 0) {
      size_t cap = conn_->send_capacity(id);
      size_t want = std::min({s.body_budget, kChunk.size(), size_t{1} + rng_.below(8192)});
      auto r = conn_->send_data(id, std::string_view(kChunk).substr(0, want));
      if (!r.ok()) fail("send_data failed on a live stream with an open body", id);
      if (r.value() > cap || r.value() > want) fail("send_data took more than its capacity", id);
      if (conn_->send_capacity(id) > settings_.stream_buffer_bytes)
        fail("send_capacity above stream_buffer_bytes", id);
      s.body_budget -= r.value();
      if (r.value() < want) return;  // full: on_send_ready continues
      if (rng_.chance(20)) return;   // the upstream is slow: continue after a later read
    }
    if (rng_.chance(60)) {
      std::optional<hsp::http::HeaderMap> trailers;
      if (rng_.chance(50)) {
        trailers.emplace();
        trailers->add("Grpc-Status", std::to_string(rng_.below(17)));
        if (rng_.chance(30)) trailers->add("grpc-message", "bad\nvalue");
      }
      auto r = conn_->end_stream(id, std::move(trailers));
      if (!r.ok()) fail("end_stream failed on a live stream with an open body", id);
      s.body_open = false;
    }
  }

  const hsp::h2::Settings& settings_;
  Rng rng_;
  ServerConnection* conn_ = nullptr;
  const FrameChecker* frames_ = nullptr;
  std::map<int32_t, StreamState> streams_;
  std::vector<int32_t> later_;
  int32_t max_delivered_ = 0;
};

void drain(ServerConnection& conn, const hsp::h2::Settings& settings, Rng& rng,
           FrameChecker& frames, const FuzzHandler& handler) {
  // Bounded: with the peer's windows closed nghttp2 stops producing DATA, and each stream's
  // body budget is finite, so this ends; an endless loop here is a finding.
  for (int i = 0; i < 1'000'000; ++i) {
    std::string_view out = conn.pending_output();
    if (out.size() > settings.output_buffer_bytes + kMaxFrame)
      fail("pending_output() above output_buffer_bytes + one frame", 0);
    if (conn.open_streams() > settings.max_concurrent_streams)
      fail("more open streams than max_concurrent_streams", 0);
    if (out.empty()) {
      // RFC 9113 §8.7: a stream passed to the application is covered by every GOAWAY sent,
      // including one queued while the read that delivered it was being processed.
      if (handler.max_delivered() > frames.goaway_last())
        fail("a GOAWAY's last-stream-id is below a stream given to the handler",
             handler.max_delivered());
      return;
    }
    // A socket sometimes takes only part of it.
    size_t n = rng.chance(25) ? rng.below(static_cast<uint32_t>(out.size())) + 1 : out.size();
    frames.feed(out.substr(0, n));
    conn.consume_output(n);
  }
  std::fprintf(stderr, "drain: %zu open streams, want_write %d, %zu bytes pending\n",
               conn.open_streams(), conn.want_write() ? 1 : 0, conn.pending_output().size());
  fail("drain loop did not terminate", 0);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  hsp::log::set_level(hsp::log::Level::error);  // connection errors are the normal case here
  g_trace = std::getenv("HSP_H2_FUZZ_TRACE") != nullptr;
  g_target = "h2_server_fuzz";
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint8_t cfg[kConfigBytes] = {};
  size_t body_size = size;
  if (size >= kConfigBytes) {
    body_size = size - kConfigBytes;
    for (size_t i = 0; i < kConfigBytes; ++i) cfg[i] = data[body_size + i];
  }
  std::string_view input(reinterpret_cast<const char*>(data), body_size);

  hsp::h2::Settings settings;
  static const uint32_t kStreams[] = {100, 1, 2, 4};
  settings.max_concurrent_streams = kStreams[cfg[0] & 3];
  static const size_t kOut[] = {64 * 1024, 1024, 100, 16 * 1024};
  settings.output_buffer_bytes = kOut[(cfg[0] >> 2) & 3];
  static const size_t kStreamBuf[] = {64 * 1024, 100, 1000, 16 * 1024};
  settings.stream_buffer_bytes = kStreamBuf[(cfg[0] >> 4) & 3];
  if ((cfg[0] & 0x40) != 0) {
    settings.max_header_bytes = 256;  // reach the 431 path with small inputs
    settings.max_header_count = 4;
  }
  if ((cfg[0] & 0x80) != 0) {
    settings.initial_window_size = 100;
    settings.connection_window_size = 65535;
    settings.reset_burst = 3;
    settings.control_burst = 5;
  }
  uint64_t seed = 0;
  for (size_t i = 1; i < 6; ++i) seed = seed << 8 | cfg[i];
  size_t chunks = 1 + cfg[6] % 8;
  uint32_t shutdown_at = cfg[7];  // chunk index for shutdown_graceful (>= chunks: never)

  FuzzHandler handler(settings, seed);
  ServerConnection conn(settings, handler, 1);
  handler.attach(&conn);
  Rng& rng = handler.rng();
  FrameChecker frames(true);
  handler.watch(&frames);
  drain(conn, settings, rng, frames, handler);  // our SETTINGS

  auto r = conn.recv(kPreface);
  drain(conn, settings, rng, frames, handler);
  if (!r.ok()) fail("the client preface was refused", 0);

  size_t off = 0;
  for (size_t c = 0; c < chunks && r.ok(); ++c) {
    size_t left = input.size() - off;
    size_t n =
        c + 1 == chunks ? left : std::min<size_t>(left, rng.below(static_cast<uint32_t>(left + 1)));
    r = conn.recv(input.substr(off, n));
    off += n;
    if (g_trace) {  // seed checking: what each read did
      std::fprintf(stderr, "recv %zu bytes: %s, open_streams %zu\n", n,
                   r.ok() ? "ok" : r.errors().front().message.c_str(), conn.open_streams());
    }
    drain(conn, settings, rng, frames, handler);
    if (!r.ok()) break;  // the connection is finished: flushed once more, then closed
    handler.after_read();
    drain(conn, settings, rng, frames, handler);
    if (c == shutdown_at % 16) {
      if ((shutdown_at & 0x80) != 0)
        conn.shutdown_now(2);
      else
        conn.shutdown_graceful();
      drain(conn, settings, rng, frames, handler);
    }
    (void)conn.want_read();
    (void)conn.want_write();
  }
  // The upstream side finishes what it still holds, as after the last read.
  if (r.ok()) {
    handler.after_read();
    drain(conn, settings, rng, frames, handler);
  }
  return 0;
}
