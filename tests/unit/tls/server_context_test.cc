#include "tls/server_context.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>

#include "tls/local_ca.h"
#include "tls_test_util.h"

namespace hsp::tls {
namespace {

using testing::ClientOptions;
using testing::handshake;
using testing::HandshakeResult;

// Three site certificates (one a wildcard) and a default, all from one local CA whose root the
// clients trust; the selector is held the way the data plane will hold it: swapped atomically.
class ServerContextTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = LocalCa::open(tmp_.path());
    ASSERT_TRUE(ca);
    ca_ = std::move(*ca);
    a_ = issue({"a.test"});
    b_ = issue({"b.test"});
    wild_ = issue({"*.wild.test"});
    fallback_ = issue({"default.test"});
    set_selector(CertSelector::build({{a_, {}}, {b_, {}}, {wild_, {}}}, fallback_));
  }
  void TearDown() override {
    for (SSL_SESSION* s : sessions_) SSL_SESSION_free(s);
  }
  std::shared_ptr<const CertifiedKey> issue(std::vector<std::string> names) {
    auto r = ca_->issue(names);
    EXPECT_TRUE(r);
    return r ? *r : nullptr;
  }
  void set_selector(std::shared_ptr<const CertSelector> s) { std::atomic_store(&selector_, s); }
  SelectorProvider provider() {
    return [this] { return std::atomic_load(&selector_); };
  }
  std::unique_ptr<ServerContext> make(ServerOptions opt = {}) {
    auto ctx = ServerContext::create(opt, provider());
    EXPECT_TRUE(ctx) << (ctx ? "" : ctx.errors().front().str());
    return ctx ? std::move(*ctx) : nullptr;
  }
  ClientOptions client(std::string sni, std::vector<std::string> alpn = {"h2", "http/1.1"}) {
    ClientOptions c;
    c.sni = std::move(sni);
    c.alpn = std::move(alpn);
    c.ca_file = ca_->root_path();
    return c;
  }
  HandshakeResult run(ServerContext& ctx, const ClientOptions& c) {
    HandshakeResult r = handshake(ctx, c);
    if (r.session != nullptr) sessions_.push_back(r.session);
    return r;
  }

  testing::TempDir tmp_;
  std::unique_ptr<LocalCa> ca_;
  std::shared_ptr<const CertifiedKey> a_, b_, wild_, fallback_;
  std::shared_ptr<const CertSelector> selector_;
  std::vector<SSL_SESSION*> sessions_;
};

TEST_F(ServerContextTest, SniPicksAmongThreeCertificatesIncludingAWildcard) {
  auto ctx = make();
  for (const auto& [sni, cn] :
       std::vector<std::pair<std::string, std::string>>{{"a.test", "a.test"},
                                                        {"b.test", "b.test"},
                                                        {"x.wild.test", "*.wild.test"},
                                                        {"B.TEST", "b.test"}}) {
    HandshakeResult r = run(*ctx, client(sni));
    EXPECT_TRUE(r.client_ok && r.server_ok) << sni;  // the client verified chain and name
    EXPECT_EQ(r.peer_cn, cn) << sni;
  }
}

TEST_F(ServerContextTest, UnknownSniGetsTheDefaultCertificate) {
  auto ctx = make();
  ClientOptions c = client("nope.test");
  c.ca_file.clear();  // the default does not carry that name; only check what was sent
  HandshakeResult r = run(*ctx, c);
  ASSERT_TRUE(r.client_ok && r.server_ok);
  EXPECT_EQ(r.peer_cn, "default.test");
  c.sni.clear();  // no SNI at all
  r = run(*ctx, c);
  ASSERT_TRUE(r.client_ok && r.server_ok);
  EXPECT_EQ(r.peer_cn, "default.test");
}

