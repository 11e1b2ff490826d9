#include "tls/server_context.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <cstring>

#include "tls/acme_challenges.h"
#include "util/log.h"

namespace hsp::tls {
namespace {

// Mozilla Server Side TLS guideline 5.7, "intermediate": TLS 1.2 gets only forward-secret AEAD
// suites (the DHE ones serve old RSA-only clients; OpenSSL's built-in ffdhe2048 group is what
// the guideline asks for), TLS 1.3 its three standard suites. Order matters little because the
// profile leaves the choice to the client (no server preference): clients pick ChaCha20 on
// hardware without AES instructions.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305";
constexpr const char* kTls13Suites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
constexpr const char* kGroups = "X25519:P-256:P-384";

// Our own ex_data slot: index 0 (SSL_CTX_set_app_data) is taken by asio::ssl::context for its
// verify callback, and the data plane may wrap this SSL_CTX in one.
int ctx_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

ServerContext* self_of(SSL* ssl) {
  return static_cast<ServerContext*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_index()));
}

// The host_name from the server_name extension (RFC 6066 §3); empty when absent or malformed.
std::string_view client_sni(SSL* ssl) {
  const unsigned char* p = nullptr;
  size_t len = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len) != 1 || len < 2) {
    return {};
  }
  size_t list_len = (size_t{p[0]} << 8) | p[1];
  if (list_len + 2 != len) return {};
  size_t i = 2;
  while (i + 3 <= len) {
    unsigned type = p[i];
    size_t name_len = (size_t{p[i + 1]} << 8) | p[i + 2];
    i += 3;
    if (i + name_len > len) return {};
    if (type == TLSEXT_NAMETYPE_host_name) {
      std::string_view name(reinterpret_cast<const char*>(p + i), name_len);
      if (name.find('\0') != std::string_view::npos) return {};
      return name;
    }
    i += name_len;
  }
  return {};
}

// RFC 8737 §3: a TLS-ALPN-01 validation offers exactly one protocol, acme-tls/1. `list` is the
// ALPN extension's ProtocolNameList after its 2-byte length (the form the ALPN callback gets).
bool is_acme_only(const unsigned char* list, size_t len) {
  return len == kAcmeTlsAlpn.size() + 1 && list[0] == kAcmeTlsAlpn.size() &&
         std::memcmp(list + 1, kAcmeTlsAlpn.data(), kAcmeTlsAlpn.size()) == 0;
}

bool client_offers_only_acme_tls(SSL* ssl) {
  const unsigned char* p = nullptr;
  size_t len = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &p,
                                &len) != 1 ||
      len < 2) {
    return false;
  }
  size_t list_len = (size_t{p[0]} << 8) | p[1];
  return list_len + 2 == len && is_acme_only(p + 2, list_len);
}

// The challenge certificate instead of the site's: the CA checks its SAN and acmeIdentifier
// extension and sends nothing after the handshake. No ticket: the connection carries no data,
// and a resumed session would not show the certificate again.
int use_acme_challenge_cert(SSL* ssl, std::string_view sni, int* alert) {
  std::shared_ptr<const CertifiedKey> cert =
      sni.empty() ? nullptr : AcmeChallenges::instance().tls_alpn01(sni);
  if (cert == nullptr) {
    // A client offering only acme-tls/1 wants nothing else from us, so refuse as we refuse any
    // protocol we do not speak.
    log::debug("acme_tls_alpn01_no_challenge")
        .kv("sni", sni)
        .kv("reason", sni.empty() ? "no server name in the client hello"
                                  : "no TLS-ALPN-01 challenge under way for this name");
    *alert = SSL_AD_NO_APPLICATION_PROTOCOL;
    return SSL_CLIENT_HELLO_ERROR;
  }
  SSL_set_options(ssl, SSL_OP_NO_TICKET);
  SSL_set_num_tickets(ssl, 0);
  if (SSL_use_cert_and_key(ssl, cert->leaf(), cert->key(), nullptr, 1) != 1) {
    log::error("tls_set_certificate_failed").kv("sni", sni).kv("error", openssl_error());
    *alert = SSL_AD_INTERNAL_ERROR;
    return SSL_CLIENT_HELLO_ERROR;
  }
  return SSL_CLIENT_HELLO_SUCCESS;
}

}  // namespace

Result<int> parse_protocol(std::string_view name) {
  if (name == "tls1.2") return TLS1_2_VERSION;
  if (name == "tls1.3") return TLS1_3_VERSION;
  return Error{SourceLoc{},
               "unsupported TLS protocol '" + std::string(name) + "' (supported: tls1.2, tls1.3)"};
}

