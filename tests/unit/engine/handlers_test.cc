// Rewrites, header operations, groups, terminal routes, subroutes: dispatch end to end over
// hand-built configs.
#include <gtest/gtest.h>

#include "engine/compiled.h"
#include "test_util.h"

namespace hsp::engine {
namespace {

using namespace test;

struct Harness {
  UpstreamRegistry reg;
  SnapshotPtr snap;
  explicit Harness(std::vector<config::Route> routes) {
    config::Config cfg;
    cfg.sites.push_back(site({addr("a.test")}, std::move(routes)));
    single_server(cfg);
    auto r = Snapshot::build(cfg, reg, 1);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.errors()[0].str());
    if (r.ok()) snap = r.value();
  }
  Decision run(http::Request& req) {
    RequestCtx ctx(req);
    return snap->dispatch(*snap->find_site(0, "a.test"), ctx);
  }
};

config::Route rewrite_route(config::Rewrite rw, std::vector<config::MatcherSet> match = {}) {
  config::Route r;
  r.handle.emplace_back(std::move(rw));
  r.match = std::move(match);
  return r;
}

config::Route echo_route() {
  return respond_route("{http.request.uri}");
}

std::string rewritten(config::Rewrite rw, const std::string& target) {
  Harness h({rewrite_route(std::move(rw)), echo_route()});
  auto req = request("GET", "a.test", target);
  return h.run(req).body;
}

TEST(Rewrite, UriWithQueryMerging) {
  config::Rewrite rw;
  rw.uri = "/index.php?{http.request.uri.query}&p={http.request.uri.path}";
  EXPECT_EQ(rewritten(rw, "/a b?x=1"), "/index.php?x=1&p=%2Fa+b");
  rw.uri = "/new";
  EXPECT_EQ(rewritten(rw, "/old?keep=1"), "/new?keep=1");  // no '?': query untouched
  rw.uri = "/new?";
  EXPECT_EQ(rewritten(rw, "/old?keep=1"), "/new");
  rw.uri = "?a=b";
  EXPECT_EQ(rewritten(rw, "/same?x=1"), "/same?a=b");
  rw.uri = "/pre{http.request.uri}";
  EXPECT_EQ(rewritten(rw, "/p?q=2"), "/pre/p?q=2");
  // {path} renders unescaped; the new path is escaped again for the request line.
  rw.uri = "/x{http.request.uri.path}";
  EXPECT_EQ(rewritten(rw, "/a%20b%2C"), "/x/a%20b,");
  // As in Caddy, an unescaped '?' from {path} splits the path; the split-off part would only
  // become the query if the rewrite target had a '?' of its own.
  EXPECT_EQ(rewritten(rw, "/a%3Fb=1"), "/x/a");
}

TEST(Rewrite, StripPrefixSuffixReplaceRegexp) {
  config::Rewrite rw;
  rw.strip_prefix = "/api";
  EXPECT_EQ(rewritten(rw, "/api/users?x=1"), "/users?x=1");
  EXPECT_EQ(rewritten(rw, "/API/users"), "/users");
  EXPECT_EQ(rewritten(rw, "/api"), "/");
  EXPECT_EQ(rewritten(rw, "/other"), "/other");
  config::Rewrite sfx;
  sfx.strip_suffix = ".html";
  EXPECT_EQ(rewritten(sfx, "/page.html"), "/page");
  config::Rewrite rep;
  rep.uri_substring.push_back({"/old/", "/new/", 0});
  EXPECT_EQ(rewritten(rep, "/old/a/old/b"), "/new/a/new/b");
  rep.uri_substring[0].limit = 1;
  EXPECT_EQ(rewritten(rep, "/old/a/old/b"), "/new/a/old/b");
  config::Rewrite re;
  // As in Caddy, placeholders are replaced first, so "${1}" loses "{1}" (an unknown
  // placeholder) and leaves a lone '$'; "$1x" is the (empty) group named "1x".
  re.path_regexp.push_back({"^/u/(\\d+)$", "/users/${1}/$1x"});
  EXPECT_EQ(rewritten(re, "/u/42"), "/users/$/");
  re.path_regexp[0].replace = "/users/$1";
  EXPECT_EQ(rewritten(re, "/u/42"), "/users/42");
}

TEST(Rewrite, LaterMatchersSeeTheRewrittenPath) {
  config::Rewrite rw;
  rw.strip_prefix = "/v1";
  std::vector<config::Route> routes;
  routes.push_back(rewrite_route(rw));
  routes.push_back(respond_route("users", 200, {path_matcher({"/users"})}));
  Harness h(std::move(routes));
  auto req = request("GET", "a.test", "/v1/users");
  EXPECT_EQ(h.run(req).body, "users");
  EXPECT_EQ(req.path, "/users");
}

config::HeaderOp op(config::HeaderOp::Kind k, std::string field, std::string value = "",
                    std::string search = "", bool regex = false) {
  config::HeaderOp o;
  o.kind = k;
  o.field = std::move(field);
  o.value = std::move(value);
  o.search = std::move(search);
  o.regex = regex;
  return o;
}

using K = config::HeaderOp::Kind;

TEST(HeaderOps, CaddyOrderAddSetDeleteReplace) {
  config::HeaderOps ops;
  // Written out of order on purpose: Caddy applies all adds, then sets, deletes, replaces.
  ops.ops.push_back(op(K::replace, "X-R", "new", "old"));
  ops.ops.push_back(op(K::remove, "X-Drop*"));
  ops.ops.push_back(op(K::set, "X-R", "old-value"));
  ops.ops.push_back(op(K::add, "X-A", "{http.request.method}"));
  ops.ops.push_back(op(K::add, "X-A", "{unknown.name}"));
  std::unique_ptr<HeaderOpsImpl> plain, dflt;
  Errors errors;
  compile_header_ops(ops, plain, dflt, errors);
  ASSERT_TRUE(errors.empty());
  ASSERT_TRUE(plain);
  EXPECT_FALSE(dflt);
  auto req = request("PATCH", "a.test", "/");
  RequestCtx ctx(req);
  http::HeaderMap h;
  h.add("X-Drop-Me", "1");
  h.add("x-drop", "2");
  h.add("Keep", "3");
  plain->apply(ctx, h);
  EXPECT_FALSE(h.has("X-Drop-Me"));
  EXPECT_FALSE(h.has("X-Drop"));
  EXPECT_EQ(h.joined("X-A"), "PATCH, {unknown.name}");  // header ops keep unknown placeholders
  EXPECT_EQ(h.joined("X-R"), "new-value");
  EXPECT_EQ(h.joined("Keep"), "3");
}

TEST(HeaderOps, RegexReplaceAndWildcardField) {
  config::HeaderOps ops;
  ops.ops.push_back(op(K::replace, "*", "$1-x", "^(\\w+)-secret$", true));
  std::unique_ptr<HeaderOpsImpl> plain, dflt;
  Errors errors;
  compile_header_ops(ops, plain, dflt, errors);
  ASSERT_TRUE(errors.empty());
  auto req = request("GET", "a", "/");
  RequestCtx ctx(req);
  http::HeaderMap h;
  h.add("A", "abc-secret");
  h.add("B", "plain");
  plain->apply(ctx, h);
  EXPECT_EQ(h.joined("A"), "abc-x");
  EXPECT_EQ(h.joined("B"), "plain");
  config::HeaderOps bad;
  bad.ops.push_back(op(K::replace, "A", "x", "(", true));
  bad.ops.back().loc = SourceLoc{"F", 9, 1};
  std::unique_ptr<HeaderOpsImpl> p2, d2;
  compile_header_ops(bad, p2, d2, errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].loc.line, 9);
}

