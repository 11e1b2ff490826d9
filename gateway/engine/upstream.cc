// Upstream runtime state shared across snapshots.
#include <mutex>
#include <unordered_map>

#include "engine/engine.h"
#include "engine/placeholder.h"

namespace hsp::engine {

UpstreamHost::UpstreamHost(std::string dial) : dial_(std::move(dial)) {
  std::string_view host, port;
  if (split_host_port(dial_, host, port)) {
    // Go (and so Caddy) dials the local system for an empty host, as in ":9002".
    host_ = host.empty() ? std::string("localhost") : std::string(host);
    unsigned v = 0;
    for (char c : port) {
      if (c < '0' || c > '9' || v > 65535) {
        v = 0;
        break;
      }
      v = v * 10 + static_cast<unsigned>(c - '0');
    }
    port_ = v <= 65535 ? static_cast<uint16_t>(v) : 0;
  } else {
    host_ = std::string(host);
    port_ = 80;  // Caddy dials port 80 for an http upstream written without one
  }
}

bool UpstreamHost::available(Clock::time_point now, int max_fails, int max_requests) const {
  if (!healthy()) return false;
  if (max_fails > 0 && fails(now) >= max_fails) return false;
  if (max_requests > 0 && in_flight() >= max_requests) return false;
  return true;
}

// Each failure occupies a ring slot holding its expiry. A burst of more than kFailSlots
// failures within fail_duration overwrites the oldest, so counts cap at kFailSlots, which is
// far above any sensible max_fails.
void UpstreamHost::count_failure(Clock::time_point now, Clock::duration fail_duration) {
  if (fail_duration <= Clock::duration::zero()) return;
  unsigned slot = fail_next_.fetch_add(1, std::memory_order_relaxed) % kFailSlots;
  int64_t expiry = (now + fail_duration).time_since_epoch().count();
  fail_expiry_[slot].store(expiry, std::memory_order_release);
}

int UpstreamHost::fails(Clock::time_point now) const {
  int64_t t = now.time_since_epoch().count();
  int n = 0;
  for (const auto& slot : fail_expiry_) {
    int64_t e = slot.load(std::memory_order_acquire);
    if (e != 0 && e > t) ++n;
  }
  return n;
}

struct UpstreamRegistry::Impl {
  std::mutex mu;
  std::unordered_map<std::string, std::weak_ptr<UpstreamHost>> hosts;
};

std::shared_ptr<UpstreamRegistry::Impl> UpstreamRegistry::make_impl() {
  return std::make_shared<Impl>();
}

std::shared_ptr<UpstreamHost> UpstreamRegistry::get(const std::string& dial) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto& weak = impl_->hosts[dial];
  if (auto live = weak.lock()) return live;
  auto host = std::make_shared<UpstreamHost>(dial);
  weak = host;
  return host;
}

std::vector<std::shared_ptr<UpstreamHost>> UpstreamRegistry::live() {
  std::vector<std::shared_ptr<UpstreamHost>> out;
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (auto it = impl_->hosts.begin(); it != impl_->hosts.end();) {
    if (auto h = it->second.lock()) {
      out.push_back(std::move(h));
      ++it;
    } else {
      it = impl_->hosts.erase(it);  // the last snapshot naming it is gone
    }
  }
  return out;
}

}  // namespace hsp::engine
