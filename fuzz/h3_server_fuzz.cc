// libFuzzer target for the QUIC + HTTP/3 server (gateway/h3/quic_server.h). Build with clang:
//   cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DHSP_FUZZ=ON \
//         -DHSP_BUILD_TESTS=OFF -DHSP_BUILD_BENCH=OFF
//   ninja -C build-fuzz hsp_h3_server_fuzz
//   build-fuzz/fuzz/hsp_h3_server_fuzz -max_total_time=600 -rss_limit_mb=2048 \
//         -timeout=10 fuzz/corpus/h3_server        (seeds: fuzz/corpus/h3_make_seeds.py)
//
// Nothing goes over a network: the server and the in-memory clients (h3_fuzz_client.h) hand
// datagrams to each other in this process, with loopback addresses in the Address values, on a
// simulated clock that only moves when the target moves it. ngtcp2, nghttp3 and GnuTLS are the
// system libraries (not instrumented): coverage guides through quic_server.cc, common.cc and
// what their callbacks see.
//
// The first input byte chooses one of two modes (bit 0):
//
// Raw datagrams (bit 0 = 0): a fresh QuicServer per input, with options from the rest of byte 0
// (always_retry, cid_prefix, retry_above_handshakes, stateless_resets_per_second,
// max_connections), then ops (see RawOp) that send raw datagrams from spoofable loopback
// sources (optionally padded to 1200 bytes), make up to two real clients handshake (one may
// offer a wrong ALPN or none), replay or corrupt their datagrams from their own or other
// addresses (Retry tokens that are forged, moved or late), send short- or long-header packets
// to connection IDs the server issued (live connections, closing and draining periods,
// forgotten ones: stateless resets), move the clock, shut down. Encrypted packets cannot be
// made by mutation, so the clients supply them.
//
// HTTP/3 requests (bit 0 = 1): one connection, handshaken once and kept across inputs (a new
// one when it died, the server shut down, or an input wrote on a unidirectional stream), on one
// of two servers (bit 1: default options, or small limits: 4 streams, 256-byte heads, 1000-byte
// stream buffers). Bytes 1-4 seed the handler's decisions. Then records (see the H3 section):
// bytes written raw on request streams (HEADERS with QPACK, DATA, anything), on new
// unidirectional streams (the stream type is the first byte) or after the client's SETTINGS on
// its control stream, each with or without FIN, with client resets and STOP_SENDING, and actions
// (shutdown_graceful, close_all, clock moves, the client's CONNECTION_CLOSE). Then the exchange
// runs until quiet, the client resets whatever it still has open, and runs until quiet again.
// HSP_H3_FUZZ_FRESH=1 makes a new connection for every input (to reproduce a finding alone).
//
// Environment: HSP_H3_FUZZ_TRACE=1 prints what each input does. What this target found in the
// server (an empty datagram aborting in ngtcp2; a malformed request closing the whole
// connection; QPACK-blocked requests that never closed; on_send_ready for a stream the handler
// reset) is fixed; the reproducers stay as regression inputs: fuzz/corpus/h3_server_repro/
// (fuzz/corpus/h3_make_seeds.py), run with
//   HSP_H3_FUZZ_FRESH=1 hsp_h3_server_fuzz fuzz/corpus/h3_server_repro/*
//
// The handler answers like a data plane: at once or later, with a body of a few bytes or more
// than the stream buffer holds (back-pressure, on_send_ready), trailers sometimes, consuming
// request bodies at once, partly or late, resetting streams, stop_reading.
//
// Invariants (abort on violation):
// - handler events: only for streams that had on_request and are not closed, on_request once
//   per stream and only on client bidirectional streams, nothing after on_request_end but
//   reset/closed, on_stream_closed once, on_connection_closed once and after on_stream_closed
//   of each of its streams, no event on a closed connection; live requests per connection at
//   most max_bidi_streams;
// - requests carry only lower-case token names, no connection-specific field, no host field,
//   te only as "trailers", no CR/LF/NUL anywhere, version 30, a method, a path that is
//   origin-form or "*" (OPTIONS), no CONNECT; trailers likewise, without pseudo fields;
// - send_data/end_stream succeed on a live stream with an open body, never take more than given;
// - every response stream that ends with FIN is HEADERS, DATA..., [HEADERS] with no partial
//   frame and no control frame; its head decodes with QPACK's static table, :status first and
//   as submitted (431/501 for the ones the server answers itself), no forbidden field; its body
//   is exactly the bytes send_data took; trailers have no pseudo field;
// - the server's control stream: SETTINGS first, GOAWAY ids multiples of 4 that never increase
//   and above every stream handed to the handler (RFC 9114 §5.2);
// - datagrams at most 1452 bytes; to a source address that never completed a handshake (the
//   raw sources), never more than 3x the bytes received from it (RFC 9000 §8);
// - handle_expiry() makes progress: expiry() does not stay at or before now without datagrams;
// - after the client reset every stream and the exchange went quiet, no request is left open
//   in the handler (a leak would exhaust max_bidi_streams).
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netinet/in.h>
#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>

#include <algorithm>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "h2_fuzz_common.h"
#include "h3/quic_server.h"
#include "h3_fuzz_client.h"
#include "http/message.h"
#include "util/log.h"

