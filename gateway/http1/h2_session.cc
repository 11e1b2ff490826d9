// One downstream HTTP/2 connection: the socket side of hsp::h2::ServerConnection (the codec,
// gateway/h2/server.h) and one coroutine per request stream, which routes the request through
// the snapshot current when its head arrived and answers it directly or through an upstream:
// HTTP/1.1 here (proxy_common.h picks the upstream and builds the heads, as for HTTP/1.1
// clients), HTTP/2 through proxy_to_h2() (h2_upstream.h) with this stream as its Downstream.
//
// Coroutines of one connection, all on the worker's thread (so nothing here is locked):
//   reader    socket -> codec.recv(); codec events fill the streams' state and wake them;
//   writer    codec.pending_output() -> socket; woken by whoever queued frames;
//   watchdog  idle timeout, drain (GOAWAY, then open streams finish), the listener going away;
//   streams   one per request (serve_stream), ended before the connection object goes away.
//
// Back-pressure, both directions, with bounded memory per stream: request body bytes are
// copied out of the codec into the stream's queue and written upstream by a pump coroutine;
// the client's window is re-opened (codec.consume) only for bytes written upstream, so the
// queue never holds more than the stream window. Response body bytes are read from the
// upstream only when the codec accepted the previous piece (send_data), which it does as the
// client's window allows (on_send_ready wakes the stream).
//
// A client that resets a stream (or goes away) cancels that stream's upstream exchange; the
// other streams keep going. Trailers go both ways (an HTTP/1.1 upstream gets the client's in
// its chunked request body, and its own come back as HTTP/2 trailers). Known gap: a 101 from an
// upstream answers 502 (no extended CONNECT, so no WebSocket over HTTP/2 yet).

#include "http1/h2_session.h"

#include <algorithm>
#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <deque>
#include <limits>
#include <memory>
#include <optional>
#include <unordered_map>

#include "h2/server.h"
#include "http/hop_by_hop.h"
#include "http1/access_log.h"
#include "http1/h2_upstream.h"
#include "http1/proxy_common.h"
#include "http1/tls_context.h"
#include "tls/acme_challenges.h"
#include "util/log.h"

namespace hsp::http1 {
namespace {

namespace bhttp = boost::beast::http;
using asio::redirect_error;
using asio::use_awaitable;

constexpr size_t kReadBuffer = 16 * 1024;
constexpr auto kWatchdogTick = std::chrono::milliseconds(250);

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

// One request stream as the reader (codec events) and its coroutine share it.
struct H2Stream {
  explicit H2Stream(const asio::any_io_executor& ex) : in_wake(ex), out_wake(ex) {}
  int32_t id = 0;
  http::Request req;
  std::string body;  // received, not yet written upstream (bounded by the stream window)
  bool body_done = false;
  std::optional<http::HeaderMap> trailers;  // the request's, when the client sent some
  bool gone = false;  // reset by the peer, or the connection ended: stop, answer nothing
  uint64_t bytes_read = 0;
  UpstreamStream* upstream = nullptr;  // cancelled when the stream goes away
  // Two waiters, one each: the request body pump (body bytes, its end, and an HTTP/2
  // upstream's send window) and the response side (room to send, an HTTP/2 upstream's events).
  Wakeup in_wake;
  Wakeup out_wake;

  void abandon() {
    gone = true;
    if (upstream) {
      error_code ignored;
      upstream->socket().cancel(ignored);
    }
    in_wake.signal();
    out_wake.signal();
  }
};

// What one exchange reports to the access log.
struct H2Exchange : ExchangeLog {
  engine::SnapshotPtr snap;
};

template <class Stream>
class H2Session final : public h2::Handler {
 public:
  H2Session(Worker& w, const H2ConnInfo& info, Stream& stream, h2::Settings settings)
      : w_(w),
        info_(info),
        stream_(stream),
        conn_(settings, *this, info.conn_id),
        writer_wake_(stream.get_executor()),
        done_wake_(stream.get_executor()) {
    http::Request tmpl;
    tmpl.conn_id = info.conn_id;
    tmpl.remote_ip = info.remote_ip;
    tmpl.remote_port = info.remote_port;
    tmpl.local_ip = info.local_ip;
    tmpl.local_port = info.local_port;
    tmpl.tls = info.tls;
    tmpl.tls_server_name = info.sni;
    tmpl.tls_version = info.tls_version;
    tmpl.tls_cipher_suite = info.tls_cipher_suite;
    tmpl.tls_cipher_name = info.tls_cipher_name;
    tmpl.tls_proto = info.tls ? "h2" : "";
    tmpl.tls_resumed = info.tls_resumed;
    conn_.set_request_template(std::move(tmpl));
  }

