#include "tls/local_ca.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "util/log.h"

namespace hsp::tls {
namespace {

constexpr double kRenewAt = 2.0 / 3.0;  // Caddy renews at 2/3 of a certificate's lifetime
// Leaves are backdated a little so that a client whose clock runs slightly behind ours still
// accepts a certificate issued a moment ago.
constexpr std::chrono::seconds kBackdate{60};

Error error_at(const std::string& where, std::string message) {
  return Error{SourceLoc{where, 0, 0}, std::move(message)};
}

struct CertSpec {
  std::string common_name;
  bool is_ca = false;
  int path_len = -1;  // for CAs; -1 leaves it unlimited
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;
  SystemTime not_before;
  SystemTime not_after;
};

EvpPkeyPtr new_p256_key() {
  return EvpPkeyPtr(EVP_EC_gen("P-256"));
}

bool add_ext(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, ctx, nid, value);
  if (ext == nullptr) return false;
  bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

// Built by hand rather than through the "DNS:a,IP:b" config syntax so that no name can smuggle
// a separator into the extension.
bool add_san(X509* cert, const CertSpec& spec) {
  GENERAL_NAMES* names = sk_GENERAL_NAME_new_null();
  bool ok = names != nullptr;
  for (const auto& dns : spec.dns_names) {
    if (!ok) break;
    ASN1_IA5STRING* s = ASN1_IA5STRING_new();
    ok = s != nullptr && ASN1_STRING_set(s, dns.data(), static_cast<int>(dns.size())) == 1;
    GENERAL_NAME* gn = GENERAL_NAME_new();
    if (!ok || gn == nullptr) {
      ASN1_IA5STRING_free(s);
      GENERAL_NAME_free(gn);
      ok = false;
      break;
    }
    GENERAL_NAME_set0_value(gn, GEN_DNS, s);
    sk_GENERAL_NAME_push(names, gn);
  }
  for (const auto& ip : spec.ip_addresses) {
    if (!ok) break;
    unsigned char raw[16];
    int len = inet_pton(AF_INET, ip.c_str(), raw) == 1    ? 4
              : inet_pton(AF_INET6, ip.c_str(), raw) == 1 ? 16
                                                          : 0;
    ASN1_OCTET_STRING* s = ASN1_OCTET_STRING_new();
    ok = len > 0 && s != nullptr && ASN1_OCTET_STRING_set(s, raw, len) == 1;
    GENERAL_NAME* gn = GENERAL_NAME_new();
    if (!ok || gn == nullptr) {
      ASN1_OCTET_STRING_free(s);
      GENERAL_NAME_free(gn);
      ok = false;
      break;
    }
    GENERAL_NAME_set0_value(gn, GEN_IPADD, s);
    sk_GENERAL_NAME_push(names, gn);
  }
  // A leaf without a subject would need the SAN marked critical (RFC 5280 §4.2.1.6); ours
  // always have a CN, so it is not.
  ok = ok && X509_add1_ext_i2d(cert, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1;
  GENERAL_NAMES_free(names);
  return ok;
}

// Makes a certificate for a fresh P-256 key, signed by issuer (self-signed when null).
Result<CertifiedKey> make_cert(const CertSpec& spec, const CertifiedKey* issuer,
                               const std::string& what) {
  auto fail = [&what]() { return error_at(what, "cannot create: " + openssl_error()); };
  EvpPkeyPtr key = new_p256_key();
  X509Ptr cert(X509_new());
  if (!key || !cert) return fail();

  BIGNUM* serial = BN_new();
  bool ok = serial != nullptr && BN_rand(serial, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1 &&
            BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert.get())) != nullptr;
  BN_free(serial);
  ok = ok && X509_set_version(cert.get(), X509_VERSION_3) == 1;
  ok = ok && ASN1_TIME_set(X509_getm_notBefore(cert.get()),
                           std::chrono::system_clock::to_time_t(spec.not_before)) != nullptr;
  ok = ok && ASN1_TIME_set(X509_getm_notAfter(cert.get()),
                           std::chrono::system_clock::to_time_t(spec.not_after)) != nullptr;
  X509_NAME* subject = X509_get_subject_name(cert.get());
  ok = ok && X509_NAME_add_entry_by_txt(
                 subject, "CN", MBSTRING_UTF8,
                 reinterpret_cast<const unsigned char*>(spec.common_name.c_str()), -1, -1, 0) == 1;
  X509* issuer_cert = issuer != nullptr ? issuer->leaf() : cert.get();
  EVP_PKEY* issuer_key = issuer != nullptr ? issuer->key() : key.get();
  ok = ok && X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer_cert)) == 1;
  ok = ok && X509_set_pubkey(cert.get(), key.get()) == 1;
  if (!ok) return fail();

  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer_cert, cert.get(), nullptr, nullptr, 0);
  if (spec.is_ca) {
    std::string bc = "critical,CA:TRUE";
    if (spec.path_len >= 0) bc += ",pathlen:" + std::to_string(spec.path_len);
    ok = add_ext(cert.get(), &ctx, NID_basic_constraints, bc.c_str()) &&
         add_ext(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature,keyCertSign,cRLSign");
  } else {
    ok = add_ext(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE") &&
         add_ext(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature") &&
         add_ext(cert.get(), &ctx, NID_ext_key_usage, "serverAuth") && add_san(cert.get(), spec);
  }
  ok = ok && add_ext(cert.get(), &ctx, NID_subject_key_identifier, "hash");
  if (issuer != nullptr) {
    ok = ok && add_ext(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always");
  }
  ok = ok && X509_sign(cert.get(), issuer_key, EVP_sha256()) > 0;
  if (!ok) return fail();

  std::vector<X509Ptr> chain;
  if (issuer != nullptr) {
    X509_up_ref(issuer->leaf());
    chain.emplace_back(issuer->leaf());
  }
  return CertifiedKey::make(std::move(cert), std::move(chain), std::move(key), what);
}

Result<bool> make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) == 0 || errno == EEXIST) return true;
  return error_at(path, std::string("cannot create directory: ") + std::strerror(errno));
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

void warn_if_readable_by_others(const std::string& key_path) {
  struct stat st {};
  if (::stat(key_path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    log::warn("tls_local_ca_key_mode")
        .kv("file", key_path)
        .kv("mode", static_cast<int>(st.st_mode & 0777));
  }
}

int year_of(SystemTime t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  struct tm tm {};
  gmtime_r(&tt, &tm);
  return tm.tm_year + 1900;
}

// Sorts out which names are IPs and checks that the rest are DNS names we can put in a SAN.
Result<CertSpec> names_to_spec(const std::vector<std::string>& names) {
  CertSpec spec;
  for (const auto& raw : names) {
    std::string name = raw;
    if (name.size() > 2 && name.front() == '[' && name.back() == ']') {
      name = name.substr(1, name.size() - 2);
    }
    unsigned char buf[16];
    char text[INET6_ADDRSTRLEN] = {};
    if (inet_pton(AF_INET, name.c_str(), buf) == 1) {
      inet_ntop(AF_INET, buf, text, sizeof text);
      spec.ip_addresses.emplace_back(text);
      continue;
    }
    if (inet_pton(AF_INET6, name.c_str(), buf) == 1) {
      inet_ntop(AF_INET6, buf, text, sizeof text);
      spec.ip_addresses.emplace_back(text);
      continue;
    }
    name = normalize_name(name);
    std::string_view labels = name;
    if (labels.size() > 2 && labels.substr(0, 2) == "*.") labels.remove_prefix(2);
    bool valid = !labels.empty() && name.size() <= 253 && labels.front() != '.' &&
                 labels.find("..") == std::string_view::npos;
    for (char c : labels) {
      valid = valid && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
                        c == '_');
    }
    if (!valid) return Error{SourceLoc{}, "local CA: not a DNS name or IP address: " + raw};
    spec.dns_names.push_back(std::move(name));
  }
  auto dedupe = [](std::vector<std::string>& v) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
  };
  dedupe(spec.dns_names);
  dedupe(spec.ip_addresses);
  if (spec.dns_names.empty() && spec.ip_addresses.empty()) {
    return Error{SourceLoc{}, "local CA: no names to issue a certificate for"};
  }
  return spec;
}

}  // namespace