namespace {

using namespace h2fuzz;  // NOLINT: Rng, fail, has_ctl, bad_name
using h3fuzz::Client;
using hsp::h3::Address;
using hsp::h3::Datagram;
using hsp::h3::QuicServer;
using hsp::h3::ServerCredentials;
using hsp::h3::ServerOptions;

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kSecond = 1000 * kMs;
constexpr size_t kMaxUdpPayload = 1452;  // quic_server.cc's largest datagram

uint64_t g_now = 1000 * kSecond;  // the simulated clock (steady ns), only ever moves forward
bool g_fresh = false;             // HSP_H3_FUZZ_FRESH: a new connection per input
bool g_strict = true;             // the checks of the findings above (fixed): always on

void trace(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void trace(const char* fmt, ...) {
  if (!g_trace) return;
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
}

Address v4(uint8_t last, uint16_t port) {
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(port);
  in.sin_addr.s_addr = htonl(0x7f000000u | last);  // 127.0.0.<last>
  return Address::from(reinterpret_cast<const sockaddr*>(&in), sizeof in);
}

// [::1]:port, or [::ffff:127.0.0.<mapped>]:port.
Address v6(uint16_t port, int mapped = -1) {
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(port);
  if (mapped < 0) {
    in6.sin6_addr.s6_addr[15] = 1;
  } else {
    in6.sin6_addr.s6_addr[10] = 0xff;
    in6.sin6_addr.s6_addr[11] = 0xff;
    in6.sin6_addr.s6_addr[12] = 127;
    in6.sin6_addr.s6_addr[15] = static_cast<uint8_t>(mapped);
  }
  return Address::from(reinterpret_cast<const sockaddr*>(&in6), sizeof in6);
}

std::string key_of(const Address& a) {
  return std::string(reinterpret_cast<const char*>(&a.storage), a.len);
}
bool same(const Address& a, const Address& b) {
  return a.len == b.len && std::memcmp(&a.storage, &b.storage, a.len) == 0;
}

const Address kServerAddr = v4(1, 443);
// Sources no client handshakes from: their traffic is all the fuzzer's, and the server may
// answer them with at most 3x what they sent.
const Address kRawSources[] = {v4(2, 4000), v4(3, 5000), v6(6000), v6(7000, 4)};

struct Reader {
  const uint8_t* p;
  size_t n;
  bool empty() const { return n == 0; }
  uint8_t byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  uint16_t u16() {
    uint16_t lo = byte();
    return static_cast<uint16_t>(lo | byte() << 8);
  }
  std::string_view take(size_t k) {
    k = std::min(k, n);
    std::string_view out(reinterpret_cast<const char*>(p), k);
    p += k;
    n -= k;
    return out;
  }
};

// QUIC variable-length integer (RFC 9000 §16).
bool varint(std::string_view s, size_t& pos, uint64_t& v) {
  if (pos >= s.size()) return false;
  auto b = static_cast<uint8_t>(s[pos]);
  size_t len = size_t{1} << (b >> 6);
  if (pos + len > s.size()) return false;
  v = b & 0x3f;
  for (size_t i = 1; i < len; ++i) v = v << 8 | static_cast<uint8_t>(s[pos + i]);
  pos += len;
  return true;
}

// Whether `bytes` (a request stream as written) hold a HEADERS frame whose field section needs
// QPACK's dynamic table (a Required Insert Count other than 0, RFC 9204 §4.5.1).
bool needs_dynamic_table(std::string_view bytes) {
  size_t pos = 0;
  for (;;) {
    uint64_t type = 0, len = 0;
    if (!varint(bytes, pos, type) || !varint(bytes, pos, len)) return false;
    if (type == 0x1 && len > 0 && pos < bytes.size() && bytes[pos] != 0) return true;
    if (bytes.size() - pos < len) return false;
    pos += len;
  }
}

// --- the certificate: a self-signed ECDSA leaf for x.test, made once with GnuTLS ------------

std::shared_ptr<const ServerCredentials> credentials() {
  static std::shared_ptr<const ServerCredentials> creds = [] {
    gnutls_x509_privkey_t key = nullptr;
    gnutls_x509_crt_t crt = nullptr;
    const time_t now = std::time(nullptr);
    bool ok = gnutls_x509_privkey_init(&key) == 0 &&
              gnutls_x509_privkey_generate(
                  key, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0) == 0 &&
              gnutls_x509_crt_init(&crt) == 0 && gnutls_x509_crt_set_version(crt, 3) == 0 &&
              gnutls_x509_crt_set_serial(crt, "\x01", 1) == 0 &&
              gnutls_x509_crt_set_activation_time(crt, now - 3600) == 0 &&
              gnutls_x509_crt_set_expiration_time(crt, now + 86400L * 365) == 0 &&
              gnutls_x509_crt_set_dn(crt, "CN=x.test", nullptr) == 0 &&
              gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, "x.test", 6,
                                                   GNUTLS_FSAN_SET) == 0 &&
              gnutls_x509_crt_set_key(crt, key) == 0 &&
              gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0) == 0;
    gnutls_datum_t cert_pem{}, key_pem{};
    ok = ok && gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &cert_pem) == 0 &&
         gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &key_pem) == 0;
    if (!ok) {
      std::fprintf(stderr, "h3_server_fuzz: cannot make a certificate with GnuTLS\n");
      std::abort();
    }
    auto made = ServerCredentials::from_pem(
        std::string_view(reinterpret_cast<const char*>(cert_pem.data), cert_pem.size),
        std::string_view(reinterpret_cast<const char*>(key_pem.data), key_pem.size));
    gnutls_free(cert_pem.data);
    gnutls_free(key_pem.data);
    gnutls_x509_crt_deinit(crt);
    gnutls_x509_privkey_deinit(key);
    if (!made) {
      std::fprintf(stderr, "h3_server_fuzz: %s\n", made.errors().front().message.c_str());
      std::abort();
    }
    return std::shared_ptr<const ServerCredentials>(*made);
  }();
  return creds;
}

// --- the handler ------------------------------------------------------------------------------

// What the client must see on a response stream the handler answered.
struct Expected {
  int status = 0;
  bool hop_nominated = false;  // "Connection: ..., X-Hop" was set: x-hop must not be framed
  uint64_t body = 0;           // bytes send_data took
  bool ended = false;          // end_stream called, or the head had end_stream
  bool reset = false;          // the handler reset the stream
  bool failed = false;         // submit_response was refused
};

class FuzzHandler : public hsp::h3::Handler {
 public:
  explicit FuzzHandler(const ServerOptions& options) : options_(options) {}

  void attach(QuicServer* server) { server_ = server; }
  void reseed(uint64_t seed) { rng_ = Rng{seed}; }
  Rng& rng() { return rng_; }

  void on_request(uint64_t conn, int64_t id, hsp::http::Request&& req, bool end) override {
    auto sid = static_cast<int32_t>(id);
    trace("on_request conn %llu stream %lld %s %s end %d", ull(conn), ll(id), req.method.c_str(),
          req.path.c_str(), end ? 1 : 0);
    if (closed_conns_.count(conn) != 0) fail("on_request on a connection reported closed", sid);
    auto it = streams_.find({conn, id});
    if (it != streams_.end()) {
      fail(it->second.closed ? "on_request after on_stream_closed" : "second on_request", sid);
    }
    if (id < 0 || id % 4 != 0) fail("on_request on a stream that is not client bidi", sid);
    if (req.conn_id != conn) fail("Request::conn_id is not the handler's conn_id", sid);
    if (req.version != 30) fail("request version is not 30", sid);
    check_fields(req.headers, false, id);
    if (has_ctl(req.method) || has_ctl(req.path) || has_ctl(req.query) || has_ctl(req.authority) ||
        has_ctl(req.host) || has_ctl(req.scheme) || has_ctl(req.orig_uri))
      fail("request line part with CR, LF or NUL", sid);
    if (req.method.empty()) fail("request without a method", sid);
    if (req.method == "CONNECT") fail("CONNECT reached the handler", sid);
    if (req.path.empty() ||
        (req.path.front() != '/' && !(req.path == "*" && req.method == "OPTIONS")))
      fail("request path that is neither origin-form nor OPTIONS *", sid);
    if (req.scheme != "https") fail("request scheme is not https", sid);
    if (++live_[conn] > options_.max_bidi_streams)
      fail("more requests in flight on a connection than max_bidi_streams", sid);
    max_delivered_[conn] = std::max(max_delivered_[conn], id);
    conn_of_port_[req.remote_port] = conn;
    port_of_conn_[conn] = req.remote_port;
    Stream& s = streams_[{conn, id}];
    s.ended = end;
    switch (rng_.below(9)) {
      case 0:
      case 1:
      case 2:
        respond(conn, id);
        break;
      case 3:
      case 4:
        later_.emplace_back(conn, id);  // answered after the read, as an upstream would
        break;
      case 5:
        reset(conn, id);
        break;
      case 6:
        if (end) {
          respond(conn, id);
        } else {
          later_.emplace_back(conn, id);
        }
        break;
      case 7:
        respond(conn, id);
        server_->stop_reading(conn, id);  // the rest of the body is not wanted
        break;
      default:
        break;  // never answered (the client or a shutdown ends it)
    }
  }

  void on_request_data(uint64_t conn, int64_t id, std::string_view data) override {
    Stream& s = live(conn, id, "on_request_data");
    auto sid = static_cast<int32_t>(id);
    if (s.ended) fail("on_request_data after on_request_end", sid);
    if (s.trailers) fail("on_request_data after trailers", sid);
    if (data.empty()) fail("empty on_request_data", sid);
    switch (rng_.below(4)) {
      case 0:
        s.unconsumed += data.size();  // consumed after the read
        break;
      case 1:
        server_->consume(conn, id, data.size() / 2);
        s.unconsumed += data.size() - data.size() / 2;
        break;
      default:
        server_->consume(conn, id, data.size());
        break;
    }
  }

