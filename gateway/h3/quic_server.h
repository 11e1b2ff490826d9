// The server side of QUIC + HTTP/3 (ngtcp2 0.12 with the GnuTLS crypto helper, nghttp3 0.8),
// with no I/O of its own: the data plane owns the UDP socket and the clock, this class owns the
// connections, their TLS 1.3 handshakes and the HTTP/3 framing, and hands requests to a Handler
// the way the HTTP/2 codec (gateway/h2/server.h) does.
//
// How a UDP loop drives it (one QuicServer per thread; the class is not thread-safe):
//
//   auto server = QuicServer::create(credentials, options);   // options.handler set
//   loop:
//     wait for the socket to be readable, at most until server->expiry() (steady ns)
//     for each datagram read: server->receive(bytes, local, remote, now_ns())
//     if now_ns() >= server->expiry(): server->handle_expiry(now_ns())
//     after the handler's side called submit_response/send_data/...: server->flush(now_ns())
//     for (auto& d : server->take_datagrams()) sendto(d.remote, d.data)
//
// What it does: accepts QUIC v1 connections (Version Negotiation for other versions), completes
// TLS 1.3 with the certificate chosen by SNI (ServerOptions::select_credentials, else the fixed
// credentials), requires ALPN "h3" and refuses any other with TLS alert 120
// (no_application_protocol), keeps ngtcp2's 3x anti-amplification limit before the client's
// address is validated, announces a 30 s idle timeout and 100 concurrent bidirectional streams.
// Requests are validated the way the HTTP/2 codec validates them (RFC 9114 §4.1.2, §4.2: the
// same field rules as HTTP/2; malformed: the stream is reset with H3_MESSAGE_ERROR and the
// connection goes on; a head over max_header_bytes/max_header_count gets a 431; CONNECT a 501)
// and reach the handler as http::Request (version 30). Request bodies are flow-controlled by the
// handler (credit goes back on consume()), response bodies are held per stream until the client
// acknowledges them, at most stream_buffer_bytes (send_data() takes what fits; on_send_ready
// tells when there is room again). shutdown_graceful() sends GOAWAY on every connection and
// refuses new ones; a connection closes (CONNECTION_CLOSE, H3_NO_ERROR) once its open requests
// are done. Handshakes give up after ngtcp2's 10 s.
//
// Connection IDs: with ServerOptions::cid_prefix set, every connection ID this server issues
// starts with that byte, so that a process with one QuicServer per thread can route a packet to
// the thread that owns its connection (owner_of()) also after the client's address changed.
//
// Address validation (RFC 9000 §8.1.2): with ServerOptions::always_retry, or when a new
// connection would put more than ServerOptions::retry_above_handshakes in their handshake (a
// flood of Initials, spoofed or not), a client's first Initial gets a Retry instead; the Initial
// that comes back with the Retry's token (valid 10 s, bound to the client's address and port)
// proves the address and is accepted whatever the load. An invalid or expired Retry token gets
// CONNECTION_CLOSE INVALID_TOKEN without any state. Tokens are sealed with a per-server secret.
//
// Ends (RFC 9000 §10): a connection we close stays for 3 PTO in its closing period, answering
// packets of it with the same CONNECTION_CLOSE (the 1st, 2nd, 4th, 8th... packet, and never more
// than 3x the bytes received in the period); one the client closed stays 3 PTO silent
// (draining), so that its late packets get no stateless reset. Both keep only the connection
// IDs, the addresses and the close packet, not the libraries' state; the handler hears that the
// streams are gone when the connection closes, not when the period ends. An idle or
// handshake timeout is silent and forgets the connection at once (§10.1). A short-header packet
// for a connection ID we do not know (lost state, expired period) gets a stateless reset
// (§10.3), with the token derived from that CID as in the transport parameters: smaller than
// the packet (so that two endpoints cannot loop), never for a packet too small to be a QUIC
// packet of ours, and at most ServerOptions::stateless_resets_per_second.
//
// Missing (each with its cost):
// - NEW_TOKEN: a client that comes back gets a Retry round trip again while we are under load;
// - the secrets (reset, token) are per server and per process start: after a restart, clients
//   of the old process get no useful stateless reset (they time out), and a Retry token only
//   comes back to its server when the data plane routes it with owner_of() (or by 4-tuple);
// - expiry() scans every connection and every closing/draining period: linear in connections
//   per loop turn; a timer heap is needed for tens of thousands;
// - 0-RTT (off, as wanted by default) and ECN. (GSO/sendmmsg batching is the I/O side's:
//   gateway/http1/h3_endpoint.cc.)
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "h3/common.h"  // now_ns(): the clock receive() and handle_expiry() expect
#include "http/message.h"
#include "util/error.h"