  asio::awaitable<void> run(std::string_view received, H2Upgrade* upgrade);

  // h2::Handler: called from inside conn_.recv() / pending_output(); never blocks.
  void on_request(int32_t id, http::Request&& req, bool end_stream) override;
  void on_request_data(int32_t id, std::string_view data) override;
  void on_request_trailers(int32_t id, http::HeaderMap&& trailers) override;
  void on_request_end(int32_t id) override;
  void on_stream_reset(int32_t id, uint32_t) override;
  void on_stream_closed(int32_t id, uint32_t) override;
  void on_send_ready(int32_t id) override;

 private:
  beast::tcp_stream& tcp() { return beast::get_lowest_layer(stream_); }
  asio::awaitable<void> reader();
  asio::awaitable<void> writer();
  asio::awaitable<void> watchdog();
  asio::awaitable<void> serve_stream(std::shared_ptr<H2Stream> st);
  asio::awaitable<void> respond(H2Stream& st, H2Exchange& x, engine::RequestCtx& ctx,
                                const engine::Decision& d);
  asio::awaitable<void> proxy(std::shared_ptr<H2Stream> sp, H2Exchange& x, engine::RequestCtx& ctx,
                              const engine::Decision& d);
  // False when the upstream chose HTTP/1.1 over TLS and nothing happened yet.
  asio::awaitable<bool> proxy_h2(std::shared_ptr<H2Stream> sp, H2Exchange& x,
                                 engine::RequestCtx& ctx, const engine::Decision& d);
  class AsDownstream;
  asio::awaitable<void> pump_body(std::shared_ptr<H2Stream> st, UpstreamStream& up, bool chunked,
                                  int64_t max_body, Clock::duration write_to,
                                  std::shared_ptr<int> result);
  // Submits a response head; false when the stream is gone.
  bool submit_head(H2Stream& st, H2Exchange& x, int status, http::HeaderMap h, bool end_stream);
  // Queues body bytes as the client's window allows; false when the stream went away.
  asio::awaitable<bool> send_body(H2Stream& st, std::string_view data);
  bool end_response(H2Stream& st, std::optional<http::HeaderMap> trailers = {});
  void reset(H2Stream& st, uint32_t code);
  size_t server_index(const engine::Snapshot& s) { return server_.of(s, info_.key); }
  void wake_writer() { writer_wake_.signal(); }
  void close_all();

