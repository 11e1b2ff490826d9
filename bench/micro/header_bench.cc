// Header rewriting on the proxy path: the reverse_proxy header_up / header_down operations (set,
// add, delete, delete by prefix, substring and regex replacement, with and without
// placeholders) and X-Forwarded-* as the data plane applies them to every proxied request.
// Each iteration copies a typical head and rewrites the copy (an op mutates its input); the
// BM_HeaderCopy* baselines give the copy's share, to subtract. Figures only.
#include <benchmark/benchmark.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/engine.h"

namespace hsp::engine {
namespace {

using Kind = config::HeaderOp::Kind;

config::HeaderOp op(Kind kind, std::string field, std::string value = {}, std::string search = {},
                    bool regex = false) {
  config::HeaderOp o;
  o.kind = kind;
  o.field = std::move(field);
  o.value = std::move(value);
  o.search = std::move(search);
  o.regex = regex;
  return o;
}

// One site whose only route proxies to 127.0.0.1:9001 (never dialled) with the given ops, built
// into a snapshot the way a reload does, so the ops run through the compiled ProxyHandler.
struct ProxySite {
  UpstreamRegistry registry;
  SnapshotPtr snap;
  const ProxyHandler* proxy = nullptr;

  ProxySite(std::vector<config::HeaderOp> up, std::vector<config::HeaderOp> down) {
    config::Config cfg;
    config::Site s;
    config::Address a;
    a.host = "shop.example.com";
    a.port = 80;
    s.addresses.push_back(a);
    config::Route r;
    config::ReverseProxy rp;
    rp.upstreams = {{"127.0.0.1:9001", {}}};
    rp.header_up.ops = std::move(up);
    rp.header_down.ops = std::move(down);
    r.handle.emplace_back(std::move(rp));
    s.routes.push_back(std::move(r));
    cfg.sites.push_back(std::move(s));
    config::Server server;
    server.port = 80;
    server.sites = {0};
    cfg.servers.push_back(server);
    auto built = Snapshot::build(cfg, registry, 1);
    if (!built.ok()) abort();
    snap = built.value();
    auto all = snap->proxies();
    if (all.size() != 1) abort();
    proxy = all[0];
  }
};

// What a browser sends (11 fields) and what a typical application answers (7 fields).
http::Request browser_request() {
  http::Request r;
  r.method = "GET";
  r.scheme = "https";
  r.authority = "shop.example.com";
  r.host = "shop.example.com";
  r.path = "/api/v2/cart";
  r.remote_ip = "203.0.113.7";
  r.client_ip = r.remote_ip;
  r.headers.add("Host", "shop.example.com");
  r.headers.add("User-Agent",
                "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0");
  r.headers.add("Accept", "application/json, text/plain, */*");
  r.headers.add("Accept-Language", "en-US,en;q=0.5");
  r.headers.add("Accept-Encoding", "gzip, deflate, br");
  r.headers.add("Referer", "https://shop.example.com/cart");
  r.headers.add("Cookie", "session=abcdef0123456789abcdef; theme=dark; consent=yes");
  r.headers.add("X-Debug-Trace", "1");
  r.headers.add("X-Debug-User", "alice");
  r.headers.add("Sec-Fetch-Mode", "cors");
  r.headers.add("Sec-Fetch-Site", "same-origin");
  return r;
}

http::HeaderMap app_response() {
  http::HeaderMap h;
  h.add("Content-Type", "application/json; charset=utf-8");
  h.add("Content-Length", "1375");
  h.add("Server", "gunicorn/21.2.0");
  h.add("X-Powered-By", "Flask");
  h.add("Location", "http://backend.internal:8080/api/v2/cart/42");
  h.add("Set-Cookie", "cart=42; Path=/; HttpOnly");
  h.add("Cache-Control", "no-store");
  return h;
}

// The per-request rewrite of the outgoing head: copy the client's fields, then the ops.
void run_up(benchmark::State& state, std::vector<config::HeaderOp> ops) {
  ProxySite site(std::move(ops), {});
  http::Request req = browser_request();
  RequestCtx ctx(req);
  ctx.upstream = site.proxy->upstreams()[0].get();
  for (auto _ : state) {
    http::HeaderMap out = req.headers;
    site.proxy->apply_header_up(ctx, out);
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations());
}

void run_down(benchmark::State& state, std::vector<config::HeaderOp> ops) {
  ProxySite site({}, std::move(ops));
  http::Request req = browser_request();
  RequestCtx ctx(req);
  ctx.upstream = site.proxy->upstreams()[0].get();
  ctx.response_status = 200;
  const http::HeaderMap base = app_response();
  for (auto _ : state) {
    http::HeaderMap out = base;
    ctx.response_headers = &out;
    site.proxy->apply_header_down(ctx, out);
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_HeaderCopyRequestBaseline(benchmark::State& state) {
  const http::Request req = browser_request();
  for (auto _ : state) {
    http::HeaderMap out = req.headers;
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_HeaderCopyRequestBaseline);

void BM_HeaderCopyResponseBaseline(benchmark::State& state) {
  const http::HeaderMap base = app_response();
  for (auto _ : state) {
    http::HeaderMap out = base;
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_HeaderCopyResponseBaseline);

// header_up with no ops: the virtual call and the null check every proxied request pays.
void BM_HeaderUpNone(benchmark::State& state) {
  run_up(state, {});
}
BENCHMARK(BM_HeaderUpNone);

void BM_HeaderUpSetLiteral(benchmark::State& state) {
  run_up(state, {op(Kind::set, "X-Gateway", "hsp")});
}
BENCHMARK(BM_HeaderUpSetLiteral);

// `header_up X-Real-IP {remote_host}`: the most common header_up line in the wild.
void BM_HeaderUpSetPlaceholder(benchmark::State& state) {
  run_up(state, {op(Kind::set, "X-Real-IP", "{http.request.remote.host}")});
}
BENCHMARK(BM_HeaderUpSetPlaceholder);

// `header_up Host {upstream_hostport}`: needs the chosen upstream.
void BM_HeaderUpSetHostUpstream(benchmark::State& state) {
  run_up(state, {op(Kind::set, "Host", "{upstream_hostport}")});
}
BENCHMARK(BM_HeaderUpSetHostUpstream);

void BM_HeaderUpAdd(benchmark::State& state) {
  run_up(state, {op(Kind::add, "X-Request-Source", "edge-{http.request.host}")});
}
BENCHMARK(BM_HeaderUpAdd);

void BM_HeaderUpDelete(benchmark::State& state) {
  run_up(state, {op(Kind::remove, "Cookie")});
}
BENCHMARK(BM_HeaderUpDelete);

// `header_up -X-Debug-*`: every field name is lower-cased and compared.
void BM_HeaderUpDeletePrefix(benchmark::State& state) {
  run_up(state, {op(Kind::remove, "X-Debug-*")});
}
BENCHMARK(BM_HeaderUpDeletePrefix);

void BM_HeaderUpReplaceSubstring(benchmark::State& state) {
  run_up(state, {op(Kind::replace, "User-Agent", "Fx", "Firefox")});
}
BENCHMARK(BM_HeaderUpReplaceSubstring);

void BM_HeaderUpReplaceRegex(benchmark::State& state) {
  run_up(state, {op(Kind::replace, "Accept-Language", "$1", "^([a-z]+)-[A-Z]+.*$", true)});
}
BENCHMARK(BM_HeaderUpReplaceRegex);

// A realistic block: Host to the upstream, X-Real-IP, one added field, debug fields and the
// cookie removed.
void BM_HeaderUpTypicalBlock(benchmark::State& state) {
  run_up(state, {op(Kind::set, "Host", "{upstream_hostport}"),
                 op(Kind::set, "X-Real-IP", "{http.request.remote.host}"),
                 op(Kind::add, "X-Request-Source", "edge"), op(Kind::remove, "X-Debug-*"),
                 op(Kind::remove, "Cookie")});
}
BENCHMARK(BM_HeaderUpTypicalBlock);

// X-Forwarded-For/-Proto/-Host, set on every proxied request before header_up.
void BM_HeaderUpForwarded(benchmark::State& state) {
  const http::Request req = browser_request();
  for (auto _ : state) {
    http::HeaderMap out = req.headers;
    set_forwarded_headers(req, false, out);
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HeaderUpForwarded);

void BM_HeaderDownNone(benchmark::State& state) {
  run_down(state, {});
}
BENCHMARK(BM_HeaderDownNone);

// `header_down -Server` and `-X-Powered-By`.
void BM_HeaderDownDelete(benchmark::State& state) {
  run_down(state, {op(Kind::remove, "Server"), op(Kind::remove, "X-Powered-By")});
}
BENCHMARK(BM_HeaderDownDelete);

// `header_down Location http://backend.internal:8080 https://{http.request.host}`.
void BM_HeaderDownReplaceLocation(benchmark::State& state) {
  run_down(state, {op(Kind::replace, "Location", "https://{http.request.host}",
                      "http://backend.internal:8080")});
}
BENCHMARK(BM_HeaderDownReplaceLocation);

// Security headers set, identifying fields removed, the redirect target rewritten.
void BM_HeaderDownTypicalBlock(benchmark::State& state) {
  run_down(state, {op(Kind::set, "Strict-Transport-Security", "max-age=31536000"),
                   op(Kind::set, "X-Content-Type-Options", "nosniff"), op(Kind::remove, "Server"),
                   op(Kind::remove, "X-Powered-*"),
                   op(Kind::replace, "Location", "https://{http.request.host}",
                      "http://backend.internal:8080")});
}
BENCHMARK(BM_HeaderDownTypicalBlock);

}  // namespace
}  // namespace hsp::engine
