// Private to gateway/http1/: a connection to an upstream, cleartext TCP or TLS over it
// (`https://` upstreams, `transport http { tls ... }`). The HTTP/1.1 proxy path and the HTTP/2
// upstream connections read and write it like any Asio stream; timeouts, cancel and shutdown go
// to the TCP layer (tcp(), socket()).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"

namespace hsp::http1 {

using UpstreamTlsStream = boost::beast::ssl_stream<boost::beast::tcp_stream>;

// The client side of TLS to upstreams for one transport configuration: trust (system roots, or
// tls_trusted_ca_certs, or nothing with tls_insecure_skip_verify), TLS 1.2 and 1.3, and the
// ALPN protocols to offer. Made once per worker, trust settings, ALPN and snapshot generation;
// the name to send and check is per connection (handshake()), so routes that differ only in
// tls_server_name share a context but never a name.
struct UpstreamTlsConfig {
  std::shared_ptr<boost::asio::ssl::context> ctx;
  bool verify = true;
};

// Builds the context for `t` offering `alpn` ("h2", "http/1.1"); an error names the CA file or
// OpenSSL's reason.
Result<UpstreamTlsConfig> make_upstream_tls(const config::HttpTransport& t,
                                            const std::vector<std::string>& alpn);

class UpstreamStream {
 public:
  using executor_type = boost::asio::any_io_executor;

  explicit UpstreamStream(const executor_type& ex)
      : tcp_(std::make_unique<boost::beast::tcp_stream>(ex)) {}

  executor_type get_executor() { return tcp().get_executor(); }
  boost::beast::tcp_stream& tcp() { return tls_ ? tls_->next_layer() : *tcp_; }
  boost::asio::ip::tcp::socket& socket() { return tcp().socket(); }
  void expires_after(std::chrono::steady_clock::duration d) { tcp().expires_after(d); }
  void expires_never() { tcp().expires_never(); }
  bool is_tls() const { return tls_ != nullptr; }
  SSL* tls_native_handle() { return tls_ ? tls_->native_handle() : nullptr; }

  // TLS client handshake over the connected TCP stream, within `timeout`. `name` is sent as SNI
  // (unless it is an IP address) and checked against the certificate (as an IP when it is
  // one) unless cfg.verify is off. Returns the error, if any, and the negotiated ALPN protocol
  // in `alpn`.
  boost::asio::awaitable<boost::system::error_code> handshake(
      const UpstreamTlsConfig& cfg, const std::string& name,
      std::chrono::steady_clock::duration timeout, std::string& alpn);

  template <class MutableBufferSequence, class Token>
  auto async_read_some(const MutableBufferSequence& b, Token&& token) {
    if (tls_) return tls_->async_read_some(b, std::forward<Token>(token));
    return tcp_->async_read_some(b, std::forward<Token>(token));
  }
  template <class ConstBufferSequence, class Token>
  auto async_write_some(const ConstBufferSequence& b, Token&& token) {
    if (tls_) return tls_->async_write_some(b, std::forward<Token>(token));
    return tcp_->async_write_some(b, std::forward<Token>(token));
  }

 private:
  std::unique_ptr<boost::beast::tcp_stream> tcp_;   // until the handshake moves it into tls_
  std::shared_ptr<boost::asio::ssl::context> ctx_;  // declared before tls_: outlives it
  std::unique_ptr<UpstreamTlsStream> tls_;
};

}  // namespace hsp::http1
