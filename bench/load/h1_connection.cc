// HTTP/1.1 over TCP or TLS: one request at a time (no pipelining), keep-alive, responses parsed
// by Beast's response_parser into a body that only counts bytes. The request head is
// serialized once per connection; a request costs one write and the reads its response needs.
#include <openssl/ssl.h>

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>
#include <optional>

#include "connection.h"
#include "tls.h"

namespace hsp::bench {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

// Beast's parser with nothing kept: the status, whether the connection stays open (the base
// class tracks Connection and the version) and the body size. No allocation per response,
// unlike response_parser, which stores every header field in a basic_fields.
class ResponseCounter : public http::basic_parser<false> {
 public:
  ResponseCounter(bool head_only) {
    body_limit(boost::none);
    header_limit(64 * 1024);
    eager(true);
    if (head_only) skip(true);
  }
  int status() const { return status_; }
  uint64_t body_bytes() const { return body_bytes_; }

 private:
  void on_request_impl(http::verb, beast::string_view, beast::string_view, int,
                       error_code&) override {}
  void on_response_impl(int code, beast::string_view, int, error_code&) override { status_ = code; }
  void on_field_impl(http::field, beast::string_view, beast::string_view, error_code&) override {}
  void on_header_impl(error_code&) override {}
  void on_body_init_impl(const boost::optional<uint64_t>&, error_code&) override {}
  size_t on_body_impl(beast::string_view body, error_code&) override {
    body_bytes_ += body.size();
    return body.size();
  }
  void on_chunk_header_impl(uint64_t, beast::string_view, error_code&) override {}
  size_t on_chunk_body_impl(uint64_t, beast::string_view body, error_code&) override {
    body_bytes_ += body.size();
    return body.size();
  }
  void on_finish_impl(error_code&) override {}

  int status_ = 0;
  uint64_t body_bytes_ = 0;
};

std::string serialize_head(const Endpoint& ep, const RequestTemplate& req) {
  std::string head;
  head.reserve(256);
  head += req.method;
  head += ' ';
  head += req.path;
  head += " HTTP/1.1\r\nHost: ";
  head += ep.authority;
  head += "\r\n";
  bool have_ua = false;
  for (const auto& [name, value] : req.headers) {
    if (req.body && beast::iequals(name, "content-length")) continue;
    if (beast::iequals(name, "user-agent")) have_ua = true;
    head += name;
    head += ": ";
    head += value;
    head += "\r\n";
  }
  if (!have_ua) head += "User-Agent: hsp-bench\r\n";
  if (req.body) {
    head += "Content-Length: ";
    head += std::to_string(req.body->size());
    head += "\r\n";
  }
  head += "\r\n";
  return head;
}

template <bool Tls>
class H1Impl : public std::enable_shared_from_this<H1Impl<Tls>> {
 public:
  using Stream = std::conditional_t<Tls, asio::ssl::stream<tcp::socket>, tcp::socket>;

  H1Impl(asio::io_context& io, const Endpoint& ep, const RequestTemplate& req,
         ConnectionEvents& events, Connection& owner, std::shared_ptr<asio::ssl::context> ctx)
      : ep_(ep),
        req_(req),
        events_(&events),
        owner_(&owner),
        ctx_(std::move(ctx)),
        stream_(make_stream(io)),
        head_(serialize_head(ep, req)),
        head_only_(req.method == "HEAD") {}

  void start() {
    auto self = this->shared_from_this();
    if constexpr (Tls) {
      std::string err;
      if (!configure_client_ssl(stream_.native_handle(), ep_, err)) {
        asio::post(stream_.get_executor(), [self, err] { self->close(ErrorKind::tls, err); });
        return;
      }
    }
    error_code ec;
    auto addr = asio::ip::make_address(ep_.connect_host, ec);
    if (ec) {
      asio::post(stream_.get_executor(), [self, host = ep_.connect_host] {
        self->close(ErrorKind::connect, "not an address: " + host);
      });
      return;
    }
    socket().async_connect({addr, ep_.connect_port},
                           [self](const error_code& ec) { self->on_connect(ec); });
  }

  uint32_t free_slots() const { return ready_ && !busy_ && !closed_ && !closing_ ? 1 : 0; }

  void submit(uint64_t tag) {
    busy_ = true;
    tag_ = tag;
    parser_.emplace(head_only_);
    // A server may answer before it has read the whole request (an early 413): the previous
    // write can still be under way, and writes must not overlap.
    if (writing_) {
      write_pending_ = true;
      return;
    }
    start_write();
  }

