// The local certificate authority behind Caddy's `tls internal` and behind names that have no
// other certificate (localhost, IPs, *.localhost, and until ACME lands every name). Layout and
// lifetimes follow Caddy's so that a user who trusted Caddy's root knows where to look:
//
//   <data dir>/pki/authorities/local/root.crt          ECDSA P-256, 10 years, created once
//   <data dir>/pki/authorities/local/root.key          mode 0600
//   <data dir>/pki/authorities/local/intermediate.crt  7 days, renewed at 2/3 of its life
//   <data dir>/pki/authorities/local/intermediate.key  mode 0600
//
// Leaf certificates live in memory only (12 hours, renewed at 2/3), as Caddy's internal issuer
// keeps them short-lived. Nothing is ever written to the system trust store: users are told
// root_path() and decide themselves.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tls/certified_key.h"

namespace hsp::tls {

class LocalCa {
 public:
  struct Options {
    std::chrono::seconds root_lifetime{std::chrono::hours(24 * 3652)};
    std::chrono::seconds intermediate_lifetime{std::chrono::hours(24 * 7)};
    std::chrono::seconds leaf_lifetime{std::chrono::hours(12)};
    // Injected so tests can move time forward; the default is the system clock.
    std::function<SystemTime()> now;
  };

  // Creates the directory tree (mode 0700) and the root and intermediate if they are missing,
  // otherwise loads them; renews the intermediate when it is past 2/3 of its life, expired, or
  // not signed by the root. A root certificate without its key (or the reverse) is an error
  // rather than a silent new root, because users may have trusted the old one.
  static Result<std::unique_ptr<LocalCa>> open(const std::string& dir, Options options);
  static Result<std::unique_ptr<LocalCa>> open(const std::string& dir) {
    return open(dir, Options{});
  }

  // A leaf for these DNS names and IP addresses (both kinds may be mixed; `*.x` wildcards are
  // allowed), signed by the intermediate, with the intermediate as its chain. The same set of
  // names (in any order, any case) gets the cached leaf until 2/3 of its lifetime has passed.
  // Thread-safe. The cache holds one entry per distinct name set ever asked for and is never
  // pruned: callers must only ask for configured names (never for whatever SNI a client
  // sends), otherwise it grows with an SNI flood.
  Result<std::shared_ptr<const CertifiedKey>> issue(const std::vector<std::string>& names);

  const std::string& root_path() const { return root_path_; }
  std::shared_ptr<const CertifiedKey> root() const;
  std::shared_ptr<const CertifiedKey> intermediate() const;

 private:
  LocalCa() = default;
  SystemTime now() const;
  Result<bool> load_or_create_root();
  // Loads the intermediate, or makes (and persists) a new one when needed.
  Result<bool> ensure_intermediate();

  Options options_;
  std::string dir_;  // .../pki/authorities/local
  std::string root_path_;
  mutable std::mutex mu_;
  std::shared_ptr<const CertifiedKey> root_;
  std::shared_ptr<const CertifiedKey> intermediate_;
  std::map<std::string, std::shared_ptr<const CertifiedKey>> leaves_;  // key: sorted names
};

// Writes data to path atomically: a temporary file in the same directory with `mode`, fsync,
// rename over path, fsync of the directory. Exposed for tests.
Result<bool> write_file_atomic(const std::string& path, const std::string& data, unsigned mode);

}  // namespace hsp::tls
