// The routing engine: an immutable snapshot compiled from a Config, the per-request decision it
// makes, and the upstream state that outlives snapshots. No sockets here; the data plane
// (http1/) asks the engine what to do and does it.
//
// Lifetime: everything a Decision points at belongs to the Snapshot, so whoever holds a Decision
// must also hold the SnapshotPtr it came from (the data plane keeps it per request).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.h"
#include "http/message.h"
#include "util/error.h"

namespace hsp::tls {
class CertSelector;
}  // namespace hsp::tls

namespace hsp::engine {

class Snapshot;
class Site;
class ProxyHandler;
class UpstreamHost;
class CompiledHeaderOps;
using SnapshotPtr = std::shared_ptr<const Snapshot>;
using Clock = std::chrono::steady_clock;

// Per-request state the engine reads and writes while routing, and placeholders read later
// (header_up, header_down, access log).
struct RequestCtx {
  http::Request& req;
  const Site* site = nullptr;
  // Regex captures for {re.NAME.N} / {http.regexp.NAME.N}: ("NAME.N", value).
  std::vector<std::pair<std::string, std::string>> captures;
  const UpstreamHost* upstream = nullptr;  // set by the data plane once one is chosen
  int response_status = 0;                 // set by the data plane for response placeholders
  const http::HeaderMap* response_headers = nullptr;

  explicit RequestCtx(http::Request& r) : req(r) {}
};

// What to do with a request, as decided by the site's routes.
struct Decision {
  enum class Kind {
    respond,  // write status/headers/body from here
    proxy     // stream to an upstream chosen by `proxy`
  };
  Kind kind = Kind::respond;

  // Kind::respond. Caddy answers 200 with an empty body when no handler responded.
  int status = 200;
  std::string body;
  http::HeaderMap headers;
  bool close = false;

  // Kind::proxy.
  const ProxyHandler* proxy = nullptr;

  // Response header operations to apply, in order, when the response head is written (both
  // for Kind::respond and Kind::proxy). Deferred and immediate ops are both here; the engine has
  // already ordered them as Caddy would apply them.
  std::vector<const CompiledHeaderOps*> response_ops;

  int64_t max_request_body = -1;  // from `request_body max_size`; -1: unlimited
  const config::AccessLog* log = nullptr;

  // Kind::respond with a body: the Content-Type Caddy infers ("application/json" for a JSON
  // body, else "text/plain; charset=utf-8"); build_response_headers adds it when no handler or
  // `header` op set one. Empty when there is no body.
  std::string implicit_content_type;
};

// Runtime state of one upstream address, shared by every snapshot that names it so that health
// and connection counts survive reloads. Thread-safe; updated with relaxed atomics (counters)
// and acquire/release where a value publishes a time.
class UpstreamHost {
 public:
  explicit UpstreamHost(std::string dial);

  const std::string& dial() const { return dial_; }  // "127.0.0.1:9000"
  const std::string& host() const { return host_; }  // "127.0.0.1" (no brackets)
  uint16_t port() const { return port_; }

  // Healthy for active checks, not passively failed too often, under max requests.
  bool available(Clock::time_point now, int max_fails, int max_requests) const;
  bool healthy() const { return healthy_.load(std::memory_order_acquire); }
  void set_healthy(bool h) { healthy_.store(h, std::memory_order_release); }
  // Passive health: count one failure that expires after fail_duration.
  void count_failure(Clock::time_point now, Clock::duration fail_duration);
  int fails(Clock::time_point now) const;
  int in_flight() const { return in_flight_.load(std::memory_order_relaxed); }
  void begin_request() { in_flight_.fetch_add(1, std::memory_order_relaxed); }
  void end_request() { in_flight_.fetch_sub(1, std::memory_order_relaxed); }

