#include "h2/server.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "h2/common.h"
#include "util/base64url.h"
#include "util/log.h"

namespace hsp::h2 {

using detail::connection_specific;
using detail::h2_error;
using detail::h2_fields;
using detail::make_nv;
using detail::valid_name;
using detail::valid_value;

struct ServerConnection::Stream {
  int32_t id = 0;
  // Request side.
  http::Request req;
  std::string path_pseudo;
  std::string host_field;
  std::string cookie;  // RFC 9113 §8.2.3: split cookie fields are joined again for HTTP/1
  bool has_method = false;
  bool has_path = false;
  bool rejected = false;   // malformed or over limits: never (or no longer) reaches the handler
  bool too_large = false;  // header list over the limit: answered 431
  bool delivered = false;  // on_request was called
  // Head accepted during the current recv(); events wait for the end of the read so that a
  // stream reset within the same read never reaches the handler (rapid reset costs nothing).
  bool pending = false;
  bool head_end_stream = false;
  std::string early_body;
  bool early_trailers = false;
  bool early_end = false;
  bool in_trailers = false;
  size_t header_bytes = 0;
  size_t header_count = 0;
  http::HeaderMap trailers;
  // Response side.
  bool response_submitted = false;
  bool response_sent = false;       // the frame with END_STREAM went out
  bool rst_after_response = false;  // stop_reading(): RST_STREAM NO_ERROR once it has
  detail::OutBody out;
};

// nghttp2's C callbacks, friends of the connection.
struct Callbacks {
  static ServerConnection& self(void* user_data) {
    return *static_cast<ServerConnection*>(user_data);
  }

