// The answers an ACME CA looks for while it validates a name: HTTP-01 key authorizations served
// on the HTTP listener (RFC 8555 §8.3) and TLS-ALPN-01 certificates served on the TLS listener
// (RFC 8737). The ACME manager (acme/manager.h) puts them here before it tells the CA to validate
// and removes them afterwards; the data plane only reads. One registry per process.
//
// Replicas sharing a data directory: the CA may reach any replica, so the manager also writes
// each answer under `<data dir>/acme/challenge_tokens/` (acme/storage.h) and a replica that does
// not hold it in memory looks there. Reads of the directory happen only for requests that are
// challenge-shaped (the well-known path, or a handshake offering only `acme-tls/1`).
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "tls/certified_key.h"

namespace hsp::tls {

// RFC 8555 §8.3: the path prefix of HTTP-01 requests.
inline constexpr std::string_view kAcmeHttp01Prefix = "/.well-known/acme-challenge/";
// RFC 8737 §6.2: the ALPN protocol of TLS-ALPN-01 handshakes.
inline constexpr std::string_view kAcmeTlsAlpn = "acme-tls/1";

class AcmeChallenges {
 public:
  // The process's registry.
  static AcmeChallenges& instance();

  // Where other replicas leave their answers (`<data dir>/acme/challenge_tokens`); empty: none.
  void set_shared_dir(std::string dir);

  // HTTP-01: `key_authorization` is "<token>.<account key thumbprint>" (RFC 8555 §8.1).
  void put_http01(const std::string& token, const std::string& key_authorization);
  void remove_http01(const std::string& token);
  // The key authorization for `token`, from memory or the shared directory; nullopt when no
  // challenge with that token is under way. Knowingly looser than certmagic: the request's
  // Host is not compared with the name being validated (the registry does not keep it), so
  // any Host gets the answer while the token lives; the answer is public by design (token and
  // account-key thumbprint), so what it costs is only that defence in depth. `token` comes from a
  // request path: anything that is not base64url (RFC 8555 §8.3) is refused without touching the
  // file system.
  std::optional<std::string> http01(std::string_view token) const;

  // TLS-ALPN-01: `key_authorization` as above, for identifier `name` (a DNS name).
  void put_tls_alpn01(const std::string& name, const std::string& key_authorization);
  void remove_tls_alpn01(const std::string& name);
  // The self-signed challenge certificate for `name` (SAN = name, critical acmeIdentifier
  // extension holding SHA-256 of the key authorization), made on first use and cached while
  // the challenge lasts; null when no TLS-ALPN-01 challenge for `name` is under way.
  std::shared_ptr<const CertifiedKey> tls_alpn01(std::string_view name) const;

  // Cheap check for the data plane's hot path: false when nothing is under way here (the
  // shared directory may still hold another replica's answers; see http01()).
  bool any_local() const { return count_.load(std::memory_order_relaxed) != 0; }

  // Whether `token` may be an ACME token: 1 to kMaxTokenLength base64url characters (RFC 8555
  // §8.3: the token is base64url, and at least 128 bits of entropy, so 22 characters or more
  // in practice). Everything else is refused before any lookup, so that a request path never
  // reaches the file system with a "/" or ".." in it.
  static constexpr size_t kMaxTokenLength = 128;
  static bool valid_token(std::string_view token);

 private:
  struct AlpnEntry {
    std::string key_authorization;
    mutable std::shared_ptr<const CertifiedKey> cert;  // made on first use
  };
  // A certificate made from another replica's answer in the shared directory, reused while the
  // file still says the same and the entry is young (kSharedCertTtl in the .cc).
  struct SharedAlpnEntry {
    std::string key_authorization;
    std::shared_ptr<const CertifiedKey> cert;
    std::chrono::steady_clock::time_point made;
  };
  void update_count_locked();
  std::shared_ptr<const CertifiedKey> shared_tls_alpn01(const std::string& name) const;

  mutable std::mutex mu_;
  std::string shared_dir_;
  std::map<std::string, std::string, std::less<>> http01_;
  std::map<std::string, AlpnEntry, std::less<>> alpn_;
  mutable std::map<std::string, SharedAlpnEntry, std::less<>> shared_alpn_;
  std::atomic<int> count_{0};
  std::atomic<bool> has_shared_dir_{false};  // read without mu_ on the request path
};

// The TLS-ALPN-01 certificate for `name` and `key_authorization` (RFC 8737 §3), with a fresh
// P-256 key. Exposed for tests.
Result<CertifiedKey> make_tls_alpn01_cert(const std::string& name,
                                          const std::string& key_authorization);

}  // namespace hsp::tls
