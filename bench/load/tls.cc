#include "tls.h"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <map>
#include <mutex>
#include <tuple>

namespace hsp::bench {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;

std::shared_ptr<ssl::context> client_context(const Endpoint& ep, std::string_view alpn,
                                             std::string& error) {
  static std::mutex mu;
  static std::map<std::tuple<std::string, bool, std::string>, std::shared_ptr<ssl::context>> cache;
  std::lock_guard lock(mu);
  auto key = std::make_tuple(ep.ca_file, ep.insecure, std::string(alpn));
  if (auto it = cache.find(key); it != cache.end()) return it->second;

  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  boost::system::error_code ec;
  if (ep.insecure) {
    ctx->set_verify_mode(ssl::verify_none);
  } else {
    ctx->set_verify_mode(ssl::verify_peer);
    if (!ep.ca_file.empty()) {
      ctx->load_verify_file(ep.ca_file, ec);
      if (ec) {
        error = "cannot load CA file '" + ep.ca_file + "': " + ec.message();
        return nullptr;
      }
    } else {
      ctx->set_default_verify_paths(ec);
      if (ec) {
        error = "cannot load the system CA store: " + ec.message();
        return nullptr;
      }
    }
  }
  if (!alpn.empty() &&
      SSL_CTX_set_alpn_protos(native, reinterpret_cast<const unsigned char*>(alpn.data()),
                              unsigned(alpn.size())) != 0) {
    error = "cannot set ALPN";
    return nullptr;
  }
  cache.emplace(key, ctx);
  return ctx;
}

bool configure_client_ssl(SSL* ssl, const Endpoint& ep, std::string& error) {
  if (!ep.sni.empty() && SSL_set_tlsext_host_name(ssl, ep.sni.c_str()) != 1) {
    error = "cannot set SNI '" + ep.sni + "'";
    return false;
  }
  if (ep.insecure) return true;
  const std::string& name = ep.verify_host.empty() ? ep.sni : ep.verify_host;
  if (name.empty()) return true;  // the chain is still verified
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  // An IP literal must match an iPAddress SAN, a name a dNSName (RFC 6125), as curl checks.
  if (X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) == 1) return true;
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (SSL_set1_host(ssl, name.c_str()) != 1) {
    error = "cannot set the host name to verify: '" + name + "'";
    return false;
  }
  return true;
}

std::string handshake_failure(SSL* ssl, const std::string& fallback) {
  // Not just "certificate verify failed": which check failed and why.
  long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK)
    return std::string("certificate: ") + X509_verify_cert_error_string(verify);
  return fallback;
}

std::string selected_alpn(SSL* ssl) {
  const unsigned char* p = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(ssl, &p, &len);
  return p ? std::string(reinterpret_cast<const char*>(p), len) : std::string();
}

uint64_t tls_bytes_in(SSL* ssl) {
  BIO* b = SSL_get_rbio(ssl);
  return b ? BIO_number_read(b) : 0;
}

uint64_t tls_bytes_out(SSL* ssl) {
  BIO* b = SSL_get_wbio(ssl);
  return b ? BIO_number_written(b) : 0;
}

bool probe_alpn(const Endpoint& ep, std::string_view alpn, double timeout_s, std::string& proto,
                ErrorKind& kind, std::string& error) {
  auto ctx = client_context(ep, alpn, error);
  if (!ctx) {
    kind = ErrorKind::tls;
    return false;
  }
  asio::io_context io;
  ssl::stream<asio::ip::tcp::socket> stream(io, *ctx);
  if (!configure_client_ssl(stream.native_handle(), ep, error)) {
    kind = ErrorKind::tls;
    return false;
  }
  boost::system::error_code addr_ec;
  auto addr = asio::ip::make_address(ep.connect_host, addr_ec);
  if (addr_ec) {
    kind = ErrorKind::connect;
    error = "not an address: " + ep.connect_host;
    return false;
  }
  asio::steady_timer timer(io);
  timer.expires_after(std::chrono::nanoseconds(int64_t(timeout_s * 1e9)));
  bool timed_out = false;
  timer.async_wait([&](const boost::system::error_code& ec) {
    if (ec) return;
    timed_out = true;
    boost::system::error_code ignored;
    stream.lowest_layer().close(ignored);
  });
  bool ok = false;
  stream.lowest_layer().async_connect(
      {addr, ep.connect_port}, [&](const boost::system::error_code& ec) {
        if (ec) {
          kind = timed_out ? ErrorKind::timeout : ErrorKind::connect;
          error = "connect to " + ep.connect_host + ":" + std::to_string(ep.connect_port) + ": " +
                  ec.message();
          timer.cancel();
          return;
        }
        stream.async_handshake(ssl::stream_base::client, [&](const boost::system::error_code& hec) {
          timer.cancel();
          if (hec) {
            kind = timed_out ? ErrorKind::timeout : ErrorKind::tls;
            error = "TLS handshake: " +
                    (timed_out ? hec.message()
                               : handshake_failure(stream.native_handle(), hec.message()));
            return;
          }
          proto = selected_alpn(stream.native_handle());
          ok = true;
        });
      });
  io.run();
  boost::system::error_code ignored;
  stream.lowest_layer().close(ignored);
  return ok;
}

}  // namespace hsp::bench
