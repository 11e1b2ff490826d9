// Label translation at Swarm scale: N services with typical labels -> generated, validated
// Caddyfile -> compiled configuration -> routing snapshot, as one watcher cycle does it after
// Docker's listings arrive. Figures only; the target is 10 000 services in < 100 ms.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "config/compile.h"
#include "engine/engine.h"
#include "labels/generate.h"

namespace hsp::labels {
namespace {

// Each service: its own site, a reverse_proxy to two task addresses with a health check, a
// header label and a label outside the prefix; every tenth service shares a site with the
// previous one (merged upstream lists).
std::vector<Source> services(int64_t n) {
  std::vector<Source> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    Source s;
    s.name = "service svc" + std::to_string(i);
    const int64_t site = i % 10 == 9 ? i - 1 : i;
    s.labels = {{"caddy", "http://svc" + std::to_string(site) + ".localhost"},
                {"caddy.reverse_proxy", "{{upstreams 8080}}"},
                {"caddy.reverse_proxy.health_uri", "/healthz"},
                {"caddy.header", "-Server"},
                {"com.docker.stack.namespace", "bench"}};
    s.upstream_targets = {"10.0." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 2),
                          "10.1." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 2)};
    out.push_back(std::move(s));
  }
  return out;
}

void BM_TranslateOnly(benchmark::State& state) {
  const auto sources = services(state.range(0));
  GenerateOptions opts;
  opts.process = false;
  for (auto _ : state) benchmark::DoNotOptimize(generate(sources, opts));
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_TranslateOnly)->Arg(1000)->Arg(10000)->Unit(benchmark::kMillisecond);

// What a watcher cycle costs once the listings are in: translate, merge, validate block by
// block (the fast path: one compile of the whole file), compile again for publication and
// build the routing snapshot.
void BM_TranslateValidateCompileSnapshot(benchmark::State& state) {
  const auto sources = services(state.range(0));
  GenerateOptions opts;
  for (auto _ : state) {
    auto out = generate(sources, opts);
    if (!out.dropped.empty() || !out.problems.empty()) {
      state.SkipWithError("a generated block was dropped: the figures would be meaningless");
      break;
    }
    auto cfg = config::load_caddyfile_text(out.caddyfile, "<docker>");
    if (!cfg) {
      state.SkipWithError("generated Caddyfile does not compile");
      break;
    }
    engine::UpstreamRegistry registry;
    auto snap = engine::Snapshot::build(*cfg, registry, 1);
    benchmark::DoNotOptimize(snap);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_TranslateValidateCompileSnapshot)
    ->Arg(1000)
    ->Arg(10000)
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace hsp::labels
