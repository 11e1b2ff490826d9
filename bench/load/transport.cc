#include "transport.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "tls.h"

namespace hsp::bench {

namespace {

std::string ssl_error_text(int ssl_err) {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
  }
  if (ssl_err == SSL_ERROR_SYSCALL) return errno ? std::strerror(errno) : "connection closed";
  return "TLS error " + std::to_string(ssl_err);
}

// An OpenSSL call that could not go on for want of readiness: which one to wait for. False for
// every other outcome.
bool wants_readiness(int ssl_error, Transport::Wait& wait) {
  if (ssl_error == SSL_ERROR_WANT_READ) {
    wait = Transport::Wait::read;
    return true;
  }
  if (ssl_error == SSL_ERROR_WANT_WRITE) {
    wait = Transport::Wait::write;
    return true;
  }
  return false;
}

}  // namespace

Transport::Transport(boost::asio::io_context& io, std::shared_ptr<boost::asio::ssl::context> ctx)
    : ctx_(std::move(ctx)), socket_(io) {}

Transport::~Transport() {
  if (ssl_) SSL_free(ssl_);
}

bool Transport::attach(const Endpoint& ep, std::string& error) {
  boost::system::error_code ec;
  socket_.non_blocking(true, ec);
  if (ec) {
    error = "non-blocking socket: " + ec.message();
    return false;
  }
  socket_.set_option(boost::asio::ip::tcp::no_delay(true), ec);
  if (!ctx_) return true;
  ssl_ = SSL_new(ctx_->native_handle());
  if (!ssl_ || SSL_set_fd(ssl_, socket_.native_handle()) != 1) {
    error = "cannot create the TLS connection";
    return false;
  }
  // Partial writes: a write that would block keeps what was sent, as a plain socket does.
  SSL_set_mode(ssl_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // Read ahead: one read(2) takes every record the kernel holds, not one read per record. The
  // caller always reads until SSL says it wants more, so nothing stays unseen in the buffer.
  SSL_set_read_ahead(ssl_, 1);
  SSL_set_connect_state(ssl_);
  return configure_client_ssl(ssl_, ep, error);
}

bool Transport::handshake(Wait& wait, std::string& error) {
  ERR_clear_error();
  int rc = SSL_do_handshake(ssl_);
  if (rc == 1) return true;
  int err = SSL_get_error(ssl_, rc);
  if (!wants_readiness(err, wait)) {
    wait = Wait::none;
    error = handshake_failure(ssl_, ssl_error_text(err));
  }
  return false;
}

std::string Transport::alpn() const {
  return ssl_ ? selected_alpn(ssl_) : std::string();
}

ssize_t Transport::read(char* buf, size_t n, Wait& wait, std::string& error) {
  if (!ssl_) {
    ssize_t r = ::recv(socket_.native_handle(), buf, n, 0);
    if (r > 0) {
      bytes_in_ += size_t(r);
      return r;
    }
    if (r == 0) return -1;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      wait = Wait::read;
      return 0;
    }
    error = std::strerror(errno);
    return -1;
  }
  ERR_clear_error();
  errno = 0;
  int r = SSL_read(ssl_, buf, int(std::min<size_t>(n, 1 << 30)));
  if (r > 0) return r;
  int err = SSL_get_error(ssl_, r);
  if (wants_readiness(err, wait)) return 0;
  if (err == SSL_ERROR_ZERO_RETURN) return -1;  // close_notify
  if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0) {
    return -1;  // closed without close_notify
  }
  error = ssl_error_text(err);
  return -1;
}

ssize_t Transport::write(const char* buf, size_t n, Wait& wait, std::string& error) {
  if (!ssl_) {
    ssize_t r = ::send(socket_.native_handle(), buf, n, MSG_NOSIGNAL);
    if (r >= 0) {
      bytes_out_ += size_t(r);
      if (r == 0) wait = Wait::write;
      return r;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      wait = Wait::write;
      return 0;
    }
    error = std::strerror(errno);
    return -1;
  }
  ERR_clear_error();
  int r = SSL_write(ssl_, buf, int(std::min<size_t>(n, 1 << 30)));
  if (r > 0) return r;
  int err = SSL_get_error(ssl_, r);
  if (wants_readiness(err, wait)) return 0;
  error = ssl_error_text(err);
  return -1;
}

uint64_t Transport::bytes_in() const {
  return ssl_ ? tls_bytes_in(ssl_) : bytes_in_;
}
uint64_t Transport::bytes_out() const {
  return ssl_ ? tls_bytes_out(ssl_) : bytes_out_;
}

void Transport::close() {
  boost::system::error_code ignored;
  socket_.close(ignored);
}

}  // namespace hsp::bench
