// Private to gateway/http1/: what the HTTP/1.1 and HTTP/2 front ends (session.cc,
// h2_session.cc) and the HTTP/2 upstream path (h2_upstream.cc) share on the way to an upstream:
// picking an upstream and a connection to it under Caddy's retry rules, TLS to upstreams, the
// HTTP/1.1 request head, the response fields the client gets, and why an exchange failed.
// Everything that reads or writes the downstream connection stays with the front end, since
// framing, flow control and "the client went away" differ.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "http1/worker.h"

namespace hsp::http1 {

using boost::system::error_code;

constexpr size_t kBodyChunk = 16 * 1024;  // one body piece, either direction
constexpr const char* kServerName = "hsp-gateway";

using ResParser = boost::beast::http::response_parser<boost::beast::http::buffer_body>;

template <typename D>
Clock::duration or_default(D d, Clock::duration fallback) {
  auto c = std::chrono::duration_cast<Clock::duration>(d);
  return c.count() > 0 ? c : fallback;
}

// RFC 9110 date for the Date field, formatted at most once per second per thread.
std::string_view http_date();
// Field names and values may come from placeholders; CR and LF would let them inject fields.
void append_clean(std::string& out, std::string_view s);
void append_fields(std::string& out, const http::HeaderMap& h);
bool is_idempotent(std::string_view method);
bool status_has_body(int status);
// A dual-stack wildcard listener sees IPv4 peers as ::ffff:a.b.c.d; Go reports them as a.b.c.d.
std::string ip_string(const asio::ip::address& a);
bool is_timeout(const error_code& ec);

enum class Fail {
  none,
  dial_refused,
  dial_timeout,
  upstream_reset,
  upstream_timeout,
  client_closed,
  too_large,
  no_upstream,
};
// The access log's end_reason for a failed exchange.
std::string_view fail_reason(Fail f);
// The status the client gets for it (Caddy 2.6's statusError).
int fail_status(Fail f);

// Connects `s` to the upstream within `timeout` (name resolution included); returns
// beast::error::timeout when the time ran out.
asio::awaitable<error_code> dial(const engine::UpstreamHost& up, Clock::duration timeout,
                                 beast::tcp_stream& s);

// A flag plus a timer: the waiter sleeps until someone signals. Signals that come before the
// wait are kept (all on one thread, so check-then-wait cannot race).
class Wakeup {
 public:
  explicit Wakeup(const asio::any_io_executor& ex) : timer_(ex) {}
  void signal() {
    signalled_ = true;
    timer_.cancel();
  }
  asio::awaitable<void> wait() { co_await wait_until(Clock::now() + std::chrono::hours(24)); }
  // False when the deadline passed without a signal.
  asio::awaitable<bool> wait_until(Clock::time_point deadline);

 private:
  asio::steady_timer timer_;
  bool signalled_ = false;
};

// The timeouts of one reverse_proxy handler, with our defaults where Caddy has none.
struct ProxyTimes {
  ProxyTimes(const config::ReverseProxy& rp, Clock::duration idle_timeout);
  Clock::duration dial;
  Clock::duration write;
  Clock::duration read;    // between two reads of the response body
  Clock::duration header;  // response_header_timeout; 0: none
  Clock::duration try_duration;
  Clock::duration try_interval;
};

// An upstream connection ready for a request: pooled (reused) or freshly dialled.
struct UpstreamConn {
  engine::UpstreamHost* up = nullptr;
  std::unique_ptr<UpstreamStream> stream;
  HostConnToken token;
  bool reused = false;
};

// Chooses upstreams and connections for one request, as Caddy's reverse_proxy loop does: a
// dial failure is retried (any method) within lb_try_duration, every lb_try_interval, on the
// upstreams not tried yet (all of them again once each was tried); a pooled connection found
// dead before the upstream saw anything is retried once on a fresh connection, for bodyless
// idempotent requests only (Go's transport does the same). A request the upstream may have
// received is never retried.
class UpstreamPicker {
 public:
  // `generation`: the snapshot's, which keys TLS contexts and pooled TLS connections (a reload
  // may change what is trusted).
  UpstreamPicker(Worker& w, const engine::ProxyHandler& handler, engine::RequestCtx& ctx,
                 const ProxyTimes& times, Clock::time_point start, uint64_t conn_id,
                 uint64_t generation);

