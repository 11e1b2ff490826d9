// reverse_proxy: upstream selection (Caddy 2.6 selectionpolicies.go), header_up/down and the
// X-Forwarded-* headers (reverseproxy.go addForwardedHeaders).
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "engine/compiled.h"
#include "http/message.h"

namespace hsp::engine {

namespace {

// Per-thread xorshift: selection must not take a lock or share a cache line between workers.
uint64_t next_random() {
  thread_local uint64_t state = [] {
    uint64_t seed =
        static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    seed ^= std::hash<std::thread::id>{}(std::this_thread::get_id()) * 0x9e3779b97f4a7c15ull;
    return seed | 1;
  }();
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return state;
}

uint32_t fnv1a32(std::string_view a, std::string_view b) {
  uint32_t h = 2166136261u;
  for (unsigned char c : a) h = (h ^ c) * 16777619u;
  for (unsigned char c : b) h = (h ^ c) * 16777619u;
  return h;
}

std::string hmac_sha256_hex(const std::string& secret, const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), md, &len);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

bool valid_dial(const std::string& dial) {
  std::string_view host, port;
  if (!split_host_port(dial, host, port)) return !host.empty();
  if (port.empty() || port.size() > 5) return false;
  unsigned v = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  // An empty host (":9002") is valid: like Go's dialer, UpstreamHost dials the local machine.
  return v > 0 && v <= 65535;
}

}  // namespace

std::unique_ptr<ProxyHandlerImpl> ProxyHandlerImpl::compile(const config::ReverseProxy& cfg,
                                                            const config::GlobalOptions& global,
                                                            UpstreamRegistry& registry,
                                                            Errors& errors) {
  auto p = std::make_unique<ProxyHandlerImpl>();
  p->cfg_ = &cfg;
  for (const auto& u : cfg.upstreams) {
    if (!valid_dial(u.dial)) {
      errors.push_back(Error{u.loc, "reverse_proxy: invalid upstream address '" + u.dial + "'"});
      continue;
    }
    p->upstreams_.push_back(registry.get(u.dial));
  }
  if (cfg.lb_policy == config::LbPolicy::header && cfg.lb_key.empty()) {
    errors.push_back(Error{cfg.loc, "reverse_proxy: lb_policy header needs a field name"});
  }
  if (cfg.lb_policy == config::LbPolicy::cookie) {
    p->cookie_name_ = cfg.lb_key.empty() ? "lb" : cfg.lb_key;
    // The cookie value for each upstream never changes within a snapshot: hash it once here
    // instead of once per request.
    for (const auto& u : p->upstreams_) {
      p->cookie_hashes_.push_back(hmac_sha256_hex(cfg.lb_secret, u->dial()));
    }
  }
  if (!cfg.active.expect_body.empty()) {
    p->health_body_ = std::make_unique<Regex>();
    std::string why;
    if (!Regex::compile(cfg.active.expect_body, *p->health_body_, why)) {
      errors.push_back(Error{cfg.loc, "reverse_proxy: bad health_body regexp '" +
                                          cfg.active.expect_body + "': " + why});
    }
  }
  std::unique_ptr<HeaderOpsImpl> unused;
  compile_header_ops(cfg.header_up, p->header_up_, unused, errors);
  if (unused) errors.push_back(Error{cfg.loc, "header_up: '?' defaults apply to responses only"});
  unused.reset();
  compile_header_ops(cfg.header_down, p->header_down_, unused, errors);
  if (unused) {
    // header_down applies to the upstream's response as one step; a default is just a
    // conditional set there.
    if (!p->header_down_) {
      p->header_down_ = std::move(unused);
    } else {
      errors.push_back(Error{cfg.loc,
                             "header_down: mixing '?' defaults with other operations "
                             "is not supported"});
    }
  }
  const auto& trusted = cfg.trusted_proxies.empty() ? global.trusted_proxies : cfg.trusted_proxies;
  for (const auto& t : trusted) {
    IpRange r;
    std::string why;
    if (!parse_range(t, r, &why)) {
      errors.push_back(Error{cfg.loc, "trusted_proxies: " + why});
      continue;
    }
    p->trusted_.push_back(r);
  }
  return p;
}

bool ProxyHandlerImpl::usable(const UpstreamHost* u, Clock::time_point now,
                              const std::vector<const UpstreamHost*>& exclude) const {
  if (std::find(exclude.begin(), exclude.end(), u) != exclude.end()) return false;
  return u->available(now, cfg_->passive.max_fails, cfg_->passive.unhealthy_request_count);
}

// Reservoir sampling over the available hosts, one pass, as Caddy's selectRandomHost.
UpstreamHost* ProxyHandlerImpl::pick_random(Clock::time_point now,
                                            const std::vector<const UpstreamHost*>& ex) const {
  UpstreamHost* chosen = nullptr;
  uint64_t count = 0;
  for (const auto& u : upstreams_) {
    if (!usable(u.get(), now, ex)) continue;
    ++count;
    if (next_random() % count == 0) chosen = u.get();
  }
  return chosen;
}

// Rendezvous hashing as Caddy's hostByHashing: the highest fnv32a(key + dial) wins, so a host
// going away only moves the keys that were on it.
UpstreamHost* ProxyHandlerImpl::pick_hash(std::string_view key, Clock::time_point now,
                                          const std::vector<const UpstreamHost*>& ex) const {
  UpstreamHost* chosen = nullptr;
  uint32_t best = 0;
  for (const auto& u : upstreams_) {
    if (!usable(u.get(), now, ex)) continue;
    uint32_t h = fnv1a32(key, u->dial());
    if (h > best) {
      best = h;
      chosen = u.get();
    }
  }
  return chosen;
}

