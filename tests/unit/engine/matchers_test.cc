#include <gtest/gtest.h>

#include "engine/compiled.h"
#include "test_util.h"

namespace hsp::engine {
namespace {

using namespace test;

bool matches(const config::MatcherSet& ms, http::Request& req, RequestCtx* out_ctx = nullptr) {
  Errors errors;
  CompiledMatcherSet c = compile_matcher_set(ms, errors);
  EXPECT_TRUE(errors.empty()) << (errors.empty() ? "" : errors[0].str());
  RequestCtx ctx(req);
  Decision d;
  DispatchState st(ctx, d);
  bool m = c.match(st);
  if (out_ctx != nullptr) out_ctx->captures = ctx.captures;
  return m;
}

bool path_matches(const std::string& pattern, const std::string& target) {
  auto req = request("GET", "a.test", target);
  return matches(path_matcher({pattern}), req);
}

TEST(PathMatcher, CaddyGlobForms) {
  EXPECT_TRUE(path_matches("/api/*", "/api/users"));
  EXPECT_TRUE(path_matches("/api/*", "/api/"));
  EXPECT_FALSE(path_matches("/api/*", "/api"));
  EXPECT_FALSE(path_matches("/api/*", "/apix/y"));
  EXPECT_TRUE(path_matches("/api*", "/apix/y"));
  EXPECT_TRUE(path_matches("*.php", "/a/b/index.php"));
  EXPECT_FALSE(path_matches("*.php", "/index.php5"));
  EXPECT_TRUE(path_matches("/exact", "/exact"));
  EXPECT_FALSE(path_matches("/exact", "/exact/"));
  EXPECT_TRUE(path_matches("*", "/anything"));
  EXPECT_TRUE(path_matches("*admin*", "/x/admin/y"));
  // Glob with '*' in the middle does not cross '/'.
  EXPECT_TRUE(path_matches("/u/*/profile", "/u/42/profile"));
  EXPECT_FALSE(path_matches("/u/*/profile", "/u/4/2/profile"));
  EXPECT_TRUE(path_matches("/file?.txt", "/file1.txt"));
  EXPECT_TRUE(path_matches("/v[0-9]/x", "/v2/x"));
}

TEST(PathMatcher, CaseInsensitiveCleanedAndDecoded) {
  EXPECT_TRUE(path_matches("/API/*", "/api/x"));
  EXPECT_TRUE(path_matches("/api/*", "/API/X"));
  EXPECT_TRUE(path_matches("/api/*", "//api//x"));
  EXPECT_TRUE(path_matches("/api/*", "/foo/../api/x"));
  EXPECT_TRUE(path_matches("/api/*", "/%61pi/x"));
  EXPECT_TRUE(path_matches("/index.php", "/index.php."));  // trailing dots trimmed
  // A pattern with "//" compares without merging slashes.
  EXPECT_TRUE(path_matches("/a//b", "/a//b"));
  EXPECT_FALSE(path_matches("/a//b", "/a/b"));
}

TEST(HostMatcher, ExactAndOneLabelWildcards) {
  config::MatcherSet ms;
  ms.host = {"Example.com", "*.test.org"};
  auto r1 = request("GET", "example.COM:8080", "/");
  auto r2 = request("GET", "a.test.org", "/");
  auto r3 = request("GET", "a.b.test.org", "/");
  EXPECT_TRUE(matches(ms, r1));
  EXPECT_TRUE(matches(ms, r2));
  EXPECT_FALSE(matches(ms, r3));
  EXPECT_TRUE(host_pattern_match("*.*.test.org", "a.b.test.org"));
  EXPECT_TRUE(host_pattern_match("foo.*.org", "foo.bar.org"));
}

TEST(MethodMatcher, ExactUpperCase) {
  config::MatcherSet ms;
  ms.method = {"GET", "HEAD"};
  auto g = request("GET", "a", "/");
  auto p = request("POST", "a", "/");
  EXPECT_TRUE(matches(ms, g));
  EXPECT_FALSE(matches(ms, p));
}

TEST(HeaderMatcher, ValuesWildcardsPresenceAbsence) {
  auto req = request("GET", "a.test:8443", "/");
  req.headers.add("X-Env", "staging-eu");
  req.headers.add("Accept", "text/html");
  req.headers.add("Accept", "application/json");

  config::MatcherSet exact;
  exact.header = {{"x-env", {"staging-eu"}}};
  EXPECT_TRUE(matches(exact, req));
  config::MatcherSet prefix;
  prefix.header = {{"X-Env", {"staging*"}}};
  EXPECT_TRUE(matches(prefix, req));
  config::MatcherSet suffix;
  suffix.header = {{"X-Env", {"*-us"}}};
  EXPECT_FALSE(matches(suffix, req));
  config::MatcherSet contains;
  contains.header = {{"X-Env", {"*ging*"}}};
  EXPECT_TRUE(matches(contains, req));
  config::MatcherSet any_value;
  any_value.header = {{"Accept", {"application/json"}}};  // any of the field's lines
  EXPECT_TRUE(matches(any_value, req));
  config::MatcherSet present;
  present.header = {{"X-Env", {}}};
  EXPECT_TRUE(matches(present, req));
  config::MatcherSet absent;
  absent.header = {{"!X-Env", {}}};
  EXPECT_FALSE(matches(absent, req));
  config::MatcherSet absent_other;
  absent_other.header = {{"!X-Debug", {}}};
  EXPECT_TRUE(matches(absent_other, req));
  // AND across fields.
  config::MatcherSet both;
  both.header = {{"X-Env", {"staging-eu"}}, {"X-Missing", {"*"}}};
  EXPECT_FALSE(matches(both, req));
  // Host is r.Host, with its port.
  config::MatcherSet host;
  host.header = {{"Host", {"a.test:8443"}}};
  EXPECT_TRUE(matches(host, req));
}

TEST(QueryMatcher, AnyListedKeyWithMatchingFirstValue) {
  config::MatcherSet ms;
  ms.query = {{"sort", {"asc"}}, {"debug", {"*"}}};
  auto r1 = request("GET", "a", "/?sort=asc");
  auto r2 = request("GET", "a", "/?sort=desc");
  auto r3 = request("GET", "a", "/?debug=");
  auto r4 = request("GET", "a", "/?sort=desc&sort=asc");
  auto r5 = request("GET", "a", "/?sort=asc;x=1");
  auto r6 = request("GET", "a", "/?q=hello+world");
  EXPECT_TRUE(matches(ms, r1));
  EXPECT_FALSE(matches(ms, r2));
  EXPECT_TRUE(matches(ms, r3));
  EXPECT_FALSE(matches(ms, r4));  // only the first value counts
  EXPECT_FALSE(matches(ms, r5));  // semicolons make the query invalid, as in Go
  config::MatcherSet decoded;
  decoded.query = {{"q", {"hello world"}}};
  EXPECT_TRUE(matches(decoded, r6));
}

TEST(IpMatchers, RemoteAndClientIp) {
  config::MatcherSet ms;
  ms.remote_ip = {"10.0.0.0/8", "::1"};
  auto req = request("GET", "a", "/");
  req.remote_ip = "10.9.8.7";
  EXPECT_TRUE(matches(ms, req));
  req.remote_ip = "::1";
  EXPECT_TRUE(matches(ms, req));
  req.remote_ip = "::ffff:10.0.0.1";  // dual-stack socket form of an IPv4 peer
  EXPECT_TRUE(matches(ms, req));
  req.remote_ip = "192.168.1.1";
  EXPECT_FALSE(matches(ms, req));

  config::MatcherSet client;
  client.client_ip = {"203.0.113.0/24"};
  req.client_ip = "203.0.113.7";
  EXPECT_TRUE(matches(client, req));
  req.client_ip = "198.51.100.1";
  EXPECT_FALSE(matches(client, req));
}

TEST(ProtocolMatcher, SchemeVersionAndGrpc) {
  auto req = request("GET", "a", "/");
  config::MatcherSet ms;
  ms.protocol = "http";
  EXPECT_TRUE(matches(ms, req));
  ms.protocol = "https";
  EXPECT_FALSE(matches(ms, req));
  ms.protocol = "http/1.1";
  EXPECT_TRUE(matches(ms, req));
  ms.protocol = "http/2+";
  EXPECT_FALSE(matches(ms, req));
  ms.protocol = "grpc";
  EXPECT_FALSE(matches(ms, req));
  req.headers.add("Content-Type", "application/grpc+proto");
  EXPECT_TRUE(matches(ms, req));
}

TEST(NotMatcher, NegatesInnerSets) {
  config::MatcherSet ms;
  ms.not_sets.push_back(path_matcher({"/admin/*"}));
  auto r1 = request("GET", "a", "/admin/x");
  auto r2 = request("GET", "a", "/public");
  EXPECT_FALSE(matches(ms, r1));
  EXPECT_TRUE(matches(ms, r2));
}

TEST(RegexpMatchers, CapturesForPlaceholders) {
  config::MatcherSet ms;
  ms.path_regexp.push_back(config::PathRegexp{"ver", "^/v(\\d+)/(?P<rest>.*)$"});
  auto req = request("GET", "a", "/v2/users/7");
  RequestCtx out(req);
  ASSERT_TRUE(matches(ms, req, &out));
  auto find = [&](const std::string& k) {
    for (const auto& [key, v] : out.captures) {
      if (key == k) return v;
    }
    return std::string("<none>");
  };
  EXPECT_EQ(find("ver.0"), "/v2/users/7");
  EXPECT_EQ(find("ver.1"), "2");
  EXPECT_EQ(find("ver.2"), "users/7");
  EXPECT_EQ(find("ver.rest"), "users/7");

  config::MatcherSet hr;
  hr.header_regexp.push_back(config::HeaderRegexp{"ua", "User-Agent", "(?i)curl/(\\S+)"});
  auto r2 = request("GET", "a", "/");
  r2.headers.add("User-Agent", "CURL/8.1");
  RequestCtx out2(r2);
  ASSERT_TRUE(matches(hr, r2, &out2));
  EXPECT_EQ(out2.captures[1], (std::pair<std::string, std::string>{"ua.1", "8.1"}));
  auto r3 = request("GET", "a", "/");
  EXPECT_FALSE(matches(hr, r3));
}

TEST(MatcherSet, AndAcrossConditions) {
  config::MatcherSet ms;
  ms.path = {"/api/*"};
  ms.method = {"POST"};
  auto r1 = request("POST", "a", "/api/x");
  auto r2 = request("GET", "a", "/api/x");
  EXPECT_TRUE(matches(ms, r1));
  EXPECT_FALSE(matches(ms, r2));
}

TEST(Glob, GoPathMatchSemantics) {
  EXPECT_TRUE(glob_match("abc", "abc"));
  EXPECT_TRUE(glob_match("a*", "abc"));
  EXPECT_TRUE(glob_match("a*/b", "abc/b"));
  EXPECT_FALSE(glob_match("a*/b", "a/c/b"));
  EXPECT_TRUE(glob_match("a*b*c*d*e*/f", "axbxcxdxe/f"));
  EXPECT_FALSE(glob_match("a*b*c*d*e*/f", "axbxcxdxexxx/fff"));
  EXPECT_TRUE(glob_match("[a-c]", "b"));
  EXPECT_FALSE(glob_match("[^a-c]", "b"));
  EXPECT_TRUE(glob_match("a\\*b", "a*b"));
  EXPECT_FALSE(glob_match("a?b", "a/b"));
}

TEST(CleanPath, KeepsTrailingSlashOptionallyKeepsDoubles) {
  EXPECT_EQ(clean_path("/a/b/../c/", true), "/a/c/");
  EXPECT_EQ(clean_path("//a///b", true), "/a/b");
  EXPECT_EQ(clean_path("//a///b", false), "//a///b");
  EXPECT_EQ(clean_path("/a/./b/..", false), "/a");
  EXPECT_EQ(clean_path("/", true), "/");
  EXPECT_EQ(clean_path("/..", true), "/");
}

}  // namespace
}  // namespace hsp::engine