TEST(HeaderOps, ResponseOrderImmediateThenHandlerThenDeferredInnermostFirst) {
  // header X-Imm a        (immediate)
  // header >X-Def first   (deferred, registered first)
  // header >X-Def second  (deferred, registered second: applied first, then overwritten)
  // header ?X-Dflt d      (default, only if absent)
  // respond "hi"
  auto headers_route = [](config::HeaderOps resp) {
    config::Route r;
    config::Headers h;
    h.response = std::move(resp);
    r.handle.emplace_back(std::move(h));
    return r;
  };
  config::HeaderOps imm;
  imm.ops.push_back(op(K::set, "X-Imm", "a"));
  imm.ops.push_back(op(K::set, "Content-Type", "text/html"));
  config::HeaderOps def1;
  def1.deferred = true;
  def1.ops.push_back(op(K::set, "X-Def", "first"));
  config::HeaderOps def2;
  def2.deferred = true;
  def2.ops.push_back(op(K::set, "X-Def", "second"));
  def2.ops.push_back(op(K::remove, "Server"));
  config::HeaderOps dflt;
  dflt.ops.push_back(op(K::set_default, "X-Dflt", "d"));
  dflt.ops.push_back(op(K::set_default, "X-Handler", "ignored"));
  std::vector<config::Route> routes;
  routes.push_back(headers_route(imm));
  routes.push_back(headers_route(def1));
  routes.push_back(headers_route(def2));
  routes.push_back(headers_route(dflt));
  config::Route resp = respond_route("hi");
  std::get<config::StaticResponse>(resp.handle[0]).headers = {{"X-Handler", "h"}};
  routes.push_back(resp);
  Harness h(std::move(routes));
  auto req = request("GET", "a.test", "/");
  RequestCtx ctx(req);
  Decision d = h.snap->dispatch(*h.snap->find_site(0, "a.test"), ctx);
  ASSERT_EQ(d.response_ops.size(), 4u);
  EXPECT_FALSE(d.response_ops[0]->deferred());
  http::HeaderMap out;
  out.add("Server", "hsp");
  build_response_headers(d, ctx, d.headers, out);
  EXPECT_EQ(out.joined("X-Imm"), "a");
  EXPECT_EQ(out.joined("X-Handler"), "h");
  EXPECT_EQ(out.joined("X-Def"), "first");  // outer deferred op runs last
  EXPECT_FALSE(out.has("Server"));
  // The `?` block requires all its fields absent: X-Handler is set, so nothing is defaulted.
  EXPECT_FALSE(out.has("X-Dflt"));
  // The immediate op set Content-Type, so no implicit type.
  EXPECT_EQ(out.joined("Content-Type"), "text/html");
}

