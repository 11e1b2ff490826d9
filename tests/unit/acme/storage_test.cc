#include "acme/storage.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "acme_test_util.h"

namespace hsp::acme {
namespace {

namespace fs = std::filesystem;
using std::chrono::seconds;

using testing::read_text;
using testing::TempDir;
using testing::write_text;

unsigned mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 0777;
}

struct Pair {
  std::string cert_pem, key_pem;
};

// A P-256 key and a self-signed certificate for it: enough for the storage, which only checks
// that the two belong together.
Pair make_pair(const std::string& cn) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(x, X509_get_subject_name(x));
  X509_set_pubkey(x, key);
  X509_sign(x, key, EVP_sha256());
  Pair p{testing::cert_pem(x), testing::key_pem(key)};
  X509_free(x);
  EVP_PKEY_free(key);
  return p;
}

SystemTime at(const std::string& text) {
  auto t = parse_rfc3339(text);
  EXPECT_TRUE(t) << text;
  return t.value_or(SystemTime{});
}

const std::string kLe = "acme-v02.api.letsencrypt.org-directory";

CertMeta meta_of(const std::string& name, const std::string& issuer) {
  CertMeta m;
  m.names = {name};
  m.issuer = issuer;
  return m;
}

TEST(AcmeStorage, IssuerKeyAndStorageNameFollowCertmagic) {
  EXPECT_EQ(issuer_key("https://acme-v02.api.letsencrypt.org/directory"), kLe);
  EXPECT_EQ(issuer_key("https://127.0.0.1:14000/dir"), "127.0.0.1-14000-dir");
  EXPECT_EQ(issuer_key("HTTPS://Acme.Example/a/b/"), "acme.example-a-b");
  EXPECT_EQ(issuer_key("https://acme.example"), "acme.example");
  EXPECT_EQ(storage_name("*.a.example"), "wildcard_.a.example");
  EXPECT_EQ(storage_name("WWW.A.Example"), "www.a.example");
  EXPECT_EQ(lock_key(kLe, "*.A.example"), kLe + "-wildcard_.a.example");
}

TEST(AcmeStorage, Rfc3339FormatsUtcAndParsesOffsets) {
  EXPECT_EQ(rfc3339(SystemTime{}), "1970-01-01T00:00:00Z");
  SystemTime t = at("2026-12-05T02:41:54Z");
  EXPECT_EQ(rfc3339(t), "2026-12-05T02:41:54Z");
  EXPECT_EQ(rfc3339(t + std::chrono::milliseconds(250)), "2026-12-05T02:41:54.25Z");
  EXPECT_EQ(at("2026-12-05T03:41:54+01:00"), t);
  EXPECT_EQ(at("2026-12-04T22:11:54-04:30"), t);
  EXPECT_EQ(at("2026-12-05T02:41:54.25Z"), t + std::chrono::milliseconds(250));
  for (const char* bad : {"", "2026-12-05", "2026-12-05T02:41:54", "2026-13-05T02:41:54Z",
                          "2026-12-05T02:41:54Zjunk", "2026-12-05T02:41:54.Z", "yesterday"}) {
    EXPECT_FALSE(parse_rfc3339(bad)) << bad;
  }
}

