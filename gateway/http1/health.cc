// Active health checks (reverse_proxy health_uri / health_interval / health_timeout /
// health_status / health_body / health_headers / health_port). One thread with its own
// io_context: probes never compete with request handling on the workers. Every second it
// re-reads the current snapshot, so upstreams added by a reload are probed from then on and
// removed ones are forgotten.
// g++ 12 reports -Wmismatched-new-delete inside Asio's awaitable frame allocator (aligned_alloc
// paired with its own deallocate); a known false positive of the inliner, not our code.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <map>

#include "http1/worker.h"
#include "util/log.h"

namespace hsp::http1 {
namespace {

namespace http = boost::beast::http;
using asio::redirect_error;
using asio::use_awaitable;
using boost::system::error_code;

bool status_ok(int status, int expect) {
  if (expect == 0) return status >= 200 && status < 300;
  if (expect >= 1 && expect <= 5) return status / 100 == expect;  // "2xx" style
  return status == expect;
}

}  // namespace

struct HealthChecker::Impl {
  explicit Impl(const engine::SnapshotStore& s) : store(s) {}

  const engine::SnapshotStore& store;
  asio::io_context ioc{1};
  std::thread thread;
  std::map<std::string, Clock::time_point> next_due;  // key: dial + " " + uri
  std::map<std::string, bool> busy;

  asio::awaitable<void> loop();
  // `snap` keeps `handler` (and its compiled health_body pattern) alive during the probe.
  asio::awaitable<void> probe(std::shared_ptr<engine::UpstreamHost> host, engine::SnapshotPtr snap,
                              const engine::ProxyHandler* handler, std::string key);
};

asio::awaitable<void> HealthChecker::Impl::probe(std::shared_ptr<engine::UpstreamHost> host,
                                                 engine::SnapshotPtr snap,
                                                 const engine::ProxyHandler* handler,
                                                 std::string key) {
  const config::ActiveHealth& a = handler->cfg().active;
  bool ok = false;
  std::string why;
  try {
    beast::tcp_stream s(ioc);
    auto timeout = std::chrono::duration_cast<Clock::duration>(a.timeout);
    if (timeout.count() <= 0) timeout = std::chrono::seconds(5);
    s.expires_after(timeout);
    error_code ec;
    uint16_t port = a.port ? static_cast<uint16_t>(*a.port) : host->port();
    auto addr = asio::ip::make_address(host->host(), ec);
    if (!ec) {
      co_await s.async_connect(tcp::endpoint(addr, port), redirect_error(use_awaitable, ec));
    } else {
      tcp::resolver resolver(ioc);
      auto results = co_await resolver.async_resolve(host->host(), std::to_string(port),
                                                     redirect_error(use_awaitable, ec));
      if (!ec) co_await s.async_connect(results, redirect_error(use_awaitable, ec));
    }
    if (ec) {
      why = "connect: " + ec.message();
    } else {
      std::string host_field = host->host().find(':') != std::string::npos
                                   ? "[" + host->host() + "]:" + std::to_string(port)
                                   : host->host() + ":" + std::to_string(port);
      std::string req = "GET " + (a.uri.empty() ? std::string("/") : a.uri) +
                        " HTTP/1.1\r\nHost: " + host_field +
                        "\r\nUser-Agent: hsp-gateway-health\r\nConnection: close\r\n";
      for (const auto& [k, v] : a.headers) req += k + ": " + v + "\r\n";
      req += "\r\n";
      co_await asio::async_write(s, asio::buffer(req), redirect_error(use_awaitable, ec));
      beast::flat_buffer buf;
      http::response_parser<http::string_body> p;
      p.body_limit(1 << 20);
      if (!ec) co_await http::async_read(s, buf, p, redirect_error(use_awaitable, ec));
      if (ec) {
        why = "exchange: " + ec.message();
      } else {
        int status = p.get().result_int();
        ok = status_ok(status, a.expect_status);
        if (!ok) why = "status " + std::to_string(status);
        if (ok && !handler->health_body_ok(p.get().body())) {
          ok = false;
          why = "body does not match";
        }
      }
    }
  } catch (const std::exception& e) {
    ok = false;
    why = e.what();
  }
  busy[key] = false;
  if (host->healthy() != ok) {
    host->set_healthy(ok);
    auto line = ok ? log::info("upstream_healthy") : log::warn("upstream_unhealthy");
    line.kv("upstream", host->dial()).kv("uri", a.uri);
    if (!ok) line.kv("reason", why);
  }
}

asio::awaitable<void> HealthChecker::Impl::loop() {
  asio::steady_timer tick(ioc);
  for (;;) {
    engine::SnapshotPtr snap = store.load();
    Clock::time_point now = Clock::now();
    if (snap) {
      std::map<std::string, Clock::time_point> seen;
      for (const engine::ProxyHandler* h : snap->proxies()) {
        const config::ActiveHealth& a = h->cfg().active;
        if (a.uri.empty()) continue;
        auto interval =
            std::max<Clock::duration>(std::chrono::duration_cast<Clock::duration>(a.interval),
                                      std::chrono::milliseconds(100));
        for (const auto& up : h->upstreams()) {
          std::string key = up->dial() + " " + a.uri;
          auto it = next_due.find(key);
          Clock::time_point due = it == next_due.end() ? now : it->second;
          if (due <= now && !busy[key]) {
            busy[key] = true;
            due = now + interval;
            asio::co_spawn(ioc, probe(up, snap, h, key), asio::detached);
          }
          seen[key] = due;
        }
      }
      next_due.swap(seen);
    }
    tick.expires_after(std::chrono::milliseconds(100));
    error_code ec;
    co_await tick.async_wait(redirect_error(use_awaitable, ec));
    if (ec) co_return;
  }
}

HealthChecker::HealthChecker(const engine::SnapshotStore& store)
    : impl_(std::make_unique<Impl>(store)) {}

HealthChecker::~HealthChecker() {
  stop();
}

void HealthChecker::start() {
  Impl* m = impl_.get();
  asio::co_spawn(m->ioc, m->loop(), asio::detached);
  m->thread = std::thread([m] {
    try {
      m->ioc.run();
    } catch (const std::exception& e) {
      log::error("health_checker_failed").kv("error", e.what());
    }
  });
}

void HealthChecker::stop() {
  impl_->ioc.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace hsp::http1
