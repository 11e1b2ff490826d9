// TLS to upstreams (upstream_stream.h).

#include "http1/upstream_stream.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace hsp::http1 {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

std::string openssl_reason() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

}  // namespace

Result<UpstreamTlsConfig> make_upstream_tls(const config::HttpTransport& t,
                                            const std::vector<std::string>& alpn) {
  UpstreamTlsConfig out;
  out.ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  SSL_CTX* ctx = out.ctx->native_handle();
  // Go's crypto/tls client default (what Caddy's transport uses): TLS 1.2 and 1.3.
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  out.verify = !t.tls_insecure_skip_verify;
  if (out.verify) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    if (t.tls_trusted_ca_certs.empty()) {
      if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        return Error{{},
                     "upstream TLS: cannot load the system's trusted roots: " + openssl_reason()};
      }
    } else {
      // Only these roots, as Caddy's tls_trusted_ca_certs (the system pool is not added).
      for (const auto& file : t.tls_trusted_ca_certs) {
        if (SSL_CTX_load_verify_locations(ctx, file.c_str(), nullptr) != 1) {
          return Error{{},
                       "upstream TLS: tls_trusted_ca_certs '" + file + "': " + openssl_reason()};
        }
      }
    }
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  std::string wire;
  for (const auto& p : alpn) {
    wire += static_cast<char>(p.size());
    wire += p;
  }
  if (!wire.empty() &&
      SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(wire.data()),
                              static_cast<unsigned>(wire.size())) != 0) {
    return Error{{}, "upstream TLS: cannot set ALPN: " + openssl_reason()};
  }
  return out;
}

asio::awaitable<error_code> UpstreamStream::handshake(const UpstreamTlsConfig& cfg,
                                                      const std::string& name,
                                                      std::chrono::steady_clock::duration timeout,
                                                      std::string& alpn) {
  ctx_ = cfg.ctx;
  tls_ = std::make_unique<UpstreamTlsStream>(std::move(*tcp_), *ctx_);
  tcp_.reset();
  SSL* ssl = tls_->native_handle();
  error_code ec;
  (void)asio::ip::make_address(name, ec);  // only: is it an IP address?
  if (ec) {
    // SNI only for names (RFC 6066 §3); the certificate is checked against the same name.
    SSL_set_tlsext_host_name(ssl, name.c_str());
    if (cfg.verify) SSL_set1_host(ssl, name.c_str());
  } else if (cfg.verify) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str());
  }
  tls_->next_layer().expires_after(timeout);
  co_await tls_->async_handshake(asio::ssl::stream_base::client,
                                 asio::redirect_error(asio::use_awaitable, ec));
  if (!ec) {
    const unsigned char* p = nullptr;
    unsigned int len = 0;
    SSL_get0_alpn_selected(ssl, &p, &len);
    alpn.assign(reinterpret_cast<const char*>(p), len);
  }
  co_return ec;
}

}  // namespace hsp::http1