TEST_F(ServerContextTest, UnknownSniWithoutDefaultIsRefusedWithUnrecognizedName) {
  set_selector(CertSelector::build({{a_, {}}, {b_, {}}, {wild_, {}}}));
  auto ctx = make();
  HandshakeResult r = run(*ctx, client("nope.test"));
  EXPECT_FALSE(r.server_ok);
  EXPECT_FALSE(r.client_ok);
  EXPECT_EQ(r.alert_received, SSL_AD_UNRECOGNIZED_NAME);
}

TEST_F(ServerContextTest, NewSelectorAppliesToTheNextHandshakeWithoutANewContext) {
  auto ctx = make();
  EXPECT_EQ(run(*ctx, client("a.test")).peer_cn, "a.test");
  auto renamed = issue({"a.test", "extra.test"});
  set_selector(CertSelector::build({{renamed, {}}}));
  HandshakeResult r = run(*ctx, client("extra.test"));
  ASSERT_TRUE(r.client_ok && r.server_ok);
  EXPECT_EQ(r.peer_cn, "a.test");  // CN is the first sorted name; the SAN matched extra.test
}

TEST_F(ServerContextTest, AlpnPrefersH2ThenHttp11AndNoneWhenTheClientSendsNoAlpn) {
  auto ctx = make();
  EXPECT_EQ(run(*ctx, client("a.test", {"http/1.1", "h2"})).alpn, "h2");  // our order wins
  EXPECT_EQ(run(*ctx, client("a.test", {"http/1.1"})).alpn, "http/1.1");
  HandshakeResult none = run(*ctx, client("a.test", {}));
  EXPECT_TRUE(none.client_ok && none.server_ok);
  EXPECT_EQ(none.alpn, "");
}

TEST_F(ServerContextTest, UnknownAlpnIsRefusedWithNoApplicationProtocol) {
  auto ctx = make();
  HandshakeResult r = run(*ctx, client("a.test", {"spdy/3", "acme-tls/1"}));
  EXPECT_FALSE(r.server_ok);
  EXPECT_EQ(r.alert_received, SSL_AD_NO_APPLICATION_PROTOCOL);
}

TEST_F(ServerContextTest, ConfiguredAlpnListIsUsed) {
  ServerOptions opt;
  opt.alpn = {"http/1.1"};
  auto ctx = make(opt);
  EXPECT_EQ(run(*ctx, client("a.test", {"h2", "http/1.1"})).alpn, "http/1.1");
  EXPECT_EQ(run(*ctx, client("a.test", {"h2"})).alert_received, SSL_AD_NO_APPLICATION_PROTOCOL);
}

TEST_F(ServerContextTest, AcceptsTls12AndTls13) {
  auto ctx = make();
  ClientOptions c = client("a.test");
  c.max_version = TLS1_2_VERSION;
  HandshakeResult r12 = run(*ctx, c);
  ASSERT_TRUE(r12.client_ok && r12.server_ok);
  EXPECT_EQ(r12.version, TLS1_2_VERSION);
  EXPECT_EQ(r12.alpn, "h2");
  HandshakeResult r13 = run(*ctx, client("a.test"));
  ASSERT_TRUE(r13.client_ok && r13.server_ok);
  EXPECT_EQ(r13.version, TLS1_3_VERSION);
}

TEST_F(ServerContextTest, RefusesTls11) {
  auto ctx = make();
  ClientOptions c = client("a.test");
  c.legacy = true;  // lets the client offer TLS 1.1 at all
  c.min_version = TLS1_1_VERSION;
  c.max_version = TLS1_1_VERSION;
  HandshakeResult r = run(*ctx, c);
  EXPECT_FALSE(r.server_ok);
  EXPECT_FALSE(r.client_ok);
  EXPECT_EQ(r.alert_received, SSL_AD_PROTOCOL_VERSION);
}

