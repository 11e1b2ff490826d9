// JSON Web Signatures as ACME uses them (RFC 8555 §6.2, RFC 7515): ES256 over P-256 with the
// signature as raw r||s (RFC 7518 §3.4, not DER), the account key's JWK (RFC 7517) and its
// thumbprint (RFC 7638), and unpadded base64url (RFC 4648 §5).
#pragma once

#include <openssl/evp.h>

#include <memory>
#include <string>
#include <string_view>

#include "util/base64url.h"  // base64url, base64url_decode
#include "util/error.h"

namespace hsp::acme {

// `what`, then ": " and the oldest OpenSSL error queued on this thread when there is one (the
// root cause; later entries are the callers' wrappers); clears the queue. For error messages.
std::string openssl_error(std::string_view what);

// An ACME account key: ECDSA P-256, as Caddy makes them.
class AccountKey {
 public:
  static Result<AccountKey> generate();
  // PKCS#8 or SEC1 ("EC PRIVATE KEY") PEM; `where` names the source in errors.
  static Result<AccountKey> from_pem(std::string_view pem, const std::string& where);

  AccountKey(AccountKey&&) = default;
  AccountKey& operator=(AccountKey&&) = default;

  std::string pem() const;  // PKCS#8
  // {"crv":"P-256","kty":"EC","x":"...","y":"..."}: members in lexicographic order, no
  // whitespace, which is also the thumbprint input of RFC 7638 §3.
  const std::string& jwk() const { return jwk_; }
  // base64url(SHA-256(jwk())) (RFC 7638).
  const std::string& thumbprint() const { return thumbprint_; }
  // "<token>.<thumbprint>" (RFC 8555 §8.1).
  std::string key_authorization(std::string_view token) const {
    return std::string(token) + "." + thumbprint_;
  }

  // The flattened JWS JSON serialization (RFC 8555 §6.2) of `payload` (empty for POST-as-GET)
  // with a protected header {alg: ES256, nonce, url} plus `kid` when given, else `jwk`.
  Result<std::string> sign(std::string_view payload, const std::string& nonce,
                           const std::string& url, const std::string& kid) const;

  EVP_PKEY* native() const { return key_.get(); }

 private:
  struct Free {
    void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
  };
  explicit AccountKey(EVP_PKEY* key);
  std::unique_ptr<EVP_PKEY, Free> key_;
  std::string jwk_;
  std::string thumbprint_;
};

}  // namespace hsp::acme
