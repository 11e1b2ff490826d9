// Private to gateway/http1/: the TLS side of an HTTPS listener. Only session.cc and server.cc
// include it, so the ssl_stream templates are compiled in those two files only.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <memory>

#include "tls/server_context.h"

namespace hsp::http1 {

using TlsStream = boost::beast::ssl_stream<boost::beast::tcp_stream>;

// One per HTTPS listener, shared by its sessions: a connection keeps it alive past a reload that
// closes the listener, since its SSL* points into the SSL_CTX and the ServerContext's callbacks.
struct TlsContext {
  explicit TlsContext(std::unique_ptr<tls::ServerContext> s)
      : server(std::move(s)), ssl(take_ref(server->native())) {}

  std::unique_ptr<tls::ServerContext> server;  // owns the SSL_CTX; destroyed last
  boost::asio::ssl::context ssl;               // Asio's handle on the same SSL_CTX (own ref)

 private:
  static SSL_CTX* take_ref(SSL_CTX* ctx) {
    SSL_CTX_up_ref(ctx);
    return ctx;
  }
};

}  // namespace hsp::http1
