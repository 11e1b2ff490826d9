// Caddyfile text -> config compiler -> snapshot -> dispatch, end to end.
#include <gtest/gtest.h>

#include "config/compile.h"
#include "engine/engine.h"
#include "test_util.h"

namespace hsp::engine {
namespace {

using namespace test;

struct FromCaddyfile {
  UpstreamRegistry reg;
  SnapshotPtr snap;
  explicit FromCaddyfile(const std::string& text) {
    auto cfg = config::load_caddyfile_text(text, "Caddyfile");
    if (!cfg.ok()) {
      ADD_FAILURE() << cfg.errors()[0].str();
      return;
    }
    auto built = Snapshot::build(cfg.value(), reg, 1);
    if (!built.ok()) {
      ADD_FAILURE() << built.errors()[0].str();
      return;
    }
    snap = built.value();
  }
  size_t server(uint16_t port) const {
    const auto& servers = snap->config().servers;
    for (size_t i = 0; i < servers.size(); ++i) {
      if (servers[i].port == port) return i;
    }
    ADD_FAILURE() << "no server on port " << port;
    return 0;
  }
  Decision run(http::Request& req, uint16_t port, RequestCtx** keep = nullptr) {
    const Site* s = snap->find_site(server(port), req.host);
    if (s == nullptr) return Decision{};
    RequestCtx ctx(req);
    return snap->dispatch(*s, ctx);
  }
};

const char* kSites = R"(
{
	http_port 8080
}
http://example.com:8080 {
	header X-Site example
	handle_path /api/* {
		reverse_proxy 127.0.0.1:9001 127.0.0.1:9002 {
			lb_policy first
			header_up X-Up {host}
		}
	}
	handle /old/* {
		redir https://example.com{uri} 308
	}
	handle {
		respond "home {path}" 200
	}
}
http://*.example.com:8080 {
	respond "wild {labels.2}"
}
http://:8080 {
	respond "catch-all" 404
}
)";

TEST(Caddyfile, SitesHandlesAndProxy) {
  FromCaddyfile f(kSites);
  ASSERT_TRUE(f.snap);

  auto home = request("GET", "example.com:8080", "/index.html");
  Decision d = f.run(home, 8080);
  EXPECT_EQ(d.kind, Decision::Kind::respond);
  EXPECT_EQ(d.body, "home /index.html");
  EXPECT_EQ(d.status, 200);

  auto api = request("GET", "example.com:8080", "/api/users?id=3");
  RequestCtx ctx(api);
  const Site* s = f.snap->find_site(f.server(8080), api.host);
  ASSERT_NE(s, nullptr);
  Decision p = f.snap->dispatch(*s, ctx);
  ASSERT_EQ(p.kind, Decision::Kind::proxy);
  EXPECT_EQ(api.path, "/users");  // handle_path stripped the prefix
  EXPECT_EQ(api.query, "id=3");
  UpstreamHost* up = p.proxy->select(ctx, {});
  ASSERT_NE(up, nullptr);
  EXPECT_EQ(up->dial(), "127.0.0.1:9001");
  ctx.upstream = up;
  http::HeaderMap out;
  p.proxy->apply_header_up(ctx, out);
  EXPECT_EQ(out.joined("X-Up"), "example.com");
  http::HeaderMap resp;
  build_response_headers(p, ctx, http::HeaderMap{}, resp);
  EXPECT_EQ(resp.joined("X-Site"), "example");

  auto old = request("GET", "example.com:8080", "/old/page?a=1");
  Decision r = f.run(old, 8080);
  EXPECT_EQ(r.status, 308);
  EXPECT_EQ(r.headers.joined("Location"), "https://example.com/old/page?a=1");

  auto wild = request("GET", "shop.example.com:8080", "/");
  EXPECT_EQ(f.run(wild, 8080).body, "wild shop");

  auto other = request("GET", "elsewhere.org:8080", "/");
  Decision c = f.run(other, 8080);
  EXPECT_EQ(c.body, "catch-all");
  EXPECT_EQ(c.status, 404);
}

TEST(Caddyfile, NamedMatchersAndHeaderOps) {
  FromCaddyfile f(R"(
http://localhost:8080 {
	@post {
		method POST
		path /submit*
	}
	@old_client header_regexp ua User-Agent ^curl/(\d+)
	header -Server
	header ?Cache-Control "no-store"
	respond @post "posted" 201
	respond @old_client "curl {re.ua.1}"
	respond "default"
}
)");
  ASSERT_TRUE(f.snap);
  auto post = request("POST", "localhost:8080", "/submit/form");
  EXPECT_EQ(f.run(post, 8080).status, 201);
  auto curl = request("GET", "localhost:8080", "/");
  curl.headers.add("User-Agent", "curl/8.1.2");
  EXPECT_EQ(f.run(curl, 8080).body, "curl 8");
  auto plain = request("GET", "localhost:8080", "/");
  RequestCtx ctx(plain);
  const Site* s = f.snap->find_site(f.server(8080), "localhost");
  ASSERT_NE(s, nullptr);
  Decision d = f.snap->dispatch(*s, ctx);
  EXPECT_EQ(d.body, "default");
  http::HeaderMap out;
  out.add("Server", "hsp-gateway");
  build_response_headers(d, ctx, d.headers, out);
  EXPECT_FALSE(out.has("Server"));
  EXPECT_EQ(out.joined("Cache-Control"), "no-store");
  EXPECT_EQ(out.joined("Content-Type"), "text/plain; charset=utf-8");
}

TEST(Caddyfile, BadRegexIsALoadErrorWithPosition) {
  auto cfg = config::load_caddyfile_text(R"(
http://localhost:8080 {
	@bad path_regexp (unclosed
	respond @bad "x"
}
)",
                                         "Caddyfile");
  ASSERT_TRUE(cfg.ok()) << cfg.errors()[0].str();
  UpstreamRegistry reg;
  auto built = Snapshot::build(cfg.value(), reg, 1);
  ASSERT_FALSE(built.ok());
  EXPECT_EQ(built.errors()[0].loc.file, "Caddyfile");
  EXPECT_EQ(built.errors()[0].loc.line, 3);
}

}  // namespace
}  // namespace hsp::engine

namespace hsp::engine {
namespace {

// Expected values observed from Debian's caddy 2.6.2 serving the same Caddyfile on 127.0.0.1.
TEST(Caddyfile, ResponseHeaderOrderMatchesCaddy262) {
  FromCaddyfile f(R"(
http://localhost:8080 {
	header {
		X-Def first
		defer
	}
	header {
		X-Def second
		defer
	}
	header X-Imm imm
	header /ct Content-Type text/html
	header /del -X-Resp
	handle /ct {
		respond "<b>x</b>"
	}
	handle /del {
		header X-Resp from-handler
		respond "d"
	}
	handle {
		respond "r"
	}
}
)");
  ASSERT_TRUE(f.snap);
  auto head = [&](const std::string& path) {
    auto req = test::request("GET", "localhost:8080", path);
    RequestCtx ctx(req);
    const Site* s = f.snap->find_site(f.server(8080), "localhost");
    EXPECT_NE(s, nullptr);
    http::HeaderMap out;
    if (s == nullptr) return out;
    Decision d = f.snap->dispatch(*s, ctx);
    out.add("Server", "hsp");
    build_response_headers(d, ctx, d.headers, out);
    return out;
  };
  http::HeaderMap ct = head("/ct");
  EXPECT_EQ(ct.joined("Content-Type"), "text/html");
  EXPECT_EQ(ct.joined("X-Def"), "first");
  EXPECT_EQ(ct.joined("X-Imm"), "imm");
  http::HeaderMap del = head("/del");
  EXPECT_FALSE(del.has("X-Resp"));
  EXPECT_EQ(del.joined("Content-Type"), "text/plain; charset=utf-8");
  EXPECT_EQ(del.joined("X-Def"), "first");
}

TEST(Caddyfile, PlaceholderAndMatcherCornersMatchCaddy262) {
  FromCaddyfile f(R"(
http://localhost:8080 {
	@q query sort=asc debug=*
	handle /q {
		respond @q "q-match"
		respond "q-nomatch"
	}
	handle /hosthdr {
		respond "[{http.request.header.Host}] [{host}] [{hostport}]"
	}
	handle /labels/* {
		respond "{labels.0}|{labels.1}|{path.0}|{path.1}|{path.9}|{file}|{dir}|{query.a}|{cookie.x}|{unknown.thing}"
	}
	handle /rw/* {
		rewrite * /target?{query}&p={path}
		respond "{uri}"
	}
}
)");
  ASSERT_TRUE(f.snap);
  auto body = [&](const std::string& target, std::string cookie = "") {
    auto req = test::request("GET", "localhost:8080", target);
    if (!cookie.empty()) req.headers.add("Cookie", cookie);
    return f.run(req, 8080).body;
  };
  EXPECT_EQ(body("/q?sort=desc&debug=1"), "q-match");  // 2.6.2: any listed key
  EXPECT_EQ(body("/q?sort=asc"), "q-match");
  EXPECT_EQ(body("/q?sort=desc"), "q-nomatch");
  EXPECT_EQ(body("/hosthdr"), "[] [localhost] [localhost:8080]");
  EXPECT_EQ(body("/labels/a/b.txt?a=1&a=2"),
            "localhost||labels|a||b.txt|/labels/a/|1,2|{http.request.cookie.x}|{unknown.thing}");
  EXPECT_EQ(body("/labels/a", "X=cv"), "localhost||labels|a||a|/labels/||cv|{unknown.thing}");
  // {path} is the unescaped path, {uri} the escaped one.
  EXPECT_EQ(body("/labels/a%20b"),
            "localhost||labels|a b||a b|/labels/||{http.request.cookie.x}|{unknown.thing}");
  EXPECT_EQ(body("/rw/a%20b?x=1"), "/target?x=1&p=%2Frw%2Fa+b");
}

// Caddy fills placeholders in tls_server_name per request; the data plane does not yet, and a
// literal "{...}" must never go out as SNI: a load error at the reverse_proxy.
TEST(Caddyfile, TlsServerNamePlaceholderIsALoadError) {
  auto cfg = config::load_caddyfile_text(R"(
http://localhost:8080 {
	reverse_proxy https://127.0.0.1:9443 {
		transport http {
			tls_server_name {http.request.host}
		}
	}
}
)",
                                         "Caddyfile");
  ASSERT_TRUE(cfg.ok()) << cfg.errors()[0].str();
  UpstreamRegistry reg;
  auto built = Snapshot::build(cfg.value(), reg, 1);
  ASSERT_FALSE(built.ok());
  EXPECT_EQ(built.errors()[0].loc.line, 3);
  EXPECT_NE(built.errors()[0].message.find("tls_server_name"), std::string::npos);
}

}  // namespace
}  // namespace hsp::engine