namespace hsp::tls {
class CertifiedKey;
}

struct ngtcp2_pkt_hd;

namespace hsp::h3 {

// A UDP endpoint address (IPv4 or IPv6) as the socket calls and ngtcp2 take it.
struct Address {
  sockaddr_storage storage{};
  socklen_t len = 0;

  static Address from(const sockaddr* addr, socklen_t len);
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
  std::string str() const;  // "127.0.0.1:443", "[::1]:443"; for logs
  std::string ip() const;   // "127.0.0.1", "::1" (an IPv4-mapped IPv6 address as IPv4)
  uint16_t port() const;
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

// HTTP/3 error codes the handler side uses (RFC 9114 §8.1).
inline constexpr uint64_t kH3NoError = 0x100;
inline constexpr uint64_t kH3InternalError = 0x102;
inline constexpr uint64_t kH3RequestCancelled = 0x10c;

// The data plane's side, one per QuicServer. Calls come from inside receive(), handle_expiry()
// and flush(); a handler may call back into the server from any of them.
class Handler {
 public:
  virtual ~Handler() = default;
  // A complete, validated request head on stream `stream_id` of connection `conn_id`.
  // `end_stream`: there is no body (no on_request_end follows).
  virtual void on_request(uint64_t conn_id, int64_t stream_id, http::Request&& request,
                          bool end_stream) = 0;
  // Request body bytes, valid only during the call; call consume() once they are forwarded.
  virtual void on_request_data(uint64_t conn_id, int64_t stream_id, std::string_view data) = 0;
  virtual void on_request_trailers(uint64_t conn_id, int64_t stream_id,
                                   http::HeaderMap&& trailers) = 0;
  virtual void on_request_end(uint64_t conn_id, int64_t stream_id) = 0;
  // The client reset the stream or stopped reading the response: abandon it.
  virtual void on_stream_reset(uint64_t conn_id, int64_t stream_id) = 0;
  // The stream is gone (completed, reset either way, or its connection ended); only for
  // streams that had on_request. No call for this stream after this one.
  virtual void on_stream_closed(uint64_t conn_id, int64_t stream_id) = 0;
  // send_data() has room again on this stream.
  virtual void on_send_ready(uint64_t conn_id, int64_t stream_id) = 0;
  // The connection is gone (after on_stream_closed for each of its streams).
  virtual void on_connection_closed(uint64_t /*conn_id*/) {}
};

struct ServerOptions {
  Handler* handler = nullptr;                 // required
  uint64_t idle_timeout_ns = 30'000'000'000;  // announced max_idle_timeout
  uint64_t max_bidi_streams = 100;            // concurrent requests per connection
  size_t max_connections = 10'000;            // further Initials are dropped
  uint32_t max_header_bytes = 32 * 1024;      // RFC 7541 §4.1-style sizes, as HTTP/2 (431)
  uint32_t max_header_count = 100;
  size_t stream_buffer_bytes = 256 * 1024;  // response bytes held per stream until acknowledged
  // The certificate for a handshake, by SNI ("" when the client sent none); null: refuse the
  // handshake (unrecognized_name). Unset: the credentials given to create() serve every name.
  std::function<std::shared_ptr<const ServerCredentials>(std::string_view sni)> select_credentials;
  // Connection ids for logs and Request::conn_id; unset: 1, 2, 3... per server.
  std::function<uint64_t()> next_conn_id;
  // First byte of every connection ID issued (see owner_of()); unset: random.
  std::optional<uint8_t> cid_prefix;
  // Address validation with Retry (RFC 9000 §8.1.2): for every new client, or only when
  // accepting one more would put more than retry_above_handshakes connections in their
  // handshake at once (under load: handshakes are what a flood of spoofed Initials costs).
  bool always_retry = false;
  size_t retry_above_handshakes = 100;
  // Stateless resets (RFC 9000 §10.3) sent at most this many per second, in bursts of at most
  // as many; 0: none.
  uint32_t stateless_resets_per_second = 100;
};

struct ServerStats {
  uint64_t connections_accepted = 0;
  uint64_t handshakes_completed = 0;
  uint64_t handshakes_failed = 0;  // closed before the handshake completed (TLS or QUIC error)
  uint64_t requests_received = 0;  // requests handed to the handler
  uint64_t version_negotiations = 0;
  uint64_t datagrams_dropped = 0;  // unknown connection, unparsable, or over max_connections
  uint64_t retries_sent = 0;
  uint64_t tokens_rejected = 0;  // Initials with an invalid or expired Retry token
  uint64_t stateless_resets_sent = 0;
};

class Connection;

class QuicServer {
 public:
  // `credentials` may be null when options.select_credentials is set.
  static Result<std::unique_ptr<QuicServer>> create(
      std::shared_ptr<const ServerCredentials> credentials, ServerOptions options);

