// compile(): the typed Config that the engine consumes. The golden tests pin the JSON; these
// pin the fields the engine reads, and one test builds its AST by hand so that the compiler
// is checked independently of the parser.
#include <gtest/gtest.h>

#include "config/compile.h"
#include "load_util.h"

namespace hsp::config {
namespace {

using namespace std::chrono_literals;

using testing::errors;
using testing::load;

caddyfile::Token tok(const std::string& text, int line, int col) {
  caddyfile::Token t;
  t.text = text;
  t.loc = SourceLoc{"Caddyfile", line, col};
  return t;
}

TEST(Compile, HandBuiltAst) {
  // :8080 {
  //   reverse_proxy /api/* 127.0.0.1:9000
  //   respond "hi"
  // }
  caddyfile::File f;
  caddyfile::ServerBlock sb;
  sb.keys.push_back(tok(":8080", 1, 1));
  sb.loc = {"Caddyfile", 1, 1};
  caddyfile::Directive rp;
  rp.name = tok("reverse_proxy", 2, 3);
  rp.args = {tok("/api/*", 2, 17), tok("127.0.0.1:9000", 2, 24)};
  caddyfile::Directive resp;
  resp.name = tok("respond", 3, 3);
  resp.args = {tok("hi", 3, 11)};
  sb.directives = {rp, resp};
  f.blocks.push_back(sb);

  auto r = compile(f);
  ASSERT_TRUE(r.ok()) << r.errors()[0].str();
  const Config& c = r.value();
  ASSERT_EQ(c.servers.size(), 1u);
  EXPECT_EQ(c.servers[0].port, 8080);
  EXPECT_EQ(c.servers[0].bind_host, "");
  ASSERT_EQ(c.sites.size(), 1u);
  const auto& routes = c.sites[0].routes;
  ASSERT_EQ(routes.size(), 2u);
  // Caddy's order puts respond before reverse_proxy.
  EXPECT_EQ(routes[0].directive, "respond");
  EXPECT_TRUE(routes[0].match.empty());
  EXPECT_EQ(std::get<StaticResponse>(routes[0].handle[0]).body, "hi");
  EXPECT_EQ(routes[1].directive, "reverse_proxy");
  ASSERT_EQ(routes[1].match.size(), 1u);
  EXPECT_EQ(routes[1].match[0].path, std::vector<std::string>{"/api/*"});
  const auto& proxy = std::get<ReverseProxy>(routes[1].handle[0]);
  ASSERT_EQ(proxy.upstreams.size(), 1u);
  EXPECT_EQ(proxy.upstreams[0].dial, "127.0.0.1:9000");
  EXPECT_EQ(proxy.upstreams[0].loc.str(), "Caddyfile:2:24");
}

TEST(Compile, UnknownDirectiveInHandBuiltAst) {
  caddyfile::File f;
  caddyfile::ServerBlock sb;
  sb.keys.push_back(tok(":8080", 1, 1));
  caddyfile::Directive d;
  d.name = tok("file_server", 5, 3);
  sb.directives = {d};
  f.blocks.push_back(sb);
  auto r = compile(f);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.errors()[0].str(),
            "Caddyfile:5:3: directive 'file_server' is not supported yet by hsp-gateway");
}

TEST(Compile, ServersPerSocketAndSiteOrder) {
  Config c = load(R"(
http://*.example.com {
	respond "wild"
}
:80 {
	respond "any"
}
http://a.example.com {
	respond "a"
}
:8080 {
	bind 127.0.0.1 [::1]
	respond "b"
}
)");
  ASSERT_EQ(c.servers.size(), 3u);
  EXPECT_EQ(c.servers[0].port, 80);
  EXPECT_EQ(c.servers[0].sites, (std::vector<size_t>{2, 0, 1}));  // exact, wildcard, any
  EXPECT_EQ(c.servers[1].port, 8080);
  EXPECT_EQ(c.servers[1].bind_host, "127.0.0.1");
  EXPECT_EQ(c.servers[2].bind_host, "::1");
  EXPECT_EQ(c.sites[3].bind, (std::vector<std::string>{"127.0.0.1", "::1"}));
  EXPECT_EQ(c.sites[2].addresses[0].host, "a.example.com");
  EXPECT_EQ(c.sites[2].addresses[0].scheme, "http");
  EXPECT_EQ(c.sites[2].addresses[0].port, 0);
}

