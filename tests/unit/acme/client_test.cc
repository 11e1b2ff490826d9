// The ACME client against the real Debian pebble (RFC 8555 test CA) and pebble-challtestsrv on
// 127.0.0.1, plus an HTTPS stub for answers Pebble does not give. No mocks of the client's own
// parts: the JWS, the HTTPS transport and the flow all run for real.
#include "acme/client.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <ctime>
#include <nlohmann/json.hpp>

#include "acme/https.h"
#include "client_test_util.h"

namespace hsp::acme {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::Http01Server;
using testing::HttpsStub;
using testing::Pebble;
using testing::StubRequest;

ClientOptions options_for(const Pebble& pebble) {
  ClientOptions o;
  o.directory_url = pebble.directory_url();
  o.ca_root_file = pebble.ca_file();
  o.timeout = 10s;
  o.poll_limit = 60s;
  return o;
}

// Serves HTTP-01 through the test's responder; with `wrong`, an answer the CA must reject.
class TestSolver : public Solver {
 public:
  explicit TestSolver(Http01Server& server, bool wrong = false) : server_(server), wrong_(wrong) {}
  Result<bool> present(const Challenge& c) override {
    presented.push_back(c);
    if (c.type != "http-01") return Error{{}, "test solver: only http-01"};
    server_.put(c.token, wrong_ ? c.token + ".not-the-thumbprint" : c.key_authorization);
    return true;
  }
  void cleanup(const Challenge& c) override {
    cleaned.push_back(c.token);
    server_.remove(c.token);
  }
  std::vector<Challenge> presented;
  std::vector<std::string> cleaned;

 private:
  Http01Server& server_;
  bool wrong_;
};

std::string new_cert_key_pem() {
  EVP_PKEY* k = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  std::string pem = testing::key_pem(k);
  EVP_PKEY_free(k);
  return pem;
}

// An order for `names` with a fresh P-256 certificate key.
OrderRequest order_for(std::vector<std::string> names) {
  OrderRequest req;
  req.names = std::move(names);
  req.cert_key_pem = new_cert_key_pem();
  return req;
}

std::vector<X509*> parse_chain(const std::string& pem) {
  std::vector<X509*> out;
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  while (X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) out.push_back(x);
  ERR_clear_error();
  BIO_free(bio);
  return out;
}

// Verifies `chain_pem` (leaf first) up to `root_pem` for every name, and that the leaf holds
// the public half of `key_pem`; an empty string when all holds, else what failed.
std::string verify_issued(const std::string& chain_pem, const std::string& root_pem,
                          const std::vector<std::string>& names, const std::string& key_pem) {
  std::vector<X509*> chain = parse_chain(chain_pem);
  std::vector<X509*> roots = parse_chain(root_pem);
  std::string problem;
  if (chain.size() < 2)
    problem = "expected leaf + intermediate, got " + std::to_string(chain.size());
  if (roots.empty()) problem = "no root";
  if (problem.empty()) {
    X509_STORE* store = X509_STORE_new();
    X509_STORE_add_cert(store, roots.front());
    STACK_OF(X509)* untrusted = sk_X509_new_null();
    for (std::size_t i = 1; i < chain.size(); ++i) sk_X509_push(untrusted, chain[i]);
    X509_STORE_CTX* ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, store, chain.front(), untrusted);
    if (X509_verify_cert(ctx) != 1) {
      problem = std::string("X509_verify_cert: ") +
                X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx));
    }
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted);
    X509_STORE_free(store);
  }
  if (problem.empty()) {
    for (const auto& name : names) {
      if (X509_check_host(chain.front(), name.c_str(), name.size(), 0, nullptr) != 1) {
        problem = "leaf does not name " + name;
      }
    }
    BIO* bio = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
    EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    if (X509_check_private_key(chain.front(), key) != 1) problem = "leaf key mismatch";
    EVP_PKEY_free(key);
  }
  for (X509* x : chain) X509_free(x);
  for (X509* x : roots) X509_free(x);
  return problem;
}

std::string pebble_root(const Pebble& pebble, int index = 0) {
  HttpsOptions options;
  options.ca_root_file = pebble.ca_file();
  options.timeout = std::chrono::seconds(10);
  HttpsClient https(options);
  auto r = https.send({"GET", pebble.management_url("/roots/" + std::to_string(index)), {}, {}});
  EXPECT_TRUE(r.ok()) << (r ? "" : r.errors().front().message);
  if (!r) return {};
  EXPECT_EQ(r->status, 200);
  return r->body;
}

