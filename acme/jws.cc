#include "acme/jws.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "tls/certified_key.h"

namespace hsp::acme {
namespace {

// P-256 field elements and signature halves are 32 bytes (RFC 7518 §3.4, §6.2.1.2).
constexpr int kCoordBytes = 32;

struct BnFree {
  void operator()(BIGNUM* b) const { BN_free(b); }
};
using Bn = std::unique_ptr<BIGNUM, BnFree>;

// A big number as exactly `width` big-endian bytes: BN_bn2bin drops leading zeros, and both the
// JWK coordinates (RFC 7518 §6.2.1.2) and the signature halves (§3.4) must keep them.
std::string fixed_width(const BIGNUM* n, int width) {
  std::string out(static_cast<std::size_t>(width), '\0');
  BN_bn2binpad(n, reinterpret_cast<unsigned char*>(out.data()), width);
  return out;
}

bool is_p256(EVP_PKEY* key) {
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC) return false;
  char group[64] = {};
  std::size_t len = 0;
  if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &len) !=
      1) {
    return false;
  }
  return std::string_view(group, len) == SN_X9_62_prime256v1;
}

}  // namespace

std::string openssl_error(std::string_view what) {
  std::string out(what);
  unsigned long e = ERR_get_error();
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += ": ";
    out += buf;
  }
  ERR_clear_error();
  return out;
}

AccountKey::AccountKey(EVP_PKEY* key) : key_(key) {
  BIGNUM* x = nullptr;
  BIGNUM* y = nullptr;
  EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &x);
  EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &y);
  Bn xb(x), yb(y);
  // nlohmann::json keeps object members sorted, and dump() without an indent has no
  // whitespace: exactly the canonical form RFC 7638 §3.3 asks of the thumbprint input.
  nlohmann::json jwk = {{"crv", "P-256"},
                        {"kty", "EC"},
                        {"x", base64url(xb ? fixed_width(xb.get(), kCoordBytes) : "")},
                        {"y", base64url(yb ? fixed_width(yb.get(), kCoordBytes) : "")}};
  jwk_ = jwk.dump();
  std::array<unsigned char, SHA256_DIGEST_LENGTH> digest{};
  SHA256(reinterpret_cast<const unsigned char*>(jwk_.data()), jwk_.size(), digest.data());
  thumbprint_ = base64url(std::string_view(reinterpret_cast<char*>(digest.data()), digest.size()));
}

Result<AccountKey> AccountKey::generate() {
  EVP_PKEY* k = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  if (k == nullptr) return Error{{}, openssl_error("account key: P-256 key generation failed")};
  return AccountKey(k);
}

Result<AccountKey> AccountKey::from_pem(std::string_view pem, const std::string& where) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return Error{{where}, openssl_error("account key: out of memory")};
  // PEM_read_bio_PrivateKey takes both "PRIVATE KEY" (PKCS#8) and "EC PRIVATE KEY" (SEC1).
  EVP_PKEY* k = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (k == nullptr) return Error{{where}, openssl_error("account key: no private key in PEM")};
  if (!is_p256(k)) {
    EVP_PKEY_free(k);
    // ES256 is the one algorithm sign() speaks; an RSA or P-384 account key (which Caddy can be
    // told to use) is not supported yet.
    return Error{{where}, "account key: not an ECDSA P-256 key (only ES256 is supported)"};
  }
  return AccountKey(k);
}

std::string AccountKey::pem() const {
  return tls::private_key_pem(key_.get());
}

Result<std::string> AccountKey::sign(std::string_view payload, const std::string& nonce,
                                     const std::string& url, const std::string& kid) const {
  // RFC 8555 §6.2: alg, nonce, url and exactly one of jwk / kid.
  nlohmann::json header = {{"alg", "ES256"}, {"nonce", nonce}, {"url", url}};
  if (kid.empty()) {
    header["jwk"] = nlohmann::json::parse(jwk_);
  } else {
    header["kid"] = kid;
  }
  const std::string protected64 = base64url(header.dump());
  // POST-as-GET (§6.3) signs an empty payload, which base64url keeps empty.
  const std::string payload64 = base64url(payload);
  const std::string signing_input = protected64 + "." + payload64;

  EVP_MD_CTX* md = EVP_MD_CTX_new();
  if (md == nullptr) return Error{{}, openssl_error("jws: out of memory")};
  std::string der;
  std::size_t der_len = 0;
  bool ok = EVP_DigestSignInit(md, nullptr, EVP_sha256(), nullptr, key_.get()) == 1 &&
            EVP_DigestSign(md, nullptr, &der_len,
                           reinterpret_cast<const unsigned char*>(signing_input.data()),
                           signing_input.size()) == 1;
  if (ok) {
    der.resize(der_len);
    ok = EVP_DigestSign(md, reinterpret_cast<unsigned char*>(der.data()), &der_len,
                        reinterpret_cast<const unsigned char*>(signing_input.data()),
                        signing_input.size()) == 1;
    der.resize(der_len);
  }
  EVP_MD_CTX_free(md);
  if (!ok) return Error{{}, openssl_error("jws: ECDSA signing failed")};

  // OpenSSL gives the DER ECDSA-Sig-Value; JWS wants r||s, each left-padded to 32 bytes
  // (RFC 7518 §3.4).
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  ECDSA_SIG* sig = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size()));
  if (sig == nullptr) return Error{{}, openssl_error("jws: cannot parse the ECDSA signature")};
  const BIGNUM* r = nullptr;
  const BIGNUM* s = nullptr;
  ECDSA_SIG_get0(sig, &r, &s);
  const std::string raw = fixed_width(r, kCoordBytes) + fixed_width(s, kCoordBytes);
  ECDSA_SIG_free(sig);

  nlohmann::json jws = {
      {"protected", protected64}, {"payload", payload64}, {"signature", base64url(raw)}};
  return jws.dump();
}

}  // namespace hsp::acme
