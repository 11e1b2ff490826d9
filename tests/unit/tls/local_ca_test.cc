#include "tls/local_ca.h"

#include <gtest/gtest.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "tls_test_util.h"

namespace hsp::tls {
namespace {

using std::chrono::hours;
using testing::TempDir;

unsigned mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 0777;
}

std::string ca_dir(const TempDir& tmp) {
  return tmp.path() + "/pki/authorities/local";
}

// A clock the test moves by hand.
struct FakeClock {
  std::shared_ptr<std::atomic<int64_t>> offset_s = std::make_shared<std::atomic<int64_t>>(0);
  SystemTime start = std::chrono::system_clock::now();
  std::function<SystemTime()> fn() const {
    auto off = offset_s;
    auto base = start;
    return [off, base] { return base + std::chrono::seconds(off->load()); };
  }
  void advance(std::chrono::seconds d) { *offset_s += d.count(); }
};

// at: the verification time (a fake clock's now); default: the real time.
bool verifies(const CertifiedKey& leaf, const std::string& root_file, SystemTime at = {}) {
  X509_STORE* store = X509_STORE_new();
  EXPECT_EQ(X509_STORE_load_file(store, root_file.c_str()), 1);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, leaf.leaf(), leaf.chain());
  X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
  if (at != SystemTime{}) {
    X509_STORE_CTX_set_time(ctx, 0, std::chrono::system_clock::to_time_t(at));
  }
  bool ok = X509_verify_cert(ctx) == 1;
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  return ok;
}

TEST(LocalCa, CreatesRootAndIntermediateInCaddysLayoutWithPrivateModes) {
  TempDir tmp;
  auto ca = LocalCa::open(tmp.path());
  ASSERT_TRUE(ca) << ca.errors().front().str();
  std::string dir = ca_dir(tmp);
  EXPECT_EQ((*ca)->root_path(), dir + "/root.crt");
  for (const char* f : {"root.crt", "root.key", "intermediate.crt", "intermediate.key"}) {
    EXPECT_TRUE(std::filesystem::exists(dir + "/" + f)) << f;
  }
  EXPECT_EQ(mode_of(dir + "/root.key"), 0600u);
  EXPECT_EQ(mode_of(dir + "/intermediate.key"), 0600u);
  EXPECT_EQ(mode_of(dir), 0700u);
  EXPECT_EQ(mode_of(tmp.path() + "/pki"), 0700u);
  // Atomic writes leave no temporary files behind.
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
  }

  auto root = (*ca)->root();
  std::time_t now = std::time(nullptr);
  struct tm tm {};
  gmtime_r(&now, &tm);
  EXPECT_EQ(root->subject(),
            "CN=HSP Gateway Local Authority - " + std::to_string(tm.tm_year + 1900) + " ECC Root");
  EXPECT_EQ(X509_check_ca(root->leaf()), 1);
  EXPECT_EQ(EVP_PKEY_get_base_id(root->key()), EVP_PKEY_EC);
  EXPECT_GT(root->not_after() - root->not_before(), hours(24 * 3650));

  auto inter = (*ca)->intermediate();
  EXPECT_EQ(X509_verify(inter->leaf(), root->key()), 1);
  EXPECT_EQ(std::chrono::duration_cast<hours>(inter->not_after() - inter->not_before()),
            hours(24 * 7));
}

// A fresh machine has no ~/.local/share: the data directory and its parents are made, private.
TEST(LocalCa, CreatesMissingParentsOfTheDataDirectory) {
  TempDir tmp;
  const std::string data = tmp.path() + "/home/.local/share/hsp-gateway";
  auto ca = LocalCa::open(data);
  ASSERT_TRUE(ca) << ca.errors().front().str();
  EXPECT_EQ(mode_of(tmp.path() + "/home/.local"), 0700u);
  EXPECT_EQ(mode_of(data + "/pki/authorities/local/root.key"), 0600u);
}

