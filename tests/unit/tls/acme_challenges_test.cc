#include "tls/acme_challenges.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "tls/local_ca.h"
#include "tls/server_context.h"
#include "tls_test_util.h"

namespace hsp::tls {
namespace {

// Shaped like real ones: a 43-character token and a 43-character account key thumbprint.
const std::string kToken = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";
const std::string kKeyAuth = kToken + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI";

std::vector<unsigned char> sha256(const std::string& s) {
  std::vector<unsigned char> out(EVP_MAX_MD_SIZE);
  unsigned int n = 0;
  EXPECT_EQ(EVP_Digest(s.data(), s.size(), out.data(), &n, EVP_sha256(), nullptr), 1);
  out.resize(n);
  return out;
}

void write_file(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

// The acmeIdentifier extension as RFC 8737 §3 defines it, checked with OpenSSL: present once,
// critical, and its value the DER OCTET STRING of SHA-256(key authorization).
void expect_acme_identifier(X509* cert, const std::string& key_authorization) {
  ASSERT_NE(cert, nullptr);
  ASN1_OBJECT* oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
  ASSERT_NE(oid, nullptr);
  int at = X509_get_ext_by_OBJ(cert, oid, -1);
  ASSERT_GE(at, 0) << "no id-pe-acmeIdentifier extension";
  EXPECT_LT(X509_get_ext_by_OBJ(cert, oid, at), 0) << "the extension appears twice";
  ASN1_OBJECT_free(oid);
  X509_EXTENSION* ext = X509_get_ext(cert, at);
  EXPECT_EQ(X509_EXTENSION_get_critical(ext), 1);
  ASN1_OCTET_STRING* value = X509_EXTENSION_get_data(ext);
  std::vector<unsigned char> got(ASN1_STRING_get0_data(value),
                                 ASN1_STRING_get0_data(value) + ASN1_STRING_length(value));
  std::vector<unsigned char> want = {0x04, 0x20};  // OCTET STRING, 32 bytes
  auto digest = sha256(key_authorization);
  ASSERT_EQ(digest.size(), 32u);
  want.insert(want.end(), digest.begin(), digest.end());
  EXPECT_EQ(got, want);
  // And it parses as one: nothing trails the OCTET STRING.
  const unsigned char* p = got.data();
  ASN1_OCTET_STRING* inner = d2i_ASN1_OCTET_STRING(nullptr, &p, static_cast<long>(got.size()));
  ASSERT_NE(inner, nullptr);
  EXPECT_EQ(p, got.data() + got.size());
  EXPECT_EQ(ASN1_STRING_length(inner), 32);
  ASN1_OCTET_STRING_free(inner);
}

std::vector<std::string> san_dns_names(X509* cert) {
  std::vector<std::string> out;
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
    if (gn->type == GEN_DNS) {
      out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.dNSName)),
                       static_cast<size_t>(ASN1_STRING_length(gn->d.dNSName)));
    } else {
      out.emplace_back("<other general name>");
    }
  }
  GENERAL_NAMES_free(names);
  return out;
}

TEST(AcmeChallengesTest, Http01PutGetRemove) {
  AcmeChallenges reg;
  EXPECT_FALSE(reg.any_local());
  EXPECT_FALSE(reg.http01(kToken));
  reg.put_http01(kToken, kKeyAuth);
  EXPECT_TRUE(reg.any_local());
  ASSERT_TRUE(reg.http01(kToken));
  EXPECT_EQ(*reg.http01(kToken), kKeyAuth);
  EXPECT_FALSE(reg.http01(kToken.substr(1)));
  reg.put_http01(kToken, kToken + ".other");  // a new attempt replaces the answer
  EXPECT_EQ(*reg.http01(kToken), kToken + ".other");
  reg.remove_http01(kToken);
  EXPECT_FALSE(reg.http01(kToken));
  EXPECT_FALSE(reg.any_local());
  reg.remove_http01(kToken);  // removing twice is harmless
  EXPECT_FALSE(reg.any_local());
}