  QuicServer(const QuicServer&) = delete;
  QuicServer& operator=(const QuicServer&) = delete;
  ~QuicServer();

  // The cid_prefix byte of the server that owns the connection a datagram belongs to, when the
  // datagram names one of its connection IDs (short header, or a long-header packet other than
  // a client's Initial/0-RTT, whose DCID the client chose); nullopt otherwise. An Initial that
  // carries a Retry token names the server that sent the Retry (its DCID is the Retry's SCID):
  // only that server can verify the token.
  static std::optional<uint8_t> owner_of(std::span<const uint8_t> data);

  // One datagram as received: `local` is the address it was sent to, `remote` the sender.
  void receive(std::span<const uint8_t> data, const Address& local, const Address& remote,
               uint64_t now);

  // The datagrams produced since the last call, in order.
  std::vector<Datagram> take_datagrams();

  // The earliest time (steady ns) at which handle_expiry() has work; UINT64_MAX when none.
  uint64_t expiry() const;
  void handle_expiry(uint64_t now);

  // Writes what the handler's calls queued (responses, body bytes, resets, credit).
  void flush(uint64_t now);
  bool needs_flush() const { return !dirty_.empty(); }

  // --- the handler's side ---
  // Response head; `end_stream`: no body follows. Field names are lower-cased and
  // connection-specific fields dropped (the same rules as HTTP/2).
  Result<bool> submit_response(uint64_t conn_id, int64_t stream_id, const http::ResponseHead& head,
                               bool end_stream);
  // Appends body bytes; returns how many were taken (0 when the stream's buffer is full: wait
  // for on_send_ready). Error when the stream or its connection is gone.
  Result<size_t> send_data(uint64_t conn_id, int64_t stream_id, std::string_view data);
  // Ends the response after the buffered body, with trailers if given.
  Result<bool> end_stream(uint64_t conn_id, int64_t stream_id,
                          std::optional<http::HeaderMap> trailers = {});
  // Request body bytes handed to the handler were forwarded: give the client credit back.
  void consume(uint64_t conn_id, int64_t stream_id, size_t n);
  // Resets the stream both ways with an HTTP/3 error code (kH3...).
  void reset_stream(uint64_t conn_id, int64_t stream_id, uint64_t app_error_code);
  // The response is complete and the rest of the request body is not wanted: STOP_SENDING
  // with H3_NO_ERROR (RFC 9114 §4.1.1); the response is not cut.
  void stop_reading(uint64_t conn_id, int64_t stream_id);