Result<std::unique_ptr<ServerContext>> ServerContext::create(const ServerOptions& options,
                                                             SelectorProvider provider) {
  auto fail = [](std::string what) { return Error{SourceLoc{}, "TLS server context: " + what}; };
  auto valid_version = [](int v) { return v == TLS1_2_VERSION || v == TLS1_3_VERSION; };
  if (!valid_version(options.min_version) || !valid_version(options.max_version)) {
    return fail("protocol versions must be tls1.2 or tls1.3");
  }
  if (options.min_version > options.max_version) {
    return fail("minimum protocol version is above the maximum");
  }
  if (options.session_tickets && options.ticket_key_rotation.count() <= 0) {
    return fail("ticket key rotation period must be positive");
  }
  std::unique_ptr<ServerContext> self(new ServerContext());
  self->options_ = options;
  self->provider_ = std::move(provider);
  for (const auto& proto : options.alpn) {
    if (proto.empty() || proto.size() > 255) return fail("ALPN protocol names are 1-255 bytes");
    self->alpn_wire_ += static_cast<char>(proto.size());
    self->alpn_wire_ += proto;
  }

  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) return fail(openssl_error());
  self->ctx_ = ctx;
  SSL_CTX_set_ex_data(ctx, ctx_index(), self.get());

  bool ok = SSL_CTX_set_min_proto_version(ctx, options.min_version) == 1 &&
            SSL_CTX_set_max_proto_version(ctx, options.max_version) == 1 &&
            SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) == 1 &&
            SSL_CTX_set_ciphersuites(ctx, kTls13Suites) == 1 &&
            SSL_CTX_set1_groups_list(ctx, kGroups) == 1 && SSL_CTX_set_dh_auto(ctx, 1) == 1;
  if (!ok) return fail(openssl_error());

  // Renegotiation is an old DoS lever and forbidden under HTTP/2 (RFC 9113 §9.2.1); with
  // NO_RENEGOTIATION OpenSSL refuses client-initiated renegotiation as well. Compression invites
  // CRIME. Server cipher preference stays off, as the profile says.
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_clear_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
  // Idle keep-alive connections are the common case for a proxy; without this each one holds
  // ~34 KiB of read/write buffers it is not using.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);

  SSL_CTX_set_client_hello_cb(ctx, &ServerContext::on_client_hello, self.get());
  // Always installed: acme-tls/1 is selected even on a listener that offers nothing else.
  SSL_CTX_set_alpn_select_cb(ctx, &ServerContext::on_alpn, self.get());

  // Tickets only: a server-side session cache grows with the number of clients, while a
  // ticket keeps the session state on the client, sealed with our key.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (options.session_tickets) {
    std::lock_guard<std::mutex> lock(self->ticket_mu_);
    if (!self->new_ticket_key(self->current_)) return fail(openssl_error());
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, &ServerContext::on_ticket);
    SSL_CTX_set_timeout(ctx, static_cast<long>(options.ticket_key_rotation.count()));
  } else {
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);
  }
  return self;
}

ServerContext::~ServerContext() {
  if (ctx_ != nullptr) {
    // Someone may hold another reference to the SSL_CTX (SSL_CTX_up_ref); without these
    // callbacks its handshakes fail cleanly (no certificate) instead of using a dead `this`.
    SSL_CTX_set_client_hello_cb(ctx_, nullptr, nullptr);
    SSL_CTX_set_alpn_select_cb(ctx_, nullptr, nullptr);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx_, nullptr);
    SSL_CTX_set_ex_data(ctx_, ctx_index(), nullptr);
    SSL_CTX_free(ctx_);
  }
  OPENSSL_cleanse(&current_, sizeof current_);
  OPENSSL_cleanse(&previous_, sizeof previous_);
}

std::chrono::system_clock::time_point ServerContext::now() const {
  return options_.now ? options_.now() : std::chrono::system_clock::now();
}

std::string_view ServerContext::selected_alpn(const SSL* ssl) {
  const unsigned char* p = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(ssl, &p, &len);
  return p != nullptr ? std::string_view(reinterpret_cast<const char*>(p), len)
                      : std::string_view();
}

int ServerContext::on_client_hello(SSL* ssl, int* alert, void* arg) {
  auto* self = static_cast<ServerContext*>(arg);
  std::string_view sni = client_sni(ssl);
  if (client_offers_only_acme_tls(ssl)) return use_acme_challenge_cert(ssl, sni, alert);
  std::shared_ptr<const CertSelector> selector = self->provider_ ? self->provider_() : nullptr;
  const CertSelector::Choice* choice = selector ? selector->choose(sni) : nullptr;
  if (choice == nullptr) {
    *alert = SSL_AD_UNRECOGNIZED_NAME;
    return SSL_CLIENT_HELLO_ERROR;
  }
  const CertifiedKey* cert = choice->cert;
  // Version negotiation comes after this callback, so the name's own range (Caddy's
  // `protocols`, per connection policy) can still narrow the listener's.
  if (choice->min_version != 0) SSL_set_min_proto_version(ssl, choice->min_version);
  if (choice->max_version != 0) SSL_set_max_proto_version(ssl, choice->max_version);
  // The SSL takes its own references, so the selector may be dropped right after.
  if (SSL_use_cert_and_key(ssl, cert->leaf(), cert->key(), cert->chain(), 1) != 1) {
    log::error("tls_set_certificate_failed").kv("sni", sni).kv("error", openssl_error());
    *alert = SSL_AD_INTERNAL_ERROR;
    return SSL_CLIENT_HELLO_ERROR;
  }
  return SSL_CLIENT_HELLO_SUCCESS;
}

