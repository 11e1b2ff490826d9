// HTTP/2 over TLS (ALPN h2) or cleartext with prior knowledge (h2c), on the gateway's own client
// codec (gateway/h2/client.h). The I/O is a readiness loop on Transport: a readable socket is
// drained (every TLS record waiting), the codec's events are collected meanwhile, handed to the
// driver afterwards (so the driver never re-enters the codec from inside an nghttp2 callback),
// and everything the driver submitted in that round goes out in one write.
#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <optional>

#include "connection.h"
#include "h2/client.h"
#include "tls.h"
#include "transport.h"

namespace hsp::bench {

namespace {

namespace asio = boost::asio;
using error_code = boost::system::error_code;

constexpr size_t kReadSize = 64 * 1024;
// Bytes read in one round before the driver gets the completions: bounds a round's latency when
// the server streams faster than we parse.
constexpr size_t kRoundBudget = 1 << 20;

class H2Impl : public std::enable_shared_from_this<H2Impl>, public h2::ClientHandler {
 public:
  H2Impl(asio::io_context& io, const Endpoint& ep, const RequestTemplate& req,
         ConnectionEvents& events, Connection& owner, uint32_t max_streams,
         std::shared_ptr<asio::ssl::context> ctx)
      : ep_(ep),
        body_(req.body),
        events_(&events),
        owner_(&owner),
        max_streams_(std::max<uint32_t>(max_streams, 1)),
        io_(io),
        transport_(io, std::move(ctx)),
        read_buf_(new char[kReadSize]) {
    request_.method = req.method;
    request_.scheme = transport_.tls() ? "https" : "http";
    request_.authority = ep.authority;
    request_.path = req.path;  // with its query: uri() then hands it over as is
    bool have_ua = false;
    for (const auto& [name, value] : req.headers) {
      if (body_ && http::iequals(name, "content-length")) continue;
      if (http::iequals(name, "user-agent")) have_ua = true;
      request_.headers.add(name, value);
    }
    if (!have_ua) request_.headers.add("user-agent", "hsp-bench");
    if (body_) request_.headers.add("content-length", std::to_string(body_->size()));
    streams_.reserve(max_streams_);
    done_.reserve(max_streams_);
    delivering_.reserve(max_streams_);
  }

  void start() {
    auto self = shared_from_this();
    error_code ec;
    auto addr = asio::ip::make_address(ep_.connect_host, ec);
    if (ec) {
      asio::post(io_, [self, host = ep_.connect_host] {
        self->close(ErrorKind::connect, "not an address: " + host);
      });
      return;
    }
    transport_.socket().async_connect({addr, ep_.connect_port},
                                      [self](const error_code& ec) { self->on_connect(ec); });
  }

  uint32_t free_slots() const {
    if (!ready_ || closed_ || !codec_ || !codec_->can_submit()) return 0;
    size_t mine = max_streams_ > streams_.size() ? max_streams_ - streams_.size() : 0;
    return uint32_t(std::min(mine, codec_->available_streams()));
  }

  void submit(uint64_t tag) {
    auto id = codec_->submit_request(request_, !body_);
    if (!id) {
      done_.push_back({tag, failed(ErrorKind::protocol)});
      post_round();
      return;
    }
    streams_.push_back(Slot{*id, tag});
    if (body_) push_body(streams_.back());
    // One write for all the requests the driver submits in a round (an h2load-like batch),
    // not one per request: inside a round the round's end flushes, else a posted round does.
    if (!in_round_) post_round();
  }

  void shutdown(bool graceful) {
    if (closed_) return;
    auto self = shared_from_this();
    if (graceful && codec_ && ready_) {
      codec_->shutdown();
      post_round();
      return;
    }
    asio::post(io_, [self] { self->close(ErrorKind::none, "shutdown"); });
  }

  void detach() {
    events_ = nullptr;
    closed_ = true;
    transport_.close();
  }

  uint64_t bytes_in() const { return transport_.bytes_in(); }
  uint64_t bytes_out() const { return transport_.bytes_out(); }