  void shutdown(bool graceful) {
    if (closed_) return;
    if (graceful && busy_) {
      close_after_response_ = true;
      return;
    }
    auto self = this->shared_from_this();
    // Events never come from inside a driver call: the close is reported from the loop.
    asio::post(stream_.get_executor(), [self] { self->close(ErrorKind::none, "shutdown"); });
    closing_ = true;
  }

  // The facade is gone: no more events; pending handlers find closed_ and stop.
  void detach() {
    events_ = nullptr;
    closed_ = true;
    error_code ignored;
    socket().close(ignored);
  }

  uint64_t bytes_in() const {
    if constexpr (Tls) return tls_bytes_in(const_cast<Stream&>(stream_).native_handle());
    return bytes_in_;
  }
  uint64_t bytes_out() const {
    if constexpr (Tls) return tls_bytes_out(const_cast<Stream&>(stream_).native_handle());
    return bytes_out_;
  }

 private:
  Stream make_stream(asio::io_context& io) {
    if constexpr (Tls) {
      return Stream(io, *ctx_);
    } else {
      return Stream(io);
    }
  }

  tcp::socket& socket() {
    if constexpr (Tls) {
      return stream_.next_layer();
    } else {
      return stream_;
    }
  }

  void on_connect(const error_code& ec) {
    if (closed_) return;
    if (ec) {
      close(ErrorKind::connect, ec.message());  // the report prefixes "connect: "
      return;
    }
    error_code ignored;
    socket().set_option(tcp::no_delay(true), ignored);
    if constexpr (Tls) {
      auto self = this->shared_from_this();
      stream_.async_handshake(asio::ssl::stream_base::client,
                              [self](const error_code& ec) { self->on_handshake(ec); });
    } else {
      became_ready();
    }
  }

  void on_handshake(const error_code& ec) {
    if (closed_) return;
    if (ec) {
      std::string why = ec.message();
      if constexpr (Tls) why = handshake_failure(stream_.native_handle(), why);
      close(ErrorKind::tls, "TLS handshake: " + why);
      return;
    }
    if constexpr (Tls) {
      std::string alpn = selected_alpn(stream_.native_handle());
      if (!alpn.empty() && alpn != "http/1.1") {
        close(ErrorKind::protocol, "ALPN selected '" + alpn + "', not http/1.1");
        return;
      }
    }
    became_ready();
  }

  void became_ready() {
    ready_ = true;
    if (closing_) return;
    // A read is always pending, also between requests: a server that closes an idle
    // keep-alive connection is noticed at once, and the connection replaced without a failed
    // request (an open-loop run at a low rate would otherwise lose one request per idle close).
    read_more();
    if (events_) events_->on_ready(*owner_);
  }

  void start_write() {
    writing_ = true;
    std::array<asio::const_buffer, 2> bufs{
        asio::buffer(head_), req_.body ? asio::buffer(*req_.body) : asio::const_buffer()};
    auto self = this->shared_from_this();
    asio::async_write(stream_, bufs,
                      [self](const error_code& ec, size_t n) { self->on_write(ec, n); });
  }

  void on_write(const error_code& ec, size_t n) {
    writing_ = false;
    if (closed_) return;
    if constexpr (!Tls) bytes_out_ += n;
    if (ec) {
      close(ErrorKind::reset, "write: " + ec.message());
      return;
    }
    if (write_pending_) {
      write_pending_ = false;
      start_write();
    }
  }

  void read_more() {
    if (reading_ || closed_) return;
    reading_ = true;
    auto self = this->shared_from_this();
    stream_.async_read_some(buf_.prepare(16 * 1024),
                            [self](const error_code& ec, size_t n) { self->on_read(ec, n); });
  }

  void on_read(const error_code& ec, size_t n) {
    reading_ = false;
    if (closed_) return;
    if constexpr (!Tls) bytes_in_ += n;
    buf_.commit(n);
    if (!ec) {
      if (busy_) {
        parse();
      } else if (buf_.size() > 64 * 1024) {
        // Bytes nobody asked for (kept for the next response otherwise): bounded.
        close(ErrorKind::protocol, "unsolicited data from the server");
      }
      read_more();
      return;
    }
    bool eof = ec == asio::error::eof || ec == asio::ssl::error::stream_truncated;
    if (eof && !busy_) {
      close(ErrorKind::none, "the server closed the idle connection");
      return;
    }
    if (eof && busy_ && parser_ && parser_->got_some()) {
      // A body delimited by the end of the connection (no Content-Length, not chunked).
      error_code pec;
      parser_->put_eof(pec);
      if (!pec && parser_->is_done()) {
        complete_response(false);
        return;
      }
    }
    close(ErrorKind::reset, "read: " + ec.message());
  }