TEST(AcmeChallengesTest, TlsAlpn01PutGetRemoveAndCertificateIsMadeOnce) {
  AcmeChallenges reg;
  EXPECT_EQ(reg.tls_alpn01("a.test"), nullptr);
  reg.put_tls_alpn01("A.Test.", kKeyAuth);  // names compare as normalize_name() makes them
  EXPECT_TRUE(reg.any_local());
  auto cert = reg.tls_alpn01("a.test");
  ASSERT_NE(cert, nullptr);
  EXPECT_EQ(reg.tls_alpn01("A.TEST"), cert);  // cached for the challenge's life
  EXPECT_EQ(cert->dns_names(), std::vector<std::string>{"a.test"});
  expect_acme_identifier(cert->leaf(), kKeyAuth);
  EXPECT_EQ(reg.tls_alpn01("b.test"), nullptr);
  reg.put_tls_alpn01("a.test", kToken + ".other");  // a new attempt: a new certificate
  auto again = reg.tls_alpn01("a.test");
  ASSERT_NE(again, nullptr);
  EXPECT_NE(again, cert);
  expect_acme_identifier(again->leaf(), kToken + ".other");
  reg.remove_tls_alpn01("a.test");
  EXPECT_EQ(reg.tls_alpn01("a.test"), nullptr);
  EXPECT_FALSE(reg.any_local());
}

TEST(AcmeChallengesTest, TokenValidation) {
  EXPECT_TRUE(AcmeChallenges::valid_token(kToken));
  EXPECT_TRUE(AcmeChallenges::valid_token("a"));
  EXPECT_TRUE(AcmeChallenges::valid_token("AZaz09-_"));
  EXPECT_TRUE(AcmeChallenges::valid_token(std::string(AcmeChallenges::kMaxTokenLength, 'x')));
  EXPECT_FALSE(AcmeChallenges::valid_token(""));
  EXPECT_FALSE(AcmeChallenges::valid_token(std::string(AcmeChallenges::kMaxTokenLength + 1, 'x')));
  for (const std::string& bad :
       std::vector<std::string>{"..", "a/b", "../etc/passwd", "a.b", "a%2fb", "a b", "a=", "a+b",
                                std::string("a\0b", 3), "é"}) {
    EXPECT_FALSE(AcmeChallenges::valid_token(bad)) << bad;
  }
  // Refused before the lookup: even an entry put under such a key is never served.
  AcmeChallenges reg;
  reg.put_http01("a.b", "a.b.c");
  EXPECT_FALSE(reg.http01("a.b"));
}

class AcmeSharedDirTest : public ::testing::Test {
 protected:
  void SetUp() override { reg_.set_shared_dir(tmp_.path() + "/"); }
  std::string http01_file(const std::string& token) { return tmp_.path() + "/http-01/" + token; }
  std::string alpn_file(const std::string& name) { return tmp_.path() + "/tls-alpn-01/" + name; }

  testing::TempDir tmp_;
  AcmeChallenges reg_;
};

TEST_F(AcmeSharedDirTest, Http01FallsBackToTheSharedDirectory) {
  EXPECT_FALSE(reg_.http01(kToken));
  write_file(http01_file(kToken), kKeyAuth + "\n");  // a trailing newline is not served
  EXPECT_FALSE(reg_.any_local());
  ASSERT_TRUE(reg_.http01(kToken));
  EXPECT_EQ(*reg_.http01(kToken), kKeyAuth);
  // Memory wins over the directory.
  reg_.put_http01(kToken, kToken + ".local");
  EXPECT_EQ(*reg_.http01(kToken), kToken + ".local");
  reg_.remove_http01(kToken);
  EXPECT_EQ(*reg_.http01(kToken), kKeyAuth);
  // The file's removal is seen at once (no cache).
  std::filesystem::remove(http01_file(kToken));
  EXPECT_FALSE(reg_.http01(kToken));
}

TEST_F(AcmeSharedDirTest, Http01IgnoresFilesThatAreNotThisTokensAnswer) {
  write_file(http01_file("tokA"), "tokB.thumb");  // another token's answer
  write_file(http01_file("tokC"), "not a key authorization");
  write_file(http01_file("tokD"), std::string(2000, 'x'));   // too large
  std::filesystem::create_directories(http01_file("tokE"));  // not a regular file
  for (const char* t : {"tokA", "tokC", "tokD", "tokE"}) EXPECT_FALSE(reg_.http01(t)) << t;
  // A path that leaves the directory is never read, though the file exists there.
  write_file(tmp_.path() + "/secret", "x.y");
  EXPECT_FALSE(reg_.http01("../secret"));
}