TEST(AcmeStorage, AccountRoundTripWithPrivateModes) {
  TempDir tmp;
  std::string data = tmp.path() + "/data";  // made by the first write
  Storage st(data);
  auto none = st.load_account(kLe, "ops@a.example");
  ASSERT_TRUE(none) << none.errors().front().str();
  EXPECT_FALSE(*none);

  Pair p = make_pair("account");
  StoredAccount acc{"Ops@A.example", "https://acme.example/acct/7", p.key_pem};
  auto saved = st.save_account(kLe, acc);
  ASSERT_TRUE(saved) << saved.errors().front().str();

  std::string user = data + "/acme/" + kLe + "/users/ops@a.example";
  EXPECT_EQ(mode_of(user + "/account.key"), 0600u);
  EXPECT_EQ(mode_of(data), 0700u);
  EXPECT_EQ(mode_of(data + "/acme"), 0700u);
  EXPECT_EQ(mode_of(user), 0700u);
  EXPECT_EQ(read_text(user + "/account.key"), p.key_pem);

  auto loaded = st.load_account(kLe, "Ops@A.example");
  ASSERT_TRUE(loaded && *loaded);
  EXPECT_EQ((*loaded)->kid, acc.kid);
  EXPECT_EQ((*loaded)->key_pem, p.key_pem);
  EXPECT_EQ((*loaded)->email, "Ops@A.example");

  // No email: the "default" user. A key without account.json (a crash between the two
  // writes) loads with an empty kid.
  ASSERT_TRUE(st.save_account(kLe, StoredAccount{"", "kid", p.key_pem}));
  EXPECT_EQ(mode_of(data + "/acme/" + kLe + "/users/default/account.key"), 0600u);
  fs::remove(data + "/acme/" + kLe + "/users/default/account.json");
  auto bare = st.load_account(kLe, "");
  ASSERT_TRUE(bare && *bare);
  EXPECT_EQ((*bare)->kid, "");
  EXPECT_EQ((*bare)->key_pem, p.key_pem);
}

CertMeta full_meta() {
  CertMeta m;
  m.names = {"*.a.example", "a.example"};
  m.issuer = kLe;
  m.ca = "https://acme-v02.api.letsencrypt.org/directory";
  m.not_before = at("2026-12-01T00:00:00Z");
  m.not_after = at("2027-03-01T00:00:00Z");
  m.obtained_at = at("2026-12-01T00:01:02.5Z");
  m.renew_at = at("2027-01-30T00:00:00Z");
  m.ari_id = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE";
  m.last_error = "urn:ietf:params:acme:error:rateLimited: too many";
  m.last_error_at = at("2026-12-02T00:00:00Z");
  m.next_attempt = at("2026-12-02T01:00:00Z");
  m.failures = 3;
  return m;
}

void expect_meta_eq(const CertMeta& a, const CertMeta& b) {
  EXPECT_EQ(a.names, b.names);
  EXPECT_EQ(a.issuer, b.issuer);
  EXPECT_EQ(a.ca, b.ca);
  EXPECT_EQ(a.not_before, b.not_before);
  EXPECT_EQ(a.not_after, b.not_after);
  EXPECT_EQ(a.obtained_at, b.obtained_at);
  EXPECT_EQ(a.renew_at, b.renew_at);
  EXPECT_EQ(a.ari_id, b.ari_id);
  EXPECT_EQ(a.last_error, b.last_error);
  EXPECT_EQ(a.last_error_at, b.last_error_at);
  EXPECT_EQ(a.next_attempt, b.next_attempt);
  EXPECT_EQ(a.failures, b.failures);
}

TEST(AcmeStorage, CertificateRoundTripInCaddysLayout) {
  TempDir tmp;
  Storage st(tmp.path());
  auto none = st.load_cert(kLe, "*.a.example");
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);

  Pair p = make_pair("*.a.example");
  StoredCert cert{p.cert_pem, p.key_pem, full_meta()};
  auto saved = st.save_cert(kLe, "*.A.example", cert);
  ASSERT_TRUE(saved) << saved.errors().front().str();

  std::string dir = tmp.path() + "/certificates/" + kLe + "/wildcard_.a.example";
  EXPECT_EQ(read_text(dir + "/wildcard_.a.example.crt"), p.cert_pem);
  EXPECT_EQ(read_text(dir + "/wildcard_.a.example.key"), p.key_pem);
  EXPECT_EQ(mode_of(dir + "/wildcard_.a.example.key"), 0600u);
  EXPECT_EQ(mode_of(dir), 0700u);
  EXPECT_EQ(mode_of(tmp.path() + "/certificates"), 0700u);
  auto j = nlohmann::json::parse(read_text(dir + "/wildcard_.a.example.json"));
  EXPECT_EQ(j["not_after"], "2027-03-01T00:00:00Z");
  EXPECT_EQ(j["obtained_at"], "2026-12-01T00:01:02.5Z");

  auto loaded = st.load_cert(kLe, "*.a.example");
  ASSERT_TRUE(loaded) << loaded.errors().front().str();
  ASSERT_TRUE(*loaded);
  EXPECT_EQ((*loaded)->cert_pem, p.cert_pem);
  EXPECT_EQ((*loaded)->key_pem, p.key_pem);
  expect_meta_eq((*loaded)->meta, cert.meta);

  // A failure recorded later keeps the pair.
  CertMeta failed = cert.meta;
  failed.last_error = "connection refused";
  failed.failures = 4;
  ASSERT_TRUE(st.save_meta(kLe, "*.a.example", failed));
  loaded = st.load_cert(kLe, "*.a.example");
  ASSERT_TRUE(loaded && *loaded);
  EXPECT_EQ((*loaded)->cert_pem, p.cert_pem);
  expect_meta_eq((*loaded)->meta, failed);

  // save_cert is for a pair; metadata alone goes through save_meta.
  EXPECT_FALSE(st.save_cert(kLe, "b.example", StoredCert{"", "", failed}));
}