  void on_request_trailers(uint64_t conn, int64_t id, hsp::http::HeaderMap&& trailers) override {
    trace("on_request_trailers conn %llu stream %lld, %zu fields", ull(conn), ll(id),
          trailers.size());
    Stream& s = live(conn, id, "on_request_trailers");
    auto sid = static_cast<int32_t>(id);
    if (s.ended) fail("trailers after on_request_end", sid);
    if (s.trailers) fail("second trailer block", sid);
    s.trailers = true;
    check_fields(trailers, true, id);
    for (const auto& [name, value] : trailers) {
      if (!name.empty() && name.front() == ':') fail("pseudo field in trailers", sid);
    }
  }

  void on_request_end(uint64_t conn, int64_t id) override {
    trace("on_request_end conn %llu stream %lld", ull(conn), ll(id));
    Stream& s = live(conn, id, "on_request_end");
    if (s.ended) fail("second on_request_end (or after an end_stream head)", static_cast<int>(id));
    s.ended = true;
    if (!s.responded && rng_.chance(50)) respond(conn, id);
  }

  void on_stream_reset(uint64_t conn, int64_t id) override {
    trace("on_stream_reset conn %llu stream %lld", ull(conn), ll(id));
    Stream& s = live(conn, id, "on_stream_reset");
    s.abandoned = true;
    if (rng_.chance(30)) reset(conn, id);
  }

  void on_stream_closed(uint64_t conn, int64_t id) override {
    Stream& s = live(conn, id, "on_stream_closed");
    trace("on_stream_closed conn %llu stream %lld", ull(conn), ll(id));
    s.closed = true;
    --live_[conn];
  }

  void on_send_ready(uint64_t conn, int64_t id) override {
    Stream& s = live(conn, id, "on_send_ready");
    // A stream the handler reset gets no on_send_ready (acknowledgements of bytes sent before
    // the reset used to trigger one).
    if (s.reset_sent && !g_strict) return;
    if (!s.body_open) fail("on_send_ready without an open response body", static_cast<int>(id));
    s.waiting = false;
    if (!s.abandoned) pump(conn, id, s);
  }

  void on_connection_closed(uint64_t conn) override {
    trace("on_connection_closed conn %llu", ull(conn));
    if (!closed_conns_.insert(conn).second) fail("second on_connection_closed", 0);
    for (const auto& [key, s] : streams_) {
      if (key.first == conn && !s.closed)
        fail("on_connection_closed before on_stream_closed", static_cast<int>(key.second));
    }
  }

  // After each turn, outside any server call: the deferred answers, late consume()s, bodies
  // continued later, an occasional reset.
  void after_turn() {
    std::vector<std::pair<uint64_t, int64_t>> ids;
    ids.swap(later_);
    for (auto [conn, id] : ids) {
      auto it = streams_.find({conn, id});
      if (it == streams_.end() || it->second.closed || it->second.responded) continue;
      respond(conn, id);
    }
    std::vector<std::pair<uint64_t, int64_t>> keys;
    for (const auto& [key, s] : streams_) {
      if (!s.closed) keys.push_back(key);
    }
    for (auto [conn, id] : keys) {
      Stream& s = streams_[{conn, id}];
      if (s.closed) continue;
      if (s.unconsumed > 0 && rng_.chance(70)) {
        server_->consume(conn, id, s.unconsumed);
        s.unconsumed = 0;
      }
      if (s.body_open && !s.waiting && !s.abandoned && rng_.chance(30)) pump(conn, id, s);
      if (!s.responded && rng_.chance(3)) reset(conn, id);
    }
  }

  // A decision of the driver's: reset one live request, or stop reading it.
  void poke(bool stop) {
    std::vector<std::pair<uint64_t, int64_t>> keys;
    for (const auto& [key, s] : streams_) {
      if (!s.closed) keys.push_back(key);
    }
    if (keys.empty()) return;
    auto [conn, id] = keys[rng_.below(static_cast<uint32_t>(keys.size()))];
    if (stop) {
      trace("handler stops reading conn %llu stream %lld", ull(conn), ll(id));
      server_->stop_reading(conn, id);
    } else {
      reset(conn, id);
    }
  }

  size_t live(uint64_t conn) const {
    auto it = live_.find(conn);
    return it == live_.end() ? 0 : it->second;
  }
  bool closed(uint64_t conn) const { return closed_conns_.count(conn) != 0; }
  std::optional<uint64_t> conn_of_port(uint16_t port) const {
    auto it = conn_of_port_.find(port);
    if (it == conn_of_port_.end()) return std::nullopt;
    return it->second;
  }
  int64_t max_delivered(uint64_t conn) const {
    auto it = max_delivered_.find(conn);
    return it == max_delivered_.end() ? -1 : it->second;
  }
  const Expected* expected(uint64_t conn, int64_t id) const {
    auto it = expected_.find({conn, id});
    return it == expected_.end() ? nullptr : &it->second;
  }
  // Forgets the streams that are closed (a long-lived connection has many).
  void forget_closed() {
    for (auto it = streams_.begin(); it != streams_.end();) {
      if (it->second.closed) {
        expected_.erase(it->first);
        it = streams_.erase(it);
      } else {
        ++it;
      }
    }
  }

 private:
  struct Stream {
    bool closed = false;
    bool ended = false;  // on_request_end seen (or the head had end_stream)
    bool trailers = false;
    bool responded = false;
    bool body_open = false;   // response submitted with a body, end_stream not called yet
    bool waiting = false;     // send_data took less than given: on_send_ready continues
    bool abandoned = false;   // on_stream_reset
    bool reset_sent = false;  // the handler called reset_stream()
    size_t unconsumed = 0;    // request body bytes handed out and not consume()d yet
    size_t budget = 0;        // response body bytes still to send
  };
  using Key = std::pair<uint64_t, int64_t>;

  static unsigned long long ull(uint64_t v) { return v; }
  static long long ll(int64_t v) { return v; }

  Stream& live(uint64_t conn, int64_t id, const char* event) {
    auto it = streams_.find({conn, id});
    if (closed_conns_.count(conn) != 0) {
      std::fprintf(stderr, "h3_server_fuzz: %s\n", event);
      fail("event on a connection reported closed", static_cast<int>(id));
    }
    if (it == streams_.end()) {
      std::fprintf(stderr, "h3_server_fuzz: %s\n", event);
      fail("event for a stream that never had on_request", static_cast<int>(id));
    }
    if (it->second.closed) {
      std::fprintf(stderr, "h3_server_fuzz: %s\n", event);
      fail("event after on_stream_closed", static_cast<int>(id));
    }
    return it->second;
  }

  void reset(uint64_t conn, int64_t id) {
    static const uint64_t kCodes[] = {hsp::h3::kH3RequestCancelled, hsp::h3::kH3InternalError,
                                      hsp::h3::kH3NoError, 0x10b, 0x21};
    trace("handler resets conn %llu stream %lld", ull(conn), ll(id));
    server_->reset_stream(conn, id, kCodes[rng_.below(5)]);
    expected_[{conn, id}].reset = true;
    auto it = streams_.find({conn, id});
    if (it != streams_.end()) {
      it->second.body_open = false;
      it->second.reset_sent = true;
    }
  }

