// HTTP/2 upstream connections (h2_upstream.h): the socket side of hsp::h2::ClientConnection.

#include "http1/h2_upstream.h"

#include <algorithm>
#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "h2/client.h"
#include "http/hop_by_hop.h"
#include "util/log.h"

namespace hsp::http1 {

using asio::redirect_error;
using asio::use_awaitable;

namespace {
constexpr size_t kReadBuffer = 16 * 1024;
// A connection with no stream for this long is closed (GOAWAY): Caddy's idle upstream
// connections live for keepalive_idle (2 minutes) too.
constexpr auto kIdleClose = std::chrono::minutes(2);
}  // namespace

class H2UpstreamConn final : public h2::ClientHandler,
                             public std::enable_shared_from_this<H2UpstreamConn> {
 public:
  H2UpstreamConn(Worker& w, std::string dial, uint64_t id, std::unique_ptr<UpstreamStream> sock)
      : w_(w),
        dial_(std::move(dial)),
        id_(id),
        sock_(std::move(sock)),
        codec_(h2::ClientSettings{}, *this, id),
        writer_wake_(w.ioc->get_executor()) {}

  const std::string& dial() const { return dial_; }
  bool usable() const { return !dead_ && codec_.can_submit(); }
  bool idle() const { return calls_.empty(); }

  void start() {
    auto self = shared_from_this();
    asio::co_spawn(*w_.ioc, reader(), [self](std::exception_ptr) { self->fail_all(); });
    asio::co_spawn(*w_.ioc, writer(), [self](std::exception_ptr) { self->fail_all(); });
  }

  Result<std::shared_ptr<H2CallState>> open(const http::Request& head, bool end_stream,
                                            Wakeup& notify, Wakeup& send_notify) {
    auto id = codec_.submit_request(head, end_stream);
    if (!id) return id.errors();
    auto st = std::make_shared<H2CallState>();
    st->id = *id;
    st->notify = &notify;
    st->send_notify = &send_notify;
    calls_[*id] = st;
    last_used_ = Clock::now();
    wake_writer();
    return st;
  }

  Result<size_t> send_data(int32_t id, std::string_view data) {
    auto r = codec_.send_data(id, data);
    wake_writer();
    return r;
  }
  bool end_stream(int32_t id, std::optional<http::HeaderMap> trailers) {
    auto r = codec_.end_stream(id, std::move(trailers));
    wake_writer();
    return r.ok();
  }
  void consume(int32_t id, size_t n) {
    if (calls_.count(id) == 0) return;
    codec_.consume(id, n);
    wake_writer();
  }
  void cancel(int32_t id) {
    auto it = calls_.find(id);
    if (it == calls_.end()) return;
    it->second->notify = nullptr;  // the exchange is gone
    it->second->send_notify = nullptr;
    codec_.reset_stream(id, 8);  // CANCEL
    wake_writer();
  }

  // h2::ClientHandler
  void on_response_head(int32_t id, int status, http::HeaderMap&& headers,
                        bool end_stream) override {
    if (H2CallState* st = find(id)) {
      st->status = status;
      st->head = std::move(headers);
      if (end_stream) st->ended = true;
      notify(*st);
    }
  }
  void on_response_data(int32_t id, std::string_view data) override {
    if (H2CallState* st = find(id)) {
      st->body.append(data);
      notify(*st);
    }
  }
  void on_response_trailers(int32_t id, http::HeaderMap&& trailers) override {
    if (H2CallState* st = find(id)) st->trailers = std::move(trailers);
  }
  void on_response_end(int32_t id) override {
    if (H2CallState* st = find(id)) {
      st->ended = true;
      notify(*st);
    }
  }
  void on_stream_reset(int32_t id, uint32_t code) override {
    if (H2CallState* st = find(id)) st->error = code;
  }
  void on_stream_refused(int32_t id) override {
    if (H2CallState* st = find(id)) st->refused = true;
  }
  void on_stream_closed(int32_t id, uint32_t code) override {
    auto it = calls_.find(id);
    if (it == calls_.end()) return;
    auto st = it->second;
    calls_.erase(it);
    st->closed = true;
    if (!st->ended && st->error == 0) st->error = code ? code : 2;
    last_used_ = Clock::now();
    notify(*st);
  }
  void on_send_ready(int32_t id) override {
    if (H2CallState* st = find(id)) {
      st->send_ready = true;
      if (st->send_notify) st->send_notify->signal();
    }
  }
  void on_goaway(int32_t last_stream_id, uint32_t code) override {
    log::debug("upstream_h2_goaway")
        .kv("upstream", dial_)
        .kv("upstream_conn_id", id_)
        .kv("last_stream_id", last_stream_id)
        .kv("error_code", code);
  }

 private:
  H2CallState* find(int32_t id) {
    auto it = calls_.find(id);
    return it == calls_.end() ? nullptr : it->second.get();
  }
  static void notify(H2CallState& st) {
    if (st.notify) st.notify->signal();
    if (st.closed && st.send_notify) st.send_notify->signal();
  }
  void wake_writer() { writer_wake_.signal(); }

  // The connection is finished: every open call learns it (a request whose HEADERS never left
  // may be retried elsewhere).
  void fail_all() {
    if (dead_ && calls_.empty()) return;
    dead_ = true;
    auto calls = std::move(calls_);
    calls_.clear();
    for (auto& [id, st] : calls) {
      if (!codec_.request_sent(id)) st->refused = true;
      st->closed = true;
      if (!st->ended && st->error == 0) st->error = 2;  // INTERNAL_ERROR
      notify(*st);
    }
    error_code ignored;
    sock_->socket().cancel(ignored);
    wake_writer();
  }

  asio::awaitable<void> reader() {
    auto self = shared_from_this();
    std::array<char, kReadBuffer> buf;
    error_code ec;
    while (!dead_) {
      sock_->expires_never();
      size_t n =
          co_await sock_->async_read_some(asio::buffer(buf), redirect_error(use_awaitable, ec));
      if (ec) break;
      auto r = codec_.recv(std::string_view(buf.data(), n));
      wake_writer();
      if (!r) {
        log::debug("upstream_h2_error")
            .kv("upstream", dial_)
            .kv("upstream_conn_id", id_)
            .kv("error", r.errors().empty() ? std::string() : r.errors().front().message);
        break;
      }
    }
    if (ec && ec != asio::error::operation_aborted) {
      log::debug("upstream_h2_closed")
          .kv("upstream", dial_)
          .kv("upstream_conn_id", id_)
          .kv("error", ec.message());
    }
    fail_all();
  }

  asio::awaitable<void> writer() {
    auto self = shared_from_this();
    asio::steady_timer idle_check(*w_.ioc);
    std::string out;
    error_code ec;
    while (!dead_) {
      std::string_view pending = codec_.pending_output();
      if (!pending.empty()) {
        out.assign(pending);
        codec_.consume_output(pending.size());
        sock_->expires_after(std::chrono::seconds(30));
        co_await asio::async_write(*sock_, asio::buffer(out), redirect_error(use_awaitable, ec));
        if (ec) break;
        continue;
      }
      if (!codec_.want_read() && !codec_.want_write()) break;
      if (calls_.empty() && Clock::now() - last_used_ >= kIdleClose) {
        codec_.shutdown();
        dead_ = true;  // no new calls; the GOAWAY still goes out below
        continue;
      }
      co_await writer_wake_.wait_until(Clock::now() + kIdleClose);
    }
    if (!ec) {
      // Flush what is left (a GOAWAY) before closing.
      std::string_view pending = codec_.pending_output();
      if (!pending.empty()) {
        out.assign(pending);
        codec_.consume_output(pending.size());
        sock_->expires_after(std::chrono::seconds(2));
        co_await asio::async_write(*sock_, asio::buffer(out), redirect_error(use_awaitable, ec));
      }
    }
    fail_all();
    sock_->socket().shutdown(tcp::socket::shutdown_both, ec);
    sock_->socket().close(ec);
  }

  Worker& w_;
  std::string dial_;
  uint64_t id_;
  std::unique_ptr<UpstreamStream> sock_;
  h2::ClientConnection codec_;
  Wakeup writer_wake_;
  std::unordered_map<int32_t, std::shared_ptr<H2CallState>> calls_;
  Clock::time_point last_used_ = Clock::now();
  bool dead_ = false;
};

// The worker's HTTP/2 upstream connections, by dial address.
struct H2UpstreamPool {
  // By upstream_pool_key(): the dial address, plus generation and name for TLS.
  std::unordered_map<std::string, std::vector<std::shared_ptr<H2UpstreamConn>>> conns;
  // Pool keys whose upstream chose HTTP/1.1 over TLS: requests go straight to that path.
  std::unordered_set<std::string> h1_only;
  uint64_t next_id = 1;
};

H2Call::~H2Call() {
  if (conn_ && st_ && !st_->closed) conn_->cancel(st_->id);
}

asio::awaitable<bool> H2Call::send(std::string_view data, const std::function<bool()>& gone) {
  while (!data.empty()) {
    if (gone() || st_->closed) co_return false;
    auto n = conn_->send_data(st_->id, data);
    if (!n) co_return false;
    if (*n > 0) {
      data.remove_prefix(*n);
      continue;
    }
    st_->send_ready = false;
    while (!st_->send_ready && !st_->closed && !gone()) co_await st_->send_notify->wait();
  }
  co_return true;
}

bool H2Call::finish(std::optional<http::HeaderMap> trailers) {
  if (st_->closed) return false;
  return conn_->end_stream(st_->id, std::move(trailers));
}

void H2Call::consume(size_t n) {
  if (!st_->closed) conn_->consume(st_->id, n);
}

void H2Call::cancel() {
  if (!conn_ || !st_) return;
  if (!st_->closed) conn_->cancel(st_->id);
  st_->closed = true;
}

bool wants_h2(const config::HttpTransport& t) {
  return config::upstream_proto(t) != config::UpstreamProto::h1;
}

asio::awaitable<Result<H2Call>> h2_upstream_call(Worker& w, const H2Target& target,
                                                 const http::Request& head, bool end_stream,
                                                 Wakeup& notify, Wakeup& send_notify,
                                                 H2OpenError& why, error_code& dial_error) {
  const engine::UpstreamHost& up = target.up;
  const config::HttpTransport& tr = target.transport;
  if (!w.h2_upstreams) w.h2_upstreams = std::make_shared<H2UpstreamPool>();
  const std::string key = upstream_pool_key(tr, up, target.generation);
  if (w.h2_upstreams->h1_only.count(key)) {
    why = H2OpenError::speaks_h1;
    co_return Error{{}, "upstream speaks HTTP/1.1"};
  }
  auto& list = w.h2_upstreams->conns[key];
  std::erase_if(list, [](const auto& c) { return !c->usable() && c->idle(); });
  for (auto& c : list) {
    if (!c->usable()) continue;
    auto st = c->open(head, end_stream, notify, send_notify);
    if (st) co_return H2Call(c, std::move(*st));
  }
  auto sock = std::make_unique<UpstreamStream>(w.ioc->get_executor());
  dial_error = co_await dial(up, target.dial_timeout, sock->tcp());
  if (dial_error) {
    why = H2OpenError::dial;
    co_return Error{{}, "dial " + up.dial() + ": " + dial_error.message()};
  }
  if (tr.tls) {
    // Go's transport offers h2 and http/1.1 unless versions excludes 1.1.
    bool with_h1 = tr.versions.empty() ||
                   std::find(tr.versions.begin(), tr.versions.end(), "1.1") != tr.versions.end();
    static const std::vector<std::string> kBoth = {"h2", "http/1.1"};
    static const std::vector<std::string> kH2 = {"h2"};
    std::string alpn;
    bool ok =
        co_await upstream_tls_handshake(w, *sock, up, tr, with_h1 ? kBoth : kH2, target.generation,
                                        target.dial_timeout, target.conn_id, alpn);
    if (!ok) {
      why = H2OpenError::tls;
      co_return Error{{}, "TLS handshake with " + up.dial() + " failed"};
    }
    if (alpn != "h2") {
      if (!with_h1) {
        log::warn("upstream_no_h2")
            .kv("conn_id", target.conn_id)
            .kv("upstream", up.dial())
            .kv("alpn", alpn);
        why = H2OpenError::no_h2;
        co_return Error{{}, "upstream " + up.dial() + " does not offer h2"};
      }
      // Remembered for this generation; the connection serves the HTTP/1.1 path's next take.
      w.h2_upstreams->h1_only.insert(key);
      w.pool.put(key, std::move(sock), HostConnToken(),
                 static_cast<size_t>(std::max(0, tr.keepalive_idle_conns_per_host)),
                 static_cast<size_t>(std::max(0, tr.keepalive_idle_conns)));
      why = H2OpenError::speaks_h1;
      co_return Error{{}, "upstream speaks HTTP/1.1"};
    }
  }
  auto conn =
      std::make_shared<H2UpstreamConn>(w, up.dial(), w.h2_upstreams->next_id++, std::move(sock));
  conn->start();
  // The pool may have changed while we dialled (the list reference too).
  w.h2_upstreams->conns[key].push_back(conn);
  auto st = conn->open(head, end_stream, notify, send_notify);
  if (!st) {
    why = H2OpenError::refused;
    co_return st.errors();
  }
  co_return H2Call(conn, std::move(*st));
}

asio::awaitable<ProxyOutcome> proxy_to_h2(Worker& w, Downstream& down, http::Request& r,
                                          bool has_body, engine::RequestCtx& ctx,
                                          const engine::Decision& d, Clock::time_point start,
                                          Clock::duration idle_timeout, uint64_t conn_id,
                                          uint64_t generation) {
  ProxyOutcome out;
  const engine::ProxyHandler& handler = *d.proxy;
  const config::ReverseProxy& rp = handler.cfg();
  const ProxyTimes times(rp, idle_timeout);
  const bool trusted = handler.peer_trusted(r);
  http::HeaderMap base = r.headers;
  http::strip_request_hop_by_hop(base);
  engine::set_forwarded_headers(r, trusted, base);
  const bool body_expected_method = r.method != "HEAD";

  UpstreamPicker pick(w, handler, ctx, times, start, conn_id, generation);
  int refusals = 0;
  for (;;) {
    engine::UpstreamHost* up = co_await pick.choose();
    out.upstream = pick.last_dial();
    if (down.gone()) {
      pick.set_fail(Fail::client_closed);
      break;
    }
    if (!up) break;

    http::Request head;
    head.method = r.method;
    head.scheme = rp.transport.tls ? "https" : "http";
    head.path = r.path;
    head.query = r.query;
    http::HeaderMap fields = base;
    handler.apply_header_up(ctx, fields);
    head.authority = r.authority.empty() ? up->dial() : r.authority;
    if (const std::string* h = fields.get("Host")) {
      head.authority = *h;
      fields.remove("Host");
    }
    head.headers = std::move(fields);

    error_code dial_ec;
    H2OpenError why = H2OpenError::none;
    const H2Target target{*up, rp.transport, generation, times.dial, conn_id};
    auto call = co_await h2_upstream_call(w, target, head, !has_body, down.response_wake,
                                          down.request_wake, why, dial_ec);
    if (!call) {
      if (why == H2OpenError::speaks_h1) {
        out.use_h1 = true;
        co_return out;
      }
      if (why == H2OpenError::dial || why == H2OpenError::tls) {
        if (why == H2OpenError::dial) {
          log::debug("upstream_dial_failed")
              .kv("conn_id", conn_id)
              .kv("upstream", up->dial())
              .kv("error", dial_ec.message());
        }
        Fail f = is_timeout(dial_ec) ? Fail::dial_timeout : Fail::dial_refused;
        if (co_await pick.dial_failed(up, f)) continue;
      } else {
        pick.set_fail(Fail::upstream_reset);
      }
      break;
    }
    H2Call& c = *call;
    H2CallState& us = c.state();
    const Clock::time_point attempt_start = Clock::now();
    up->begin_request();
    struct EndRequest {
      engine::UpstreamHost* h;
      ~EndRequest() { h->end_request(); }
    } end_request{up};

    // The request body goes up from a second coroutine. pump_result: 0 running, 1 done,
    // -1 client failed, -2 upstream stream gone, -3 over max_size.
    bool pumping = has_body;
    int pump_result = has_body ? 0 : 1;
    Wakeup pump_done(w.ioc->get_executor());
    // Declared at this level: the coroutine refers to the closure, which must outlive it
    // (stop_pump() below waits for the coroutine before the iteration ends).
    const std::function<bool()> client_gone = [&down] { return down.gone(); };
    auto pump = [&]() -> asio::awaitable<void> {
      std::string piece;
      uint64_t uploaded = 0;
      for (;;) {
        piece.clear();
        Downstream::Read got = co_await down.read_body(piece);
        if (pump_result != 0) co_return;  // stopped meanwhile
        if (got == Downstream::Read::failed) {
          pump_result = -1;
          c.cancel();
          down.response_wake.signal();
          co_return;
        }
        if (got == Downstream::Read::end) break;
        uploaded += piece.size();
        if (d.max_request_body >= 0 && uploaded > static_cast<uint64_t>(d.max_request_body)) {
          pump_result = -3;
          c.cancel();
          down.response_wake.signal();
          co_return;
        }
        bool sent = co_await c.send(piece, client_gone);
        if (!sent) {
          if (pump_result == 0) pump_result = down.gone() ? -1 : -2;
          co_return;
        }
        down.body_forwarded(piece.size());
      }
      c.finish(down.request_trailers());
      pump_result = 1;
    };
    if (has_body) {
      asio::co_spawn(*w.ioc, pump(), [&](std::exception_ptr) {
        pumping = false;
        pump_done.signal();
      });
    }
    auto stop_pump = [&]() -> asio::awaitable<void> {
      if (pump_result == 0) pump_result = 2;  // stopped by us
      down.request_wake.signal();
      while (pumping) co_await pump_done.wait();
    };

    // The response head (response_header_timeout, else the read timeout, bounds the wait).
    Clock::time_point head_deadline =
        Clock::now() + (times.header.count() > 0 ? times.header : times.read);
    bool timed_out = false;
    while (!us.status && !us.closed && !down.gone() && pump_result >= 0) {
      if (!co_await down.response_wake.wait_until(head_deadline)) {
        timed_out = true;
        break;
      }
    }
    if (!us.status) {
      const bool refused = us.refused && pump_result >= 0;
      const int pumped = pump_result;
      c.cancel();
      co_await stop_pump();
      if (pumped == -3) {
        pick.set_fail(Fail::too_large);
      } else if (down.gone() || pumped == -1) {
        pick.set_fail(Fail::client_closed);
      } else if (refused && !has_body && ++refusals <= 2) {
        continue;  // nothing happened upstream: try again (another or a new connection)
      } else if (timed_out) {
        pick.set_fail(Fail::upstream_timeout);
        pick.count_failure(up);
      } else {
        pick.set_fail(Fail::upstream_reset);
        pick.count_failure(up);
      }
      log::debug("upstream_response_failed")
          .kv("conn_id", conn_id)
          .kv("upstream", up->dial())
          .kv("error_code", us.error);
      break;
    }

    const int status = *us.status;
    ctx.response_status = status;
    pick.check_response(up, status, attempt_start);
    http::HeaderMap h =
        downstream_response_fields(d, handler, ctx, *up, status, std::move(us.head), {});
    const bool body_expected = body_expected_method && status_has_body(status);
    const bool more = !us.ended || !us.body.empty() || us.trailers;
    if (!co_await down.write_head(status, std::move(h), !more)) {
      c.cancel();
      co_await stop_pump();
      out.end_reason = "client_closed";
      co_return out;
    }
    // The body and trailers, each piece as soon as it arrived.
    bool ok = true;
    while (more) {
      if (down.gone()) {
        ok = false;
        out.end_reason = "client_closed";
        break;
      }
      if (!us.body.empty()) {
        std::string piece;
        piece.swap(us.body);
        // No co_await inside && or ||: GCC 12 miscompiles the temporaries of a co_await in a
        // short-circuit operand (the awaitable's frame is freed twice).
        if (body_expected) {
          bool written = co_await down.write_body(piece);
          if (!written) continue;  // the client is gone: see above
        }
        c.consume(piece.size());
        continue;
      }
      if (us.ended) break;
      if (us.closed) {
        ok = false;
        out.end_reason = "upstream_reset";
        break;
      }
      if (!co_await down.response_wake.wait_until(Clock::now() + times.read)) {
        ok = false;
        out.end_reason = "upstream_timeout";
        break;
      }
    }
    if (more && ok) {
      if (!co_await down.finish(std::move(us.trailers))) out.end_reason = "client_closed";
    } else if (more && !down.gone()) {
      down.abort();
      pick.count_failure(up);
    }
    if (!ok) c.cancel();
    co_await stop_pump();
    co_return out;
  }

  // No response from any upstream.
  const Fail fail = pick.fail();
  out.end_reason = fail_reason(fail);
  log::debug("proxy_failed")
      .kv("conn_id", conn_id)
      .kv("reason", out.end_reason)
      .kv("upstream", out.upstream);
  if (fail == Fail::client_closed || down.gone()) {
    out.client_gone = true;
    co_return out;
  }
  co_await down.write_error(fail_status(fail));
  co_return out;
}

}  // namespace hsp::http1
