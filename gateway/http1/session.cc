// One downstream HTTP/1.1 connection: reads requests one after the other (pipelined requests
// wait in the read buffer), routes each through the snapshot it started with, and answers it
// directly (Kind::respond) or through an upstream (Kind::proxy). HTTPS listeners run the same
// code over a TLS stream after the handshake (Session<TlsStream>; DATAPLANE.md, "HTTPS").
//
// Beast parses both directions (request_parser / response_parser with buffer_body, so a body
// is never held whole: it moves through one 16 KiB buffer per direction, which is also the
// back-pressure: nothing is read until the previous piece was written). Heads and chunked
// framing are written by hand: that keeps header order and case as received, and each body
// piece goes out as soon as it was read, which is what `flush_interval -1` and
// text/event-stream need (we never coalesce, whatever flush_interval says).
//
// Expect: 100-continue is answered by us, not forwarded: "100 Continue" is written right before
// the first body byte is read, i.e. once the upstream connection is up and the request head
// went out; the Expect field itself is not sent upstream. A handler that does not read the body
// (respond, errors) never sends 100 and closes the connection after its response, as Go does.
//
// The request body is pumped upstream by a second coroutine while this one waits for the
// response, so an upstream that answers early (or echoes while reading) never deadlocks against
// us. While the response head is awaited and while its body streams, a read on the client socket
// watches for the client going away (a slow upstream or an idle event stream would otherwise
// hold the exchange until the upstream answers); the pump, when running, does that job itself.
//
// Retries (issue 2: "only before any byte went upstream"): a dial failure is retried for any
// method within lb_try_duration (Caddy does the same); a pooled connection found dead when the
// request head went out or before any response byte is retried once on a fresh connection, for
// bodyless idempotent requests only (Go's transport does the same). A request the upstream may
// have received is never retried; Caddy 2.6 would retry a GET there (a listed difference).
//
// Trailers travel in chunked trailer sections both ways (Beast appends them to the message's
// fields; trailers_of() takes those past the head's). A body with a length has no place for
// them: they are dropped, as Go does. Known gap: `flush_interval` > 0 is treated like -1 (we
// always flush).

#include <openssl/err.h>

#include <algorithm>
#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <cstring>
#include <ctime>
#include <limits>
#include <optional>
#include <type_traits>

#include "http/hop_by_hop.h"
#include "http1/access_log.h"
#include "http1/h2_session.h"
#include "http1/h2_upstream.h"
#include "http1/h3_endpoint.h"
#include "http1/proxy_common.h"
#include "http1/tls_context.h"
#include "http1/worker.h"
#include "tls/acme_challenges.h"
#include "util/log.h"

namespace hsp::http1 {
namespace {

namespace http = boost::beast::http;
using asio::redirect_error;
using asio::use_awaitable;
using boost::system::error_code;

constexpr size_t kReadChunk = 4096;
constexpr uint64_t kMaxDrainBytes = 256 * 1024;  // Go's maxPostHandlerReadBytes

using ReqParser = http::request_parser<http::buffer_body>;

// `alt_svc`: the listener's Alt-Svc (HTTP/3 on the same port), added unless a handler set one.
std::string response_head(int version, int status, const hsp::http::HeaderMap& h,
                          std::string_view alt_svc) {
  std::string out;
  out.reserve(256);
  out += version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
  out += std::to_string(status);
  out += ' ';
  out += hsp::http::reason_phrase(status);
  out += "\r\n";
  append_fields(out, h);
  if (!alt_svc.empty() && !h.has("Alt-Svc")) {
    out += "Alt-Svc: ";
    out += alt_svc;
    out += "\r\n";
  }
  out += "\r\n";
  return out;
}

// Says whether the connection stays open, where the version's default does not: HTTP/1.1
// keeps it unless told "close", HTTP/1.0 closes it unless told "keep-alive".
void set_connection_field(hsp::http::HeaderMap& h, int version, bool keep_alive) {
  if (!keep_alive && version >= 11) {
    h.set("Connection", "close");
  } else if (keep_alive && version == 10) {
    h.set("Connection", "keep-alive");
  }
}

// A TLS client that closes without close_notify (curl does) ends with stream_truncated: that is
// an EOF like any other. Other TLS-layer errors mean the stream is unusable; no 400 goes back.
bool is_tls_error(const error_code& ec) {
  return ec == asio::ssl::error::stream_truncated ||
         ec.category() == asio::error::get_ssl_category();
}

// Cancellation shared by an exchange and the timers/pump it starts: handlers hold the
// shared_ptr and check `active` before touching anything the exchange owns.
struct PumpState {
  explicit PumpState(const asio::any_io_executor& ex) : wake(ex), header_timer(ex) {}
  // For reuse by the connection's next exchange (only when nothing else holds it).
  void reset() {
    active = true;
    done = client_error = upstream_error = too_large = head_received = header_timed_out = false;
    bytes = 0;
  }
  bool active = true;
  bool done = false;
  bool client_error = false;    // reading the request body from the client failed
  bool upstream_error = false;  // writing it upstream failed
  bool too_large = false;
  bool head_received = false;
  bool header_timed_out = false;
  uint64_t bytes = 0;
  asio::steady_timer wake;
  asio::steady_timer header_timer;
};

// Reads the client side while a response streams, so a client that goes away is noticed even
// when the upstream is silent (an idle SSE stream), like Go's background read.
//
// The watch starts only once the upstream has kept us waiting for kClientWatchDelay: most
// answers come sooner, and spawning a reader, reading (EAGAIN) and cancelling it cost about as
// much as the rest of a small exchange. A client that leaves is noticed that much later.
struct WatchState {
  explicit WatchState(const asio::any_io_executor& ex) : wake(ex), arm(ex) {}
  void reset() { armed = running = done = stopping = client_gone = false; }
  bool armed = false;    // the arm timer runs; the watch starts when it fires
  bool running = false;  // watch_client runs (until `done`)
  bool done = false;
  bool stopping = false;
  bool client_gone = false;
  asio::steady_timer wake;
  asio::steady_timer arm;
};
constexpr auto kClientWatchDelay = std::chrono::milliseconds(100);

// The state object of the previous exchange when nothing else holds it any more (its timers'
// handlers and coroutines are gone), else a new one: one allocation less per request.
template <class T>
std::shared_ptr<T> reuse_state(std::shared_ptr<T>& slot, const asio::any_io_executor& ex) {
  if (slot && slot.use_count() == 1) {
    slot->reset();
    return slot;
  }
  slot = std::make_shared<T>(ex);
  return slot;
}

// Per-request state.
struct Exchange : ExchangeLog {
  engine::SnapshotPtr snap;
  std::optional<ReqParser> parser;
  hsp::http::Request req;
  std::string method;  // as received (dispatch may not change it)
  bool expect_continue = false;
  bool body_consumed = false;  // the request body was read to its end (keep-alive possible)
  size_t head_fields = 0;      // fields of the request head (trailers are appended after)
};

// Stream is beast::tcp_stream (cleartext listeners) or TlsStream (HTTPS listeners); both are
// instantiated here only, by serve_connection at the end of this file. Everything that is not a
// read or a write (timeouts, cancel, shutdown) goes to the TCP layer underneath, tcp().
template <class Stream>
class Session {
 public:
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

  template <class... StreamArgs>
  Session(Worker& w, ListenerKey key, std::shared_ptr<TlsContext> tls, StreamArgs&&... args)
      : w_(w),
        tls_(std::move(tls)),
        stream_(std::forward<StreamArgs>(args)...),
        key_(std::move(key)),
        alt_svc_(alt_svc_value(key_)) {
    id_ = w_.shared.next_conn_id.fetch_add(1, std::memory_order_relaxed);
    w_.shared.open_conns.fetch_add(1, std::memory_order_relaxed);
    slot_.stream = &tcp();
    w_.conns.insert(&slot_);
    error_code ec;
    auto& s = tcp().socket();
    s.set_option(tcp::no_delay(true), ec);
    auto re = s.remote_endpoint(ec);
    if (!ec) {
      remote_ip_ = ip_string(re.address());
      remote_port_ = re.port();
    }
    auto le = s.local_endpoint(ec);
    if (!ec) {
      local_ip_ = ip_string(le.address());
      local_port_ = le.port();
    }
  }

