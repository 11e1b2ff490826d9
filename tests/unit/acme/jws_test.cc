// JWS as ACME uses it: the account key's JWK and RFC 7638 thumbprint, ES256
// signatures checked with OpenSSL independently of the signer, and the RFC 9773 certificate id.
#include "acme/jws.h"

#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <nlohmann/json.hpp>
#include <string>

#include "acme/client.h"
#include "acme_test_util.h"

namespace hsp::acme {
namespace {

using nlohmann::json;

// The P-256 key of RFC 6979 §A.2.5 (private scalar C9AFA9D8...), SEC1 PEM, so that the JWK and
// its thumbprint have fixed expected values.
constexpr const char* kRfc6979KeyPem =
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHcCAQEEIMmvqdhFunUWa1whV2ex1pNOUMPbNuibEnuKYisSD2choAoGCCqGSM49\n"
    "AwEHoUQDQgAEYP7UuiVanTHJYet0xjVtaMBJuJI7Yfps5mliLmDyn7Z5A/4QCLi8\n"
    "maQa6elWKLxk8vGyDC1+n1F3o8KU1EYimQ==\n"
    "-----END EC PRIVATE KEY-----\n";
// Its public point Ux, Uy (RFC 6979 §A.2.5) in base64url, members sorted, no whitespace.
constexpr const char* kRfc6979Jwk =
    R"({"crv":"P-256","kty":"EC","x":"YP7UuiVanTHJYet0xjVtaMBJuJI7Yfps5mliLmDyn7Y",)"
    R"("y":"eQP-EAi4vJmkGunpVii8ZPLxsgwtfp9Rd6PClNRGIpk"})";
// base64url(SHA-256(kRfc6979Jwk)), computed independently (Python hashlib).
constexpr const char* kRfc6979Thumbprint = "DOvxvJiAdIqVWIkFt5hDtCunXLF0BV4-JGv4f-ALSm0";

std::string decode(const std::string& text) {
  auto r = base64url_decode(text);
  EXPECT_TRUE(r.ok()) << text;
  return r ? *r : std::string();
}

TEST(AccountKey, JwkAndThumbprintOfAKnownKey) {
  auto key = AccountKey::from_pem(kRfc6979KeyPem, "rfc6979.pem");
  ASSERT_TRUE(key.ok()) << key.errors().front().str();
  EXPECT_EQ(key->jwk(), kRfc6979Jwk);
  EXPECT_EQ(key->thumbprint(), kRfc6979Thumbprint);
  EXPECT_EQ(key->key_authorization("tok"), std::string("tok.") + kRfc6979Thumbprint);
}

TEST(AccountKey, GeneratedKeyJwkShapeAndPemRoundTrip) {
  auto key = AccountKey::generate();
  ASSERT_TRUE(key.ok());
  const std::string& jwk = key->jwk();
  // Member order is lexicographic (RFC 7638 §3.3): crv, kty, x, y.
  ASSERT_EQ(jwk.rfind(R"({"crv":"P-256","kty":"EC","x":")", 0), 0u) << jwk;
  EXPECT_LT(jwk.find(R"("x":)"), jwk.find(R"("y":)"));
  EXPECT_EQ(jwk.find(' '), std::string::npos);
  json parsed = json::parse(jwk);
  // Coordinates are always 32 bytes, leading zeros kept (RFC 7518 §6.2.1.2).
  EXPECT_EQ(decode(parsed["x"]).size(), 32u);
  EXPECT_EQ(decode(parsed["y"]).size(), 32u);
  EXPECT_EQ(decode(key->thumbprint()).size(), 32u);

  const std::string pem = key->pem();
  EXPECT_NE(pem.find("-----BEGIN PRIVATE KEY-----"), std::string::npos);  // PKCS#8
  auto again = AccountKey::from_pem(pem, "again.pem");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->jwk(), jwk);
  EXPECT_EQ(again->thumbprint(), key->thumbprint());
}

TEST(AccountKey, FromPemRejectsNonP256AndGarbage) {
  EVP_PKEY* rsa = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048});
  ASSERT_NE(rsa, nullptr);
  const std::string rsa_pem = testing::key_pem(rsa);
  EVP_PKEY_free(rsa);

  auto r = AccountKey::from_pem(rsa_pem, "users/x/account.key");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.errors().front().loc.file, "users/x/account.key");
  EXPECT_NE(r.errors().front().message.find("P-256"), std::string::npos);
  EXPECT_FALSE(AccountKey::from_pem("not a key", "x").ok());
}