TEST(LocalCa, OpenTwiceReusesTheSameRootAndIntermediate) {
  TempDir tmp;
  auto first = LocalCa::open(tmp.path());
  ASSERT_TRUE(first);
  std::string root_serial = (*first)->root()->serial_hex();
  std::string inter_serial = (*first)->intermediate()->serial_hex();
  first->reset();

  auto second = LocalCa::open(tmp.path());
  ASSERT_TRUE(second) << second.errors().front().str();
  EXPECT_EQ((*second)->root()->serial_hex(), root_serial);
  EXPECT_EQ((*second)->intermediate()->serial_hex(), inter_serial);
}

TEST(LocalCa, RootCertificateWithoutItsKeyIsAnErrorNotANewRoot) {
  TempDir tmp;
  ASSERT_TRUE(LocalCa::open(tmp.path()));
  std::filesystem::remove(ca_dir(tmp) + "/root.key");
  auto again = LocalCa::open(tmp.path());
  ASSERT_FALSE(again);
  EXPECT_NE(again.errors().front().str().find("root.key"), std::string::npos)
      << again.errors().front().str();
}

TEST(LocalCa, IssuesLeafForDnsNamesAndIpsThatVerifiesAgainstTheRoot) {
  TempDir tmp;
  auto ca = LocalCa::open(tmp.path());
  ASSERT_TRUE(ca);
  auto leaf = (*ca)->issue({"App.Example.", "127.0.0.1", "::1", "*.svc.local"});
  ASSERT_TRUE(leaf) << leaf.errors().front().str();
  const CertifiedKey& ck = **leaf;
  EXPECT_EQ(ck.dns_names(), (std::vector<std::string>{"*.svc.local", "app.example"}));
  EXPECT_EQ(ck.ip_addresses(), (std::vector<std::string>{"127.0.0.1", "::1"}));
  EXPECT_EQ(std::chrono::duration_cast<std::chrono::minutes>(ck.not_after() - ck.not_before()),
            std::chrono::minutes(12 * 60 + 1));  // 12 h plus the one-minute backdate
  EXPECT_EQ(EVP_PKEY_get_base_id(ck.key()), EVP_PKEY_EC);
  EXPECT_NE(X509_get_extension_flags(ck.leaf()) & EXFLAG_XKUSAGE, 0u);
  EXPECT_NE(X509_get_extended_key_usage(ck.leaf()) & XKU_SSL_SERVER, 0u);
  EXPECT_EQ(X509_check_ca(ck.leaf()), 0);
  ASSERT_EQ(sk_X509_num(ck.chain()), 1);
  EXPECT_EQ(X509_cmp(sk_X509_value(ck.chain(), 0), (*ca)->intermediate()->leaf()), 0);
  EXPECT_TRUE(verifies(ck, (*ca)->root_path()));
  EXPECT_EQ(X509_check_host(ck.leaf(), "app.example", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(ck.leaf(), "127.0.0.1", 0), 1);
}

TEST(LocalCa, RejectsNamesThatAreNeitherDnsNamesNorIps) {
  TempDir tmp;
  auto ca = LocalCa::open(tmp.path());
  ASSERT_TRUE(ca);
  EXPECT_FALSE((*ca)->issue({}));
  EXPECT_FALSE((*ca)->issue({"a,DNS:evil.example"}));
  EXPECT_FALSE((*ca)->issue({"bad..name"}));
  EXPECT_FALSE((*ca)->issue({"sp ace.example"}));
}

TEST(LocalCa, CachesLeavesAndReissuesAfterTwoThirdsOfTheirLifetime) {
  TempDir tmp;
  FakeClock clock;
  LocalCa::Options opt;
  opt.now = clock.fn();
  auto ca = LocalCa::open(tmp.path(), opt);
  ASSERT_TRUE(ca);
  auto a = (*ca)->issue({"a.test", "b.test"});
  auto b = (*ca)->issue({"B.TEST", "a.test."});  // same set, other order and spelling
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->get(), b->get());

  clock.advance(hours(7));  // 7/12 of the lifetime: still cached
  auto c = (*ca)->issue({"a.test", "b.test"});
  EXPECT_EQ(c->get(), a->get());

  clock.advance(hours(2));  // 9/12 > 2/3: a new certificate
  auto d = (*ca)->issue({"a.test", "b.test"});
  ASSERT_TRUE(d);
  EXPECT_NE(d->get(), a->get());
  EXPECT_NE((*d)->serial_hex(), (*a)->serial_hex());
}

