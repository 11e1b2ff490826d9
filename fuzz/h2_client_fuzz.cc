// libFuzzer target for the HTTP/2 client codec (gateway/h2/client.h). Build with clang:
//   cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DHSP_FUZZ=ON \
//         -DHSP_BUILD_BENCH=OFF
//   ninja -C build-fuzz hsp_h2_client_fuzz
//   build-fuzz/fuzz/hsp_h2_client_fuzz -max_total_time=300 -rss_limit_mb=2048 \
//         fuzz/corpus/h2_client            (seeds: fuzz/corpus/h2_make_seeds.py)
//
// Input layout: the last kConfigBytes bytes choose the settings, the caller's decisions (the seed
// of a small PRNG) and how the rest is cut into recv() chunks; everything before them is what
// the server sends after its first (empty, valid) SETTINGS frame, which the target writes
// itself. Before the first read the target submits 1 to 6 requests: GETs, bodies ended at once
// (with trailers sometimes), bodies left open and finished after a later read.
//
// Invariants (abort on violation):
// - pending_output() never holds more than output_buffer_bytes + one frame (16384 + 9);
// - open_streams() <= max_concurrent_streams; can_submit() true means submit_request works;
// - every event names a stream submit_request opened that is not closed yet; on_stream_closed
//   once; on_response_head at most once, with a status of 200..999, and no 1xx after it; body,
//   trailers and end only after the head; nothing but reset/closed after on_response_end;
//   on_stream_refused only before a head, followed by on_stream_closed;
// - response fields: lower-case token names, no CR/LF/NUL in values, no pseudo fields;
// - the frames written, parsed back (FrameChecker): the client magic first; per stream HEADERS
//   first and once (then only trailers with END_STREAM), new stream ids increasing, DATA after
//   HEADERS, nothing after END_STREAM/RST_STREAM but RST_STREAM/WINDOW_UPDATE/PRIORITY;
// - the drain loop terminates.
// Regression inputs of what it found (fixed since, also covered by unit tests in
// tests/unit/h2/): fuzz/corpus/h2_client_repro/.
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

#include "h2/client.h"
#include "h2_fuzz_common.h"
#include "http/message.h"
#include "util/log.h"

namespace {

using namespace h2fuzz;  // NOLINT: the shared checker and helpers

using hsp::h2::ClientConnection;

constexpr size_t kConfigBytes = 8;
// The server's connection preface: an empty SETTINGS frame.
constexpr std::string_view kServerSettings("\x00\x00\x00\x04\x00\x00\x00\x00\x00", 9);

void check_fields(const hsp::http::HeaderMap& fields, int32_t id) {
  for (const auto& [name, value] : fields) {
    if (bad_name(name)) fail("response field name with upper case or a non-token byte", id);
    if (has_ctl(value)) fail("response field value with CR, LF or NUL", id);
  }
}

struct StreamState {
  bool closed = false;
  bool head = false;
  bool ended = false;
  bool refused = false;
  bool body_open = false;  // request body not ended yet
  size_t body_budget = 0;  // request body bytes still to send
  bool trailers_out = false;
  size_t unconsumed = 0;
};

class FuzzHandler : public hsp::h2::ClientHandler {
 public:
  FuzzHandler(const hsp::h2::ClientSettings& settings, uint64_t seed)
      : settings_(settings), rng_{seed} {}

  void attach(ClientConnection* conn) { conn_ = conn; }
  Rng& rng() { return rng_; }

  // A request of the kind the data plane sends: mixed-case names, hop-by-hop fields the codec
  // must drop, te: trailers for gRPC, bodies of a few bytes or more than the stream buffer.
  void submit() {
    if (!conn_->can_submit()) return;
    size_t before = conn_->available_streams();
    hsp::http::Request req;
    static const char* kMethods[] = {"GET", "POST", "PUT", "HEAD", "OPTIONS", "DELETE"};
    req.method = kMethods[rng_.below(6)];
    req.scheme = rng_.chance(50) ? "https" : "";
    req.authority = rng_.chance(80) ? "example.com:8443" : "";
    req.path = req.method == std::string("OPTIONS") && rng_.chance(30) ? "*" : "/p/a";
    if (rng_.chance(50)) req.query = "q=1&r=2";
    req.headers.add("Host", "example.com");
    req.headers.add("User-Agent", "fuzz");
    if (rng_.chance(30)) req.headers.add("Connection", "keep-alive, X-Hop");
    if (rng_.chance(30)) req.headers.add("X-Hop", "1");
    if (rng_.chance(30)) req.headers.add("TE", "trailers, gzip");
    if (rng_.chance(20)) req.headers.add("Transfer-Encoding", "chunked");
    if (rng_.chance(10)) req.headers.add("X-Bad", "a\nb");
    bool end = rng_.chance(35);
    auto r = conn_->submit_request(req, end);
    if (!r.ok()) fail("submit_request failed although can_submit()", 0);
    int32_t id = r.value();
    if (streams_.count(id) != 0) fail("submit_request returned a stream id twice", id);
    if (conn_->available_streams() + 1 != before)
      fail("available_streams() did not drop by one", id);
    StreamState& s = streams_[id];
    if (end) return;
    s.body_open = true;
    static const size_t kBudget[] = {0, 1, 5, 100, 1000, 20000, 70000, 300000};
    s.body_budget = kBudget[rng_.below(8)];
    s.trailers_out = rng_.chance(40);
    pump(id, s);
  }