  ~Session() {
    w_.conns.erase(&slot_);
    w_.shared.open_conns.fetch_sub(1, std::memory_order_relaxed);
  }

  uint64_t id() const { return id_; }
  asio::awaitable<void> run();

 private:
  asio::awaitable<bool> handle_request();
  asio::awaitable<bool> respond(Exchange& x, engine::RequestCtx& ctx, const engine::Decision& d);
  asio::awaitable<bool> proxy(Exchange& x, engine::RequestCtx& ctx, const engine::Decision& d);
  // Keep-alive, or nullopt when the upstream chose HTTP/1.1 over TLS and nothing happened yet.
  asio::awaitable<std::optional<bool>> proxy_h2(Exchange& x, engine::RequestCtx& ctx,
                                                const engine::Decision& d);
  class AsDownstream;
  asio::awaitable<bool> write_simple(Exchange& x, int status, hsp::http::HeaderMap h,
                                     std::string_view body, bool keep_alive);
  asio::awaitable<void> write_error_and_close(int status, std::string_view detail = {});
  asio::awaitable<bool> drain_body(Exchange& x);
  asio::awaitable<void> lingering_close();
  asio::awaitable<void> pump_body(Exchange& x, UpstreamStream& up, bool chunked, int64_t max_body,
                                  Clock::duration write_to, Clock::duration header_to,
                                  std::shared_ptr<PumpState> st);
  asio::awaitable<void> tunnel(UpstreamStream& up, beast::flat_buffer& ubuf);
  asio::awaitable<void> watch_client(std::shared_ptr<WatchState> ws, UpstreamStream* up);
  asio::awaitable<std::pair<bool, bool>> relay_response_body(Exchange& x, UpstreamStream& up,
                                                             beast::flat_buffer& ubuf,
                                                             ResParser& rpar, size_t head_fields,
                                                             bool chunked, Clock::duration read_to,
                                                             const std::string* head);
  size_t server_index(const engine::Snapshot& s) { return server_.of(s, key_); }
  void finish(Exchange& x);
  void accept_minor_versions();

  beast::tcp_stream& tcp() { return beast::get_lowest_layer(stream_); }
  asio::awaitable<bool> tls_handshake();
  asio::awaitable<void> send_close_notify();
  // Cleartext with h2c allowed: true when the buffered bytes are (the start of) the HTTP/2
  // preface, after reading the rest of it if needed.
  asio::awaitable<bool> h2c_preface();
  asio::awaitable<void> run_h2();

