#include "tls/acme_challenges.h"

#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

#include "util/log.h"

namespace hsp::tls {
namespace {

// RFC 8737 §6.1: id-pe-acmeIdentifier.
constexpr const char* kAcmeIdentifierOid = "1.3.6.1.5.5.7.1.31";
// The CA validates within seconds of being told to; a short life limits what a leaked
// challenge certificate is good for (nothing: it is self-signed), and a backdate covers a CA
// whose clock runs behind ours.
constexpr std::chrono::hours kCertBackdate{1};
constexpr std::chrono::hours kCertLifetime{7 * 24};
// A certificate made from another replica's file is reused this long while the file still
// holds the same key authorization: a CA connects a few times per validation (several
// vantage points), and a P-256 key and signature per handshake would be waste.
constexpr std::chrono::minutes kSharedCertTtl{5};
// Bounds the cache of such certificates (each entry needs a file another replica wrote).
constexpr size_t kMaxSharedCerts = 64;
// A key authorization is "<token>.<43-character thumbprint>"; anything much longer in a file
// is not one.
constexpr off_t kMaxAnswerFile = 1024;
constexpr size_t kMaxDnsName = 253;

bool is_base64url(std::string_view s) {
  for (char c : s) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

// "<token>.<thumbprint>", both base64url (RFC 8555 §8.1). Files that say anything else are
// ignored rather than served: they are not an answer the manager wrote.
bool valid_key_authorization(std::string_view ka) {
  size_t dot = ka.find('.');
  if (dot == std::string_view::npos) return false;
  return AcmeChallenges::valid_token(ka.substr(0, dot)) &&
         AcmeChallenges::valid_token(ka.substr(dot + 1));
}

// A normalized DNS name that may become a file name: letters, digits, '-', '.', and '*' only as
// a whole first label ("*.a.example"); no empty labels, so no "..".
bool valid_file_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxDnsName) return false;
  if (name.starts_with("*.")) name.remove_prefix(2);
  if (name.empty() || name.front() == '.' || name.back() == '.') return false;
  char prev = '.';
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
    if (!ok || (c == '.' && prev == '.')) return false;
    prev = c;
  }
  return true;
}

// acme/storage.h spells a wildcard's "*" as "wildcard_" (as Caddy's storage does).
std::string storage_file_name(const std::string& name) {
  if (name.starts_with("*")) return "wildcard_" + name.substr(1);
  return name;
}

// A small answer file, trailing whitespace (a newline an editor or `echo` added) removed;
// nullopt when it is missing, not a regular file, or too large (read_file refuses those without
// blocking, so a FIFO put there cannot stall a worker thread).
std::optional<std::string> read_answer(const std::string& path) {
  auto text = read_file_if_exists(path, static_cast<size_t>(kMaxAnswerFile));
  if (!text || !*text) return std::nullopt;
  std::string data = std::move(**text);
  while (!data.empty() && (data.back() == '\n' || data.back() == '\r' || data.back() == ' ' ||
                           data.back() == '\t')) {
    data.pop_back();
  }
  return data;
}

struct Asn1OctetStringFree {
  void operator()(ASN1_OCTET_STRING* s) const { ASN1_OCTET_STRING_free(s); }
};
struct Asn1ObjectFree {
  void operator()(ASN1_OBJECT* o) const { ASN1_OBJECT_free(o); }
};
struct X509ExtensionFree {
  void operator()(X509_EXTENSION* e) const { X509_EXTENSION_free(e); }
};
struct GeneralNamesFree {
  void operator()(GENERAL_NAMES* g) const { GENERAL_NAMES_free(g); }
};

bool add_dns_san(X509* cert, const std::string& name) {
  std::unique_ptr<GENERAL_NAMES, GeneralNamesFree> names(sk_GENERAL_NAME_new_null());
  GENERAL_NAME* gn = GENERAL_NAME_new();
  ASN1_IA5STRING* s = ASN1_IA5STRING_new();
  if (!names || gn == nullptr || s == nullptr ||
      ASN1_STRING_set(s, name.data(), static_cast<int>(name.size())) != 1) {
    GENERAL_NAME_free(gn);
    ASN1_IA5STRING_free(s);
    return false;
  }
  GENERAL_NAME_set0_value(gn, GEN_DNS, s);
  if (sk_GENERAL_NAME_push(names.get(), gn) <= 0) {
    GENERAL_NAME_free(gn);
    return false;
  }
  // The subject is not empty, so the SAN need not be critical (RFC 5280 §4.2.1.6).
  return X509_add1_ext_i2d(cert, NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) == 1;
}

