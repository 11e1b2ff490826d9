// A certificate chain and its private key, as the TLS listener serves them: the leaf, the
// intermediates that follow it, the key, and what the selector and the renewal logic need to know
// about the leaf (its names and validity window). Loaded from PEM (Caddy's `tls cert.pem key.pem`)
// or issued by the local CA (local_ca.h).
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/error.h"

namespace hsp::tls {

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct EvpPkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct X509StackFree {
  void operator()(STACK_OF(X509) * s) const { sk_X509_pop_free(s, X509_free); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyFree>;
using X509StackPtr = std::unique_ptr<STACK_OF(X509), X509StackFree>;

using SystemTime = std::chrono::system_clock::time_point;

class CertifiedKey {
 public:
  // Takes ownership. chain holds the certificates after the leaf (may be empty). Fails when the
  // key does not belong to the leaf; `where` names the source in error messages.
  static Result<CertifiedKey> make(X509Ptr leaf, std::vector<X509Ptr> chain, EvpPkeyPtr key,
                                   const std::string& where);

  // Parses PEM text: cert_pem holds the leaf first, then its chain; key_pem the private key
  // (PKCS#8, or the traditional RSA / EC forms). cert_name and key_name name the sources in
  // errors.
  static Result<CertifiedKey> from_pem(std::string_view cert_pem, std::string_view key_pem,
                                       const std::string& cert_name, const std::string& key_name);

  CertifiedKey(CertifiedKey&&) = default;
  CertifiedKey& operator=(CertifiedKey&&) = default;

  X509* leaf() const { return leaf_.get(); }
  // Intermediates in the order they are sent, as an OpenSSL stack for SSL_use_cert_and_key.
  STACK_OF(X509) * chain() const { return chain_.get(); }
  EVP_PKEY* key() const { return key_.get(); }

  // subjectAltName entries, lower-cased. When the certificate has no DNS or IP SAN at all, the
  // subject CN counts as a DNS name (as Caddy does for old self-made certificates).
  const std::vector<std::string>& dns_names() const { return dns_names_; }
  const std::vector<std::string>& ip_addresses() const { return ip_addresses_; }  // text form

  SystemTime not_before() const { return not_before_; }
  SystemTime not_after() const { return not_after_; }
  bool expired(SystemTime now = std::chrono::system_clock::now()) const {
    return now >= not_after_;
  }
  // True once `fraction` of the validity window has passed (renewal points use 2/3).
  bool past_fraction(double fraction, SystemTime now) const;

  // The leaf's subject in OpenSSL's one-line form, e.g. "CN=a.example"; for logs.
  std::string subject() const;
  std::string serial_hex() const;

  // PEM of the leaf followed by the chain, and of the key (PKCS#8, unencrypted).
  std::string cert_chain_pem() const;
  std::string key_pem() const;

 private:
  CertifiedKey() = default;

  X509Ptr leaf_;
  X509StackPtr chain_;
  EvpPkeyPtr key_;
  std::vector<std::string> dns_names_;
  std::vector<std::string> ip_addresses_;
  SystemTime not_before_{};
  SystemTime not_after_{};
};

// Caddy's `tls cert.pem key.pem`. Errors name the file: unreadable, no certificate, no key, key
// does not match the certificate. An expired certificate still loads (the site keeps serving
// what the operator gave it, as Caddy does) but a warning is logged; check expired().
Result<CertifiedKey> load_pem_files(const std::string& cert_path, const std::string& key_path);

// Reads a whole small regular file: at most `max_bytes` (PEM bundles are kilobytes), and the
// open never waits, so a FIFO or a device named by a configuration or planted in the data
// directory is refused instead of hanging the thread. Errors name the file and carry strerror.
Result<std::string> read_file(const std::string& path, size_t max_bytes = size_t{4} << 20);
// The same, with a file that does not exist as nullopt rather than an error.
Result<std::optional<std::string>> read_file_if_exists(const std::string& path,
                                                       size_t max_bytes = size_t{4} << 20);

// The newest OpenSSL error on this thread as text (and clears the queue); for error messages.
std::string openssl_error();

// A private key as unencrypted PKCS#8 PEM (what key files, key_pem() and ACME storage hold).
std::string private_key_pem(EVP_PKEY* key);

// Lower-cases ASCII and drops one trailing dot: the form names are compared in.
std::string normalize_name(std::string_view name);

}  // namespace hsp::tls
