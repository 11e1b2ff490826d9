#include "engine/placeholder.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "test_util.h"

namespace hsp::engine {
namespace {

using namespace test;

std::string render(const std::string& tmpl, RequestCtx& ctx, Unknown u = Unknown::keep) {
  return Template::compile(tmpl).str(ctx, u);
}

TEST(Placeholder, RequestFields) {
  auto req = request("POST", "Shop.Example.com:8443", "/a/b/file.tar.gz?x=1&y=%20two&x=3");
  req.remote_ip = "2001:db8::7";
  req.remote_port = 5555;
  req.headers.add("X-Tok", "one");
  req.headers.add("X-Tok", "two");
  req.headers.add("Cookie", "session=abc; Theme=\"dark\"");
  RequestCtx ctx(req);
  EXPECT_EQ(render("{http.request.host}", ctx), "Shop.Example.com");
  EXPECT_EQ(render("{http.request.hostport}", ctx), "Shop.Example.com:8443");
  EXPECT_EQ(render("{http.request.port}", ctx), "8443");
  EXPECT_EQ(render("{http.request.method} {http.request.scheme} {http.request.proto}", ctx),
            "POST http HTTP/1.1");
  EXPECT_EQ(render("{http.request.uri}", ctx), "/a/b/file.tar.gz?x=1&y=%20two&x=3");
  EXPECT_EQ(render("{http.request.uri.path}", ctx), "/a/b/file.tar.gz");
  EXPECT_EQ(render("{http.request.uri.query}", ctx), "x=1&y=%20two&x=3");
  EXPECT_EQ(
      render("{http.request.uri.query.x}|{http.request.uri.query.y}|{http.request.uri.query.z}",
             ctx),
      "1,3| two|");
  EXPECT_EQ(render("{http.request.uri.path.file}", ctx), "file.tar.gz");
  EXPECT_EQ(render("{http.request.uri.path.dir}", ctx), "/a/b/");
  EXPECT_EQ(render("{http.request.uri.path.file.base}", ctx), "file.tar");
  EXPECT_EQ(render("{http.request.uri.path.file.ext}", ctx), ".gz");
  EXPECT_EQ(
      render("{http.request.uri.path.0}/{http.request.uri.path.2}/{http.request.uri.path.9}", ctx),
      "a/file.tar.gz/");
  EXPECT_EQ(render("{http.request.host.labels.0}.{http.request.host.labels.2}", ctx), "com.Shop");
  EXPECT_EQ(render("{http.request.remote}", ctx), "[2001:db8::7]:5555");
  EXPECT_EQ(render("{http.request.remote.host}:{http.request.remote.port}", ctx),
            "2001:db8::7:5555");
  EXPECT_EQ(render("{http.request.header.x-tok}", ctx), "one,two");
  EXPECT_EQ(render("[{http.request.header.Absent}]", ctx), "[]");
  EXPECT_EQ(render("{http.request.cookie.session}/{http.request.cookie.theme}", ctx), "abc/dark");
  EXPECT_EQ(render("{http.request.orig_uri}", ctx), "/a/b/file.tar.gz?x=1&y=%20two&x=3");
}

TEST(Placeholder, ShorthandsAreAccepted) {
  auto req = request("GET", "a.test", "/p?q=1");
  RequestCtx ctx(req);
  EXPECT_EQ(render("{host}{path}?{query} {method} {uri} {remote_host}", ctx),
            "a.test/p?q=1 GET /p?q=1 127.0.0.1");
  EXPECT_EQ(render("{labels.1}", ctx), "a");
}

TEST(Placeholder, UnknownKeptOrEmptied) {
  auto req = request("GET", "a", "/");
  RequestCtx ctx(req);
  EXPECT_EQ(render("x{nope.nothing}y", ctx, Unknown::keep), "x{nope.nothing}y");
  EXPECT_EQ(render("x{nope.nothing}y", ctx, Unknown::empty), "xy");
  // A missing cookie and an unset regexp capture are unknown too, as in Caddy.
  EXPECT_EQ(render("{http.request.cookie.none}", ctx, Unknown::keep), "{http.request.cookie.none}");
  EXPECT_EQ(render("{http.regexp.m.1}", ctx, Unknown::keep), "{http.regexp.m.1}");
  EXPECT_EQ(render("{http.request.uri.path.x}", ctx, Unknown::empty), "");
  // Upstream placeholders are unknown until an upstream is chosen.
  EXPECT_EQ(render("{http.reverse_proxy.upstream.hostport}", ctx),
            "{http.reverse_proxy.upstream.hostport}");
  UpstreamHost u("10.0.0.5:8080");
  ctx.upstream = &u;
  EXPECT_EQ(render("{upstream_hostport}|{http.reverse_proxy.upstream.host}|"
                   "{http.reverse_proxy.upstream.port}|{http.reverse_proxy.upstream.address}",
                   ctx),
            "10.0.0.5:8080|10.0.0.5|8080|tcp/10.0.0.5:8080");
}

TEST(Placeholder, EscapesAndUnclosedBraces) {
  auto req = request("GET", "a", "/");
  RequestCtx ctx(req);
  EXPECT_EQ(render("\\{host\\}", ctx), "{host}");
  EXPECT_EQ(render("{host", ctx), "{host");
  EXPECT_EQ(render("{}", ctx, Unknown::empty), "");
  EXPECT_FALSE(Template::compile("plain text").has_placeholders());
  EXPECT_EQ(Template::compile("plain text").literal(), "plain text");
}

TEST(Placeholder, RegexpCapturesLastWins) {
  auto req = request("GET", "a", "/");
  RequestCtx ctx(req);
  ctx.captures.emplace_back("m.1", "first");
  ctx.captures.emplace_back("m.1", "second");
  ctx.captures.emplace_back("1", "unnamed");
  EXPECT_EQ(render("{http.regexp.m.1}/{re.m.1}/{http.regexp.1}", ctx), "second/second/unnamed");
}

TEST(Placeholder, EnvSystemTime) {
  setenv("HSP_TEST_PLACEHOLDER", "val", 1);
  auto req = request("GET", "a", "/");
  RequestCtx ctx(req);
  EXPECT_EQ(render("{env.HSP_TEST_PLACEHOLDER}|{env.HSP_NOT_SET_ANYWHERE}", ctx), "val|");
  EXPECT_FALSE(render("{system.hostname}", ctx).empty());
  std::string unix = render("{time.now.unix}", ctx);
  EXPECT_GT(std::stoll(unix), 1700000000LL);
  EXPECT_EQ(render("{time.now.year}", ctx).size(), 4u);
}

TEST(Placeholder, QueryEscapeRendering) {
  auto req = request("GET", "a", "/?a=b");
  req.headers.add("X-V", "x y&z");
  RequestCtx ctx(req);
  Template t = Template::compile("{http.request.header.X-V}");
  std::string out;
  t.render(ctx, Unknown::empty, out, Escape::query_value);
  EXPECT_EQ(out, "x+y%26z");
  Template q = Template::compile("{http.request.uri.query}");
  out.clear();
  q.render(ctx, Unknown::empty, out, Escape::query_key);
  EXPECT_EQ(out, "a=b");
}

}  // namespace
}  // namespace hsp::engine
