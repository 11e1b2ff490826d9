#include "h2/client.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "h2/common.h"
#include "http/hop_by_hop.h"
#include "util/log.h"

namespace hsp::h2 {

using detail::connection_specific;
using detail::Fields;
using detail::h2_error;
using detail::h2_fields;
using detail::make_nv;
using detail::valid_name;
using detail::valid_value;

struct ClientConnection::Stream {
  int32_t id = 0;
  bool headers_sent = false;
  bool local_reset = false;
  detail::OutBody out;  // the request body
  // Response.
  bool head_done = false;  // the final head was delivered; later HEADERS are trailers
  int status = 0;
  http::HeaderMap fields;  // the head or trailer block being received
  size_t header_bytes = 0;
  size_t header_count = 0;
  bool too_large = false;  // head over the limits (or malformed): being reset, events stop
  bool ended = false;
};

// nghttp2's C callbacks, friends of the connection.
struct ClientCallbacks {
  static ClientConnection& self(void* user_data) {
    return *static_cast<ClientConnection*>(user_data);
  }

  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* ud) {
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    ClientConnection::Stream* s = self(ud).find(frame->hd.stream_id);
    if (s == nullptr) return 0;
    s->fields.clear();
    s->status = 0;
    s->header_bytes = 0;
    s->header_count = 0;
    return 0;
  }