TEST_F(AcmeSharedDirTest, NoSharedDirectoryNoFileSystem) {
  write_file(http01_file(kToken), kKeyAuth);
  write_file(alpn_file("a.test"), kKeyAuth);
  reg_.set_shared_dir("");
  EXPECT_FALSE(reg_.http01(kToken));
  EXPECT_EQ(reg_.tls_alpn01("a.test"), nullptr);
}

TEST_F(AcmeSharedDirTest, TlsAlpn01FallsBackToTheSharedDirectory) {
  EXPECT_EQ(reg_.tls_alpn01("a.test"), nullptr);
  write_file(alpn_file("a.test"), kKeyAuth + "\n");
  auto cert = reg_.tls_alpn01("A.test");
  ASSERT_NE(cert, nullptr);
  EXPECT_EQ(cert->dns_names(), std::vector<std::string>{"a.test"});
  expect_acme_identifier(cert->leaf(), kKeyAuth);
  EXPECT_EQ(reg_.tls_alpn01("a.test"), cert);  // reused while the file says the same
  write_file(alpn_file("a.test"), kToken + ".changed");
  auto changed = reg_.tls_alpn01("a.test");
  ASSERT_NE(changed, nullptr);
  EXPECT_NE(changed, cert);
  expect_acme_identifier(changed->leaf(), kToken + ".changed");
  std::filesystem::remove(alpn_file("a.test"));
  EXPECT_EQ(reg_.tls_alpn01("a.test"), nullptr);  // removal is seen at once

  // A wildcard's "*" is spelled "wildcard_" in the file name (acme/storage.h).
  write_file(alpn_file("wildcard_.w.test"), kKeyAuth);
  auto wild = reg_.tls_alpn01("*.w.test");
  ASSERT_NE(wild, nullptr);
  EXPECT_EQ(wild->dns_names(), std::vector<std::string>{"*.w.test"});
  // Names that are not DNS names never reach the file system.
  write_file(tmp_.path() + "/secret", kKeyAuth);
  EXPECT_EQ(reg_.tls_alpn01("../secret"), nullptr);
  EXPECT_EQ(reg_.tls_alpn01("a/../../secret"), nullptr);
}

TEST(AcmeCertTest, ExtensionKeyNameAndValidity) {
  auto made = make_tls_alpn01_cert("a.example.test", kKeyAuth);
  ASSERT_TRUE(made) << made.errors().front().str();
  X509* leaf = made->leaf();
  expect_acme_identifier(leaf, kKeyAuth);
  // SAN: exactly the name being validated (RFC 8737 §3), nothing else.
  EXPECT_EQ(san_dns_names(leaf), std::vector<std::string>{"a.example.test"});
  EXPECT_TRUE(made->ip_addresses().empty());
  // P-256, self-signed.
  char group[64] = {};
  size_t len = 0;
  ASSERT_EQ(EVP_PKEY_get_group_name(made->key(), group, sizeof group, &len), 1);
  EXPECT_STREQ(group, "prime256v1");
  EXPECT_EQ(X509_verify(leaf, made->key()), 1);
  EXPECT_EQ(X509_NAME_cmp(X509_get_subject_name(leaf), X509_get_issuer_name(leaf)), 0);
  EXPECT_EQ(sk_X509_num(made->chain()), 0);
  // Short-lived, and already valid for a CA whose clock is a little behind.
  auto now = std::chrono::system_clock::now();
  EXPECT_LE(made->not_before(), now - std::chrono::minutes(30));
  EXPECT_GT(made->not_after(), now + std::chrono::hours(24));
  EXPECT_LE(made->not_after(), now + std::chrono::hours(24 * 8));
  // Another key authorization, another digest; every certificate its own key.
  auto other = make_tls_alpn01_cert("a.example.test", kToken + ".x");
  ASSERT_TRUE(other);
  expect_acme_identifier(other->leaf(), kToken + ".x");
  EXPECT_NE(EVP_PKEY_eq(made->key(), other->key()), 1);
}

