#include "http/message.h"

#include <gtest/gtest.h>

namespace hsp::http {
namespace {

TEST(HeaderMap, LookupIsCaseInsensitiveAndKeepsOrder) {
  HeaderMap h;
  h.add("Content-Type", "text/plain");
  h.add("X-A", "1");
  h.add("x-a", "2");
  ASSERT_NE(h.get("content-type"), nullptr);
  EXPECT_EQ(*h.get("CONTENT-TYPE"), "text/plain");
  EXPECT_EQ(*h.get("X-a"), "1");
  EXPECT_EQ(h.joined("x-A"), "1, 2");
  EXPECT_EQ(h.joined("missing"), "");
  EXPECT_FALSE(h.has("missing"));
  ASSERT_EQ(h.size(), 3u);
  EXPECT_EQ(h.fields()[0].first, "Content-Type");
  EXPECT_EQ(h.fields()[2].first, "x-a");
}

TEST(HeaderMap, SetReplacesAllValuesInPlace) {
  HeaderMap h;
  h.add("A", "1");
  h.add("B", "x");
  h.add("a", "2");
  h.set("A", "3");
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h.fields()[0], (HeaderMap::Field{"A", "3"}));
  EXPECT_EQ(h.fields()[1].first, "B");
  h.set("C", "new");
  EXPECT_EQ(h.fields().back(), (HeaderMap::Field{"C", "new"}));
}

TEST(HeaderMap, RemoveAndRemovePrefix) {
  HeaderMap h;
  h.add("X-Foo", "1");
  h.add("x-foo-bar", "2");
  h.add("X-FOO", "3");
  h.add("Other", "4");
  EXPECT_EQ(h.remove("x-foo"), 2u);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_EQ(h.remove_prefix("X-FOO"), 1u);
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h.fields()[0].first, "Other");
  EXPECT_EQ(h.remove("absent"), 0u);
}

TEST(Iequals, ComparesAsciiCaseInsensitively) {
  EXPECT_TRUE(iequals("Keep-Alive", "keep-alive"));
  EXPECT_FALSE(iequals("Keep-Alive", "keep-alivE "));
  EXPECT_FALSE(iequals("a", "b"));
  EXPECT_TRUE(iequals("", ""));
}

TEST(Request, ProtoAndUri) {
  Request r;
  r.version = 10;
  EXPECT_EQ(r.proto(), "HTTP/1.0");
  r.version = 11;
  EXPECT_EQ(r.proto(), "HTTP/1.1");
  r.version = 20;
  EXPECT_EQ(r.proto(), "HTTP/2.0");
  r.version = 30;
  EXPECT_EQ(r.proto(), "HTTP/3.0");
  r.path = "/a";
  EXPECT_EQ(r.uri(), "/a");
  r.query = "x=1";
  EXPECT_EQ(r.uri(), "/a?x=1");
}

TEST(ReasonPhrase, StandardCodes) {
  EXPECT_EQ(reason_phrase(200), "OK");
  EXPECT_EQ(reason_phrase(404), "Not Found");
  EXPECT_EQ(reason_phrase(431), "Request Header Fields Too Large");
  EXPECT_EQ(reason_phrase(502), "Bad Gateway");
  EXPECT_EQ(reason_phrase(504), "Gateway Timeout");
  EXPECT_EQ(reason_phrase(308), "Permanent Redirect");
  EXPECT_EQ(reason_phrase(799), "");
}

}  // namespace
}  // namespace hsp::http

namespace hsp::http {
namespace {

TEST(Cookie, FindsByExactNameAcrossFields) {
  HeaderMap h;
  h.add("Cookie", "a=1; lb=\"xyz\" ");
  h.add("cookie", "Session=s1;session=s2");
  std::string_view v;
  ASSERT_TRUE(find_cookie(h, "lb", v));
  EXPECT_EQ(v, "xyz");
  ASSERT_TRUE(find_cookie(h, "session", v));
  EXPECT_EQ(v, "s2");  // names are case-sensitive, as Go's Request.Cookie
  EXPECT_FALSE(find_cookie(h, "missing", v));
  ASSERT_TRUE(find_cookie(h, "SESSION", v, /*ignore_case=*/true));
  EXPECT_EQ(v, "s1");
}

// The one rule both HTTP/1 (Host) and HTTP/2 (:authority) use for Request::host.
TEST(Message, HostOfAuthorityDropsThePortAndLowerCases) {
  EXPECT_EQ(host_of_authority("Example.COM:8080"), "example.com");
  EXPECT_EQ(host_of_authority("example.com"), "example.com");
  EXPECT_EQ(host_of_authority("[::1]:443"), "::1");
  EXPECT_EQ(host_of_authority("[FE80::1]"), "fe80::1");
  EXPECT_EQ(host_of_authority("::1"), "::1");  // several colons: no port to strip
  EXPECT_EQ(host_of_authority(""), "");
  EXPECT_EQ(ascii_lower("X-Forwarded-FOR"), "x-forwarded-for");
}

}  // namespace
}  // namespace hsp::http