  Worker& w_;
  const H2ConnInfo& info_;
  Stream& stream_;
  h2::ServerConnection conn_;
  std::unordered_map<int32_t, std::shared_ptr<H2Stream>> streams_;
  Wakeup writer_wake_;
  Wakeup done_wake_;
  int live_ = 0;  // stream coroutines not yet finished
  bool reader_done_ = false;
  bool writer_done_ = false;
  bool watchdog_done_ = false;
  bool closing_ = false;  // the socket is finished: stop everything
  bool draining_ = false;
  Clock::time_point last_active_ = Clock::now();
  Clock::duration idle_timeout_ = std::chrono::minutes(5);
  ServerIndexCache server_;
};

template <class Stream>
asio::awaitable<void> H2Session<Stream>::run(std::string_view received, H2Upgrade* upgrade) {
  idle_timeout_ =
      or_default(w_.reader.current()->config().global.idle_timeout, std::chrono::minutes(5));
  info_.slot->idle = false;  // drain is the watchdog's job: it sends GOAWAY first
  if (upgrade) {
    auto up = conn_.upgrade(upgrade->settings, std::move(upgrade->request));
    if (!up) {
      log::debug("h2c_upgrade_failed")
          .kv("conn_id", info_.conn_id)
          .kv("error", up.errors().front().message);
      closing_ = true;
    }
  }
  if (!closing_ && !received.empty() && !conn_.recv(received)) closing_ = true;
  auto ex = stream_.get_executor();
  auto flag_done = [this](bool& flag) {
    return [this, &flag](std::exception_ptr e) {
      if (e) closing_ = true;
      flag = true;
      done_wake_.signal();
    };
  };
  asio::co_spawn(ex, writer(), flag_done(writer_done_));
  if (!closing_) {
    asio::co_spawn(ex, reader(), flag_done(reader_done_));
  } else {
    reader_done_ = true;
  }
  asio::co_spawn(ex, watchdog(), flag_done(watchdog_done_));
  // The writer ends the connection: after a GOAWAY is flushed and the streams are done, or
  // when the socket failed. Then the rest is stopped and waited for: they all use *this.
  while (!writer_done_) co_await done_wake_.wait();
  closing_ = true;
  close_all();
  error_code ignored;
  tcp().socket().cancel(ignored);
  while (!reader_done_ || !watchdog_done_ || live_ > 0) {
    close_all();
    co_await done_wake_.wait();
  }
}

template <class Stream>
void H2Session<Stream>::close_all() {
  for (auto& [id, st] : streams_) st->abandon();
  streams_.clear();
  wake_writer();
}

template <class Stream>
asio::awaitable<void> H2Session<Stream>::reader() {
  std::array<char, kReadBuffer> buf;
  error_code ec;
  while (!closing_) {
    // The read has no timeout of its own (the watchdog handles idleness); this also clears a
    // deadline left by the handshake.
    tcp().expires_never();
    size_t n =
        co_await stream_.async_read_some(asio::buffer(buf), redirect_error(use_awaitable, ec));
    if (ec) break;
    last_active_ = Clock::now();
    auto r = conn_.recv(std::string_view(buf.data(), n));
    wake_writer();
    if (!r) {
      log::debug("h2_connection_error")
          .kv("conn_id", info_.conn_id)
          .kv("error", r.errors().empty() ? std::string() : r.errors().front().message);
      break;  // the writer flushes the GOAWAY the codec queued, then ends
    }
  }
  // Nothing more will be read: streams waiting for request bytes can never finish.
  if (!closing_ && ec) {
    closing_ = true;
    close_all();
  }
  reader_done_ = true;
  wake_writer();
}

template <class Stream>
asio::awaitable<void> H2Session<Stream>::writer() {
  std::string out;
  error_code ec;
  for (;;) {
    std::string_view pending = conn_.pending_output();
    if (!pending.empty()) {
      // A copy: the codec's buffer may move while the write is in flight (streams submit).
      out.assign(pending);
      conn_.consume_output(pending.size());
      tcp().expires_after(idle_timeout_);
      co_await asio::async_write(stream_, asio::buffer(out), redirect_error(use_awaitable, ec));
      if (ec) break;
      last_active_ = Clock::now();
      continue;
    }
    if (closing_ || reader_done_ || (!conn_.want_read() && !conn_.want_write())) break;
    co_await writer_wake_.wait();
  }
}

template <class Stream>
asio::awaitable<void> H2Session<Stream>::watchdog() {
  asio::steady_timer t(stream_.get_executor());
  error_code ec;
  while (!closing_ && !reader_done_) {
    t.expires_after(kWatchdogTick);
    co_await t.async_wait(redirect_error(use_awaitable, ec));
    if (closing_) break;
    if (w_.shared.aborting.load(std::memory_order_acquire)) {
      conn_.shutdown_now(0);  // NO_ERROR: the grace period is over
      close_all();
      break;
    }
    bool drain = w_.shared.draining.load(std::memory_order_acquire);
    if (!drain && server_index(*w_.reader.current()) == SIZE_MAX) drain = true;  // listener gone
    if (!drain && streams_.empty() && Clock::now() - last_active_ >= idle_timeout_) drain = true;
    if (drain && !draining_) {
      draining_ = true;
      conn_.shutdown_graceful();
      wake_writer();
    }
  }
  wake_writer();
}

template <class Stream>
void H2Session<Stream>::on_request(int32_t id, http::Request&& req, bool end_stream) {
  auto st = std::make_shared<H2Stream>(stream_.get_executor());
  st->id = id;
  st->req = std::move(req);
  // How the client reached us, not what it claims in :scheme (Caddy's {scheme} is the same).
  st->req.scheme = info_.tls ? "https" : "http";
  st->body_done = end_stream;
  streams_[id] = st;
  ++live_;
  asio::co_spawn(stream_.get_executor(), serve_stream(st), [this, id](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log::error("h2_stream_failed").kv("conn_id", info_.conn_id).kv("error", ex.what());
      } catch (...) {
      }
      if (auto it = streams_.find(id); it != streams_.end()) {
        conn_.reset_stream(id, 2);  // INTERNAL_ERROR
        wake_writer();
      }
    }
    --live_;
    done_wake_.signal();
  });
}