TEST(AcmeStorage, MetadataOnlyAndMissingMembersLoadAsEmpty) {
  TempDir tmp;
  Storage st(tmp.path());
  CertMeta m;
  m.names = {"never.example"};
  m.last_error = "dns problem";
  ASSERT_TRUE(st.save_meta(kLe, "never.example", m));
  auto loaded = st.load_cert(kLe, "never.example");
  ASSERT_TRUE(loaded && *loaded);
  EXPECT_EQ((*loaded)->cert_pem, "");
  EXPECT_EQ((*loaded)->meta.last_error, "dns problem");

  std::string json = tmp.path() + "/certificates/" + kLe + "/never.example/never.example.json";
  write_text(json, "{\"names\": [\"never.example\"], \"not_after\": null, \"future_member\": 1}");
  loaded = st.load_cert(kLe, "never.example");
  ASSERT_TRUE(loaded && *loaded) << (loaded ? "" : loaded.errors().front().str());
  EXPECT_EQ((*loaded)->meta.names, std::vector<std::string>{"never.example"});
  EXPECT_EQ((*loaded)->meta.issuer, "");
  EXPECT_FALSE((*loaded)->meta.not_after);
  EXPECT_FALSE((*loaded)->meta.renew_at);
  EXPECT_EQ((*loaded)->meta.failures, 0);

  write_text(json, "{\"not_after\": \"tomorrow\"}");
  loaded = st.load_cert(kLe, "never.example");
  ASSERT_FALSE(loaded);
  EXPECT_EQ(loaded.errors().front().loc.file, json);
  EXPECT_NE(loaded.errors().front().message.find("not_after"), std::string::npos);
}

TEST(AcmeStorage, TemporaryFilesOfAnInterruptedWriteAreIgnored) {
  TempDir tmp;
  Storage st(tmp.path());
  Pair old_pair = make_pair("a.example");
  ASSERT_TRUE(
      st.save_cert(kLe, "a.example",
                   StoredCert{old_pair.cert_pem, old_pair.key_pem, meta_of("a.example", kLe)}));
  // A writer that died between write and rename leaves its temporary files behind (the names
  // Storage uses: ".<file>.tmp-<unique>" in the same directory).
  std::string dir = tmp.path() + "/certificates/" + kLe + "/a.example";
  Pair new_pair = make_pair("a.example");
  write_text(dir + "/.a.example.crt.tmp-1-0-00", new_pair.cert_pem);
  write_text(dir + "/.a.example.key.tmp-1-1-00", new_pair.key_pem);
  write_text(dir + "/.a.example.json.tmp-1-2-00", "{\"names\": [\"half-written");
  // ... and one for a certificate directory that was never finished.
  write_text(tmp.path() + "/certificates/" + kLe + "/.b.example.json.tmp-1-3-00", "{}");

  auto loaded = st.load_cert(kLe, "a.example");
  ASSERT_TRUE(loaded && *loaded) << (loaded ? "" : loaded.errors().front().str());
  EXPECT_EQ((*loaded)->cert_pem, old_pair.cert_pem);
  EXPECT_EQ((*loaded)->key_pem, old_pair.key_pem);
  auto all = st.list();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].meta.names, std::vector<std::string>{"a.example"});
  EXPECT_EQ(all[0].meta.last_error, "");

  // A successful write leaves no temporary of its own behind.
  ASSERT_TRUE(
      st.save_cert(kLe, "a.example",
                   StoredCert{new_pair.cert_pem, new_pair.key_pem, meta_of("a.example", kLe)}));
  int temporaries = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().find(".tmp-") != std::string::npos) ++temporaries;
  }
  EXPECT_EQ(temporaries, 3);  // the three planted above, nothing more
  loaded = st.load_cert(kLe, "a.example");
  ASSERT_TRUE(loaded && *loaded);
  EXPECT_EQ((*loaded)->cert_pem, new_pair.cert_pem);
}