  static void reject(ServerConnection& c, ServerConnection::Stream& s, uint32_t code) {
    s.rejected = true;
    nghttp2_submit_rst_stream(c.session_, NGHTTP2_FLAG_NONE, s.id, code);
  }

  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* ud) {
    ServerConnection& c = self(ud);
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      if (c.refuse_new_streams_) return 0;  // no Stream: every later callback ignores it
      auto s = std::make_unique<ServerConnection::Stream>();
      s->id = frame->hd.stream_id;
      s->req = c.template_;
      s->req.conn_id = c.conn_id_;
      s->req.version = 20;
      c.streams_[s->id] = std::move(s);
    } else if (ServerConnection::Stream* s = c.find(frame->hd.stream_id)) {
      s->in_trailers = true;
      s->header_bytes = 0;
      s->header_count = 0;
    }
    return 0;
  }

  static int on_header(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name_p,
                       size_t namelen, const uint8_t* value_p, size_t valuelen, uint8_t, void* ud) {
    ServerConnection& c = self(ud);
    ServerConnection::Stream* s = c.find(frame->hd.stream_id);
    if (s == nullptr || s->rejected || s->too_large) return 0;
    std::string_view name(reinterpret_cast<const char*>(name_p), namelen);
    std::string_view value(reinterpret_cast<const char*>(value_p), valuelen);
    // RFC 7541 §4.1 sizes, so that an HPACK bomb (a big indexed entry repeated) is counted at
    // its decoded size. Past the limit the rest of the block is decoded but dropped.
    s->header_bytes += namelen + valuelen + 32;
    ++s->header_count;
    if (s->header_bytes > c.settings_.max_header_bytes ||
        s->header_count > c.settings_.max_header_count) {
      s->too_large = true;
      return 0;
    }
    bool pseudo = !name.empty() && name.front() == ':';
    if (!valid_value(value) || !valid_name(pseudo ? name.substr(1) : name)) {
      reject(c, *s, NGHTTP2_PROTOCOL_ERROR);
      return 0;
    }
    if (s->in_trailers) {
      if (pseudo || connection_specific(name) || name == "te") {
        reject(c, *s, NGHTTP2_PROTOCOL_ERROR);
        return 0;
      }
      s->trailers.add(name, value);
      return 0;
    }
    if (pseudo) {
      if (name == ":method") {
        s->req.method = std::string(value);
        s->has_method = true;
      } else if (name == ":path") {
        s->path_pseudo = std::string(value);
        s->has_path = true;
      } else if (name == ":scheme") {
        s->req.scheme = std::string(value);
      } else if (name == ":authority") {
        s->req.authority = std::string(value);
      } else {
        reject(c, *s, NGHTTP2_PROTOCOL_ERROR);  // :protocol (extended CONNECT is not enabled)
      }
      return 0;
    }
    if (connection_specific(name) || (name == "te" && value != "trailers")) {
      reject(c, *s, NGHTTP2_PROTOCOL_ERROR);
      return 0;
    }
    if (name == "host") {
      if (s->host_field.empty()) s->host_field = std::string(value);
      return 0;  // as on HTTP/1: the authority lives in Request::authority only
    }
    if (name == "cookie") {
      if (!s->cookie.empty()) s->cookie += "; ";
      s->cookie.append(value);
      return 0;
    }
    s->req.headers.add(name, value);
    return 0;
  }

  static void finish_head(ServerConnection& c, ServerConnection::Stream& s, bool end_stream) {
    if (s.rejected) return;
    if (s.too_large) {
      s.rejected = true;
      http::ResponseHead head;
      head.status = 431;
      c.submit_response(s.id, head, true);
      return;
    }
    if (s.req.method == "CONNECT") {
      s.rejected = true;
      http::ResponseHead head;
      head.status = 501;  // CONNECT tunnels are not proxied (yet)
      c.submit_response(s.id, head, true);
      return;
    }
    if (!s.has_method || !s.has_path || s.path_pseudo.empty() ||
        (s.path_pseudo.front() != '/' && !(s.path_pseudo == "*" && s.req.method == "OPTIONS"))) {
      reject(c, s, NGHTTP2_PROTOCOL_ERROR);
      return;
    }
    http::Request& r = s.req;
    if (r.scheme.empty()) r.scheme = "https";  // nghttp2 requires :scheme; belt and braces
    // RFC 9113 §8.3.1: :authority wins over a host field that disagrees.
    if (r.authority.empty()) r.authority = s.host_field;
    r.host = http::host_of_authority(r.authority);
    r.orig_uri = s.path_pseudo;
    size_t q = s.path_pseudo.find('?');
    r.path = s.path_pseudo.substr(0, q);
    if (q != std::string::npos) r.query = s.path_pseudo.substr(q + 1);
    if (!s.cookie.empty()) r.headers.add("cookie", s.cookie);
    r.id = c.next_request_id_++;
    s.pending = true;
    s.head_end_stream = end_stream;
    c.pending_.push_back(s.id);
  }

  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* ud) {
    ServerConnection& c = self(ud);
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
      c.count_reset();
      // Over the budget: stop reading here. Debian's nghttp2 queues a GOAWAY but goes on
      // opening the streams that follow in the same read, and a later error would then send a
      // second GOAWAY with a higher last stream id (RFC 9113 §6.8 forbids that).
      if (c.refuse_new_streams_) return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if ((frame->hd.type == NGHTTP2_SETTINGS || frame->hd.type == NGHTTP2_PING) &&
        (frame->hd.flags & NGHTTP2_FLAG_ACK) == 0 && !c.take_control_token()) {
      return NGHTTP2_ERR_CALLBACK_FAILURE;  // recv() answers with GOAWAY ENHANCE_YOUR_CALM
    }
    ServerConnection::Stream* s = c.find(frame->hd.stream_id);
    if (s == nullptr) return 0;
    bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS:
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
          finish_head(c, *s, end_stream);
        } else if ((s->delivered || s->pending) && !s->rejected) {
          if (s->too_large) {
            reject(c, *s, NGHTTP2_PROTOCOL_ERROR);  // trailers over the limit
            return 0;
          }
          if (s->pending) {
            s->early_trailers = true;
            s->early_end = end_stream;
            return 0;
          }
          c.handler_.on_request_trailers(s->id, std::move(s->trailers));
          if (end_stream) c.handler_.on_request_end(s->id);
        }
        return 0;
      case NGHTTP2_DATA:
        if (!end_stream || s->rejected) return 0;
        if (s->pending) {
          s->early_end = true;
        } else if (s->delivered) {
          c.handler_.on_request_end(s->id);
        }
        return 0;
      case NGHTTP2_RST_STREAM:
        if (s->delivered) c.handler_.on_stream_reset(s->id, frame->rst_stream.error_code);
        return 0;
      default:
        return 0;
    }
  }

  static int on_data_chunk_recv(nghttp2_session* session, uint8_t, int32_t stream_id,
                                const uint8_t* data, size_t len, void* ud) {
    ServerConnection& c = self(ud);
    // The connection window reopens at once; each stream's window only when its handler has
    // forwarded the bytes (consume()). Buffering is thus bounded per stream by its window.
    nghttp2_session_consume_connection(session, len);
    ServerConnection::Stream* s = c.find(stream_id);
    if (s == nullptr || !(s->delivered || s->pending) || s->rejected) {
      nghttp2_session_consume_stream(session, stream_id, len);
      return 0;
    }
    if (s->pending) {
      // Bounded by the stream window: nothing is consumed before the handler has it.
      s->early_body.append(reinterpret_cast<const char*>(data), len);
      return 0;
    }
    c.handler_.on_request_data(stream_id,
                               std::string_view(reinterpret_cast<const char*>(data), len));
    return 0;
  }

  static int on_stream_close(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* ud) {
    ServerConnection& c = self(ud);
    auto it = c.streams_.find(stream_id);
    if (it == c.streams_.end()) return 0;
    std::unique_ptr<ServerConnection::Stream> s = std::move(it->second);
    c.streams_.erase(it);
    if (s->delivered) c.handler_.on_stream_closed(stream_id, error_code);
    return 0;
  }

  static int on_frame_send(nghttp2_session* session, const nghttp2_frame* frame, void* ud) {
    ServerConnection& c = self(ud);
    if ((frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
      if (ServerConnection::Stream* s = c.find(frame->hd.stream_id)) {
        s->response_sent = true;
        if (s->rst_after_response) {
          nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
        }
      }
    }
    if (frame->hd.type == NGHTTP2_GOAWAY) {
      c.goaway_sent_ = frame->goaway.error_code;
      if (frame->goaway.error_code != NGHTTP2_NO_ERROR) {
        log::info("h2_goaway_sent")
            .kv("conn_id", c.conn_id_)
            .kv("error_code", static_cast<uint64_t>(frame->goaway.error_code))
            .kv("last_stream_id", static_cast<int64_t>(frame->goaway.last_stream_id));
      }
    }
    return 0;
  }

  static ssize_t read_body(nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length,
                           uint32_t* data_flags, nghttp2_data_source*, void* ud) {
    ServerConnection& c = self(ud);
    ServerConnection::Stream* s = c.find(stream_id);
    if (s == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    bool room = false;
    ssize_t n = s->out.read(session, stream_id, buf, length, data_flags, room);
    if (room) c.ready_.push_back(stream_id);
    return n;
  }
};

ServerConnection::ServerConnection(Settings settings, Handler& handler, uint64_t conn_id)
    : settings_(std::move(settings)), handler_(handler), conn_id_(conn_id) {
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &Callbacks::on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &Callbacks::on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &Callbacks::on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &Callbacks::on_data_chunk_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &Callbacks::on_stream_close);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, &Callbacks::on_frame_send);

  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_option_set_stream_reset_rate_limit(opt, settings_.reset_burst,
                                             settings_.reset_rate_per_sec);
  nghttp2_option_set_max_continuations(opt, settings_.max_continuations);
  nghttp2_option_set_max_outbound_ack(opt, settings_.max_outbound_ack);
  // Closed streams are only kept for the RFC 7540 priority tree, which nothing here uses.
  nghttp2_option_set_no_closed_streams(opt, 1);
  nghttp2_session_server_new2(&session_, cbs, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  reset_tokens_ = static_cast<double>(settings_.reset_burst);
  reset_refill_ = std::chrono::steady_clock::now();
  control_tokens_ = static_cast<double>(settings_.control_burst);
  control_refill_ = reset_refill_;
  if (session_ == nullptr) return;

  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, settings_.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, settings_.initial_window_size},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, settings_.max_header_bytes},
      {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, settings_.max_frame_size},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                        static_cast<int32_t>(settings_.connection_window_size));
}

