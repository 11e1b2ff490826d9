// Which certificate a TLS handshake gets for the name the client sent (SNI). Built once per
// routing snapshot from the snapshot's certificates and then only read, so handshakes on every
// thread look it up without locks; a new snapshot builds a new selector and swaps the pointer.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tls/certified_key.h"

namespace hsp::tls {

class CertSelector {
 public:
  struct Entry {
    std::shared_ptr<const CertifiedKey> cert;
    // Names this certificate serves: exact names and `*.example.com` wildcards. Empty means
    // the certificate's own DNS and IP SANs.
    std::vector<std::string> names;
    // The TLS versions these names accept (Caddy's `protocols`, per connection policy), as
    // OpenSSL version numbers; 0 leaves the listener's bound.
    int min_version = 0;
    int max_version = 0;
  };

  // What a handshake gets for a name: the certificate and the version range.
  struct Choice {
    const CertifiedKey* cert = nullptr;
    int min_version = 0;
    int max_version = 0;
  };

  // Earlier entries win when two claim the same name (the site listed first wins, as routes
  // do). default_cert answers SNI that matches nothing, and clients that send no SNI; without
  // one such handshakes fail with the unrecognized_name alert.
  static std::shared_ptr<const CertSelector> build(
      std::vector<Entry> entries, std::shared_ptr<const CertifiedKey> default_cert = nullptr);

  // Exact name, then a wildcard one label deep (`*.example.com` covers `a.example.com`, not
  // `example.com` or `a.b.example.com`), then the default; nullptr when none applies.
  // Case-insensitive; a trailing dot is ignored. Clients never put an IP address in SNI (RFC
  // 6066 §3), so an IP-only certificate is reached only through the default; choosing by the
  // local address a connection arrived on is not done here (the data plane would have to pass
  // it in), which means two IP-addressed sites on one listener share the default certificate.
  const CertifiedKey* select(std::string_view sni) const;
  // The same lookup, with the entry's version range; nullptr when nothing applies.
  const Choice* choose(std::string_view sni) const;

  size_t size() const { return exact_.size() + wildcard_.size(); }

 private:
  std::vector<std::shared_ptr<const CertifiedKey>> certs_;  // keeps the certificates alive
  std::vector<Choice> choices_;                             // one per entry, then the default
  std::unordered_map<std::string, size_t> exact_;           // name -> index in choices_
  std::unordered_map<std::string, size_t> wildcard_;        // key: the part after "*."
  bool has_default_ = false;
};

}  // namespace hsp::tls
