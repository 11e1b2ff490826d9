// Private to gateway/http1/: the per-thread state of the data plane, with Asio/Beast types.
// Only http1/*.cc include this header (Beast templates stay out of widely included headers).
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/engine.h"
#include "http1/upstream_stream.h"

namespace hsp::http1 {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

// Process-wide state every worker reads.
struct Shared {
  std::atomic<bool> draining{false};
  std::atomic<bool> aborting{false};  // the grace period ran out: cut what is still open
  std::atomic<int64_t> open_conns{0};
  std::atomic<uint64_t> next_conn_id{1};
};

// Open upstream connections per dial address, process-wide, for `max_conns_per_host`. Only
// handlers with a limit take tokens; the table keeps one small entry per address ever limited.
struct HostSlots {
  std::atomic<int> open{0};
};
std::shared_ptr<HostSlots> host_slots(const std::string& dial);

// One counted upstream connection: releases its slot when the connection goes away, whether it
// was in use or idle in a pool.
class HostConnToken {
 public:
  HostConnToken() = default;
  explicit HostConnToken(std::shared_ptr<HostSlots> s) : slots_(std::move(s)) {}
  HostConnToken(HostConnToken&& o) noexcept = default;
  HostConnToken& operator=(HostConnToken&& o) noexcept {
    release();
    slots_ = std::move(o.slots_);
    return *this;
  }
  ~HostConnToken() { release(); }

 private:
  void release() {
    if (slots_) slots_->open.fetch_sub(1, std::memory_order_relaxed);
    slots_.reset();
  }
  std::shared_ptr<HostSlots> slots_;
};

// Idle keep-alive connections to upstreams, per worker thread (no lock). Keyed by dial address
// rather than UpstreamHost pointer: a host freed after a reload must never hand its connections
// to a new host that happens to reuse the address of the old object.
class UpstreamPool {
 public:
  // An idle connection to `dial` that is still open and was idle for less than max_idle, or
  // nullptr. Connections the peer closed while idle are dropped here.
  std::unique_ptr<UpstreamStream> take(const std::string& dial, Clock::duration max_idle,
                                       HostConnToken& token);
  // Keeps the connection unless this worker already holds max_idle_per_host idle connections to
  // dial or max_idle_total (0: no limit) in all.
  void put(const std::string& dial, std::unique_ptr<UpstreamStream> stream, HostConnToken token,
           size_t max_idle_per_host, size_t max_idle_total);
  // Drops connections idle longer than max_idle (called from a periodic timer).
  void sweep(Clock::duration max_idle);
  void clear() {
    idle_.clear();
    total_ = 0;
  }
  size_t idle_count() const { return total_; }

 private:
  struct Idle {
    std::unique_ptr<UpstreamStream> stream;
    Clock::time_point since;
    HostConnToken token;
  };
  std::unordered_map<std::string, std::vector<Idle>> idle_;
  size_t total_ = 0;
};

// A downstream connection as the worker sees it, so that drain() can close idle ones.
struct ConnSlot {
  beast::tcp_stream* stream = nullptr;
  bool idle = false;  // waiting for the first byte of the next request
};

struct ListenerKey {
  std::string bind_host;
  uint16_t port = 0;
  // Part of the key: a reload that turns a port's server into TLS (or back) replaces the
  // listener instead of leaving the old kind accepting.
  bool tls = false;
  // TLS: the ALPN protocols offered, in preference order ("h2", "http/1.1"), from
  // `servers { protocols }`; the SSL_CTX offers them for its whole life, so a change replaces
  // the listener like the TLS switch above.
  std::vector<std::string> alpn;
  // TLS: HTTP/3 on the same address and port over UDP (`protocols ... h3`); also part of the
  // key, so turning it on or off replaces the listener.
  bool h3 = false;
  bool operator==(const ListenerKey&) const = default;
};

// Body buffers of one worker, reused: a buffer in a coroutine's locals would make every
// exchange allocate (and free) a frame of 16 KiB+, which showed in the h2 benchmark's profile.
class BufferPool {
 public:
  static constexpr size_t kSize = 16 * 1024;
  struct Return {
    BufferPool* pool;
    void operator()(char* b) const { pool->put(b); }
  };
  using Buffer = std::unique_ptr<char[], Return>;

