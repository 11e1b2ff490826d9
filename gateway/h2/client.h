// The HTTP/2 client codec: one nghttp2 1.52 client session per upstream connection, with no I/O
// of its own, the mirror of h2/server.h. Bytes in, bytes out, events out: the data plane owns
// the socket (h2c with prior knowledge, or TLS after ALPN chose "h2"), the connection pool and
// the downstream side; this class owns framing, HPACK, flow control and stream bookkeeping.
//
// How the data plane drives it (one connection, one strand/thread; not thread-safe):
//
//   ClientConnection conn(settings, handler);       // queues the preface + SETTINGS
//   if (conn.can_submit()) id = conn.submit_request(req, end_stream);
//   loop:
//     while (!conn.pending_output().empty()):        // bounded: at most output_buffer_bytes
//       n = write(socket, conn.pending_output()); conn.consume_output(n);
//     if (!conn.want_read() && !conn.want_write()) close the socket;
//     bytes = read(socket);  (EOF: every open stream failed; see request_sent())
//     if (!conn.recv(bytes)) { flush pending_output() once more, then close }
//   Every call into the codec (submit_request, send_data, end_stream, consume, reset_stream,
//   ping, shutdown) may queue frames: flush pending_output() after them too.
//
// Requests: the pseudo-header fields come from Request::method, ::scheme ("http" if empty),
// ::authority (else the host field) and ::uri() (path?query). Field names are lower-cased;
// connection-specific fields (RFC 9113 §8.2.2), those the Connection field nominates, Host and
// HTTP2-Settings are dropped; `te` is kept only as "te: trailers" (gRPC needs it).
//
// Flow control and bounded memory, both ways:
// - Request bodies are pushed with send_data(), which accepts at most the stream's free buffer
//   space (stream_buffer_bytes); nghttp2 takes them only as the server's windows allow, and
//   Handler::on_send_ready says when there is room again. A server that never opens its window
//   costs at most stream_buffer_bytes per stream plus output_buffer_bytes.
// - Response bodies are handed out without copying; a stream's receive window is re-opened only
//   when the caller calls consume() (it forwarded the bytes downstream), so a slow client slows
//   the upstream down. The connection window re-opens on receipt so that one stalled stream does
//   not block the others; the bound is max_concurrent_streams x initial_window_size.
//
// Streams the server never processed are reported as refused (Handler::on_stream_refused):
// those above the last stream id of a GOAWAY (RFC 9113 §6.8), those reset with REFUSED_STREAM
// before any response (§8.7), and requests nghttp2 could not send any more after a GOAWAY. The
// data plane may retry them on another connection, whatever their method.
//
// Response heads are checked by nghttp2's HTTP messaging rules (:status present and valid, no
// connection-specific fields, content-length vs DATA) and counted against max_header_bytes
// (RFC 7541 §4.1 sizes, advertised as MAX_HEADER_LIST_SIZE): over it the stream is cancelled
// and closes without a head. Server push is disabled (SETTINGS_ENABLE_PUSH 0).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "h2/output_buffer.h"
#include "http/message.h"
#include "util/error.h"

struct nghttp2_session;

namespace hsp::h2 {

struct ClientSettings {
  // Our own cap on concurrent streams per connection; the server's MAX_CONCURRENT_STREAMS
  // lowers it (before the server's SETTINGS arrive, this value is assumed for the server too).
  uint32_t max_concurrent_streams = 100;
  // Response header-list limit (RFC 7541 §4.1 sizes), advertised as MAX_HEADER_LIST_SIZE.
  uint32_t max_header_bytes = 64 * 1024;
  uint32_t max_header_count = 200;                // fields per response head or trailer block
  uint32_t initial_window_size = 64 * 1024;       // per stream, response bodies
  uint32_t connection_window_size = 1024 * 1024;  // whole connection, response bodies
  uint32_t max_frame_size = 16 * 1024;
  size_t output_buffer_bytes = 64 * 1024;  // cap of pending_output()
  size_t stream_buffer_bytes = 64 * 1024;  // request body bytes held per stream
  size_t max_continuations = 8;            // CVE-2024-28182, the server's guard both ways
  size_t max_outbound_ack = 1000;          // SETTINGS/PING ACK queue (CVE-2019-9512/9515)
};

// The data plane's side. Calls come from inside ClientConnection::recv() (on_send_ready from
// pending_output(); on_stream_refused/on_stream_closed for unsendable requests also from
// pending_output()). A handler may call back into the connection from any event, but must not
// destroy it there.
class ClientHandler {
 public:
  virtual ~ClientHandler() = default;
  // A final response head (1xx interim heads go to on_informational). `end_stream`: there is
  // no body, and no on_response_end follows.
  virtual void on_response_head(int32_t stream_id, int status, http::HeaderMap&& headers,
                                bool end_stream) = 0;
  // A 1xx interim response (100 Continue, 103 Early Hints); a final head follows.
  virtual void on_informational(int32_t /*stream_id*/, int /*status*/,
                                http::HeaderMap&& /*headers*/) {}
  // Response body bytes; valid only during the call. Call ClientConnection::consume(id, n) once
  // they are forwarded (back-pressure: the server's window opens only then).
  virtual void on_response_data(int32_t stream_id, std::string_view data) = 0;
  // Trailers (grpc-status); on_response_end follows.
  virtual void on_response_trailers(int32_t stream_id, http::HeaderMap&& trailers) = 0;
  virtual void on_response_end(int32_t stream_id) = 0;  // END_STREAM received
  // RST_STREAM from the server.
  virtual void on_stream_reset(int32_t stream_id, uint32_t error_code) = 0;
  // The server did not process this request (see the file comment): safe to retry elsewhere.
  // on_stream_closed follows.
  virtual void on_stream_refused(int32_t /*stream_id*/) {}
  // The stream is gone (completed, reset either way, refused, or the session ended); called for
  // every stream submit_request opened. A stream closed without on_response_end did not
  // complete. No call into the connection for this id after this.
  virtual void on_stream_closed(int32_t stream_id, uint32_t error_code) = 0;
  // GOAWAY from the server: no new requests on this connection; streams above last_stream_id
  // are refused right after this call, those at or below it may still complete.
  virtual void on_goaway(int32_t /*last_stream_id*/, uint32_t /*error_code*/) {}
  // send_data() has room again on this stream.
  virtual void on_send_ready(int32_t /*stream_id*/) {}
  // The ACK of a ping() arrived (keepalive: the connection is alive).
  virtual void on_ping_ack() {}
};

class ClientConnection {
 public:
  ClientConnection(ClientSettings settings, ClientHandler& handler, uint64_t conn_id = 0);
  ~ClientConnection();
  ClientConnection(const ClientConnection&) = delete;
  ClientConnection& operator=(const ClientConnection&) = delete;

