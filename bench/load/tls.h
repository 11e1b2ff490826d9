// TLS client plumbing shared by the h1 and h2 connections (OpenSSL through asio::ssl).
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>
#include <string_view>

#include "connection.h"

namespace hsp::bench {

// ALPN lists in wire format.
inline constexpr std::string_view kAlpnH2 = "\x02h2";
inline constexpr std::string_view kAlpnH1 = "\x08http/1.1";
inline constexpr std::string_view kAlpnAuto = "\x02h2\x08http/1.1";

// One client context per (CA file, insecure, ALPN list) for the whole process: loading the
// system store costs milliseconds, and reconnects must not pay it again. SSL_CTX is safe to
// share between threads for creating connections. Null with `error` set when the CA file does
// not load.
std::shared_ptr<boost::asio::ssl::context> client_context(const Endpoint& ep, std::string_view alpn,
                                                          std::string& error);

// Per connection: SNI and the host (or IP) check of the certificate.
bool configure_client_ssl(SSL* ssl, const Endpoint& ep, std::string& error);

// Why a client handshake failed, for the report: OpenSSL's reason when the certificate did
// not verify ("certificate: self-signed certificate", X509_verify_cert_error_string), else
// `fallback` (the TLS layer's own message).
std::string handshake_failure(SSL* ssl, const std::string& fallback);

// The ALPN protocol the server selected ("" when none).
std::string selected_alpn(SSL* ssl);

// Raw TLS bytes through the connection so far (asio::ssl keeps the socket side in a BIO pair,
// so the SSL object's BIO counts record bytes as they come from or go to the socket).
uint64_t tls_bytes_in(SSL* ssl);
uint64_t tls_bytes_out(SSL* ssl);

// Connects once, handshakes offering `alpn`, and returns the protocol the server chose: how
// `--proto auto` learns whether an https:// server speaks h2, before the run. Returns false
// with `kind` and `error` when the server cannot be reached or the handshake fails.
bool probe_alpn(const Endpoint& ep, std::string_view alpn, double timeout_s, std::string& proto,
                ErrorKind& kind, std::string& error);

}  // namespace hsp::bench

namespace boost::asio {
class io_context;
}
namespace hsp::bench {
// A connection that only reports `why` through on_closed (posted): how a factory fails when
// TLS cannot be set up (defined in h1_connection.cc).
std::unique_ptr<Connection> make_failed_connection(boost::asio::io_context& io,
                                                   ConnectionEvents& events, ErrorKind why,
                                                   std::string detail);
}  // namespace hsp::bench