Result<bool> write_file_atomic(const std::string& path, const std::string& data, unsigned mode) {
  std::string tmp = path + ".tmp-XXXXXX";
  int fd = ::mkstemp(tmp.data());  // created 0600, so a key is never briefly world-readable
  if (fd < 0) return error_at(path, std::string("cannot write: ") + std::strerror(errno));
  auto fail = [&](const char* step) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return error_at(path, std::string("cannot write (") + step + "): " + std::strerror(err));
  };
  if (::fchmod(fd, mode) != 0) return fail("chmod");
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("write");
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) return fail("fsync");
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return error_at(path, std::string("cannot write (close): ") + std::strerror(errno));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return error_at(path, std::string("cannot write (rename): ") + std::strerror(err));
  }
  // The rename is durable only once the directory entry is on disk.
  std::string dir = path.substr(0, path.find_last_of('/') + 1);
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return true;
}

SystemTime LocalCa::now() const {
  return options_.now ? options_.now() : std::chrono::system_clock::now();
}

Result<std::unique_ptr<LocalCa>> LocalCa::open(const std::string& dir, Options options) {
  std::unique_ptr<LocalCa> ca(new LocalCa());
  ca->options_ = std::move(options);
  // The data directory and its missing parents first (a fresh $HOME has no ~/.local/share),
  // then Caddy's pki layout under it; every directory made here is 0700.
  std::string path;
  for (size_t i = 1; i <= dir.size(); ++i) {
    if (i < dir.size() && dir[i] != '/') continue;
    path = dir.substr(0, i);
    if (path.empty() || path == "/") continue;
    auto made = make_dir(path);
    if (!made) return made.errors();
  }
  path = dir;
  for (const char* part : {"/pki", "/authorities", "/local"}) {
    path += part;
    auto made = make_dir(path);
    if (!made) return made.errors();
  }
  ca->dir_ = path;
  ca->root_path_ = path + "/root.crt";
  std::lock_guard<std::mutex> lock(ca->mu_);
  auto root = ca->load_or_create_root();
  if (!root) return root.errors();
  auto inter = ca->ensure_intermediate();
  if (!inter) return inter.errors();
  log::info("tls_local_ca_ready")
      .kv("root", ca->root_path_)
      .kv("subject", ca->root_->subject())
      .kv("note",
          "trust this root certificate in clients that should accept local-CA sites; "
          "it is not installed in any system trust store");
  return ca;
}