  Worker& w_;
  std::shared_ptr<TlsContext> tls_;  // HTTPS only; declared before stream_, which points into it
  Stream stream_;
  beast::flat_buffer buf_;
  ListenerKey key_;
  const std::string alt_svc_;  // HTTP/3 advertised on this listener; "" when none
  uint64_t id_ = 0;
  ConnSlot slot_;
  std::string remote_ip_, local_ip_;
  uint16_t remote_port_ = 0, local_port_ = 0;
  uint64_t requests_ = 0;
  ServerIndexCache server_;
  Clock::duration idle_timeout_ = std::chrono::minutes(5);
  std::string sni_;  // HTTPS: the server name the client sent, if any
  // HTTPS: the connection's TLS facts, copied into each request (Request::tls_*).
  uint16_t tls_version_ = 0;
  uint16_t tls_cipher_suite_ = 0;
  std::string tls_cipher_name_;
  std::string tls_proto_;
  bool tls_resumed_ = false;
  bool tls_up_ = false;  // HTTPS: the handshake completed (close_notify is owed)
  bool linger_ = false;  // the client may still be sending: close with lingering_close()
  bool h2_ = false;      // ALPN chose h2, or a cleartext client sent the h2c preface
  std::optional<H2Upgrade> h2c_upgrade_;     // a request that got 101 for `Upgrade: h2c`
  std::shared_ptr<PumpState> pump_state_;    // kept for reuse_state()
  std::shared_ptr<WatchState> watch_state_;  // kept for reuse_state()
};

// Beast accepts only HTTP/1.0 and 1.1; Go serves any HTTP/1.x as 1.1 (RFC 9110 §2.5: a higher
// minor version is compatible). When the buffered request line ends in "HTTP/1.2".."HTTP/1.9",
// we rewrite the digit to 1 before Beast sees it. A request line that has not fully arrived in
// the first read is not rewritten (then Beast answers 400: the cost of this shortcut).
template <class Stream>
void Session<Stream>::accept_minor_versions() {
  auto data = buf_.data();
  char* b = static_cast<char*>(data.data());
  size_t n = std::min<size_t>(data.size(), 16384);
  char* lf = static_cast<char*>(std::memchr(b, '\n', n));
  if (!lf || lf - b < 10 || lf[-1] != '\r') return;
  char* v = lf - 9;  // "HTTP/1.x\r"
  if (std::memcmp(v, "HTTP/1.", 7) == 0 && v[7] >= '2' && v[7] <= '9') v[7] = '1';
}

template <class Stream>
asio::awaitable<void> Session<Stream>::run() {
  bool first = true;
  error_code ec;
  if constexpr (kTls) {
    if (!co_await tls_handshake()) {
      tcp().socket().close(ec);
      co_return;
    }
  }
  if (h2_) {
    co_await run_h2();
    co_await send_close_notify();
    // The client may still be sending (a flood we stopped reading): without the linger its
    // unread bytes make the kernel answer RST, which can destroy our GOAWAY in flight.
    co_await lingering_close();
    co_return;
  }
  for (;;) {
    if (w_.shared.draining.load(std::memory_order_acquire) && !first) break;
    if (buf_.size() == 0) {
      const auto& g = w_.reader.current()->config().global;
      idle_timeout_ = or_default(g.idle_timeout, std::chrono::minutes(5));
      slot_.idle = true;
      tcp().expires_after(first ? or_default(g.read_header_timeout, std::chrono::seconds(30))
                                : idle_timeout_);
      size_t n = co_await stream_.async_read_some(buf_.prepare(kReadChunk),
                                                  redirect_error(use_awaitable, ec));
      slot_.idle = false;
      if (ec) break;
      buf_.commit(n);
    }
    if constexpr (!kTls) {
      bool h2c = false;
      if (first) h2c = co_await h2c_preface();  // not in an && operand: see h2_upstream.cc
      if (h2c) {
        co_await run_h2();
        co_await lingering_close();
        co_return;
      }
    }
    first = false;
    if (!co_await handle_request()) break;
  }
  if (h2c_upgrade_) {
    co_await run_h2();  // the upgraded request is stream 1
    co_await lingering_close();
    co_return;
  }
  if constexpr (kTls) co_await send_close_notify();
  if (linger_) {
    co_await lingering_close();
  } else {
    tcp().socket().shutdown(tcp::socket::shutdown_both, ec);
    tcp().socket().close(ec);
  }
}

// The handshake runs under read_header_timeout, like the first request head it precedes (Go's
// http.Server counts the handshake against ReadHeaderTimeout too). The certificate is chosen
// by SNI through the snapshot current at that moment; the SSL* keeps it for the connection's
// life, so a reload that swaps certificates never touches connections already up.
template <class Stream>
asio::awaitable<bool> Session<Stream>::tls_handshake() {
  if constexpr (kTls) {
    engine::SnapshotPtr snap = w_.reader.current();
    SSL* ssl = stream_.native_handle();
    size_t si = server_index(*snap);
    if (const engine::ServerTls* st = si == SIZE_MAX ? nullptr : snap->server_tls(si)) {
      SSL_set_min_proto_version(ssl, st->min_version);
      SSL_set_max_proto_version(ssl, st->max_version);
    }
    error_code ec;
    tcp().expires_after(
        or_default(snap->config().global.read_header_timeout, std::chrono::seconds(30)));
    // No request yet: a drain may close the connection mid-handshake, as it closes idle ones.
    slot_.idle = true;
    co_await stream_.async_handshake(asio::ssl::stream_base::server,
                                     redirect_error(use_awaitable, ec));
    slot_.idle = false;
    if (ec) {
      log::debug("tls_handshake_failed")
          .kv("conn_id", id_)
          .kv("remote_ip", remote_ip_)
          .kv("error", ec.message());
      // Plain HTTP sent to the HTTPS port: Go's server answers with this exact text (in clear)
      // instead of just closing, so a user who forgot https:// sees why.
      if (ec.category() == asio::error::get_ssl_category() &&
          ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == SSL_R_HTTP_REQUEST) {
        static constexpr std::string_view kPlain =
            "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";
        tcp().expires_after(std::chrono::seconds(5));
        co_await asio::async_write(tcp(), asio::buffer(kPlain.data(), kPlain.size()),
                                   redirect_error(use_awaitable, ec));
        co_await lingering_close();
      }
      co_return false;
    }
    tls_up_ = true;
    if (const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) sni_ = name;
    tls_version_ = static_cast<uint16_t>(SSL_version(ssl));
    if (const SSL_CIPHER* c = SSL_get_current_cipher(ssl)) {
      tls_cipher_suite_ = SSL_CIPHER_get_protocol_id(c);
      if (const char* n = SSL_CIPHER_standard_name(c)) tls_cipher_name_ = n;
    }
    tls_resumed_ = SSL_session_reused(ssl) == 1;
    // The listener offers only what we speak (h2, http/1.1); no ALPN at all means HTTP/1.1.
    std::string_view alpn = tls::ServerContext::selected_alpn(ssl);
    if (alpn == tls::kAcmeTlsAlpn) [[unlikely]] {
      // A TLS-ALPN-01 validation: the handshake showed the challenge certificate, and RFC 8737
      // §3 allows no application data after it, so close.
      log::info("acme_tls_alpn01_served")
          .kv("conn_id", id_)
          .kv("sni", sni_)
          .kv("remote_ip", remote_ip_)
          .kv("remote_port", static_cast<unsigned>(remote_port_));
      co_await send_close_notify();
      co_return false;
    }
    if (!alpn.empty() && alpn != "http/1.1" && alpn != "h2") co_return false;
    h2_ = alpn == "h2";
    tls_proto_ = std::string(alpn);
  }
  co_return true;
}

template <class Stream>
asio::awaitable<bool> Session<Stream>::h2c_preface() {
  engine::SnapshotPtr snap = w_.reader.current();
  size_t si = server_index(*snap);
  if (si == SIZE_MAX || !snap->config().servers[si].h2c) co_return false;
  auto starts = [&] {
    auto d = buf_.data();
    std::string_view got(static_cast<const char*>(d.data()), std::min(d.size(), kH2Preface.size()));
    return kH2Preface.starts_with(got);
  };
  error_code ec;
  while (starts() && buf_.size() < kH2Preface.size()) {
    tcp().expires_after(
        or_default(snap->config().global.read_header_timeout, std::chrono::seconds(30)));
    size_t n = co_await stream_.async_read_some(buf_.prepare(kReadChunk),
                                                redirect_error(use_awaitable, ec));
    if (ec) co_return false;  // HTTP/1 then fails on the partial line, as it would have
    buf_.commit(n);
  }
  co_return starts();
}

template <class Stream>
asio::awaitable<void> Session<Stream>::run_h2() {
  H2ConnInfo info;
  info.key = key_;
  info.conn_id = id_;
  info.slot = &slot_;
  info.remote_ip = remote_ip_;
  info.remote_port = remote_port_;
  info.local_ip = local_ip_;
  info.local_port = local_port_;
  info.tls = kTls;
  info.sni = sni_;
  info.tls_version = tls_version_;
  info.tls_cipher_suite = tls_cipher_suite_;
  info.tls_cipher_name = tls_cipher_name_;
  info.tls_resumed = tls_resumed_;
  auto d = buf_.data();
  std::string received(static_cast<const char*>(d.data()), d.size());
  buf_.consume(buf_.size());
  co_await serve_h2(w_, info, stream_, received, h2c_upgrade_ ? &*h2c_upgrade_ : nullptr);
}

// Sends our close_notify without waiting for the client's: Go's tls.Conn.Close does the same,
// and curl and browsers often never answer one. Marking the peer's close_notify as received
// makes SSL_shutdown complete after writing ours. Bounded: a client that does not read must not
// hold the connection (and a drain) for long.
template <class Stream>
asio::awaitable<void> Session<Stream>::send_close_notify() {
  if constexpr (kTls) {
    if (!tls_up_) co_return;
    tls_up_ = false;
    SSL_set_shutdown(stream_.native_handle(), SSL_RECEIVED_SHUTDOWN);
    error_code ec;
    tcp().expires_after(std::chrono::seconds(2));
    co_await stream_.async_shutdown(redirect_error(use_awaitable, ec));
  }
}

// Closes so that a response we just wrote is not destroyed by an RST: the kernel sends RST
// instead of FIN when unread data is pending, so read and discard what the client still sends
// for a short while (Go's closeWrite + rstAvoidanceDelay does the same). Over TLS the
// close_notify went out before; what we discard here are raw TLS records.
template <class Stream>
asio::awaitable<void> Session<Stream>::lingering_close() {
  error_code ec;
  tcp().socket().shutdown(tcp::socket::shutdown_send, ec);
  if (!ec) {
    std::array<char, 4096> sink;
    size_t total = 0;
    tcp().expires_after(std::chrono::milliseconds(500));
    while (total < (1u << 20)) {
      size_t n =
          co_await tcp().async_read_some(asio::buffer(sink), redirect_error(use_awaitable, ec));
      if (ec) break;
      total += n;
    }
  }
  tcp().socket().close(ec);
}

template <class Stream>
asio::awaitable<void> Session<Stream>::write_error_and_close(int status, std::string_view detail) {
  linger_ = true;
  // Go's own error replies, byte for byte: the detail rides in the status line and the body,
  // "HTTP/1.1" whatever the request said, no Content-Length (the close ends the body).
  std::string text = std::to_string(status) + " " + std::string(hsp::http::reason_phrase(status));
  if (!detail.empty()) {
    text += ": ";
    text += detail;
  }
  std::string out = "HTTP/1.1 " + text;
  out += "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n";
  out += status == 501 ? std::string("Unsupported transfer encoding") : text;
  error_code ec;
  tcp().expires_after(std::chrono::seconds(10));
  co_await asio::async_write(stream_, asio::buffer(out), redirect_error(use_awaitable, ec));
}

template <class Stream>
void Session<Stream>::finish(Exchange& x) {
  log_exchange(x, x.req, w_.shared.aborting.load(std::memory_order_acquire));
}

template <class Stream>
asio::awaitable<bool> Session<Stream>::handle_request() {
  Exchange x;
  x.snap = w_.reader.current();  // kept until this request ends, whatever reloads happen
  const config::GlobalOptions& g = x.snap->config().global;
  ReqParser& p = x.parser.emplace();
  uint64_t head_limit = static_cast<uint64_t>(g.max_request_line + g.max_header_bytes + 4);
  p.header_limit(static_cast<uint32_t>(std::min<uint64_t>(head_limit, 64u << 20)));
  p.body_limit(std::numeric_limits<uint64_t>::max());

  error_code ec;
  accept_minor_versions();
  tcp().expires_after(or_default(g.read_header_timeout, std::chrono::seconds(30)));
  co_await http::async_read_header(stream_, buf_, p, redirect_error(use_awaitable, ec));
  if (ec) {
    if (ec == http::error::header_limit) {
      // Which limit? Beast consumes the request line as soon as it is complete, so a parsed
      // method means the line fit and the fields overflowed.
      bool line_too_long = p.get().method_string().empty() ||
                           p.get().method_string().size() + p.get().target().size() + 10 >
                               static_cast<size_t>(g.max_request_line);
      log::debug("request_head_too_large").kv("conn_id", id_).kv("line", line_too_long);
      co_await write_error_and_close(line_too_long ? 414 : 431);
    } else if (ec != http::error::end_of_stream && ec != asio::error::eof && !is_timeout(ec) &&
               ec != asio::error::connection_reset && ec != asio::error::operation_aborted &&
               ec != http::error::partial_message && !is_tls_error(ec)) {
      log::debug("bad_request").kv("conn_id", id_).kv("error", ec.message());
      std::string_view detail;
      if (ec == http::error::bad_field) detail = "invalid header name";
      if (ec == http::error::bad_value) detail = "invalid header value";
      co_await write_error_and_close(400, detail);
    }
    co_return false;
  }

  auto& m = p.get();
  hsp::http::Request& r = x.req;
  r.id = ++requests_;
  r.conn_id = id_;
  r.method = std::string(m.method_string());
  r.version = m.version() == 10 ? 10 : 11;
  r.scheme = "http";
  if constexpr (kTls) {
    r.scheme = "https";
    r.tls = true;
    r.tls_server_name = sni_;
    r.tls_version = tls_version_;
    r.tls_cipher_suite = tls_cipher_suite_;
    r.tls_cipher_name = tls_cipher_name_;
    r.tls_proto = tls_proto_;
    r.tls_resumed = tls_resumed_;
  }
  std::string_view target = m.target();
  r.orig_uri = std::string(target);
  std::string abs_authority;
  if (target.starts_with("http://") || target.starts_with("https://")) {
    // Absolute form (RFC 9112 §3.2.2): its authority overrides Host.
    target.remove_prefix(target.find("//") + 2);
    size_t slash = target.find_first_of("/?");
    abs_authority = std::string(target.substr(0, slash));
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  }
  size_t q = target.find('?');
  r.path = std::string(target.substr(0, q));
  if (q != std::string_view::npos) r.query = std::string(target.substr(q + 1));
  if (r.path.empty()) r.path = "/";

  size_t line_len = m.method_string().size() + m.target().size() + 10;
  uint64_t header_bytes = 0;
  int header_count = 0;
  bool has_host = false;
  int host_count = 0;
  std::string host_value;
  r.headers.reserve(16);
  for (const auto& f : m) {
    ++header_count;
    header_bytes += f.name_string().size() + f.value().size() + 4;
    std::string_view name = f.name_string();
    if (hsp::http::iequals(name, "Host")) {
      // Like Go, Host lives in req.authority only, not among the fields.
      if (!has_host) host_value = std::string(f.value());
      has_host = true;
      ++host_count;
      continue;
    }
    if (hsp::http::iequals(name, "Transfer-Encoding")) continue;  // framing is ours
    r.headers.add(name, f.value());
  }
  if (line_len > static_cast<size_t>(g.max_request_line)) {
    co_await write_error_and_close(414);
    co_return false;
  }
  if (header_count > g.max_header_count ||
      header_bytes > static_cast<uint64_t>(g.max_header_bytes)) {
    co_await write_error_and_close(431);
    co_return false;
  }
  if (r.version >= 11 && !has_host && abs_authority.empty()) {
    co_await write_error_and_close(400, "missing required Host header");
    co_return false;
  }
  if (host_count > 1) {
    // RFC 9112 §3.2. Debian's Caddy 2.6.2 (its Go) answers a plain "400 Bad Request" here.
    co_await write_error_and_close(400);
    co_return false;
  }
  if (m.find(http::field::transfer_encoding) != m.end() && !p.chunked()) {
    // RFC 9112 §6.3: a body whose length we cannot know; Go answers 501 and closes.
    co_await write_error_and_close(501);
    co_return false;
  }
  r.authority = abs_authority.empty() ? host_value : abs_authority;
  r.host = hsp::http::host_of_authority(r.authority);
  r.remote_ip = remote_ip_;
  r.remote_port = remote_port_;
  r.local_ip = local_ip_;
  r.local_port = local_port_;
  x.snap->resolve_client_ip(r);  // trusted_proxies + X-Forwarded-For, as Caddy 2.6
  if (const std::string* expect = r.headers.get("Expect")) {
    if (!hsp::http::iequals(*expect, "100-continue")) {
      co_await write_error_and_close(417);
      co_return false;
    }
    x.expect_continue = r.version >= 11 && !p.is_done();
    r.headers.remove("Expect");
  }
  x.method = r.method;
  x.orig_uri = r.orig_uri;
  x.start = Clock::now();
  x.body_consumed = p.is_done();
  x.head_fields = field_count(m);

  // ACME HTTP-01 (RFC 8555 §8.3) on every listener, before routes and HTTP->HTTPS redirects:
  // a CA validating a name must reach the answer whatever the site does with other paths.
  // Other requests pay this one prefix compare.
  if (r.path.starts_with(tls::kAcmeHttp01Prefix)) [[unlikely]] {
    if (r.method == "GET" || r.method == "HEAD") {
      std::string_view token = std::string_view(r.path).substr(tls::kAcmeHttp01Prefix.size());
      if (std::optional<std::string> ka = tls::AcmeChallenges::instance().http01(token)) {
        log::info("acme_http01_served")
            .kv("conn_id", id_)
            .kv("token_prefix", token.substr(0, 8))
            .kv("host", r.host)
            .kv("remote_ip", remote_ip_)
            .kv("remote_port", static_cast<unsigned>(remote_port_));
        hsp::http::HeaderMap h;
        h.add("Server", kServerName);
        h.add("Content-Type", "text/plain");
        bool keep = co_await write_simple(x, 200, std::move(h), *ka, p.keep_alive());
        if (keep && !x.body_consumed) keep = co_await drain_body(x);
        if (!keep && (!x.body_consumed || buf_.size() > 0)) linger_ = true;
        co_return keep;
      }
    }
  }
  if constexpr (!kTls) {
    // `Upgrade: h2c` (RFC 7540 §3.2) where the server allows h2c, as Caddy 2.6 does. Only a
    // request without a body: one with a body is answered over HTTP/1.1 (a server may ignore
    // Upgrade; the body would otherwise have to be read whole before the switch).
    const std::string* settings = r.headers.get("HTTP2-Settings");
    if (settings && p.is_done() && r.version == 11 && hsp::http::upgrade_type(r.headers) == "h2c" &&
        hsp::http::has_token(r.headers, "Connection", "http2-settings")) {
      size_t si = server_index(*x.snap);
      if (si != SIZE_MAX && x.snap->config().servers[si].h2c) {
        static constexpr std::string_view k101 =
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
        tcp().expires_after(idle_timeout_);
        co_await asio::async_write(stream_, asio::buffer(k101.data(), k101.size()),
                                   redirect_error(use_awaitable, ec));
        if (ec) co_return false;
        H2Upgrade up;
        up.settings = *settings;
        up.request = r;
        hsp::http::remove_hop_by_hop(up.request.headers);  // Connection, Upgrade, ...
        up.request.headers.remove("HTTP2-Settings");
        h2c_upgrade_ = std::move(up);
        co_return false;
      }
    }
  }
  if (r.method == "OPTIONS" && r.orig_uri == "*") {
    // Go's server answers `OPTIONS *` itself; no handler runs, nothing is logged.
    hsp::http::HeaderMap h;
    h.add("Content-Length", "0");
    bool keep = co_await write_simple(x, 200, std::move(h), {}, p.keep_alive());
    if (keep && !x.body_consumed) keep = co_await drain_body(x);
    co_return keep;
  }

  size_t si = server_index(*x.snap);
  const engine::Site* site = si == SIZE_MAX ? nullptr : x.snap->find_site(si, r.host);
  bool keep = false;
  if (!site) {
    // Caddy answers a request no site matches with an empty 200.
    x.end_reason = "no_site";
    hsp::http::HeaderMap h;
    h.add("Server", kServerName);
    keep = co_await write_simple(x, 200, std::move(h), {}, p.keep_alive());
  } else {
    engine::RequestCtx ctx(r);
    ctx.site = site;
    engine::Decision d = x.snap->dispatch(*site, ctx);
    x.log = d.log;
    auto cl = p.content_length();
    if (d.max_request_body >= 0 && cl && *cl > static_cast<uint64_t>(d.max_request_body)) {
      x.end_reason = "body_too_large";
      hsp::http::HeaderMap h;
      h.add("Server", kServerName);
      co_await write_simple(x, 413, std::move(h), {}, false);
      keep = false;
    } else if (d.kind == engine::Decision::Kind::proxy && d.proxy) {
      keep = co_await proxy(x, ctx, d);
    } else {
      keep = co_await respond(x, ctx, d);
    }
  }
  finish(x);
  if (keep && !x.body_consumed) keep = co_await drain_body(x);
  if (!keep && (!x.body_consumed || buf_.size() > 0)) linger_ = true;
  co_return keep;
}

// Reads and discards what is left of the request body so the connection can carry the next
// request; gives up (close) past kMaxDrainBytes, as Go does.
template <class Stream>
asio::awaitable<bool> Session<Stream>::drain_body(Exchange& x) {
  if (x.expect_continue) co_return false;  // the client waits for a 100 we never sent
  ReqParser& p = *x.parser;
  BufferPool::Buffer sink_buf = w_.buffers.get();  // not in the frame: see BufferPool
  char* sink = sink_buf.get();
  uint64_t total = 0;
  error_code ec;
  while (!p.is_done()) {
    p.get().body().data = sink;
    p.get().body().size = kBodyChunk;
    tcp().expires_after(idle_timeout_);
    co_await http::async_read_some(stream_, buf_, p, redirect_error(use_awaitable, ec));
    if (ec == http::error::need_buffer) ec = {};
    if (ec) co_return false;
    total += kBodyChunk - p.get().body().size;
    if (total > kMaxDrainBytes) co_return false;
  }
  co_return true;
}

template <class Stream>
asio::awaitable<bool> Session<Stream>::write_simple(Exchange& x, int status, hsp::http::HeaderMap h,
                                                    std::string_view body, bool keep_alive) {
  const hsp::http::Request& r = x.req;
  keep_alive = keep_alive && !w_.shared.draining.load(std::memory_order_acquire);
  // A body we did not read and will not drain cheaply: close instead.
  if (!x.body_consumed) {
    auto cl = x.parser->content_length();
    if (x.expect_continue || !cl || *cl > kMaxDrainBytes) keep_alive = false;
  }
  if (!h.has("Date")) h.add("Date", http_date());
  bool with_body = status_has_body(status);
  if (with_body) h.set("Content-Length", std::to_string(body.size()));
  set_connection_field(h, r.version, keep_alive);
  std::string out = response_head(r.version, status, h, alt_svc_);
  bool send_body = with_body && r.method != "HEAD";
  if (send_body) out += body;
  x.status = status;
  x.resp_headers = std::move(h);
  error_code ec;
  tcp().expires_after(idle_timeout_);
  co_await asio::async_write(stream_, asio::buffer(out), redirect_error(use_awaitable, ec));
  if (ec) {
    x.end_reason = "client_closed";
    co_return false;
  }
  if (send_body) x.sent = body.size();
  co_return keep_alive;
}

template <class Stream>
asio::awaitable<bool> Session<Stream>::respond(Exchange& x, engine::RequestCtx& ctx,
                                               const engine::Decision& d) {
  // Server is what Caddy's server sets before any handler runs; the engine merges the rest in
  // Caddy's order (immediate ops, the static fields, implicit Content-Type, deferred ops).
  hsp::http::HeaderMap h;
  h.add("Server", kServerName);
  ctx.response_status = d.status;
  ctx.response_headers = &h;
  engine::build_response_headers(d, ctx, d.headers, h);
  ctx.response_headers = nullptr;
  co_return co_await write_simple(x, d.status, std::move(h), d.body,
                                  x.parser->keep_alive() && !d.close);
}

// Request body: client -> upstream, concurrently with reading the response, so an upstream
// that answers (or echoes) before the upload ends never deadlocks against us.
template <class Stream>
asio::awaitable<void> Session<Stream>::pump_body(Exchange& x, UpstreamStream& up, bool chunked,
                                                 int64_t max_body, Clock::duration write_to,
                                                 Clock::duration header_to,
                                                 std::shared_ptr<PumpState> st) {
  ReqParser& p = *x.parser;
  BufferPool::Buffer data_buf = w_.buffers.get();  // not in the frame: see BufferPool
  char* data = data_buf.get();
  error_code ec;
  if (x.expect_continue) {
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    tcp().expires_after(idle_timeout_);
    co_await asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                               redirect_error(use_awaitable, ec));
    if (ec) {
      st->client_error = true;
      co_return;
    }
  }
  while (!p.is_done()) {
    p.get().body().data = data;
    p.get().body().size = kBodyChunk;
    tcp().expires_after(idle_timeout_);
    co_await http::async_read_some(stream_, buf_, p, redirect_error(use_awaitable, ec));
    if (!st->active) co_return;
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      // The upstream is waiting for a body that will not come: wake the response read.
      st->client_error = true;
      error_code ignored;
      up.socket().cancel(ignored);
      co_return;
    }
    size_t n = kBodyChunk - p.get().body().size;
    if (n == 0) continue;
    st->bytes += n;
    x.bytes_read = st->bytes;
    if (max_body >= 0 && st->bytes > static_cast<uint64_t>(max_body)) {
      st->too_large = true;
      error_code ignored;
      up.socket().cancel(ignored);
      co_return;
    }
    char size_line[32];
    int sl = chunked ? std::snprintf(size_line, sizeof size_line, "%zx\r\n", n) : 0;
    std::array<asio::const_buffer, 3> bufs = {asio::buffer(size_line, sl), asio::buffer(data, n),
                                              asio::buffer("\r\n", chunked ? 2 : 0)};
    up.expires_after(write_to);
    co_await asio::async_write(up, bufs, redirect_error(use_awaitable, ec));
    if (!st->active) co_return;
    if (ec) {
      st->upstream_error = true;
      co_return;
    }
  }
  if (chunked) {
    // The client's trailers (a chunked request) go up in the last chunk.
    hsp::http::HeaderMap trailers = trailers_of(p.get(), x.head_fields);
    const std::string last = last_chunk(trailers.empty() ? nullptr : &trailers);
    up.expires_after(write_to);
    co_await asio::async_write(up, asio::buffer(last), redirect_error(use_awaitable, ec));
    if (!st->active) co_return;
    if (ec) {
      st->upstream_error = true;
      co_return;
    }
  }
  x.body_consumed = true;
  // The whole request is upstream: response_header_timeout starts now (Go's semantics).
  if (!st->head_received && header_to.count() > 0) {
    st->header_timer.expires_after(header_to);
    st->header_timer.async_wait([st, &up](error_code e) {
      if (e || !st->active || st->head_received) return;
      st->header_timed_out = true;
      error_code ignored;
      up.socket().cancel(ignored);
    });
  }
}

