// The upstream side shared by the HTTP/1.1 and HTTP/2 front ends (proxy_common.h).

#include "http1/proxy_common.h"

#include <cstring>

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <algorithm>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <ctime>

#include "http/hop_by_hop.h"
#include "util/log.h"

namespace hsp::http1 {

using asio::redirect_error;
using asio::use_awaitable;

std::string_view http_date() {
  thread_local time_t last = 0;
  thread_local char buf[64];
  time_t now = std::time(nullptr);
  if (now != last) {
    struct tm tm;
    gmtime_r(&now, &tm);
    std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    last = now;
  }
  return buf;
}

namespace {

// Whether `s` holds a CR or LF byte, eight bytes at a time (the classic "has zero byte" test on
// the word XORed with the byte): header text is scanned for every field of every request.
bool has_cr_or_lf(std::string_view s) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL;
  constexpr uint64_t kHigh = 0x8080808080808080ULL;
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    uint64_t cr = w ^ (kOnes * '\r');
    uint64_t lf = w ^ (kOnes * '\n');
    if ((((cr - kOnes) & ~cr) | ((lf - kOnes) & ~lf)) & kHigh) return true;
  }
  for (; i < s.size(); ++i) {
    if (s[i] == '\r' || s[i] == '\n') return true;
  }
  return false;
}

}  // namespace

void append_clean(std::string& out, std::string_view s) {
  if (!has_cr_or_lf(s)) {
    out.append(s);
    return;
  }
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\r' && s[i] != '\n') continue;
    out.append(s.data() + start, i - start);
    start = i + 1;
  }
  out.append(s.data() + start, s.size() - start);
}

void append_fields(std::string& out, const http::HeaderMap& h) {
  for (const auto& [name, value] : h) {
    append_clean(out, name);
    out += ": ";
    append_clean(out, value);
    out += "\r\n";
  }
}

bool is_idempotent(std::string_view m) {
  return m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "PUT" || m == "DELETE" || m == "TRACE";
}

bool status_has_body(int status) {
  return status >= 200 && status != 204 && status != 304;
}

std::string ip_string(const asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_string();
  }
  return a.to_string();
}

bool is_timeout(const error_code& ec) {
  return ec == beast::error::timeout;
}

namespace {
bool is_ip_address(const std::string& s) {
  error_code ec;
  (void)asio::ip::make_address(s, ec);
  return !ec;
}
}  // namespace

std::string_view fail_reason(Fail f) {
  switch (f) {
    case Fail::none:
      return "ok";
    case Fail::dial_refused:
      return "upstream_refused";
    case Fail::dial_timeout:
      return "upstream_dial_timeout";
    case Fail::upstream_reset:
      return "upstream_reset";
    case Fail::upstream_timeout:
      return "upstream_timeout";
    case Fail::client_closed:
      return "client_closed";
    case Fail::too_large:
      return "body_too_large";
    case Fail::no_upstream:
      return "no_upstream";
  }
  return "error";
}

// Caddy 2.6's statusError: timeouts awaiting the response are 504; a dial error (timeout
// included, since Caddy wraps it in DialError) and everything else is 502; no upstream is 503.
int fail_status(Fail f) {
  switch (f) {
    case Fail::upstream_timeout:
      return 504;
    case Fail::too_large:
      return 413;
    case Fail::no_upstream:
      return 503;
    case Fail::client_closed:
      return 499;
    default:
      return 502;
  }
}

