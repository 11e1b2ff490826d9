// The HTTP/1.1 data plane: worker threads, listeners, downstream connections, the proxy path and
// active health checks. This header is Asio-free on purpose (main.cc and tests include it); the
// Beast/Asio types live in http1/worker.h and the .cc files.
//
// Threading: one io_context per worker thread. Every worker owns an SO_REUSEPORT listening
// socket per configured server, its own upstream connection pool and its own
// SnapshotStore::Reader, so the request path shares nothing between threads except the
// snapshot (immutable) and UpstreamHost counters (atomics).
//
// The control thread (main, tests) calls start(), sync_listeners() after each publish,
// stop_accepting(), drain() and stop(); those calls must not race each other.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "util/error.h"

namespace hsp::http1 {

struct Options {
  int threads = 0;  // 0: one per core
  bool active_health_checks = true;
  // HTTP/3: ask every new QUIC client to prove its address with a Retry (RFC 9000 §8.1.2), one
  // more round trip per connection. Off: only when a worker has more than 100 handshakes in
  // progress (a flood of Initials, possibly from spoofed addresses).
  bool quic_retry = false;
};

// One configured listener as bound.
struct ListenAddr {
  std::string bind_host;  // as configured ("" = all interfaces)
  uint16_t config_port = 0;
  std::string addr;   // "127.0.0.1:8080", "[::]:80"
  uint16_t port = 0;  // the bound port (differs from config_port only for port 0)
};

class DataPlane {
 public:
  DataPlane(engine::SnapshotStore& store, engine::UpstreamRegistry& upstreams, Options opts);
  ~DataPlane();  // stops (without grace) and joins the workers
  DataPlane(const DataPlane&) = delete;
  DataPlane& operator=(const DataPlane&) = delete;

  // Opens the listeners of the store's current snapshot in every worker and starts the worker
  // threads and the health checker. Errors: listeners that could not be bound (nothing runs).
  Errors start();

  // Call after publishing a new snapshot: opens listeners for new (bind_host, port) pairs and
  // closes removed ones, in every worker; unchanged listeners keep accepting throughout.
  // Errors: new listeners that could not be bound (the rest of the update still applies).
  Errors sync_listeners();

  std::vector<ListenAddr> listeners() const;
  // The bound port of the configured (bind_host, port); 0 when there is no such listener.
  uint16_t bound_port(const std::string& bind_host, uint16_t config_port) const;

  // Shutdown in steps: stop_accepting() closes every listener; drain() closes idle keep-alive
  // connections, lets requests in flight finish and returns true once no connection is left,
  // or false at the deadline; abort() then cuts the connections still open and waits (until
  // its deadline) for their requests to end and be logged; stop() stops the workers.
  void stop_accepting();
  bool drain(std::chrono::steady_clock::time_point deadline);
  bool abort(std::chrono::steady_clock::time_point deadline);
  void stop();

  int threads() const;
  int64_t open_connections() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hsp::http1