TEST(AcmeStorage, KeyThatDoesNotMatchTheCertificateIsAnError) {
  TempDir tmp;
  Storage st(tmp.path());
  Pair a = make_pair("a.example");
  Pair b = make_pair("a.example");
  ASSERT_TRUE(st.save_cert(kLe, "a.example", StoredCert{a.cert_pem, a.key_pem, {}}));
  write_text(tmp.path() + "/certificates/" + kLe + "/a.example/a.example.key", b.key_pem);
  auto loaded = st.load_cert(kLe, "a.example");
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.errors().front().message.find("does not belong"), std::string::npos);
}

// Damaged metadata beside a good pair: the pair still loads (the gateway keeps serving it
// instead of ordering again); with no pair to fall back on, the damage is an error.
TEST(AcmeStorage, DamagedMetadataKeepsAGoodPair) {
  TempDir tmp;
  Storage st(tmp.path());
  Pair a = make_pair("a.example");
  ASSERT_TRUE(st.save_cert(kLe, "a.example", StoredCert{a.cert_pem, a.key_pem, {}}));
  const std::string dir = tmp.path() + "/certificates/" + kLe + "/a.example/";
  write_text(dir + "a.example.json", "{garbage");
  auto loaded = st.load_cert(kLe, "a.example");
  ASSERT_TRUE(loaded) << loaded.errors().front().str();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->cert_pem, a.cert_pem);
  EXPECT_EQ((*loaded)->meta.names, std::vector<std::string>{"a.example"});

  ::unlink((dir + "a.example.crt").c_str());
  EXPECT_FALSE(st.load_cert(kLe, "a.example"));
}

// A FIFO (or a device) where a certificate belongs must not hang the loader.
TEST(AcmeStorage, SpecialFilesAreRefusedWithoutBlocking) {
  TempDir tmp;
  Storage st(tmp.path());
  Pair a = make_pair("a.example");
  ASSERT_TRUE(st.save_cert(kLe, "a.example", StoredCert{a.cert_pem, a.key_pem, {}}));
  const std::string crt = tmp.path() + "/certificates/" + kLe + "/a.example/a.example.crt";
  ::unlink(crt.c_str());
  ASSERT_EQ(::mkfifo(crt.c_str(), 0600), 0);
  auto loaded = st.load_cert(kLe, "a.example");  // would block forever in a blocking open
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.errors().front().message.find("not a regular file"), std::string::npos);
}

// A lock claiming an expiry far in the future, left by a holder that died, is taken over once
// it has gone a ttl without being refreshed.
TEST(AcmeStorage, FarFutureLockOfADeadHolderIsTakenOverAfterItsTtl) {
  TempDir tmp;
  Storage st(tmp.path());
  std::string key = lock_key(kLe, "a.example");
  ASSERT_TRUE(*st.try_lock(key, "dead", seconds(60)));
  const std::string path = tmp.path() + "/locks/" + key + ".lock";
  write_text(path, R"({"holder":"dead","created":"2026-01-01T00:00:00Z",)"
                   R"("expires":"2099-01-01T00:00:00Z"})");
  EXPECT_FALSE(*st.try_lock(key, "alive", seconds(60)));  // fresh: still held
  // Last touched two minutes ago: past a 60 s ttl, whatever it claims.
  struct timespec times[2];
  ::clock_gettime(CLOCK_REALTIME, &times[0]);
  times[0].tv_sec -= 120;
  times[1] = times[0];
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
  EXPECT_TRUE(*st.try_lock(key, "alive", seconds(60)));
}