Result<bool> LocalCa::load_or_create_root() {
  std::string key_path = dir_ + "/root.key";
  if (file_exists(root_path_)) {
    auto loaded = load_pem_files(root_path_, key_path);
    if (!loaded) return loaded.errors();
    warn_if_readable_by_others(key_path);
    root_ = std::make_shared<const CertifiedKey>(std::move(*loaded));
    return true;
  }
  // No root certificate means nobody can have trusted this root yet, so a stray key (from a
  // crash between the two writes below) is simply replaced.
  SystemTime t = now();
  CertSpec spec;
  spec.common_name = "HSP Gateway Local Authority - " + std::to_string(year_of(t)) + " ECC Root";
  spec.is_ca = true;
  spec.not_before = t;
  spec.not_after = t + options_.root_lifetime;
  auto made = make_cert(spec, nullptr, root_path_);
  if (!made) return made.errors();
  // Key first: a crash in between leaves no root.crt, which the next start treats as "none".
  auto wrote = write_file_atomic(key_path, made->key_pem(), 0600);
  if (!wrote) return wrote.errors();
  wrote = write_file_atomic(root_path_, made->cert_chain_pem(), 0644);
  if (!wrote) return wrote.errors();
  root_ = std::make_shared<const CertifiedKey>(std::move(*made));
  log::info("tls_local_ca_root_created").kv("root", root_path_).kv("subject", root_->subject());
  return true;
}