  // GOAWAY on every connection (open requests finish, new ones are refused), no new
  // connections; a connection closes once its requests are done. Call flush() after.
  void shutdown_graceful(uint64_t now);
  // Accepts new connections again after shutdown_graceful(); connections that got GOAWAY still
  // close once their requests are done.
  void resume_accepting() { shutting_down_ = false; }
  // Closes every connection at once (CONNECTION_CLOSE H3_NO_ERROR); streams are abandoned.
  void close_all(uint64_t now);
  bool shutting_down() const { return shutting_down_; }

  // Connections, including those in their closing or draining period (at most 3 PTO after
  // they ended: a draining listener waits for them so that a lost CONNECTION_CLOSE is repeated).
  size_t connection_count() const { return connections_.size() + closed_.size(); }
  // Of these, the ones in their closing or draining period (the handler knows them no more).
  size_t closing_count() const { return closed_.size(); }
  const ServerStats& stats() const { return stats_; }

 private:
  friend class Connection;
  struct Closed;  // a connection in its closing or draining period

  QuicServer(std::shared_ptr<const ServerCredentials> credentials, ServerOptions options);

  void accept(std::span<const uint8_t> data, const Address& local, const Address& remote,
              uint64_t now);
  void refuse(std::span<const uint8_t> data, const Address& local, const Address& remote);
  void send_version_negotiation(const uint8_t* dcid, size_t dcidlen, const uint8_t* scid,
                                size_t scidlen, const Address& local, const Address& remote);
  // hd: the client's Initial (from ngtcp2_accept), `size` its datagram's size.
  void send_retry(const ngtcp2_pkt_hd& hd, size_t size, const Address& local, const Address& remote,
                  uint64_t now);
  void send_stateless_reset(const uint8_t* dcid, size_t dcidlen, size_t size, const Address& local,
                            const Address& remote, uint64_t now);
  // A packet for a connection in its closing or draining period.
  void receive_closed(Closed& closed, size_t size);
  // Removes a connection that has ended (after its last call into the libraries returned); one
  // with a closing or draining period goes on as a Closed record until that period ends.
  void reap(Connection* conn);
  void reap_closed(uint64_t now);  // the Closed records whose period is over
  Connection* find(uint64_t conn_id) const;

  // Connection IDs (raw bytes) -> connection. Every CID a connection issued is registered, and
  // the client's first DCID too, so that retransmitted Initials find their connection.
  bool add_cid(std::string cid, Connection* conn);  // false: the CID is taken
  void remove_cid(const std::string& cid);

  std::shared_ptr<const ServerCredentials> credentials_;
  ServerOptions options_;
  std::vector<uint8_t> reset_secret_;  // static key for stateless reset tokens
  std::vector<uint8_t> token_secret_;  // static key for Retry tokens
  std::unordered_map<std::string, Connection*> cids_;
  std::unordered_map<uint64_t, std::unique_ptr<Connection>> connections_;  // by conn_id
  // Connections in their closing or draining period, by a sequence number, and their CIDs.
  std::unordered_map<uint64_t, std::unique_ptr<Closed>> closed_;
  std::unordered_map<std::string, Closed*> closed_cids_;
  uint64_t closed_seq_ = 0;
  std::vector<uint64_t> dirty_;  // connections to be written by flush()
  std::vector<Datagram> out_;
  ServerStats stats_;
  uint64_t conn_counter_ = 0;
  bool shutting_down_ = false;

  size_t handshakes_in_progress_ = 0;  // connections accepted whose handshake is not over
  double reset_allowance_ = 0;         // stateless resets that may be sent now (token bucket)
  uint64_t reset_allowance_at_ = 0;    // when reset_allowance_ was last topped up
};

}  // namespace hsp::h3