TEST(Compile, HttpPortOptionMovesHttpSites) {
  Config c = load(R"({
	http_port 8081
}
http://example.com {
	respond "x"
}
example.org:8081 {
	respond "y"
}
)");
  ASSERT_EQ(c.servers.size(), 1u);
  EXPECT_EQ(c.servers[0].port, 8081);
  EXPECT_EQ(c.servers[0].sites.size(), 2u);
  EXPECT_EQ(c.global.http_port, 8081);
}

// HTTPS sites load now (auto_https_test.cc covers the model); the engine refuses them until
// the data plane has a TLS listener (tests/unit/engine/tls_gate_test.cc).
TEST(Compile, HttpsSitesLoad) {
  EXPECT_TRUE(errors("example.com {\n\trespond hi\n}\n").empty());
  EXPECT_TRUE(errors("https://x.test {\n}\n").empty());
  EXPECT_TRUE(errors("x.test:8443 {\n}\n").empty());
  EXPECT_TRUE(errors("x.test:80 {\n}\n").empty());
  EXPECT_TRUE(errors(":9999 {\n}\n").empty());
}

TEST(Compile, HandleGroupsAndHandlePath) {
  Config c = load(R"(:8080 {
	handle /api/* {
		reverse_proxy 127.0.0.1:9000
	}
	handle_path /static/* {
		respond "s"
	}
	handle {
		respond "fallback"
	}
})");
  const auto& r = c.sites[0].routes;
  ASSERT_EQ(r.size(), 3u);
  // All three share one group; the longest path comes first, the matcher-less one last.
  EXPECT_FALSE(r[0].group.empty());
  EXPECT_EQ(r[0].group, r[1].group);
  EXPECT_EQ(r[1].group, r[2].group);
  EXPECT_EQ(r[0].match[0].path[0], "/static/*");
  EXPECT_EQ(r[1].match[0].path[0], "/api/*");
  EXPECT_TRUE(r[2].match.empty());
  const auto& sub = std::get<Subroute>(r[0].handle[0]);
  ASSERT_EQ(sub.routes.size(), 2u);
  EXPECT_EQ(std::get<Rewrite>(sub.routes[0].handle[0]).strip_prefix, "/static");
}

TEST(Compile, RouteKeepsWrittenOrder) {
  Config c = load(R"(:8080 {
	route {
		respond /x "x"
		header X-A 1
		rewrite * /y
	}
})");
  const auto& sub = std::get<Subroute>(c.sites[0].routes[0].handle[0]);
  ASSERT_EQ(sub.routes.size(), 3u);
  EXPECT_EQ(sub.routes[0].directive, "respond");
  EXPECT_EQ(sub.routes[1].directive, "header");
  EXPECT_EQ(sub.routes[2].directive, "rewrite");
  EXPECT_TRUE(sub.routes[2].group.empty());  // route does not group rewrites
}

TEST(Compile, HeaderOpsInCaddyApplyOrder) {
  Config c = load(R"(:8080 {
	header {
		-Server
		X-Set 1
		+X-Add 2
		X-Repl "^a" "b"
		?X-Def 3
	}
})");
  const auto& routes = c.sites[0].routes;
  ASSERT_EQ(routes.size(), 1u);  // both handlers merged into one route
  ASSERT_EQ(routes[0].handle.size(), 2u);
  const auto& h = std::get<Headers>(routes[0].handle[0]).response;
  EXPECT_TRUE(h.deferred);  // a delete defers the whole handler, as in Caddy
  ASSERT_EQ(h.ops.size(), 4u);
  EXPECT_EQ(h.ops[0].kind, HeaderOp::Kind::add);
  EXPECT_EQ(h.ops[1].kind, HeaderOp::Kind::set);
  EXPECT_EQ(h.ops[2].kind, HeaderOp::Kind::remove);
  EXPECT_EQ(h.ops[2].field, "Server");
  EXPECT_EQ(h.ops[3].kind, HeaderOp::Kind::replace);
  EXPECT_TRUE(h.ops[3].regex);
  EXPECT_EQ(h.ops[3].search, "^a");
  EXPECT_EQ(h.ops[3].value, "b");
  const auto& d = std::get<Headers>(routes[0].handle[1]).response;
  ASSERT_EQ(d.ops.size(), 1u);
  EXPECT_EQ(d.ops[0].kind, HeaderOp::Kind::set_default);
  EXPECT_EQ(d.ops[0].field, "X-Def");
}

TEST(Compile, ReverseProxyFields) {
  Config c = load(R"(:8080 {
	reverse_proxy localhost:9000 {
		lb_policy cookie sid secret
		lb_try_duration 2s
		header_up -X-Forwarded-*
		flush_interval -1
		unhealthy_status 5xx 429
		health_uri /health
		health_status 2xx
		transport http {
			keepalive off
			dial_timeout 1s
		}
	}
})");
  const auto& rp = std::get<ReverseProxy>(c.sites[0].routes[0].handle[0]);
  EXPECT_EQ(rp.lb_policy, LbPolicy::cookie);
  EXPECT_EQ(rp.lb_key, "sid");
  EXPECT_EQ(rp.lb_secret, "secret");
  EXPECT_EQ(rp.lb_try_duration, 2s);
  ASSERT_EQ(rp.header_up.ops.size(), 1u);
  EXPECT_EQ(rp.header_up.ops[0].field, "X-Forwarded-*");
  ASSERT_TRUE(rp.flush_interval.has_value());
  EXPECT_LT(rp.flush_interval->count(), 0);
  EXPECT_EQ(rp.passive.unhealthy_status, (std::vector<int>{5, 429}));
  EXPECT_EQ(rp.active.uri, "/health");
  EXPECT_EQ(rp.active.expect_status, 2);
  EXPECT_FALSE(rp.transport.keepalive);
  EXPECT_EQ(rp.transport.dial_timeout, 1s);
}

TEST(Compile, GlobalOptions) {
  Config c = load(R"({
	admin off
	grace_period 5s
	order respond first
	servers {
		trusted_proxies static private_ranges
		max_header_size 16KB
		timeouts {
			read_header 5s
			idle 1m
		}
	}
	log {
		level error
	}
}
:8080 {
	respond "x"
})");
  EXPECT_TRUE(c.global.admin_off);
  EXPECT_EQ(c.global.grace_period, 5s);
  EXPECT_EQ(c.global.order, (std::vector<std::string>{"order respond first"}));
  EXPECT_EQ(c.global.trusted_proxies.size(), 6u);
  EXPECT_EQ(c.global.max_header_bytes, 16000);
  EXPECT_EQ(c.global.read_header_timeout, 5s);
  EXPECT_EQ(c.global.idle_timeout, 1min);
  EXPECT_EQ(c.global.log_level, "ERROR");
}

TEST(Compile, PlaceholdersExpanded) {
  Config c = load(R"(:8080 {
	respond "{host}{uri} {header.X-Id} {re.v.1} {env.HOME}"
})");
  EXPECT_EQ(std::get<StaticResponse>(c.sites[0].routes[0].handle[0]).body,
            "{http.request.host}{http.request.uri} {http.request.header.X-Id} "
            "{http.regexp.v.1} {env.HOME}");
}

TEST(Compile, CollectsEveryError) {
  auto errs = errors(R"(:8080 {
	file_server
	reverse_proxy 127.0.0.1:9000 {
		lb_policy nope
	}
	respond @missing "x"
})");
  ASSERT_EQ(errs.size(), 3u);
  EXPECT_EQ(errs[0], "Caddyfile:2:2: directive 'file_server' is not supported yet by hsp-gateway");
  EXPECT_NE(errs[1].find("unknown lb_policy 'nope'"), std::string::npos);
  EXPECT_EQ(errs[2], "Caddyfile:6:10: undefined matcher '@missing'");
}

}  // namespace
}  // namespace hsp::config