  Buffer get() {
    if (free_.empty()) return Buffer(new char[kSize], Return{this});
    char* b = free_.back();
    free_.pop_back();
    return Buffer(b, Return{this});
  }
  ~BufferPool() {
    for (char* b : free_) delete[] b;
  }

 private:
  void put(char* b) {
    if (free_.size() < 64) {
      free_.push_back(b);
    } else {
      delete[] b;
    }
  }
  std::vector<char*> free_;
};

// The index of the listener's server in `s`, or SIZE_MAX when the config has none (any more).
inline size_t find_server(const engine::Snapshot& s, const ListenerKey& key) {
  const auto& servers = s.config().servers;
  for (size_t i = 0; i < servers.size(); ++i) {
    if (servers[i].bind_host == key.bind_host && servers[i].port == key.port) return i;
  }
  return SIZE_MAX;
}

// find_server() remembered per snapshot generation, for one connection: server indices can
// move between snapshots, a listener's (bind_host, port) does not.
class ServerIndexCache {
 public:
  size_t of(const engine::Snapshot& s, const ListenerKey& key) {
    if (s.generation() != gen_ || index_ == SIZE_MAX) {
      gen_ = s.generation();
      index_ = find_server(s, key);
    }
    return index_;
  }

 private:
  uint64_t gen_ = 0;
  size_t index_ = SIZE_MAX;
};

struct TlsContext;      // http1/tls_context.h
struct H2UpstreamPool;  // http1/h2_upstream.cc

struct Worker {
  Worker(size_t idx, const engine::SnapshotStore& store, Shared& sh)
      : index(idx), reader(store), shared(sh) {}
  // Pooled streams go first, while their io_context lives; the io_context goes next (it
  // destroys unfinished coroutine frames, whose sessions still unregister from `conns`).
  ~Worker() {
    pool.clear();
    h2_upstreams.reset();
    ioc.reset();
  }

  size_t index;
  std::thread thread;
  engine::SnapshotStore::Reader reader;  // used on this worker's thread only
  Shared& shared;
  std::unordered_set<ConnSlot*> conns;
  BufferPool buffers;  // declared before ioc: frames destroyed with it return theirs here
  UpstreamPool pool;
  std::shared_ptr<H2UpstreamPool> h2_upstreams;  // HTTP/2 upstream connections, made on demand
  // TLS client contexts for upstreams, by transport options and snapshot generation
  // (proxy_common.cc, upstream_tls()).
  std::unordered_map<std::string, UpstreamTlsConfig> upstream_tls;
  // One thread runs it, and every socket of the worker is only ever used on that thread (other
  // threads post to it; the control thread only opens listeners on it), so the reactor's
  // per-descriptor locks are off: two lock/unlock pairs fewer per socket operation. Posting and
  // timers stay locked.
  std::unique_ptr<asio::io_context> ioc =
      std::make_unique<asio::io_context>(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO);
};

// Serves one accepted downstream connection until it closes. Never throws. With `tls`, the
// connection starts with a TLS handshake and HTTP/1.1 runs inside it.
asio::awaitable<void> serve_connection(Worker& w, tcp::socket sock, ListenerKey key,
                                       std::shared_ptr<TlsContext> tls);

// Closes every idle downstream connection of the worker (runs on the worker's thread).
void close_idle_connections(Worker& w);
// Cancels every downstream connection of the worker, busy ones too, so that their requests end
// (and are logged) before the worker stops (runs on the worker's thread).
void abort_connections(Worker& w);

// The active health checker: a thread of its own that probes every upstream of the current
// snapshot's reverse_proxy handlers that has health_uri set.
class HealthChecker {
 public:
  explicit HealthChecker(const engine::SnapshotStore& store);
  ~HealthChecker();
  void start();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hsp::http1