// The TLS side: a handshake offering only acme-tls/1 gets the challenge certificate and that
// protocol; everyone else still gets the site's certificate and h2 / http/1.1.
class AcmeHandshakeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = LocalCa::open(tmp_.path());
    ASSERT_TRUE(ca);
    ca_ = std::move(*ca);
    auto site = ca_->issue({"site.test"});
    ASSERT_TRUE(site);
    selector_ = CertSelector::build({{*site, {}}}, nullptr);
  }
  void TearDown() override { AcmeChallenges::instance().remove_tls_alpn01("site.test"); }
  std::unique_ptr<ServerContext> make(std::vector<std::string> alpn = {"h2", "http/1.1"}) {
    ServerOptions opt;
    opt.alpn = std::move(alpn);
    auto ctx = ServerContext::create(opt, [this] { return selector_; });
    EXPECT_TRUE(ctx);
    return ctx ? std::move(*ctx) : nullptr;
  }
  testing::HandshakeResult run(ServerContext& ctx, std::vector<std::string> alpn) {
    testing::ClientOptions c;
    c.sni = "site.test";
    c.alpn = std::move(alpn);
    testing::HandshakeResult r = testing::handshake(ctx, c);
    if (r.session != nullptr) SSL_SESSION_free(r.session);
    return r;
  }

  testing::TempDir tmp_;
  std::unique_ptr<LocalCa> ca_;
  std::shared_ptr<const CertSelector> selector_;
};

TEST_F(AcmeHandshakeTest, OnlyAcmeTlsGetsTheChallengeCertificate) {
  auto ctx = make();
  AcmeChallenges::instance().put_tls_alpn01("site.test", kKeyAuth);
  auto challenge = AcmeChallenges::instance().tls_alpn01("site.test");
  ASSERT_NE(challenge, nullptr);

  testing::HandshakeResult r = run(*ctx, {"acme-tls/1"});
  ASSERT_TRUE(r.client_ok && r.server_ok);
  EXPECT_EQ(r.alpn, "acme-tls/1");
  EXPECT_EQ(r.peer_cn, testing::common_name(challenge->leaf()));

  // Everyone else is unaffected while the challenge is under way.
  r = run(*ctx, {"h2", "http/1.1"});
  ASSERT_TRUE(r.client_ok && r.server_ok);
  EXPECT_EQ(r.alpn, "h2");
  EXPECT_EQ(r.peer_cn, "site.test");
  r = run(*ctx, {"acme-tls/1", "http/1.1"});  // not only acme-tls/1: a normal client
  ASSERT_TRUE(r.client_ok && r.server_ok);
  EXPECT_EQ(r.alpn, "http/1.1");
  EXPECT_EQ(r.peer_cn, "site.test");
  r = run(*ctx, {});
  ASSERT_TRUE(r.client_ok && r.server_ok);
  EXPECT_EQ(r.alpn, "");
  EXPECT_EQ(r.peer_cn, "site.test");
}

TEST_F(AcmeHandshakeTest, AcmeTlsIsSelectedOnAListenerThatDoesNotOfferIt) {
  auto ctx = make({"http/1.1"});
  AcmeChallenges::instance().put_tls_alpn01("site.test", kKeyAuth);
  testing::HandshakeResult r = run(*ctx, {"acme-tls/1"});
  ASSERT_TRUE(r.client_ok && r.server_ok);
  EXPECT_EQ(r.alpn, "acme-tls/1");
  EXPECT_EQ(r.peer_cn, "ACME TLS-ALPN-01 challenge");
}

TEST_F(AcmeHandshakeTest, NoChallengeUnderWayFailsTheHandshake) {
  auto ctx = make();
  testing::HandshakeResult r = run(*ctx, {"acme-tls/1"});
  EXPECT_FALSE(r.client_ok);
  EXPECT_FALSE(r.server_ok);
  EXPECT_EQ(r.alert_received, SSL_AD_NO_APPLICATION_PROTOCOL);
  // And the site still works.
  r = run(*ctx, {"http/1.1"});
  ASSERT_TRUE(r.client_ok && r.server_ok);
  EXPECT_EQ(r.peer_cn, "site.test");
}

}  // namespace
}  // namespace hsp::tls
