#include "acme/certs_cli.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "acme/storage.h"
#include "acme_test_util.h"

namespace hsp::acme {
namespace {

namespace fs = std::filesystem;

using testing::TempDir;

const std::string kLe = "acme-v02.api.letsencrypt.org-directory";
const std::string kPebble = "127.0.0.1-14000-dir";

SystemTime at(const char* text) {
  return parse_rfc3339(text).value();
}

// Metadata only: the listing reads no certificate or key, so none is needed here.
void manage(const std::string& data, const std::string& issuer, std::vector<std::string> names,
            const char* not_after, const char* renew_at) {
  CertMeta m;
  m.names = std::move(names);
  m.issuer = issuer;
  m.not_after = at(not_after);
  m.renew_at = at(renew_at);
  ASSERT_TRUE(Storage(data).save_meta(issuer, m.names.front(), m));
}

TEST(CertsCli, MissingOrEmptyDataDirectoryManagesNothing) {
  TempDir tmp;
  std::string out;
  EXPECT_EQ(print_certs(tmp.path() + "/nope", false, out), 0);
  EXPECT_EQ(out, "no certificates are managed under " + tmp.path() + "/nope\n");
  out.clear();
  EXPECT_EQ(print_certs(tmp.path(), false, out), 0);
  EXPECT_EQ(out, "no certificates are managed under " + tmp.path() + "\n");
  out.clear();
  EXPECT_EQ(print_certs(tmp.path(), true, out), 0);
  EXPECT_EQ(out, "[]\n");

  testing::write_text(tmp.path() + "/file", "x");
  out.clear();
  EXPECT_EQ(print_certs(tmp.path() + "/file", false, out), 1);
  EXPECT_NE(out.find("is not a directory"), std::string::npos);
}

TEST(CertsCli, OneCertificate) {
  TempDir tmp;
  manage(tmp.path(), kLe, {"a.example", "www.a.example"}, "2027-03-01T00:00:00Z",
         "2027-01-30T00:00:00Z");
  std::string out;
  EXPECT_EQ(print_certs(tmp.path(), false, out), 0);
  EXPECT_EQ(out,
            "NAMES                    ISSUER                                  NOT AFTER          "
            "   RENEW AT              LAST ERROR\n"
            "a.example,www.a.example  acme-v02.api.letsencrypt.org-directory  "
            "2027-03-01T00:00:00Z  2027-01-30T00:00:00Z  -\n");
}

TEST(CertsCli, TwoCertificatesSortedByNameWithARecordedFailure) {
  TempDir tmp;
  manage(tmp.path(), kPebble, {"b.example"}, "2027-03-01T00:00:00Z", "2027-01-30T00:00:00Z");
  manage(tmp.path(), kLe, {"*.a.example"}, "2027-02-01T00:00:00Z", "2027-01-01T00:00:00Z");
  // b.example's renewal failed; the old certificate stays listed with the reason.
  Storage st(tmp.path());
  auto b = st.load_cert(kPebble, "b.example");
  ASSERT_TRUE(b && *b);
  CertMeta failed = (*b)->meta;
  failed.last_error = "urn:ietf:params:acme:error:connection:\nconnection refused";
  failed.last_error_at = at("2027-01-30T00:00:05Z");
  failed.next_attempt = at("2027-01-30T00:01:05Z");
  failed.failures = 1;
  ASSERT_TRUE(st.save_meta(kPebble, "b.example", failed));

  std::string out;
  EXPECT_EQ(print_certs(tmp.path(), false, out), 0);
  EXPECT_EQ(out,
            "NAMES        ISSUER                                  NOT AFTER             RENEW AT  "
            "            LAST ERROR\n"
            "*.a.example  acme-v02.api.letsencrypt.org-directory  2027-02-01T00:00:00Z  "
            "2027-01-01T00:00:00Z  -\n"
            "b.example    127.0.0.1-14000-dir                     2027-03-01T00:00:00Z  "
            "2027-01-30T00:00:00Z  urn:ietf:params:acme:error:connection: connection refused\n");

  out.clear();
  EXPECT_EQ(print_certs(tmp.path(), true, out), 0);
  auto j = nlohmann::json::parse(out);
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["names"], nlohmann::json({"*.a.example"}));
  EXPECT_EQ(j[0]["issuer"], kLe);
  EXPECT_EQ(j[0]["not_after"], "2027-02-01T00:00:00Z");
  EXPECT_EQ(j[0]["renew_at"], "2027-01-01T00:00:00Z");
  EXPECT_TRUE(j[0]["last_error"].is_null());
  EXPECT_EQ(j[0]["failures"], 0);
  EXPECT_EQ(j[1]["names"], nlohmann::json({"b.example"}));
  EXPECT_EQ(j[1]["issuer"], kPebble);
  EXPECT_EQ(j[1]["last_error"], failed.last_error);
  EXPECT_EQ(j[1]["last_error_at"], "2027-01-30T00:00:05Z");
  EXPECT_EQ(j[1]["next_attempt"], "2027-01-30T00:01:05Z");
  EXPECT_EQ(j[1]["failures"], 1);
}

TEST(CertsCli, NeverObtainedAndUnreadableCertificatesStillShow) {
  TempDir tmp;
  CertMeta never;
  never.names = {"new.example"};
  never.issuer = kLe;
  never.last_error = "no such host";
  ASSERT_TRUE(Storage(tmp.path()).save_meta(kLe, "new.example", never));
  std::string dir = tmp.path() + "/certificates/" + kLe + "/bad.example";
  fs::create_directories(dir);
  testing::write_text(dir + "/bad.example.json", "{");

  std::string out;
  EXPECT_EQ(print_certs(tmp.path(), false, out), 0);
  std::string never_row = "new.example  " + kLe + "  -          -         no such host\n";
  EXPECT_NE(out.find(never_row), std::string::npos) << out;
  EXPECT_NE(out.find("bad.example  " + kLe), std::string::npos) << out;
  EXPECT_NE(out.find("not a JSON object"), std::string::npos) << out;
  EXPECT_LT(out.find("bad.example"), out.find("new.example"));
}

}  // namespace
}  // namespace hsp::acme
