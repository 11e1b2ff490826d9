// The request streams of HTTP/2 and HTTP/3 connections (mux_stream.h).

#include "http1/mux_stream.h"

#include <algorithm>
#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <limits>

#include "http/hop_by_hop.h"
#include "http1/h2_upstream.h"
#include "tls/acme_challenges.h"
#include "util/log.h"

namespace hsp::http1 {
namespace {

namespace bhttp = boost::beast::http;
using asio::redirect_error;
using asio::use_awaitable;

// A content-length field's value, when it is one (the codec has checked it against the DATA).
std::optional<uint64_t> content_length(const http::HeaderMap& h) {
  const std::string* v = h.get("Content-Length");
  if (!v || v->empty() || v->size() > 19) return std::nullopt;
  uint64_t n = 0;
  for (char c : *v) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  return n;
}

}  // namespace

void MuxStream::abandon() {
  gone = true;
  if (upstream) {
    error_code ignored;
    upstream->socket().cancel(ignored);
  }
  in_wake.signal();
  out_wake.signal();
}

MuxConn::MuxConn(Worker& w, uint64_t conn_id, ListenerKey key, std::string remote_ip,
                 uint16_t remote_port, const char* proto, asio::any_io_executor ex)
    : w_(w),
      conn_id_(conn_id),
      key_(std::move(key)),
      remote_ip_(std::move(remote_ip)),
      remote_port_(remote_port),
      proto_(proto),
      ex_(std::move(ex)) {}

bool MuxConn::submit_head(MuxStream& st, MuxExchange& x, int status, http::HeaderMap h,
                          bool end_stream) {
  x.status = status;
  if (!h.has("Date")) h.add("Date", http_date());
  http::ResponseHead head;
  head.status = status;
  if (x.log && x.log->enabled) {
    head.headers = h;  // the access log prints them after the exchange
    x.resp_headers = std::move(h);
  } else {
    head.headers = std::move(h);
  }
  if (st.gone) return false;
  return codec_submit(st.id, head, end_stream);
}

asio::awaitable<bool> MuxConn::send_body(MuxStream& st, std::string_view data) {
  while (!data.empty()) {
    if (st.gone) co_return false;
    auto n = codec_send(st.id, data);
    if (!n) co_return false;
    if (*n > 0) {
      data.remove_prefix(*n);
      continue;
    }
    co_await st.out_wake.wait();  // on_send_ready, or the stream went away
  }
  co_return !st.gone;
}

bool MuxConn::end_response(MuxStream& st, std::optional<http::HeaderMap> trailers) {
  if (st.gone) return false;
  if (trailers && trailers->empty()) trailers.reset();
  return codec_end(st.id, std::move(trailers));
}

void MuxConn::reset(MuxStream& st, StreamError e) {
  if (st.gone) return;
  codec_reset(st.id, e);
}

asio::awaitable<void> MuxConn::serve_stream(std::shared_ptr<MuxStream> sp) {
  MuxStream& st = *sp;
  MuxExchange x;
  x.snap = w_.reader.current();  // kept until this request ends, whatever reloads happen
  x.start = Clock::now();
  http::Request& r = st.req;
  x.orig_uri = r.orig_uri;
  // As for HTTP/1.1, the access log shows the request after the handlers (the uri as received,
  // x.orig_uri), which saves a copy of every request.
  x.snap->resolve_client_ip(r);

  // ACME HTTP-01 (RFC 8555 §8.3), ahead of the routes as on HTTP/1.1 (session.cc): a CA that
  // followed a redirect to HTTPS may speak HTTP/2 there.
  if (r.path.starts_with(tls::kAcmeHttp01Prefix)) [[unlikely]] {
    if (r.method == "GET" || r.method == "HEAD") {
      std::string_view token = std::string_view(r.path).substr(tls::kAcmeHttp01Prefix.size());
      if (std::optional<std::string> ka = tls::AcmeChallenges::instance().http01(token)) {
        log::info("acme_http01_served")
            .kv("conn_id", conn_id_)
            .kv("token_prefix", token.substr(0, 8))
            .kv("host", r.host)
            .kv("remote_ip", remote_ip_)
            .kv("remote_port", static_cast<unsigned>(remote_port_))
            .kv("proto", proto_);
        http::HeaderMap h;
        h.add("Server", kServerName);
        h.add("Content-Type", "text/plain");
        h.add("Content-Length", std::to_string(ka->size()));
        const bool send = r.method != "HEAD";
        if (submit_head(st, x, 200, std::move(h), !send) && send) {
          // Not inside the && above: GCC 12 mishandles co_await in such operands (see
          // h2_upstream.cc).
          bool sent = co_await send_body(st, *ka);
          if (sent) {
            x.sent = ka->size();
            end_response(st);
          }
        }
        if (!st.body_done) reset(st, StreamError::body_not_read);  // as below
        co_return;
      }
    }
  }

  size_t si = server_.of(*x.snap, key_);
  const engine::Site* site = si == SIZE_MAX ? nullptr : x.snap->find_site(si, r.host);
  if (!site) {
    // Caddy answers a request no site matches with an empty 200.
    x.end_reason = "no_site";
    http::HeaderMap h;
    h.add("Server", kServerName);
    h.add("Content-Length", "0");
    submit_head(st, x, 200, std::move(h), true);
    co_return;
  }
  engine::RequestCtx ctx(r);
  ctx.site = site;
  engine::Decision d = x.snap->dispatch(*site, ctx);
  x.log = d.log;
  auto declared = content_length(r.headers);
  if (d.max_request_body >= 0 && declared &&
      *declared > static_cast<uint64_t>(d.max_request_body)) {
    x.end_reason = "body_too_large";
    http::HeaderMap h;
    h.add("Server", kServerName);
    h.add("Content-Length", "0");
    submit_head(st, x, 413, std::move(h), true);
  } else if (d.kind == engine::Decision::Kind::proxy && d.proxy) {
    co_await proxy(sp, x, ctx, d);
  } else {
    co_await respond(st, x, ctx, d);
  }
  if (st.gone && x.end_reason == "ok") x.end_reason = "client_closed";
  x.bytes_read = st.bytes_read;
  log_exchange(x, r, w_.shared.aborting.load(std::memory_order_acquire));
  // The request body nobody read: tell the client to stop sending it (RFC 9113 §8.1).
  if (!st.body_done) reset(st, StreamError::body_not_read);
}

asio::awaitable<void> MuxConn::respond(MuxStream& st, MuxExchange& x, engine::RequestCtx& ctx,
                                       const engine::Decision& d) {
  http::HeaderMap h;
  h.add("Server", kServerName);
  ctx.response_status = d.status;
  ctx.response_headers = &h;
  engine::build_response_headers(d, ctx, d.headers, h);
  ctx.response_headers = nullptr;
  const bool with_body = status_has_body(d.status);
  if (with_body) h.set("Content-Length", std::to_string(d.body.size()));
  const bool send = with_body && !d.body.empty() && st.req.method != "HEAD";
  if (!submit_head(st, x, d.status, std::move(h), !send)) co_return;
  if (!send) co_return;
  if (co_await send_body(st, d.body)) {
    x.sent = d.body.size();
    end_response(st);
  }
}

// Request body: client -> upstream, while the response is awaited. `result`: 0 running,
// 1 done, -1 client gone, -2 upstream write failed, -3 too large.
asio::awaitable<void> MuxConn::pump_body(std::shared_ptr<MuxStream> sp, UpstreamStream& up,
                                         bool chunked, int64_t max_body, Clock::duration write_to,
                                         std::shared_ptr<int> result) {
  MuxStream& st = *sp;
  std::string piece;
  error_code ec;
  for (;;) {
    if (*result != 0) co_return;  // stopped by the exchange
    if (!st.body.empty()) {
      piece.swap(st.body);
      st.body.clear();
      st.bytes_read += piece.size();
      if (max_body >= 0 && st.bytes_read > static_cast<uint64_t>(max_body)) {
        *result = -3;
        error_code ignored;
        up.socket().cancel(ignored);
        co_return;
      }
      char size_line[32];
      int sl = chunked ? std::snprintf(size_line, sizeof size_line, "%zx\r\n", piece.size()) : 0;
      std::array<asio::const_buffer, 3> bufs = {asio::buffer(size_line, sl), asio::buffer(piece),
                                                asio::buffer("\r\n", chunked ? 2 : 0)};
      up.expires_after(write_to);
      co_await asio::async_write(up, bufs, redirect_error(use_awaitable, ec));
      if (*result != 0) co_return;
      if (ec) {
        *result = -2;
        co_return;
      }
      if (!st.gone) {
        codec_consume(st.id, piece.size());
      }
      continue;
    }
    if (st.body_done) break;
    if (st.gone) {
      *result = -1;
      co_return;
    }
    co_await st.in_wake.wait();
  }
  if (chunked) {
    // The client's trailers go up in the last chunk (with a length, HTTP/1.1 has no place
    // for them: they are dropped, as Go does).
    const std::string last = last_chunk(st.trailers ? &*st.trailers : nullptr);
    up.expires_after(write_to);
    co_await asio::async_write(up, asio::buffer(last), redirect_error(use_awaitable, ec));
    if (*result != 0) co_return;
    if (ec) {
      *result = -2;
      co_return;
    }
  }
  *result = 1;
}

asio::awaitable<void> MuxConn::proxy(std::shared_ptr<MuxStream> sp, MuxExchange& x,
                                     engine::RequestCtx& ctx, const engine::Decision& d) {
  if (wants_h2(d.proxy->cfg().transport)) {
    bool done = co_await proxy_h2(sp, x, ctx, d);
    if (done) co_return;  // else the upstream chose HTTP/1.1 (ALPN): go on below
  }
  MuxStream& st = *sp;
  const engine::ProxyHandler& handler = *d.proxy;
  const config::ReverseProxy& rp = handler.cfg();
  http::Request& r = st.req;
  const bool has_body = !st.body_done || !st.body.empty();
  const bool chunked_up = has_body && !content_length(r.headers);
  const bool idempotent = is_idempotent(r.method);
  const bool is_head = r.method == "HEAD";
  const std::string no_upgrade;  // HTTP/2 has no Upgrade (RFC 9113 §8.6)
  const ProxyTimes times(rp, idle_timeout_);

  const bool trusted = handler.peer_trusted(r);
  http::HeaderMap base = r.headers;
  http::strip_request_hop_by_hop(base);
  engine::set_forwarded_headers(r, trusted, base);
  // An HTTP/1.1 upstream needs a Host; :authority is optional in HTTP/2 (RFC 9113 §8.3.1).

  UpstreamPicker pick(w_, handler, ctx, times, x.start, conn_id_, x.snap->generation());
  error_code ec;
  for (;;) {
    std::optional<UpstreamConn> conn = co_await pick.next();
    x.upstream = pick.last_dial();
    if (st.gone) {
      pick.set_fail(Fail::client_closed);
      break;
    }
    if (!conn) break;
    engine::UpstreamHost* up = conn->up;
    UpstreamStream& us = *conn->stream;
    const std::string head =
        upstream_request_head(r, handler, ctx, base, *up, chunked_up, no_upgrade);
    const Clock::time_point attempt_start = Clock::now();
    up->begin_request();
    struct EndRequest {
      engine::UpstreamHost* h;
      ~EndRequest() { h->end_request(); }
    } end_request{up};
    st.upstream = &us;
    struct Unhook {
      MuxStream& s;
      ~Unhook() { s.upstream = nullptr; }
    } unhook{st};

    us.expires_after(times.write);
    co_await asio::async_write(us, asio::buffer(head), redirect_error(use_awaitable, ec));
    if (ec) {
      if (!st.gone && conn->reused && pick.retry_stale(idempotent, has_body)) continue;
      pick.set_fail(st.gone ? Fail::client_closed : Fail::upstream_reset);
      if (!st.gone) pick.count_failure(up);
      break;
    }

    // The request body goes up while the response head is awaited.
    auto pump = std::make_shared<int>(has_body ? 0 : 1);
    Wakeup pump_done(ex_);
    bool pumping = has_body;
    if (has_body) {
      asio::co_spawn(ex_, pump_body(sp, us, chunked_up, d.max_request_body, times.write, pump),
                     [&pumping, &pump_done, pump](std::exception_ptr e) {
                       if (e && *pump == 0) *pump = -1;
                       pumping = false;
                       pump_done.signal();
                     });
    }
    auto stop_pump = [&]() -> asio::awaitable<void> {
      if (*pump == 0) *pump = 2;  // stopped
      st.in_wake.signal();
      while (pumping) co_await pump_done.wait();
    };

    // response_header_timeout: from when the request is upstream (without a body: now).
    asio::steady_timer header_timer(ex_);
    bool header_timed_out = false;
    bool head_received = false;
    if (times.header.count() > 0) {
      header_timer.expires_after(times.header);
      header_timer.async_wait([&](error_code e) {
        if (e || head_received) return;
        header_timed_out = true;
        error_code ignored;
        us.socket().cancel(ignored);
      });
    }

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
      us.expires_after(times.read);
      co_await bhttp::async_read_header(us, ubuf, *rpar, redirect_error(use_awaitable, ec));
      if (ec) break;
      int s = rpar->get().result_int();
      if (s >= 100 && s < 200) continue;  // interim answers (101 included: see file comment)
      break;
    }
    head_received = true;
    header_timer.cancel();
    if (ec) {
      bool stale = conn->reused && ubuf.size() == 0 && !header_timed_out &&
                   (ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
                    ec == asio::error::connection_reset);
      const int pumped = *pump;
      co_await stop_pump();
      if (pumped == -3) {
        pick.set_fail(Fail::too_large);
      } else if (st.gone || pumped == -1) {
        pick.set_fail(Fail::client_closed);
      } else if (stale && pick.retry_stale(idempotent, has_body)) {
        continue;
      } else if (header_timed_out || is_timeout(ec)) {
        pick.set_fail(Fail::upstream_timeout);
        pick.count_failure(up);
      } else {
        pick.set_fail(Fail::upstream_reset);
        pick.count_failure(up);
      }
      log::debug("upstream_response_failed")
          .kv("conn_id", conn_id_)
          .kv("stream_id", st.id)
          .kv("upstream", up->dial())
          .kv("error", ec.message());
      break;
    }

    auto& res = rpar->get();
    const size_t res_head_fields = field_count(res);
    const int status = res.result_int();
    ctx.response_status = status;
    pick.check_response(up, status, attempt_start);
    http::HeaderMap h =
        downstream_response_fields(d, handler, ctx, *up, status, fields_of(res), no_upgrade);
    const bool body_expected = !is_head && status_has_body(status);
    if (body_expected && rpar->is_done() && !rpar->content_length()) {
      h.set("Content-Length", "0");
    }
    const bool has_more = body_expected && !rpar->is_done();
    if (!submit_head(st, x, status, std::move(h), !has_more)) {
      co_await stop_pump();
      x.end_reason = "client_closed";
      co_return;
    }

    // The response body: upstream -> client, each piece as soon as it was read.
    bool up_ok = true;
    bool client_ok = true;
    if (has_more) {
      BufferPool::Buffer data_buf = w_.buffers.get();  // not in the frame: see BufferPool
      char* data = data_buf.get();
      while (!rpar->is_done()) {
        rpar->get().body().data = data;
        rpar->get().body().size = kBodyChunk;
        us.expires_after(times.read);
        co_await bhttp::async_read_some(us, ubuf, *rpar, redirect_error(use_awaitable, ec));
        if (ec == bhttp::error::need_buffer) ec = {};
        if (ec) {
          up_ok = false;
          if (st.gone) {
            client_ok = false;
            x.end_reason = "client_closed";
          } else {
            x.end_reason = is_timeout(ec) ? "upstream_timeout" : "upstream_reset";
          }
          break;
        }
        size_t n = kBodyChunk - rpar->get().body().size;
        if (n == 0) continue;
        if (!co_await send_body(st, std::string_view(data, n))) {
          client_ok = false;
          x.end_reason = "client_closed";
          break;
        }
        x.sent += n;
      }
      if (up_ok && client_ok) {
        end_response(st, trailers_of(rpar->get(), res_head_fields));
      } else if (client_ok) {
        // The upstream cut the body: the client must not take it for complete.
        reset(st, StreamError::internal);  // as Go's HTTP/2 server does for a failed handler
        pick.count_failure(up);
      }
    } else if (!rpar->is_done()) {
      up_ok = false;  // HEAD: a body we do not forward; the connection is not reusable
    }

    const int pumped = *pump;
    co_await stop_pump();
    const bool pump_ok = pumped == 1;
    if (up_ok && client_ok && pump_ok && rpar->is_done() && rpar->keep_alive()) {
      st.upstream = nullptr;
      pick.recycle(std::move(*conn));
    }
    co_return;
  }