  // h2::ClientHandler: called from inside recv() / pending_output().
  void on_response_head(int32_t id, int status, http::HeaderMap&&, bool end_stream) override {
    // END_STREAM on HEADERS (HEAD, 204, 304, an empty 200): no on_response_end follows.
    if (Slot* s = find(id)) {
      s->status = status;
      if (end_stream) s->ended = true;
    }
  }
  void on_response_data(int32_t id, std::string_view data) override {
    if (Slot* s = find(id)) s->body_bytes += data.size();
    codec_->consume(id, data.size());
  }
  void on_response_trailers(int32_t, http::HeaderMap&&) override {}
  void on_response_end(int32_t id) override {
    if (Slot* s = find(id)) s->ended = true;
  }
  void on_stream_reset(int32_t, uint32_t) override {}
  void on_stream_refused(int32_t id) override {
    if (Slot* s = find(id)) s->refused = true;
  }
  void on_stream_closed(int32_t id, uint32_t) override {
    auto it =
        std::find_if(streams_.begin(), streams_.end(), [id](const Slot& s) { return s.id == id; });
    if (it == streams_.end()) return;
    Completion c;
    if (it->ended && it->status > 0) {
      c.status = it->status;
      c.body_bytes = it->body_bytes;
    } else {
      c.error = ErrorKind::reset;
      c.refused = it->refused;
    }
    done_.push_back({it->tag, c});
    *it = streams_.back();
    streams_.pop_back();
  }
  void on_send_ready(int32_t id) override {
    if (Slot* s = find(id)) push_body(*s);
  }

 private:
  struct Slot {
    int32_t id = 0;
    uint64_t tag = 0;
    int status = 0;
    uint64_t body_bytes = 0;
    size_t body_sent = 0;
    bool ended = false;
    bool refused = false;  // the server never processed it: the driver resends it
  };

  static Completion failed(ErrorKind kind) {
    Completion c;
    c.error = kind;
    return c;
  }

  Slot* find(int32_t id) {
    for (Slot& s : streams_) {
      if (s.id == id) return &s;
    }
    return nullptr;
  }

  void push_body(Slot& s) {
    if (s.body_sent >= body_->size()) return;
    auto n = codec_->send_data(s.id, std::string_view(*body_).substr(s.body_sent));
    if (!n) return;  // the stream is gone; on_stream_closed reports it
    s.body_sent += *n;
    if (s.body_sent == body_->size()) (void)codec_->end_stream(s.id);
  }

  void on_connect(const error_code& ec) {
    if (closed_) return;
    if (ec) {
      close(ErrorKind::connect, ec.message());  // the report prefixes "connect: "
      return;
    }
    std::string err;
    if (!transport_.attach(ep_, err)) {
      close(ErrorKind::tls, err);
      return;
    }
    if (transport_.tls()) {
      handshake();
    } else {
      became_ready();
    }
  }

  void handshake() {
    if (closed_) return;
    Transport::Wait wait = Transport::Wait::none;
    std::string err;
    if (transport_.handshake(wait, err)) {
      std::string alpn = transport_.alpn();
      if (alpn != "h2") {
        close(ErrorKind::protocol, "ALPN selected '" + alpn + "', not h2");
        return;
      }
      became_ready();
      return;
    }
    if (wait == Transport::Wait::none) {
      close(ErrorKind::tls, "TLS handshake: " + err);
      return;
    }
    auto self = shared_from_this();
    transport_.socket().async_wait(
        wait == Transport::Wait::read ? asio::ip::tcp::socket::wait_read
                                      : asio::ip::tcp::socket::wait_write,
        [self](const error_code& ec) {
          if (ec) {
            self->close(ErrorKind::tls, "TLS handshake: " + ec.message());
            return;
          }
          self->handshake();
        });
  }

  void became_ready() {
    h2::ClientSettings settings;
    settings.max_concurrent_streams = max_streams_;
    // Windows large enough that flow control never paces a load test on loopback.
    settings.initial_window_size = 1 << 20;
    settings.connection_window_size = 16 << 20;
    codec_.emplace(settings, *this);
    ready_ = true;
    in_round_ = true;
    if (events_) events_->on_ready(*owner_);
    in_round_ = false;
    end_round();
    wait_readable();
  }

  void wait_readable() {
    if (closed_ || read_waiting_) return;
    read_waiting_ = true;
    auto self = shared_from_this();
    transport_.socket().async_wait(asio::ip::tcp::socket::wait_read, [self](const error_code& ec) {
      self->read_waiting_ = false;
      if (self->closed_) return;
      if (ec) {
        self->close(ErrorKind::reset, "wait: " + ec.message());
        return;
      }
      self->on_readable();
    });
  }

  void on_readable() {
    size_t total = 0;
    for (;;) {
      Transport::Wait wait = Transport::Wait::none;
      std::string err;
      ssize_t n = transport_.read(read_buf_.get(), kReadSize, wait, err);
      if (n == 0) break;  // drained (a TLS renegotiation wanting a write is not supported)
      if (n < 0) {
        end_round();
        close(streams_.empty() && err.empty() ? ErrorKind::none : ErrorKind::reset,
              err.empty() ? "the server closed the connection" : "read: " + err);
        return;
      }
      auto r = codec_->recv(std::string_view(read_buf_.get(), size_t(n)));
      if (!r) {
        end_round();
        close(ErrorKind::protocol, "HTTP/2: " + r.errors().front().message);
        return;
      }
      total += size_t(n);
      if (total >= kRoundBudget) {
        post_round();  // more may be waiting: come back after the others had their turn
        break;
      }
    }
    end_round();
    if (closed_) return;
    if (finished()) {
      close(ErrorKind::none, "server ended the connection (GOAWAY)");
      return;
    }
    wait_readable();
  }

