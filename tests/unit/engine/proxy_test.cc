#include <gtest/gtest.h>

#include <map>
#include <set>

#include "engine/compiled.h"
#include "test_util.h"

namespace hsp::engine {
namespace {

using namespace test;

struct ProxyHarness {
  UpstreamRegistry reg;
  config::ReverseProxy cfg;
  config::GlobalOptions global;
  std::unique_ptr<ProxyHandlerImpl> p;

  explicit ProxyHarness(config::LbPolicy policy, int n = 3) {
    for (int i = 0; i < n; ++i) {
      cfg.upstreams.push_back(config::Upstream{"127.0.0.1:" + std::to_string(9001 + i), {}});
    }
    cfg.lb_policy = policy;
  }
  void compile() {
    Errors errors;
    p = ProxyHandlerImpl::compile(cfg, global, reg, errors);
    ASSERT_TRUE(errors.empty()) << errors[0].str();
  }
};

TEST(Proxy, FirstSkipsUnhealthyAndExcluded) {
  ProxyHarness h(config::LbPolicy::first);
  h.compile();
  auto req = request("GET", "a", "/");
  RequestCtx ctx(req);
  auto& ups = h.p->upstreams();
  EXPECT_EQ(h.p->select(ctx, {}), ups[0].get());
  ups[0]->set_healthy(false);
  EXPECT_EQ(h.p->select(ctx, {}), ups[1].get());
  EXPECT_EQ(h.p->select(ctx, {ups[1].get()}), ups[2].get());
  ups[0]->set_healthy(true);
}

TEST(Proxy, PortOnlyUpstreamDialsTheLocalMachine) {
  // Caddy keeps ":9002" as written and Go dials the local system for an empty host.
  ProxyHarness h(config::LbPolicy::first, 0);
  h.cfg.upstreams.push_back(config::Upstream{":9002", {}});
  h.compile();
  ASSERT_EQ(h.p->upstreams().size(), 1u);
  EXPECT_EQ(h.p->upstreams()[0]->host(), "localhost");
  EXPECT_EQ(h.p->upstreams()[0]->port(), 9002);
}

TEST(Proxy, HealthBodyIsCompiledOnceAndBadPatternsFailTheLoad) {
  ProxyHarness h(config::LbPolicy::first, 1);
  h.cfg.active.uri = "/health";
  h.cfg.active.expect_body = "(?i)^ok\\b";
  h.compile();
  EXPECT_TRUE(h.p->health_body_ok("OK all good"));
  EXPECT_FALSE(h.p->health_body_ok("not ok"));

  ProxyHarness bad(config::LbPolicy::first, 1);
  bad.cfg.active.expect_body = "(unclosed";
  Errors errors;
  ProxyHandlerImpl::compile(bad.cfg, bad.global, bad.reg, errors);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].message.find("bad health_body regexp '(unclosed'"), std::string::npos);
}

TEST(Proxy, RandomCoversAllAvailable) {
  ProxyHarness h(config::LbPolicy::random);
  h.compile();
  auto req = request("GET", "a", "/");
  RequestCtx ctx(req);
  std::set<const UpstreamHost*> seen;
  for (int i = 0; i < 300; ++i) seen.insert(h.p->select(ctx, {}));
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen.count(nullptr), 0u);
}

TEST(Proxy, LeastConnPrefersFewestInFlight) {
  ProxyHarness h(config::LbPolicy::least_conn);
  h.compile();
  auto& ups = h.p->upstreams();
  ups[0]->begin_request();
  ups[2]->begin_request();
  auto req = request("GET", "a", "/");
  RequestCtx ctx(req);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(h.p->select(ctx, {}), ups[1].get());
  ups[0]->end_request();
  ups[2]->end_request();
}

TEST(Proxy, HashPoliciesAreStickyAndSpread) {
  for (auto policy : {config::LbPolicy::ip_hash, config::LbPolicy::uri_hash,
                      config::LbPolicy::header, config::LbPolicy::client_ip_hash}) {
    ProxyHarness h(policy);
    h.cfg.lb_key = "X-User";
    h.compile();
    std::set<const UpstreamHost*> spread;
    for (int i = 0; i < 60; ++i) {
      auto req = request("GET", "a", "/item/" + std::to_string(i));
      req.remote_ip = "10.0.0." + std::to_string(i);
      req.client_ip = req.remote_ip;
      req.headers.add("X-User", "u" + std::to_string(i));
      RequestCtx ctx(req);
      const UpstreamHost* first = h.p->select(ctx, {});
      EXPECT_EQ(h.p->select(ctx, {}), first);
      spread.insert(first);
    }
    EXPECT_EQ(spread.size(), 3u) << static_cast<int>(policy);
  }
}

TEST(Proxy, HeaderPolicyFallsBackToRandomWithoutTheHeader) {
  ProxyHarness h(config::LbPolicy::header);
  h.cfg.lb_key = "X-User";
  h.compile();
  auto req = request("GET", "a", "/");
  RequestCtx ctx(req);
  std::set<const UpstreamHost*> seen;
  for (int i = 0; i < 200; ++i) seen.insert(h.p->select(ctx, {}));
  EXPECT_EQ(seen.size(), 3u);
}