template <class Stream>
void H2Session<Stream>::on_request_data(int32_t id, std::string_view data) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  it->second->body.append(data);
  it->second->in_wake.signal();
}

template <class Stream>
void H2Session<Stream>::on_request_trailers(int32_t id, http::HeaderMap&& trailers) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  it->second->trailers = std::move(trailers);
}

template <class Stream>
void H2Session<Stream>::on_request_end(int32_t id) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  it->second->body_done = true;
  it->second->in_wake.signal();
}

template <class Stream>
void H2Session<Stream>::on_stream_reset(int32_t id, uint32_t) {
  auto it = streams_.find(id);
  if (it != streams_.end()) it->second->abandon();
}

template <class Stream>
void H2Session<Stream>::on_stream_closed(int32_t id, uint32_t) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  it->second->abandon();
  streams_.erase(it);
}

template <class Stream>
void H2Session<Stream>::on_send_ready(int32_t id) {
  auto it = streams_.find(id);
  if (it != streams_.end()) it->second->out_wake.signal();
}

template <class Stream>
bool H2Session<Stream>::submit_head(H2Stream& st, H2Exchange& x, int status, http::HeaderMap h,
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
  auto r = conn_.submit_response(st.id, head, end_stream);
  wake_writer();
  return r.ok();
}

template <class Stream>
asio::awaitable<bool> H2Session<Stream>::send_body(H2Stream& st, std::string_view data) {
  while (!data.empty()) {
    if (st.gone) co_return false;
    auto n = conn_.send_data(st.id, data);
    if (!n) co_return false;
    if (*n > 0) {
      data.remove_prefix(*n);
      wake_writer();
      continue;
    }
    co_await st.out_wake.wait();  // on_send_ready, or the stream went away
  }
  co_return !st.gone;
}

template <class Stream>
bool H2Session<Stream>::end_response(H2Stream& st, std::optional<http::HeaderMap> trailers) {
  if (st.gone) return false;
  if (trailers && trailers->empty()) trailers.reset();
  auto r = conn_.end_stream(st.id, std::move(trailers));
  wake_writer();
  return r.ok();
}

template <class Stream>
void H2Session<Stream>::reset(H2Stream& st, uint32_t code) {
  if (st.gone) return;
  conn_.reset_stream(st.id, code);
  wake_writer();
}

template <class Stream>
asio::awaitable<void> H2Session<Stream>::serve_stream(std::shared_ptr<H2Stream> sp) {
  H2Stream& st = *sp;
  H2Exchange x;
  x.snap = w_.reader.current();  // kept until this request ends, whatever reloads happen
  x.start = Clock::now();
  x.ts = std::chrono::system_clock::now();
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
            .kv("conn_id", info_.conn_id)
            .kv("token_prefix", token.substr(0, 8))
            .kv("host", r.host)
            .kv("remote_ip", info_.remote_ip)
            .kv("remote_port", static_cast<unsigned>(info_.remote_port))
            .kv("proto", "h2");
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
        if (!st.body_done) reset(st, 0);  // NO_ERROR, as below
        co_return;
      }
    }
  }

  size_t si = server_index(*x.snap);
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
  if (!st.body_done) reset(st, 0);  // NO_ERROR
}

