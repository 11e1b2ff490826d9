// Private to gateway/http1/: the request streams of a multiplexed downstream connection, shared
// by HTTP/2 (h2_session.cc) and HTTP/3 (h3_endpoint.cc). A stream is one request; its coroutine
// (MuxConn::serve_stream) routes it through the snapshot current when its head arrived and
// answers it directly or through an upstream: HTTP/1.1 here (proxy_common.h picks the upstream
// and builds the heads, as for HTTP/1.1 clients), HTTP/2 through proxy_to_h2() (h2_upstream.h)
// with this stream as its Downstream.
//
// What differs between the protocols is the codec underneath (framing, flow control, how a
// stream is reset): a connection class derives from MuxConn and implements the codec_* calls;
// everything a request does between its head and its end is here, once.
//
// Back-pressure, both directions, with bounded memory per stream: request body bytes are
// copied out of the codec into the stream's queue and written upstream by a pump coroutine;
// the client's window is re-opened (codec_consume) only for bytes written upstream, so the
// queue never holds more than the stream window. Response body bytes are read from the
// upstream only when the codec accepted the previous piece (codec_send), which it does as the
// client's window allows (the connection wakes the stream's out_wake when there is room).
//
// A client that resets a stream (or goes away) cancels that stream's upstream exchange; the
// other streams keep going. Trailers go both ways (an HTTP/1.1 upstream gets the client's in
// its chunked request body, and its own come back as trailers). Known gap: a 101 from an
// upstream answers 502 (no extended CONNECT, so no WebSocket over HTTP/2 or HTTP/3 yet).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "http1/access_log.h"
#include "http1/proxy_common.h"
#include "http1/worker.h"

namespace hsp::http1 {

// One request stream as the connection (codec events) and its coroutine share it.
struct MuxStream {
  explicit MuxStream(const asio::any_io_executor& ex) : in_wake(ex), out_wake(ex) {}
  int64_t id = 0;
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

  void abandon();
};

// What one exchange reports to the access log.
struct MuxExchange : ExchangeLog {
  engine::SnapshotPtr snap;
};

// Why a stream is reset by the server.
enum class StreamError {
  // The response is complete (or was refused) and the request body will not be read: the
  // client should stop sending it (HTTP/2: RST_STREAM NO_ERROR, RFC 9113 §8.1; HTTP/3:
  // STOP_SENDING H3_NO_ERROR, RFC 9114 §4.1.1). The response itself is not cut.
  body_not_read,
  // The response cannot be completed (the upstream failed mid-body): both directions end
  // (HTTP/2 INTERNAL_ERROR, HTTP/3 H3_INTERNAL_ERROR), so the client never takes it for whole.
  internal,
};

// A downstream connection that carries many streams.
class MuxConn {
 public:
  // `proto`: "h2" or "h3", for logs.
  MuxConn(Worker& w, uint64_t conn_id, ListenerKey key, std::string remote_ip, uint16_t remote_port,
          const char* proto, asio::any_io_executor ex);
  virtual ~MuxConn() = default;
  MuxConn(const MuxConn&) = delete;
  MuxConn& operator=(const MuxConn&) = delete;

  // Serves one request until it ends (and is logged). Never throws on the request's account.
  asio::awaitable<void> serve_stream(std::shared_ptr<MuxStream> st);

 protected:
  // The codec underneath. Each returns false / an error when the stream is gone, and makes
  // sure what it queued gets written.
  virtual bool codec_submit(int64_t id, const http::ResponseHead& head, bool end_stream) = 0;
  virtual Result<size_t> codec_send(int64_t id, std::string_view data) = 0;
  virtual bool codec_end(int64_t id, std::optional<http::HeaderMap> trailers) = 0;
  virtual void codec_reset(int64_t id, StreamError e) = 0;
  virtual void codec_consume(int64_t id, size_t n) = 0;

  Worker& w_;
  const uint64_t conn_id_;
  const ListenerKey key_;
  const std::string remote_ip_;
  const uint16_t remote_port_;
  const char* const proto_;
  const asio::any_io_executor ex_;
  Clock::duration idle_timeout_ = std::chrono::minutes(5);
  ServerIndexCache server_;

 private:
  asio::awaitable<void> respond(MuxStream& st, MuxExchange& x, engine::RequestCtx& ctx,
                                const engine::Decision& d);
  asio::awaitable<void> proxy(std::shared_ptr<MuxStream> sp, MuxExchange& x,
                              engine::RequestCtx& ctx, const engine::Decision& d);
  // False when the upstream chose HTTP/1.1 over TLS and nothing happened yet.
  asio::awaitable<bool> proxy_h2(std::shared_ptr<MuxStream> sp, MuxExchange& x,
                                 engine::RequestCtx& ctx, const engine::Decision& d);
  class AsDownstream;
  asio::awaitable<void> pump_body(std::shared_ptr<MuxStream> st, UpstreamStream& up, bool chunked,
                                  int64_t max_body, Clock::duration write_to,
                                  std::shared_ptr<int> result);
  // Submits a response head; false when the stream is gone.
  bool submit_head(MuxStream& st, MuxExchange& x, int status, http::HeaderMap h, bool end_stream);
  // Queues body bytes as the client's window allows; false when the stream went away.
  asio::awaitable<bool> send_body(MuxStream& st, std::string_view data);
  bool end_response(MuxStream& st, std::optional<http::HeaderMap> trailers = {});
  void reset(MuxStream& st, StreamError e);
};

}  // namespace hsp::http1