  static int on_header(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name_p,
                       size_t namelen, const uint8_t* value_p, size_t valuelen, uint8_t, void* ud) {
    ClientConnection& c = self(ud);
    ClientConnection::Stream* s = c.find(frame->hd.stream_id);
    if (s == nullptr || s->too_large) return 0;
    std::string_view name(reinterpret_cast<const char*>(name_p), namelen);
    std::string_view value(reinterpret_cast<const char*>(value_p), valuelen);
    // RFC 7541 §4.1 sizes, so that an HPACK bomb is counted at its decoded size.
    s->header_bytes += namelen + valuelen + 32;
    ++s->header_count;
    if (s->header_bytes > c.settings_.max_header_bytes ||
        s->header_count > c.settings_.max_header_count) {
      s->too_large = true;
      s->local_reset = true;
      log::info("h2_upstream_header_overflow")
          .kv("conn_id", c.conn_id_)
          .kv("stream_id", static_cast<int64_t>(s->id))
          .kv("header_bytes", static_cast<uint64_t>(s->header_bytes));
      nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
      return 0;
    }
    if (name == ":status") {
      // nghttp2's messaging checks refuse anything but three digits; a status below 100
      // ("050") passes them, and would reach clients as a malformed status line.
      if (value.size() != 3 || value[0] < '1' ||
          !std::all_of(value.begin(), value.end(),
                       [](char ch) { return ch >= '0' && ch <= '9'; })) {
        s->too_large = true;  // ignore the rest of the block: the stream is being reset
        s->local_reset = true;
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_PROTOCOL_ERROR);
        return 0;
      }
      s->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
      return 0;
    }
    if (!name.empty() && name.front() == ':') return 0;  // nghttp2 rejects any other
    s->fields.add(name, value);
    return 0;
  }

  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* ud) {
    ClientConnection& c = self(ud);
    switch (frame->hd.type) {
      case NGHTTP2_GOAWAY:
        c.goaway_error_ = frame->goaway.error_code;
        if (frame->goaway.error_code != NGHTTP2_NO_ERROR) {
          log::info("h2_upstream_goaway")
              .kv("conn_id", c.conn_id_)
              .kv("error_code", static_cast<uint64_t>(frame->goaway.error_code))
              .kv("last_stream_id", static_cast<int64_t>(frame->goaway.last_stream_id));
        }
        c.handler_.on_goaway(frame->goaway.last_stream_id, frame->goaway.error_code);
        return 0;
      case NGHTTP2_PING:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) != 0) c.handler_.on_ping_ack();
        return 0;
      default:
        break;
    }
    ClientConnection::Stream* s = c.find(frame->hd.stream_id);
    if (s == nullptr || s->too_large) return 0;
    const int32_t id = s->id;
    const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (frame->hd.type == NGHTTP2_HEADERS) {
      if (!s->head_done) {
        // Interim heads are told apart by status, not by nghttp2's category, which names only
        // the first block of a stream a response.
        if (s->status >= 100 && s->status < 200) {
          c.handler_.on_informational(id, s->status, std::move(s->fields));
          return 0;
        }
        s->head_done = true;
        s->ended = end_stream;
        c.handler_.on_response_head(id, s->status, std::move(s->fields), end_stream);
        return 0;
      }
      // nghttp2 only accepts a second block with END_STREAM: trailers.
      s->ended = true;
      c.handler_.on_response_trailers(id, std::move(s->fields));
      if (c.find(id) != nullptr) c.handler_.on_response_end(id);
      return 0;
    }
    if (frame->hd.type == NGHTTP2_DATA && end_stream && s->head_done && !s->ended) {
      s->ended = true;
      c.handler_.on_response_end(id);
    } else if (frame->hd.type == NGHTTP2_RST_STREAM) {
      c.handler_.on_stream_reset(id, frame->rst_stream.error_code);
    }
    return 0;
  }

  static int on_data_chunk_recv(nghttp2_session* session, uint8_t, int32_t stream_id,
                                const uint8_t* data, size_t len, void* ud) {
    ClientConnection& c = self(ud);
    // The connection window reopens at once; each stream's only when the caller has forwarded
    // the bytes (consume()).
    nghttp2_session_consume_connection(session, len);
    ClientConnection::Stream* s = c.find(stream_id);
    if (s == nullptr || !s->head_done || s->too_large) {
      nghttp2_session_consume_stream(session, stream_id, len);
      return 0;
    }
    c.handler_.on_response_data(stream_id,
                                std::string_view(reinterpret_cast<const char*>(data), len));
    return 0;
  }

  static int on_stream_close(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* ud) {
    ClientConnection& c = self(ud);
    ClientConnection::Stream* s = c.find(stream_id);
    if (s == nullptr) return 0;
    // REFUSED_STREAM from the server (or nghttp2's own, for streams above a GOAWAY's last id)
    // before any response means nothing was processed.
    bool refused = error_code == NGHTTP2_REFUSED_STREAM && !s->head_done && !s->local_reset;
    c.close_stream(stream_id, error_code, refused);
    return 0;
  }

  static int on_frame_send(nghttp2_session*, const nghttp2_frame* frame, void* ud) {
    ClientConnection& c = self(ud);
    if (frame->hd.type == NGHTTP2_HEADERS) {
      if (ClientConnection::Stream* s = c.find(frame->hd.stream_id)) s->headers_sent = true;
    } else if (frame->hd.type == NGHTTP2_GOAWAY) {
      c.goaway_sent_ = true;
    }
    return 0;
  }

  // A request HEADERS nghttp2 will never send (a GOAWAY arrived first, or the session is
  // closing): nghttp2 has no stream for it, so it never calls on_stream_close.
  static int on_frame_not_send(nghttp2_session*, const nghttp2_frame* frame, int lib_error,
                               void* ud) {
    ClientConnection& c = self(ud);
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    ClientConnection::Stream* s = c.find(frame->hd.stream_id);
    if (s == nullptr || s->headers_sent) return 0;
    log::debug("h2_upstream_request_not_sent")
        .kv("conn_id", c.conn_id_)
        .kv("stream_id", static_cast<int64_t>(frame->hd.stream_id))
        .kv("error", nghttp2_strerror(lib_error));
    c.not_sent_.push_back(frame->hd.stream_id);
    return 0;
  }

  static ssize_t read_body(nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length,
                           uint32_t* data_flags, nghttp2_data_source*, void* ud) {
    ClientConnection& c = self(ud);
    ClientConnection::Stream* s = c.find(stream_id);
    if (s == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    bool room = false;
    ssize_t n = s->out.read(session, stream_id, buf, length, data_flags, room);
    if (room) c.ready_.push_back(stream_id);
    return n;
  }
};