  void respond(uint64_t conn, int64_t id) {
    Stream& s = streams_[{conn, id}];
    if (s.responded || s.closed) return;
    static const int kStatus[] = {200, 204, 304, 404, 500, 503, 200, 200};
    hsp::http::ResponseHead head;
    head.status = kStatus[rng_.below(8)];
    Expected& e = expected_[{conn, id}];
    e.status = head.status;
    // Names as an HTTP/1 upstream sends them: mixed case, hop-by-hop ones the codec strips.
    head.headers.add("Content-Type", "text/plain");
    if (rng_.chance(30)) {
      head.headers.add("Connection", "keep-alive, X-Hop");
      e.hop_nominated = true;
    }
    if (rng_.chance(30)) head.headers.add("X-Hop", "1");
    if (rng_.chance(20)) head.headers.add("Transfer-Encoding", "chunked");
    if (rng_.chance(10)) head.headers.add("X-Bad", "a\r\nb");
    if (rng_.chance(10)) head.headers.add("Host", "upstream.test");
    if (rng_.chance(10)) head.headers.add("TE", "trailers");
    // Long values; names stay under the 256 bytes nghttp3's QPACK decoder takes (the client's
    // limit, not the server's: a longer name is framed and refused by nghttp3 clients).
    if (rng_.chance(10)) {
      head.headers.add(std::string(rng_.below(250) + 1, 'v'), std::string(rng_.below(3000), 'w'));
    }
    bool end = rng_.chance(20);
    auto r = server_->submit_response(conn, id, head, end);
    s.responded = true;
    if (!r.ok()) {
      e.failed = true;
      return;
    }
    if (end) {
      e.ended = true;
      return;
    }
    s.body_open = true;
    static const size_t kBudget[] = {0, 1, 5, 100, 1000, 5000, 20000, 70000};
    s.budget = kBudget[rng_.below(8)];
    pump(conn, id, s);
  }

  void pump(uint64_t conn, int64_t id, Stream& s) {
    static const std::string kChunk(8192, 'x');
    auto sid = static_cast<int32_t>(id);
    Expected& e = expected_[{conn, id}];
    while (s.budget > 0) {
      size_t want = std::min({s.budget, kChunk.size(), size_t{1} + rng_.below(8192)});
      auto r = server_->send_data(conn, id, std::string_view(kChunk).substr(0, want));
      if (!r.ok()) fail("send_data failed on a live stream with an open body", sid);
      if (r.value() > want) fail("send_data took more than it was given", sid);
      trace("send_data stream %lld: %zu of %zu", ll(id), r.value(), want);
      s.budget -= r.value();
      e.body += r.value();
      if (r.value() < want) {
        s.waiting = true;  // on_send_ready continues
        return;
      }
      if (rng_.chance(20)) return;  // the upstream is slow: continue after a later turn
    }
    if (rng_.chance(60)) {
      std::optional<hsp::http::HeaderMap> trailers;
      if (rng_.chance(50)) {
        trailers.emplace();
        trailers->add("Grpc-Status", std::to_string(rng_.below(17)));
        if (rng_.chance(30)) trailers->add("grpc-message", "bad\nvalue");
      }
      trace("end_stream stream %lld", ll(id));
      auto r = server_->end_stream(conn, id, std::move(trailers));
      if (!r.ok()) fail("end_stream failed on a live stream with an open body", sid);
      s.body_open = false;
      e.ended = true;
    }
  }

  ServerOptions options_;
  QuicServer* server_ = nullptr;
  Rng rng_{1};
  std::map<Key, Stream> streams_;
  std::map<Key, Expected> expected_;
  std::vector<Key> later_;
  std::map<uint64_t, size_t> live_;
  std::map<uint64_t, int64_t> max_delivered_;
  std::map<uint16_t, uint64_t> conn_of_port_;
  std::map<uint64_t, uint16_t> port_of_conn_;
  std::set<uint64_t> closed_conns_;
};

// --- what a client receives: response streams and the server's control stream ---------------

class ResponseChecker {
 public:
  ResponseChecker() {
    if (nghttp3_qpack_decoder_new(&decoder_, 0, 0, nghttp3_mem_default()) != 0) std::abort();
  }
  ~ResponseChecker() { nghttp3_qpack_decoder_del(decoder_); }
  ResponseChecker(const ResponseChecker&) = delete;
  ResponseChecker& operator=(const ResponseChecker&) = delete;

  // Looks at what is new on the client's streams. `lenient`: the connection's own streams
  // were written with fuzz bytes (its SETTINGS may have changed what the server may send).
  void check(Client& client, const FuzzHandler& handler, bool lenient) {
    const std::optional<uint64_t> conn = handler.conn_of_port(client.address().port());
    for (auto& [id, st] : client.received()) {
      auto sid = static_cast<int32_t>(id);
      if (id % 4 == 1) fail("the server opened a bidirectional stream", sid);
      if (id % 4 == 3) {
        uni(id, st.data);
        continue;
      }
      if (id % 4 != 0 || checked_.count(id) != 0 || !st.fin || st.reset) continue;
      checked_.insert(id);
      const Expected* e = conn ? handler.expected(*conn, id) : nullptr;
      response(id, st.data, e, lenient);
    }
    if (goaway_ != UINT64_MAX && conn) {
      int64_t max = handler.max_delivered(*conn);
      if (max >= 0 && static_cast<uint64_t>(max) >= goaway_)
        fail("a GOAWAY's stream id is not above a request handed to the handler",
             static_cast<int32_t>(max));
    }
  }

  uint64_t goaway() const { return goaway_; }

 private:
  struct Uni {
    size_t pos = 0;
    bool typed = false;
    uint64_t type = 0;
    bool settings = false;
  };

  // The server's unidirectional streams: its control stream is checked, QPACK ones skipped.
  void uni(int64_t id, std::string_view data) {
    Uni& u = uni_[id];
    auto sid = static_cast<int32_t>(id);
    if (!u.typed) {
      if (!varint(data, u.pos, u.type)) return;
      u.typed = true;
    }
    if (u.type != 0) return;  // QPACK encoder/decoder stream
    for (;;) {
      size_t pos = u.pos;
      uint64_t type = 0, len = 0;
      if (!varint(data, pos, type) || !varint(data, pos, len) || data.size() - pos < len) return;
      std::string_view payload = data.substr(pos, len);
      u.pos = pos + len;
      if (!u.settings && type != 0x4)
        fail("the server's control stream does not start with SETTINGS", sid);
      switch (type) {
        case 0x4:
          if (u.settings) fail("second SETTINGS on the server's control stream", sid);
          u.settings = true;
          break;
        case 0x7: {
          size_t p = 0;
          uint64_t goaway = 0;
          if (!varint(payload, p, goaway) || p != payload.size()) fail("malformed GOAWAY", sid);
          if (goaway % 4 != 0) fail("GOAWAY id is not a client bidirectional stream id", sid);
          if (goaway > goaway_) fail("GOAWAY id increased", sid);
          goaway_ = goaway;
          break;
        }
        case 0x0:
        case 0x1:
        case 0x5:
        case 0xd:
          fail("DATA, HEADERS, PUSH_PROMISE or MAX_PUSH_ID on the server's control stream", sid);
        default:
          break;  // CANCEL_PUSH would be odd but legal; reserved types are ignored
      }
    }
  }

