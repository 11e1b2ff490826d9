#include <gtest/gtest.h>

#include "engine/compiled.h"
#include "engine/engine.h"
#include "engine/host_table.h"
#include "test_util.h"

namespace hsp::engine {
namespace {

using namespace test;

struct Built {
  UpstreamRegistry registry;
  SnapshotPtr snap;
};

void build(Built& b, const config::Config& cfg) {
  auto r = Snapshot::build(cfg, b.registry, 1);
  ASSERT_TRUE(r.ok()) << (r.ok() ? "" : r.errors()[0].str());
  b.snap = r.value();
}

Decision route(const Snapshot& snap, http::Request& req, size_t server = 0) {
  const Site* site = snap.find_site(server, req.host);
  EXPECT_NE(site, nullptr) << req.host;
  RequestCtx ctx(req);
  if (site == nullptr) return Decision{};
  return snap.dispatch(*site, ctx);
}

config::Config three_sites() {
  config::Config cfg;
  cfg.sites.push_back(site({addr("example.com")}, {respond_route("exact")}));
  cfg.sites.push_back(site({addr("*.example.com")}, {respond_route("wild")}));
  cfg.sites.push_back(site({addr("")}, {respond_route("catch-all")}));
  single_server(cfg);
  return cfg;
}

TEST(Snapshot, ExactThenWildcardThenCatchAll) {
  Built b;
  build(b, three_sites());
  auto body = [&](std::string host) {
    auto req = request("GET", host, "/");
    return route(*b.snap, req).body;
  };
  EXPECT_EQ(body("example.com"), "exact");
  EXPECT_EQ(body("EXAMPLE.com."), "exact");
  EXPECT_EQ(body("www.example.com"), "wild");
  EXPECT_EQ(body("WWW.Example.Com"), "wild");
  // "*.example.com" covers exactly one label, as in Caddy.
  EXPECT_EQ(body("a.b.example.com"), "catch-all");
  EXPECT_EQ(body("other.org"), "catch-all");
  EXPECT_EQ(body(""), "catch-all");
}

TEST(Snapshot, NoSiteForHostReturnsNull) {
  config::Config cfg;
  cfg.sites.push_back(site({addr("a.test")}, {respond_route("a")}));
  single_server(cfg);
  Built b;
  build(b, cfg);
  EXPECT_NE(b.snap->find_site(0, "a.test"), nullptr);
  EXPECT_EQ(b.snap->find_site(0, "b.test"), nullptr);
  EXPECT_EQ(b.snap->find_site(7, "a.test"), nullptr);
}

TEST(Snapshot, SitesAreSeparatedByServerPort) {
  config::Config cfg;
  cfg.sites.push_back(site({addr("a.test", 8080)}, {respond_route("8080")}));
  cfg.sites.push_back(site({addr("a.test", 9090)}, {respond_route("9090")}));
  config::Server s1, s2;
  s1.port = 8080;
  s1.sites = {0};
  s2.port = 9090;
  s2.sites = {1};
  cfg.servers = {s1, s2};
  Built b;
  build(b, cfg);
  auto r1 = request("GET", "a.test", "/");
  auto r2 = request("GET", "a.test", "/");
  EXPECT_EQ(route(*b.snap, r1, 0).body, "8080");
  EXPECT_EQ(route(*b.snap, r2, 1).body, "9090");
}

TEST(Snapshot, AddressPathFallsThroughToNextSite) {
  config::Config cfg;
  cfg.sites.push_back(site({addr("a.test", 80, "/api/*")}, {respond_route("api")}));
  cfg.sites.push_back(site({addr("")}, {respond_route("rest")}));
  single_server(cfg);
  Built b;
  build(b, cfg);
  auto r1 = request("GET", "a.test", "/api/x");
  auto r2 = request("GET", "a.test", "/other");
  EXPECT_EQ(route(*b.snap, r1).body, "api");
  EXPECT_EQ(route(*b.snap, r2).body, "rest");
}

TEST(Snapshot, RoutesRunInOrderAndFirstResponseWins) {
  config::Config cfg;
  std::vector<config::Route> routes;
  routes.push_back(respond_route("api", 201, {path_matcher({"/api/*"})}));
  routes.push_back(respond_route("fallback", 404));
  cfg.sites.push_back(site({addr("a.test")}, std::move(routes)));
  single_server(cfg);
  Built b;
  build(b, cfg);
  auto r1 = request("GET", "a.test", "/api/users");
  Decision d1 = route(*b.snap, r1);
  EXPECT_EQ(d1.kind, Decision::Kind::respond);
  EXPECT_EQ(d1.status, 201);
  EXPECT_EQ(d1.body, "api");
  EXPECT_EQ(d1.implicit_content_type, "text/plain; charset=utf-8");
  auto r2 = request("GET", "a.test", "/");
  Decision d2 = route(*b.snap, r2);
  EXPECT_EQ(d2.status, 404);
}

TEST(Snapshot, NothingRespondsGivesEmpty200) {
  config::Config cfg;
  cfg.sites.push_back(site({addr("a.test")}, {respond_route("x", 200, {path_matcher({"/x"})})}));
  single_server(cfg);
  Built b;
  build(b, cfg);
  auto req = request("GET", "a.test", "/y");
  Decision d = route(*b.snap, req);
  EXPECT_EQ(d.kind, Decision::Kind::respond);
  EXPECT_EQ(d.status, 200);
  EXPECT_EQ(d.body, "");
}

TEST(Snapshot, ProxyDecisionAndSelection) {
  config::Config cfg;
  cfg.sites.push_back(site({addr("a.test")}, {proxy_route({"127.0.0.1:9001", "127.0.0.1:9002"})}));
  single_server(cfg);
  Built b;
  build(b, cfg);
  auto req = request("GET", "a.test", "/");
  RequestCtx ctx(req);
  const Site* s = b.snap->find_site(0, "a.test");
  ASSERT_NE(s, nullptr);
  Decision d = b.snap->dispatch(*s, ctx);
  ASSERT_EQ(d.kind, Decision::Kind::proxy);
  ASSERT_NE(d.proxy, nullptr);
  ASSERT_EQ(d.proxy->upstreams().size(), 2u);
  EXPECT_EQ(d.proxy->upstreams()[0]->dial(), "127.0.0.1:9001");
  EXPECT_EQ(d.proxy->upstreams()[0]->host(), "127.0.0.1");
  EXPECT_EQ(d.proxy->upstreams()[0]->port(), 9001);
  // round_robin alternates, starting at index 1 as Caddy's counter does.
  UpstreamHost* a = d.proxy->select(ctx, {});
  UpstreamHost* c = d.proxy->select(ctx, {});
  ASSERT_NE(a, nullptr);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(a->dial(), "127.0.0.1:9002");
  EXPECT_EQ(c->dial(), "127.0.0.1:9001");
  // Excluding one leaves only the other.
  EXPECT_EQ(d.proxy->select(ctx, {a}), c);
  EXPECT_EQ(d.proxy->select(ctx, {a, c}), nullptr);
  EXPECT_EQ(b.snap->proxies().size(), 1u);
}

TEST(Snapshot, BuildErrorsCarrySourceLocations) {
  config::Config cfg;
  config::MatcherSet bad;
  bad.loc = SourceLoc{"Caddyfile", 3, 5};
  bad.name = "@bad";
  bad.path_regexp.push_back(config::PathRegexp{"", "(unclosed"});
  bad.remote_ip.push_back("10.0.0.0/99");
  config::Route r = respond_route("x", 200, {bad});
  config::Route p = proxy_route({"no-port-here:abc"});
  std::get<config::ReverseProxy>(p.handle[0]).upstreams[0].loc = SourceLoc{"Caddyfile", 7, 2};
  cfg.sites.push_back(site({addr("a.test")}, {r, p}));
  single_server(cfg);
  UpstreamRegistry reg;
  auto res = Snapshot::build(cfg, reg, 1);
  ASSERT_FALSE(res.ok());
  ASSERT_EQ(res.errors().size(), 3u);
  EXPECT_EQ(res.errors()[0].loc.line, 3);
  EXPECT_NE(res.errors()[0].str().find("Caddyfile:3:5"), std::string::npos);
  EXPECT_NE(res.errors()[0].message.find("remote_ip"), std::string::npos);
  EXPECT_NE(res.errors()[1].message.find("path_regexp"), std::string::npos);
  EXPECT_EQ(res.errors()[2].loc.line, 7);
}

TEST(Snapshot, UpstreamStateIsSharedAcrossSnapshotsAndDiesWithThem) {
  config::Config cfg;
  cfg.sites.push_back(site({addr("a.test")}, {proxy_route({"127.0.0.1:9001"})}));
  single_server(cfg);
  UpstreamRegistry reg;
  auto s1 = Snapshot::build(cfg, reg, 1);
  auto s2 = Snapshot::build(cfg, reg, 2);
  ASSERT_TRUE(s1.ok() && s2.ok());
  auto h1 = s1.value()->proxies()[0]->upstreams()[0];
  auto h2 = s2.value()->proxies()[0]->upstreams()[0];
  EXPECT_EQ(h1.get(), h2.get());
  EXPECT_EQ(reg.live().size(), 1u);
  std::weak_ptr<UpstreamHost> weak = h1;
  h1.reset();
  h2.reset();
  s1.value().reset();
  s2.value().reset();
  EXPECT_TRUE(weak.expired());
  EXPECT_EQ(reg.live().size(), 0u);
}

TEST(Snapshot, ManyHostsAllResolve) {
  config::Config cfg;
  for (int i = 0; i < 5000; ++i) {
    cfg.sites.push_back(site({addr("host" + std::to_string(i) + ".example.net")},
                             {respond_route(std::to_string(i))}));
  }
  single_server(cfg);
  Built b;
  build(b, cfg);
  for (int i = 0; i < 5000; i += 7) {
    auto req = request("GET", "HOST" + std::to_string(i) + ".example.net", "/");
    EXPECT_EQ(route(*b.snap, req).body, std::to_string(i));
  }
  EXPECT_EQ(b.snap->find_site(0, "host5000.example.net"), nullptr);
}

TEST(Snapshot, ResolveClientIpTrustsOnlyConfiguredPeers) {
  config::Config cfg = three_sites();
  cfg.global.trusted_proxies = {"10.0.0.0/8"};
  Built b;
  build(b, cfg);
  auto req = request("GET", "a.test", "/");
  req.headers.add("X-Forwarded-For", "garbage, 203.0.113.9, 10.1.1.1");
  req.remote_ip = "192.0.2.1";
  b.snap->resolve_client_ip(req);
  EXPECT_EQ(req.client_ip, "192.0.2.1");
  req.remote_ip = "10.2.3.4";
  b.snap->resolve_client_ip(req);
  EXPECT_EQ(req.client_ip, "203.0.113.9");
  req.headers.set("X-Forwarded-For", "[2001:db8::5]:443, 10.1.1.1");
  b.snap->resolve_client_ip(req);
  EXPECT_EQ(req.client_ip, "2001:db8::5");
  req.headers.remove("X-Forwarded-For");
  b.snap->resolve_client_ip(req);
  EXPECT_EQ(req.client_ip, "10.2.3.4");
}

}  // namespace
}  // namespace hsp::engine

namespace hsp::engine {
namespace {

TEST(HostTable, HashOfLowerNameMatchesLowerAndHash) {
  for (std::string name : {"", "a", "example.com", "a-very-long-host-name.with.many.labels.example",
                           "xn--bcher-kva.example"}) {
    char buf[kMaxHostLen + 8];
    std::string upper = name;
    for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    uint64_t h = lower_and_hash(upper.data(), upper.size(), buf);
    EXPECT_EQ(std::string(buf, name.size()), name);
    EXPECT_EQ(h, hash_host(name)) << name;
  }
}

TEST(HostTable, LongKeysUseTheArena) {
  HostTable t;
  std::string long_name(120, 'a');
  long_name += ".example.com";
  Site a, b;
  t.insert(long_name, &a);
  t.insert("short.test", &b);
  t.insert("short.test", &a);  // duplicate: first wins
  t.finish();
  EXPECT_EQ(t.find(long_name), &a);
  EXPECT_EQ(t.find("short.test"), &b);
  EXPECT_EQ(t.find(long_name.substr(1)), nullptr);
  EXPECT_EQ(t.size(), 2u);
}

}  // namespace
}  // namespace hsp::engine