// A host name is resolved first (getaddrinfo on Asio's resolver thread) and every address is
// tried in order; resolution counts against the timeout too.
asio::awaitable<error_code> dial(const engine::UpstreamHost& up, Clock::duration timeout,
                                 beast::tcp_stream& s) {
  error_code ec;
  Clock::time_point deadline = Clock::now() + timeout;
  s.expires_at(deadline);
  auto addr = asio::ip::make_address(up.host(), ec);
  if (!ec) {
    co_await s.async_connect(tcp::endpoint(addr, up.port()), redirect_error(use_awaitable, ec));
  } else {
    auto resolver = std::make_shared<tcp::resolver>(s.get_executor());
    asio::steady_timer guard(s.get_executor());
    guard.expires_at(deadline);
    guard.async_wait([resolver](error_code e) {
      if (!e) resolver->cancel();
    });
    auto results = co_await resolver->async_resolve(up.host(), std::to_string(up.port()),
                                                    redirect_error(use_awaitable, ec));
    guard.cancel();
    if (ec == asio::error::operation_aborted) ec = beast::error::timeout;
    if (!ec) {
      s.expires_at(deadline);
      co_await s.async_connect(results, redirect_error(use_awaitable, ec));
    }
  }
  if (!ec) s.socket().set_option(tcp::no_delay(true), ec);
  co_return ec;
}

asio::awaitable<bool> Wakeup::wait_until(Clock::time_point deadline) {
  if (!signalled_) {
    timer_.expires_at(deadline);
    error_code ec;
    co_await timer_.async_wait(redirect_error(use_awaitable, ec));
    if (!ec) co_return false;  // expired, not cancelled by signal()
  }
  signalled_ = false;
  co_return true;
}

ProxyTimes::ProxyTimes(const config::ReverseProxy& rp, Clock::duration idle_timeout)
    : dial(or_default(rp.transport.dial_timeout, std::chrono::seconds(3))),
      write(or_default(rp.transport.write_timeout, idle_timeout)),
      // Caddy has no default limit on reads from the upstream (an event stream may stay silent
      // for long); ours is an hour of no progress, so a dead peer still frees its connection.
      read(or_default(rp.transport.read_timeout, std::chrono::hours(1))),
      header(or_default(rp.transport.response_header_timeout, Clock::duration(0))),
      try_duration(std::chrono::duration_cast<Clock::duration>(rp.lb_try_duration)),
      try_interval(or_default(rp.lb_try_interval, std::chrono::milliseconds(250))) {}

UpstreamPicker::UpstreamPicker(Worker& w, const engine::ProxyHandler& handler,
                               engine::RequestCtx& ctx, const ProxyTimes& times,
                               Clock::time_point start, uint64_t conn_id, uint64_t generation)
    : w_(w),
      handler_(handler),
      ctx_(ctx),
      times_(times),
      try_deadline_(start + times.try_duration),
      conn_id_(conn_id),
      generation_(generation),
      sleeper_(*w.ioc) {}

std::string upstream_pool_key(const config::HttpTransport& t, const engine::UpstreamHost& up,
                              uint64_t generation) {
  if (!t.tls) return up.dial();
  // TLS connections were verified under one snapshot's trust settings and name: only requests
  // with the same ones may reuse them.
  std::string key = "tls|" + std::to_string(generation) + "|" +
                    (t.tls_insecure_skip_verify ? "insecure|" : "verify|") + t.tls_server_name;
  for (const auto& f : t.tls_trusted_ca_certs) key += "|" + f;
  return key + "|" + up.dial();
}

std::string UpstreamPicker::pool_key(const engine::UpstreamHost& up) const {
  return upstream_pool_key(handler_.cfg().transport, up, generation_);
}

Result<const UpstreamTlsConfig*> upstream_tls(Worker& w, const config::HttpTransport& t,
                                              const std::vector<std::string>& alpn,
                                              uint64_t generation) {
  std::string key = std::to_string(generation) + "|" + (t.tls_insecure_skip_verify ? "1" : "0");
  for (const auto& p : alpn) key += "|" + p;
  key += "|";
  for (const auto& f : t.tls_trusted_ca_certs) key += f + "\n";
  auto it = w.upstream_tls.find(key);
  if (it != w.upstream_tls.end()) return &it->second;
  // Contexts of old generations are dropped in bulk (connections keep theirs alive).
  if (w.upstream_tls.size() >= 32) w.upstream_tls.clear();
  auto made = make_upstream_tls(t, alpn);
  if (!made) return made.errors();
  return &w.upstream_tls.emplace(std::move(key), std::move(*made)).first->second;
}