  void response(int64_t id, std::string_view data, const Expected* e, bool lenient) {
    auto sid = static_cast<int32_t>(id);
    size_t pos = 0;
    int state = 0;  // 0: before the head, 1: body, 2: after the trailers
    uint64_t body = 0;
    int status = 0;
    while (pos < data.size()) {
      uint64_t type = 0, len = 0;
      if (!varint(data, pos, type) || !varint(data, pos, len) || data.size() - pos < len)
        fail("response stream ended inside a frame", sid);
      std::string_view payload = data.substr(pos, len);
      pos += len;
      switch (type) {
        case 0x1:
          if (state == 0) {
            status = head(id, payload, e, lenient);
            state = 1;
          } else if (state == 1) {
            trailers(id, payload, lenient);
            state = 2;
          } else {
            fail("HEADERS after the trailers", sid);
          }
          break;
        case 0x0:
          if (state != 1) fail("DATA outside the body (before the head or after trailers)", sid);
          body += len;
          break;
        case 0x2:
        case 0x3:
        case 0x4:
        case 0x5:
        case 0x6:
        case 0x7:
        case 0x8:
        case 0x9:
        case 0xd:
          fail("control, push or HTTP/2-only frame on a request stream", sid);
        default:
          break;  // reserved frame types (RFC 9114 §7.2.8) are allowed anywhere
      }
    }
    if (state == 0) fail("response stream ended without a head", sid);
    trace("response on stream %lld: status %d, body %llu bytes%s", static_cast<long long>(id),
          status, static_cast<unsigned long long>(body), state == 2 ? ", trailers" : "");
    if (e == nullptr) {
      if (status != 431 && status != 501)
        fail("response the handler never made (and not the server's 431/501)", sid);
      return;
    }
    if (e->reset || e->failed) return;
    if (status != e->status) fail(":status differs from the one submitted", sid);
    if (!e->ended) fail("response stream ended (FIN) but the handler did not end it", sid);
    if (body != e->body) {
      std::fprintf(stderr, "h3_server_fuzz: body %llu bytes, send_data took %llu\n",
                   static_cast<unsigned long long>(body), static_cast<unsigned long long>(e->body));
      fail("response body differs from the bytes send_data took", sid);
    }
  }

  using Fields = std::vector<std::pair<std::string, std::string>>;

  // False when the block cannot be decoded without a dynamic table.
  bool decode(int64_t id, std::string_view block, Fields& out) {
    nghttp3_qpack_stream_context* sctx = nullptr;
    if (nghttp3_qpack_stream_context_new(&sctx, id, nghttp3_mem_default()) != 0) std::abort();
    auto src = reinterpret_cast<const uint8_t*>(block.data());
    size_t left = block.size();
    bool ok = false;
    for (int i = 0; i < 100000; ++i) {
      nghttp3_qpack_nv nv;
      uint8_t flags = 0;
      nghttp3_ssize n =
          nghttp3_qpack_decoder_read_request(decoder_, sctx, &nv, &flags, src, left, 1);
      if (n < 0) {
        trace("qpack: %s after %zu of %zu bytes", nghttp3_strerror(static_cast<int>(n)),
              block.size() - left, block.size());
        break;
      }
      src += n;
      left -= static_cast<size_t>(n);
      if (flags & NGHTTP3_QPACK_DECODE_FLAG_EMIT) {
        nghttp3_vec name = nghttp3_rcbuf_get_buf(nv.name);
        nghttp3_vec value = nghttp3_rcbuf_get_buf(nv.value);
        out.emplace_back(std::string(reinterpret_cast<const char*>(name.base), name.len),
                         std::string(reinterpret_cast<const char*>(value.base), value.len));
        nghttp3_rcbuf_decref(nv.name);
        nghttp3_rcbuf_decref(nv.value);
      }
      if (flags & NGHTTP3_QPACK_DECODE_FLAG_FINAL) {
        ok = left == 0;
        break;
      }
      if ((flags & NGHTTP3_QPACK_DECODE_FLAG_BLOCKED) || (n == 0 && flags == 0)) break;
    }
    nghttp3_qpack_stream_context_del(sctx);
    return ok;
  }

  void check_response_fields(int64_t id, const Fields& fields, bool trailers, const Expected* e) {
    auto sid = static_cast<int32_t>(id);
    for (const auto& [name, value] : fields) {
      if (name.empty() || name.front() == ':') continue;  // pseudo: checked by the caller
      if (bad_name(name)) fail("response field name with upper case or a non-token byte", sid);
      if (has_ctl(value)) fail("response field value with CR, LF or NUL", sid);
      if (connection_specific(name) || name == "te" || name == "host" || name == "x-bad")
        fail("connection-specific, te, host or invalid field framed in a response", sid);
      if (!trailers && e != nullptr && e->hop_nominated && name == "x-hop")
        fail("a field the Connection field nominated was framed", sid);
    }
  }

  int head(int64_t id, std::string_view block, const Expected* e, bool lenient) {
    auto sid = static_cast<int32_t>(id);
    Fields fields;
    if (!decode(id, block, fields)) {
      if (lenient) return e ? e->status : 431;
      fail("response head not decodable with QPACK's static table", sid);
    }
    if (fields.empty() || fields.front().first != ":status")
      fail("response head does not start with :status", sid);
    int status = 0;
    const std::string& v = fields.front().second;
    if (v.size() != 3 ||
        !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }))
      fail(":status is not three digits", sid);
    status = std::stoi(v);
    for (size_t i = 1; i < fields.size(); ++i) {
      if (!fields[i].first.empty() && fields[i].first.front() == ':')
        fail("second pseudo field in a response head", sid);
    }
    check_response_fields(id, fields, false, e);
    if (e != nullptr && !e->failed) {
      bool type = std::any_of(fields.begin(), fields.end(),
                              [](const auto& f) { return f.first == "content-type"; });
      if (status == e->status && !type) fail("response head lost its content-type", sid);
    }
    return status;
  }

  void trailers(int64_t id, std::string_view block, bool lenient) {
    auto sid = static_cast<int32_t>(id);
    Fields fields;
    if (!decode(id, block, fields)) {
      if (lenient) return;
      fail("response trailers not decodable with QPACK's static table", sid);
    }
    for (const auto& [name, value] : fields) {
      if (!name.empty() && name.front() == ':') fail("pseudo field in response trailers", sid);
    }
    check_response_fields(id, fields, true, nullptr);
  }

  nghttp3_qpack_decoder* decoder_ = nullptr;
  std::set<int64_t> checked_;
  std::map<int64_t, Uni> uni_;
  uint64_t goaway_ = UINT64_MAX;
};

// --- a server and its clients ----------------------------------------------------------------

struct Peer {
  std::unique_ptr<Client> client;
  ResponseChecker checker;
  int64_t control = -1;  // the client's HTTP/3 control stream (H3 mode)
};

struct Budget {
  uint64_t in = 0;
  uint64_t out = 0;
};

struct World {
  ServerOptions options;
  std::unique_ptr<FuzzHandler> handler;  // declared first: outlives the server
  std::unique_ptr<QuicServer> server;
  std::vector<std::unique_ptr<Peer>> peers;
  std::map<std::string, Budget> raw;  // by source address
  bool lenient = false;               // fuzz bytes were written on uni/control streams
  // Raw mode: what the clients sent (by peer index), and connection IDs the server used.
  std::vector<std::pair<size_t, std::vector<uint8_t>>> history;
  std::vector<std::string> server_cids;

  ~World() {
    server.reset();  // the handler goes after the server
  }

  void create(const ServerOptions& o) {
    options = o;
    handler = std::make_unique<FuzzHandler>(o);
    options.handler = handler.get();
    auto made = QuicServer::create(credentials(), options);
    if (!made) {
      std::fprintf(stderr, "h3_server_fuzz: %s\n", made.errors().front().message.c_str());
      std::abort();
    }
    server = std::move(*made);
    handler->attach(server.get());
  }

  bool is_raw(const Address& a) const {
    return std::any_of(std::begin(kRawSources), std::end(kRawSources),
                       [&](const Address& r) { return same(r, a); });
  }