template <class Stream>
asio::awaitable<void> Session<Stream>::watch_client(std::shared_ptr<WatchState> ws,
                                                    UpstreamStream* up) {
  error_code ec;
  size_t n =
      co_await stream_.async_read_some(buf_.prepare(kReadChunk), redirect_error(use_awaitable, ec));
  if (!ec) {
    buf_.commit(n);  // a pipelined request: kept for the next round
    co_return;
  }
  if (ws->stopping) co_return;  // our own cancel
  ws->client_gone = true;
  error_code ignored;
  up->socket().cancel(ignored);
}

// Whether a tunnel direction may end with a TCP half-close towards `s` (cleartext only: a TLS
// peer cannot be half-closed without a close_notify, which would end its side too).
inline bool half_closable(beast::tcp_stream&) {
  return true;
}
inline bool half_closable(TlsStream&) {
  return false;
}
inline bool half_closable(UpstreamStream& s) {
  return !s.is_tls();
}

template <class Stream>
asio::awaitable<void> Session<Stream>::tunnel(UpstreamStream& up, beast::flat_buffer& ubuf) {
  using namespace asio::experimental::awaitable_operators;
  tcp().expires_never();
  up.expires_never();
  error_code ec;
  // Bytes that arrived behind the heads belong to the tunnel.
  if (buf_.size() > 0) {
    co_await asio::async_write(up, buf_.data(), redirect_error(use_awaitable, ec));
    buf_.consume(buf_.size());
  }
  if (!ec && ubuf.size() > 0) {
    co_await asio::async_write(stream_, ubuf.data(), redirect_error(use_awaitable, ec));
    ubuf.consume(ubuf.size());
  }
  if (ec) co_return;
  // A tunnel has no request boundary to wait for: on drain it is closed like an idle
  // connection (Caddy closes upgraded connections when its server stops, too).
  slot_.idle = true;
  if (w_.shared.draining.load(std::memory_order_acquire)) co_return;
  auto copy = [](auto& from, auto& to) -> asio::awaitable<void> {
    char data[kBodyChunk];
    error_code e;
    for (;;) {
      size_t n =
          co_await from.async_read_some(asio::buffer(data), redirect_error(use_awaitable, e));
      if (e) break;
      co_await asio::async_write(to, asio::buffer(data, n), redirect_error(use_awaitable, e));
      if (e) break;
    }
    error_code ignored;
    const bool eof = e == asio::error::eof || e == asio::ssl::error::stream_truncated;
    // The half-close travels on to a TCP peer. A TLS client cannot be half-closed without a
    // close_notify, which would end its side too: there the tunnel ends as a whole, as Go's
    // reverse proxy ends every tunnel when either direction stops.
    if (eof && half_closable(to)) {
      beast::get_lowest_layer(to).socket().shutdown(tcp::socket::shutdown_send, ignored);
    } else {
      beast::get_lowest_layer(from).socket().cancel(ignored);  // a reset ends both directions
      beast::get_lowest_layer(to).socket().cancel(ignored);
    }
  };
  co_await (copy(stream_, up) && copy(up, stream_));
  slot_.idle = false;
}