TEST(Proxy, CookiePolicySticksAndSetsHmacCookie) {
  ProxyHarness h(config::LbPolicy::cookie);
  h.cfg.lb_key = "srv";
  h.cfg.lb_secret = "s3cret";
  h.compile();
  auto req = request("GET", "a", "/");
  RequestCtx ctx(req);
  UpstreamHost* chosen = h.p->select(ctx, {});
  ASSERT_NE(chosen, nullptr);
  std::string cookie = h.p->sticky_cookie(ctx, *chosen);
  ASSERT_EQ(cookie.rfind("srv=", 0), 0u);
  ASSERT_NE(cookie.find("; Path=/"), std::string::npos);
  std::string value = cookie.substr(4, cookie.find(';') - 4);
  EXPECT_EQ(value.size(), 64u);  // hex SHA-256

  auto again = request("GET", "a", "/");
  again.headers.add("Cookie", "other=1; srv=" + value);
  RequestCtx ctx2(again);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(h.p->select(ctx2, {}), chosen);
  EXPECT_EQ(h.p->sticky_cookie(ctx2, *chosen), "");
  // The sticky upstream going down moves the client and a new cookie is due.
  chosen->set_healthy(false);
  UpstreamHost* moved = h.p->select(ctx2, {});
  ASSERT_NE(moved, nullptr);
  EXPECT_NE(moved, chosen);
  EXPECT_NE(h.p->sticky_cookie(ctx2, *moved), "");
  chosen->set_healthy(true);
}

TEST(Proxy, CookieValueIsHmacOfDial) {
  // HMAC-SHA256("secret", "127.0.0.1:9001"), computed with: printf '127.0.0.1:9001' |
  // openssl dgst -sha256 -hmac secret
  ProxyHarness h(config::LbPolicy::cookie, 1);
  h.cfg.lb_secret = "secret";
  h.compile();
  auto req = request("GET", "a", "/");
  RequestCtx ctx(req);
  UpstreamHost* u = h.p->select(ctx, {});
  ASSERT_NE(u, nullptr);
  EXPECT_EQ(h.p->sticky_cookie(ctx, *u),
            "lb=fe266272438f1497c2df99dbf2d8b21d9c24110a2b79705d3f424504369e190a; Path=/");
}

TEST(Proxy, PassiveHealthMaxFailsAndExpiry) {
  ProxyHarness h(config::LbPolicy::first, 2);
  h.cfg.passive.fail_duration = std::chrono::seconds(10);
  h.cfg.passive.max_fails = 2;
  h.compile();
  auto& ups = h.p->upstreams();
  auto now = Clock::now();
  ups[0]->count_failure(now, std::chrono::seconds(10));
  EXPECT_EQ(ups[0]->fails(now), 1);
  EXPECT_TRUE(ups[0]->available(now, 2, 0));
  ups[0]->count_failure(now, std::chrono::seconds(10));
  EXPECT_FALSE(ups[0]->available(now, 2, 0));
  auto req = request("GET", "a", "/");
  RequestCtx ctx(req);
  EXPECT_EQ(h.p->select(ctx, {}), ups[1].get());
  EXPECT_EQ(ups[0]->fails(now + std::chrono::seconds(11)), 0);
  EXPECT_TRUE(ups[0]->available(now + std::chrono::seconds(11), 2, 0));
}

TEST(Proxy, UnhealthyRequestCountLimitsInFlight) {
  ProxyHarness h(config::LbPolicy::first, 2);
  h.cfg.passive.unhealthy_request_count = 1;
  h.compile();
  auto& ups = h.p->upstreams();
  auto req = request("GET", "a", "/");
  RequestCtx ctx(req);
  ups[0]->begin_request();
  EXPECT_EQ(h.p->select(ctx, {}), ups[1].get());
  ups[0]->end_request();
  EXPECT_EQ(h.p->select(ctx, {}), ups[0].get());
}

TEST(Proxy, HeaderUpWithUpstreamPlaceholders) {
  ProxyHarness h(config::LbPolicy::first, 1);
  config::HeaderOp host;
  host.kind = config::HeaderOp::Kind::set;
  host.field = "Host";
  host.value = "{http.reverse_proxy.upstream.hostport}";
  config::HeaderOp del;
  del.kind = config::HeaderOp::Kind::remove;
  del.field = "X-Internal";
  h.cfg.header_up.ops = {host, del};
  config::HeaderOp down;
  down.kind = config::HeaderOp::Kind::set;
  down.field = "X-Served-By";
  down.value = "{upstream_hostport}";
  h.cfg.header_down.ops = {down};
  h.compile();
  auto req = request("GET", "a.test", "/");
  RequestCtx ctx(req);
  ctx.upstream = h.p->select(ctx, {});
  http::HeaderMap out;
  out.add("Host", "a.test");
  out.add("X-Internal", "1");
  h.p->apply_header_up(ctx, out);
  EXPECT_EQ(out.joined("Host"), "127.0.0.1:9001");
  EXPECT_FALSE(out.has("X-Internal"));
  http::HeaderMap resp;
  h.p->apply_header_down(ctx, resp);
  EXPECT_EQ(resp.joined("X-Served-By"), "127.0.0.1:9001");
}

