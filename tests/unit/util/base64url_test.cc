// Unpadded base64url (util/base64url.h): RFC 4648 vectors and what strict decoding refuses.
#include "util/base64url.h"

#include <gtest/gtest.h>

#include <string>

namespace hsp {
namespace {

std::string decode(const std::string& text) {
  auto r = base64url_decode(text);
  EXPECT_TRUE(r.ok()) << text;
  return r ? *r : std::string();
}

TEST(Base64Url, Rfc4648Vectors) {
  // RFC 4648 §10, without the padding that §5 / RFC 7515 §2 drop.
  EXPECT_EQ(base64url(""), "");
  EXPECT_EQ(base64url("f"), "Zg");
  EXPECT_EQ(base64url("fo"), "Zm8");
  EXPECT_EQ(base64url("foo"), "Zm9v");
  EXPECT_EQ(base64url("foob"), "Zm9vYg");
  EXPECT_EQ(base64url("fooba"), "Zm9vYmE");
  EXPECT_EQ(base64url("foobar"), "Zm9vYmFy");
  // The URL-safe alphabet: 62 is '-', 63 is '_' (standard base64 would give "+/8").
  EXPECT_EQ(base64url(std::string("\xfb\xff", 2)), "-_8");
  EXPECT_EQ(base64url(std::string("\0\0\0", 3)), "AAAA");
}

TEST(Base64Url, DecodesAndRejects) {
  for (const char* s : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
    EXPECT_EQ(decode(base64url(s)), s);
  }
  EXPECT_EQ(decode("-_8"), std::string("\xfb\xff", 2));
  EXPECT_FALSE(base64url_decode("Zm9v=").ok());  // padding is not base64url
  EXPECT_FALSE(base64url_decode("Zm+v").ok());   // standard alphabet
  EXPECT_FALSE(base64url_decode("Zm9vY").ok());  // 1 mod 4 cannot be
  EXPECT_FALSE(base64url_decode("Zh").ok());     // non-zero trailing bits
  auto bad = base64url_decode("ab$c");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.errors().front().message.find("offset 2"), std::string::npos);
}

}  // namespace
}  // namespace hsp