TEST(HeaderOps, RequestHeadersAndHost) {
  config::Route r;
  config::Headers hd;
  hd.request.ops.push_back(op(K::set, "Host", "backend.internal:81"));
  hd.request.ops.push_back(op(K::add, "X-Via", "{http.request.host}"));
  hd.request.ops.push_back(op(K::remove, "Cookie"));
  r.handle.emplace_back(std::move(hd));
  Harness h({r, respond_route("{http.request.hostport}")});
  auto req = request("GET", "a.test", "/");
  req.headers.add("Host", "a.test");
  req.headers.add("Cookie", "x=1");
  Decision d = h.run(req);
  EXPECT_EQ(d.body, "backend.internal:81");
  EXPECT_EQ(req.authority, "backend.internal:81");
  EXPECT_EQ(req.host, "backend.internal");
  EXPECT_EQ(req.headers.joined("Host"), "backend.internal:81");
  EXPECT_EQ(req.headers.joined("X-Via"), "a.test");
  EXPECT_FALSE(req.headers.has("Cookie"));
}

TEST(Routes, GroupRunsOnlyFirstMatching) {
  std::vector<config::Route> routes;
  config::Route a = respond_route("a", 200, {path_matcher({"/a*"})});
  a.group = "g";
  config::Route any;
  config::Headers hd;
  hd.response.ops.push_back(op(K::set, "X-Second", "1"));
  any.handle.emplace_back(std::move(hd));
  any.group = "g";
  routes.push_back(any);  // matches everything and takes the group
  routes.push_back(a);    // same group: skipped
  routes.push_back(respond_route("end"));
  Harness h(std::move(routes));
  auto req = request("GET", "a.test", "/abc");
  Decision d = h.run(req);
  EXPECT_EQ(d.body, "end");
  EXPECT_EQ(d.response_ops.size(), 1u);
}