  void check_datagram(const Datagram& d) {
    if (d.data.empty()) fail("empty datagram", 0);
    if (d.data.size() > kMaxUdpPayload) fail("datagram larger than 1452 bytes", 0);
    if (!same(d.local, kServerAddr)) fail("datagram from another local address", 0);
    // Remember the connection IDs the server chose (long headers carry its SCID).
    ngtcp2_version_cid vc;
    if ((d.data[0] & 0x80) != 0 &&
        ngtcp2_pkt_decode_version_cid(&vc, d.data.data(), d.data.size(), 18) == 0 &&
        vc.scidlen > 0) {
      std::string cid(reinterpret_cast<const char*>(vc.scid), vc.scidlen);
      if (server_cids.size() < 64 &&
          std::find(server_cids.begin(), server_cids.end(), cid) == server_cids.end()) {
        server_cids.push_back(cid);
      }
    }
    if (is_raw(d.remote)) {
      Budget& b = raw[key_of(d.remote)];
      b.out += d.data.size();
      if (b.out > 3 * b.in) {
        std::fprintf(stderr, "h3_server_fuzz: to %s: %llu bytes out, %llu in\n",
                     d.remote.str().c_str(), static_cast<unsigned long long>(b.out),
                     static_cast<unsigned long long>(b.in));
        fail("more than 3x the bytes received sent to an unvalidated address", 0);
      }
    }
  }

  // Hands the server's datagrams to their clients (the raw sources only count them).
  bool deliver() {
    std::vector<Datagram> out = server->take_datagrams();
    for (const Datagram& d : out) {
      check_datagram(d);
      for (auto& p : peers) {
        if (p->client && same(p->client->address(), d.remote)) {
          int rv = p->client->read(d.data, g_now);
          trace("client %s read %zu bytes: %d", d.remote.str().c_str(), d.data.size(), rv);
          if (rv == NGTCP2_ERR_DRAINING) {
            ngtcp2_connection_close_error e = p->client->close_error();
            trace("client %s: CONNECTION_CLOSE type %d code 0x%llx", d.remote.str().c_str(),
                  static_cast<int>(e.type), static_cast<unsigned long long>(e.error_code));
            // RFC 9114 §4.1.2: a malformed request is a stream error, never a connection one.
            if (g_strict && e.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION &&
                e.error_code == 0x10e) {
              fail("connection closed with H3_MESSAGE_ERROR (a stream error, RFC 9114 §4.1.2)", 0);
            }
          }
          break;
        }
      }
    }
    for (auto& p : peers) {
      if (p->client) p->checker.check(*p->client, *handler, lenient);
    }
    return !out.empty();
  }

  // The handler's work outside server calls, then what it queued.
  void settle() {
    handler->after_turn();
    server->flush(g_now);
  }

  void receive(std::span<const uint8_t> data, const Address& from) {
    // As the data plane does (gateway/http1/h3_endpoint.cc): owner_of() on every datagram.
    std::optional<uint8_t> owner = QuicServer::owner_of(data);
    if (owner && options.cid_prefix && *owner != *options.cid_prefix) {
      trace("owner_of: another server's (0x%02x)", *owner);
    }
    if (is_raw(from)) raw[key_of(from)].in += data.size();
    trace("server receives %zu bytes from %s", data.size(), from.str().c_str());
    server->receive(data, kServerAddr, from, g_now);
    settle();
    deliver();
  }

  // handle_expiry() until expiry() is after now; it must produce something or move on.
  void expire() {
    for (int idle = 0; server->expiry() <= g_now;) {
      server->handle_expiry(g_now);
      settle();
      if (deliver()) return;  // progress: the caller goes on
      if (++idle == 3) {
        std::fprintf(stderr, "h3_server_fuzz: expiry %llu, now %llu\n",
                     static_cast<unsigned long long>(server->expiry()),
                     static_cast<unsigned long long>(g_now));
        fail("expiry() stays at or before now after handle_expiry(): a timer loop would spin", 0);
      }
    }
  }

  void advance(uint64_t by) {
    g_now += by;
    expire();
    for (auto& p : peers) {
      if (p->client) p->client->handle_expiry(g_now);
    }
  }

  // Client <-> server until nothing moves and no timer is due within a second (or `rounds`).
  void exchange(int rounds, bool until_quiet = true) {
    for (int round = 0; round < rounds; ++round) {
      g_now += 50'000;  // 50 us a turn: RTT samples are not all zero
      bool moved = false;
      for (size_t i = 0; i < peers.size(); ++i) {
        Peer& p = *peers[i];
        if (!p.client) continue;
        for (auto& pkt : p.client->write(g_now)) {
          moved = true;
          trace("client %zu sends %zu bytes", i, pkt.size());
          server->receive(pkt, kServerAddr, p.client->address(), g_now);
          if (history.size() < 64) history.emplace_back(i, std::move(pkt));
        }
      }
      settle();
      moved = deliver() || moved;
      if (!until_quiet) return;
      if (moved) continue;
      uint64_t wake = server->expiry();
      for (auto& p : peers) {
        if (p->client) wake = std::min(wake, p->client->expiry());
      }
      if (wake == UINT64_MAX || wake > g_now + kSecond) return;
      if (wake > g_now) g_now = wake;
      expire();
      for (auto& p : peers) {
        if (p->client) p->client->handle_expiry(g_now);
      }
    }
  }

  Peer& add_peer(std::vector<std::string> alpn, const Address& addr, std::string sni = "x.test",
                 uint64_t stream_window = 256 << 10) {
    auto p = std::make_unique<Peer>();
    p->client =
        std::make_unique<Client>(std::move(alpn), addr, kServerAddr, std::move(sni), stream_window);
    if (!p->client->start(g_now)) {
      std::fprintf(stderr, "h3_server_fuzz: the in-memory client does not start\n");
      std::abort();
    }
    peers.push_back(std::move(p));
    return *peers.back();
  }
};

// --- raw datagram mode -----------------------------------------------------------------------

enum RawOp : uint8_t {
  kRawDatagram,    // [flags][len u16][bytes]: flags bit0 pad to 1200, bits1-2 source
  kClientRound,    // [k]: client k (created on first use) writes, the server answers, once
  kClientPump,     // [k]: the same until quiet
  kReplay,         // [index][mutation ...]: a client datagram again, changed, from elsewhere
  kShort,          // [cid][first][len u16][bytes]: a short header to a known CID
  kLong,           // [cid][first][version][len u16][bytes]: a long header to a known CID
  kClock,          // [step]: move the clock, run what is due
  kExpire,         // jump to the server's next timer
  kServerStop,     // [how]: shutdown_graceful or close_all
  kClientClose,    // [k]: the client's CONNECTION_CLOSE
  kClientRequest,  // [k][len][bytes]: a request stream with these bytes and FIN
  kRawOps
};

const Address& raw_source(uint8_t sel) {
  return kRawSources[sel % 4];
}

// The address a replayed or crafted datagram comes from: a raw source or a client's.
Address pick_source(World& w, uint8_t sel) {
  if ((sel & 4) != 0 && !w.peers.empty()) {
    return w.peers[(sel >> 3) % w.peers.size()]->client->address();
  }
  return raw_source(sel);
}

Peer& raw_peer(World& w, uint8_t k) {
  size_t i = k % 2;
  while (w.peers.size() <= i) {
    // Client 1 sometimes offers another ALPN or none: the handshake must fail cleanly.
    std::vector<std::string> alpn{"h3"};
    std::string sni = "x.test";
    if (w.peers.size() == 1 && (k & 0x10) != 0) {
      alpn = (k & 0x20) != 0 ? std::vector<std::string>{} : std::vector<std::string>{"h2"};
    }
    if (w.peers.size() == 1 && (k & 0x40) != 0) sni = (k & 0x80) != 0 ? "" : "other.test";
    // Client 1 may have a small receive window: the server's responses block on it.
    w.add_peer(alpn, v4(1, static_cast<uint16_t>(40000 + w.peers.size())), sni,
               w.peers.size() == 1 && (k & 0x08) != 0 ? 1000 : 256 << 10);
  }
  return *w.peers[i];
}