// Checks `jws` (flattened JSON) the way a CA does: decode, convert r||s to DER, verify.
json verify_jws(const AccountKey& key, const std::string& jws, std::string& payload_out) {
  json body = json::parse(jws);
  EXPECT_EQ(body.size(), 3u);
  const std::string protected64 = body["protected"];
  const std::string payload64 = body["payload"];
  const std::string raw = decode(body["signature"]);
  EXPECT_EQ(raw.size(), 64u);  // raw r||s, not DER (RFC 7518 §3.4)
  payload_out = decode(payload64);

  BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()), 32, nullptr);
  BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()) + 32, 32, nullptr);
  ECDSA_SIG* sig = ECDSA_SIG_new();
  ECDSA_SIG_set0(sig, r, s);
  unsigned char* der = nullptr;
  const int der_len = i2d_ECDSA_SIG(sig, &der);
  ECDSA_SIG_free(sig);

  const std::string input = protected64 + "." + payload64;
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  EVP_DigestVerifyInit(md, nullptr, EVP_sha256(), nullptr, key.native());
  const int ok =
      EVP_DigestVerify(md, der, static_cast<std::size_t>(der_len),
                       reinterpret_cast<const unsigned char*>(input.data()), input.size());
  EVP_MD_CTX_free(md);
  OPENSSL_free(der);
  EXPECT_EQ(ok, 1) << "signature does not verify";
  return json::parse(decode(protected64));
}

TEST(AccountKey, SignWithJwkVerifiesWithOpenSsl) {
  auto key = AccountKey::generate();
  ASSERT_TRUE(key.ok());
  auto jws =
      key->sign(R"({"termsOfServiceAgreed":true})", "nonce-1", "https://127.0.0.1:1/new-acct", "");
  ASSERT_TRUE(jws.ok());
  std::string payload;
  json header = verify_jws(*key, *jws, payload);
  EXPECT_EQ(payload, R"({"termsOfServiceAgreed":true})");
  EXPECT_EQ(header["alg"], "ES256");
  EXPECT_EQ(header["nonce"], "nonce-1");
  EXPECT_EQ(header["url"], "https://127.0.0.1:1/new-acct");
  EXPECT_FALSE(header.contains("kid"));
  ASSERT_TRUE(header.contains("jwk"));
  EXPECT_EQ(header["jwk"].dump(), key->jwk());
}

TEST(AccountKey, SignWithKidAndEmptyPayloadForPostAsGet) {
  auto key = AccountKey::from_pem(kRfc6979KeyPem, "k");
  ASSERT_TRUE(key.ok());
  // Many signatures, so that an r or s with leading zero bytes (1 in 128) gets exercised.
  for (int i = 0; i < 200; ++i) {
    auto jws = key->sign("", "n" + std::to_string(i), "https://127.0.0.1:1/order/1",
                         "https://127.0.0.1:1/acct/7");
    ASSERT_TRUE(jws.ok());
    EXPECT_EQ(json::parse(*jws)["payload"], "");  // RFC 8555 §6.3
    std::string payload;
    json header = verify_jws(*key, *jws, payload);
    EXPECT_EQ(payload, "");
    EXPECT_EQ(header["kid"], "https://127.0.0.1:1/acct/7");
    EXPECT_FALSE(header.contains("jwk"));
    if (HasFailure()) break;
  }
}

// A certificate with the given AKI keyIdentifier and serial (hex), self-signed by a throwaway
// key: the inputs of the RFC 9773 §4.1 example.
std::string cert_with(const std::string& aki_hex, const char* serial_hex) {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  X509* x = X509_new();
  X509_set_version(x, 2);
  BIGNUM* serial = nullptr;
  BN_hex2bn(&serial, serial_hex);
  BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x));
  BN_free(serial);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("ari.test"), -1, -1, 0);
  X509_set_issuer_name(x, X509_get_subject_name(x));
  X509_set_pubkey(x, key);
  if (!aki_hex.empty()) {
    long len = 0;
    unsigned char* bytes = OPENSSL_hexstr2buf(aki_hex.c_str(), &len);
    AUTHORITY_KEYID* akid = AUTHORITY_KEYID_new();
    akid->keyid = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING_set(akid->keyid, bytes, static_cast<int>(len));
    X509_add1_ext_i2d(x, NID_authority_key_identifier, akid, 0, X509V3_ADD_DEFAULT);
    AUTHORITY_KEYID_free(akid);
    OPENSSL_free(bytes);
  }
  X509_sign(x, key, EVP_sha256());
  std::string pem = testing::cert_pem(x);
  X509_free(x);
  EVP_PKEY_free(key);
  return pem;
}

TEST(AriCertId, Rfc9773Example) {
  // RFC 9773 §4.1: AKI 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4 and serial
  // 00:87:65:43:21 (the leading zero is part of the DER since 0x87 has the high bit set).
  const std::string pem =
      cert_with("69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4", "87654321");
  auto id = ari_cert_id(pem);
  ASSERT_TRUE(id.ok()) << id.errors().front().str();
  EXPECT_EQ(*id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
}

TEST(AriCertId, SmallSerialAndMissingAki) {
  auto id = ari_cert_id(cert_with("0102", "05"));
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id, "AQI.BQ");
  auto none = ari_cert_id(cert_with("", "05"));
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.errors().front().message.find("authority key identifier"), std::string::npos);
  EXPECT_FALSE(ari_cert_id("garbage").ok());
}

}  // namespace
}  // namespace hsp::acme
