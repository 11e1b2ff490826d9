// The HTTP/2 server codec: one nghttp2 1.52 server session per downstream connection, with no
// I/O of its own. Bytes in, bytes out, events out: the data plane owns the socket (TLS or h2c)
// and the upstream side, this class owns framing, HPACK, flow control and the protocol guards.
//
// How the data plane drives it (one connection, one strand/thread; the class is not
// thread-safe):
//
//   ServerConnection conn(settings, handler);      // queues the server preface (SETTINGS)
//   loop:
//     while (!conn.pending_output().empty()):       // bounded: at most output_buffer_bytes
//       n = write(socket, conn.pending_output()); conn.consume_output(n);
//     if (!conn.want_read() && !conn.want_write()) close the socket;   // GOAWAY done, drained
//     bytes = read(socket);  (EOF: close)
//     if (!conn.recv(bytes)) { flush pending_output() once more, then close }
//   Any call into the codec from the handler's side (submit_response, send_data, end_stream,
//   consume, reset_stream, shutdown) may queue frames: the loop must flush pending_output()
//   after them too (an Asio implementation wakes its writer).
//
// Requests as the engine sees them: :authority (else the host field) becomes
// Request::authority and the host field is dropped, as HTTP/1 keeps Host out of the fields;
// split cookie fields are joined with "; " (RFC 9113 §8.2.3); version is 20. CONNECT gets a 501
// (no tunnels yet), an oversized head a 431, both answered here without reaching the handler.
//
// Events are delivered from recv(), after nghttp2 has processed the whole read: a stream whose
// head and RST_STREAM (or malformation) arrive in the same read never reaches the handler, so a
// rapid-reset burst written at once starts no upstream work. Spread over many reads, at most
// Settings::reset_burst requests get through before the codec stops opening streams and
// nghttp2 sends GOAWAY. Body bytes arriving in the same read as their head are copied once
// (bounded by the stream window); later ones are handed out without copying.
// Request bodies are handed out without copying and are flow-controlled by the handler: the
// stream's receive window is only re-opened when the handler calls consume(), so a slow upstream
// slows the client down instead of filling memory (connection-level window is re-opened on receipt,
// so one stalled stream cannot block the others; the bound is max_concurrent_streams x
// initial_window_size). Response bodies are pushed with send_data(), which accepts at most the
// stream's free buffer space (stream_buffer_bytes); the codec hands them to nghttp2 only as the
// peer's window allows and calls Handler::on_send_ready when room is available again, so a client
// that never reads (zero window) costs at most stream_buffer_bytes per stream plus
// output_buffer_bytes.
//
// Protocol guards (reliability matrix B.5): nghttp2's HTTP messaging checks stay on (RFC 9113
// §8.2.1/§8.2.2/§8.3 malformed requests, content-length vs DATA: RST_STREAM PROTOCOL_ERROR,
// never a request event); this codec re-checks field names and values itself so that nothing
// with CR/LF/NUL, upper case or a connection-specific field can reach an HTTP/1 upstream even
// if an nghttp2 option changes. Header lists are counted as RFC 7541 §4.1 sizes against
// max_header_bytes (431, HPACK bomb); Debian's backported rapid-reset limiter and
// CONTINUATION cap are set; streams over max_concurrent_streams get REFUSED_STREAM while our
// SETTINGS are unacknowledged. Known deviation (nghttp2's, shared with nghttpx): once the client
// has acknowledged the limit, a HEADERS past it is a connection error (GOAWAY PROTOCOL_ERROR,
// the connection ends with its accepted streams) where RFC 9113 §5.1.2 asks for a stream error
// on the excess stream only. It costs a misbehaving client its connection, never the server
// more work than the limit; nghttp2 offers no option to make it a stream error.
#pragma once

#include <chrono>
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

struct Settings {
  uint32_t max_concurrent_streams = 100;
  // Header-list limit (RFC 7541 §4.1 sizes: name + value + 32 per field); the same limit as
  // HTTP/1's (config::ServerOptions max_header_bytes). Advertised as MAX_HEADER_LIST_SIZE and
  // enforced on receipt: over it the request gets a 431 and never reaches the handler.
  uint32_t max_header_bytes = 32 * 1024;
  uint32_t max_header_count = 100;                // fields per request head, as HTTP/1 (431 beyond)
  uint32_t initial_window_size = 64 * 1024;       // per stream, request bodies
  uint32_t connection_window_size = 1024 * 1024;  // whole connection, request bodies
  uint32_t max_frame_size = 16 * 1024;
  size_t output_buffer_bytes = 64 * 1024;  // cap of pending_output()
  size_t stream_buffer_bytes = 64 * 1024;  // response body bytes held per stream
  // CVE-2023-44487: RST_STREAM token bucket (nghttp2's defaults are 1000 / 33 per second; a
  // smaller burst bounds the upstream work a rapid-reset burst can start).
  uint64_t reset_burst = 200;
  uint64_t reset_rate_per_sec = 33;
  // SETTINGS and PING frames (not ACKs) each make us queue an ACK; a peer that sends them
  // faster than this (token bucket) gets GOAWAY ENHANCE_YOUR_CALM (CVE-2019-9512/9515). nghttp2's
  // own guard (max_outbound_ack) only trips when the ACKs cannot be written, which a loopback
  // or fast link's socket buffers hide.
  uint64_t control_burst = 1000;
  uint64_t control_rate_per_sec = 100;
  size_t max_continuations = 8;    // CVE-2024-28182
  size_t max_outbound_ack = 1000;  // SETTINGS/PING ACK queue (CVE-2019-9512/9515)
};