std::string pick_cid(World& w, uint8_t sel, Reader& r) {
  std::vector<std::string> known = w.server_cids;
  for (auto& p : w.peers) known.push_back(p->client->dcid());
  if ((sel & 0x80) != 0 || known.empty()) {
    size_t len = (sel & 0x40) != 0 ? 18 : sel % 21;  // our length, or any (0..20)
    std::string cid(r.take(len));
    cid.resize(len, '\0');
    return cid;
  }
  return known[sel % known.size()];
}

void run_raw(uint8_t config, Reader& r) {
  ServerOptions o;
  o.always_retry = (config & 0x02) != 0;
  if ((config & 0x04) != 0) o.cid_prefix = 0x42;
  static const size_t kRetryAbove[] = {100, 0, 1, 2};
  o.retry_above_handshakes = kRetryAbove[(config >> 3) & 3];
  static const uint32_t kResets[] = {100, 0, 1, 3};
  o.stateless_resets_per_second = kResets[(config >> 5) & 3];
  if ((config & 0x80) != 0) o.max_connections = 1;
  const uint16_t seed = r.u16();
  if ((seed & 0x8000) != 0) {
    // Certificates by SNI, as the data plane chooses them: x.test only, else none.
    o.select_credentials = [](std::string_view sni) {
      return sni == "x.test" ? credentials() : nullptr;
    };
  }
  World w;
  w.create(o);
  w.handler->reseed(seed);

  for (int ops = 0; ops < 64 && !r.empty(); ++ops) {
    uint8_t op = r.byte();
    switch (op % kRawOps) {
      case kRawDatagram: {
        uint8_t flags = r.byte();
        size_t len = r.u16() % 1500;
        std::string_view bytes = r.take(len);
        std::vector<uint8_t> d(bytes.begin(), bytes.end());
        if ((flags & 1) != 0 && d.size() < 1200) d.resize(1200, 0);
        trace("op raw datagram %zu bytes", d.size());
        w.receive(d, pick_source(w, flags >> 1));
        break;
      }
      case kClientRound:
      case kClientPump: {
        uint8_t k = r.byte();
        raw_peer(w, k);
        trace("op client %s", op % kRawOps == kClientRound ? "round" : "pump");
        w.exchange(op % kRawOps == kClientRound ? 1 : 32, op % kRawOps == kClientPump);
        break;
      }
      case kReplay: {
        uint8_t index = r.byte();
        uint8_t m = r.byte();
        if (w.history.empty()) break;
        auto [from, d] = w.history[index % w.history.size()];
        if ((m & 1) != 0 && !d.empty()) {
          size_t off = r.u16() % d.size();
          d[off] ^= static_cast<uint8_t>(r.byte() | 1);
        }
        if ((m & 2) != 0) d.resize(r.u16() % (d.size() + 1));
        Address src = (m & 0x80) != 0 ? pick_source(w, m >> 2) : w.peers[from]->client->address();
        trace("op replay %zu bytes", d.size());
        w.receive(d, src);
        break;
      }
      case kShort:
      case kLong: {
        const bool is_long = op % kRawOps == kLong;
        std::string cid = pick_cid(w, r.byte(), r);
        uint8_t first = r.byte();
        std::vector<uint8_t> d;
        if (is_long) {
          static const uint32_t kVersions[] = {
              NGTCP2_PROTO_VER_V1, 0, 0x6b3343cf, 0x1a2a3a4a, 0xff00001d, NGTCP2_PROTO_VER_V1};
          uint32_t version = kVersions[r.byte() % 6];
          d.push_back(static_cast<uint8_t>(0xc0 | (first & 0x3f)));
          for (int s = 24; s >= 0; s -= 8) d.push_back(static_cast<uint8_t>(version >> s));
          d.push_back(static_cast<uint8_t>(cid.size()));
          d.insert(d.end(), cid.begin(), cid.end());
        } else {
          d.push_back(static_cast<uint8_t>(0x40 | (first & 0x3f)));
          d.insert(d.end(), cid.begin(), cid.end());
        }
        size_t len = r.u16() % 1500;
        std::string_view rest = r.take(len);
        d.insert(d.end(), rest.begin(), rest.end());
        if ((first & 0x80) != 0 && d.size() < 1200) d.resize(1200, 0);
        trace("op %s header to a cid of %zu bytes, %zu bytes", is_long ? "long" : "short",
              cid.size(), d.size());
        w.receive(d, pick_source(w, r.byte()));
        break;
      }
      case kClock: {
        static const uint64_t kSteps[] = {1 * kMs,     25 * kMs,     300 * kMs,    1 * kSecond,
                                          3 * kSecond, 11 * kSecond, 31 * kSecond, 2 * kSecond + 1};
        w.advance(kSteps[r.byte() % 8]);
        break;
      }
      case kExpire: {
        uint64_t at = w.server->expiry();
        if (at != UINT64_MAX && at > g_now && at - g_now < 120 * kSecond) g_now = at;
        w.expire();
        break;
      }
      case kServerStop:
        if ((r.byte() & 1) == 0) {
          w.server->shutdown_graceful(g_now);
        } else {
          w.server->close_all(g_now);
        }
        w.settle();
        w.deliver();
        break;
      case kClientClose: {
        Peer& p = raw_peer(w, r.byte());
        std::vector<uint8_t> close = p.client->write_close(g_now);
        if (!close.empty()) w.receive(close, p.client->address());
        break;
      }
      case kClientRequest: {
        Peer& p = raw_peer(w, r.byte());
        std::string_view bytes = r.take(r.byte());
        if (!p.client->handshake_completed()) break;
        int64_t id = p.client->open_bidi();
        if (id < 0) break;
        p.client->append(id, bytes, true);
        w.exchange(32);
        break;
      }
      default:
        break;
    }
  }
  w.exchange(32);
}

// --- HTTP/3 request mode ------------------------------------------------------------------------

// One server with one client connection, kept across inputs while it lives.
struct Slot {
  std::unique_ptr<World> world;
  Peer* peer = nullptr;
  uint64_t inputs = 0;
  bool tainted = false;  // fuzz bytes went on unidirectional streams: make a new one next time
};
Slot g_slots[2];

ServerOptions slot_options(int slot) {
  ServerOptions o;
  if (slot == 1) {
    o.max_bidi_streams = 4;
    o.max_header_bytes = 256;
    o.max_header_count = 8;
    o.stream_buffer_bytes = 1000;
  }
  return o;
}

void teardown(Slot& s) {
  s.world.reset();
  s.peer = nullptr;
  s.inputs = 0;
  s.tainted = false;
}

bool setup(Slot& s, int slot) {
  s.world = std::make_unique<World>();
  s.world->create(slot_options(slot));
  // Slot 1's client takes responses 1000 bytes at a time (stream flow control blocks them).
  s.peer = &s.world->add_peer({"h3"}, v4(1, static_cast<uint16_t>(41000 + slot)), "x.test",
                              slot == 1 ? 1000 : 256 << 10);
  s.world->exchange(64);
  if (!s.peer->client->handshake_completed() || s.peer->client->dead()) {
    std::fprintf(stderr, "h3_server_fuzz: the in-memory client's handshake failed\n");
    std::abort();  // not a finding about the input: the set-up itself is broken
  }
  // The client's control stream with an empty SETTINGS (RFC 9114 §6.2.1).
  s.peer->control = s.peer->client->open_uni();
  if (s.peer->control >= 0) {
    s.peer->client->append(s.peer->control, std::string_view("\x00\x04\x00", 3), false);
  }
  s.world->exchange(16);
  return true;
}