TEST(AcmeClient, AccountIsCreatedThenFoundAgain) {
  Pebble pebble;
  ASSERT_TRUE(pebble.ok()) << pebble.error();
  auto key = AccountKey::generate();
  ASSERT_TRUE(key.ok());

  Client client(options_for(pebble));
  auto kid = client.account(*key, "ops@hsp.example.com");
  ASSERT_TRUE(kid.ok()) << kid.failure().str() << "\n" << pebble.logs();
  EXPECT_EQ(kid->rfind("https://127.0.0.1:", 0), 0u) << *kid;

  // A second client (no cached state) finds the same account through onlyReturnExisting.
  Client other(options_for(pebble));
  auto again = other.account(*key, "ops@hsp.example.com");
  ASSERT_TRUE(again.ok()) << again.failure().str();
  EXPECT_EQ(*again, *kid);
  auto same_client = client.account(*key, "");
  ASSERT_TRUE(same_client.ok()) << same_client.failure().str();
  EXPECT_EQ(*same_client, *kid);

  // Another key is another account.
  auto key2 = AccountKey::generate();
  ASSERT_TRUE(key2.ok());
  auto kid2 = client.account(*key2, "");
  ASSERT_TRUE(kid2.ok()) << kid2.failure().str();
  EXPECT_NE(*kid2, *kid);
}

TEST(AcmeClient, ObtainsACertificateForTwoNamesThroughHttp01) {
  Pebble pebble;
  ASSERT_TRUE(pebble.ok()) << pebble.error();
  Http01Server http01(pebble.http_port());
  ASSERT_TRUE(http01.ok());
  auto key = AccountKey::generate();
  ASSERT_TRUE(key.ok());
  Client client(options_for(pebble));
  auto kid = client.account(*key, "ops@hsp.example.com");
  ASSERT_TRUE(kid.ok()) << kid.failure().str();

  OrderRequest req = order_for({"one.hsp.example.com", "two.hsp.example.com"});
  TestSolver solver(http01);
  auto issued = client.obtain(*key, *kid, req, solver);
  ASSERT_TRUE(issued.ok()) << issued.failure().str() << "\n" << pebble.logs();

  // One http-01 challenge per name, each cleaned up, each fetched by Pebble's VA.
  ASSERT_EQ(solver.presented.size(), 2u);
  for (const Challenge& c : solver.presented) {
    EXPECT_EQ(c.type, "http-01");
    EXPECT_EQ(c.key_authorization, c.token + "." + key->thumbprint());
  }
  EXPECT_EQ(solver.cleaned.size(), 2u);
  EXPECT_GE(http01.hits(), 2);
  EXPECT_EQ(issued->url.rfind("https://127.0.0.1:", 0), 0u);

  const std::string problem =
      verify_issued(issued->chain_pem, pebble_root(pebble), req.names, req.cert_key_pem);
  EXPECT_EQ(problem, "");
}

std::string subject_cn(const std::string& pem) {
  std::vector<X509*> certs = parse_chain(pem);
  std::string cn = certs.empty() ? std::string() : testing::common_name(certs.front());
  for (X509* x : certs) X509_free(x);
  return cn;
}

TEST(AcmeClient, PreferredChainPicksTheAlternateWithThatRoot) {
  Pebble pebble(0, /*alternate_roots=*/1);
  ASSERT_TRUE(pebble.ok()) << pebble.error();
  Http01Server http01(pebble.http_port());
  ASSERT_TRUE(http01.ok());
  const std::string root0 = pebble_root(pebble, 0);
  const std::string root1 = pebble_root(pebble, 1);
  const std::string cn0 = subject_cn(root0), cn1 = subject_cn(root1);
  ASSERT_FALSE(cn1.empty());
  ASSERT_NE(cn0, cn1);

  auto key = AccountKey::generate();
  Client client(options_for(pebble));
  auto kid = client.account(*key, "");
  ASSERT_TRUE(kid.ok()) << kid.failure().str();
  OrderRequest req = order_for({"alt.hsp.example.com"});

  // Default: the chain to root 0 at the certificate URL itself.
  TestSolver solver(http01);
  auto plain = client.obtain(*key, *kid, req, solver);
  ASSERT_TRUE(plain.ok()) << plain.failure().str() << "\n" << pebble.logs();
  EXPECT_EQ(verify_issued(plain->chain_pem, root0, req.names, req.cert_key_pem), "");

  // Preferring root 1's CN: the alternate from Link rel="alternate", which chains to root 1.
  req.preferred_chain = cn1;
  auto preferred = client.obtain(*key, *kid, req, solver);
  ASSERT_TRUE(preferred.ok()) << preferred.failure().str() << "\n" << pebble.logs();
  EXPECT_EQ(verify_issued(preferred->chain_pem, root1, req.names, req.cert_key_pem), "");
  EXPECT_NE(verify_issued(preferred->chain_pem, root0, req.names, req.cert_key_pem), "");
  EXPECT_NE(preferred->url.find("/1"), std::string::npos) << preferred->url;

  // A preference nobody matches keeps the default chain.
  req.preferred_chain = "no such root";
  auto fallback = client.obtain(*key, *kid, req, solver);
  ASSERT_TRUE(fallback.ok()) << fallback.failure().str();
  EXPECT_EQ(verify_issued(fallback->chain_pem, root0, req.names, req.cert_key_pem), "");
}

