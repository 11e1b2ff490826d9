// The server side of a TLS listener: one SSL_CTX with Mozilla's "intermediate" profile, ALPN,
// certificate choice by SNI through the current routing snapshot, and session tickets whose keys
// rotate. The data plane creates an SSL* per connection from native() and wraps it in its
// stream type; nothing here knows about sockets or Asio.
//
// A client hello whose ALPN list is exactly "acme-tls/1" (an ACME CA validating TLS-ALPN-01,
// RFC 8737) gets AcmeChallenges' challenge certificate for its SNI instead of the site's, and
// acme-tls/1 is selected whatever the listener offers; with no challenge under way for the name
// the handshake fails. The caller must then close without speaking HTTP (selected_alpn()).
#pragma once

#include <openssl/ssl.h>

#include <array>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "tls/cert_selector.h"
#include "util/error.h"

namespace hsp::tls {

// Caddy's `protocols` names ("tls1.2", "tls1.3") to OpenSSL's version numbers. Older versions
// are refused: Caddy does not offer them either.
Result<int> parse_protocol(std::string_view name);

struct ServerOptions {
  int min_version = TLS1_2_VERSION;
  int max_version = TLS1_3_VERSION;
  // In server preference order. A client that offers none of them gets the
  // no_application_protocol alert; a client that sends no ALPN at all gets no protocol and the
  // caller speaks HTTP/1.1.
  std::vector<std::string> alpn = {"h2", "http/1.1"};
  bool session_tickets = true;
  // How long a ticket key encrypts new tickets. The previous key is kept for decryption, so a
  // ticket stays usable for between one and two periods (also the ticket lifetime we announce).
  std::chrono::seconds ticket_key_rotation{std::chrono::hours(12)};
  // Injected so tests can move time forward; the default is the system clock.
  std::function<std::chrono::system_clock::time_point()> now;
};

// Returns the selector of the current routing snapshot; called once per handshake on the
// handshaking thread, so it must be thread-safe and cheap (an atomic shared_ptr load).
using SelectorProvider = std::function<std::shared_ptr<const CertSelector>()>;

class ServerContext {
 public:
  static Result<std::unique_ptr<ServerContext>> create(const ServerOptions& options,
                                                       SelectorProvider provider);
  ~ServerContext();
  ServerContext(const ServerContext&) = delete;
  ServerContext& operator=(const ServerContext&) = delete;

  // Owned by this object, which must outlive every SSL* made from it. A caller that needs its
  // own reference (e.g. an asio::ssl::context adopting the handle) takes one with
  // SSL_CTX_up_ref.
  SSL_CTX* native() const { return ctx_; }

  // Starts a new ticket key now; the current one moves to "previous" (still decrypts), the
  // previous one is dropped (its tickets fall back to a full handshake). Also happens by itself
  // every ticket_key_rotation.
  void rotate_ticket_keys();

  // The negotiated ALPN protocol; empty when the client sent no ALPN.
  static std::string_view selected_alpn(const SSL* ssl);

  struct TicketKey {
    std::array<unsigned char, 16> name{};
    std::array<unsigned char, 32> aes_key{};
    std::array<unsigned char, 32> hmac_key{};
    std::chrono::system_clock::time_point created{};
  };

 private:
  ServerContext() = default;
  std::chrono::system_clock::time_point now() const;
  bool new_ticket_key(TicketKey& out) const;
  void rotate_locked();

  static int on_client_hello(SSL* ssl, int* alert, void* arg);
  static int on_alpn(SSL* ssl, const unsigned char** out, unsigned char* outlen,
                     const unsigned char* in, unsigned int inlen, void* arg);
  static int on_ticket(SSL* ssl, unsigned char* key_name, unsigned char* iv, EVP_CIPHER_CTX* cipher,
                       EVP_MAC_CTX* mac, int enc);

  SSL_CTX* ctx_ = nullptr;
  ServerOptions options_;
  SelectorProvider provider_;
  std::string alpn_wire_;  // length-prefixed protocol list, as ALPN sends it

  mutable std::mutex ticket_mu_;
  TicketKey current_;
  TicketKey previous_;
  bool has_previous_ = false;
};

}  // namespace hsp::tls
