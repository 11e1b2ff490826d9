// Workers, listeners and the shutdown sequence of the data plane (see server.h).
//
// Listeners are bound synchronously by the control thread (so bind errors come back as values
// from start()/sync_listeners()), one SO_REUSEPORT socket per worker, each created on that
// worker's io_context; the accept loop then runs on the worker. Closing is posted to the worker
// that owns the socket.
#include "http1/server.h"

#include <sys/socket.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <map>
#include <optional>

#include "http1/h3_endpoint.h"
#include "http1/tls_context.h"
#include "http1/worker.h"
#include "util/log.h"

namespace hsp::http1 {
namespace {

using asio::redirect_error;
using asio::use_awaitable;
using boost::system::error_code;

asio::awaitable<void> accept_loop(Worker& w, std::shared_ptr<tcp::acceptor> acc, ListenerKey key,
                                  std::shared_ptr<TlsContext> tls) {
  asio::steady_timer backoff(*w.ioc);
  for (;;) {
    error_code ec;
    tcp::socket sock = co_await acc->async_accept(redirect_error(use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acc->is_open()) co_return;
      // EMFILE and friends: back off instead of spinning.
      log::warn("accept_failed").kv("error", ec.message()).kv("worker", w.index);
      backoff.expires_after(std::chrono::milliseconds(50));
      co_await backoff.async_wait(redirect_error(use_awaitable, ec));
      continue;
    }
    asio::co_spawn(*w.ioc, serve_connection(w, std::move(sock), key, tls), asio::detached);
  }
}

// Drops upstream connections idle past the default keepalive_idle; take() applies each
// handler's own limit.
asio::awaitable<void> pool_sweeper(Worker& w) {
  asio::steady_timer t(*w.ioc);
  for (;;) {
    t.expires_after(std::chrono::seconds(2));
    error_code ec;
    co_await t.async_wait(redirect_error(use_awaitable, ec));
    if (ec) co_return;
    w.pool.sweep(std::chrono::minutes(2));
  }
}

struct Listener {
  ListenerKey key;
  std::string addr;
  uint16_t port = 0;
  std::vector<std::shared_ptr<tcp::acceptor>> acceptors;  // [worker index]
  std::shared_ptr<TlsContext> tls;                        // HTTPS listeners
  H3Listener h3;                                          // HTTPS listeners with h3: UDP
};

// The worker whose thread this is (null on other threads). Handshakes run on their worker's
// thread, so the certificate lookup can use that worker's lock-free snapshot reader.
thread_local Worker* tl_worker = nullptr;

// The current snapshot's certificates for the server behind `key`, for the SNI callback.
std::shared_ptr<const tls::CertSelector> current_selector(const ListenerKey& key) {
  Worker* w = tl_worker;
  if (!w) return nullptr;
  engine::SnapshotPtr snap = w->reader.current();
  size_t i = find_server(*snap, key);
  const engine::ServerTls* st = i == SIZE_MAX ? nullptr : snap->server_tls(i);
  return st ? st->selector : nullptr;
}

// One SSL_CTX per HTTPS listener, for its whole life: certificates come from the snapshot at
// each handshake (the selector swaps with the snapshot), and the protocol range is set per
// connection, so nothing here changes on reload; the session-ticket keys stay with the listener.
Result<std::shared_ptr<TlsContext>> make_tls_context(const ListenerKey& key) {
  tls::ServerOptions o;
  // ALPN from `servers { protocols }` (part of the key: a change replaces the listener).
  o.alpn = key.alpn;
  auto sc = tls::ServerContext::create(o, [key] { return current_selector(key); });
  if (!sc) return sc.errors();
  return std::make_shared<TlsContext>(std::move(*sc));
}

std::string endpoint_str(const tcp::endpoint& ep) {
  auto a = ep.address();
  std::string host = a.to_string();
  if (a.is_v6()) host = "[" + host + "]";
  return host + ":" + std::to_string(ep.port());
}

}  // namespace

struct DataPlane::Impl {
  Impl(engine::SnapshotStore& s, engine::UpstreamRegistry& u, Options o)
      : store(s), upstreams(u), opts(o) {}

