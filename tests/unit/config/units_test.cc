// parse_duration / parse_size / format_go_duration and address parsing against the behaviour
// of Go's time.ParseDuration + Caddy's `d`, go-humanize's ParseBytes and Go's Duration.String.
#include <gtest/gtest.h>

#include "config/address.h"
#include "config/compile.h"
#include "config/units.h"

namespace hsp::config {
namespace {

using namespace std::chrono_literals;

Duration dur(const std::string& s) {
  Duration d{-12345};
  EXPECT_TRUE(parse_duration(s, d)) << s;
  return d;
}

TEST(ParseDuration, GoForms) {
  EXPECT_EQ(dur("250ms"), 250ms);
  EXPECT_EQ(dur("1.5s"), 1500ms);
  EXPECT_EQ(dur("2m"), 2min);
  EXPECT_EQ(dur("1h30m"), 90min);
  EXPECT_EQ(dur("0"), 0s);
  EXPECT_EQ(dur("-1s"), -1s);
  EXPECT_EQ(dur("+5s"), 5s);
  EXPECT_EQ(dur("10us"), 10us);
  EXPECT_EQ(dur("10\xC2\xB5s"), 10us);
  EXPECT_EQ(dur("7ns"), 7ns);
  EXPECT_EQ(dur(".5s"), 500ms);
  EXPECT_EQ(dur("1.s"), 1s);
}

TEST(ParseDuration, CaddyDays) {
  EXPECT_EQ(dur("1d"), 24h);
  EXPECT_EQ(dur("1d2h"), 26h);
  EXPECT_EQ(dur("0.5d"), 12h);
  EXPECT_EQ(dur("2d30m"), 48h + 30min);
}

TEST(ParseDuration, Rejects) {
  Duration d{0};
  for (const char* bad :
       {"", "10", "5x", "s", "1.5", "ms", "1h-2m", "d", "--1s", ".s", "9999999999h"}) {
    EXPECT_FALSE(parse_duration(bad, d)) << bad;
  }
}

TEST(ParseSize, HumanizeForms) {
  int64_t v = 0;
  ASSERT_TRUE(parse_size("1024", v));
  EXPECT_EQ(v, 1024);
  ASSERT_TRUE(parse_size("10MB", v));
  EXPECT_EQ(v, 10'000'000);
  ASSERT_TRUE(parse_size("10mib", v));
  EXPECT_EQ(v, 10 * 1024 * 1024);
  ASSERT_TRUE(parse_size("1GiB", v));
  EXPECT_EQ(v, 1LL << 30);
  ASSERT_TRUE(parse_size("512 KB", v));
  EXPECT_EQ(v, 512'000);
  ASSERT_TRUE(parse_size("1.5k", v));
  EXPECT_EQ(v, 1500);
  ASSERT_TRUE(parse_size("1,024kb", v));
  EXPECT_EQ(v, 1'024'000);
  ASSERT_TRUE(parse_size("3b", v));
  EXPECT_EQ(v, 3);
  for (const char* bad : {"", "MB", "10XB", "ten", "1e3", "99999999999EB"}) {
    EXPECT_FALSE(parse_size(bad, v)) << bad;
  }
}

TEST(FormatGoDuration, MatchesGo) {
  EXPECT_EQ(format_go_duration(0s), "0s");
  EXPECT_EQ(format_go_duration(30s), "30s");
  EXPECT_EQ(format_go_duration(2min), "2m0s");
  EXPECT_EQ(format_go_duration(90min), "1h30m0s");
  EXPECT_EQ(format_go_duration(1500ms), "1.5s");
  EXPECT_EQ(format_go_duration(250ms), "250ms");
  EXPECT_EQ(format_go_duration(1500us), "1.5ms");
  EXPECT_EQ(format_go_duration(10us), "10\xC2\xB5s");
  EXPECT_EQ(format_go_duration(Duration(-1)), "-1ns");
  EXPECT_EQ(format_go_duration(26h), "26h0m0s");
  EXPECT_EQ(format_go_duration(Duration(3723000000001)), "1h2m3.000000001s");
}

RawAddress addr(const std::string& key) {
  RawAddress a;
  std::string err;
  EXPECT_TRUE(parse_site_address(key, a, err)) << key << ": " << err;
  return a;
}

TEST(SiteAddress, Forms) {
  auto a = addr("HTTP://Example.COM:8080/API");
  EXPECT_EQ(a.scheme, "http");
  EXPECT_EQ(a.host, "example.com");
  EXPECT_EQ(a.port, "8080");
  EXPECT_EQ(a.path, "/API");  // paths keep their case

  a = addr(":8080");
  EXPECT_EQ(a.host, "");
  EXPECT_EQ(a.port, "8080");

  a = addr("http://");
  EXPECT_EQ(a.scheme, "http");
  EXPECT_EQ(a.host, "");
  EXPECT_EQ(a.port, "");

  a = addr("[::1]:9000");
  EXPECT_EQ(a.host, "::1");
  EXPECT_EQ(a.port, "9000");

  a = addr("[2001:DB8:0:0::1]");
  EXPECT_EQ(a.host, "2001:db8::1");
  EXPECT_EQ(a.port, "");

  a = addr("*.Example.com");
  EXPECT_EQ(a.host, "*.example.com");

  a = addr("{$NOT_SUBSTITUTED}.Example.com");
  EXPECT_EQ(a.host, "{$NOT_SUBSTITUTED}.example.com");

  RawAddress bad;
  std::string err;
  EXPECT_FALSE(parse_site_address("example.com:http", bad, err));
  EXPECT_FALSE(parse_site_address("example.com:70000", bad, err));
}

TEST(UpstreamAddress, Forms) {
  auto dial = [](const std::string& s) {
    UpstreamAddress u;
    std::string err;
    EXPECT_TRUE(parse_upstream_address(s, u, err)) << s << ": " << err;
    return u.dial;
  };
  EXPECT_EQ(dial("127.0.0.1:9000"), "127.0.0.1:9000");
  EXPECT_EQ(dial("backend"), "backend:80");
  EXPECT_EQ(dial(":9000"), ":9000");
  EXPECT_EQ(dial("http://backend"), "backend:80");
  EXPECT_EQ(dial("http://[::1]:81"), "[::1]:81");
  EXPECT_EQ(dial("[::1]:9000"), "[::1]:9000");
  EXPECT_EQ(dial("https://backend"), "backend:443");
  UpstreamAddress u;
  std::string err;
  EXPECT_FALSE(parse_upstream_address("http://backend/path", u, err));
  EXPECT_FALSE(parse_upstream_address("http://backend:443", u, err));
  EXPECT_FALSE(parse_upstream_address("https://backend:80", u, err));
}

TEST(IpRanges, Validation) {
  EXPECT_TRUE(valid_ip_or_cidr("10.0.0.0/8"));
  EXPECT_TRUE(valid_ip_or_cidr("::1"));
  EXPECT_TRUE(valid_ip_or_cidr("fd00::/8"));
  EXPECT_TRUE(valid_ip_or_cidr("127.0.0.1"));
  EXPECT_FALSE(valid_ip_or_cidr("10.0.0.0/33"));
  EXPECT_FALSE(valid_ip_or_cidr("::/129"));
  EXPECT_FALSE(valid_ip_or_cidr("example.com"));
  EXPECT_FALSE(valid_ip_or_cidr("10.0.0.0/"));
}

}  // namespace
}  // namespace hsp::config