asio::awaitable<bool> upstream_tls_handshake(Worker& w, UpstreamStream& s,
                                             const engine::UpstreamHost& up,
                                             const config::HttpTransport& t,
                                             const std::vector<std::string>& offer,
                                             uint64_t generation, Clock::duration dial_timeout,
                                             uint64_t conn_id, std::string& alpn) {
  auto cfg = upstream_tls(w, t, offer, generation);
  if (!cfg) {
    log::error("upstream_tls_config_failed")
        .kv("conn_id", conn_id)
        .kv("upstream", up.dial())
        .kv("error", cfg.errors().front().message);
    co_return false;
  }
  const std::string& name = t.tls_server_name.empty() ? up.host() : t.tls_server_name;
  error_code ec = co_await s.handshake(**cfg, name, or_default(t.tls_timeout, dial_timeout), alpn);
  if (ec) {
    // Which check failed (certificate chain, name), for the operator.
    std::string why = ec.message();
    if (SSL* ssl = s.tls_native_handle()) {
      long v = SSL_get_verify_result(ssl);
      if (v != X509_V_OK) why = X509_verify_cert_error_string(v);
    }
    log::warn("upstream_tls_failed")
        .kv("conn_id", conn_id)
        .kv("upstream", up.dial())
        .kv("server_name", name)
        // No SNI goes to an IP address (RFC 6066 §3): a server that needs one refuses.
        .kv("sni_sent", !is_ip_address(name))
        .kv("error", why);
    co_return false;
  }
  co_return true;
}

bool UpstreamPicker::may_retry(Fail f) const {
  if (times_.try_duration.count() <= 0) return false;
  if (f != Fail::dial_refused && f != Fail::dial_timeout) return false;
  return Clock::now() + times_.try_interval < try_deadline_;
}

void UpstreamPicker::count_failure(engine::UpstreamHost* up) {
  const auto& passive = handler_.cfg().passive;
  if (passive.fail_duration.count() > 0) up->count_failure(Clock::now(), passive.fail_duration);
}

void UpstreamPicker::check_response(engine::UpstreamHost* up, int status,
                                    Clock::time_point attempt_start) {
  const auto& passive = handler_.cfg().passive;
  if (passive.fail_duration.count() <= 0) return;
  bool bad_status = std::find(passive.unhealthy_status.begin(), passive.unhealthy_status.end(),
                              status) != passive.unhealthy_status.end();
  // Caddy measures the latency up to the response head.
  bool slow = passive.unhealthy_latency.count() > 0 &&
              Clock::now() - attempt_start >= passive.unhealthy_latency;
  if (bad_status || slow) count_failure(up);
}

bool UpstreamPicker::retry_stale(bool idempotent, bool has_body) {
  if (stale_retried_ || !idempotent || has_body) return false;
  stale_retried_ = true;
  fresh_only_ = true;
  return true;
}

void UpstreamPicker::recycle(UpstreamConn&& c) {
  const auto& tr = handler_.cfg().transport;
  if (!tr.keepalive || !c.stream) return;
  w_.pool.put(pool_key(*c.up), std::move(c.stream), std::move(c.token),
              static_cast<size_t>(std::max(0, tr.keepalive_idle_conns_per_host)),
              static_cast<size_t>(std::max(0, tr.keepalive_idle_conns)));
}

asio::awaitable<engine::UpstreamHost*> UpstreamPicker::choose() {
  error_code ec;
  for (;;) {
    engine::UpstreamHost* up = handler_.select(ctx_, tried_);
    if (!up && !tried_.empty() && may_retry(fail_)) {
      tried_.clear();
      sleeper_.expires_after(times_.try_interval);
      co_await sleeper_.async_wait(redirect_error(use_awaitable, ec));
      continue;
    }
    if (!up) {
      if (fail_ == Fail::none) fail_ = Fail::no_upstream;
      co_return nullptr;
    }
    ctx_.upstream = up;
    last_dial_ = up->dial();
    co_return up;
  }
}