ClientConnection::ClientConnection(ClientSettings settings, ClientHandler& handler,
                                   uint64_t conn_id)
    : settings_(std::move(settings)), handler_(handler), conn_id_(conn_id) {
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &ClientCallbacks::on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &ClientCallbacks::on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &ClientCallbacks::on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs,
                                                            &ClientCallbacks::on_data_chunk_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &ClientCallbacks::on_stream_close);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, &ClientCallbacks::on_frame_send);
  nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs,
                                                           &ClientCallbacks::on_frame_not_send);

  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);
  // Until the server's SETTINGS arrive, assume it takes as many streams as we would open.
  nghttp2_option_set_peer_max_concurrent_streams(opt, settings_.max_concurrent_streams);
  nghttp2_option_set_max_continuations(opt, settings_.max_continuations);
  nghttp2_option_set_max_outbound_ack(opt, settings_.max_outbound_ack);
  nghttp2_option_set_no_closed_streams(opt, 1);
  nghttp2_session_client_new2(&session_, cbs, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  if (session_ == nullptr) return;

  // nghttp2 writes the client connection preface itself, before this SETTINGS frame.
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, settings_.initial_window_size},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, settings_.max_header_bytes},
      {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, settings_.max_frame_size},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                        static_cast<int32_t>(settings_.connection_window_size));
}

ClientConnection::~ClientConnection() {
  // nghttp2_session_del calls on_stream_close for open streams; the handler is being torn down
  // with the connection and is not told, so forget them first.
  streams_.clear();
  if (session_ != nullptr) nghttp2_session_del(session_);
}

ClientConnection::Stream* ClientConnection::find(int32_t stream_id) const {
  auto it = streams_.find(stream_id);
  return it == streams_.end() ? nullptr : it->second.get();
}

void ClientConnection::close_stream(int32_t stream_id, uint32_t error_code, bool refused) {
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) return;
  if (refused) handler_.on_stream_refused(stream_id);
  streams_.erase(stream_id);
  handler_.on_stream_closed(stream_id, error_code);
}

Result<size_t> ClientConnection::recv(std::string_view bytes) {
  if (session_ == nullptr) return h2_error("no nghttp2 session (allocation failed)");
  ssize_t rv = nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(bytes.data()),
                                        bytes.size());
  if (rv < 0) {
    log::info("h2_upstream_connection_error")
        .kv("conn_id", conn_id_)
        .kv("error", nghttp2_strerror(static_cast<int>(rv)));
    return h2_error(std::string("protocol error: ") + nghttp2_strerror(static_cast<int>(rv)));
  }
  return static_cast<size_t>(rv);
}

void ClientConnection::fill_output() {
  out_.fill(session_, settings_.output_buffer_bytes, conn_id_, "h2_upstream_send_error");
}

void ClientConnection::notify_send_ready() {
  // Requests nghttp2 dropped unsent: refused, reported outside nghttp2's send loop so that the
  // handler may submit them again (on another connection) from the event.
  while (!not_sent_.empty()) {
    std::vector<int32_t> ids;
    ids.swap(not_sent_);
    for (int32_t id : ids) close_stream(id, NGHTTP2_REFUSED_STREAM, true);
  }
  while (!ready_.empty()) {
    std::vector<int32_t> ids;
    ids.swap(ready_);
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    for (int32_t id : ids) {
      Stream* s = find(id);
      if (s == nullptr || !s->out.notify_ready) continue;
      s->out.notify_ready = false;
      handler_.on_send_ready(id);
    }
  }
}

std::string_view ClientConnection::pending_output() {
  if (out_.empty()) {
    fill_output();
    notify_send_ready();
  }
  return out_.view();
}

void ClientConnection::consume_output(size_t n) {
  out_.consume(n);
}

bool ClientConnection::want_read() const {
  return session_ != nullptr && nghttp2_session_want_read(session_) != 0;
}

bool ClientConnection::want_write() const {
  return !out_.empty() || (session_ != nullptr && nghttp2_session_want_write(session_) != 0);
}

size_t ClientConnection::available_streams() const {
  if (session_ == nullptr) return 0;
  uint32_t limit = std::min(
      settings_.max_concurrent_streams,
      nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS));
  // streams_ also holds requests nghttp2 has queued but not opened yet: they take a slot too.
  return streams_.size() >= limit ? 0 : limit - streams_.size();
}