  bool finished() const {
    return !codec_->want_read() && !codec_->want_write() && write_off_ == write_buf_.size();
  }

  void post_round() {
    if (round_posted_) return;
    round_posted_ = true;
    auto self = shared_from_this();
    asio::post(io_, [self] {
      self->round_posted_ = false;
      if (self->closed_) return;
      self->end_round();
      if (!self->closed_ && self->codec_ && self->finished()) {
        self->close(ErrorKind::none, "connection finished");
      }
    });
  }

  // Ends a round: hands the completions to the driver (whose new submissions stay queued in
  // the codec meanwhile), then writes everything in one go.
  void end_round() {
    in_round_ = true;
    while (!done_.empty() && events_) {
      delivering_.swap(done_);
      for (const auto& [tag, c] : delivering_) {
        if (events_) events_->on_complete(*owner_, tag, c);
      }
      delivering_.clear();
    }
    in_round_ = false;
    flush();
  }

  void flush() {
    if (closed_ || !codec_ || write_waiting_) return;
    if (write_off_ == write_buf_.size()) {
      write_buf_.clear();
      write_off_ = 0;
    }
    for (;;) {
      std::string_view out = codec_->pending_output();
      if (out.empty()) break;
      write_buf_.append(out);
      codec_->consume_output(out.size());
    }
    while (write_off_ < write_buf_.size()) {
      Transport::Wait wait = Transport::Wait::none;
      std::string err;
      ssize_t n = transport_.write(write_buf_.data() + write_off_, write_buf_.size() - write_off_,
                                   wait, err);
      if (n < 0) {
        close(ErrorKind::reset, "write: " + err);
        return;
      }
      if (n == 0) {
        wait_writable(wait);
        return;
      }
      write_off_ += size_t(n);
    }
  }

  void wait_writable(Transport::Wait wait) {
    write_waiting_ = true;
    auto self = shared_from_this();
    transport_.socket().async_wait(wait == Transport::Wait::read
                                       ? asio::ip::tcp::socket::wait_read
                                       : asio::ip::tcp::socket::wait_write,
                                   [self](const error_code& ec) {
                                     self->write_waiting_ = false;
                                     if (self->closed_) return;
                                     if (ec) {
                                       self->close(ErrorKind::reset, "wait: " + ec.message());
                                       return;
                                     }
                                     self->end_round();
                                   });
  }

  void close(ErrorKind why, const std::string& detail) {
    if (closed_) return;
    closed_ = true;
    ready_ = false;
    transport_.close();
    ErrorKind kind = why == ErrorKind::none ? ErrorKind::reset : why;
    for (const Slot& s : streams_) done_.push_back({s.tag, failed(kind)});
    streams_.clear();
    end_round();
    if (events_) events_->on_closed(*owner_, why, detail);
  }

  Endpoint ep_;
  std::shared_ptr<const std::string> body_;
  ConnectionEvents* events_;
  Connection* owner_;
  uint32_t max_streams_;
  asio::io_context& io_;
  Transport transport_;
  http::Request request_;
  std::optional<h2::ClientConnection> codec_;
  std::vector<Slot> streams_;
  std::vector<std::pair<uint64_t, Completion>> done_, delivering_;
  std::unique_ptr<char[]> read_buf_;
  std::string write_buf_;
  size_t write_off_ = 0;
  bool ready_ = false;
  bool closed_ = false;
  bool read_waiting_ = false;
  bool write_waiting_ = false;
  bool round_posted_ = false;
  bool in_round_ = false;  // completions are being delivered; flush at the end
};

}  // namespace

std::unique_ptr<Connection> make_h2_connection(asio::io_context& io, const Endpoint& ep,
                                               const RequestTemplate& req, ConnectionEvents& events,
                                               uint32_t max_streams) {
  auto make = [&](std::shared_ptr<asio::ssl::context> ctx) -> std::unique_ptr<Connection> {
    return std::make_unique<DetachingConnection<H2Impl>>([&](Connection& self) {
      return std::make_shared<H2Impl>(io, ep, req, events, self, max_streams, std::move(ctx));
    });
  };
  if (!ep.tls) return make(nullptr);
  std::string err;
  auto ctx = client_context(ep, kAlpnH2, err);
  if (!ctx) return make_failed_connection(io, events, ErrorKind::tls, err);
  return make(std::move(ctx));
}

}  // namespace hsp::bench
