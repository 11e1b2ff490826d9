// HTTPS sites build now that the data plane has a TLS listener (this file held the gate that
// refused them), and the automatic HTTP->HTTPS redirect sites, which the engine serves with its
// static_response handler.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "config/compile.h"
#include "engine/engine.h"
#include "test_util.h"

namespace hsp::engine {
namespace {

using namespace test;

config::Config load(const std::string& text) {
  auto cfg = config::load_caddyfile_text(text, "Caddyfile");
  if (!cfg.ok()) {
    ADD_FAILURE() << cfg.errors()[0].str();
    return {};
  }
  return cfg.value();
}

std::vector<std::string> build_errors(const config::Config& cfg) {
  UpstreamRegistry reg;
  auto built = Snapshot::build(cfg, reg, 1);
  std::vector<std::string> out;
  if (!built.ok())
    for (const auto& e : built.errors()) out.push_back(e.str());
  return out;
}

// The gate is gone (the data plane has its TLS listener): HTTPS sites build, and their servers
// carry certificates. Without a CertAuthority (validate, adapt) local-CA names get none.
TEST(TlsGate, HttpsSitesBuild) {
  config::Config cfg = load(R"(https://secure.example.com {
	respond "a"
}

example.com:8443, 127.0.0.1 {
	respond "c"
}

:443 {
	respond "d"
}

http://plain.example.com {
	respond "e"
}
)");
  EXPECT_TRUE(build_errors(cfg).empty());
  UpstreamRegistry reg;
  auto built = Snapshot::build(cfg, reg, 1);
  ASSERT_TRUE(built.ok());
  size_t tls_servers = 0;
  for (size_t i = 0; i < cfg.servers.size(); ++i) {
    EXPECT_EQ(built.value()->server_tls(i) != nullptr, cfg.servers[i].tls) << i;
    if (cfg.servers[i].tls) ++tls_servers;
  }
  EXPECT_EQ(tls_servers, 2u);  // :443 and :8443
}

TEST(TlsGate, PlainHttpConfigsStillBuild) {
  EXPECT_TRUE(build_errors(load("http://a.localhost:8080 {\n\trespond hi\n}\n")).empty());
  EXPECT_TRUE(build_errors(load("{\n\tauto_https off\n}\n:8080 {\n}\n")).empty());
}

// The redirect sites are ordinary sites to the engine. With the TLS server removed (it is what
// the gate refuses; the data-plane work will serve it), the HTTP server builds and answers.
struct RedirectOnly {
  UpstreamRegistry reg;
  SnapshotPtr snap;
  size_t http_index = 0;
  explicit RedirectOnly(const std::string& text) {
    config::Config cfg = load(text);
    std::vector<config::Server> plain;
    for (const auto& s : cfg.servers)
      if (!s.tls) plain.push_back(s);
    cfg.servers = plain;
    for (size_t i = 0; i < cfg.servers.size(); ++i)
      if (cfg.servers[i].port == cfg.global.http_port) http_index = i;
    auto built = Snapshot::build(cfg, reg, 1);
    if (!built.ok()) {
      ADD_FAILURE() << built.errors()[0].str();
      return;
    }
    snap = built.value();
  }
  Decision run(const std::string& host, const std::string& target) {
    auto req = request("GET", host, target);
    const Site* s = snap->find_site(http_index, req.host);
    if (s == nullptr) {
      Decision none;
      none.status = 0;  // no site: a failure the expectations show
      return none;
    }
    RequestCtx ctx(req);
    return snap->dispatch(*s, ctx);
  }
};

TEST(AutoHttpsRedirect, AnswersPermanentRedirect) {
  RedirectOnly f("a.example.com {\n\trespond hi\n}\nb.example.com:8443 {\n}\n");
  ASSERT_TRUE(f.snap);
  Decision d = f.run("a.example.com", "/p/q?x=1&y=2");
  EXPECT_EQ(d.status, 308);
  EXPECT_EQ(d.headers.joined("Location"), "https://a.example.com/p/q?x=1&y=2");
  EXPECT_TRUE(d.close);
  EXPECT_EQ(d.headers.joined("Connection"), "close");
  // The client's port on the HTTP listener is not carried over; the HTTPS port is.
  Decision b = f.run("b.example.com:80", "/");
  EXPECT_EQ(b.status, 308);
  EXPECT_EQ(b.headers.joined("Location"), "https://b.example.com:8443/");
  // Names not in the config: Caddy's catch-all redirect, to the HTTPS port.
  Decision other = f.run("unknown.example.org", "/z");
  EXPECT_EQ(other.status, 308);
  EXPECT_EQ(other.headers.joined("Location"), "https://unknown.example.org/z");
}

TEST(AutoHttpsRedirect, ExplicitHttpSitesWin) {
  RedirectOnly f(R"(
a.example.com, api.example.com {
}
http://a.example.com {
	respond "plain a"
}
http://api.example.com/v1/* {
	respond "plain v1"
}
)");
  ASSERT_TRUE(f.snap);
  EXPECT_EQ(f.run("a.example.com", "/").body, "plain a");
  EXPECT_EQ(f.run("api.example.com", "/v1/x").body, "plain v1");
  Decision d = f.run("api.example.com", "/v2");
  EXPECT_EQ(d.status, 308);
  EXPECT_EQ(d.headers.joined("Location"), "https://api.example.com/v2");
}

TEST(AutoHttpsRedirect, NonDefaultHttpsPort) {
  // Observed from Debian's caddy 2.6.2 (http_port/https_port on loopback): no port when the
  // target is https_port, the site's port otherwise.
  RedirectOnly f(
      "{\n\thttp_port 8080\n\thttps_port 8443\n}\na.localhost {\n}\n"
      "b.localhost:9443 {\n}\n");
  ASSERT_TRUE(f.snap);
  Decision d = f.run("a.localhost:8080", "/x?y=1");
  EXPECT_EQ(d.status, 308);
  EXPECT_EQ(d.headers.joined("Location"), "https://a.localhost/x?y=1");
  EXPECT_EQ(f.run("b.localhost:8080", "/x").headers.joined("Location"),
            "https://b.localhost:9443/x");
  EXPECT_EQ(f.run("zzz.example:8080", "/x").headers.joined("Location"), "https://zzz.example/x");
}

}  // namespace
}  // namespace hsp::engine