TEST_F(ServerContextTest, CipherListIsTheIntermediateProfilesAeadSuites) {
  auto ctx = make();
  SSL* probe = SSL_new(ctx->native());
  STACK_OF(SSL_CIPHER)* ciphers = SSL_get_ciphers(probe);
  std::vector<std::string> names;
  for (int i = 0; i < sk_SSL_CIPHER_num(ciphers); ++i) {
    const SSL_CIPHER* cipher = sk_SSL_CIPHER_value(ciphers, i);
    names.push_back(SSL_CIPHER_get_name(cipher));
    bool aead = names.back().find("GCM") != std::string::npos ||
                names.back().find("POLY1305") != std::string::npos;
    EXPECT_TRUE(aead) << names.back();
  }
  EXPECT_NE(std::find(names.begin(), names.end(), "ECDHE-ECDSA-AES128-GCM-SHA256"), names.end());
  EXPECT_EQ(std::find(names.begin(), names.end(), "ECDHE-ECDSA-AES128-SHA"), names.end());
  EXPECT_NE(SSL_get_options(probe) & SSL_OP_NO_COMPRESSION, 0u);
  EXPECT_NE(SSL_get_options(probe) & SSL_OP_NO_RENEGOTIATION, 0u);
  EXPECT_EQ(SSL_get_options(probe) & SSL_OP_CIPHER_SERVER_PREFERENCE, 0u);
  SSL_free(probe);
}

TEST_F(ServerContextTest, ProtocolsRestrictedToTls13RefuseATls12OnlyClient) {
  ServerOptions opt;
  auto min = parse_protocol("tls1.3");
  ASSERT_TRUE(min);
  opt.min_version = *min;
  auto ctx = make(opt);
  ClientOptions c = client("a.test");
  c.max_version = TLS1_2_VERSION;
  HandshakeResult r = run(*ctx, c);
  EXPECT_FALSE(r.server_ok);
  EXPECT_EQ(r.alert_received, SSL_AD_PROTOCOL_VERSION);
  EXPECT_TRUE(run(*ctx, client("a.test")).server_ok);
}

// Caddy chooses the version range per connection policy, i.e. per name: a `protocols tls1.3`
// site refuses TLS 1.2 even on a listener shared with a site that allows it.
TEST_F(ServerContextTest, VersionRangeFollowsTheNameChosenBySni) {
  set_selector(CertSelector::build(
      {{a_, {}, TLS1_3_VERSION, 0}, {b_, {}}, {wild_, {}, 0, TLS1_2_VERSION}}, fallback_));
  auto ctx = make();  // the listener allows TLS 1.2 and 1.3
  ClientOptions old_a = client("a.test");
  old_a.max_version = TLS1_2_VERSION;
  HandshakeResult refused = run(*ctx, old_a);
  EXPECT_FALSE(refused.server_ok);
  EXPECT_EQ(refused.alert_received, SSL_AD_PROTOCOL_VERSION);
  EXPECT_EQ(run(*ctx, client("a.test")).version, TLS1_3_VERSION);

  ClientOptions old_b = client("b.test");
  old_b.max_version = TLS1_2_VERSION;
  EXPECT_EQ(run(*ctx, old_b).version, TLS1_2_VERSION);
  EXPECT_EQ(run(*ctx, client("b.test")).version, TLS1_3_VERSION);
  // A name capped at TLS 1.2 gets 1.2 from a client that would prefer 1.3.
  EXPECT_EQ(run(*ctx, client("x.wild.test")).version, TLS1_2_VERSION);
}

TEST(ServerOptionsTest, ParsesCaddyProtocolNamesAndRejectsBadRanges) {
  EXPECT_EQ(*parse_protocol("tls1.2"), TLS1_2_VERSION);
  EXPECT_EQ(*parse_protocol("tls1.3"), TLS1_3_VERSION);
  auto old = parse_protocol("tls1.1");
  ASSERT_FALSE(old);
  EXPECT_EQ(old.errors().front().message,
            "unsupported TLS protocol 'tls1.1' (supported: tls1.2, tls1.3)");
  ServerOptions inverted;
  inverted.min_version = TLS1_3_VERSION;
  inverted.max_version = TLS1_2_VERSION;
  EXPECT_FALSE(ServerContext::create(inverted, nullptr));
  ServerOptions legacy;
  legacy.min_version = TLS1_1_VERSION;
  EXPECT_FALSE(ServerContext::create(legacy, nullptr));
  ServerOptions bad_alpn;
  bad_alpn.alpn = {""};
  EXPECT_FALSE(ServerContext::create(bad_alpn, nullptr));
}