UpstreamHost* ProxyHandlerImpl::select(const RequestCtx& ctx,
                                       const std::vector<const UpstreamHost*>& ex) const {
  if (upstreams_.empty()) return nullptr;
  const Clock::time_point now = Clock::now();
  const http::Request& r = ctx.req;
  switch (cfg_->lb_policy) {
    case config::LbPolicy::random:
      return pick_random(now, ex);
    case config::LbPolicy::round_robin: {
      uint32_t n = static_cast<uint32_t>(upstreams_.size());
      for (uint32_t i = 0; i < n; ++i) {
        uint32_t robin = robin_.fetch_add(1, std::memory_order_relaxed) + 1;
        UpstreamHost* u = upstreams_[robin % n].get();
        if (usable(u, now, ex)) return u;
      }
      return nullptr;
    }
    case config::LbPolicy::least_conn: {
      UpstreamHost* best = nullptr;
      int least = -1;
      uint64_t ties = 0;
      for (const auto& u : upstreams_) {
        if (!usable(u.get(), now, ex)) continue;
        int n = u->in_flight();
        if (least == -1 || n < least) {
          least = n;
          ties = 0;
        }
        if (n == least) {
          ++ties;
          if (next_random() % ties == 0) best = u.get();
        }
      }
      return best;
    }
    case config::LbPolicy::first:
      for (const auto& u : upstreams_) {
        if (usable(u.get(), now, ex)) return u.get();
      }
      return nullptr;
    case config::LbPolicy::ip_hash:
      return pick_hash(r.remote_ip, now, ex);
    case config::LbPolicy::client_ip_hash:
      return pick_hash(r.client_ip.empty() ? r.remote_ip : r.client_ip, now, ex);
    case config::LbPolicy::uri_hash: {
      std::string uri = r.uri();
      return pick_hash(uri, now, ex);
    }
    case config::LbPolicy::header: {
      if (cfg_->lb_key.empty()) return nullptr;
      if (http::iequals(cfg_->lb_key, "Host")) {
        std::string_view host = r.authority.empty() ? std::string_view(r.host) : r.authority;
        if (!host.empty()) return pick_hash(host, now, ex);
      }
      const std::string* v = r.headers.get(cfg_->lb_key);
      if (v == nullptr || v->empty()) return pick_random(now, ex);
      return pick_hash(*v, now, ex);
    }
    case config::LbPolicy::cookie: {
      const std::string* want = cookie_match(ctx);
      if (want != nullptr) {
        for (size_t i = 0; i < upstreams_.size(); ++i) {
          if (cookie_hashes_[i] == *want && usable(upstreams_[i].get(), now, ex)) {
            return upstreams_[i].get();
          }
        }
      }
      return pick_random(now, ex);
    }
  }
  return nullptr;
}

// The request's lb cookie value when it names one of our upstreams (a pointer into
// cookie_hashes_), else nullptr.
const std::string* ProxyHandlerImpl::cookie_match(const RequestCtx& ctx) const {
  std::string_view value;
  if (!http::find_cookie(ctx.req.headers, cookie_name_, value)) return nullptr;
  for (const auto& h : cookie_hashes_) {
    if (h == value) return &h;
  }
  return nullptr;
}

std::string ProxyHandlerImpl::sticky_cookie(const RequestCtx& ctx,
                                            const UpstreamHost& chosen) const {
  if (cfg_->lb_policy != config::LbPolicy::cookie) return {};
  for (size_t i = 0; i < upstreams_.size(); ++i) {
    if (upstreams_[i].get() != &chosen) continue;
    const std::string* have = cookie_match(ctx);
    if (have != nullptr && *have == cookie_hashes_[i]) return {};
    return cookie_name_ + "=" + cookie_hashes_[i] + "; Path=/";
  }
  return {};
}

void ProxyHandlerImpl::apply_header_up(const RequestCtx& ctx, http::HeaderMap& out) const {
  if (header_up_) header_up_->apply(ctx, out);
}

void ProxyHandlerImpl::apply_header_down(const RequestCtx& ctx, http::HeaderMap& out) const {
  if (header_down_) header_down_->apply(ctx, out);
}

bool ProxyHandlerImpl::peer_trusted(const http::Request& req) const {
  return !trusted_.empty() && in_ranges(std::string_view(req.remote_ip), trusted_);
}

void set_forwarded_headers(const http::Request& req, bool peer_trusted, http::HeaderMap& out) {
  // X-Forwarded-For: the client's list (all fields folded) extended by our peer, or just the
  // peer when the list came from someone we do not trust.
  std::string xff = req.remote_ip;
  std::string prior = out.joined("X-Forwarded-For");
  if (peer_trusted && !prior.empty()) xff = prior + ", " + xff;
  out.set("X-Forwarded-For", xff);

  auto last_value = [&](std::string_view field) -> std::string {
    std::string v;
    for (const auto& f : out) {
      if (http::iequals(f.first, field)) v = f.second;
    }
    return v;
  };
  std::string proto = req.tls ? "https" : (req.scheme.empty() ? "http" : req.scheme);
  std::string prior_proto = last_value("X-Forwarded-Proto");
  if (peer_trusted && !prior_proto.empty()) proto = prior_proto;
  out.set("X-Forwarded-Proto", proto);

  std::string host = req.authority.empty() ? req.host : req.authority;
  std::string prior_host = last_value("X-Forwarded-Host");
  if (peer_trusted && !prior_host.empty()) host = prior_host;
  out.set("X-Forwarded-Host", host);
}

bool ProxyHandlerImpl::health_body_ok(std::string_view body) const {
  if (!health_body_) return true;
  boost::match_results<std::string_view::const_iterator> m;
  return health_body_->search(body, m);
}

}  // namespace hsp::engine
