// SnapshotStore: publish on any thread, read per worker without locks on the fast path. The
// memory-order argument is in engine/SNAPSHOT.md.
#include "engine/engine.h"

namespace hsp::engine {

void SnapshotStore::publish(SnapshotPtr snap) {
  SnapshotPtr old;
  {
    std::lock_guard<std::mutex> lock(mu_);
    old = std::move(latest_);
    latest_ = std::move(snap);
    // Release: a reader whose acquire load sees this value also sees latest_ written above
    // (and everything the builder wrote into the snapshot before publish was called).
    version_.fetch_add(1, std::memory_order_release);
  }
  // `old` is released outside the lock: destroying a large snapshot must not stall readers
  // that are taking the slow path.
}

SnapshotPtr SnapshotStore::load() const {
  std::lock_guard<std::mutex> lock(mu_);
  return latest_;
}

SnapshotStore::Reader::Reader(const SnapshotStore& store) : store_(store) {}

const SnapshotPtr& SnapshotStore::Reader::current() {
  // Fast path: one acquire load and a compare; no shared cache line is written.
  uint64_t v = store_.version_.load(std::memory_order_acquire);
  if (v == seen_ && snap_) return snap_;

  SnapshotPtr latest;
  {
    std::lock_guard<std::mutex> lock(store_.mu_);
    latest = store_.latest_;
    // Re-read under the lock so seen_ names exactly the snapshot we copied; a publish racing
    // with us then shows up as a newer version on the next call.
    v = store_.version_.load(std::memory_order_relaxed);
  }
  // The worker's own control block: per-request copies of snap_ touch only this holder's
  // count, which lives on this worker's cache lines. The holder keeps `latest` alive.
  auto holder = std::make_shared<SnapshotPtr>(std::move(latest));
  const Snapshot* raw = holder->get();
  snap_ = SnapshotPtr(std::move(holder), raw);
  seen_ = v;
  return snap_;
}

}  // namespace hsp::engine