TEST_F(ServerContextTest, SessionResumesWithTls13AndTls12Tickets) {
  auto ctx = make();
  for (int max : {TLS1_3_VERSION, TLS1_2_VERSION}) {
    ClientOptions c = client("a.test");
    c.max_version = max;
    HandshakeResult first = run(*ctx, c);
    ASSERT_TRUE(first.server_ok && first.session != nullptr) << max;
    EXPECT_FALSE(first.reused);
    c.session = first.session;
    HandshakeResult second = run(*ctx, c);
    ASSERT_TRUE(second.server_ok) << max;
    EXPECT_TRUE(second.reused) << max;
  }
}

TEST_F(ServerContextTest, ResumptionSurvivesOneTicketKeyRotationButNotTwo) {
  auto ctx = make();
  HandshakeResult first = run(*ctx, client("a.test"));
  ASSERT_TRUE(first.session != nullptr);

  ctx->rotate_ticket_keys();  // the ticket's key is now "previous": still decrypts
  ClientOptions c = client("a.test");
  c.session = first.session;
  HandshakeResult after_one = run(*ctx, c);
  ASSERT_TRUE(after_one.server_ok);
  EXPECT_TRUE(after_one.reused);

  ctx->rotate_ticket_keys();
  ctx->rotate_ticket_keys();  // first's key is gone now
  HandshakeResult after_two = run(*ctx, c);
  ASSERT_TRUE(after_two.server_ok);  // a full handshake instead
  EXPECT_FALSE(after_two.reused);
}

TEST_F(ServerContextTest, TicketKeysRotateByThemselvesWithTime) {
  auto offset = std::make_shared<std::atomic<int64_t>>(0);
  auto base = std::chrono::system_clock::now();
  ServerOptions opt;
  opt.ticket_key_rotation = std::chrono::hours(1);
  opt.now = [offset, base] { return base + std::chrono::seconds(offset->load()); };
  auto ctx = make(opt);

  HandshakeResult first = run(*ctx, client("a.test"));
  ASSERT_TRUE(first.session != nullptr);
  *offset += 3600 + 60;  // one rotation: the old key still decrypts
  ClientOptions c = client("a.test");
  c.session = first.session;
  HandshakeResult resumed = run(*ctx, c);
  EXPECT_TRUE(resumed.reused);
  ASSERT_TRUE(resumed.session != nullptr);  // renewed under the new current key
  // Tickets announce the rotation period as their lifetime, so a client keeps them no longer.
  EXPECT_EQ(SSL_SESSION_get_ticket_lifetime_hint(first.session), 3600u);

  // The current key is now two periods old: the next handshake retires it and `first`'s key.
  *offset += 2 * (3600 + 60);
  EXPECT_FALSE(run(*ctx, c).reused);
  c.session = resumed.session;  // sealed with the key that was current one period ago: gone too
  EXPECT_FALSE(run(*ctx, c).reused);
}

TEST_F(ServerContextTest, TicketsCanBeTurnedOff) {
  ServerOptions opt;
  opt.session_tickets = false;
  auto ctx = make(opt);
  HandshakeResult first = run(*ctx, client("a.test"));
  ASSERT_TRUE(first.server_ok);
  ClientOptions c = client("a.test");
  c.session = first.session;
  EXPECT_FALSE(run(*ctx, c).reused);
}

}  // namespace
}  // namespace hsp::tls
