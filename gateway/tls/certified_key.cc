#include "tls/certified_key.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "util/log.h"

namespace hsp::tls {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;

Error error_at(const std::string& where, std::string message) {
  return Error{SourceLoc{where, 0, 0}, std::move(message)};
}

SystemTime to_time(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return SystemTime{};
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

std::string bio_to_string(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

void collect_names(X509* leaf, std::vector<std::string>& dns, std::vector<std::string>& ips) {
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(leaf, NID_subject_alt_name, nullptr, nullptr));
  if (names != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
      const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
      if (gn->type == GEN_DNS) {
        const ASN1_IA5STRING* s = gn->d.dNSName;
        dns.push_back(normalize_name(std::string_view(
            reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), ASN1_STRING_length(s))));
      } else if (gn->type == GEN_IPADD) {
        const ASN1_OCTET_STRING* s = gn->d.iPAddress;
        char buf[INET6_ADDRSTRLEN] = {};
        int len = ASN1_STRING_length(s);
        int family = len == 4 ? AF_INET : len == 16 ? AF_INET6 : 0;
        if (family != 0 && inet_ntop(family, ASN1_STRING_get0_data(s), buf, sizeof buf)) {
          ips.emplace_back(buf);
        }
      }
    }
    GENERAL_NAMES_free(names);
  }
  if (!dns.empty() || !ips.empty()) return;
  // No SAN: fall back on the subject CN so that old hand-made certificates still select.
  X509_NAME* subject = X509_get_subject_name(leaf);
  int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (idx < 0) return;
  const ASN1_STRING* cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
  dns.push_back(normalize_name(std::string_view(
      reinterpret_cast<const char*>(ASN1_STRING_get0_data(cn)), ASN1_STRING_length(cn))));
}

}  // namespace

std::string openssl_error() {
  unsigned long code = ERR_peek_last_error();
  char buf[256] = {};
  if (code != 0) ERR_error_string_n(code, buf, sizeof buf);
  ERR_clear_error();
  return code != 0 ? std::string(buf) : std::string("unknown OpenSSL error");
}

std::string normalize_name(std::string_view name) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  std::string out(name);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

Result<std::optional<std::string>> read_file_if_exists(const std::string& path, size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<std::string>{};
    return error_at(path, std::string("cannot read: ") + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return error_at(path, "cannot read: not a regular file");
  }
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return error_at(path, std::string("cannot read: ") + std::strerror(err));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_bytes) {
      ::close(fd);
      return error_at(path, "cannot read: larger than " + std::to_string(max_bytes) +
                                " bytes, not what belongs there");
    }
  }
  ::close(fd);
  return std::optional<std::string>(std::move(out));
}

Result<std::string> read_file(const std::string& path, size_t max_bytes) {
  auto text = read_file_if_exists(path, max_bytes);
  if (!text) return text.errors();
  if (!*text) return error_at(path, std::string("cannot read: ") + std::strerror(ENOENT));
  return std::move(**text);
}

Result<CertifiedKey> CertifiedKey::make(X509Ptr leaf, std::vector<X509Ptr> chain, EvpPkeyPtr key,
                                        const std::string& where) {
  if (EVP_PKEY_eq(X509_get0_pubkey(leaf.get()), key.get()) != 1) {
    ERR_clear_error();
    return error_at(where, "private key does not match the certificate");
  }
  CertifiedKey ck;
  ck.chain_.reset(sk_X509_new_null());
  for (auto& c : chain) {
    if (sk_X509_push(ck.chain_.get(), c.get()) == 0) return error_at(where, openssl_error());
    c.release();
  }
  ck.leaf_ = std::move(leaf);
  ck.key_ = std::move(key);
  collect_names(ck.leaf_.get(), ck.dns_names_, ck.ip_addresses_);
  ck.not_before_ = to_time(X509_get0_notBefore(ck.leaf_.get()));
  ck.not_after_ = to_time(X509_get0_notAfter(ck.leaf_.get()));
  return ck;
}

Result<CertifiedKey> CertifiedKey::from_pem(std::string_view cert_pem, std::string_view key_pem,
                                            const std::string& cert_name,
                                            const std::string& key_name) {
  BioPtr cbio(BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())));
  X509Ptr leaf(PEM_read_bio_X509(cbio.get(), nullptr, nullptr, nullptr));
  if (!leaf) {
    ERR_clear_error();
    return error_at(cert_name, "no PEM certificate found");
  }
  std::vector<X509Ptr> chain;
  for (;;) {
    X509Ptr next(PEM_read_bio_X509(cbio.get(), nullptr, nullptr, nullptr));
    if (!next) break;
    chain.push_back(std::move(next));
  }
  // The loop ends on "no start line" at the end of the input; a damaged block in the middle
  // also ends it, which would silently drop intermediates, so tell the two apart.
  unsigned long err = ERR_peek_last_error();
  ERR_clear_error();
  if (err != 0 && ERR_GET_REASON(err) != PEM_R_NO_START_LINE) {
    return error_at(cert_name, "certificate " + std::to_string(chain.size() + 2) +
                                   " in the file is not valid PEM");
  }

  BioPtr kbio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(kbio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    ERR_clear_error();
    return error_at(key_name, "no PEM private key found (encrypted keys are not supported)");
  }
  auto ck = make(std::move(leaf), std::move(chain), std::move(key), key_name);
  if (!ck) {
    return error_at(key_name, "private key does not match the certificate in " + cert_name);
  }
  return ck;
}

bool CertifiedKey::past_fraction(double fraction, SystemTime now) const {
  auto life = not_after_ - not_before_;
  auto point = not_before_ + std::chrono::duration_cast<SystemTime::duration>(life * fraction);
  return now >= point;
}

std::string CertifiedKey::subject() const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), X509_get_subject_name(leaf_.get()), 0,
                     XN_FLAG_ONELINE & ~XN_FLAG_SPC_EQ);
  return bio_to_string(bio.get());
}

std::string CertifiedKey::serial_hex() const {
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf_.get()), nullptr);
  if (bn == nullptr) return {};
  char* hex = BN_bn2hex(bn);
  std::string out = hex != nullptr ? hex : "";
  OPENSSL_free(hex);
  BN_free(bn);
  return out;
}

std::string CertifiedKey::cert_chain_pem() const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), leaf_.get());
  for (int i = 0; i < sk_X509_num(chain_.get()); ++i) {
    PEM_write_bio_X509(bio.get(), sk_X509_value(chain_.get(), i));
  }
  return bio_to_string(bio.get());
}

std::string private_key_pem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return {};
  return bio_to_string(bio.get());
}

std::string CertifiedKey::key_pem() const {
  return private_key_pem(key_.get());
}

Result<CertifiedKey> load_pem_files(const std::string& cert_path, const std::string& key_path) {
  auto cert = read_file(cert_path);
  if (!cert) return cert.errors();
  auto key = read_file(key_path);
  if (!key) return key.errors();
  auto ck = CertifiedKey::from_pem(*cert, *key, cert_path, key_path);
  if (ck && ck->expired()) {
    log::warn("tls_certificate_expired")
        .kv("cert_file", cert_path)
        .kv("subject", ck->subject())
        .kv("not_after",
            static_cast<int64_t>(std::chrono::system_clock::to_time_t(ck->not_after())));
  }
  return ck;
}

}  // namespace hsp::tls
