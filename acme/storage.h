// Where ACME state lives, shared by every gateway process that mounts the same data directory
// (a Swarm volume): accounts, certificates with their keys and metadata, locks that make one
// replica order a name while the others wait, and challenge answers any replica can serve.
// Laid out as Caddy's file storage, so that an operator finds things where Caddy keeps them:
//
//   <data>/acme/<issuer>/users/<email or "default">/account.json, account.key
//   <data>/certificates/<issuer>/<name>/<name>.crt, <name>.key, <name>.json
//   <data>/locks/<issuer>-<name>.lock
//   <data>/acme/challenge_tokens/http-01/<token>
//   <data>/acme/challenge_tokens/tls-alpn-01/<name>
//
// <issuer> is the CA directory URL's host and path ("acme-v02.api.letsencrypt.org-directory");
// <name> a wildcard's "*" spelled "wildcard_". Every write is atomic (temporary file, fsync,
// rename, fsync of the directory); private keys are mode 0600, directories 0700.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/error.h"

namespace hsp::acme {

using SystemTime = std::chrono::system_clock::time_point;

std::string issuer_key(const std::string& directory_url);
std::string storage_name(const std::string& name);  // "*.a.example" -> "wildcard_.a.example"
// Writes `content` to `path` as storage does: a temporary in the same directory, fsync, rename,
// fsync of the directory; missing directories are made 0700. For the cluster's pushed files.
Result<bool> write_file_atomic(const std::string& path, const std::string& content, unsigned mode);

// The try_lock() key for ordering `name` from `issuer`: "<issuer>-<storage_name(name)>".
std::string lock_key(const std::string& issuer, const std::string& name);

// RFC 3339 in UTC ("2026-12-05T02:41:54Z", fractional seconds only when there are some), as the
// metadata and lock files hold times; parse_rfc3339 also takes "+hh:mm"/"-hh:mm" offsets (ARI
// windows, RFC 9773 §4.2, come with them).
std::string rfc3339(SystemTime t);
std::optional<SystemTime> parse_rfc3339(std::string_view text);

struct StoredAccount {
  std::string email;  // "" for "default"
  std::string kid;    // the account URL
  std::string key_pem;
};

// <name>.json: what `hsp-gateway certs` prints, and what a restarted or other replica needs to
// pick the renewal schedule up.
struct CertMeta {
  std::vector<std::string> names;
  std::string issuer;  // issuer_key()
  std::string ca;      // directory URL
  std::optional<SystemTime> not_before, not_after;
  std::optional<SystemTime> obtained_at;
  std::optional<SystemTime> renew_at;  // next renewal (ARI window or 1/3 of life left)
  std::string ari_id;                  // RFC 9773 certificate id, when the CA offers ARI
  std::string last_error;              // empty after a success
  std::optional<SystemTime> last_error_at;
  std::optional<SystemTime> next_attempt;  // after a failure: when the back-off allows one
  int failures = 0;                        // consecutive
};

struct StoredCert {
  std::string cert_pem;  // leaf + chain; empty when only metadata exists (never obtained)
  std::string key_pem;
  CertMeta meta;
};

class Storage {
 public:
  explicit Storage(std::string data_dir);
  const std::string& dir() const { return dir_; }

  Result<std::optional<StoredAccount>> load_account(const std::string& issuer,
                                                    const std::string& email) const;
  Result<bool> save_account(const std::string& issuer, const StoredAccount& account) const;

  // nullopt when nothing is stored for `name`; cert_pem and key_pem empty when only metadata
  // is (never obtained). An error when the key does not belong to the certificate (checked,
  // since a reader racing with save_cert could otherwise pair an old certificate with a new
  // key; such a read is retried briefly first). Metadata missing altogether loads as names =
  // {name}, issuer = `issuer`.
  Result<std::optional<StoredCert>> load_cert(const std::string& issuer,
                                              const std::string& name) const;
  // Certificate and key first, metadata last: a reader that sees new metadata sees the new
  // pair.
  Result<bool> save_cert(const std::string& issuer, const std::string& name,
                         const StoredCert& cert) const;
  // Metadata only (a failure recorded, the next attempt scheduled), keeping the pair.
  Result<bool> save_meta(const std::string& issuer, const std::string& name,
                         const CertMeta& meta) const;
  // Every certificate directory, for `hsp-gateway certs`; unreadable ones carry an error
  // in meta.last_error.
  std::vector<StoredCert> list() const;

  // A lock with an expiry (RFC-free; Caddy's storage locks). True when this holder now holds
  // it: it was free, expired, or already ours (the expiry is then pushed out). A lock whose
  // holder died is taken over once `ttl` has passed since it was last refreshed. Of several
  // processes racing for a free or expired lock exactly one wins: a free lock is created with
  // O_EXCL, and refreshing, taking over and unlocking an existing one happen under an flock on
  // `locks/.guard`. Refresh well before `ttl` runs out (say at ttl/3).
  Result<bool> try_lock(const std::string& key, const std::string& holder,
                        std::chrono::seconds ttl) const;
  // Removes the lock only when `holder` holds it (not after another took it over).
  void unlock(const std::string& key, const std::string& holder) const;

  // Challenge answers for the other replicas (read by tls::AcmeChallenges).
  std::string challenge_dir() const;  // <data>/acme/challenge_tokens
  Result<bool> put_http01(const std::string& token, const std::string& key_authorization) const;
  void remove_http01(const std::string& token) const;
  Result<bool> put_tls_alpn01(const std::string& name, const std::string& key_authorization) const;
  void remove_tls_alpn01(const std::string& name) const;

  // Atomic write of `content` to `path` (absolute, or relative to the data directory), with
  // `mode` set at creation (then narrowed by the umask) and missing directories made 0700.
  Result<bool> write_file(const std::string& path, const std::string& content, unsigned mode) const;

 private:
  std::string dir_;
};

}  // namespace hsp::acme