bool ClientConnection::can_submit() const {
  return session_ != nullptr && !goaway_error_ && !goaway_sent_ &&
         nghttp2_session_get_next_stream_id(session_) <= 0x7fffffffu &&
         nghttp2_session_check_request_allowed(session_) != 0 && available_streams() > 0;
}

Result<int32_t> ClientConnection::submit_request(const http::Request& request, bool end_stream) {
  if (session_ == nullptr) return h2_error("no nghttp2 session (allocation failed)");
  if (goaway_error_) return h2_error("the server sent GOAWAY: no new streams on this connection");
  if (goaway_sent_) return h2_error("the connection is shutting down");
  if (request.method.empty()) return h2_error("request without a method");
  if (request.method == "CONNECT") return h2_error("CONNECT is not proxied over HTTP/2 (yet)");

  static const std::string kMethod = ":method", kScheme = ":scheme", kAuthority = ":authority",
                           kPath = ":path";
  std::string scheme = request.scheme.empty() ? "http" : request.scheme;
  std::string authority = request.authority;
  if (authority.empty()) {
    if (const std::string* host = request.headers.get("host")) authority = *host;
  }
  std::string path = request.path == "*" ? "*" : request.uri();
  if (path.empty()) path = "/";
  if (!valid_value(authority) || !valid_value(path)) {
    return h2_error("request target or authority holds CR, LF or NUL");
  }
  Fields fields = h2_fields(request.headers, true);
  std::vector<nghttp2_nv> nva;
  nva.reserve(fields.size() + 4);
  nva.push_back(make_nv(kMethod, request.method));
  nva.push_back(make_nv(kScheme, scheme));
  if (!authority.empty()) nva.push_back(make_nv(kAuthority, authority));
  nva.push_back(make_nv(kPath, path));
  for (const auto& [name, value] : fields) nva.push_back(make_nv(name, value));

  nghttp2_data_provider provider{};
  provider.read_callback = &ClientCallbacks::read_body;
  int32_t id = nghttp2_submit_request(session_, nullptr, nva.data(), nva.size(),
                                      end_stream ? nullptr : &provider, nullptr);
  if (id < 0) return h2_error(std::string("submit_request: ") + nghttp2_strerror(id));
  auto s = std::make_unique<Stream>();
  s->id = id;
  s->out.open = !end_stream;
  s->out.ended = end_stream;
  streams_[id] = std::move(s);
  return id;
}

size_t ClientConnection::send_capacity(int32_t stream_id) const {
  Stream* s = find(stream_id);
  return s == nullptr ? 0 : s->out.capacity(settings_.stream_buffer_bytes);
}

Result<size_t> ClientConnection::send_data(int32_t stream_id, std::string_view data) {
  Stream* s = find(stream_id);
  if (s == nullptr) return h2_error("stream " + std::to_string(stream_id) + " is gone");
  return s->out.append(session_, stream_id, data, settings_.stream_buffer_bytes, "request");
}

Result<bool> ClientConnection::end_stream(int32_t stream_id,
                                          std::optional<http::HeaderMap> trailers) {
  Stream* s = find(stream_id);
  if (s == nullptr) return h2_error("stream " + std::to_string(stream_id) + " is gone");
  return s->out.end(session_, stream_id, std::move(trailers), "request");
}

void ClientConnection::consume(int32_t stream_id, size_t n) {
  if (session_ != nullptr && n > 0) nghttp2_session_consume_stream(session_, stream_id, n);
}

void ClientConnection::reset_stream(int32_t stream_id, uint32_t error_code) {
  if (session_ == nullptr) return;
  if (Stream* s = find(stream_id)) s->local_reset = true;
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, error_code);
}

bool ClientConnection::request_sent(int32_t stream_id) const {
  Stream* s = find(stream_id);
  return s != nullptr && s->headers_sent;
}

bool ClientConnection::ping() {
  return session_ != nullptr && nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, nullptr) == 0;
}

void ClientConnection::shutdown() {
  if (session_ == nullptr || goaway_sent_) return;
  // Last stream id 0: we accept no server-initiated streams (push is off).
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, nullptr, 0);
  goaway_sent_ = true;
}

}  // namespace hsp::h2