// The data plane's side. All calls come from inside ServerConnection::recv() (or, for
// on_send_ready and on_stream_closed, from pending_output()). A handler may call back into the
// connection (submit_response, send_data, consume, reset_stream...) from any event.
class Handler {
 public:
  virtual ~Handler() = default;
  // A complete, validated request head. `end_stream`: there is no body (and no
  // on_request_end follows).
  virtual void on_request(int32_t stream_id, http::Request&& request, bool end_stream) = 0;
  // Request body bytes; valid only during the call. Call ServerConnection::consume(id, n) once
  // they are forwarded (back-pressure: the client's window opens only then).
  virtual void on_request_data(int32_t stream_id, std::string_view data) = 0;
  virtual void on_request_trailers(int32_t stream_id, http::HeaderMap&& trailers) = 0;
  virtual void on_request_end(int32_t stream_id) = 0;  // END_STREAM received, body complete
  virtual void on_stream_reset(int32_t stream_id, uint32_t error_code) = 0;  // RST by the peer
  // The stream is gone (completed, reset either way, or connection ended); called only for
  // streams that had on_request. No call into the connection for this id after this.
  virtual void on_stream_closed(int32_t stream_id, uint32_t error_code) = 0;
  // send_data() has room again on this stream.
  virtual void on_send_ready(int32_t /*stream_id*/) {}
};

class ServerConnection {
 public:
  ServerConnection(Settings settings, Handler& handler, uint64_t conn_id = 0);
  ~ServerConnection();
  ServerConnection(const ServerConnection&) = delete;
  ServerConnection& operator=(const ServerConnection&) = delete;

  // Template for requests (remote/local address, tls, SNI): copied into each Request.
  void set_request_template(http::Request tmpl) { template_ = std::move(tmpl); }

  // Feeds received bytes (all of them are processed). An error means the connection is
  // finished (protocol error, flood, bad preface): flush pending_output() (it usually holds a
  // GOAWAY) and close.
  Result<size_t> recv(std::string_view bytes);

  // Serialized frames to write: nghttp2 is drained until output_buffer_bytes is reached, so the
  // view holds at most that plus one frame (max_frame_size + 9); more is produced once it has
  // all been consumed. The view stays valid until the next call into the connection.
  std::string_view pending_output();
  void consume_output(size_t n);

  bool want_read() const;
  bool want_write() const;  // frames queued in nghttp2 or in the output buffer

  // Responses. Field names are lower-cased and connection-specific fields stripped.
  Result<bool> submit_response(int32_t stream_id, const http::ResponseHead& head, bool end_stream);
  // Appends body bytes; returns how many were accepted (0 when the stream buffer is full: wait
  // for on_send_ready). Error if the stream is gone.
  Result<size_t> send_data(int32_t stream_id, std::string_view data);
  size_t send_capacity(int32_t stream_id) const;
  // Ends the response after the buffered body; with trailers (grpc-status) if given.
  Result<bool> end_stream(int32_t stream_id, std::optional<http::HeaderMap> trailers = {});
  // Request body bytes handed to the handler are forwarded: reopen the client's window.
  void consume(int32_t stream_id, size_t n);
  void reset_stream(int32_t stream_id, uint32_t error_code);
  // The response is (or will be) complete and the rest of the request body is not wanted:
  // RST_STREAM NO_ERROR once the frame ending the response has been sent (RFC 9113 §8.1).
  // nghttp2 sends RST_STREAM ahead of queued DATA, so an immediate reset would cut the body.
  void stop_reading(int32_t stream_id);

  // Graceful: GOAWAY with the last processed stream id; open streams run to completion, new
  // ones are refused; want_read()/want_write() go false once they are done.
  void shutdown_graceful();

  // HTTP/1.1 Upgrade to h2c (RFC 7540 §3.2; Caddy 2.6 accepts it): `settings` is the request's
  // HTTP2-Settings value (base64url SETTINGS payload), `request` the upgraded request, which
  // becomes stream 1, half-closed (remote), and reaches the handler at once. Call before any
  // recv(); the client's preface follows the 101.
  Result<bool> upgrade(std::string_view settings, http::Request request);
  // Immediate: GOAWAY(error_code) and stop; open streams are abandoned.
  void shutdown_now(uint32_t error_code);

  // The GOAWAY this side sent, if any (error code), and why the connection failed.
  std::optional<uint32_t> goaway_sent() const { return goaway_sent_; }
  size_t open_streams() const { return streams_.size(); }

 private:
  struct Stream;
  friend struct Callbacks;

  Stream* find(int32_t stream_id) const;
  void fill_output();
  void notify_send_ready();
  void count_reset();
  bool take_control_token();
  void deliver_pending();

  Settings settings_;
  Handler& handler_;
  uint64_t conn_id_;
  uint64_t next_request_id_ = 1;
  http::Request template_;
  nghttp2_session* session_ = nullptr;
  std::unordered_map<int32_t, std::unique_ptr<Stream>> streams_;
  detail::OutputBuffer out_;
  std::vector<int32_t> pending_;  // heads accepted in the current recv(), in order
  std::vector<int32_t> ready_;    // streams whose send buffer drained (on_send_ready)
  std::optional<uint32_t> goaway_sent_;
  bool in_recv_ = false;
  // Our copy of nghttp2's RST_STREAM token bucket: nghttp2 queues its GOAWAY when the bucket is
  // empty but keeps opening the streams that follow in the same read, so without this a burst
  // read in one recv() would still reach the handler stream by stream.
  double reset_tokens_ = 0;
  std::chrono::steady_clock::time_point reset_refill_;
  bool refuse_new_streams_ = false;
  double control_tokens_ = 0;
  std::chrono::steady_clock::time_point control_refill_;
  bool control_flood_ = false;
};

}  // namespace hsp::h2