TEST(Routes, TerminalStopsEvenInsideSubroute) {
  config::Route inner;
  config::Headers hd;
  hd.response.ops.push_back(op(K::set, "X-In", "1"));
  inner.handle.emplace_back(std::move(hd));
  inner.terminal = true;
  config::Subroute sub;
  sub.routes.push_back(inner);
  config::Route outer;
  outer.handle.emplace_back(std::move(sub));
  Harness h({outer, respond_route("after")});
  auto req = request("GET", "a.test", "/");
  Decision d = h.run(req);
  EXPECT_EQ(d.body, "");
  EXPECT_EQ(d.status, 200);
}

TEST(Routes, SubrouteWithoutResponseContinuesOuterRoutes) {
  config::Subroute sub;
  sub.routes.push_back(respond_route("inner", 200, {path_matcher({"/in"})}));
  config::Route outer;
  outer.handle.emplace_back(std::move(sub));
  config::RequestBody rb;
  rb.max_size = 1024;
  config::Route body;
  body.handle.emplace_back(rb);
  Harness h({body, outer, respond_route("outer")});
  auto r1 = request("GET", "a.test", "/in");
  auto r2 = request("GET", "a.test", "/out");
  EXPECT_EQ(h.run(r1).body, "inner");
  Decision d2 = h.run(r2);
  EXPECT_EQ(d2.body, "outer");
  EXPECT_EQ(d2.max_request_body, 1024);
}

TEST(StaticResponse, RedirectAndJsonBody) {
  config::Route redir;
  config::StaticResponse s;
  s.status = 308;
  s.headers = {{"Location", "https://{http.request.host}{http.request.uri}{nope}"}};
  redir.handle.emplace_back(s);
  redir.match = {path_matcher({"/old*"})};
  config::Route json = respond_route(" {\"ok\": true} ");
  Harness h({redir, json});
  auto r1 = request("GET", "a.test", "/old?x=1");
  Decision d1 = h.run(r1);
  EXPECT_EQ(d1.status, 308);
  EXPECT_EQ(d1.headers.joined("Location"), "https://a.test/old?x=1");
  EXPECT_TRUE(d1.implicit_content_type.empty());
  auto r2 = request("GET", "a.test", "/");
  EXPECT_EQ(h.run(r2).implicit_content_type, "application/json");
}

}  // namespace
}  // namespace hsp::engine

namespace hsp::engine {
namespace {

TEST(HeaderOps, RequestOpsKeepHostFieldPosition) {
  config::Route r;
  config::Headers hd;
  config::HeaderOp add;
  add.kind = config::HeaderOp::Kind::add;
  add.field = "X-Added";
  add.value = "1";
  hd.request.ops.push_back(add);
  r.handle.emplace_back(std::move(hd));
  Harness h({r, respond_route("ok")});
  auto req = test::request("GET", "a.test", "/");
  req.headers.add("Host", "a.test");
  req.headers.add("Accept", "*/*");
  h.run(req);
  ASSERT_EQ(req.headers.size(), 3u);
  EXPECT_EQ(req.headers.fields()[0].first, "Host");
  EXPECT_EQ(req.headers.fields()[1].first, "Accept");
  EXPECT_EQ(req.headers.fields()[2].first, "X-Added");
}

}  // namespace
}  // namespace hsp::engine