  engine::SnapshotStore& store;
  engine::UpstreamRegistry& upstreams;
  Options opts;
  Shared shared;
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<Listener> listeners;  // control thread only
  std::unique_ptr<HealthChecker> health;
  using Guard = asio::executor_work_guard<asio::io_context::executor_type>;
  std::vector<Guard> guards;
  bool running = false;
  // During sync_listeners: the QUIC sockets of replaced listeners, by (bind_host, port), for
  // the listener that replaces them.
  std::map<std::pair<std::string, uint16_t>, H3Listener> carried_h3;
  // QUIC endpoints of closed listeners, draining (or drained), by (bind_host, port): a listener
  // that comes back on the same address and port takes them back (resume_h3) instead of
  // binding a second socket set beside them.
  std::map<std::pair<std::string, uint16_t>, H3Listener> parked_h3;

  Errors open(const ListenerKey& key, Listener& out);
  void start_accepting(Listener& l);
  void close(Listener& l);
};

Errors DataPlane::Impl::open(const ListenerKey& key, Listener& out) {
  auto fail = [&](const std::string& what, const error_code& ec) {
    for (auto& a : out.acceptors) {
      error_code ignored;
      a->close(ignored);
    }
    out.acceptors.clear();
    std::string where =
        (key.bind_host.empty() ? std::string() : key.bind_host) + ":" + std::to_string(key.port);
    return Errors{Error{SourceLoc{}, "listen tcp " + where + ": " + what + ": " + ec.message()}};
  };
  error_code ec;
  std::vector<asio::ip::address> addrs;
  if (key.bind_host.empty()) {
    addrs.push_back(asio::ip::address_v6::any());  // dual stack, like Go's ":port"
    addrs.push_back(asio::ip::address_v4::any());
  } else {
    auto a = asio::ip::make_address(key.bind_host, ec);
    if (ec) {
      // A host name: resolve it once, synchronously (a load-time cost only).
      tcp::resolver resolver(*workers[0]->ioc);
      auto results = resolver.resolve(key.bind_host, "", ec);
      if (ec || results.empty()) return fail("resolve", ec);
      a = results.begin()->endpoint().address();
    }
    addrs.push_back(a);
  }
  out.key = key;
  uint16_t port = key.port;
  asio::ip::address bound_addr;
  for (size_t ai = 0; ai < addrs.size(); ++ai) {
    bound_addr = addrs[ai];
    out.acceptors.clear();
    port = key.port;
    ec = {};
    if (port != 0) {
      // SO_REUSEPORT would let us share a port another process (say, an old gateway) already
      // listens on with SO_REUSEPORT; a plain bind first turns that into "address in use".
      tcp::acceptor probe(*workers[0]->ioc);
      tcp::endpoint ep(addrs[ai], port);
      probe.open(ep.protocol(), ec);
      if (!ec) probe.set_option(asio::socket_base::reuse_address(true), ec);
      if (!ec && ep.address().is_v6() && ep.address().is_unspecified()) {
        probe.set_option(asio::ip::v6_only(false), ec);
      }
      if (!ec) probe.bind(ep, ec);
      error_code ignored;
      probe.close(ignored);
      if (ec && ai + 1 < addrs.size() && ec != asio::error::address_in_use) continue;
      if (ec) return fail("bind", ec);
    }
    for (auto& w : workers) {
      auto acc = std::make_shared<tcp::acceptor>(*w->ioc);
      tcp::endpoint ep(addrs[ai], port);
      acc->open(ep.protocol(), ec);
      if (ec) break;
      acc->set_option(asio::socket_base::reuse_address(true), ec);
      int one = 1;
      ::setsockopt(acc->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
      if (ep.address().is_v6() && ep.address().is_unspecified()) {
        acc->set_option(asio::ip::v6_only(false), ec);
      }
      acc->bind(ep, ec);
      if (ec) break;
      acc->listen(asio::socket_base::max_listen_connections, ec);
      if (ec) break;
      // Port 0: every other worker binds the port the first one got.
      if (port == 0) port = acc->local_endpoint(ec).port();
      out.acceptors.push_back(std::move(acc));
    }
    if (!ec) break;
    // IPv6 unavailable for the wildcard: fall back to 0.0.0.0.
    if (ai + 1 < addrs.size() && out.acceptors.empty()) continue;
    return fail("bind", ec);
  }
  if (ec) return fail("bind", ec);
  if (key.tls) {
    auto tls = make_tls_context(key);
    if (!tls) {
      for (auto& a : out.acceptors) a->close(ec);
      out.acceptors.clear();
      return tls.errors();
    }
    out.tls = std::move(*tls);
  }
  auto carried = carried_h3.find({key.bind_host, key.port});
  if (key.h3 && carried != carried_h3.end() && !carried->second.endpoints.empty() &&
      carried->second.port == port) {
    // The listener was replaced for another reason (its ALPN list): its QUIC connections go on
    // on the same sockets. A new socket set beside the old one would split the port's
    // SO_REUSEPORT group between a draining server and a fresh one, each dropping the other's
    // packets.
    out.h3 = std::move(carried->second);
    carried_h3.erase(carried);
  } else if (auto parked = parked_h3.find({key.bind_host, key.port});
             key.h3 && parked != parked_h3.end() && parked->second.port == port) {
    resume_h3(parked->second);
    out.h3 = std::move(parked->second);
    parked_h3.erase(parked);
  } else if (key.h3) {
    // HTTP/3 on the same address and port, over UDP.
    std::vector<Worker*> ws;
    for (auto& w : workers) ws.push_back(w.get());
    engine::SnapshotPtr snap = store.load();
    auto h3 = open_h3(ws, bound_addr, port, key, opts.quic_retry, snap->config().global);
    if (!h3) {
      for (auto& a : out.acceptors) a->close(ec);
      out.acceptors.clear();
      return h3.errors();
    }
    out.h3 = std::move(*h3);
  }
  out.port = port;
  out.addr = endpoint_str(out.acceptors[0]->local_endpoint(ec));
  return {};
}

void DataPlane::Impl::start_accepting(Listener& l) {
  for (size_t i = 0; i < workers.size(); ++i) {
    Worker& w = *workers[i];
    auto acc = l.acceptors[i];
    ListenerKey key = l.key;
    asio::co_spawn(*w.ioc, accept_loop(w, acc, key, l.tls), asio::detached);
  }
  start_h3(l.h3);
  log::info("listening")
      .kv("addr", l.addr)
      .kv("bind_host", l.key.bind_host)
      .kv("port", static_cast<int>(l.port))
      .kv("tls", l.key.tls)
      .kv("h3", !l.h3.endpoints.empty())
      .kv("quic_retry", !l.h3.endpoints.empty() && opts.quic_retry)
      .kv("workers", static_cast<int>(workers.size()));
}

void DataPlane::Impl::close(Listener& l) {
  // Each acceptor is closed on its own worker (Asio objects are not thread-safe). Once the
  // workers run, wait for that: a reload may bind the same port on another address next.
  auto done = std::make_shared<std::atomic<size_t>>(0);
  size_t n = std::min(l.acceptors.size(), workers.size());
  for (size_t i = 0; i < n; ++i) {
    auto acc = l.acceptors[i];
    asio::post(*workers[i]->ioc, [acc, done] {
      error_code ignored;
      acc->close(ignored);
      done->fetch_add(1, std::memory_order_release);
    });
  }
  if (running) {
    auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (done->load(std::memory_order_acquire) < n &&
           std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  // QUIC connections are not cut with the socket: GOAWAY first, then each worker's UDP socket
  // closes once its connections have drained (h3_endpoint.h).
  if (!l.h3.endpoints.empty()) {
    close_h3(l.h3);
    parked_h3[{l.key.bind_host, l.key.port}] = std::move(l.h3);
  }
  log::info("listener_closed").kv("addr", l.addr);
  l.acceptors.clear();
}

DataPlane::DataPlane(engine::SnapshotStore& store, engine::UpstreamRegistry& upstreams,
                     Options opts)
    : impl_(std::make_unique<Impl>(store, upstreams, opts)) {
  int n = opts.threads > 0 ? opts.threads : static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  for (int i = 0; i < n; ++i) {
    impl_->workers.push_back(
        std::make_unique<Worker>(static_cast<size_t>(i), store, impl_->shared));
  }
}

DataPlane::~DataPlane() {
  stop();
}

int DataPlane::threads() const {
  return static_cast<int>(impl_->workers.size());
}

int64_t DataPlane::open_connections() const {
  return impl_->shared.open_conns.load(std::memory_order_relaxed);
}

Errors DataPlane::start() {
  Impl& m = *impl_;
  if (m.running) return {};
  Errors errs = sync_listeners();
  if (!errs.empty()) {
    for (auto& l : m.listeners) m.close(l);
    m.listeners.clear();
    return errs;
  }
  for (auto& w : m.workers) {
    m.guards.emplace_back(asio::make_work_guard(*w->ioc));
    asio::co_spawn(*w->ioc, pool_sweeper(*w), asio::detached);
    Worker* wp = w.get();
    wp->thread = std::thread([wp] {
      tl_worker = wp;
      for (;;) {
        try {
          wp->ioc->run();
          return;
        } catch (const std::exception& e) {
          // A handler outside a session threw (sessions catch their own): log, keep serving.
          log::error("worker_exception").kv("worker", wp->index).kv("error", e.what());
        }
      }
    });
  }
  if (m.opts.active_health_checks) {
    m.health = std::make_unique<HealthChecker>(m.store);
    m.health->start();
  }
  m.running = true;
  return {};
}

Errors DataPlane::sync_listeners() {
  Impl& m = *impl_;
  engine::SnapshotPtr snap = m.store.load();
  Errors errs;
  if (!snap) return errs;
  std::vector<ListenerKey> want;
  for (const auto& s : snap->config().servers) {
    ListenerKey k{s.bind_host, s.port, s.tls, s.tls ? s.alpn : std::vector<std::string>{},
                  s.tls && s.h3};
    if (std::find(want.begin(), want.end(), k) == want.end()) want.push_back(k);
  }
  // Removed first, so that a port moving between bind addresses can be bound again.
  for (auto it = m.listeners.begin(); it != m.listeners.end();) {
    if (std::find(want.begin(), want.end(), it->key) == want.end()) {
      const bool h3_stays =
          it->key.h3 && std::any_of(want.begin(), want.end(), [&](auto& k) {
            return k.h3 && k.bind_host == it->key.bind_host && k.port == it->key.port;
          });
      if (h3_stays) {
        H3Listener& h3 = m.carried_h3[{it->key.bind_host, it->key.port}];
        h3 = std::move(it->h3);
        h3.port = it->port;
        it->h3 = {};
      }
      m.close(*it);
      it = m.listeners.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& k : want) {
    bool have = std::any_of(m.listeners.begin(), m.listeners.end(),
                            [&](const Listener& l) { return l.key == k; });
    if (have) continue;
    Listener l;
    Errors e = m.open(k, l);
    if (!e.empty()) {
      errs.insert(errs.end(), e.begin(), e.end());  // the caller logs them
      continue;
    }
    m.start_accepting(l);
    m.listeners.push_back(std::move(l));
  }
  // Carried sockets nobody took (the new listener failed to bind): drain them as closed.
  for (auto& [where, h3] : m.carried_h3) {
    close_h3(h3);
    m.parked_h3[where] = std::move(h3);
  }
  m.carried_h3.clear();
  // Endpoints that have closed their sockets for good need not be kept.
  std::erase_if(m.parked_h3, [](const auto& p) { return h3_done(p.second); });
  return errs;
}

std::vector<ListenAddr> DataPlane::listeners() const {
  std::vector<ListenAddr> out;
  for (const auto& l : impl_->listeners) {
    out.push_back(ListenAddr{l.key.bind_host, l.key.port, l.addr, l.port});
  }
  return out;
}

uint16_t DataPlane::bound_port(const std::string& bind_host, uint16_t config_port) const {
  for (const auto& l : impl_->listeners) {
    if (l.key.bind_host == bind_host && l.key.port == config_port) return l.port;
  }
  return 0;
}

void DataPlane::stop_accepting() {
  Impl& m = *impl_;
  for (auto& l : m.listeners) m.close(l);
  m.listeners.clear();
}

bool DataPlane::drain(std::chrono::steady_clock::time_point deadline) {
  Impl& m = *impl_;
  m.shared.draining.store(true, std::memory_order_release);
  for (;;) {
    // Re-posted every round: a connection that finished its request after the last round
    // closes itself (it sees `draining`), but one idle before the flag was set needs a nudge.
    for (auto& w : m.workers) {
      Worker* wp = w.get();
      asio::post(*wp->ioc, [wp] { close_idle_connections(*wp); });
    }
    if (m.shared.open_conns.load(std::memory_order_relaxed) == 0) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

bool DataPlane::abort(std::chrono::steady_clock::time_point deadline) {
  Impl& m = *impl_;
  m.shared.aborting.store(true, std::memory_order_release);
  for (auto& w : m.workers) {
    Worker* wp = w.get();
    asio::post(*wp->ioc, [wp] { abort_connections(*wp); });
  }
  while (m.shared.open_conns.load(std::memory_order_relaxed) > 0) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

void DataPlane::stop() {
  Impl& m = *impl_;
  if (m.health) {
    m.health->stop();
    m.health.reset();
  }
  for (auto& l : m.listeners) m.close(l);
  m.listeners.clear();
  m.guards.clear();
  for (auto& w : m.workers) w->ioc->stop();
  for (auto& w : m.workers) {
    if (w->thread.joinable()) w->thread.join();
  }
  m.running = false;
}

}  // namespace hsp::http1