  // The next connection to send the request on; nullopt when none is left (fail() says why).
  asio::awaitable<std::optional<UpstreamConn>> next();
  // The parts of next() for transports with their own connections (HTTP/2 upstreams): the
  // next upstream to try (after the lb_try_interval pause when every one was tried), or null;
  // and, after a failed dial to `up`, whether to go on (true, after the pause) or give up.
  asio::awaitable<engine::UpstreamHost*> choose();
  asio::awaitable<bool> dial_failed(engine::UpstreamHost* up, Fail f);
  // The connection from next() was a pooled one the upstream had closed: true when the
  // request may go again on a fresh connection (the next call to next() dials).
  bool retry_stale(bool idempotent, bool has_body);
  // Passive health: counts a failure against `up` when the handler has fail_duration set.
  void count_failure(engine::UpstreamHost* up);
  // Passive health on a response head: unhealthy_status and unhealthy_latency.
  void check_response(engine::UpstreamHost* up, int status, Clock::time_point attempt_start);
  // Puts a connection whose exchange ended cleanly back into the worker's pool.
  void recycle(UpstreamConn&& c);

  Fail fail() const { return fail_; }
  void set_fail(Fail f) { fail_ = f; }
  // The dial address last chosen ("" before the first); the access log's upstream.
  const std::string& last_dial() const { return last_dial_; }

 private:
  bool may_retry(Fail f) const;
  std::string pool_key(const engine::UpstreamHost& up) const;

  Worker& w_;
  const engine::ProxyHandler& handler_;
  engine::RequestCtx& ctx_;
  const ProxyTimes& times_;
  Clock::time_point try_deadline_;
  uint64_t conn_id_;
  uint64_t generation_;
  std::vector<const engine::UpstreamHost*> tried_;
  Fail fail_ = Fail::none;
  bool fresh_only_ = false;
  bool stale_retried_ = false;
  std::string last_dial_;
  asio::steady_timer sleeper_;
};

// The key of pooled connections to `up`: the dial address, and for TLS also the snapshot
// generation and server name they were verified under.
std::string upstream_pool_key(const config::HttpTransport& t, const engine::UpstreamHost& up,
                              uint64_t generation);

// The worker's TLS client context for a transport with TLS on, offering `alpn`; made on first
// use per snapshot generation. An error names the CA file or OpenSSL's reason.
Result<const UpstreamTlsConfig*> upstream_tls(Worker& w, const config::HttpTransport& t,
                                              const std::vector<std::string>& alpn,
                                              uint64_t generation);

// Completes a TLS connection to `up` over the connected `s` (handshake within tls_timeout, else
// the dial timeout); logs and returns the failure. `alpn` receives the negotiated protocol.
asio::awaitable<bool> upstream_tls_handshake(Worker& w, UpstreamStream& s,
                                             const engine::UpstreamHost& up,
                                             const config::HttpTransport& t,
                                             const std::vector<std::string>& offer,
                                             uint64_t generation, Clock::duration dial_timeout,
                                             uint64_t conn_id, std::string& alpn);

// The request head for an HTTP/1.1 upstream: method, target, Host (the client's authority
// unless header_up set one), the fields in `base` after header_up, chunked framing when the
// body's length is unknown, and `Connection: close` when keepalive is off (not for upgrades).
std::string upstream_request_head(const http::Request& r, const engine::ProxyHandler& handler,
                                  engine::RequestCtx& ctx, const http::HeaderMap& base,
                                  const engine::UpstreamHost& up, bool chunked,
                                  const std::string& upgrade);

// The response fields the client gets for an upstream response: hop-by-hop fields stripped,
// header_down applied, the lb cookie, then the engine's ordering with Server and Date. For a
// 101, Connection/Upgrade are put back (`upgrade`: what the client asked for).
http::HeaderMap downstream_response_fields(const engine::Decision& d,
                                           const engine::ProxyHandler& handler,
                                           engine::RequestCtx& ctx, const engine::UpstreamHost& up,
                                           int status, http::HeaderMap uh,
                                           const std::string& upgrade);
// The fields of a response head Beast parsed, in order.
http::HeaderMap fields_of(const ResParser::value_type& res);

// Trailers of a chunked message. Beast appends a chunked body's trailer fields to the message's
// fields, after the `head_fields` the head had; count those with field_count() when the head is
// parsed. Framing, routing and hop-by-hop fields are not forwarded (RFC 9110 §6.5.1).
size_t field_count(const boost::beast::http::fields& f);
http::HeaderMap trailers_of(const boost::beast::http::fields& f, size_t head_fields);
// The end of a chunked body: the last chunk, the trailer section (if any) and the final CRLF.
std::string last_chunk(const http::HeaderMap* trailers);

}  // namespace hsp::http1