// Response body: upstream -> client, one piece at a time, each written as soon as it was read
// (no coalescing, whatever flush_interval says). Returns {upstream ok, client ok}.
template <class Stream>
asio::awaitable<std::pair<bool, bool>> Session<Stream>::relay_response_body(
    Exchange& x, UpstreamStream& up, beast::flat_buffer& ubuf, ResParser& rpar, size_t head_fields,
    bool chunked, Clock::duration read_to, const std::string* head) {
  // `head`: the response head, not yet written; it goes out with the first piece.
  std::string_view pending = head ? std::string_view(*head) : std::string_view();
  BufferPool::Buffer data_buf = w_.buffers.get();  // not in the frame: see BufferPool
  char* data = data_buf.get();
  error_code ec;
  while (!rpar.is_done()) {
    rpar.get().body().data = data;
    rpar.get().body().size = kBodyChunk;
    up.expires_after(read_to);
    co_await http::async_read_some(up, ubuf, rpar, redirect_error(use_awaitable, ec));
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      x.end_reason = is_timeout(ec) ? "upstream_timeout" : "upstream_reset";
      co_return std::pair{false, true};
    }
    size_t n = kBodyChunk - rpar.get().body().size;
    if (n == 0) continue;
    char size_line[32];
    int sl = chunked ? std::snprintf(size_line, sizeof size_line, "%zx\r\n", n) : 0;
    std::array<asio::const_buffer, 4> bufs = {asio::buffer(pending.data(), pending.size()),
                                              asio::buffer(size_line, sl), asio::buffer(data, n),
                                              asio::buffer("\r\n", chunked ? 2 : 0)};
    tcp().expires_after(idle_timeout_);
    co_await asio::async_write(stream_, bufs, redirect_error(use_awaitable, ec));
    pending = {};
    if (ec) {
      x.end_reason = "client_closed";
      co_return std::pair{true, false};
    }
    x.sent += n;
  }
  if (chunked || !pending.empty()) {
    // The upstream's trailers (a chunked response) go down in the last chunk.
    std::string last;
    if (chunked) {
      hsp::http::HeaderMap trailers = trailers_of(rpar.get(), head_fields);
      last = last_chunk(trailers.empty() ? nullptr : &trailers);
    }
    std::array<asio::const_buffer, 2> bufs = {asio::buffer(pending.data(), pending.size()),
                                              asio::buffer(last)};
    tcp().expires_after(idle_timeout_);
    co_await asio::async_write(stream_, bufs, redirect_error(use_awaitable, ec));
    if (ec) co_return std::pair{true, false};
  }
  co_return std::pair{true, true};
}