TEST(AcmeStorage, NamesThatCouldEscapeTheDirectoryAreRefused) {
  TempDir tmp;
  std::string data = tmp.path() + "/data";
  Storage st(data);
  Pair p = make_pair("x");
  StoredCert cert{p.cert_pem, p.key_pem, {}};
  const std::string nul("a\0b", 3);
  for (const std::string& bad :
       {std::string(".."), std::string("../x"), std::string("a/b"), std::string("a..b"),
        std::string(".hidden"), nul, std::string(""), std::string("a\\b")}) {
    SCOPED_TRACE(bad);
    auto expect_refused = [](const auto& result) {
      ASSERT_FALSE(result);
      EXPECT_NE(result.errors().front().message.find("acme storage"), std::string::npos);
    };
    expect_refused(st.save_cert(kLe, bad, cert));
    expect_refused(st.save_cert(bad, "a.example", cert));
    expect_refused(st.save_meta(kLe, bad, CertMeta{}));
    expect_refused(st.load_cert(kLe, bad));
    expect_refused(st.load_cert(bad, "a.example"));
    expect_refused(st.put_http01(bad, "ka"));
    expect_refused(st.put_tls_alpn01(bad, "ka"));
    expect_refused(st.try_lock(bad, "me", seconds(10)));
    expect_refused(st.load_account(bad, ""));
    if (!bad.empty()) {  // an empty email is the "default" user
      expect_refused(st.save_account(kLe, StoredAccount{bad, "", p.key_pem}));
      expect_refused(st.load_account(kLe, bad));
    }
  }
  auto refused = st.save_cert(kLe, "../../etc", cert);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.errors().front().message.find("outside its directory"), std::string::npos);
  // Not base64url (RFC 8555 §8.3), so not a token.
  EXPECT_FALSE(st.put_http01("tok en", "ka"));
  // Nothing was written anywhere: the data directory was not even created.
  EXPECT_FALSE(fs::exists(data));
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp.path()), fs::directory_iterator()), 0);
}

TEST(AcmeStorage, ChallengeAnswersForOtherReplicas) {
  TempDir tmp;
  Storage st(tmp.path());
  EXPECT_EQ(st.challenge_dir(), tmp.path() + "/acme/challenge_tokens");
  ASSERT_TRUE(st.put_http01("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0", "tok.thumb"));
  std::string http = st.challenge_dir() + "/http-01/LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";
  EXPECT_EQ(read_text(http), "tok.thumb");
  EXPECT_EQ(mode_of(st.challenge_dir()), 0700u);
  ASSERT_TRUE(st.put_tls_alpn01("*.A.example", "tok2.thumb"));
  std::string alpn = st.challenge_dir() + "/tls-alpn-01/wildcard_.a.example";
  EXPECT_EQ(read_text(alpn), "tok2.thumb");

  st.remove_http01("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0");
  st.remove_tls_alpn01("*.a.example");
  EXPECT_FALSE(fs::exists(http));
  EXPECT_FALSE(fs::exists(alpn));
  st.remove_http01("gone");  // already gone: nothing to do, no crash
  st.remove_http01("../escape");
}

TEST(AcmeStorage, ListFindsEveryCertificateDirectory) {
  TempDir tmp;
  Storage st(tmp.path());
  EXPECT_TRUE(st.list().empty());  // no certificates directory at all

  Pair p = make_pair("a.example");
  ASSERT_TRUE(
      st.save_cert(kLe, "a.example", StoredCert{p.cert_pem, p.key_pem, meta_of("a.example", kLe)}));
  ASSERT_TRUE(st.save_meta("127.0.0.1-14000-dir", "b.example",
                           meta_of("b.example", "127.0.0.1-14000-dir")));
  // A certificate directory whose metadata is damaged still shows, with the reason.
  fs::create_directories(tmp.path() + "/certificates/" + kLe + "/wildcard_.c.example");
  write_text(tmp.path() + "/certificates/" + kLe + "/wildcard_.c.example/wildcard_.c.example.json",
             "not json");
  // An empty directory (a write that never got going) is nothing managed.
  fs::create_directories(tmp.path() + "/certificates/" + kLe + "/d.example");

  auto all = st.list();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].meta.names, std::vector<std::string>{"b.example"});
  EXPECT_EQ(all[0].cert_pem, "");
  EXPECT_EQ(all[1].meta.names, std::vector<std::string>{"a.example"});
  EXPECT_EQ(all[1].cert_pem, p.cert_pem);
  EXPECT_EQ(all[1].key_pem, "");  // the listing does not read keys
  EXPECT_EQ(all[2].meta.names, std::vector<std::string>{"*.c.example"});
  EXPECT_EQ(all[2].meta.issuer, kLe);
  EXPECT_NE(all[2].meta.last_error.find("not a JSON object"), std::string::npos);
}