void ServerConnection::count_reset() {
  auto now = std::chrono::steady_clock::now();
  double elapsed = std::chrono::duration<double>(now - reset_refill_).count();
  reset_refill_ = now;
  reset_tokens_ =
      std::min(static_cast<double>(settings_.reset_burst),
               reset_tokens_ + elapsed * static_cast<double>(settings_.reset_rate_per_sec));
  if (reset_tokens_ >= 1) {
    reset_tokens_ -= 1;
    return;
  }
  if (!refuse_new_streams_) {
    log::info("h2_rapid_reset").kv("conn_id", conn_id_).kv("open_streams", streams_.size());
  }
  refuse_new_streams_ = true;
}

bool ServerConnection::take_control_token() {
  auto now = std::chrono::steady_clock::now();
  double elapsed = std::chrono::duration<double>(now - control_refill_).count();
  control_refill_ = now;
  control_tokens_ =
      std::min(static_cast<double>(settings_.control_burst),
               control_tokens_ + elapsed * static_cast<double>(settings_.control_rate_per_sec));
  if (control_tokens_ >= 1) {
    control_tokens_ -= 1;
    return true;
  }
  if (!control_flood_) log::info("h2_control_flood").kv("conn_id", conn_id_);
  control_flood_ = true;
  return false;
}