  // Feeds received bytes (all of them are processed). An error means the connection is
  // finished: flush pending_output() (it may hold a GOAWAY) and close; open streams have not
  // completed.
  Result<size_t> recv(std::string_view bytes);

  // Serialized frames to write, at most output_buffer_bytes plus one frame; more is produced
  // once it has all been consumed. The view stays valid until the next call into the
  // connection.
  std::string_view pending_output();
  void consume_output(size_t n);

  bool want_read() const;
  bool want_write() const;

  // Whether a new request may be submitted now: no GOAWAY received or sent, stream ids left,
  // and available_streams() > 0.
  bool can_submit() const;
  // Streams that can still be opened before the concurrency limit (the server's
  // MAX_CONCURRENT_STREAMS, capped by ClientSettings::max_concurrent_streams) is reached.
  size_t available_streams() const;

  // Opens a stream with the request head; `end_stream`: no body follows. Returns the stream id.
  // An error when the connection cannot take a new stream (GOAWAY, ids exhausted, CONNECT).
  Result<int32_t> submit_request(const http::Request& request, bool end_stream);
  // Appends request body bytes; returns how many were accepted (0 when the stream buffer is
  // full: wait for on_send_ready). Error if the stream is gone or its body already ended.
  Result<size_t> send_data(int32_t stream_id, std::string_view data);
  size_t send_capacity(int32_t stream_id) const;
  // Ends the request after the buffered body; with trailers if given.
  Result<bool> end_stream(int32_t stream_id, std::optional<http::HeaderMap> trailers = {});
  // Response body bytes handed to the handler are forwarded: reopen the server's window.
  void consume(int32_t stream_id, size_t n);
  // Cancels a stream (the downstream client went away): RST_STREAM, then on_stream_closed.
  void reset_stream(int32_t stream_id, uint32_t error_code);
  // Whether the request's HEADERS frame left this codec (went into pending_output()). After a
  // connection loss, a stream whose request was never sent may be retried elsewhere.
  bool request_sent(int32_t stream_id) const;

  // Keepalive: queues a PING; Handler::on_ping_ack when answered. False if it cannot be sent.
  bool ping();
  // Graceful close from our side (pool shrinking, idle): GOAWAY(NO_ERROR); open streams run to
  // completion, no new ones; want_read()/want_write() go false when they are done.
  void shutdown();

  std::optional<uint32_t> goaway_received() const { return goaway_error_; }
  size_t open_streams() const { return streams_.size(); }

 private:
  struct Stream;
  friend struct ClientCallbacks;

  Stream* find(int32_t stream_id) const;
  void fill_output();
  void notify_send_ready();
  void close_stream(int32_t stream_id, uint32_t error_code, bool refused);

  ClientSettings settings_;
  ClientHandler& handler_;
  uint64_t conn_id_;
  nghttp2_session* session_ = nullptr;
  std::unordered_map<int32_t, std::unique_ptr<Stream>> streams_;
  detail::OutputBuffer out_;
  std::vector<int32_t> ready_;     // streams whose send buffer drained (on_send_ready)
  std::vector<int32_t> not_sent_;  // requests nghttp2 dropped unsent (refused)
  std::optional<uint32_t> goaway_error_;
  bool goaway_sent_ = false;
};

}  // namespace hsp::h2