template <class Stream>
asio::awaitable<bool> Session<Stream>::proxy(Exchange& x, engine::RequestCtx& ctx,
                                             const engine::Decision& d) {
  if (wants_h2(d.proxy->cfg().transport)) {
    std::optional<bool> keep = co_await proxy_h2(x, ctx, d);
    if (keep) co_return *keep;  // else the upstream chose HTTP/1.1 (ALPN): go on below
  }
  const engine::ProxyHandler& handler = *d.proxy;
  const config::ReverseProxy& rp = handler.cfg();
  const config::HttpTransport& tr = rp.transport;
  hsp::http::Request& r = x.req;
  ReqParser& p = *x.parser;
  const bool has_body = !p.is_done();
  const bool chunked_up = has_body && !p.content_length();
  const bool idempotent = is_idempotent(r.method);
  const bool is_head = r.method == "HEAD";
  const std::string upgrade = hsp::http::upgrade_type(r.headers);
  const ProxyTimes times(rp, idle_timeout_);
  const Clock::duration write_to = times.write;
  const Clock::duration read_to = times.read;
  const Clock::duration header_to = times.header;

  const bool trusted = handler.peer_trusted(r);
  hsp::http::HeaderMap base = r.headers;
  hsp::http::strip_request_hop_by_hop(base);
  engine::set_forwarded_headers(r, trusted, base);

  UpstreamPicker pick(w_, handler, ctx, times, x.start, id_, x.snap->generation());
  error_code ec;

  for (;;) {
    std::optional<UpstreamConn> conn = co_await pick.next();
    x.upstream = pick.last_dial();
    if (!conn) break;
    engine::UpstreamHost* up = conn->up;
    std::unique_ptr<UpstreamStream>& us = conn->stream;
    const bool reused = conn->reused;
    const std::string head = upstream_request_head(r, handler, ctx, base, *up, chunked_up, upgrade);

    const Clock::time_point attempt_start = Clock::now();
    up->begin_request();
    struct EndRequest {
      engine::UpstreamHost* h;
      ~EndRequest() { h->end_request(); }
    } end_request{up};

    us->expires_after(write_to);
    co_await asio::async_write(*us, asio::buffer(head), redirect_error(use_awaitable, ec));
    if (ec) {
      if (reused && pick.retry_stale(idempotent, has_body)) continue;
      pick.set_fail(Fail::upstream_reset);
      pick.count_failure(up);
      break;
    }

    auto st = reuse_state(pump_state_, stream_.get_executor());
    bool pumping = false;
    if (has_body) {
      pumping = true;
      asio::co_spawn(stream_.get_executor(),
                     pump_body(x, *us, chunked_up, d.max_request_body, write_to, header_to, st),
                     [st](std::exception_ptr e) {
                       if (e) st->client_error = true;
                       st->done = true;
                       st->wake.cancel();
                     });
    } else if (header_to.count() > 0) {
      UpstreamStream* usp = us.get();
      st->header_timer.expires_after(header_to);
      st->header_timer.async_wait([st, usp](error_code e) {
        if (e || !st->active || st->head_received) return;
        st->header_timed_out = true;
        error_code ignored;
        usp->socket().cancel(ignored);
      });
    }
    // Waits until the body pump has returned (cancelling it first with `cancel`): it uses x, us
    // and stream_, which must outlive it. Only while pumping: a coroutine frame per call.
    auto stop_pump = [&](bool cancel) -> asio::awaitable<void> {
      if (!st->done && cancel) {
        error_code ignored;
        us->socket().cancel(ignored);
        tcp().socket().cancel(ignored);
      }
      while (!st->done) {
        st->wake.expires_after(std::chrono::hours(24));
        error_code e;
        co_await st->wake.async_wait(redirect_error(use_awaitable, e));
      }
    };
    // Ends the exchange's hold on the pump state (after stop_pump when pumping).
    auto end_pump = [&] {
      st->active = false;
      st->header_timer.cancel();
    };

    // Watch the client while we wait: an upstream that takes long to answer (or streams an idle
    // body) must be abandoned when the client goes away. Only when no body pump is reading the
    // client socket and no pipelined bytes wait in buf_ (the watch reads the same socket).
    auto ws = reuse_state(watch_state_, stream_.get_executor());
    auto start_watch = [&] {
      ws->armed = true;
      tcp().expires_never();  // the watch may last as long as the exchange; writes set their own
      ws->arm.expires_after(kClientWatchDelay);
      ws->arm.async_wait([this, ws, up = us.get()](error_code e) {
        if (e || !ws->armed) return;  // disarmed: the exchange (and `up`) may be gone
        ws->armed = false;
        ws->running = true;
        asio::co_spawn(stream_.get_executor(), watch_client(ws, up), [ws](std::exception_ptr) {
          ws->done = true;
          ws->wake.cancel();
        });
      });
    };
    // Cancels a watch that has not started; true when one runs and must be ended with
    // stop_watch().
    auto watch_to_stop = [&] {
      if (ws->armed) {
        ws->armed = false;
        ws->arm.cancel();
      }
      return ws->running;
    };
    // Ends a running watch and waits for it; true when it saw the client go away. Only when
    // watch_to_stop() said so: a coroutine frame per call.
    auto stop_watch = [&]() -> asio::awaitable<bool> {
      ws->running = false;
      ws->stopping = !ws->client_gone;
      if (!ws->done) {
        error_code ignored;
        tcp().socket().cancel(ignored);
      }
      while (!ws->done) {
        ws->wake.expires_after(std::chrono::hours(24));
        error_code e;
        co_await ws->wake.async_wait(redirect_error(use_awaitable, e));
      }
      co_return ws->client_gone;
    };
    if (!pumping && buf_.size() == 0) start_watch();

    // The response head; interim 1xx answers other than 101 are skipped.
    beast::flat_buffer ubuf;
    // Beast reads at most the buffer's free capacity (512 bytes when it has none): without room
    // a large response body would come up 512 bytes per system call.
    ubuf.reserve(kBodyChunk);
    std::optional<ResParser> rpar;
    for (;;) {
      rpar.emplace();
      rpar->header_limit(1 << 20);
      rpar->body_limit(std::numeric_limits<uint64_t>::max());
      if (is_head) rpar->skip(true);
      us->expires_after(idle_timeout_);
      co_await http::async_read_header(*us, ubuf, *rpar, redirect_error(use_awaitable, ec));
      if (ec) break;
      int s = rpar->get().result_int();
      if (s >= 100 && s < 200 && s != 101) continue;
      break;
    }
    st->head_received = !ec;
    st->header_timer.cancel();
    if (ec) {
      bool stale = reused && ubuf.size() == 0 && !st->header_timed_out &&
                   (ec == http::error::end_of_stream || ec == asio::error::eof ||
                    ec == asio::error::connection_reset);
      if (pumping) co_await stop_pump(true);
      end_pump();
      bool client_gone = false;
      if (watch_to_stop()) client_gone = co_await stop_watch();
      if (st->too_large) {
        pick.set_fail(Fail::too_large);
      } else if (st->client_error || client_gone) {
        pick.set_fail(Fail::client_closed);
      } else if (stale && pick.retry_stale(idempotent, has_body)) {
        continue;
      } else if (st->header_timed_out || is_timeout(ec)) {
        pick.set_fail(Fail::upstream_timeout);
        pick.count_failure(up);
      } else {
        pick.set_fail(Fail::upstream_reset);
        pick.count_failure(up);
      }
      log::debug("upstream_response_failed")
          .kv("conn_id", id_)
          .kv("upstream", up->dial())
          .kv("error", ec.message());
      break;
    }

    // The response head goes downstream.
    auto& res = rpar->get();
    const size_t res_head_fields = field_count(res);
    int status = res.result_int();
    ctx.response_status = status;
    pick.check_response(up, status, attempt_start);
    const bool switching = status == 101;
    hsp::http::HeaderMap h =
        downstream_response_fields(d, handler, ctx, *up, status, fields_of(res), upgrade);

    const bool body_expected = !is_head && status_has_body(status) && !switching;
    bool chunked_down = false;
    bool keep = p.keep_alive() && !d.close && !w_.shared.draining.load(std::memory_order_acquire);
    if (body_expected && !rpar->content_length() && !rpar->is_done()) {
      if (r.version >= 11) {
        chunked_down = true;
        h.add("Transfer-Encoding", "chunked");
      } else {
        keep = false;  // close-delimited for HTTP/1.0 clients
      }
    }
    if (body_expected && !rpar->content_length() && rpar->is_done() && !rpar->chunked()) {
      h.set("Content-Length", "0");
    }
    // Keep-alive downstream needs the request body read to its end; we know that only later,
    // so a body still being pumped means close.
    if (pumping && !st->done) keep = false;
    if (!switching) set_connection_field(h, r.version, keep);
    std::string rhead = response_head(r.version, status, h, alt_svc_);
    x.status = status;
    x.resp_headers = std::move(h);
    // A small body that is already buffered whole goes out with the head in one write. Only
    // then: a head must never wait for body bytes that have not arrived (event streams).
    auto cl = rpar->content_length();
    const bool coalesce =
        body_expected && cl && *cl <= kBodyChunk && ubuf.size() >= *cl && !chunked_down;
    if (!coalesce) {
      tcp().expires_after(idle_timeout_);
      co_await asio::async_write(stream_, asio::buffer(rhead), redirect_error(use_awaitable, ec));
    }
    if (ec) {
      if (pumping) co_await stop_pump(true);
      end_pump();
      if (watch_to_stop()) co_await stop_watch();
      x.end_reason = "client_closed";
      co_return false;
    }

    if (switching) {
      if (watch_to_stop()) co_await stop_watch();  // the tunnel reads the client itself
      if (pumping) co_await stop_pump(false);
      end_pump();
      x.end_reason = "upgraded";
      co_await tunnel(*us, ubuf);
      co_return false;
    }

    // The response body: upstream -> client, one piece at a time, written as soon as read.
    bool up_ok = true;
    bool client_ok = true;
    if (!(body_expected && !rpar->is_done())) {
      bool gone = false;
      if (watch_to_stop()) gone = co_await stop_watch();
      if (gone) x.end_reason = "client_closed";
    } else if (!ws->armed && !ws->running && (!pumping || st->done) && buf_.size() == 0) {
      start_watch();
    }
    if (body_expected) {
      auto [u, c] = co_await relay_response_body(x, *us, ubuf, *rpar, res_head_fields, chunked_down,
                                                 read_to, coalesce ? &rhead : nullptr);
      up_ok = u;
      client_ok = c;
    } else if (!rpar->is_done()) {
      up_ok = false;  // a body we do not forward (HEAD is skipped by the parser): not reusable
    }
    bool gone = false;
    if (watch_to_stop()) gone = co_await stop_watch();
    if (gone) {
      client_ok = false;
      up_ok = false;
      x.end_reason = "client_closed";
    }

    bool pump_ok = true;
    if (pumping) {
      // The response is complete; an upload still running is cut (Go does the same).
      co_await stop_pump(true);
      pump_ok = !st->client_error && !st->upstream_error && !st->too_large && x.body_consumed;
    }
    end_pump();
    if (up_ok && pump_ok && rpar->is_done() && rpar->keep_alive() && tr.keepalive) {
      pick.recycle(std::move(*conn));
    }
    if (!up_ok || !client_ok) {
      if (!up_ok && x.end_reason == "upstream_reset") pick.count_failure(up);
      co_return false;  // the response was cut: the client must see the connection end
    }
    co_return keep&& pump_ok&& x.body_consumed;
  }

  // No response from any upstream.
  const Fail fail = pick.fail();
  x.end_reason = fail_reason(fail);
  log::debug("proxy_failed")
      .kv("conn_id", id_)
      .kv("reason", x.end_reason)
      .kv("upstream", x.upstream);
  if (fail == Fail::client_closed) {
    x.status = 499;
    co_return false;
  }
  hsp::http::HeaderMap h;
  h.add("Server", kServerName);
  co_return co_await write_simple(x, fail_status(fail), std::move(h), {},
                                  p.keep_alive() && fail != Fail::too_large);
}

