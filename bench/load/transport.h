// A TCP connection with optional TLS, driven by readiness instead of asio::ssl's per-record
// operations: OpenSSL reads and writes the non-blocking socket itself (SSL_set_fd), and the
// caller waits with socket().async_wait(). One readable event then drains every TLS record the
// kernel holds and one write carries every request of a round, as h2load does: with
// asio::ssl::stream each record is its own read completion, which cost one write per response.
#pragma once

#include <sys/types.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>

#include "connection.h"

namespace hsp::bench {

class Transport {
 public:
  enum class Wait { none, read, write };

  // ctx null: plain TCP.
  Transport(boost::asio::io_context& io, std::shared_ptr<boost::asio::ssl::context> ctx);
  ~Transport();
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  boost::asio::ip::tcp::socket& socket() { return socket_; }
  bool tls() const { return ctx_ != nullptr; }

  // After the TCP connect: non-blocking, TCP_NODELAY, and the SSL object (SNI, verification).
  bool attach(const Endpoint& ep, std::string& error);
  // One step of the TLS handshake: true when done; else `wait` says what to wait for (none:
  // failed, see error).
  bool handshake(Wait& wait, std::string& error);
  std::string alpn() const;

  // > 0: bytes; 0: would block (`wait` set); -1: the peer closed (error empty) or an error.
  ssize_t read(char* buf, size_t n, Wait& wait, std::string& error);
  ssize_t write(const char* buf, size_t n, Wait& wait, std::string& error);

  uint64_t bytes_in() const;
  uint64_t bytes_out() const;
  void close();

 private:
  std::shared_ptr<boost::asio::ssl::context> ctx_;
  boost::asio::ip::tcp::socket socket_;
  SSL* ssl_ = nullptr;
  uint64_t bytes_in_ = 0;
  uint64_t bytes_out_ = 0;
};

}  // namespace hsp::bench
