#include "tls/cert_selector.h"

#include <gtest/gtest.h>

#include "tls/local_ca.h"
#include "tls_test_util.h"

namespace hsp::tls {
namespace {

class CertSelectorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = LocalCa::open(tmp_.path());
    ASSERT_TRUE(ca);
    ca_ = std::move(*ca);
    a_ = issue({"a.example"});
    wild_ = issue({"*.wild.example"});
    both_ = issue({"b.example", "c.example"});
    fallback_ = issue({"default.example"});
  }
  std::shared_ptr<const CertifiedKey> issue(std::vector<std::string> names) {
    auto r = ca_->issue(names);
    EXPECT_TRUE(r);
    return r ? *r : nullptr;
  }

  testing::TempDir tmp_;
  std::unique_ptr<LocalCa> ca_;
  std::shared_ptr<const CertifiedKey> a_, wild_, both_, fallback_;
};

TEST_F(CertSelectorTest, ExactNamesFromTheCertificatesSans) {
  auto sel = CertSelector::build({{a_, {}}, {wild_, {}}, {both_, {}}});
  EXPECT_EQ(sel->select("a.example"), a_.get());
  EXPECT_EQ(sel->select("b.example"), both_.get());
  EXPECT_EQ(sel->select("c.example"), both_.get());
  EXPECT_EQ(sel->select("d.example"), nullptr);
  EXPECT_EQ(sel->select(""), nullptr);
}

TEST_F(CertSelectorTest, CaseInsensitiveAndTrailingDotIgnored) {
  auto sel = CertSelector::build({{a_, {}}, {wild_, {}}});
  EXPECT_EQ(sel->select("A.Example."), a_.get());
  EXPECT_EQ(sel->select("X.WILD.example."), wild_.get());
}

TEST_F(CertSelectorTest, WildcardCoversExactlyOneLabel) {
  auto sel = CertSelector::build({{wild_, {}}});
  EXPECT_EQ(sel->select("x.wild.example"), wild_.get());
  EXPECT_EQ(sel->select("wild.example"), nullptr);
  EXPECT_EQ(sel->select("y.x.wild.example"), nullptr);
  EXPECT_EQ(sel->select(".wild.example"), nullptr);
}

TEST_F(CertSelectorTest, ExactNameBeatsWildcard) {
  auto sel = CertSelector::build({{wild_, {}}, {a_, {"special.wild.example"}}});
  EXPECT_EQ(sel->select("special.wild.example"), a_.get());
  EXPECT_EQ(sel->select("other.wild.example"), wild_.get());
}

TEST_F(CertSelectorTest, DefaultAnswersUnknownAndMissingSni) {
  auto sel = CertSelector::build({{a_, {}}}, fallback_);
  EXPECT_EQ(sel->select("nope.example"), fallback_.get());
  EXPECT_EQ(sel->select(""), fallback_.get());
  EXPECT_EQ(sel->select("a.example"), a_.get());
}

TEST_F(CertSelectorTest, ConfiguredNamesOverrideSansAndTheFirstClaimWins) {
  auto sel = CertSelector::build({{a_, {"Site.Example"}}, {both_, {"site.example", "b.example"}}});
  EXPECT_EQ(sel->select("site.example"), a_.get());
  EXPECT_EQ(sel->select("a.example"), nullptr);  // a_'s own SAN is not used when names are given
  EXPECT_EQ(sel->select("b.example"), both_.get());
  EXPECT_EQ(sel->size(), 2u);
}

TEST_F(CertSelectorTest, KeepsItsCertificatesAlive) {
  std::weak_ptr<const CertifiedKey> weak = a_;
  auto sel = CertSelector::build({{a_, {}}});
  a_.reset();
  ca_.reset();  // the CA's cache held it too
  EXPECT_FALSE(weak.expired());
  EXPECT_NE(sel->select("a.example"), nullptr);
}

}  // namespace
}  // namespace hsp::tls
