// SnapshotStore under concurrency: readers route requests while a publisher swaps thousands of
// snapshots. Also built into hsp_engine_tsan_tests (ThreadSanitizer, CTest label `tsan`).
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "test_util.h"

namespace hsp::engine {
namespace {

using namespace test;

std::atomic<int> g_alive{0};
std::atomic<int> g_created{0};

// Wraps a real snapshot and counts lifetimes, so the test can see old snapshots being freed.
class CountingSnapshot final : public Snapshot {
 public:
  explicit CountingSnapshot(SnapshotPtr inner) : inner_(std::move(inner)) {
    g_alive.fetch_add(1, std::memory_order_relaxed);
    g_created.fetch_add(1, std::memory_order_relaxed);
  }
  ~CountingSnapshot() override { g_alive.fetch_sub(1, std::memory_order_relaxed); }
  const config::Config& config() const override { return inner_->config(); }
  uint64_t generation() const override { return inner_->generation(); }
  const Site* find_site(size_t s, std::string_view h) const override {
    return inner_->find_site(s, h);
  }
  Decision dispatch(const Site& site, RequestCtx& ctx) const override {
    return inner_->dispatch(site, ctx);
  }
  std::vector<const ProxyHandler*> proxies() const override { return inner_->proxies(); }

 private:
  SnapshotPtr inner_;
};

// Generation g answers every request with the body "g" (and a header naming g again), so a
// reader that sees a body from one snapshot and a generation from another caught a torn read.
SnapshotPtr make_snapshot(UpstreamRegistry& reg, uint64_t gen) {
  config::Config cfg;
  config::Route r = respond_route(std::to_string(gen));
  std::get<config::StaticResponse>(r.handle[0]).headers = {{"X-Gen", std::to_string(gen)}};
  cfg.sites.push_back(site({addr("a.test")}, {r}));
  cfg.sites.push_back(site({addr("*.b.test")}, {proxy_route({"127.0.0.1:9001"})}));
  single_server(cfg);
  auto built = Snapshot::build(cfg, reg, gen);
  EXPECT_TRUE(built.ok());
  return std::make_shared<CountingSnapshot>(built.value());
}

TEST(SnapshotStore, ReaderSeesPublishedSnapshot) {
  UpstreamRegistry reg;
  SnapshotStore store;
  SnapshotStore::Reader reader(store);
  EXPECT_EQ(reader.current(), nullptr);
  store.publish(make_snapshot(reg, 1));
  ASSERT_NE(reader.current(), nullptr);
  EXPECT_EQ(reader.current()->generation(), 1u);
  store.publish(make_snapshot(reg, 2));
  EXPECT_EQ(reader.current()->generation(), 2u);
  EXPECT_EQ(store.load()->generation(), 2u);
}

TEST(SnapshotStore, InFlightRequestKeepsItsSnapshotUntilDone) {
  UpstreamRegistry reg;
  int base = g_alive.load();
  {
    SnapshotStore store;
    SnapshotStore::Reader reader(store);
    store.publish(make_snapshot(reg, 1));
    SnapshotPtr in_flight = reader.current();  // a request starts on generation 1
    store.publish(make_snapshot(reg, 2));
    EXPECT_EQ(reader.current()->generation(), 2u);
    // The reader moved on, the store moved on, but the request still holds generation 1.
    EXPECT_EQ(g_alive.load() - base, 2);
    EXPECT_EQ(in_flight->generation(), 1u);
    auto req = request("GET", "a.test", "/");
    RequestCtx ctx(req);
    EXPECT_EQ(in_flight->dispatch(*in_flight->find_site(0, "a.test"), ctx).body, "1");
    in_flight.reset();
    EXPECT_EQ(g_alive.load() - base, 1);
  }
  EXPECT_EQ(g_alive.load(), base);
}

TEST(SnapshotStore, ConcurrentPublishAndRoute) {
  constexpr int kReaders = 4;
  constexpr uint64_t kPublishes = 2000;
  UpstreamRegistry reg;
  int base_alive = g_alive.load();
  int base_created = g_created.load();
  {
    SnapshotStore store;
    store.publish(make_snapshot(reg, 1));
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> routed{0};
    std::atomic<int> torn{0};
    std::atomic<int> backwards{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < kReaders; ++t) {
      readers.emplace_back([&] {
        SnapshotStore::Reader reader(store);
        uint64_t last = 0;
        while (!stop.load(std::memory_order_relaxed)) {
          SnapshotPtr snap = reader.current();  // what a request does when it starts
          uint64_t gen = snap->generation();
          if (gen < last) backwards.fetch_add(1);
          last = gen;
          auto req = request("GET", "A.TEST", "/x");
          RequestCtx ctx(req);
          const Site* s = snap->find_site(0, req.host);
          if (s == nullptr) {
            torn.fetch_add(1);
            continue;
          }
          Decision d = snap->dispatch(*s, ctx);
          if (d.body != std::to_string(gen) || d.headers.joined("X-Gen") != d.body) {
            torn.fetch_add(1);
          }
          const Site* w = snap->find_site(0, "x.b.test");
          if (w != nullptr) {
            auto preq = request("GET", "x.b.test", "/");
            RequestCtx pctx(preq);
            Decision pd = snap->dispatch(*w, pctx);
            if (pd.kind != Decision::Kind::proxy || pd.proxy->select(pctx, {}) == nullptr) {
              torn.fetch_add(1);
            }
          } else {
            torn.fetch_add(1);
          }
          routed.fetch_add(1, std::memory_order_relaxed);
        }
      });
    }
    for (uint64_t g = 2; g <= kPublishes; ++g) store.publish(make_snapshot(reg, g));
    // Let every reader observe the final generation before stopping.
    while (routed.load() < 1000) std::this_thread::yield();
    stop.store(true);
    for (auto& t : readers) t.join();
    EXPECT_EQ(torn.load(), 0);
    EXPECT_EQ(backwards.load(), 0);
    EXPECT_GT(routed.load(), 0u);
    EXPECT_EQ(store.load()->generation(), kPublishes);
    EXPECT_EQ(g_created.load() - base_created, static_cast<int>(kPublishes));
    // Readers are gone: only the store's latest snapshot is still alive.
    EXPECT_EQ(g_alive.load() - base_alive, 1);
  }
  EXPECT_EQ(g_alive.load(), base_alive);
  // The upstream host died with the last snapshot naming it.
  EXPECT_TRUE(reg.live().empty());
}

}  // namespace
}  // namespace hsp::engine
