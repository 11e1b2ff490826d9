// Private to gateway/http1/: HTTP/2 to upstreams (h2c with prior knowledge: `h2c://` upstreams
// and `transport http { versions h2c }`). One multiplexed connection carries many requests;
// each worker keeps its own connections per upstream address (no lock on the request path),
// opening another one only when those it has are full (the server's MAX_CONCURRENT_STREAMS) or
// going away (GOAWAY).
//
// A request is an H2Call: the exchange pushes the request body with send() (back-pressure from
// the upstream's windows), then reads the response head, body pieces and trailers from the
// call's state as the connection's reader fills it, waking the exchange's Wakeup. Response body
// bytes are acknowledged (consume) only once forwarded, so a slow client slows the upstream
// stream down instead of filling memory.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "http1/proxy_common.h"

namespace hsp::http1 {

class H2UpstreamConn;

// One request stream to the upstream, as the exchange sees it.
struct H2CallState {
  int32_t id = 0;
  Wakeup* notify = nullptr;       // the exchange's response side: head, body, end, closed
  Wakeup* send_notify = nullptr;  // the exchange's request side: send_ready, closed
  std::optional<int> status;
  http::HeaderMap head;
  std::string body;  // received, not yet forwarded
  std::optional<http::HeaderMap> trailers;
  bool ended = false;    // END_STREAM: the response is complete
  bool closed = false;   // the stream is gone (ended, reset, refused or connection lost)
  bool refused = false;  // the server never processed it: safe to retry elsewhere
  bool send_ready = false;
  uint32_t error = 0;  // RST_STREAM / GOAWAY code when it did not complete
};

class H2Call {
 public:
  H2Call() = default;
  H2Call(std::shared_ptr<H2UpstreamConn> conn, std::shared_ptr<H2CallState> st)
      : conn_(std::move(conn)), st_(std::move(st)) {}
  ~H2Call();  // cancels the stream when it has not completed
  H2Call(H2Call&&) = default;
  H2Call& operator=(H2Call&&) = default;

  H2CallState& state() { return *st_; }
  // Request body bytes, as the upstream's window allows; false when the stream is gone.
  // Waits on send_notify; `gone` is checked while waiting (the downstream client left).
  asio::awaitable<bool> send(std::string_view data, const std::function<bool()>& gone);
  // Ends the request body (with trailers if any).
  bool finish(std::optional<http::HeaderMap> trailers = {});
  // `n` response body bytes were forwarded downstream: the upstream may send more.
  void consume(size_t n);
  // Gives up on the stream (RST_STREAM CANCEL).
  void cancel();

 private:
  std::shared_ptr<H2UpstreamConn> conn_;
  std::shared_ptr<H2CallState> st_;
};

// Where a request goes: the upstream, its transport (h2c, or TLS with ALPN) and the snapshot
// generation (TLS contexts and pools are per generation).
struct H2Target {
  const engine::UpstreamHost& up;
  const config::HttpTransport& transport;
  uint64_t generation = 0;
  Clock::duration dial_timeout{};
  uint64_t conn_id = 0;
};

// Why h2_upstream_call() gave no call.
enum class H2OpenError {
  none,
  dial,       // TCP connect failed or timed out (dial_error says which)
  tls,        // the TLS handshake failed (logged with the reason)
  speaks_h1,  // TLS chose HTTP/1.1: the connection went to the HTTP/1.1 pool; use that path
  no_h2,      // TLS without "h2" where only HTTP/2 is allowed (versions 2)
  refused,    // the connection could not take a new stream
};

// Opens a request stream on one of the worker's HTTP/2 connections to the target, dialling a
// new one (TCP, then TLS with ALPN when the transport has TLS) when none can take it.
asio::awaitable<Result<H2Call>> h2_upstream_call(Worker& w, const H2Target& target,
                                                 const http::Request& head, bool end_stream,
                                                 Wakeup& notify, Wakeup& send_notify,
                                                 H2OpenError& why, error_code& dial_error);

// The client side of an exchange proxied to an HTTP/2 upstream, whatever the client speaks:
// h2_session.cc (a stream) and session.cc (an HTTP/1.1 connection) implement it.
class Downstream {
 public:
  enum class Read { data, end, failed };
  Downstream(Wakeup& request_wake, Wakeup& response_wake)
      : request_wake(request_wake), response_wake(response_wake) {}
  virtual ~Downstream() = default;

  // The request body coroutine waits here (client body bytes, the upstream's send window);
  // the response side waits on the other (upstream events, room to write downstream).
  Wakeup& request_wake;
  Wakeup& response_wake;

  virtual bool gone() const = 0;  // the client left (reset, closed)
  // The next request body piece into `out` (data), or the body's end, or a client failure.
  virtual asio::awaitable<Read> read_body(std::string& out) = 0;
  // The request's trailers, once read_body() returned end.
  virtual std::optional<http::HeaderMap> request_trailers() { return std::nullopt; }
  // `n` body bytes went upstream (HTTP/2 clients: re-open their window).
  virtual void body_forwarded(size_t /*n*/) {}
  virtual asio::awaitable<bool> write_head(int status, http::HeaderMap h, bool end_stream) = 0;
  virtual asio::awaitable<bool> write_body(std::string_view data) = 0;
  // The response is complete; trailers as the upstream sent them.
  virtual asio::awaitable<bool> finish(std::optional<http::HeaderMap> trailers) = 0;
  // The upstream cut the response: the client must not take it for complete.
  virtual void abort() = 0;
  // Answers `status` without a body when no upstream could (502, 503, 504, 413).
  virtual asio::awaitable<void> write_error(int status) = 0;
};

// What the access log needs from a proxied exchange (the Downstream counts the bytes).
struct ProxyOutcome {
  std::string upstream;
  std::string_view end_reason = "ok";
  bool client_gone = false;  // status 499 for the log: nothing was answered
  // The upstream chose HTTP/1.1 over TLS (ALPN): nothing was sent or answered; the caller
  // proxies the request over HTTP/1.1 instead.
  bool use_h1 = false;
};

// Proxies one request (`r`, already routed: `ctx`, `d`) to an HTTP/2 upstream: one upstream
// stream per request, bodies and trailers both ways (gRPC), the request body sent from a
// second coroutine so a bidirectional stream flows both ways. Retries: a dial failure within
// lb_try_duration as for HTTP/1.1, and a stream the upstream refused (GOAWAY, REFUSED_STREAM:
// it did nothing with it) on a new try, whatever the method.
asio::awaitable<ProxyOutcome> proxy_to_h2(Worker& w, Downstream& down, http::Request& r,
                                          bool has_body, engine::RequestCtx& ctx,
                                          const engine::Decision& d, Clock::time_point start,
                                          Clock::duration idle_timeout, uint64_t conn_id,
                                          uint64_t generation);

// Whether a request through `t` is for the HTTP/2 path first (h2c, or TLS offering h2).
bool wants_h2(const config::HttpTransport& t);

}  // namespace hsp::http1