// An HTTP/1.1 client as the client side of an exchange with an HTTP/2 upstream. The response
// is chunked when the upstream gave no length (HTTP/1.0 clients: close-delimited), and the
// upstream's trailers go into the last chunk. Known gap: unlike the HTTP/1.1 upstream path, no
// read watches the client while the upstream is silent, so a client that leaves is only
// noticed at the next write (or read of its body).
template <class Stream>
class Session<Stream>::AsDownstream final : public Downstream {
 public:
  AsDownstream(Session& s, Exchange& x, bool keep_alive)
      : Downstream(request_wake_, response_wake_),
        request_wake_(s.stream_.get_executor()),
        response_wake_(s.stream_.get_executor()),
        s_(s),
        x_(x),
        keep_alive_(keep_alive) {}

  bool keep_alive() const { return keep_alive_ && !gone_ && !cut_; }
  bool gone() const override { return gone_; }

  asio::awaitable<Read> read_body(std::string& out) override {
    ReqParser& p = *x_.parser;
    error_code ec;
    if (x_.expect_continue && !continued_) {
      continued_ = true;
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      s_.tcp().expires_after(s_.idle_timeout_);
      co_await asio::async_write(s_.stream_, asio::buffer(kContinue.data(), kContinue.size()),
                                 redirect_error(use_awaitable, ec));
      if (ec) co_return fail();
    }
    while (!p.is_done()) {
      out.resize(kBodyChunk);
      p.get().body().data = out.data();
      p.get().body().size = out.size();
      s_.tcp().expires_after(s_.idle_timeout_);
      co_await http::async_read_some(s_.stream_, s_.buf_, p, redirect_error(use_awaitable, ec));
      if (ec == http::error::need_buffer) ec = {};
      if (ec) co_return fail();
      out.resize(kBodyChunk - p.get().body().size);
      if (!out.empty()) {
        x_.bytes_read += out.size();
        co_return Read::data;
      }
    }
    out.clear();
    x_.body_consumed = true;
    co_return Read::end;
  }