nlohmann::json lock_file(const std::string& data, const std::string& key) {
  return nlohmann::json::parse(read_text(data + "/locks/" + key + ".lock"));
}

TEST(AcmeStorage, LockIsExclusiveRefreshableAndReleasedOnlyByItsHolder) {
  TempDir tmp;
  Storage st(tmp.path());
  std::string key = lock_key(kLe, "a.example");
  auto got = st.try_lock(key, "replica-1", seconds(60));
  ASSERT_TRUE(got) << got.errors().front().str();
  EXPECT_TRUE(*got);
  auto j = lock_file(tmp.path(), key);
  EXPECT_EQ(j["holder"], "replica-1");
  SystemTime created = at(j["created"]);
  SystemTime first_expiry = at(j["expires"]);
  EXPECT_EQ(first_expiry - created, seconds(60));

  EXPECT_FALSE(*st.try_lock(key, "replica-2", seconds(60)));
  // Ours already: held again, with the expiry pushed out and the creation time kept.
  EXPECT_TRUE(*st.try_lock(key, "replica-1", seconds(600)));
  j = lock_file(tmp.path(), key);
  EXPECT_EQ(j["holder"], "replica-1");
  EXPECT_EQ(at(j["created"]), created);
  EXPECT_GT(at(j["expires"]), first_expiry);

  st.unlock(key, "replica-2");  // not theirs to release
  EXPECT_FALSE(*st.try_lock(key, "replica-2", seconds(60)));
  st.unlock(key, "replica-1");
  EXPECT_FALSE(fs::exists(tmp.path() + "/locks/" + key + ".lock"));
  EXPECT_TRUE(*st.try_lock(key, "replica-2", seconds(60)));

  // Expired (a ttl of 0 expires at once): taken over by another holder.
  std::string key2 = lock_key(kLe, "b.example");
  EXPECT_TRUE(*st.try_lock(key2, "dead", seconds(0)));
  EXPECT_TRUE(*st.try_lock(key2, "replica-1", seconds(60)));
  EXPECT_EQ(lock_file(tmp.path(), key2)["holder"], "replica-1");

  // A lock file that is not (yet) complete counts as held until it is older than the ttl.
  std::string key3 = lock_key(kLe, "c.example");
  write_text(tmp.path() + "/locks/" + key3 + ".lock", "");
  EXPECT_FALSE(*st.try_lock(key3, "replica-1", seconds(60)));
  EXPECT_TRUE(*st.try_lock(key3, "replica-1", seconds(0)));

  int leftovers = 0;
  for (const auto& e : fs::directory_iterator(tmp.path() + "/locks")) {
    // Temporaries start with '.'; the guard file stays by design.
    std::string name = e.path().filename().string();
    if (name.front() == '.' && name != ".guard") ++leftovers;
  }
  EXPECT_EQ(leftovers, 0);
}

// Child processes report through their exit status; gtest assertions stay in the parent.
constexpr int kWon = 10, kLost = 11, kFailed = 12, kTookOver = 13;

struct Barrier {
  int fds[2];
  Barrier() { EXPECT_EQ(::pipe(fds), 0); }
  // In a child: blocks until the parent releases everyone.
  void wait() {
    ::close(fds[1]);
    char c;
    while (::read(fds[0], &c, 1) < 0 && errno == EINTR) {
    }
  }
  void release() {
    ::close(fds[0]);
    ::close(fds[1]);
  }
};

