// Snapshot publication (reloads, Docker events) against workers that keep reading: the cost of
// SnapshotStore::publish while N reader threads take the current snapshot in a loop, and the
// cost of a read (Reader::current() plus the per-request copy of the pointer) while a publisher
// keeps publishing. Readers spin on purpose: the worst case for the store's cache lines. On a
// 2-core machine more than one reader thread shares a core with the publisher, so the figures
// for N > 1 include time slicing. Figures only.
#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"

namespace hsp::engine {
namespace {

// Two small snapshots to alternate between (what is published does not change the cost of
// publishing it; destroying the previous one does, and is not measured here: both stay alive).
struct TwoSnapshots {
  UpstreamRegistry registry;
  SnapshotPtr a, b;
  TwoSnapshots() {
    a = build(1);
    b = build(2);
  }
  SnapshotPtr build(uint64_t generation) {
    config::Config cfg;
    for (int i = 0; i < 16; ++i) {
      config::Site s;
      config::Address addr;
      addr.host = "host" + std::to_string(i) + ".example.com";
      addr.port = 80;
      s.addresses.push_back(addr);
      config::Route r;
      config::ReverseProxy rp;
      rp.upstreams = {{"127.0.0.1:" + std::to_string(9000 + i), {}}};
      r.handle.emplace_back(std::move(rp));
      s.routes.push_back(std::move(r));
      cfg.sites.push_back(std::move(s));
    }
    config::Server server;
    server.port = 80;
    for (size_t i = 0; i < cfg.sites.size(); ++i) server.sites.push_back(i);
    cfg.servers.push_back(server);
    auto built = Snapshot::build(cfg, registry, generation);
    if (!built.ok()) abort();
    return built.value();
  }
};

TwoSnapshots& snapshots() {
  static TwoSnapshots s;
  return s;
}

// Reader threads doing what a worker does per request: current(), keep a copy for the request,
// look the site up.
class Readers {
 public:
  Readers(SnapshotStore& store, int n) {
    for (int i = 0; i < n; ++i) {
      threads_.emplace_back([this, &store] {
        SnapshotStore::Reader reader(store);
        uint64_t reads = 0;
        while (!stop_.load(std::memory_order_relaxed)) {
          SnapshotPtr held = reader.current();
          benchmark::DoNotOptimize(held->find_site(0, "host3.example.com"));
          ++reads;
        }
        reads_.fetch_add(reads, std::memory_order_relaxed);
      });
    }
  }
  // Joins the threads; returns how many reads they made.
  uint64_t stop() {
    stop_.store(true);
    for (auto& t : threads_) t.join();
    threads_.clear();
    return reads_.load();
  }
  ~Readers() { stop(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> reads_{0};
  std::vector<std::thread> threads_;
};

// Cost of one publish with range(0) reader threads spinning on the store.
void BM_SnapshotPublish(benchmark::State& state) {
  TwoSnapshots& s = snapshots();
  SnapshotStore store;
  store.publish(s.a);
  Readers readers(store, static_cast<int>(state.range(0)));
  bool flip = false;
  for (auto _ : state) {
    store.publish(flip ? s.a : s.b);
    flip = !flip;
  }
  uint64_t reads = readers.stop();
  state.counters["reads_meanwhile"] =
      benchmark::Counter(static_cast<double>(reads), benchmark::Counter::kIsRate);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SnapshotPublish)->Arg(0)->Arg(1)->Arg(2)->Arg(4)->UseRealTime();

// Cost of one read (current() + the per-request copy) in each of state.threads() workers while
// one publisher thread publishes every range(0) microseconds (0: back to back, the worst case;
// 1000: a reload storm of 1000/s). Each read after a publish takes the slow path (the mutex and
// a copy of the shared pointer); the others are one acquire load.
void BM_SnapshotReadUnderPublish(benchmark::State& state) {
  static SnapshotStore* store = nullptr;
  static std::atomic<bool> stop{false};
  static std::thread publisher;
  static std::atomic<uint64_t> published{0};
  const int64_t interval_us = state.range(0);
  if (state.thread_index() == 0) {
    TwoSnapshots& s = snapshots();
    store = new SnapshotStore;
    store->publish(s.a);
    stop = false;
    published = 0;
    publisher = std::thread([interval_us, &s] {
      bool flip = false;
      auto next = std::chrono::steady_clock::now();
      while (!stop.load(std::memory_order_relaxed)) {
        store->publish(flip ? s.a : s.b);
        flip = !flip;
        published.fetch_add(1, std::memory_order_relaxed);
        if (interval_us > 0) {
          next += std::chrono::microseconds(interval_us);
          std::this_thread::sleep_until(next);
        }
      }
    });
  }
  // Benchmark's start barrier sits between this set-up and the first iteration, so the reader
  // is made inside the loop (once: its cost vanishes in the iteration count).
  std::optional<SnapshotStore::Reader> reader;
  for (auto _ : state) {
    if (!reader) reader.emplace(*store);
    SnapshotPtr held = reader->current();
    benchmark::DoNotOptimize(held);
  }
  reader.reset();
  if (state.thread_index() == 0) {
    stop = true;
    publisher.join();
    // The store is left allocated: another thread may still be past the stop barrier and
    // releasing its reader. A few hundred bytes per benchmark run.
    state.counters["publishes"] =
        benchmark::Counter(static_cast<double>(published.load()), benchmark::Counter::kIsRate);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SnapshotReadUnderPublish)->Arg(0)->Arg(1000)->Threads(1)->Threads(2)->UseRealTime();

// The same read with nothing being published: the fast path alone, for comparison.
void BM_SnapshotReadQuiet(benchmark::State& state) {
  SnapshotStore store;
  store.publish(snapshots().a);
  SnapshotStore::Reader reader(store);
  for (auto _ : state) {
    SnapshotPtr held = reader.current();
    benchmark::DoNotOptimize(held);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SnapshotReadQuiet);

}  // namespace
}  // namespace hsp::engine