 private:
  std::string dial_;
  std::string host_;
  uint16_t port_ = 0;
  std::atomic<bool> healthy_{true};
  std::atomic<int> in_flight_{0};
  // Passive failures: a small ring of expiry times (steady_clock ticks); 0 = empty slot.
  static constexpr int kFailSlots = 64;
  std::atomic<int64_t> fail_expiry_[kFailSlots] = {};
  std::atomic<unsigned> fail_next_{0};
};

// Owns UpstreamHosts by dial address across snapshots.
class UpstreamRegistry {
 public:
  std::shared_ptr<UpstreamHost> get(const std::string& dial);
  // Every host still referenced by some snapshot (for active health checks).
  std::vector<std::shared_ptr<UpstreamHost>> live();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_ = make_impl();
  static std::shared_ptr<Impl> make_impl();
};

// A compiled reverse_proxy handler.
class ProxyHandler {
 public:
  virtual ~ProxyHandler() = default;
  virtual const config::ReverseProxy& cfg() const = 0;
  virtual const std::vector<std::shared_ptr<UpstreamHost>>& upstreams() const = 0;
  // Picks an available upstream by the lb_policy, skipping those in `exclude` (already tried
  // for this request). nullptr when none is available.
  virtual UpstreamHost* select(const RequestCtx& ctx,
                               const std::vector<const UpstreamHost*>& exclude) const = 0;
  // header_up onto the outgoing request head (ctx.upstream must be set); header_down onto the
  // response head.
  virtual void apply_header_up(const RequestCtx& ctx, http::HeaderMap& out) const = 0;
  virtual void apply_header_down(const RequestCtx& ctx, http::HeaderMap& out) const = 0;

  // Is the request's peer (req.remote_ip) a trusted proxy for this handler (its own
  // trusted_proxies, else the global option)? Ranges are pre-parsed; feed the answer to
  // set_forwarded_headers.
  virtual bool peer_trusted(const http::Request& req) const { return false; }
  // lb_policy cookie: the Set-Cookie value to add to the response after `chosen` was picked
  // ("lb=<hmac>; Path=/"), or empty when the client's cookie already names it (or the policy is
  // not cookie). Caddy sets it whenever it had to pick a new upstream.
  virtual std::string sticky_cookie(const RequestCtx& ctx, const UpstreamHost& chosen) const {
    return {};
  }
  // Active health checks: does a probe's response body satisfy `health_body`? The pattern is
  // compiled once with the snapshot (a bad one is a load error); true when none is set.
  virtual bool health_body_ok(std::string_view body) const { return true; }
};

class CompiledHeaderOps {
 public:
  virtual ~CompiledHeaderOps() = default;
  virtual void apply(const RequestCtx& ctx, http::HeaderMap& headers) const = 0;
  virtual bool deferred() const = 0;
};

// What a TLS server (config::Server::tls) hands its handshakes as of one snapshot: the SNI table
// and the protocol range. Built with the snapshot (engine/tls_certs.h), so a certificate file
// that does not load rejects the snapshot and the old one keeps serving.
struct ServerTls {
  std::shared_ptr<const tls::CertSelector> selector;
  int min_version = 0;  // OpenSSL's TLS1_2_VERSION / TLS1_3_VERSION
  int max_version = 0;
};

class CertAuthority;

// One immutable routing table.
class Snapshot {
 public:
  virtual ~Snapshot() = default;

  // Compiles cfg. Regexes, placeholders, CIDRs and the host tables are built here, so every
  // error surfaces at load time with its SourceLoc.
  // `certs` issues local-CA certificates for TLS servers; without one (validate, adapt,
  // tests) certificate files are still loaded and checked, and names that would need the local
  // CA are left out of the selectors.
  static Result<SnapshotPtr> build(const config::Config& cfg, UpstreamRegistry& upstreams,
                                   uint64_t generation, CertAuthority* certs = nullptr);

  virtual const config::Config& config() const = 0;
  virtual uint64_t generation() const = 0;