asio::awaitable<bool> UpstreamPicker::dial_failed(engine::UpstreamHost* up, Fail f) {
  fail_ = f;
  count_failure(up);
  tried_.push_back(up);
  if (!may_retry(f)) co_return false;
  error_code ec;
  sleeper_.expires_after(times_.try_interval);
  co_await sleeper_.async_wait(redirect_error(use_awaitable, ec));
  co_return true;
}

asio::awaitable<std::optional<UpstreamConn>> UpstreamPicker::next() {
  const config::HttpTransport& tr = handler_.cfg().transport;
  error_code ec;
  for (;;) {
    engine::UpstreamHost* up = co_await choose();
    if (!up) co_return std::nullopt;

    UpstreamConn c;
    c.up = up;
    if (tr.keepalive && !fresh_only_) {
      c.stream = w_.pool.take(pool_key(*up), tr.keepalive_idle, c.token);
      c.reused = c.stream != nullptr;
    }
    fresh_only_ = false;
    if (!c.stream && tr.max_conns_per_host > 0) {
      // At the limit, wait for a slot or an idle connection. Go waits without bound; we give
      // up after dial_timeout (a dial error: 502). Polling every 5 ms is crude but only runs
      // when the limit is reached.
      auto slots = host_slots(up->dial());
      Clock::time_point give_up = Clock::now() + times_.dial;
      bool got = false;
      for (;;) {
        int cur = slots->open.load(std::memory_order_relaxed);
        if (cur < tr.max_conns_per_host &&
            slots->open.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed)) {
          c.token = HostConnToken(slots);
          got = true;
          break;
        }
        if (tr.keepalive && (c.stream = w_.pool.take(pool_key(*up), tr.keepalive_idle, c.token))) {
          c.reused = got = true;
          break;
        }
        if (Clock::now() >= give_up) break;
        sleeper_.expires_after(std::chrono::milliseconds(5));
        co_await sleeper_.async_wait(redirect_error(use_awaitable, ec));
      }
      if (!got) {
        // Not the upstream's fault: no passive-health failure is counted.
        fail_ = Fail::dial_timeout;
        log::debug("upstream_conn_limit").kv("conn_id", conn_id_).kv("upstream", up->dial());
        tried_.push_back(up);
        if (may_retry(fail_)) continue;
        co_return std::nullopt;
      }
    }
    if (!c.stream) {
      c.stream = std::make_unique<UpstreamStream>(w_.ioc->get_executor());
      ec = co_await dial(*up, times_.dial, c.stream->tcp());
      if (ec) {
        log::debug("upstream_dial_failed")
            .kv("conn_id", conn_id_)
            .kv("upstream", up->dial())
            .kv("error", ec.message());
        if (co_await dial_failed(up, is_timeout(ec) ? Fail::dial_timeout : Fail::dial_refused)) {
          continue;
        }
        co_return std::nullopt;
      }
      if (tr.tls) {
        // HTTP/1.1 only here: HTTP/2 over TLS goes through h2_upstream.cc.
        static const std::vector<std::string> kH1 = {"http/1.1"};
        std::string alpn;
        bool ok = co_await upstream_tls_handshake(w_, *c.stream, *up, tr, kH1, generation_,
                                                  times_.dial, conn_id_, alpn);
        if (!ok) {
          if (co_await dial_failed(up, Fail::dial_refused)) continue;
          co_return std::nullopt;
        }
      }
    }
    co_return c;
  }
}