TEST(AcmeClient, RetriesBadNonces) {
  // Pebble rejects half of the good nonces with badNonce (RFC 8555 §6.5).
  Pebble pebble(50);
  ASSERT_TRUE(pebble.ok()) << pebble.error();

  // Without retries the rejections show: ~50% of calls fail, 24 calls all passing is 2^-24.
  int bad_nonce = 0;
  {
    ClientOptions o = options_for(pebble);
    o.bad_nonce_retries = 0;
    Client client(o);
    for (int i = 0; i < 24 && bad_nonce == 0; ++i) {
      auto k = AccountKey::generate();
      auto kid = client.account(*k, "");
      if (!kid.ok()) {
        EXPECT_EQ(kid.failure().problem_type, "urn:ietf:params:acme:error:badNonce")
            << kid.failure().str();
        EXPECT_EQ(kid.failure().http_status, 400);
        ++bad_nonce;
      }
    }
  }
  EXPECT_EQ(bad_nonce, 1);

  // With retries a whole order succeeds (30 retries per request: failing one is 2^-31).
  Http01Server http01(pebble.http_port());
  ASSERT_TRUE(http01.ok());
  ClientOptions o = options_for(pebble);
  o.bad_nonce_retries = 30;
  Client client(o);
  auto key = AccountKey::generate();
  auto kid = client.account(*key, "");
  ASSERT_TRUE(kid.ok()) << kid.failure().str();
  OrderRequest req = order_for({"nonce.hsp.example.com"});
  TestSolver solver(http01);
  auto issued = client.obtain(*key, *kid, req, solver);
  ASSERT_TRUE(issued.ok()) << issued.failure().str() << "\n" << pebble.logs();
  EXPECT_EQ(verify_issued(issued->chain_pem, pebble_root(pebble), req.names, req.cert_key_pem), "");
}

TEST(AcmeClient, WrongHttp01AnswerFailsWithThePebbleProblem) {
  Pebble pebble;
  ASSERT_TRUE(pebble.ok()) << pebble.error();
  Http01Server http01(pebble.http_port());
  ASSERT_TRUE(http01.ok());
  auto key = AccountKey::generate();
  Client client(options_for(pebble));
  auto kid = client.account(*key, "");
  ASSERT_TRUE(kid.ok()) << kid.failure().str();

  OrderRequest req = order_for({"wrong.hsp.example.com"});
  TestSolver solver(http01, /*wrong=*/true);
  auto issued = client.obtain(*key, *kid, req, solver);
  ASSERT_FALSE(issued.ok());
  const Failure& f = issued.failure();
  EXPECT_EQ(f.step, "challenge") << f.str();
  ASSERT_EQ(solver.presented.size(), 1u);
  EXPECT_EQ(f.url, solver.presented.front().url);
  EXPECT_EQ(f.problem_type, "urn:ietf:params:acme:error:unauthorized") << f.str();
  // Pebble names the answer it got and the one it expected.
  EXPECT_NE(f.detail.find("not-the-thumbprint"), std::string::npos) << f.detail;
  EXPECT_FALSE(f.problem.empty());
  EXPECT_TRUE(json::parse(f.problem, nullptr, false).is_object()) << f.problem;
  EXPECT_EQ(solver.cleaned.size(), 1u);  // cleaned up on failure too
  EXPECT_NE(f.str().find("challenge: "), std::string::npos);
}

