// The per-worker upstream keep-alive pool and the process-wide max_conns_per_host counters.
#include <sys/socket.h>

#include <cerrno>
#include <mutex>

#include "http1/worker.h"

namespace hsp::http1 {
namespace {

// Did the peer close (FIN, RST) or send unsolicited bytes since the connection went idle? Either
// way it cannot carry a new request.
bool peer_gone(UpstreamStream& s) {
  char b;
  ssize_t n = ::recv(s.socket().native_handle(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n >= 0) return true;
  return errno != EAGAIN && errno != EWOULDBLOCK;
}

}  // namespace

std::shared_ptr<HostSlots> host_slots(const std::string& dial) {
  static std::mutex mu;
  static std::unordered_map<std::string, std::shared_ptr<HostSlots>> table;
  std::lock_guard<std::mutex> lock(mu);
  auto& s = table[dial];
  if (!s) s = std::make_shared<HostSlots>();
  return s;
}

std::unique_ptr<UpstreamStream> UpstreamPool::take(const std::string& dial,
                                                   Clock::duration max_idle, HostConnToken& token) {
  auto it = idle_.find(dial);
  if (it == idle_.end()) return nullptr;
  auto& v = it->second;
  Clock::time_point now = Clock::now();
  while (!v.empty()) {
    Idle c = std::move(v.back());
    v.pop_back();
    --total_;
    if (now - c.since >= max_idle || peer_gone(*c.stream)) continue;
    token = std::move(c.token);
    return std::move(c.stream);
  }
  return nullptr;
}

void UpstreamPool::put(const std::string& dial, std::unique_ptr<UpstreamStream> stream,
                       HostConnToken token, size_t max_idle_per_host, size_t max_idle_total) {
  if (max_idle_total > 0 && total_ >= max_idle_total) return;  // closes it
  auto& v = idle_[dial];
  if (max_idle_per_host > 0 && v.size() >= max_idle_per_host) return;
  stream->expires_never();
  v.push_back(Idle{std::move(stream), Clock::now(), std::move(token)});
  ++total_;
}

void UpstreamPool::sweep(Clock::duration max_idle) {
  Clock::time_point now = Clock::now();
  for (auto it = idle_.begin(); it != idle_.end();) {
    auto& v = it->second;
    // Connections the upstream closed are dropped here too, so they do not linger in
    // CLOSE_WAIT until their idle time runs out.
    total_ -= std::erase_if(
        v, [&](const Idle& c) { return now - c.since >= max_idle || peer_gone(*c.stream); });
    it = v.empty() ? idle_.erase(it) : std::next(it);
  }
}

}  // namespace hsp::http1