std::string upstream_request_head(const http::Request& r, const engine::ProxyHandler& handler,
                                  engine::RequestCtx& ctx, const http::HeaderMap& base,
                                  const engine::UpstreamHost& up, bool chunked,
                                  const std::string& upgrade) {
  // Without header_up the fields go out as they are: no copy per request.
  http::HeaderMap edited;
  const http::HeaderMap* out = &base;
  // Go sends the client's Host; with none (HTTP/1.0), the URL's host: the upstream address.
  std::string_view host = r.authority.empty() ? std::string_view(up.dial()) : r.authority;
  std::string host_set;  // by header_up
  if (!handler.cfg().header_up.ops.empty()) {
    edited = base;
    handler.apply_header_up(ctx, edited);
    if (const std::string* h = edited.get("Host")) {
      host_set = *h;
      host = host_set;
      edited.remove("Host");
    }
    out = &edited;
  }
  std::string head;
  head.reserve(512);
  head += r.method;
  head += ' ';
  append_clean(head, r.uri());
  head += " HTTP/1.1\r\nHost: ";
  append_clean(head, host);
  head += "\r\n";
  append_fields(head, *out);
  if (chunked) head += "Transfer-Encoding: chunked\r\n";
  // Go's transport with keepalive off.
  if (!handler.cfg().transport.keepalive && upgrade.empty()) head += "Connection: close\r\n";
  head += "\r\n";
  return head;
}

http::HeaderMap fields_of(const ResParser::value_type& res) {
  http::HeaderMap uh;
  uh.reserve(field_count(res));
  for (const auto& f : res) uh.add(f.name_string(), f.value());
  return uh;
}

size_t field_count(const boost::beast::http::fields& f) {
  return static_cast<size_t>(std::distance(f.begin(), f.end()));
}

http::HeaderMap trailers_of(const boost::beast::http::fields& f, size_t head_fields) {
  http::HeaderMap out;
  size_t i = 0;
  for (const auto& field : f) {
    if (i++ < head_fields) continue;
    out.add(field.name_string(), field.value());
  }
  if (out.empty()) return out;
  http::remove_hop_by_hop(out);
  for (const char* name :
       {"Content-Length", "Host", "Trailer", "Content-Encoding", "Content-Type", "Content-Range"}) {
    out.remove(name);
  }
  return out;
}

std::string last_chunk(const http::HeaderMap* trailers) {
  std::string out = "0\r\n";
  if (trailers) append_fields(out, *trailers);
  out += "\r\n";
  return out;
}

http::HeaderMap downstream_response_fields(const engine::Decision& d,
                                           const engine::ProxyHandler& handler,
                                           engine::RequestCtx& ctx, const engine::UpstreamHost& up,
                                           int status, http::HeaderMap uh,
                                           const std::string& upgrade) {
  const bool switching = status == 101;
  std::string up_upgrade;
  if (switching) {
    if (const std::string* u = uh.get("Upgrade")) up_upgrade = *u;
  }
  http::strip_response_hop_by_hop(uh);
  if (switching) {
    uh.add("Connection", "Upgrade");
    uh.add("Upgrade", up_upgrade.empty() ? upgrade : up_upgrade);
  }
  handler.apply_header_down(ctx, uh);

  // lb_policy cookie: Caddy sets the cookie on the response writer when it picks the
  // upstream, i.e. after the immediate header ops and before the upstream's fields.
  std::string cookie = handler.sticky_cookie(ctx, up);
  if (!cookie.empty()) {
    http::HeaderMap with_cookie;
    with_cookie.add("Set-Cookie", cookie);
    for (const auto& [name, value] : uh) with_cookie.add(name, value);
    uh = std::move(with_cookie);
  }
  http::HeaderMap h;
  h.add("Server", kServerName);
  ctx.response_headers = &h;
  engine::build_response_headers(d, ctx, std::move(uh), h);
  ctx.response_headers = nullptr;
  if (!h.has("Date")) h.add("Date", http_date());
  return h;
}

}  // namespace hsp::http1