ServerConnection::~ServerConnection() {
  // nghttp2_session_del calls on_stream_close for open streams; the handler is not told about
  // those (it is being torn down with the connection), so forget them first.
  streams_.clear();
  if (session_ != nullptr) nghttp2_session_del(session_);
}

ServerConnection::Stream* ServerConnection::find(int32_t stream_id) const {
  auto it = streams_.find(stream_id);
  return it == streams_.end() ? nullptr : it->second.get();
}

Result<size_t> ServerConnection::recv(std::string_view bytes) {
  if (session_ == nullptr) return h2_error("no nghttp2 session (allocation failed)");
  in_recv_ = true;
  ssize_t rv = nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(bytes.data()),
                                        bytes.size());
  in_recv_ = false;
  if (rv >= 0) deliver_pending();
  pending_.clear();
  if (rv < 0) {
    // Whatever nghttp2 queued itself, the peer learns why before we close (a GOAWAY queued
    // already wins: nghttp2 sends one only).
    uint32_t code = control_flood_ || refuse_new_streams_ || rv == NGHTTP2_ERR_FLOODED ||
                            rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS
                        ? NGHTTP2_ENHANCE_YOUR_CALM
                        : NGHTTP2_PROTOCOL_ERROR;
    nghttp2_session_terminate_session(session_, code);
    log::info("h2_connection_error")
        .kv("conn_id", conn_id_)
        .kv("error", nghttp2_strerror(static_cast<int>(rv)));
    return h2_error(std::string("protocol error: ") + nghttp2_strerror(static_cast<int>(rv)));
  }
  return static_cast<size_t>(rv);
}

void ServerConnection::deliver_pending() {
  // Handlers may call back into the connection, which never opens or closes streams outside
  // recv()/pending_output(), so the ids stay meaningful while this runs.
  std::vector<int32_t> ids;
  ids.swap(pending_);
  for (int32_t id : ids) {
    Stream* s = find(id);
    if (s == nullptr || !s->pending) continue;  // reset or refused within the same read
    s->pending = false;
    if (s->rejected) continue;
    s->delivered = true;
    handler_.on_request(id, std::move(s->req), s->head_end_stream);
    if ((s = find(id)) == nullptr) continue;
    if (!s->early_body.empty()) {
      std::string body = std::move(s->early_body);
      s->early_body.clear();
      handler_.on_request_data(id, body);
      if ((s = find(id)) == nullptr) continue;
    }
    if (s->early_trailers) {
      handler_.on_request_trailers(id, std::move(s->trailers));
      if ((s = find(id)) == nullptr) continue;
    }
    if (s->early_end && !s->head_end_stream) handler_.on_request_end(id);
  }
}

void ServerConnection::fill_output() {
  out_.fill(session_, settings_.output_buffer_bytes, conn_id_, "h2_send_error");
}