TEST(AcmeClient, UnreachableCaIsStatusZeroWithAClearDetail) {
  ClientOptions o;
  o.directory_url = "https://127.0.0.1:" + std::to_string(testing::free_port()) + "/dir";
  o.timeout = 5s;
  Client client(o);
  auto has = client.has_renewal_info();
  ASSERT_FALSE(has.ok());
  EXPECT_EQ(has.failure().http_status, 0);
  EXPECT_EQ(has.failure().step, "directory");
  EXPECT_EQ(has.failure().url, o.directory_url);
  EXPECT_NE(has.failure().detail.find("connecting to 127.0.0.1"), std::string::npos)
      << has.failure().detail;
  EXPECT_NE(has.failure().detail.find("refused"), std::string::npos) << has.failure().detail;
  EXPECT_FALSE(has.failure().rate_limited());

  auto key = AccountKey::generate();
  auto kid = client.account(*key, "");
  ASSERT_FALSE(kid.ok());
  EXPECT_EQ(kid.failure().http_status, 0);
}

TEST(AcmeClient, UntrustedCaCertificateIsRefused) {
  Pebble pebble;
  ASSERT_TRUE(pebble.ok()) << pebble.error();
  ClientOptions o = options_for(pebble);
  o.ca_root_file.clear();  // the system's roots do not include the test CA
  Client client(o);
  auto has = client.has_renewal_info();
  ASSERT_FALSE(has.ok());
  EXPECT_EQ(has.failure().http_status, 0);
  EXPECT_NE(has.failure().detail.find("certificate verify failed"), std::string::npos)
      << has.failure().detail;
}

TEST(AcmeClient, PebbleHasNoRenewalInfo) {
  Pebble pebble;
  ASSERT_TRUE(pebble.ok()) << pebble.error();
  Client client(options_for(pebble));
  auto has = client.has_renewal_info();
  ASSERT_TRUE(has.ok()) << has.failure().str();
  EXPECT_FALSE(*has);
  auto info = client.renewal_info("irrelevant");
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.failure().step, "renewal_info");
}

std::string http_answer(const std::string& status, const std::vector<std::string>& headers,
                        const std::string& body) {
  std::string out = "HTTP/1.1 " + status + "\r\n";
  for (const auto& h : headers) out += h + "\r\n";
  out += "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
  return out + body;
}

// A CA that answers newAccount with 429 + Retry-After, and serves ARI, which Pebble 2.4 lacks.
class StubCa {
 public:
  explicit StubCa(const testing::TestCa& ca)
      : stub_(ca, [this](const StubRequest& r) { return answer(r); }) {}
  bool ok() const { return stub_.ok(); }
  std::string url(const std::string& path) const { return stub_.url(path); }
  std::vector<StubRequest> seen() {
    std::lock_guard lock(mu_);
    return seen_;
  }

