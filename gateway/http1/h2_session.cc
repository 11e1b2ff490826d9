// One downstream HTTP/2 connection: the socket side of hsp::h2::ServerConnection (the codec,
// gateway/h2/server.h). Each request stream is served by MuxConn::serve_stream (mux_stream.h),
// which HTTP/3 shares; this file holds what is HTTP/2's own.
//
// Coroutines of one connection, all on the worker's thread (so nothing here is locked):
//   reader    socket -> codec.recv(); codec events fill the streams' state and wake them;
//   writer    codec.pending_output() -> socket; woken by whoever queued frames;
//   watchdog  idle timeout, drain (GOAWAY, then open streams finish), the listener going away;
//   streams   one per request (MuxConn::serve_stream), ended before the connection object goes
//             away.

#include "http1/h2_session.h"

#include <algorithm>
#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <limits>
#include <memory>
#include <optional>
#include <unordered_map>

#include "h2/server.h"
#include "http1/h3_endpoint.h"
#include "http1/mux_stream.h"
#include "http1/tls_context.h"
#include "util/log.h"

namespace hsp::http1 {
namespace {

using asio::redirect_error;
using asio::use_awaitable;

constexpr size_t kReadBuffer = 16 * 1024;
constexpr auto kWatchdogTick = std::chrono::milliseconds(250);

template <class Stream>
class H2Session final : public MuxConn, public h2::Handler {
 public:
  H2Session(Worker& w, const H2ConnInfo& info, Stream& stream, h2::Settings settings)
      : MuxConn(w, info.conn_id, info.key, info.remote_ip, info.remote_port, "h2",
                stream.get_executor()),
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

 protected:
  // MuxConn's codec: nghttp2 through h2::ServerConnection; the writer sends what they queue.
  bool codec_submit(int64_t id, const http::ResponseHead& head, bool end_stream) override {
    if (!alt_svc_.empty() && !head.headers.has("Alt-Svc")) {
      http::ResponseHead with = head;
      with.headers.add("Alt-Svc", alt_svc_);
      auto r = conn_.submit_response(static_cast<int32_t>(id), with, end_stream);
      wake_writer();
      return r.ok();
    }
    auto r = conn_.submit_response(static_cast<int32_t>(id), head, end_stream);
    wake_writer();
    return r.ok();
  }
  Result<size_t> codec_send(int64_t id, std::string_view data) override {
    auto n = conn_.send_data(static_cast<int32_t>(id), data);
    if (n && *n > 0) wake_writer();
    return n;
  }
  bool codec_end(int64_t id, std::optional<http::HeaderMap> trailers) override {
    auto r = conn_.end_stream(static_cast<int32_t>(id), std::move(trailers));
    wake_writer();
    return r.ok();
  }
  void codec_reset(int64_t id, StreamError e) override {
    if (e == StreamError::body_not_read) {
      conn_.stop_reading(static_cast<int32_t>(id));  // NO_ERROR after the response is out
    } else {
      conn_.reset_stream(static_cast<int32_t>(id), 2);  // INTERNAL_ERROR (RFC 9113 §7)
    }
    wake_writer();
  }
  void codec_consume(int64_t id, size_t n) override {
    conn_.consume(static_cast<int32_t>(id), n);
    wake_writer();
  }

 private:
  beast::tcp_stream& tcp() { return beast::get_lowest_layer(stream_); }
  asio::awaitable<void> reader();
  asio::awaitable<void> writer();
  asio::awaitable<void> watchdog();
  void wake_writer() { writer_wake_.signal(); }
  void close_all();

  const H2ConnInfo& info_;
  const std::string alt_svc_ = alt_svc_value(info_.key);  // HTTP/3 on this listener, or ""
  Stream& stream_;
  h2::ServerConnection conn_;
  std::unordered_map<int32_t, std::shared_ptr<MuxStream>> streams_;
  Wakeup writer_wake_;
  Wakeup done_wake_;
  int live_ = 0;  // stream coroutines not yet finished
  bool reader_done_ = false;
  bool writer_done_ = false;
  bool watchdog_done_ = false;
  bool closing_ = false;  // the socket is finished: stop everything
  bool draining_ = false;
  Clock::time_point last_active_ = Clock::now();
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
    if (!drain && server_.of(*w_.reader.current(), key_) == SIZE_MAX)
      drain = true;  // listener gone
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
  auto st = std::make_shared<MuxStream>(stream_.get_executor());
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
        codec_reset(id, StreamError::internal);
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