  // Feeds buffered bytes to the parser; true when the response completed or failed.
  bool parse() {
    while (buf_.size() > 0 && !parser_->is_done()) {
      error_code ec;
      size_t used = parser_->put(buf_.data(), ec);
      buf_.consume(used);
      if (ec == http::error::need_more) break;
      if (ec) {
        close(ErrorKind::protocol, "response: " + ec.message());
        return true;
      }
      if (used == 0) break;
    }
    if (!parser_->is_done()) return false;
    if (parser_->status() / 100 == 1 && parser_->status() != 101) {
      // An interim 1xx head: the final response follows on the same connection.
      parser_.emplace(head_only_);
      return buf_.size() > 0 ? parse() : false;
    }
    complete_response(parser_->keep_alive());
    return true;
  }

  void complete_response(bool keep_alive) {
    Completion done;
    done.status = parser_->status();
    done.body_bytes = parser_->body_bytes();
    busy_ = false;
    bool closing = !keep_alive || close_after_response_ || closing_;
    if (closing) ready_ = false;  // no submit() from on_complete on a connection that ends
    if (events_) events_->on_complete(*owner_, tag_, done);
    if (closing && !closed_) close(ErrorKind::none, keep_alive ? "shutdown" : "server closed");
  }

  void close(ErrorKind why, const std::string& detail) {
    if (closed_) return;
    closed_ = true;
    ready_ = false;
    error_code ignored;
    socket().close(ignored);
    if (busy_) {
      busy_ = false;
      Completion failed;
      failed.error = why == ErrorKind::none ? ErrorKind::reset : why;
      if (events_) events_->on_complete(*owner_, tag_, failed);
    }
    if (events_) events_->on_closed(*owner_, why, detail);
  }

  Endpoint ep_;
  const RequestTemplate& req_;
  ConnectionEvents* events_;
  Connection* owner_;
  std::shared_ptr<asio::ssl::context> ctx_;
  Stream stream_;
  std::string head_;
  bool head_only_;
  beast::flat_buffer buf_;
  std::optional<ResponseCounter> parser_;
  uint64_t tag_ = 0;
  uint64_t bytes_in_ = 0;
  uint64_t bytes_out_ = 0;
  bool ready_ = false;
  bool busy_ = false;
  bool reading_ = false;
  bool writing_ = false;
  bool write_pending_ = false;
  bool closing_ = false;
  bool closed_ = false;
  bool close_after_response_ = false;
};

// Reports a failure to set up TLS as a closed connection, from the loop.
class FailedConnection : public Connection {
 public:
  FailedConnection(asio::io_context& io, ConnectionEvents& events, ErrorKind why,
                   std::string detail)
      : io_(io), events_(events), why_(why), detail_(std::move(detail)) {}
  ~FailedConnection() override { *alive_ = false; }
  void start() override {
    asio::post(io_, [this, alive = alive_] {
      if (*alive) events_.on_closed(*this, why_, detail_);
    });
  }
  uint32_t free_slots() const override { return 0; }
  void submit(uint64_t) override {}
  void shutdown(bool) override {}
  uint64_t bytes_in() const override { return 0; }
  uint64_t bytes_out() const override { return 0; }

 private:
  asio::io_context& io_;
  ConnectionEvents& events_;
  ErrorKind why_;
  std::string detail_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace

std::unique_ptr<Connection> make_failed_connection(asio::io_context& io, ConnectionEvents& events,
                                                   ErrorKind why, std::string detail) {
  return std::make_unique<FailedConnection>(io, events, why, std::move(detail));
}

std::unique_ptr<Connection> make_h1_connection(asio::io_context& io, const Endpoint& ep,
                                               const RequestTemplate& req,
                                               ConnectionEvents& events) {
  if (!ep.tls) {
    return std::make_unique<DetachingConnection<H1Impl<false>>>([&](Connection& self) {
      return std::make_shared<H1Impl<false>>(io, ep, req, events, self, nullptr);
    });
  }
  std::string err;
  auto ctx = client_context(ep, kAlpnH1, err);
  if (!ctx) return make_failed_connection(io, events, ErrorKind::tls, err);
  return std::make_unique<DetachingConnection<H1Impl<true>>>([&](Connection& self) {
    return std::make_shared<H1Impl<true>>(io, ep, req, events, self, std::move(ctx));
  });
}

}  // namespace hsp::bench
