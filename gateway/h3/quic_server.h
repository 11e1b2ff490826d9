// The server side of QUIC + HTTP/3 (ngtcp2 0.12 with the GnuTLS crypto helper, nghttp3 0.8),
// with no I/O of its own: the data plane owns the UDP socket and the clock, this class owns the
// connections, their TLS 1.3 handshakes and the HTTP/3 framing.
//
// How a UDP loop drives it (one QuicServer per thread; the class is not thread-safe):
//
//   auto server = QuicServer::create(credentials, options);
//   loop:
//     wait for the socket to be readable, at most until server->expiry() (steady ns)
//     for each datagram read: server->receive(bytes, local, remote, now_ns())
//     if now_ns() >= server->expiry(): server->handle_expiry(now_ns())
//     for (auto& d : server->take_datagrams()) sendto(d.remote, d.data)
//
// What it does today (issue 7 groundwork): accepts QUIC v1 connections (Version Negotiation for
// other versions), completes TLS 1.3 with the given certificates (GnuTLS picks one by SNI when
// several are loaded), requires ALPN "h3" and refuses any other with TLS alert 120
// (no_application_protocol), keeps ngtcp2's 3x anti-amplification limit before the client's
// address is validated, announces a 30 s idle timeout and 100 concurrent bidirectional streams,
// and answers every HTTP/3 request with a fixed `200 hello`. A malformed request gets its stream
// reset (H3_MESSAGE_ERROR) and the connection goes on. Handshakes give up after ngtcp2's 10 s.
//
// Missing, each needed before this serves traffic (see issue 7):
// - proxying through the engine's routes (the fixed response stands in for it);
// - Retry tokens (address validation under load): a flood of Initials creates connections up
//   to Options::max_connections and later ones are dropped, so new clients are refused while a
//   flood lasts;
// - stateless resets for packets of unknown connections (they are dropped; a client whose
//   connection we lost waits for its idle timeout instead of learning it at once);
// - the closing and draining periods: a closed connection is forgotten at once, so a lost
//   CONNECTION_CLOSE is not repeated and late packets of it are dropped unanswered;
// - request bodies are read and discarded; no GOAWAY / graceful drain yet;
// - certificates are fixed at creation (no swap with the routing snapshot yet);
// - expiry() scans every connection: fine for tests, a timer heap is needed for thousands;
// - 0-RTT (off, as the issue wants by default), GSO/sendmmsg batching, ECN, and connection-ID
//   routing between threads (one QuicServer sees only its own CIDs).
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "h3/common.h"  // now_ns(): the clock receive() and handle_expiry() expect
#include "util/error.h"

namespace hsp::tls {
class CertifiedKey;
}

namespace hsp::h3 {

// A UDP endpoint address (IPv4 or IPv6) as the socket calls and ngtcp2 take it.
struct Address {
  sockaddr_storage storage{};
  socklen_t len = 0;

  static Address from(const sockaddr* addr, socklen_t len);
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
  std::string str() const;  // "127.0.0.1:443", "[::1]:443"; for logs
};

// One datagram to send: from `local` (the address the client sent to, which matters once the
// socket is bound to a wildcard address) to `remote`.
struct Datagram {
  Address local;
  Address remote;
  std::vector<uint8_t> data;
};

// The certificates offered in handshakes, loaded into GnuTLS once and shared read-only by every
// connection (GnuTLS credentials may be used by sessions on any thread). With several
// certificates GnuTLS chooses by the client's SNI, falling back to the first one.
class ServerCredentials {
 public:
  // cert_pem: the leaf, then its chain; key_pem: the private key (PKCS#8 or traditional form).
  static Result<std::shared_ptr<ServerCredentials>> from_pem(std::string_view cert_pem,
                                                             std::string_view key_pem);
  static Result<std::shared_ptr<ServerCredentials>> from_certified_key(
      const tls::CertifiedKey& key);

  ServerCredentials(const ServerCredentials&) = delete;
  ServerCredentials& operator=(const ServerCredentials&) = delete;
  ~ServerCredentials();

  // Adds one more certificate + key; `where` names it in the error.
  Result<bool> add_pem(std::string_view cert_pem, std::string_view key_pem,
                       const std::string& where);

  void* native() const { return cred_; }  // gnutls_certificate_credentials_t

 private:
  ServerCredentials() = default;
  void* cred_ = nullptr;
};

struct ServerOptions {
  uint64_t idle_timeout_ns = 30'000'000'000;  // announced max_idle_timeout
  uint64_t max_bidi_streams = 100;            // concurrent requests per connection
  size_t max_connections = 10'000;            // further Initials are dropped (no Retry yet)
};

struct ServerStats {
  uint64_t connections_accepted = 0;
  uint64_t handshakes_completed = 0;
  uint64_t handshakes_failed = 0;  // closed before the handshake completed (TLS or QUIC error)
  uint64_t requests_answered = 0;
  uint64_t version_negotiations = 0;
  uint64_t datagrams_dropped = 0;  // unknown connection, unparsable, or over max_connections
};

class Connection;

class QuicServer {
 public:
  static Result<std::unique_ptr<QuicServer>> create(
      std::shared_ptr<const ServerCredentials> credentials, ServerOptions options = {});

  QuicServer(const QuicServer&) = delete;
  QuicServer& operator=(const QuicServer&) = delete;
  ~QuicServer();

  // One datagram as received: `local` is the address it was sent to, `remote` the sender.
  void receive(std::span<const uint8_t> data, const Address& local, const Address& remote,
               uint64_t now);

  // The datagrams produced since the last call, in order.
  std::vector<Datagram> take_datagrams();

  // The earliest time (steady ns) at which handle_expiry() has work; UINT64_MAX when none.
  uint64_t expiry() const;
  void handle_expiry(uint64_t now);

  size_t connection_count() const { return connections_.size(); }
  const ServerStats& stats() const { return stats_; }

 private:
  friend class Connection;

  QuicServer(std::shared_ptr<const ServerCredentials> credentials, ServerOptions options);

  void accept(std::span<const uint8_t> data, const Address& local, const Address& remote,
              uint64_t now);
  void send_version_negotiation(const uint8_t* dcid, size_t dcidlen, const uint8_t* scid,
                                size_t scidlen, const Address& local, const Address& remote);
  // Forgets a connection that has closed (after its last call into the libraries returned).
  void reap(Connection* conn);

  // Connection IDs (raw bytes) -> connection. Every CID a connection issued is registered, and
  // the client's first DCID too, so that retransmitted Initials find their connection.
  bool add_cid(std::string cid, Connection* conn);  // false: the CID is taken
  void remove_cid(const std::string& cid);

  std::shared_ptr<const ServerCredentials> credentials_;
  ServerOptions options_;
  std::vector<uint8_t> reset_secret_;  // static key for stateless reset tokens
  std::unordered_map<std::string, Connection*> cids_;
  std::unordered_map<Connection*, std::unique_ptr<Connection>> connections_;
  std::vector<Datagram> out_;
  ServerStats stats_;
};

}  // namespace hsp::h3