// RFC 8737 §3: a critical id-pe-acmeIdentifier whose extnValue is the DER of
// `Authorization ::= OCTET STRING (SIZE (32))`, the SHA-256 of the key authorization.
bool add_acme_identifier(X509* cert, const std::string& key_authorization) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_Digest(key_authorization.data(), key_authorization.size(), digest, &digest_len,
                 EVP_sha256(), nullptr) != 1 ||
      digest_len != 32) {
    return false;
  }
  std::unique_ptr<ASN1_OCTET_STRING, Asn1OctetStringFree> inner(ASN1_OCTET_STRING_new());
  if (!inner || ASN1_OCTET_STRING_set(inner.get(), digest, 32) != 1) return false;
  unsigned char* der = nullptr;
  int der_len = i2d_ASN1_OCTET_STRING(inner.get(), &der);
  if (der_len <= 0) return false;
  std::unique_ptr<ASN1_OCTET_STRING, Asn1OctetStringFree> value(ASN1_OCTET_STRING_new());
  bool ok = value && ASN1_OCTET_STRING_set(value.get(), der, der_len) == 1;
  OPENSSL_free(der);
  std::unique_ptr<ASN1_OBJECT, Asn1ObjectFree> oid(OBJ_txt2obj(kAcmeIdentifierOid, 1));
  if (!ok || !oid) return false;
  std::unique_ptr<X509_EXTENSION, X509ExtensionFree> ext(
      X509_EXTENSION_create_by_OBJ(nullptr, oid.get(), 1, value.get()));
  return ext && X509_add_ext(cert, ext.get(), -1) == 1;
}

}  // namespace

AcmeChallenges& AcmeChallenges::instance() {
  static AcmeChallenges registry;
  return registry;
}

bool AcmeChallenges::valid_token(std::string_view token) {
  return !token.empty() && token.size() <= kMaxTokenLength && is_base64url(token);
}

void AcmeChallenges::set_shared_dir(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  std::lock_guard<std::mutex> lock(mu_);
  shared_dir_ = std::move(dir);
  shared_alpn_.clear();
  has_shared_dir_.store(!shared_dir_.empty(), std::memory_order_release);
}

void AcmeChallenges::update_count_locked() {
  count_.store(static_cast<int>(http01_.size() + alpn_.size()), std::memory_order_relaxed);
}

void AcmeChallenges::put_http01(const std::string& token, const std::string& key_authorization) {
  std::lock_guard<std::mutex> lock(mu_);
  http01_[token] = key_authorization;
  update_count_locked();
}

void AcmeChallenges::remove_http01(const std::string& token) {
  std::lock_guard<std::mutex> lock(mu_);
  http01_.erase(token);
  update_count_locked();
}

std::optional<std::string> AcmeChallenges::http01(std::string_view token) const {
  // Two atomic loads when nothing is under way and no directory is shared: the common case of
  // a stray request for the well-known path takes no lock.
  const bool local = any_local();
  if ((!local && !has_shared_dir_.load(std::memory_order_acquire)) || !valid_token(token)) {
    return std::nullopt;
  }
  std::string dir;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (local) {
      auto it = http01_.find(token);
      if (it != http01_.end()) return it->second;
    }
    if (shared_dir_.empty()) return std::nullopt;
    dir = shared_dir_;
  }
  // Not cached: every challenge-shaped request for an unknown token costs one failed open().
  // That is the price of seeing another replica's answer (and its removal) at once.
  std::optional<std::string> ka = read_answer(dir + "/http-01/" + std::string(token));
  if (!ka || !valid_key_authorization(*ka) || !ka->starts_with(token) ||
      (*ka)[token.size()] != '.') {
    return std::nullopt;
  }
  return ka;
}

void AcmeChallenges::put_tls_alpn01(const std::string& name, const std::string& key_authorization) {
  std::lock_guard<std::mutex> lock(mu_);
  alpn_[normalize_name(name)] = AlpnEntry{key_authorization, nullptr};
  update_count_locked();
}

void AcmeChallenges::remove_tls_alpn01(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  alpn_.erase(normalize_name(name));
  update_count_locked();
}