TEST(Proxy, TrustedPeerUsesHandlerThenGlobalRanges) {
  ProxyHarness h(config::LbPolicy::first, 1);
  h.global.trusted_proxies = {"10.0.0.0/8"};
  h.compile();
  auto req = request("GET", "a", "/");
  req.remote_ip = "10.1.2.3";
  EXPECT_TRUE(h.p->peer_trusted(req));
  req.remote_ip = "192.0.2.1";
  EXPECT_FALSE(h.p->peer_trusted(req));
  ProxyHarness own(config::LbPolicy::first, 1);
  own.global.trusted_proxies = {"10.0.0.0/8"};
  own.cfg.trusted_proxies = {"192.0.2.0/24"};
  own.compile();
  EXPECT_TRUE(own.p->peer_trusted(req));
  req.remote_ip = "10.1.2.3";
  EXPECT_FALSE(own.p->peer_trusted(req));
}

TEST(Forwarded, UntrustedPeerReplacesClientValues) {
  auto req = request("GET", "a.test:8080", "/");
  req.remote_ip = "198.51.100.4";
  http::HeaderMap out;
  out.add("X-Forwarded-For", "1.2.3.4");
  out.add("X-Forwarded-Proto", "https");
  out.add("X-Forwarded-Host", "evil.test");
  set_forwarded_headers(req, false, out);
  EXPECT_EQ(out.joined("X-Forwarded-For"), "198.51.100.4");
  EXPECT_EQ(out.joined("X-Forwarded-Proto"), "http");
  EXPECT_EQ(out.joined("X-Forwarded-Host"), "a.test:8080");
}

TEST(Forwarded, TrustedPeerAppendsAndKeeps) {
  auto req = request("GET", "a.test", "/");
  req.remote_ip = "10.0.0.2";
  http::HeaderMap out;
  out.add("X-Forwarded-For", "1.2.3.4");
  out.add("X-Forwarded-For", "5.6.7.8");
  out.add("X-Forwarded-Proto", "https");
  out.add("X-Forwarded-Host", "public.test");
  set_forwarded_headers(req, true, out);
  EXPECT_EQ(out.joined("X-Forwarded-For"), "1.2.3.4, 5.6.7.8, 10.0.0.2");
  EXPECT_EQ(out.joined("X-Forwarded-Proto"), "https");
  EXPECT_EQ(out.joined("X-Forwarded-Host"), "public.test");
  // Trusted but the client sent nothing: our own values.
  http::HeaderMap fresh;
  req.tls = true;
  set_forwarded_headers(req, true, fresh);
  EXPECT_EQ(fresh.joined("X-Forwarded-For"), "10.0.0.2");
  EXPECT_EQ(fresh.joined("X-Forwarded-Proto"), "https");
  EXPECT_EQ(fresh.joined("X-Forwarded-Host"), "a.test");
}

TEST(IpRanges, ParseAndContain) {
  EXPECT_TRUE(ip_in_ranges("10.1.2.3", {"10.0.0.0/8"}));
  EXPECT_FALSE(ip_in_ranges("11.1.2.3", {"10.0.0.0/8"}));
  EXPECT_TRUE(ip_in_ranges("127.0.0.1", {"127.0.0.1"}));
  EXPECT_TRUE(ip_in_ranges("fd00::1", {"fd00::/8"}));
  EXPECT_FALSE(ip_in_ranges("fe00::1", {"fd00::/8"}));
  EXPECT_TRUE(ip_in_ranges("[::1]", {"::1/128"}));
  EXPECT_TRUE(ip_in_ranges("fe80::1%eth0", {"fe80::/10"}));
  EXPECT_FALSE(ip_in_ranges("10.1.2.3", {"::/0"}));  // families never mix
  EXPECT_FALSE(ip_in_ranges("not-an-ip", {"0.0.0.0/0"}));
  EXPECT_TRUE(ip_in_ranges("1.2.3.4", {"bad", "0.0.0.0/0"}));
  IpRange r;
  std::string why;
  EXPECT_FALSE(parse_range("10.0.0.0/33", r, &why));
  EXPECT_FALSE(parse_range("010.0.0.1", r, &why));
  EXPECT_TRUE(parse_range("172.16.0.0/12", r, &why));
  IpAddr a;
  ASSERT_TRUE(parse_ip("172.31.255.255", a));
  EXPECT_TRUE(r.contains(a));
  ASSERT_TRUE(parse_ip("172.32.0.0", a));
  EXPECT_FALSE(r.contains(a));
}

}  // namespace
}  // namespace hsp::engine
