// Routing engine micro-benchmarks: host lookup at 10 / 1 000 / 100 000 hosts (exact and
// wildcard), matcher evaluation, and a full dispatch of a typical site. Figures only; the
// target for lookups is <= 100 ns at 100 000 hosts.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>

#include "engine/compiled.h"
#include "engine/engine.h"

namespace hsp::engine {
namespace {

config::Route respond(std::string body) {
  config::Route r;
  config::StaticResponse s;
  s.body = std::move(body);
  r.handle.emplace_back(std::move(s));
  return r;
}

struct Fixture {
  UpstreamRegistry registry;
  SnapshotPtr snap;
  std::vector<std::string> lookups;  // shuffled request hosts, cycled by the benchmark
};

// wildcard=false: sites "hostI.example.com"; true: sites "*.tenantI.example.com" and lookups
// "www.tenantI.example.com". Built once per (size, kind).
Fixture& fixture(int64_t n, bool wildcard) {
  static std::map<std::pair<int64_t, bool>, std::unique_ptr<Fixture>> cache;
  auto& slot = cache[{n, wildcard}];
  if (slot) return *slot;
  slot = std::make_unique<Fixture>();
  config::Config cfg;
  cfg.sites.reserve(static_cast<size_t>(n) + 1);
  for (int64_t i = 0; i < n; ++i) {
    config::Site s;
    config::Address a;
    a.host = wildcard ? "*.tenant" + std::to_string(i) + ".example.com"
                      : "host" + std::to_string(i) + ".example.com";
    a.port = 80;
    s.addresses.push_back(a);
    s.routes.push_back(respond("ok"));
    cfg.sites.push_back(std::move(s));
  }
  config::Server server;
  server.port = 80;
  for (int64_t i = 0; i < n; ++i) server.sites.push_back(static_cast<size_t>(i));
  cfg.servers.push_back(server);
  auto built = Snapshot::build(cfg, slot->registry, 1);
  if (!built.ok()) abort();
  slot->snap = built.value();
  std::mt19937 rng(42);
  for (int i = 0; i < 8192; ++i) {
    int64_t k = static_cast<int64_t>(rng() % static_cast<uint64_t>(n));
    slot->lookups.push_back(wildcard ? "www.tenant" + std::to_string(k) + ".Example.com"
                                     : "Host" + std::to_string(k) + ".example.com");
  }
  return *slot;
}

void find_site_loop(benchmark::State& state, bool wildcard) {
  Fixture& f = fixture(state.range(0), wildcard);
  size_t i = 0;
  for (auto _ : state) {
    const Site* s = f.snap->find_site(0, f.lookups[i++ & 8191]);
    benchmark::DoNotOptimize(s);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_FindSiteExact(benchmark::State& state) {
  find_site_loop(state, false);
}
BENCHMARK(BM_FindSiteExact)->Arg(10)->Arg(1000)->Arg(100000);

void BM_FindSiteWildcard(benchmark::State& state) {
  find_site_loop(state, true);
}
BENCHMARK(BM_FindSiteWildcard)->Arg(10)->Arg(1000)->Arg(100000);

// Reload cost: compiling a config of N single-route sites into a snapshot.
void BM_BuildSnapshot(benchmark::State& state) {
  config::Config cfg;
  for (int64_t i = 0; i < state.range(0); ++i) {
    config::Site s;
    config::Address a;
    a.host = "host" + std::to_string(i) + ".example.com";
    a.port = 80;
    s.addresses.push_back(a);
    s.routes.push_back(respond("ok"));
    cfg.sites.push_back(std::move(s));
  }
  config::Server server;
  server.port = 80;
  for (int64_t i = 0; i < state.range(0); ++i) server.sites.push_back(static_cast<size_t>(i));
  cfg.servers.push_back(server);
  UpstreamRegistry reg;
  for (auto _ : state) {
    auto built = Snapshot::build(cfg, reg, 1);
    benchmark::DoNotOptimize(built);
  }
}
BENCHMARK(BM_BuildSnapshot)->Arg(1000)->Arg(100000)->Unit(benchmark::kMillisecond);

void BM_FindSiteMiss(benchmark::State& state) {
  Fixture& f = fixture(state.range(0), false);
  for (auto _ : state) {
    const Site* s = f.snap->find_site(0, "nobody.example.org");
    benchmark::DoNotOptimize(s);
  }
}
BENCHMARK(BM_FindSiteMiss)->Arg(100000);

http::Request make_request(std::string path) {
  http::Request r;
  r.method = "GET";
  r.scheme = "http";
  r.authority = "shop.example.com";
  r.host = "shop.example.com";
  r.path = std::move(path);
  r.remote_ip = "10.1.2.3";
  r.client_ip = r.remote_ip;
  r.headers.add("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0");
  r.headers.add("Accept", "text/html,application/xhtml+xml");
  r.headers.add("Accept-Language", "en-US,en;q=0.5");
  r.headers.add("Cookie", "session=abcdef0123456789; theme=dark");
  r.headers.add("X-Env", "staging-eu");
  return r;
}

void run_matcher(benchmark::State& state, const config::MatcherSet& ms, const char* path) {
  Errors errors;
  CompiledMatcherSet c = compile_matcher_set(ms, errors);
  if (!errors.empty()) abort();
  http::Request req = make_request(path);
  for (auto _ : state) {
    RequestCtx ctx(req);
    Decision d;
    DispatchState st(ctx, d);  // fresh per request: includes unescaping and cleaning the path
    bool m = c.match(st);
    benchmark::DoNotOptimize(m);
  }
}

void BM_MatchPathPrefix(benchmark::State& state) {
  config::MatcherSet ms;
  ms.path = {"/static/*", "/assets/*", "/api/*"};
  run_matcher(state, ms, "/api/v2/users/42");
}
BENCHMARK(BM_MatchPathPrefix);

void BM_MatchPathGlob(benchmark::State& state) {
  config::MatcherSet ms;
  ms.path = {"/u/*/profile/*.json"};
  run_matcher(state, ms, "/u/12345/profile/settings.json");
}
BENCHMARK(BM_MatchPathGlob);

void BM_MatchPathRegexp(benchmark::State& state) {
  config::MatcherSet ms;
  ms.path_regexp.push_back(config::PathRegexp{"ver", "^/api/v(\\d+)/(?P<res>[a-z]+)/(\\d+)$"});
  run_matcher(state, ms, "/api/v2/users/42");
}
BENCHMARK(BM_MatchPathRegexp);

void BM_MatchHeader(benchmark::State& state) {
  config::MatcherSet ms;
  ms.header = {{"X-Env", {"staging*"}}, {"Accept", {"*html*"}}, {"!X-Debug", {}}};
  run_matcher(state, ms, "/");
}
BENCHMARK(BM_MatchHeader);

void BM_MatchRemoteIp(benchmark::State& state) {
  config::MatcherSet ms;
  ms.remote_ip = {"192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/8", "fd00::/8"};
  run_matcher(state, ms, "/");
}
BENCHMARK(BM_MatchRemoteIp);

// A typical site: security headers, `handle_path /api/*` to a proxy with header_up, a
// redirect for an old path, and a static fallback; the request goes to the API.
struct TypicalSite {
  UpstreamRegistry registry;
  SnapshotPtr snap;
  TypicalSite() {
    config::Config cfg;
    config::Site s;
    config::Address a;
    a.host = "shop.example.com";
    a.port = 80;
    s.addresses.push_back(a);

    config::Route hdr;
    config::Headers h;
    for (auto [f, v] :
         {std::pair{"Strict-Transport-Security", "max-age=31536000"},
          std::pair{"X-Content-Type-Options", "nosniff"}, std::pair{"X-Frame-Options", "DENY"}}) {
      config::HeaderOp op;
      op.field = f;
      op.value = v;
      h.response.ops.push_back(op);
    }
    config::HeaderOp del;
    del.kind = config::HeaderOp::Kind::remove;
    del.field = "Server";
    h.response.ops.push_back(del);
    h.response.deferred = true;
    hdr.handle.emplace_back(std::move(h));
    s.routes.push_back(std::move(hdr));

    config::Route old;
    config::MatcherSet old_m;
    old_m.path = {"/old/*"};
    old.match.push_back(old_m);
    config::StaticResponse redir;
    redir.status = 301;
    redir.headers = {{"Location", "https://{http.request.host}/new{http.request.uri}"}};
    old.handle.emplace_back(redir);
    s.routes.push_back(std::move(old));

    config::Route api;
    config::MatcherSet api_m;
    api_m.path = {"/api/*"};
    api.match.push_back(api_m);
    api.group = "g0";
    config::Subroute sub;
    config::Route strip;
    config::Rewrite rw;
    rw.strip_prefix = "/api";
    strip.handle.emplace_back(rw);
    sub.routes.push_back(strip);
    config::Route proxy;
    config::ReverseProxy rp;
    rp.upstreams = {{"127.0.0.1:9001", {}}, {"127.0.0.1:9002", {}}, {"127.0.0.1:9003", {}}};
    rp.lb_policy = config::LbPolicy::round_robin;
    config::HeaderOp up;
    up.field = "X-Real-IP";
    up.value = "{http.request.remote.host}";
    rp.header_up.ops.push_back(up);
    proxy.handle.emplace_back(rp);
    sub.routes.push_back(proxy);
    api.handle.emplace_back(std::move(sub));
    s.routes.push_back(std::move(api));

    config::Route rest = respond("Welcome");
    rest.group = "g0";
    s.routes.push_back(std::move(rest));

    cfg.sites.push_back(std::move(s));
    config::Server server;
    server.port = 80;
    server.sites = {0};
    cfg.servers.push_back(server);
    auto built = Snapshot::build(cfg, registry, 1);
    if (!built.ok()) abort();
    snap = built.value();
  }
};

void BM_DispatchTypicalSite(benchmark::State& state) {
  static TypicalSite site;
  const http::Request base = make_request("/api/v2/users/42");
  for (auto _ : state) {
    http::Request req = base;  // dispatch rewrites the request; start fresh each time
    RequestCtx ctx(req);
    const Site* s = site.snap->find_site(0, req.host);
    Decision d = site.snap->dispatch(*s, ctx);
    ctx.upstream = d.proxy->select(ctx, {});
    benchmark::DoNotOptimize(ctx.upstream);
  }
}
BENCHMARK(BM_DispatchTypicalSite);

void BM_RequestCopyBaseline(benchmark::State& state) {
  const http::Request base = make_request("/api/v2/users/42");
  for (auto _ : state) {
    http::Request req = base;
    benchmark::DoNotOptimize(req);
  }
}
BENCHMARK(BM_RequestCopyBaseline);

void BM_SnapshotReaderCurrent(benchmark::State& state) {
  static TypicalSite site;
  SnapshotStore store;
  store.publish(site.snap);
  SnapshotStore::Reader reader(store);
  for (auto _ : state) {
    SnapshotPtr p = reader.current();  // what each request does
    benchmark::DoNotOptimize(p);
  }
}
BENCHMARK(BM_SnapshotReaderCurrent);

}  // namespace
}  // namespace hsp::engine

BENCHMARK_MAIN();