void ServerConnection::notify_send_ready() {
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

std::string_view ServerConnection::pending_output() {
  if (out_.empty() && !in_recv_) {
    fill_output();
    notify_send_ready();
  }
  return out_.view();
}

void ServerConnection::consume_output(size_t n) {
  out_.consume(n);
}

bool ServerConnection::want_read() const {
  return session_ != nullptr && nghttp2_session_want_read(session_) != 0;
}

bool ServerConnection::want_write() const {
  return !out_.empty() || (session_ != nullptr && nghttp2_session_want_write(session_) != 0);
}

Result<bool> ServerConnection::submit_response(int32_t stream_id, const http::ResponseHead& head,
                                               bool end_stream) {
  Stream* s = find(stream_id);
  if (s == nullptr) return h2_error("stream " + std::to_string(stream_id) + " is gone");
  if (s->response_submitted) return h2_error("response already submitted");
  if (head.status < 200 || head.status > 999) {
    return h2_error("status " + std::to_string(head.status) + " cannot start an h2 response");
  }
  std::string status = std::to_string(head.status);
  static const std::string kStatus = ":status";
  auto fields = h2_fields(head.headers, false);
  std::vector<nghttp2_nv> nva;
  nva.reserve(fields.size() + 1);
  nva.push_back(make_nv(kStatus, status));
  for (const auto& [name, value] : fields) nva.push_back(make_nv(name, value));
  nghttp2_data_provider provider{};
  provider.read_callback = &Callbacks::read_body;
  int rv = nghttp2_submit_response(session_, stream_id, nva.data(), nva.size(),
                                   end_stream ? nullptr : &provider);
  if (rv != 0) return h2_error(std::string("submit_response: ") + nghttp2_strerror(rv));
  s->response_submitted = true;
  s->out.open = !end_stream;
  s->out.ended = end_stream;
  return true;
}

size_t ServerConnection::send_capacity(int32_t stream_id) const {
  Stream* s = find(stream_id);
  return s == nullptr ? 0 : s->out.capacity(settings_.stream_buffer_bytes);
}

Result<size_t> ServerConnection::send_data(int32_t stream_id, std::string_view data) {
  Stream* s = find(stream_id);
  if (s == nullptr) return h2_error("stream " + std::to_string(stream_id) + " is gone");
  return s->out.append(session_, stream_id, data, settings_.stream_buffer_bytes, "response");
}

Result<bool> ServerConnection::end_stream(int32_t stream_id,
                                          std::optional<http::HeaderMap> trailers) {
  Stream* s = find(stream_id);
  if (s == nullptr) return h2_error("stream " + std::to_string(stream_id) + " is gone");
  return s->out.end(session_, stream_id, std::move(trailers), "response");
}

void ServerConnection::consume(int32_t stream_id, size_t n) {
  if (session_ != nullptr && n > 0) nghttp2_session_consume_stream(session_, stream_id, n);
}

void ServerConnection::reset_stream(int32_t stream_id, uint32_t error_code) {
  if (session_ == nullptr) return;
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, error_code);
}

void ServerConnection::stop_reading(int32_t stream_id) {
  if (session_ == nullptr) return;
  Stream* s = find(stream_id);
  if (s == nullptr) return;
  if (s->response_sent) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_NO_ERROR);
  } else {
    s->rst_after_response = true;
  }
}

Result<bool> ServerConnection::upgrade(std::string_view settings, http::Request request) {
  if (session_ == nullptr) return h2_error("no nghttp2 session (allocation failed)");
  // RFC 7540 §3.2.1: base64url without padding; some clients pad all the same.
  while (!settings.empty() && settings.back() == '=') settings.remove_suffix(1);
  auto payload = base64url_decode(settings);
  if (!payload) return h2_error("HTTP2-Settings is not base64url");
  int rv = nghttp2_session_upgrade2(session_, reinterpret_cast<const uint8_t*>(payload->data()),
                                    payload->size(), request.method == "HEAD", nullptr);
  if (rv != 0) return h2_error(std::string("upgrade: ") + nghttp2_strerror(rv));
  auto s = std::make_unique<Stream>();
  s->id = 1;
  s->delivered = true;
  streams_[1] = std::move(s);
  request.version = 20;
  request.id = next_request_id_++;
  request.conn_id = conn_id_;
  handler_.on_request(1, std::move(request), true);
  return true;
}

void ServerConnection::shutdown_graceful() {
  if (session_ == nullptr) return;
  // The shutdown notice plus the final GOAWAY in one flight: a client that opens a stream
  // between the two gets it refused and retries it (it was never processed: RFC 9113 §6.8).
  // What is missing: the PING round trip between them that would make that race impossible.
  nghttp2_submit_shutdown_notice(session_);
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                        nullptr, 0);
}

void ServerConnection::shutdown_now(uint32_t error_code) {
  if (session_ == nullptr) return;
  nghttp2_session_terminate_session(session_, error_code);
}

}  // namespace hsp::h2