template <typename Fn>
pid_t spawn(Barrier& barrier, Fn fn) {
  pid_t pid = ::fork();
  if (pid == 0) {
    barrier.wait();
    ::_exit(fn());
  }
  EXPECT_GT(pid, 0);
  return pid;
}

int exit_code(pid_t pid) {
  int status = 0;
  EXPECT_EQ(::waitpid(pid, &status, 0), pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int try_once(const std::string& data, const std::string& key, const std::string& holder) {
  auto got = Storage(data).try_lock(key, holder, seconds(60));
  if (!got) return kFailed;
  return *got ? kWon : kLost;
}

TEST(AcmeStorage, ProcessesContendingForOneLockHaveOneWinner) {
  TempDir tmp;
  constexpr int kRounds = 20, kProcs = 8;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(round);
    std::string key = lock_key(kLe, "round" + std::to_string(round) + ".example");
    // Odd rounds race over an expired lock instead of a free one: the take-over path.
    if (round % 2 == 1) {
      ASSERT_TRUE(*Storage(tmp.path()).try_lock(key, "dead", seconds(0)));
    }
    Barrier barrier;
    std::vector<pid_t> pids;
    for (int i = 0; i < kProcs; ++i) {
      pids.push_back(spawn(
          barrier, [&, i] { return try_once(tmp.path(), key, "proc-" + std::to_string(i)); }));
    }
    barrier.release();
    int won = 0, lost = 0;
    for (pid_t pid : pids) {
      int code = exit_code(pid);
      won += code == kWon;
      lost += code == kLost;
    }
    EXPECT_EQ(won, 1);
    EXPECT_EQ(lost, kProcs - 1);
  }
}

TEST(AcmeStorage, LockOfAWinnerThatDiesIsTakenOverAfterItsTtl) {
  TempDir tmp;
  std::string key = lock_key(kLe, "a.example");
  const seconds ttl(2);
  Barrier barrier;
  // Each process: try once; the winner exits at once without unlocking or refreshing (a
  // crashed replica); the loser keeps trying (bounded) until the lock is its own.
  auto contender = [&](const std::string& holder) {
    Storage st(tmp.path());
    auto got = st.try_lock(key, holder, ttl);
    if (!got) return kFailed;
    if (*got) return kWon;
    for (int i = 0; i < 600; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      got = st.try_lock(key, holder, ttl);
      if (!got) return kFailed;
      if (*got) return kTookOver;
    }
    return kLost;
  };
  pid_t a = spawn(barrier, [&] { return contender("replica-a"); });
  pid_t b = spawn(barrier, [&] { return contender("replica-b"); });
  barrier.release();
  int ca = exit_code(a), cb = exit_code(b);
  EXPECT_TRUE((ca == kWon && cb == kTookOver) || (ca == kTookOver && cb == kWon))
      << ca << " " << cb;
  std::string survivor = ca == kTookOver ? "replica-a" : "replica-b";
  EXPECT_EQ(lock_file(tmp.path(), key)["holder"], survivor);
}

TEST(AcmeStorage, WriteFileIsAtomicAndKeepsTheModeGivenAtCreation) {
  TempDir tmp;
  Storage st(tmp.path() + "/d");
  ASSERT_TRUE(st.write_file("x/y/secret.key", "k1", 0600));
  EXPECT_EQ(read_text(tmp.path() + "/d/x/y/secret.key"), "k1");
  EXPECT_EQ(mode_of(tmp.path() + "/d/x/y/secret.key"), 0600u);
  EXPECT_EQ(mode_of(tmp.path() + "/d/x"), 0700u);
  ASSERT_TRUE(st.write_file(tmp.path() + "/abs.txt", "a", 0644));
  EXPECT_EQ(read_text(tmp.path() + "/abs.txt"), "a");
  ASSERT_TRUE(st.write_file("x/y/secret.key", "k2", 0600));
  EXPECT_EQ(read_text(tmp.path() + "/d/x/y/secret.key"), "k2");
  EXPECT_FALSE(st.write_file("x/", "k", 0600));
}

}  // namespace
}  // namespace hsp::acme