  void on_response_head(int32_t id, int status, hsp::http::HeaderMap&& headers,
                        bool end_stream) override {
    StreamState& s = live(id, "on_response_head");
    if (s.head) fail("second on_response_head", id);
    if (status < 200 || status > 999) fail("final head with a status outside 200..999", id);
    check_fields(headers, id);
    s.head = true;
    s.ended = end_stream;
    if (rng_.chance(5)) conn_->reset_stream(id, 8);  // the downstream client went away
  }

  void on_informational(int32_t id, int status, hsp::http::HeaderMap&& headers) override {
    StreamState& s = live(id, "on_informational");
    if (s.head) fail("1xx after the final head", id);
    if (status < 100 || status > 199) fail("informational status outside 1xx", id);
    check_fields(headers, id);
  }

  void on_response_data(int32_t id, std::string_view data) override {
    StreamState& s = live(id, "on_response_data");
    if (!s.head) fail("response data before the head", id);
    if (s.ended) fail("response data after the end", id);
    if (data.empty()) fail("empty on_response_data", id);
    switch (rng_.below(4)) {
      case 0:
        s.unconsumed += data.size();
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

  void on_response_trailers(int32_t id, hsp::http::HeaderMap&& trailers) override {
    StreamState& s = live(id, "on_response_trailers");
    if (!s.head) fail("trailers before the head", id);
    if (s.ended) fail("trailers after the end", id);
    check_fields(trailers, id);
  }

  void on_response_end(int32_t id) override {
    StreamState& s = live(id, "on_response_end");
    if (!s.head) fail("response end before the head", id);
    if (s.ended) fail("second response end", id);
    s.ended = true;
  }

  void on_stream_reset(int32_t id, uint32_t) override { live(id, "on_stream_reset"); }

  void on_stream_refused(int32_t id) override {
    StreamState& s = live(id, "on_stream_refused");
    if (s.head) fail("refused after a response head", id);
    s.refused = true;
  }

  void on_stream_closed(int32_t id, uint32_t) override {
    StreamState& s = live(id, "on_stream_closed");
    s.closed = true;
    if (rng_.chance(30)) submit();  // the retry of a refused request, or the next request
  }

  void on_goaway(int32_t, uint32_t) override {
    if (conn_->can_submit()) fail("can_submit() after a GOAWAY", 0);
  }

  void on_send_ready(int32_t id) override {
    StreamState& s = live(id, "on_send_ready");
    if (!s.body_open) fail("on_send_ready without an open request body", id);
    pump(id, s);
  }

  void after_read() {
    std::vector<int32_t> ids;
    for (auto& [id, s] : streams_)
      if (!s.closed) ids.push_back(id);
    for (int32_t id : ids) {
      StreamState& s = streams_[id];
      if (s.closed) continue;
      if (s.unconsumed > 0 && rng_.chance(70)) {
        conn_->consume(id, s.unconsumed);
        s.unconsumed = 0;
      }
      if (s.body_open && rng_.chance(40)) pump(id, s);
      if (rng_.chance(3)) conn_->reset_stream(id, 8);
    }
    if (rng_.chance(30)) submit();
    if (rng_.chance(10)) (void)conn_->ping();
  }

 private:
  StreamState& live(int32_t id, const char* event) {
    auto it = streams_.find(id);
    if (it == streams_.end()) {
      std::fprintf(stderr, "h2_client_fuzz: %s\n", event);
      fail("event for a stream submit_request never opened", id);
    }
    if (it->second.closed) {
      std::fprintf(stderr, "h2_client_fuzz: %s\n", event);
      fail("event after on_stream_closed", id);
    }
    if (it->second.refused && std::string_view(event) != "on_stream_closed") {
      std::fprintf(stderr, "h2_client_fuzz: %s\n", event);
      fail("event other than on_stream_closed after on_stream_refused", id);
    }
    return it->second;
  }

  void pump(int32_t id, StreamState& s) {
    static const std::string kChunk(8192, 'b');
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
      if (rng_.chance(20)) return;   // the downstream is slow
    }
    if (rng_.chance(60)) {
      std::optional<hsp::http::HeaderMap> trailers;
      if (s.trailers_out) {
        trailers.emplace();
        trailers->add("Grpc-Timeout", "1S");
        if (rng_.chance(30)) trailers->add("X-Bad", "a\rb");
        if (rng_.chance(20)) trailers->add("Connection", "close");
      }
      auto r = conn_->end_stream(id, std::move(trailers));
      if (!r.ok()) fail("end_stream failed on a live stream with an open body", id);
      s.body_open = false;
    }
  }

  const hsp::h2::ClientSettings& settings_;
  Rng rng_;
  ClientConnection* conn_ = nullptr;
  std::map<int32_t, StreamState> streams_;
};

void drain(ClientConnection& conn, const hsp::h2::ClientSettings& settings, Rng& rng,
           FrameChecker& frames) {
  for (int i = 0; i < 1'000'000; ++i) {
    std::string_view out = conn.pending_output();
    if (out.size() > settings.output_buffer_bytes + kMaxFrame)
      fail("pending_output() above output_buffer_bytes + one frame", 0);
    if (conn.open_streams() > settings.max_concurrent_streams)
      fail("more open streams than max_concurrent_streams", 0);
    if (out.empty()) return;
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
  hsp::log::set_level(hsp::log::Level::error);
  g_trace = std::getenv("HSP_H2_FUZZ_TRACE") != nullptr;
  g_target = "h2_client_fuzz";
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

  hsp::h2::ClientSettings settings;
  static const uint32_t kStreams[] = {100, 1, 2, 4};
  settings.max_concurrent_streams = kStreams[cfg[0] & 3];
  static const size_t kOut[] = {64 * 1024, 1024, 100, 16 * 1024};
  settings.output_buffer_bytes = kOut[(cfg[0] >> 2) & 3];
  static const size_t kStreamBuf[] = {64 * 1024, 100, 1000, 16 * 1024};
  settings.stream_buffer_bytes = kStreamBuf[(cfg[0] >> 4) & 3];
  if ((cfg[0] & 0x40) != 0) {
    settings.max_header_bytes = 256;
    settings.max_header_count = 4;
  }
  if ((cfg[0] & 0x80) != 0) {
    settings.initial_window_size = 100;
    settings.connection_window_size = 65535;
  }
  uint64_t seed = 0;
  for (size_t i = 1; i < 6; ++i) seed = seed << 8 | cfg[i];
  size_t chunks = 1 + cfg[6] % 8;
  uint32_t shutdown_at = cfg[7];

  FuzzHandler handler(settings, seed);
  ClientConnection conn(settings, handler, 1);
  handler.attach(&conn);
  Rng& rng = handler.rng();
  FrameChecker frames(false);
  size_t requests = 1 + rng.below(6);
  for (size_t i = 0; i < requests; ++i) handler.submit();
  drain(conn, settings, rng, frames);

  auto r = conn.recv(kServerSettings);
  drain(conn, settings, rng, frames);
  if (!r.ok()) fail("the server's SETTINGS frame was refused", 0);

  size_t off = 0;
  for (size_t c = 0; c < chunks && r.ok(); ++c) {
    size_t left = input.size() - off;
    size_t n =
        c + 1 == chunks ? left : std::min<size_t>(left, rng.below(static_cast<uint32_t>(left + 1)));
    r = conn.recv(input.substr(off, n));
    off += n;
    drain(conn, settings, rng, frames);
    if (!r.ok()) break;
    handler.after_read();
    drain(conn, settings, rng, frames);
    if (c == shutdown_at % 16) {
      conn.shutdown();
      if (conn.can_submit()) fail("can_submit() after shutdown()", 0);
      drain(conn, settings, rng, frames);
    }
    (void)conn.want_read();
    (void)conn.want_write();
  }
  if (r.ok()) {
    handler.after_read();
    drain(conn, settings, rng, frames);
  }
  return 0;
}