 private:
  std::string answer(const StubRequest& r) {
    {
      std::lock_guard lock(mu_);
      seen_.push_back(r);
    }
    if (r.target == "/dir") {
      json dir = {{"newNonce", url("/nonce")}, {"newAccount", url("/acct")},
                  {"newOrder", url("/order")}, {"revokeCert", url("/revoke")},
                  {"keyChange", url("/key")},  {"renewalInfo", url("/ari/")}};
      return http_answer("200 OK", {"Content-Type: application/json"}, dir.dump());
    }
    if (r.target == "/nonce") return http_answer("200 OK", {"Replay-Nonce: stub-nonce"}, "");
    if (r.target == "/moved") {
      return http_answer("301 Moved Permanently", {"Location: https://ca.example/docs"}, "");
    }
    if (r.target == "/acct") {
      return http_answer("429 Too Many Requests",
                         {"Content-Type: application/problem+json", "Retry-After: 7",
                          "Replay-Nonce: stub-nonce-2"},
                         R"({"type":"urn:ietf:params:acme:error:rateLimited",)"
                         R"("detail":"too many new accounts from 127.0.0.1","status":429})");
    }
    if (r.target == "/order") {
      // Retry-After as an HTTP-date an hour ahead (RFC 9110 §10.2.3).
      std::time_t later = std::time(nullptr) + 3600;
      std::tm tm{};
      ::gmtime_r(&later, &tm);
      char date[64];
      std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
      return http_answer("403 Forbidden",
                         {"Content-Type: application/problem+json",
                          std::string("Retry-After: ") + date, "Replay-Nonce: stub-nonce-3"},
                         R"({"type":"urn:ietf:params:acme:error:unauthorized",)"
                         R"("detail":"not for you","status":403})");
    }
    if (r.target.rfind("/ari/", 0) == 0) {
      return http_answer("200 OK", {"Content-Type: application/json", "Retry-After: 21600"},
                         R"({"suggestedWindow":{"start":"2026-01-02T04:00:00Z",)"
                         R"("end":"2026-01-03T04:00:00.5+01:00"},)"
                         R"("explanationURL":"https://ca.example/why"})");
    }
    return http_answer("404 Not Found", {}, "");
  }

  std::mutex mu_;
  std::vector<StubRequest> seen_;
  HttpsStub stub_;  // last: its thread calls answer()
};

ClientOptions options_for(const StubCa& stub, const testing::TestCa& ca) {
  ClientOptions o;
  o.directory_url = stub.url("/dir");
  o.ca_root_file = ca.ca_pem;
  o.timeout = 5s;
  return o;
}

// The protected header and the payload of a flattened JWS (a request body to the stub).
struct Jws {
  json header;
  std::string payload;
};

Jws parse_jws(const std::string& body) {
  const json jws = json::parse(body);
  auto decoded = [&jws](const char* member) {
    auto bytes = base64url_decode(jws[member].get<std::string>());
    EXPECT_TRUE(bytes.ok()) << member << " is not base64url";
    return bytes ? *bytes : std::string();
  };
  return {json::parse(decoded("protected")), decoded("payload")};
}

// The stub CA on a test CA made for 127.0.0.1, and the options of a client that trusts it.
class AcmeClientOnStub : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ca_.ok) << ca_.error;
    ASSERT_TRUE(stub_.ok());
  }
  ClientOptions options() const { return options_for(stub_, ca_); }

  testing::TempDir dir_;
  testing::TestCa ca_{dir_};
  StubCa stub_{ca_};
};

TEST_F(AcmeClientOnStub, RateLimitedAnswerCarriesRetryAfter) {
  Client client(options());
  auto key = AccountKey::generate();
  auto kid = client.account(*key, "ops@hsp.example.com");
  ASSERT_FALSE(kid.ok());
  const Failure& f = kid.failure();
  EXPECT_TRUE(f.rate_limited());
  EXPECT_EQ(f.step, "account");
  EXPECT_EQ(f.http_status, 429);
  EXPECT_EQ(f.problem_type, "urn:ietf:params:acme:error:rateLimited");
  EXPECT_EQ(f.detail, "too many new accounts from 127.0.0.1");
  ASSERT_TRUE(f.retry_after.has_value());
  EXPECT_EQ(*f.retry_after, 7s);
  EXPECT_EQ(f.url, stub_.url("/acct"));
  EXPECT_NE(f.str().find("account: 429 urn:ietf:params:acme:error:rateLimited"), std::string::npos)
      << f.str();

  // The request was a JWS with the account key's jwk and the nonce from newNonce.
  auto seen = stub_.seen();
  ASSERT_GE(seen.size(), 3u);
  EXPECT_EQ(seen[1].method, "HEAD");
  const StubRequest& post = seen[2];
  EXPECT_EQ(post.method, "POST");
  const Jws jws = parse_jws(post.body);
  EXPECT_EQ(jws.header["nonce"], "stub-nonce");
  EXPECT_EQ(jws.header["url"], stub_.url("/acct"));
  EXPECT_EQ(jws.header["jwk"].dump(), key->jwk());
  EXPECT_EQ(jws.payload, R"({"onlyReturnExisting":true})");
}

// acme_ca naming a web page: the 3xx is explained, not "no problem document".
TEST_F(AcmeClientOnStub, RedirectedDirectoryIsExplained) {
  ClientOptions o = options();
  o.directory_url = stub_.url("/moved");
  Client client(o);
  auto has = client.has_renewal_info();
  ASSERT_FALSE(has.ok());
  EXPECT_EQ(has.failure().step, "directory");
  EXPECT_EQ(has.failure().http_status, 301);
  EXPECT_NE(has.failure().detail.find("redirected to https://ca.example/docs"), std::string::npos)
      << has.failure().detail;
}