template <class Stream>
asio::awaitable<void> H2Session<Stream>::respond(H2Stream& st, H2Exchange& x,
                                                 engine::RequestCtx& ctx,
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
template <class Stream>
asio::awaitable<void> H2Session<Stream>::pump_body(std::shared_ptr<H2Stream> sp, UpstreamStream& up,
                                                   bool chunked, int64_t max_body,
                                                   Clock::duration write_to,
                                                   std::shared_ptr<int> result) {
  H2Stream& st = *sp;
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
        conn_.consume(st.id, piece.size());
        wake_writer();
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

template <class Stream>
asio::awaitable<void> H2Session<Stream>::proxy(std::shared_ptr<H2Stream> sp, H2Exchange& x,
                                               engine::RequestCtx& ctx, const engine::Decision& d) {
  if (wants_h2(d.proxy->cfg().transport)) {
    bool done = co_await proxy_h2(sp, x, ctx, d);
    if (done) co_return;  // else the upstream chose HTTP/1.1 (ALPN): go on below
  }
  H2Stream& st = *sp;
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

  UpstreamPicker pick(w_, handler, ctx, times, x.start, info_.conn_id, x.snap->generation());
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
      H2Stream& s;
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
    Wakeup pump_done(stream_.get_executor());
    bool pumping = has_body;
    if (has_body) {
      asio::co_spawn(stream_.get_executor(),
                     pump_body(sp, us, chunked_up, d.max_request_body, times.write, pump),
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
    asio::steady_timer header_timer(stream_.get_executor());
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
          .kv("conn_id", info_.conn_id)
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
        reset(st, 2);  // INTERNAL_ERROR, as Go's HTTP/2 server does for a failed handler
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
      .kv("conn_id", info_.conn_id)
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
template <class Stream>
class H2Session<Stream>::AsDownstream final : public Downstream {
 public:
  AsDownstream(H2Session& s, H2Stream& st, H2Exchange& x)
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
    s_.conn_.consume(st_.id, n);
    s_.wake_writer();
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
    auto r = s_.conn_.end_stream(st_.id, std::move(trailers));
    s_.wake_writer();
    co_return r.ok();
  }
  void abort() override { s_.reset(st_, 2); }  // INTERNAL_ERROR, as Go's server does
  std::optional<http::HeaderMap> request_trailers() override { return st_.trailers; }
  asio::awaitable<void> write_error(int status) override {
    http::HeaderMap h;
    h.add("Server", kServerName);
    h.add("Content-Length", "0");
    s_.submit_head(st_, x_, status, std::move(h), true);
    co_return;
  }

 private:
  H2Session& s_;
  H2Stream& st_;
  H2Exchange& x_;
};

template <class Stream>
asio::awaitable<bool> H2Session<Stream>::proxy_h2(std::shared_ptr<H2Stream> sp, H2Exchange& x,
                                                  engine::RequestCtx& ctx,
                                                  const engine::Decision& d) {
  H2Stream& st = *sp;
  AsDownstream down(*this, st, x);
  const bool has_body = !st.body_done || !st.body.empty();
  ProxyOutcome o = co_await proxy_to_h2(w_, down, st.req, has_body, ctx, d, x.start, idle_timeout_,
                                        info_.conn_id, x.snap->generation());
  if (o.use_h1) co_return false;
  x.upstream = std::move(o.upstream);
  x.end_reason = o.end_reason;
  if (o.client_gone) x.status = 499;
  co_return true;
}

}  // namespace

template <class Stream>
asio::awaitable<void> serve_h2(Worker& w, const H2ConnInfo& info, Stream& stream,
                               std::string_view received, H2Upgrade* upgrade) {
  const config::GlobalOptions& g = w.reader.current()->config().global;
  h2::Settings settings;
  settings.max_header_bytes = static_cast<uint32_t>(
      std::clamp<int64_t>(g.max_header_bytes, 1024, std::numeric_limits<int32_t>::max()));
  settings.max_header_count = static_cast<uint32_t>(std::max(1, g.max_header_count));
  H2Session<Stream> session(w, info, stream, settings);
  co_await session.run(received, upgrade);
}

template asio::awaitable<void> serve_h2<beast::tcp_stream>(Worker&, const H2ConnInfo&,
                                                           beast::tcp_stream&, std::string_view,
                                                           H2Upgrade*);
template asio::awaitable<void> serve_h2<TlsStream>(Worker&, const H2ConnInfo&, TlsStream&,
                                                   std::string_view, H2Upgrade*);

}  // namespace hsp::http1