  // No response from any upstream.
  const Fail fail = pick.fail();
  x.end_reason = fail_reason(fail);
  log::debug("proxy_failed")
      .kv("conn_id", conn_id_)
      .kv("stream_id", st.id)
      .kv("reason", x.end_reason)
      .kv("upstream", x.upstream);
  if (fail == Fail::client_closed || st.gone) {
    x.status = 499;
    co_return;
  }
  http::HeaderMap h;
  h.add("Server", kServerName);
  h.add("Content-Length", "0");
  submit_head(st, x, fail_status(fail), std::move(h), true);
}

// An HTTP/2 stream as the client side of an exchange with an HTTP/2 upstream.
class MuxConn::AsDownstream final : public Downstream {
 public:
  AsDownstream(MuxConn& s, MuxStream& st, MuxExchange& x)
      : Downstream(st.in_wake, st.out_wake), s_(s), st_(st), x_(x) {}
  bool gone() const override { return st_.gone; }
  // One wait at most: a wake-up without data returns an empty piece, so that the caller can
  // see it was stopped.
  asio::awaitable<Read> read_body(std::string& out) override {
    for (int round = 0;; ++round) {
      if (!st_.body.empty()) {
        out.swap(st_.body);
        st_.body.clear();
        st_.bytes_read += out.size();
        co_return Read::data;
      }
      if (st_.body_done) co_return Read::end;
      if (st_.gone) co_return Read::failed;
      if (round > 0) co_return Read::data;
      co_await st_.in_wake.wait();
    }
  }
  void body_forwarded(size_t n) override {
    if (st_.gone) return;
    s_.codec_consume(st_.id, n);
  }
  asio::awaitable<bool> write_head(int status, http::HeaderMap h, bool end_stream) override {
    co_return s_.submit_head(st_, x_, status, std::move(h), end_stream);
  }
  asio::awaitable<bool> write_body(std::string_view data) override {
    bool sent = co_await s_.send_body(st_, data);
    if (!sent) co_return false;
    x_.sent += data.size();
    co_return true;
  }
  asio::awaitable<bool> finish(std::optional<http::HeaderMap> trailers) override {
    if (st_.gone) co_return false;
    co_return s_.codec_end(st_.id, std::move(trailers));
  }
  void abort() override { s_.reset(st_, StreamError::internal); }  // as Go's server does
  std::optional<http::HeaderMap> request_trailers() override { return st_.trailers; }
  asio::awaitable<void> write_error(int status) override {
    http::HeaderMap h;
    h.add("Server", kServerName);
    h.add("Content-Length", "0");
    s_.submit_head(st_, x_, status, std::move(h), true);
    co_return;
  }

 private:
  MuxConn& s_;
  MuxStream& st_;
  MuxExchange& x_;
};

asio::awaitable<bool> MuxConn::proxy_h2(std::shared_ptr<MuxStream> sp, MuxExchange& x,
                                        engine::RequestCtx& ctx, const engine::Decision& d) {
  MuxStream& st = *sp;
  AsDownstream down(*this, st, x);
  const bool has_body = !st.body_done || !st.body.empty();
  ProxyOutcome o = co_await proxy_to_h2(w_, down, st.req, has_body, ctx, d, x.start, idle_timeout_,
                                        conn_id_, x.snap->generation());
  if (o.use_h1) co_return false;
  x.upstream = std::move(o.upstream);
  x.end_reason = o.end_reason;
  if (o.client_gone) x.status = 499;
  co_return true;
}

}  // namespace hsp::http1