TEST_F(AcmeClientOnStub, NewOrderUsesKidAndReplacesAndReadsAnHttpDateRetryAfter) {
  Client client(options());
  auto key = AccountKey::generate();
  OrderRequest req = order_for({"a.hsp.example.com", "b.hsp.example.com"});
  req.replaces = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE";
  Http01Server unused(0);
  TestSolver solver(unused);
  auto issued = client.obtain(*key, stub_.url("/acct/1"), req, solver);
  ASSERT_FALSE(issued.ok());
  const Failure& f = issued.failure();
  EXPECT_EQ(f.step, "order");
  EXPECT_EQ(f.http_status, 403);
  EXPECT_EQ(f.detail, "not for you");
  EXPECT_FALSE(f.rate_limited());
  ASSERT_TRUE(f.retry_after.has_value());
  EXPECT_GE(f.retry_after->count(), 3500);
  EXPECT_LE(f.retry_after->count(), 3600);

  const StubRequest post = stub_.seen().back();
  ASSERT_EQ(post.target, "/order");
  const Jws jws = parse_jws(post.body);
  EXPECT_EQ(jws.header["kid"], stub_.url("/acct/1"));
  EXPECT_FALSE(jws.header.contains("jwk"));
  json payload = json::parse(jws.payload);
  EXPECT_EQ(payload["replaces"], req.replaces);
  ASSERT_EQ(payload["identifiers"].size(), 2u);
  EXPECT_EQ(payload["identifiers"][1]["type"], "dns");
  EXPECT_EQ(payload["identifiers"][1]["value"], "b.hsp.example.com");
}

TEST_F(AcmeClientOnStub, RenewalInfoFromAnAriDirectory) {
  Client client(options());
  auto has = client.has_renewal_info();
  ASSERT_TRUE(has.ok()) << has.failure().str();
  EXPECT_TRUE(*has);

  // The test CA's leaf has an AKI (openssl x509 -req adds one by default).
  const std::string leaf = testing::read_text(ca_.leaf_pem);
  auto id = ari_cert_id(leaf);
  ASSERT_TRUE(id.ok()) << id.errors().front().str();
  auto info = client.renewal_info(leaf);
  ASSERT_TRUE(info.ok()) << info.failure().str();
  EXPECT_EQ(std::chrono::system_clock::to_time_t(info->window_start), 1767326400);
  // 04:00:00.5+01:00 is 03:00:00.5 UTC; fractions are dropped.
  EXPECT_EQ(std::chrono::system_clock::to_time_t(info->window_end), 1767326400 + 86400 - 3600);
  EXPECT_EQ(info->explanation_url, "https://ca.example/why");
  ASSERT_TRUE(info->retry_after.has_value());
  EXPECT_EQ(*info->retry_after, 21600s);
  EXPECT_EQ(stub_.seen().back().target, "/ari/" + *id);
  EXPECT_EQ(stub_.seen().back().method, "GET");
}

TEST(AcmeClient, HostNameOfTheCaIsVerified) {
  testing::TempDir dir;
  // A CA certificate for the name localhost only, not for the address 127.0.0.1.
  testing::TestCa ca(dir, "DNS:localhost");
  ASSERT_TRUE(ca.ok) << ca.error;
  StubCa stub(ca);
  ASSERT_TRUE(stub.ok());
  ClientOptions o = options_for(stub, ca);  // https://127.0.0.1:<port>/dir
  Client by_address(o);
  auto has = by_address.has_renewal_info();
  ASSERT_FALSE(has.ok());
  EXPECT_EQ(has.failure().http_status, 0);
  EXPECT_NE(has.failure().detail.find("IP address mismatch"), std::string::npos)
      << has.failure().detail;

  // The same server through the name it has (resolved by Asio's resolver, SNI sent).
  o.directory_url.replace(o.directory_url.find("127.0.0.1"), 9, "localhost");
  Client by_name(o);
  auto ok = by_name.has_renewal_info();
  ASSERT_TRUE(ok.ok()) << ok.failure().str();
  EXPECT_TRUE(*ok);
}

TEST(HttpsUrl, Parses) {
  auto u = parse_https_url("https://127.0.0.1:14000/dir?x=1");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, "14000");
  EXPECT_EQ(u->target, "/dir?x=1");
  auto v6 = parse_https_url("https://[::1]/");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, "443");
  auto bare = parse_https_url("HTTPS://acme.example");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->target, "/");
  EXPECT_FALSE(parse_https_url("http://127.0.0.1/dir").ok());
  EXPECT_FALSE(parse_https_url("https://127.0.0.1:99999/").ok());
  EXPECT_FALSE(parse_https_url("https://:80/").ok());
}

}  // namespace
}  // namespace hsp::acme