TEST(LocalCa, RenewsTheIntermediateAfterTwoThirdsOfItsLifeAndPersistsIt) {
  TempDir tmp;
  FakeClock clock;
  LocalCa::Options opt;
  opt.now = clock.fn();
  auto ca = LocalCa::open(tmp.path(), opt);
  ASSERT_TRUE(ca);
  std::string old_inter = (*ca)->intermediate()->serial_hex();
  std::string root = (*ca)->root()->serial_hex();

  clock.advance(hours(24 * 4));  // 4 of 7 days: kept
  ASSERT_TRUE((*ca)->issue({"x.test"}));
  EXPECT_EQ((*ca)->intermediate()->serial_hex(), old_inter);

  clock.advance(hours(24 * 1));  // 5 of 7 days: renewed
  auto leaf = (*ca)->issue({"y.test"});
  ASSERT_TRUE(leaf);
  std::string new_inter = (*ca)->intermediate()->serial_hex();
  EXPECT_NE(new_inter, old_inter);
  EXPECT_EQ(X509_cmp(sk_X509_value((*leaf)->chain(), 0), (*ca)->intermediate()->leaf()), 0);
  EXPECT_EQ((*ca)->root()->serial_hex(), root);

  // A restart (at the same fake time) picks up the renewed intermediate from disk.
  ca->reset();
  auto reopened = LocalCa::open(tmp.path(), opt);
  ASSERT_TRUE(reopened);
  EXPECT_EQ((*reopened)->intermediate()->serial_hex(), new_inter);
  EXPECT_EQ(mode_of(ca_dir(tmp) + "/intermediate.key"), 0600u);
}

TEST(LocalCa, KeepsIssuingWithTheOldIntermediateWhenItsRenewalCannotBeWritten) {
  TempDir tmp;
  FakeClock clock;
  LocalCa::Options opt;
  opt.now = clock.fn();
  auto ca = LocalCa::open(tmp.path(), opt);
  ASSERT_TRUE(ca);
  std::string old_inter = (*ca)->intermediate()->serial_hex();
  // rename(2) cannot replace a non-empty directory, not even as root.
  std::string cert = ca_dir(tmp) + "/intermediate.crt";
  std::filesystem::remove(cert);
  std::filesystem::create_directories(cert + "/blocker");

  clock.advance(hours(24 * 5));  // renewal due
  auto leaf = (*ca)->issue({"still.test"});
  ASSERT_TRUE(leaf) << leaf.errors().front().str();
  EXPECT_EQ((*ca)->intermediate()->serial_hex(), old_inter);
  EXPECT_TRUE(verifies(**leaf, (*ca)->root_path(), clock.fn()()));

  std::filesystem::remove_all(cert);  // the disk recovers: the next miss renews
  ASSERT_TRUE((*ca)->issue({"later.test"}));
  EXPECT_NE((*ca)->intermediate()->serial_hex(), old_inter);
}

TEST(LocalCa, ConcurrentIssuesOfTheSameNamesShareOneCertificate) {
  TempDir tmp;
  auto ca = LocalCa::open(tmp.path());
  ASSERT_TRUE(ca);
  LocalCa* raw = ca->get();
  std::vector<std::shared_ptr<const CertifiedKey>> got(4);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i) {
    threads.emplace_back([raw, &got, i] {
      auto r = raw->issue({"same.test"});
      if (r) got[i] = *r;
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& g : got) {
    ASSERT_TRUE(g);
    EXPECT_EQ(g.get(), got[0].get());
  }
}

TEST(WriteFileAtomic, ReplacesContentWithTheGivenMode) {
  TempDir tmp;
  std::string path = tmp.file("f.key");
  ASSERT_TRUE(write_file_atomic(path, "one", 0644));
  ASSERT_TRUE(write_file_atomic(path, "two", 0600));
  auto text = read_file(path);
  ASSERT_TRUE(text);
  EXPECT_EQ(*text, "two");
  EXPECT_EQ(mode_of(path), 0600u);
  EXPECT_FALSE(write_file_atomic(tmp.file("missing-dir/x"), "x", 0600));
}

}  // namespace
}  // namespace hsp::tls