std::shared_ptr<const CertifiedKey> AcmeChallenges::tls_alpn01(std::string_view name) const {
  std::string key = normalize_name(name);
  if (key.empty()) return nullptr;
  if (any_local()) {
    // The certificate is made under the lock: a handful of handshakes per challenge, and a
    // second one arriving meanwhile must get the same certificate rather than make another.
    std::lock_guard<std::mutex> lock(mu_);
    auto it = alpn_.find(key);
    if (it != alpn_.end()) {
      if (!it->second.cert) {
        auto made = make_tls_alpn01_cert(key, it->second.key_authorization);
        if (!made) {
          log::error("acme_tls_alpn01_cert_failed")
              .kv("name", key)
              .kv("error", made.errors().front().str());
          return nullptr;
        }
        it->second.cert = std::make_shared<const CertifiedKey>(std::move(*made));
      }
      return it->second.cert;
    }
  }
  if (!has_shared_dir_.load(std::memory_order_acquire)) return nullptr;
  return shared_tls_alpn01(key);
}

std::shared_ptr<const CertifiedKey> AcmeChallenges::shared_tls_alpn01(
    const std::string& name) const {
  if (!valid_file_name(name)) return nullptr;
  std::string dir;
  {
    std::lock_guard<std::mutex> lock(mu_);
    dir = shared_dir_;
  }
  if (dir.empty()) return nullptr;
  // Read on every such handshake, so that a removed file stops being served at once.
  std::optional<std::string> ka = read_answer(dir + "/tls-alpn-01/" + storage_file_name(name));
  const auto now = std::chrono::steady_clock::now();
  if (!ka || !valid_key_authorization(*ka)) {
    std::lock_guard<std::mutex> lock(mu_);
    shared_alpn_.erase(name);
    return nullptr;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = shared_alpn_.find(name);
    if (it != shared_alpn_.end() && it->second.key_authorization == *ka &&
        now - it->second.made < kSharedCertTtl) {
      return it->second.cert;
    }
  }
  auto made = make_tls_alpn01_cert(name, *ka);
  if (!made) {
    log::error("acme_tls_alpn01_cert_failed")
        .kv("name", name)
        .kv("error", made.errors().front().str());
    return nullptr;
  }
  auto cert = std::make_shared<const CertifiedKey>(std::move(*made));
  std::lock_guard<std::mutex> lock(mu_);
  std::erase_if(shared_alpn_, [&](const auto& e) { return now - e.second.made >= kSharedCertTtl; });
  if (shared_alpn_.size() >= kMaxSharedCerts) shared_alpn_.clear();
  shared_alpn_[name] = SharedAlpnEntry{*ka, cert, now};
  return cert;
}

Result<CertifiedKey> make_tls_alpn01_cert(const std::string& name,
                                          const std::string& key_authorization) {
  const std::string where = "TLS-ALPN-01 certificate for " + name;
  auto fail = [&where](const std::string& why) { return Error{SourceLoc{where, 0, 0}, why}; };
  if (name.empty()) return fail("no name");
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  X509Ptr cert(X509_new());
  if (!key || !cert) return fail("cannot create: " + openssl_error());

  BIGNUM* serial = BN_new();
  bool ok = serial != nullptr && BN_rand(serial, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1 &&
            BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert.get())) != nullptr;
  BN_free(serial);
  const auto now = std::chrono::system_clock::now();
  ok = ok && X509_set_version(cert.get(), X509_VERSION_3) == 1;
  ok = ok && ASN1_TIME_set(X509_getm_notBefore(cert.get()),
                           std::chrono::system_clock::to_time_t(now - kCertBackdate)) != nullptr;
  ok = ok && ASN1_TIME_set(X509_getm_notAfter(cert.get()),
                           std::chrono::system_clock::to_time_t(now + kCertLifetime)) != nullptr;
  // RFC 8737 §3 wants the name being validated in the SAN and no other identifier; the subject
  // is not one (validators read the SAN), and naming the purpose helps whoever looks at it.
  X509_NAME* subject = X509_get_subject_name(cert.get());
  ok = ok &&
       X509_NAME_add_entry_by_txt(
           subject, "CN", MBSTRING_UTF8,
           reinterpret_cast<const unsigned char*>("ACME TLS-ALPN-01 challenge"), -1, -1, 0) == 1;
  ok = ok && X509_set_issuer_name(cert.get(), subject) == 1;
  ok = ok && X509_set_pubkey(cert.get(), key.get()) == 1;
  ok = ok && add_dns_san(cert.get(), name);
  ok = ok && add_acme_identifier(cert.get(), key_authorization);
  ok = ok && X509_sign(cert.get(), key.get(), EVP_sha256()) > 0;
  if (!ok) return fail("cannot create: " + openssl_error());
  return CertifiedKey::make(std::move(cert), {}, std::move(key), where);
}

}  // namespace hsp::tls