Result<bool> LocalCa::ensure_intermediate() {
  std::string cert_path = dir_ + "/intermediate.crt";
  std::string key_path = dir_ + "/intermediate.key";
  SystemTime t = now();
  if (!intermediate_ && file_exists(cert_path) && file_exists(key_path)) {
    auto loaded = load_pem_files(cert_path, key_path);
    // A damaged or foreign intermediate is replaced, not fatal: only the root is precious.
    if (loaded && X509_verify(loaded->leaf(), root_->key()) == 1) {
      intermediate_ = std::make_shared<const CertifiedKey>(std::move(*loaded));
    } else {
      ERR_clear_error();
      log::warn("tls_local_ca_intermediate_replaced")
          .kv("file", cert_path)
          .kv("reason", loaded ? "not signed by the root" : loaded.errors().front().str());
    }
  }
  if (intermediate_ && !intermediate_->past_fraction(kRenewAt, t)) return true;

  CertSpec spec;
  spec.common_name = "HSP Gateway Local Authority - ECC Intermediate";
  spec.is_ca = true;
  spec.path_len = 0;
  spec.not_before = t;
  spec.not_after = t + options_.intermediate_lifetime;
  auto made = make_cert(spec, root_.get(), cert_path);
  if (!made) return made.errors();
  auto wrote = write_file_atomic(key_path, made->key_pem(), 0600);
  if (!wrote) return wrote.errors();
  // Only the intermediate itself goes into the file; the leaf chains carry it from memory.
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, made->leaf());
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  std::string pem(data, n > 0 ? static_cast<size_t>(n) : 0);
  BIO_free(bio);
  wrote = write_file_atomic(cert_path, pem, 0644);
  if (!wrote) return wrote.errors();
  intermediate_ = std::make_shared<const CertifiedKey>(std::move(*made));
  log::info("tls_local_ca_intermediate_issued")
      .kv("file", cert_path)
      .kv("serial", intermediate_->serial_hex());
  return true;
}

Result<std::shared_ptr<const CertifiedKey>> LocalCa::issue(const std::vector<std::string>& names) {
  auto spec = names_to_spec(names);
  if (!spec) return spec.errors();
  std::string cache_key;
  for (const auto* list : {&spec->dns_names, &spec->ip_addresses}) {
    for (const auto& n : *list) cache_key += n + ",";
  }

  // One lock for everything: issuing is rare (a few per site per 8 hours) and a P-256
  // signature takes well under a millisecond, so handshakes never wait on this in practice.
  std::lock_guard<std::mutex> lock(mu_);
  SystemTime t = now();
  if (auto it = leaves_.find(cache_key); it != leaves_.end()) {
    if (!it->second->past_fraction(kRenewAt, t)) return it->second;
  }
  auto inter = ensure_intermediate();
  if (!inter) {
    // A full disk must not stop issuance while the old intermediate is still valid (it has a
    // third of its life left when renewal starts); the renewal is retried on the next miss.
    if (!intermediate_ || intermediate_->expired(t)) return inter.errors();
    log::warn("tls_local_ca_intermediate_renewal_failed").kv("error", inter.errors().front().str());
  }

  const std::string& first =
      !spec->dns_names.empty() ? spec->dns_names.front() : spec->ip_addresses.front();
  // CN is limited to 64 characters (RFC 5280 upper bound); SANs carry the real names.
  spec->common_name = first.size() <= 64 ? first : first.substr(0, 64);
  spec->not_before = t - kBackdate;
  spec->not_after = t + options_.leaf_lifetime;
  auto made = make_cert(*spec, intermediate_.get(), "local CA leaf for " + first);
  if (!made) return made.errors();
  auto leaf = std::make_shared<const CertifiedKey>(std::move(*made));
  leaves_[cache_key] = leaf;
  log::info("tls_local_ca_leaf_issued")
      .kv("names", names)
      .kv("serial", leaf->serial_hex())
      .kv("not_after",
          static_cast<int64_t>(std::chrono::system_clock::to_time_t(leaf->not_after())));
  return leaf;
}

std::shared_ptr<const CertifiedKey> LocalCa::root() const {
  std::lock_guard<std::mutex> lock(mu_);
  return root_;
}

std::shared_ptr<const CertifiedKey> LocalCa::intermediate() const {
  std::lock_guard<std::mutex> lock(mu_);
  return intermediate_;
}

}  // namespace hsp::tls
