#include "tls/certified_key.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>

#include "tls/local_ca.h"
#include "tls_test_util.h"

namespace hsp::tls {
namespace {

using testing::TempDir;

void write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// A leaf from a throw-away local CA, written out as Caddy users would give it to `tls`.
struct IssuedFiles {
  TempDir tmp;
  std::string cert = tmp.file("cert.pem");
  std::string key = tmp.file("key.pem");
  std::shared_ptr<const CertifiedKey> issued;

  explicit IssuedFiles(std::vector<std::string> names, LocalCa::Options opt = {}) {
    auto ca = LocalCa::open(tmp.file("ca"), std::move(opt));
    EXPECT_TRUE(ca);
    auto leaf = (*ca)->issue(names);
    EXPECT_TRUE(leaf);
    issued = *leaf;
    write(cert, issued->cert_chain_pem());
    write(key, issued->key_pem());
  }
};

std::string first_error(const Result<CertifiedKey>& r) {
  return r ? std::string() : r.errors().front().str();
}

TEST(LoadPemFiles, LoadsLeafChainKeyNamesAndValidity) {
  IssuedFiles f({"site.example", "10.1.2.3"});
  auto ck = load_pem_files(f.cert, f.key);
  ASSERT_TRUE(ck) << first_error(ck);
  EXPECT_EQ(X509_cmp(ck->leaf(), f.issued->leaf()), 0);
  EXPECT_EQ(sk_X509_num(ck->chain()), 1);  // the intermediate followed the leaf in the file
  EXPECT_EQ(ck->dns_names(), std::vector<std::string>{"site.example"});
  EXPECT_EQ(ck->ip_addresses(), std::vector<std::string>{"10.1.2.3"});
  EXPECT_EQ(ck->not_after(), f.issued->not_after());
  EXPECT_EQ(ck->not_before(), f.issued->not_before());
  EXPECT_FALSE(ck->expired());
}

TEST(LoadPemFiles, UnreadableFileIsNamed) {
  TempDir tmp;
  auto ck = load_pem_files(tmp.file("nope.pem"), tmp.file("nope.key"));
  ASSERT_FALSE(ck);
  EXPECT_EQ(first_error(ck), tmp.file("nope.pem") + ": cannot read: No such file or directory");
}

// A FIFO (or a device) named as a certificate: refused at once, where a blocking open would
// hang the snapshot build for good.
TEST(LoadPemFiles, SpecialFileIsRefusedWithoutBlocking) {
  TempDir tmp;
  ASSERT_EQ(::mkfifo(tmp.file("fifo.pem").c_str(), 0600), 0);
  auto ck = load_pem_files(tmp.file("fifo.pem"), tmp.file("nope.key"));
  ASSERT_FALSE(ck);
  EXPECT_EQ(first_error(ck), tmp.file("fifo.pem") + ": cannot read: not a regular file");
  auto big = read_file("/dev/zero", 16);
  ASSERT_FALSE(big);
}

TEST(LoadPemFiles, FileWithoutCertificateIsNamed) {
  IssuedFiles f({"a.example"});
  write(f.cert, "hello, not a certificate\n");
  auto ck = load_pem_files(f.cert, f.key);
  ASSERT_FALSE(ck);
  EXPECT_EQ(first_error(ck), f.cert + ": no PEM certificate found");
}

TEST(LoadPemFiles, KeyFileWithoutKeyIsNamed) {
  IssuedFiles f({"a.example"});
  write(f.key, f.issued->cert_chain_pem());  // a certificate where the key should be
  auto ck = load_pem_files(f.cert, f.key);
  ASSERT_FALSE(ck);
  EXPECT_NE(first_error(ck).find(f.key + ": no PEM private key found"), std::string::npos)
      << first_error(ck);
}

TEST(LoadPemFiles, KeyOfAnotherCertificateIsRejected) {
  IssuedFiles a({"a.example"});
  IssuedFiles b({"b.example"});
  auto ck = load_pem_files(a.cert, b.key);
  ASSERT_FALSE(ck);
  EXPECT_EQ(first_error(ck), b.key + ": private key does not match the certificate in " + a.cert);
}

TEST(LoadPemFiles, DamagedChainCertificateIsAnError) {
  IssuedFiles f({"a.example"});
  std::string pem = f.issued->cert_chain_pem();
  // Break the base64 body of the second (intermediate) certificate.
  size_t second = pem.find("-----BEGIN CERTIFICATE-----", 10);
  ASSERT_NE(second, std::string::npos);
  pem[second + 40] = '*';
  pem[second + 41] = '*';
  write(f.cert, pem);
  auto ck = load_pem_files(f.cert, f.key);
  ASSERT_FALSE(ck);
  EXPECT_EQ(first_error(ck), f.cert + ": certificate 2 in the file is not valid PEM");
}

TEST(LoadPemFiles, ExpiredCertificateLoadsButIsFlagged) {
  LocalCa::Options opt;
  auto past = std::chrono::system_clock::now() - std::chrono::hours(48);
  opt.now = [past] { return past; };
  IssuedFiles f({"old.example"}, opt);
  auto ck = load_pem_files(f.cert, f.key);
  ASSERT_TRUE(ck) << first_error(ck);
  EXPECT_TRUE(ck->expired());
  EXPECT_FALSE(ck->expired(past));
}

// A certificate made by the openssl CLI with a PKCS#8 key and no subjectAltName: the CN is
// taken as its name, as Caddy does.
TEST(LoadPemFiles, ForeignCertificateWithoutSanFallsBackOnCommonName) {
  TempDir tmp;
  std::string cmd =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
      "-subj /CN=Old.Example -days 2 -keyout " +
      tmp.file("k.pem") + " -out " + tmp.file("c.pem") + " 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  auto ck = load_pem_files(tmp.file("c.pem"), tmp.file("k.pem"));
  ASSERT_TRUE(ck) << first_error(ck);
  EXPECT_EQ(ck->dns_names(), std::vector<std::string>{"old.example"});
  EXPECT_EQ(sk_X509_num(ck->chain()), 0);
}

TEST(NormalizeName, LowerCasesAndDropsOneTrailingDot) {
  EXPECT_EQ(normalize_name("WWW.Example.COM."), "www.example.com");
  EXPECT_EQ(normalize_name("a.b"), "a.b");
  EXPECT_EQ(normalize_name(""), "");
}

}  // namespace
}  // namespace hsp::tls
