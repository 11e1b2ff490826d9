// hsp-bench's seam between the load driver and the protocols. The driver (driver.cc) decides
// when a request starts and measures it; a Connection only carries requests over one transport
// connection (HTTP/1.1, HTTP/2 over TLS or h2c, HTTP/3) and says when each one ended.
//
// Threading: a Connection lives on one io_context thread and is driven only from it; every
// ConnectionEvents call comes from that thread, never from inside submit() or start() (post
// instead), so the driver may submit or destroy from any event except during the call itself.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace hsp::bench {

enum class Proto { h1, h2, h2c, h3 };

// Why a request or a connection failed; the report counts errors by these names.
enum class ErrorKind {
  none,
  connect,   // TCP connect or QUIC handshake did not reach the server
  tls,       // TLS handshake or certificate verification failed
  protocol,  // the server broke HTTP framing (bad status line, h2/h3 protocol error)
  reset,     // the stream or connection was reset / closed before the response ended
  timeout,   // no response within the request timeout
};
const char* error_name(ErrorKind kind);

// Where to connect and what to say. connect_host is a numeric address (the driver resolves
// names and applies --connect-to); authority is what goes in Host / :authority; sni is empty
// for no SNI (an IP literal URL without --sni).
struct Endpoint {
  Proto proto = Proto::h1;
  std::string connect_host;
  uint16_t connect_port = 0;
  std::string authority;
  std::string sni;
  bool tls = false;
  std::string ca_file;  // empty: the system store (unless insecure)
  bool insecure = false;
  // The name or IP literal the server certificate must match (the URL's host, which
  // --connect-to does not change); empty: sni.
  std::string verify_host;
};

// The request every Connection sends; fixed for the whole run and shared by all connections.
struct RequestTemplate {
  std::string method = "GET";
  std::string path = "/";                                    // path and query
  std::vector<std::pair<std::string, std::string>> headers;  // extra fields, as given
  std::shared_ptr<const std::string> body;                   // null: no body
};

struct Completion {
  int status = 0;           // final status, 0 when the request failed
  uint64_t body_bytes = 0;  // response body bytes received
  ErrorKind error = ErrorKind::none;
  // The server never processed the request (h2: above a GOAWAY's last stream id or
  // REFUSED_STREAM, RFC 9113 §8.7; h3: at or above a GOAWAY's id, RFC 9114 §5.2): not an
  // error, the driver sends it again on another connection. `error` is set too, so that a
  // caller ignoring the flag still sees a failure.
  bool refused = false;
};

class Connection;

class ConnectionEvents {
 public:
  virtual ~ConnectionEvents() = default;
  // Handshakes are done (TCP, TLS + ALPN, QUIC): the connection accepts submit() calls.
  virtual void on_ready(Connection& conn) = 0;
  // A request submitted with `tag` ended, successfully or not. Called exactly once per submit.
  virtual void on_complete(Connection& conn, uint64_t tag, const Completion& done) = 0;
  // The connection is finished (error, server closed it, or after shutdown()); requests still
  // in flight were completed with an error before this call. Called exactly once.
  virtual void on_closed(Connection& conn, ErrorKind why, const std::string& detail) = 0;
};

class Connection {
 public:
  virtual ~Connection() = default;
  // Connects; on_ready or on_closed follows.
  virtual void start() = 0;
  // How many more requests may be submitted now (HTTP/1.1: 1 without pipelining; h2/h3: the
  // stream limit the driver asked for, lowered by the server's).
  virtual uint32_t free_slots() const = 0;
  // Sends one request of the template; requires free_slots() > 0.
  virtual void submit(uint64_t tag) = 0;
  // Closes after nothing (graceful = false: at once, in-flight requests fail with `reset`).
  virtual void shutdown(bool graceful) = 0;
  // Bytes read from and written to the network so far (TLS records and QUIC packets counted
  // as they arrive on the socket), for the throughput figure.
  virtual uint64_t bytes_in() const = 0;
  virtual uint64_t bytes_out() const = 0;
};

// What the driver owns for a connection whose state (Impl) is shared with its pending I/O
// handlers, which may outlive it: destroying it only detaches the Impl (no event reaches the
// driver any more); the Impl goes when its last handler has run. `make` builds the Impl given
// the Connection that events must name.
template <class Impl>
class DetachingConnection final : public Connection {
 public:
  template <class Make>
  explicit DetachingConnection(Make&& make) : impl_(make(static_cast<Connection&>(*this))) {}
  ~DetachingConnection() override { impl_->detach(); }

  void start() override { impl_->start(); }
  uint32_t free_slots() const override { return impl_->free_slots(); }
  void submit(uint64_t tag) override { impl_->submit(tag); }
  void shutdown(bool graceful) override { impl_->shutdown(graceful); }
  uint64_t bytes_in() const override { return impl_->bytes_in(); }
  uint64_t bytes_out() const override { return impl_->bytes_out(); }

 private:
  std::shared_ptr<Impl> impl_;
};

// One per protocol family; each lives in its own file (h1_connection.cc, h2_connection.cc,
// h3_connection.cc). max_streams is the wanted concurrency per connection (ignored by h1).
std::unique_ptr<Connection> make_h1_connection(boost::asio::io_context& io, const Endpoint& ep,
                                               const RequestTemplate& req,
                                               ConnectionEvents& events);
std::unique_ptr<Connection> make_h2_connection(boost::asio::io_context& io, const Endpoint& ep,
                                               const RequestTemplate& req, ConnectionEvents& events,
                                               uint32_t max_streams);
std::unique_ptr<Connection> make_h3_connection(boost::asio::io_context& io, const Endpoint& ep,
                                               const RequestTemplate& req, ConnectionEvents& events,
                                               uint32_t max_streams);

}  // namespace hsp::bench