  // The site for a request that arrived on cfg.servers[server_index] with the given Host (no
  // port, any case). Exact names first, then the longest wildcard suffix, then catch-all.
  // No allocation, no lock. nullptr: no site matches; like Caddy, the data plane then answers
  // with an empty 200.
  virtual const Site* find_site(size_t server_index, std::string_view host) const = 0;

  // Runs the site's routes over the request: matchers, rewrites, request header edits and
  // `request_body` limits are applied to ctx.req; the result says how to answer.
  virtual Decision dispatch(const Site& site, RequestCtx& ctx) const = 0;

  // cfg.servers[server_index]'s certificates; nullptr for a cleartext server.
  virtual const ServerTls* server_tls(size_t server_index) const { return nullptr; }

  // Every compiled reverse_proxy handler, for active health checks.
  virtual std::vector<const ProxyHandler*> proxies() const = 0;

  // Sets req.client_ip: req.remote_ip, or, when the peer is in the global trusted_proxies, the
  // first valid address of X-Forwarded-For (Caddy's default, non-strict client_ip). Call before
  // dispatch; client_ip matchers and {client_ip} read it.
  virtual void resolve_client_ip(http::Request& req) const { req.client_ip = req.remote_ip; }
};

// The response head fields as Caddy's ResponseWriter holds them when the status line goes out.
// `out` comes in with what the server set before any handler ran (e.g. Server); the immediate
// `header` ops of decision.response_ops run over it (Caddy applies them when the handler runs,
// before the response exists); then `handler_fields` are merged: for Kind::respond the
// decision's own headers replace same-named fields, for Kind::proxy the upstream's fields (after
// hop-by-hop removal and header_down) are appended; last, the deferred ops run, innermost
// `header` directive first. ctx.response_status / response_headers should be set for
// {http.response.*} placeholders.
void build_response_headers(const Decision& decision, const RequestCtx& ctx,
                            const http::HeaderMap& handler_fields, http::HeaderMap& out);
// The same, moving the fields out of `handler_fields` (the proxy's per-response path).
void build_response_headers(const Decision& decision, const RequestCtx& ctx,
                            http::HeaderMap&& handler_fields, http::HeaderMap& out);

// Sets X-Forwarded-For/-Proto/-Host on an outgoing request head the way Caddy does: the client's
// values are kept and appended to only when the peer (req.remote_ip) is a trusted proxy.
// Caddy's order for the outgoing head: copy the client's fields, http::strip_request_hop_by_hop,
// set_forwarded_headers, then ProxyHandler::apply_header_up (so header_up can override these).
void set_forwarded_headers(const http::Request& req, bool peer_trusted, http::HeaderMap& out);

// Is ip inside any of the CIDRs ("10.0.0.0/8", "::1/128", "127.0.0.1")? Parses on each call;
// snapshot code keeps pre-parsed ranges instead.
bool ip_in_ranges(std::string_view ip, const std::vector<std::string>& cidrs);

// Publishes snapshots to worker threads. publish() may be called from any thread; readers on
// the request path never take a lock (see engine/SNAPSHOT.md for the memory-order argument).
class SnapshotStore {
 public:
  void publish(SnapshotPtr snap);
  SnapshotPtr load() const;  // slow path: takes the mutex; for the reload and tests

  // A worker thread's view. current() costs one acquire load when nothing changed. The pointer
  // it returns shares a control block private to this worker (an aliasing shared_ptr over a
  // worker-local holder), so copying it per request never bounces a cache line between cores.
  class Reader {
   public:
    explicit Reader(const SnapshotStore& store);
    const SnapshotPtr& current();

   private:
    const SnapshotStore& store_;
    uint64_t seen_ = 0;
    SnapshotPtr snap_;  // aliases a worker-local std::shared_ptr<SnapshotPtr>
  };

 private:
  friend class Reader;
  std::atomic<uint64_t> version_{0};
  mutable std::mutex mu_;
  SnapshotPtr latest_;
};

}  // namespace hsp::engine