int ServerContext::on_alpn(SSL*, const unsigned char** out, unsigned char* outlen,
                           const unsigned char* in, unsigned int inlen, void* arg) {
  auto* self = static_cast<ServerContext*>(arg);
  if (is_acme_only(in, inlen)) {
    // on_client_hello saw the same list and put the challenge certificate in place (or failed
    // the handshake), so this is a TLS-ALPN-01 validation: the listener's own list is moot.
    *out = in + 1;
    *outlen = static_cast<unsigned char>(inlen - 1);
    return SSL_TLSEXT_ERR_OK;
  }
  // A listener that offers no protocol lets clients that send ALPN go on without one.
  if (self->alpn_wire_.empty()) return SSL_TLSEXT_ERR_NOACK;
  unsigned char* selected = nullptr;
  // Our list first, so that our order wins (h2 before http/1.1 whatever the client's order).
  int r = SSL_select_next_proto(&selected, outlen,
                                reinterpret_cast<const unsigned char*>(self->alpn_wire_.data()),
                                static_cast<unsigned int>(self->alpn_wire_.size()), in, inlen);
  if (r != OPENSSL_NPN_NEGOTIATED) return SSL_TLSEXT_ERR_ALERT_FATAL;  // no_application_protocol
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

bool ServerContext::new_ticket_key(TicketKey& out) const {
  out.created = now();
  return RAND_bytes(out.name.data(), static_cast<int>(out.name.size())) == 1 &&
         RAND_priv_bytes(out.aes_key.data(), static_cast<int>(out.aes_key.size())) == 1 &&
         RAND_priv_bytes(out.hmac_key.data(), static_cast<int>(out.hmac_key.size())) == 1;
}

void ServerContext::rotate_locked() {
  TicketKey next;
  if (!new_ticket_key(next)) {
    // Keep the old key rather than stop issuing tickets; retried on the next handshake.
    log::error("tls_ticket_key_rotation_failed").kv("error", openssl_error());
    return;
  }
  previous_ = current_;
  has_previous_ = true;
  current_ = next;
  OPENSSL_cleanse(&next, sizeof next);
}

void ServerContext::rotate_ticket_keys() {
  std::lock_guard<std::mutex> lock(ticket_mu_);
  rotate_locked();
}

int ServerContext::on_ticket(SSL* ssl, unsigned char* key_name, unsigned char* iv,
                             EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac, int enc) {
  ServerContext* self = self_of(ssl);
  if (self == nullptr) return -1;
  TicketKey key;
  bool renew = false;
  {
    std::lock_guard<std::mutex> lock(self->ticket_mu_);
    auto t = self->now();
    // Rotation is checked lazily on handshakes: no timer thread, and an idle server has no
    // tickets to protect. After two idle periods both keys are stale, so both go. Time jumps
    // backwards do not rotate.
    auto age = t - self->current_.created;
    if (age >= 2 * self->options_.ticket_key_rotation) self->rotate_locked();
    if (age >= self->options_.ticket_key_rotation) self->rotate_locked();
    if (enc) {
      key = self->current_;
    } else if (std::memcmp(key_name, self->current_.name.data(), 16) == 0) {
      key = self->current_;
    } else if (self->has_previous_ && std::memcmp(key_name, self->previous_.name.data(), 16) == 0) {
      key = self->previous_;
      renew = true;  // valid, but have OpenSSL send a ticket under the current key
    } else {
      return 0;  // unknown or retired key: full handshake
    }
  }

  OSSL_PARAM params[3];
  params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key.hmac_key.data(),
                                                key.hmac_key.size());
  params[1] =
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0);
  params[2] = OSSL_PARAM_construct_end();
  int result = -1;
  if (enc) {
    std::memcpy(key_name, key.name.data(), 16);
    if (RAND_bytes(iv, 16) == 1 &&
        EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key.aes_key.data(), iv) == 1 &&
        EVP_MAC_CTX_set_params(mac, params) == 1) {
      result = 1;
    }
  } else if (EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key.aes_key.data(), iv) == 1 &&
             EVP_MAC_CTX_set_params(mac, params) == 1) {
    result = renew ? 2 : 1;
  }
  OPENSSL_cleanse(&key, sizeof key);
  return result;
}

}  // namespace hsp::tls