// Records: [ctl][len: 1 byte, or 2 if ctl bit 3][bytes] for ctl kinds 0-5 (ctl & 7):
//   0-3 a request stream (a slot: a new stream when the last one is finished), 4 a new
//   unidirectional stream, 5 the client's control stream after its SETTINGS;
//   ctl bit 4 FIN after the bytes, bit 5 exchange after them, bit 6 RESET_STREAM after them,
//   bit 7 STOP_SENDING after them.
// [6][action]: 0 shutdown_graceful, 1 close_all, 2 clock, 3 the client's CONNECTION_CLOSE,
//   4 exchange until quiet, 5 the handler resets a request, 6 the handler stops reading one,
//   7 one exchange round.
// [7 | slot << 3 | bit 5 write side | bit 6 read side][code]: the client resets a stream.
void run_h3(uint8_t config, Reader& r) {
  const int slot_index = (config >> 1) & 1;
  Slot& s = g_slots[slot_index];
  if (s.world && (g_fresh || (config & 0x04) != 0 || s.tainted || s.inputs >= 2000)) teardown(s);
  if (!s.world) setup(s, slot_index);
  ++s.inputs;
  World& w = *s.world;
  Client& client = *s.peer->client;
  uint64_t seed = 0;
  for (int i = 0; i < 4; ++i) seed = seed << 8 | r.byte();
  w.handler->reseed(seed);

  int64_t stream[4] = {-1, -1, -1, -1};
  bool done[4] = {};
  std::vector<int64_t> opened;
  std::map<int64_t, std::string> written;  // per request stream, for needs_dynamic_table()
  static const uint64_t kCodes[] = {0x10c, 0x100, 0x102, 0x10b, 0x21, 0x0};

  for (int records = 0; records < 256 && !r.empty() && !client.dead(); ++records) {
    uint8_t ctl = r.byte();
    uint8_t kind = ctl & 7;
    if (kind <= 5) {
      size_t len = (ctl & 0x08) != 0 ? r.u16() : r.byte();
      std::string_view bytes = r.take(len);
      int64_t id = -1;
      if (kind <= 3) {
        if (stream[kind] < 0 || done[kind]) {
          id = client.open_bidi();
          if (id < 0) {  // at the server's stream limit: let streams finish first
            w.exchange(64);
            id = client.open_bidi();
          }
          if (id < 0) continue;
          stream[kind] = id;
          done[kind] = false;
          opened.push_back(id);
        }
        id = stream[kind];
      } else if (kind == 4) {
        id = client.open_uni();
        s.tainted = true;
        w.lenient = true;
        if (id < 0) continue;
      } else {
        id = s.peer->control;
        s.tainted = true;
        w.lenient = true;
        if (id < 0) continue;
      }
      trace("record: %zu bytes on stream %lld%s", bytes.size(), static_cast<long long>(id),
            (ctl & 0x10) != 0 ? " fin" : "");
      const bool fin = (ctl & 0x10) != 0;
      client.append(id, bytes, fin);
      if (kind <= 3 && written[id].size() < 65536) written[id].append(bytes);
      if (kind <= 3 && fin) done[kind] = true;
      if ((ctl & 0xc0) != 0) {
        client.shutdown_stream(id, kCodes[r.byte() % 6], (ctl & 0x40) != 0, (ctl & 0x80) != 0);
        if (kind <= 3 && (ctl & 0x40) != 0) done[kind] = true;
      }
      if ((ctl & 0x20) != 0) w.exchange(64);
    } else if (kind == 6) {
      uint8_t action = r.byte();
      trace("action %u", action % 8);
      switch (action % 8) {
        case 0:
          w.server->shutdown_graceful(g_now);
          w.settle();
          w.deliver();
          break;
        case 1:
          w.server->close_all(g_now);
          w.settle();
          w.deliver();
          break;
        case 2: {
          static const uint64_t kSteps[] = {1 * kMs, 25 * kMs, 200 * kMs, 1 * kSecond};
          w.advance(kSteps[(action >> 3) % 4]);
          break;
        }
        case 3: {
          std::vector<uint8_t> close = client.write_close(g_now);
          if (!close.empty()) w.receive(close, client.address());
          break;
        }
        case 4:
          w.exchange(64);
          break;
        case 5:
        case 6:
          w.handler->poke(action % 8 == 6);
          w.settle();
          w.deliver();
          break;
        default:
          w.exchange(1, false);
          break;
      }
    } else {
      int k = (ctl >> 3) & 3;
      uint8_t code = r.byte();
      if (stream[k] >= 0) {
        client.shutdown_stream(stream[k], kCodes[code % 6], (ctl & 0x20) != 0, (ctl & 0x40) != 0);
        if ((ctl & 0x20) != 0) done[k] = true;
      }
    }
  }
  w.exchange(200);

  // The client gives up on whatever is still open; then nothing may be left in the handler.
  const bool alive = !client.dead() && !w.server->shutting_down();
  if (alive) {
    for (int64_t id : opened) {
      auto it = client.received().find(id);
      bool finished = it != client.received().end() && it->second.closed;
      if (!finished) client.shutdown_stream(id, 0x10c, true, true);
    }
    w.exchange(200);
    // A request stream whose head or trailers wait for a dynamic-table entry that never comes
    // stays blocked in nghttp3, which never reports it closed; the server ends it (and gives
    // the stream credit back) when the QUIC stream closes. Found by this target; checked here.
    bool qpack_blocked = false;
    for (const auto& [id, bytes] : written) qpack_blocked |= needs_dynamic_table(bytes);
    if (qpack_blocked) s.tainted = true;  // what leaked must not count against later inputs
    const bool all_closed = std::all_of(opened.begin(), opened.end(), [&](int64_t id) {
      auto it = client.received().find(id);
      return it != client.received().end() && it->second.closed;
    });
    std::optional<uint64_t> conn = w.handler->conn_of_port(client.address().port());
    if (!client.dead() && (g_strict || !qpack_blocked)) {
      if (conn && !w.handler->closed(*conn) && w.handler->live(*conn) != 0) {
        std::fprintf(stderr, "h3_server_fuzz: %zu requests open\n", w.handler->live(*conn));
        fail("requests left open after the client reset every stream and all went quiet", 0);
      }
      // Every closed stream gives its credit back (MAX_STREAMS): never more than the limit,
      // and, with all of them closed, at least half of it (ngtcp2 may hold back a MAX_STREAMS
      // until half the window is used).
      const uint64_t left = client.streams_bidi_left();
      const uint64_t max = w.options.max_bidi_streams;
      trace("streams_bidi_left %llu of %llu", static_cast<unsigned long long>(left),
            static_cast<unsigned long long>(max));
      if (left > max) fail("the server allows more concurrent requests than max_bidi_streams", 0);
      if (all_closed && left < (max + 1) / 2)
        fail("closed request streams did not give their stream credit back", 0);
    }
  }
  // Bounded memory on a long-lived connection.
  w.handler->forget_closed();
  for (auto it = client.received().begin(); it != client.received().end();) {
    if (it->second.closed && it->first % 4 == 0) {
      it = client.received().erase(it);
    } else {
      ++it;
    }
  }
  w.history.clear();
  if (client.dead() || w.server->shutting_down() || w.server->connection_count() != 1 ||
      w.server->closing_count() != 0) {
    teardown(s);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  hsp::log::set_level(hsp::log::Level::error);  // connection errors are the normal case here
  g_trace = std::getenv("HSP_H3_FUZZ_TRACE") != nullptr;
  g_fresh = std::getenv("HSP_H3_FUZZ_FRESH") != nullptr;
  g_target = "h3_server_fuzz";
  credentials();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Reader r{data + 1, size - 1};
  if ((data[0] & 1) == 0) {
    run_raw(data[0], r);
  } else {
    run_h3(data[0], r);
  }
  return 0;
}