  asio::awaitable<bool> write_head(int status, hsp::http::HeaderMap h, bool end_stream) override {
    const hsp::http::Request& r = x_.req;
    const bool body_expected = r.method != "HEAD" && status_has_body(status);
    if (body_expected && !h.has("Content-Length")) {
      if (end_stream) {
        h.set("Content-Length", "0");
      } else if (r.version >= 11) {
        chunked_ = true;
        h.add("Transfer-Encoding", "chunked");
      } else {
        keep_alive_ = false;  // close-delimited for HTTP/1.0 clients
      }
    }
    if (!x_.body_consumed) keep_alive_ = false;  // decided before the upload ends: close
    if (s_.w_.shared.draining.load(std::memory_order_acquire)) keep_alive_ = false;
    set_connection_field(h, r.version, keep_alive_);
    std::string head = response_head(r.version, status, h, s_.alt_svc_);
    x_.status = status;
    x_.resp_headers = std::move(h);
    co_return co_await write(head);
  }

  asio::awaitable<bool> write_body(std::string_view data) override {
    if (data.empty()) co_return true;
    std::string piece;
    if (chunked_) {
      char size_line[32];
      int n = std::snprintf(size_line, sizeof size_line, "%zx\r\n", data.size());
      piece.reserve(data.size() + 40);
      piece.append(size_line, static_cast<size_t>(n));
      piece.append(data);
      piece += "\r\n";
    } else {
      piece.assign(data);
    }
    if (!co_await write(piece)) co_return false;
    x_.sent += data.size();
    co_return true;
  }

  asio::awaitable<bool> finish(std::optional<hsp::http::HeaderMap> trailers) override {
    if (!chunked_) co_return true;
    std::string last = "0\r\n";
    if (trailers) append_fields(last, *trailers);
    last += "\r\n";
    co_return co_await write(last);
  }

  void abort() override { cut_ = true; }  // the connection closes: the client sees the cut
  std::optional<hsp::http::HeaderMap> request_trailers() override {
    hsp::http::HeaderMap t = trailers_of(x_.parser->get(), x_.head_fields);
    if (t.empty()) return std::nullopt;
    return t;
  }

  asio::awaitable<void> write_error(int status) override {
    hsp::http::HeaderMap h;
    h.add("Server", kServerName);
    bool keep = co_await s_.write_simple(x_, status, std::move(h), {}, keep_alive_);
    keep_alive_ = keep;
  }

 private:
  Read fail() {
    gone_ = true;
    response_wake_.signal();
    return Read::failed;
  }
  asio::awaitable<bool> write(std::string_view bytes) {
    error_code ec;
    s_.tcp().expires_after(s_.idle_timeout_);
    co_await asio::async_write(s_.stream_, asio::buffer(bytes.data(), bytes.size()),
                               redirect_error(use_awaitable, ec));
    if (ec) {
      gone_ = true;
      request_wake_.signal();
      co_return false;
    }
    co_return true;
  }

  Wakeup request_wake_;
  Wakeup response_wake_;
  Session& s_;
  Exchange& x_;
  bool keep_alive_;
  bool gone_ = false;
  bool cut_ = false;
  bool chunked_ = false;
  bool continued_ = false;
};

template <class Stream>
asio::awaitable<std::optional<bool>> Session<Stream>::proxy_h2(Exchange& x, engine::RequestCtx& ctx,
                                                               const engine::Decision& d) {
  ReqParser& p = *x.parser;
  AsDownstream down(*this, x, p.keep_alive() && !d.close);
  ProxyOutcome o = co_await proxy_to_h2(w_, down, x.req, !p.is_done(), ctx, d, x.start,
                                        idle_timeout_, id_, x.snap->generation());
  if (o.use_h1) co_return std::nullopt;
  x.upstream = std::move(o.upstream);
  x.end_reason = o.end_reason;
  if (o.client_gone) x.status = 499;
  co_return std::optional<bool>(down.keep_alive() && x.end_reason == "ok" && x.body_consumed);
}

}  // namespace

asio::awaitable<void> serve_connection(Worker& w, tcp::socket sock, ListenerKey key,
                                       std::shared_ptr<TlsContext> tls) {
  uint64_t id = 0;
  try {
    if (tls) {
      asio::ssl::context& ctx = tls->ssl;
      Session<TlsStream> s(w, std::move(key), std::move(tls), std::move(sock), ctx);
      id = s.id();
      co_await s.run();
    } else {
      Session<beast::tcp_stream> s(w, std::move(key), nullptr, std::move(sock));
      id = s.id();
      co_await s.run();
    }
  } catch (const std::exception& e) {
    log::error("connection_failed").kv("conn_id", id).kv("error", e.what());
  } catch (...) {
    log::error("connection_failed").kv("conn_id", id).kv("error", "unknown exception");
  }
}

void abort_connections(Worker& w) {
  for (ConnSlot* slot : w.conns) {
    error_code ec;
    slot->stream->socket().shutdown(tcp::socket::shutdown_both, ec);
    slot->stream->socket().cancel(ec);
  }
}

void close_idle_connections(Worker& w) {
  for (ConnSlot* slot : w.conns) {
    if (slot->idle) {
      error_code ec;
      slot->stream->socket().cancel(ec);
    }
  }
}

}  // namespace hsp::http1
