// HTTP/3 listeners (h3_endpoint.h): the UDP socket loop of one worker around an h3::QuicServer,
// and one MuxConn per QUIC connection whose streams run MuxConn::serve_stream.
//
// Everything of an endpoint runs on its worker's thread: the receive loop (recvmmsg in batches
// after the socket polls readable), the timer loop (QUIC timers, and a 250 ms watchdog for
// drain, abort and the end of the endpoint), and the streams' coroutines, whose codec calls
// queue work in the QuicServer and ask for one flush per turn of the io_context.
#include "http1/h3_endpoint.h"

#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>
#include <limits>
#include <unordered_map>

#include "h3/quic_server.h"
#include "http1/mux_stream.h"
#include "tls/cert_selector.h"
#include "util/log.h"

namespace hsp::http1 {
namespace {

using asio::redirect_error;
using asio::use_awaitable;
using udp = asio::ip::udp;

constexpr size_t kBatch = 32;          // datagrams per recvmmsg / sendmmsg
constexpr size_t kSlot = 2048;         // bytes per received datagram (QUIC: <= 1500)
constexpr size_t kBatchesPerTurn = 8;  // then other work on the thread gets a turn
constexpr auto kWatchdogTick = std::chrono::milliseconds(250);
constexpr uint16_t kTls13 = 0x0304;  // OpenSSL's TLS1_3_VERSION

// Opens `sock` bound to `ep` with SO_REUSEPORT (one socket per worker on the same port).
bool open_udp(udp::socket& sock, const udp::endpoint& ep, boost::system::error_code& ec) {
  sock.open(ep.protocol(), ec);
  if (ec) return false;
  int one = 1;
  ::setsockopt(sock.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (ep.address().is_v6() && ep.address().is_unspecified()) {
    sock.set_option(asio::ip::v6_only(false), ec);
  }
  // Room for bursts: a loaded worker drains the socket once per loop turn.
  sock.set_option(asio::socket_base::receive_buffer_size(4 << 20), ec);
  sock.set_option(asio::socket_base::send_buffer_size(4 << 20), ec);
  ec = {};
  sock.bind(ep, ec);
  if (!ec) sock.non_blocking(true, ec);
  if (ec) {
    boost::system::error_code ignored;
    sock.close(ignored);
    return false;
  }
  return true;
}

h3::Address to_address(const udp::endpoint& ep) {
  return h3::Address::from(ep.data(), static_cast<socklen_t>(ep.size()));
}

}  // namespace

class H3Endpoint : public std::enable_shared_from_this<H3Endpoint>, public h3::Handler {
 public:
  using Peers = std::vector<std::weak_ptr<H3Endpoint>>;

  H3Endpoint(Worker& w, udp::socket sock, ListenerKey key, h3::Address local, bool wildcard)
      : w_(w),
        sock_(std::move(sock)),
        key_(std::move(key)),
        local_(local),
        wildcard_(wildcard),
        timer_(*w.ioc),
        rx_(kBatch * kSlot) {}

  // On the control thread (the worker's snapshot reader is its own thread's: `g` comes from
  // the store).
  Result<bool> init(std::shared_ptr<Peers> peers, size_t worker_count, bool always_retry,
                    const config::GlobalOptions& g) {
    peers_ = std::move(peers);
    h3::ServerOptions o;
    o.handler = this;
    o.always_retry = always_retry;
    o.max_header_bytes = static_cast<uint32_t>(
        std::clamp<int64_t>(g.max_header_bytes, 1024, std::numeric_limits<int32_t>::max()));
    o.max_header_count = static_cast<uint32_t>(std::max(1, g.max_header_count));
    o.select_credentials = [this](std::string_view sni) { return credentials_for(sni); };
    Shared* shared = &w_.shared;
    o.next_conn_id = [shared] {
      return shared->next_conn_id.fetch_add(1, std::memory_order_relaxed);
    };
    // The worker's index in every connection ID, for routing between workers (up to 256).
    if (worker_count <= 256) o.cid_prefix = static_cast<uint8_t>(w_.index);
    auto server = h3::QuicServer::create(nullptr, std::move(o));
    if (!server) return server.errors();
    server_ = std::move(*server);
    configure_pktinfo();
    return true;
  }

  // Idempotent: a listener that replaces another may take over its running endpoints.
  void start() {
    if (started_) return;
    started_ = true;
    auto self = shared_from_this();
    asio::co_spawn(*w_.ioc, receive_loop(), [self](std::exception_ptr e) {
      if (e) self->log_failure("h3_receive_loop_failed", e);
    });
    asio::co_spawn(*w_.ioc, timer_loop(), [self](std::exception_ptr e) {
      if (e) self->log_failure("h3_timer_loop_failed", e);
    });
  }

  // Accepting again after stop_accepting(), when the listener comes back on the same address
  // and port (a reload turned h3 off and on again): connections that got GOAWAY still drain,
  // new ones are served by this endpoint. A new socket beside this one would split the port's
  // SO_REUSEPORT group between a draining server and a fresh one, each refusing or dropping
  // the other's packets. When the endpoint has already closed its socket, it binds a new one.
  // On the worker's thread.
  void resume() {
    if (finished_) {
      boost::system::error_code ec;
      if (!bind_socket(ec)) {
        log::error("h3_listener_reopen_failed")
            .kv("addr", local_.str())
            .kv("worker", w_.index)
            .kv("error", ec.message());
        return;
      }
      finished_ = false;
      done_.store(false, std::memory_order_release);
      started_ = false;
      aborted_ = false;
    }
    stopping_ = false;
    server_->resume_accepting();
    start();
  }

  // Whether the endpoint has closed its socket for good (any thread).
  bool done() const { return done_.load(std::memory_order_acquire); }

  // On the worker's thread.
  void stop_accepting() {
    if (stopping_) return;
    stopping_ = true;
    server_->shutdown_graceful(h3::now_ns());
    after_io();
  }

  // A datagram another worker received for one of our connections.
  void receive_forwarded(const std::vector<uint8_t>& data, const h3::Address& local,
                         const h3::Address& remote) {
    if (finished_) return;
    server_->receive(data, local, remote, h3::now_ns());
    after_io();
  }

  uint16_t port() const { return local_.port(); }
  // Runs `f` on the endpoint's worker thread.
  template <class F>
  void post(F&& f) {
    asio::post(*w_.ioc, std::forward<F>(f));
  }

  // --- h3::Handler (called from inside the QuicServer) --------------------------------------

  void on_request(uint64_t conn_id, int64_t stream_id, http::Request&& req, bool end) override;
  void on_request_data(uint64_t conn_id, int64_t stream_id, std::string_view data) override {
    if (MuxStream* st = find_stream(conn_id, stream_id)) {
      st->body.append(data);
      st->in_wake.signal();
    }
  }
  void on_request_trailers(uint64_t conn_id, int64_t stream_id, http::HeaderMap&& t) override {
    if (MuxStream* st = find_stream(conn_id, stream_id)) st->trailers = std::move(t);
  }
  void on_request_end(uint64_t conn_id, int64_t stream_id) override {
    if (MuxStream* st = find_stream(conn_id, stream_id)) {
      st->body_done = true;
      st->in_wake.signal();
    }
  }
  void on_stream_reset(uint64_t conn_id, int64_t stream_id) override {
    if (MuxStream* st = find_stream(conn_id, stream_id)) st->abandon();
  }
  void on_stream_closed(uint64_t conn_id, int64_t stream_id) override;
  void on_send_ready(uint64_t conn_id, int64_t stream_id) override {
    if (MuxStream* st = find_stream(conn_id, stream_id)) st->out_wake.signal();
  }
  void on_connection_closed(uint64_t conn_id) override;

  // Codec calls of the streams queue work; one flush per turn of the io_context sends it.
  void schedule_flush() {
    if (flush_posted_ || finished_) return;
    flush_posted_ = true;
    asio::post(*w_.ioc, [self = shared_from_this()] {
      self->flush_posted_ = false;
      if (self->finished_) return;
      self->server_->flush(h3::now_ns());
      self->after_io();
    });
  }

  h3::QuicServer& server() { return *server_; }

 private:
  class Conn;

  MuxStream* find_stream(uint64_t conn_id, int64_t stream_id);
  asio::awaitable<void> receive_loop();
  asio::awaitable<void> timer_loop();
  void receive_batch(int n, std::array<mmsghdr, kBatch>& msgs,
                     std::array<sockaddr_storage, kBatch>& from);
  void after_io();
  void send_datagrams();
  void watchdog();
  void finish();
  std::shared_ptr<const h3::ServerCredentials> credentials_for(std::string_view sni);
  bool bind_socket(boost::system::error_code& ec) {
    udp::endpoint ep;
    std::memcpy(ep.data(), local_.get(), local_.len);
    if (!open_udp(sock_, ep, ec)) return false;
    configure_pktinfo();
    return true;
  }
  void configure_pktinfo() {
    if (!wildcard_) return;
    // The destination address of each datagram, so that answers leave from it.
    int one = 1;
    ::setsockopt(sock_.native_handle(), IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
    ::setsockopt(sock_.native_handle(), IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one);
  }
  void log_failure(const char* what, std::exception_ptr e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      log::error(what).kv("port", static_cast<int>(port())).kv("error", ex.what());
    } catch (...) {
      log::error(what).kv("port", static_cast<int>(port()));
    }
  }

  Worker& w_;
  udp::socket sock_;
  const ListenerKey key_;
  const h3::Address local_;
  const bool wildcard_;
  asio::steady_timer timer_;
  std::vector<uint8_t> rx_;
  std::unique_ptr<h3::QuicServer> server_;
  std::shared_ptr<Peers> peers_;
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
  ServerIndexCache server_index_;
  // Credentials converted for GnuTLS, per certificate of the selector they came from.
  std::shared_ptr<const tls::CertSelector> cached_selector_;
  std::unordered_map<const tls::CertifiedKey*, std::shared_ptr<const h3::ServerCredentials>> creds_;
  uint64_t armed_for_ = UINT64_MAX;  // the expiry the timer was set for
  int64_t counted_conns_ = 0;        // our share of Shared::open_conns
  std::atomic<bool> done_{false};    // finished_, for other threads
  bool started_ = false;
  bool gso_ = true;  // UDP_SEGMENT, until the kernel refuses it
  bool flush_posted_ = false;
  bool stopping_ = false;
  bool aborted_ = false;
  bool finished_ = false;
};

// One QUIC connection as MuxConn: its streams and their coroutines. Lives until the connection
// is gone and its last stream coroutine has finished.
class H3Endpoint::Conn final : public MuxConn {
 public:
  Conn(H3Endpoint& ep, uint64_t conn_id, const http::Request& first)
      : MuxConn(ep.w_, conn_id, ep.key_, first.remote_ip, first.remote_port, "h3",
                ep.w_.ioc->get_executor()),
        ep_(ep) {
    idle_timeout_ =
        or_default(w_.reader.current()->config().global.idle_timeout, std::chrono::minutes(5));
  }

  std::unordered_map<int64_t, std::shared_ptr<MuxStream>> streams;
  int live = 0;         // stream coroutines not yet finished
  bool closed = false;  // the QUIC connection is gone

 protected:
  bool codec_submit(int64_t id, const http::ResponseHead& head, bool end_stream) override {
    auto r = ep_.server().submit_response(conn_id_, id, head, end_stream);
    ep_.schedule_flush();
    return r.ok();
  }
  Result<size_t> codec_send(int64_t id, std::string_view data) override {
    auto n = ep_.server().send_data(conn_id_, id, data);
    if (n && *n > 0) ep_.schedule_flush();
    return n;
  }
  bool codec_end(int64_t id, std::optional<http::HeaderMap> trailers) override {
    auto r = ep_.server().end_stream(conn_id_, id, std::move(trailers));
    ep_.schedule_flush();
    return r.ok();
  }
  void codec_reset(int64_t id, StreamError e) override {
    if (e == StreamError::body_not_read) {
      ep_.server().stop_reading(conn_id_, id);
    } else {
      ep_.server().reset_stream(conn_id_, id, h3::kH3InternalError);
    }
    ep_.schedule_flush();
  }
  void codec_consume(int64_t id, size_t n) override {
    ep_.server().consume(conn_id_, id, n);
    ep_.schedule_flush();
  }

 private:
  H3Endpoint& ep_;
};

MuxStream* H3Endpoint::find_stream(uint64_t conn_id, int64_t stream_id) {
  auto c = conns_.find(conn_id);
  if (c == conns_.end()) return nullptr;
  auto s = c->second->streams.find(stream_id);
  return s == c->second->streams.end() ? nullptr : s->second.get();
}

void H3Endpoint::on_request(uint64_t conn_id, int64_t stream_id, http::Request&& req, bool end) {
  auto [it, fresh] = conns_.try_emplace(conn_id);
  if (fresh) it->second = std::make_unique<Conn>(*this, conn_id, req);
  Conn* c = it->second.get();
  auto st = std::make_shared<MuxStream>(w_.ioc->get_executor());
  st->id = stream_id;
  st->req = std::move(req);
  st->body_done = end;
  c->streams[stream_id] = st;
  ++c->live;
  asio::co_spawn(*w_.ioc, c->serve_stream(st),
                 [self = shared_from_this(), c, conn_id, stream_id](std::exception_ptr e) {
                   if (e) {
                     self->log_failure("h3_stream_failed", e);
                     if (!c->closed) {
                       self->server_->reset_stream(conn_id, stream_id, h3::kH3InternalError);
                       self->schedule_flush();
                     }
                   }
                   if (--c->live == 0 && c->closed) self->conns_.erase(conn_id);
                 });
}

void H3Endpoint::on_stream_closed(uint64_t conn_id, int64_t stream_id) {
  auto c = conns_.find(conn_id);
  if (c == conns_.end()) return;
  auto s = c->second->streams.find(stream_id);
  if (s == c->second->streams.end()) return;
  s->second->abandon();
  c->second->streams.erase(s);
}

void H3Endpoint::on_connection_closed(uint64_t conn_id) {
  auto c = conns_.find(conn_id);
  if (c == conns_.end()) return;
  c->second->closed = true;
  for (auto& [id, st] : c->second->streams) st->abandon();
  c->second->streams.clear();
  if (c->second->live == 0) conns_.erase(c);
}

std::shared_ptr<const h3::ServerCredentials> H3Endpoint::credentials_for(std::string_view sni) {
  engine::SnapshotPtr snap = w_.reader.current();
  size_t i = server_index_.of(*snap, key_);
  const engine::ServerTls* st = i == SIZE_MAX ? nullptr : snap->server_tls(i);
  if (st == nullptr || !st->selector) return nullptr;
  if (st->max_version != 0 && st->max_version < kTls13) return nullptr;  // QUIC is TLS 1.3 only
  if (st->selector != cached_selector_) {
    creds_.clear();
    cached_selector_ = st->selector;
  }
  const tls::CertSelector::Choice* choice = st->selector->choose(sni);
  if (choice == nullptr || choice->cert == nullptr) return nullptr;
  if (choice->max_version != 0 && choice->max_version < kTls13) return nullptr;
  if (auto it = creds_.find(choice->cert); it != creds_.end()) return it->second;
  auto creds = h3::ServerCredentials::from_certified_key(*choice->cert);
  if (!creds) {
    log::error("h3_certificate_unusable")
        .kv("sni", sni)
        .kv("error", creds.errors().front().message);
    return nullptr;
  }
  creds_.emplace(choice->cert, *creds);
  return *creds;
}

asio::awaitable<void> H3Endpoint::receive_loop() {
  auto self = shared_from_this();  // the loop keeps the endpoint alive
  std::array<mmsghdr, kBatch> msgs{};
  std::array<iovec, kBatch> iov{};
  std::array<sockaddr_storage, kBatch> from{};
  std::array<std::array<char, 64>, kBatch> control{};
  boost::system::error_code ec;
  while (!finished_) {
    co_await sock_.async_wait(udp::socket::wait_read, redirect_error(use_awaitable, ec));
    if (ec || finished_) break;
    for (size_t turn = 0; turn < kBatchesPerTurn; ++turn) {
      for (size_t i = 0; i < kBatch; ++i) {
        iov[i] = {rx_.data() + i * kSlot, kSlot};
        msgs[i].msg_hdr = {};
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &from[i];
        msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
        if (wildcard_) {
          msgs[i].msg_hdr.msg_control = control[i].data();
          msgs[i].msg_hdr.msg_controllen = control[i].size();
        }
      }
      int n = ::recvmmsg(sock_.native_handle(), msgs.data(), kBatch, MSG_DONTWAIT, nullptr);
      if (n <= 0) break;
      receive_batch(n, msgs, from);
      if (static_cast<size_t>(n) < kBatch) break;
    }
    after_io();
  }
}

void H3Endpoint::receive_batch(int n, std::array<mmsghdr, kBatch>& msgs,
                               std::array<sockaddr_storage, kBatch>& from) {
  const uint64_t now = h3::now_ns();
  for (int i = 0; i < n; ++i) {
    if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) continue;  // larger than any QUIC datagram
    std::span<const uint8_t> data(rx_.data() + static_cast<size_t>(i) * kSlot, msgs[i].msg_len);
    h3::Address remote =
        h3::Address::from(reinterpret_cast<sockaddr*>(&from[i]), msgs[i].msg_hdr.msg_namelen);
    h3::Address local = local_;
    if (wildcard_) {
      // The address the client sent to, with our port.
      for (cmsghdr* cm = CMSG_FIRSTHDR(&msgs[i].msg_hdr); cm != nullptr;
           cm = CMSG_NXTHDR(&msgs[i].msg_hdr, cm)) {
        if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO) {
          in_pktinfo pi;
          std::memcpy(&pi, CMSG_DATA(cm), sizeof pi);
          sockaddr_in in{};
          in.sin_family = AF_INET;
          in.sin_addr = pi.ipi_addr;
          in.sin_port = htons(local_.port());
          local = h3::Address::from(reinterpret_cast<sockaddr*>(&in), sizeof in);
        } else if (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_PKTINFO) {
          in6_pktinfo pi;
          std::memcpy(&pi, CMSG_DATA(cm), sizeof pi);
          sockaddr_in6 in6{};
          in6.sin6_family = AF_INET6;
          in6.sin6_addr = pi.ipi6_addr;
          in6.sin6_port = htons(local_.port());
          local = h3::Address::from(reinterpret_cast<sockaddr*>(&in6), sizeof in6);
        }
      }
    }
    std::optional<uint8_t> owner = h3::QuicServer::owner_of(data);
    if (owner && *owner != w_.index && peers_ && *owner < peers_->size()) {
      // A connection of another worker (its client's address changed): hand it over.
      if (auto peer = (*peers_)[*owner].lock()) {
        std::vector<uint8_t> copy(data.begin(), data.end());
        Worker& pw = peer->w_;
        asio::post(*pw.ioc, [peer, copy = std::move(copy), local, remote] {
          peer->receive_forwarded(copy, local, remote);
        });
        continue;
      }
    }
    server_->receive(data, local, remote, now);
  }
}

void H3Endpoint::after_io() {
  if (finished_) return;
  if (server_->needs_flush()) server_->flush(h3::now_ns());
  send_datagrams();
  // Our connections count for drain and `open_connections`, like TCP connections; those in
  // their closing or draining period (a few PTOs of repeating a CONNECTION_CLOSE) do not.
  const int64_t now_conns =
      static_cast<int64_t>(server_->connection_count() - server_->closing_count());
  if (now_conns != counted_conns_) {
    w_.shared.open_conns.fetch_add(now_conns - counted_conns_, std::memory_order_relaxed);
    counted_conns_ = now_conns;
  }
  const uint64_t expiry = server_->expiry();
  if (expiry < armed_for_) timer_.cancel();  // the timer loop re-arms for the earlier time
  if ((stopping_ || aborted_) && server_->connection_count() == 0 && conns_.empty()) finish();
}

namespace {

bool same_path(const h3::Datagram& a, const h3::Datagram& b) {
  return a.remote.len == b.remote.len && a.local.len == b.local.len &&
         std::memcmp(&a.remote.storage, &b.remote.storage, a.remote.len) == 0 &&
         std::memcmp(&a.local.storage, &b.local.storage, a.local.len) == 0;
}

// Appends a control message to `h` (whose msg_control has room); returns its data.
unsigned char* add_cmsg(msghdr& h, int level, int type, size_t len) {
  // Every message added before took CMSG_SPACE bytes, so the next one starts right after.
  auto* cm = reinterpret_cast<cmsghdr*>(static_cast<char*>(h.msg_control) + h.msg_controllen);
  h.msg_controllen += CMSG_SPACE(len);
  cm->cmsg_level = level;
  cm->cmsg_type = type;
  cm->cmsg_len = CMSG_LEN(len);
  return CMSG_DATA(cm);
}

}  // namespace

void H3Endpoint::send_datagrams() {
  std::vector<h3::Datagram> out = server_->take_datagrams();
  // Consecutive datagrams on one path, all of one size but the last (a connection's burst),
  // go out as one UDP GSO send (UDP_SEGMENT, Linux 4.18+) when the kernel takes it: one trip
  // through the stack instead of one per datagram.
  constexpr size_t kMaxSegments = 64;
  constexpr size_t kMaxGsoBytes = 65000;
  std::array<iovec, kBatch * kMaxSegments> iov{};
  std::array<mmsghdr, kBatch> msgs{};
  std::array<std::array<char, 96>, kBatch> control{};
  std::array<size_t, kBatch> first{}, count{};
  size_t done = 0;
  while (done < out.size()) {
    size_t n = 0, next = done, used_iov = 0;
    while (n < kBatch && next < out.size()) {
      const h3::Datagram& d = out[next];
      size_t k = 1, bytes = d.data.size();
      if (gso_) {
        while (next + k < out.size() && k < kMaxSegments &&
               out[next + k - 1].data.size() == d.data.size() &&
               out[next + k].data.size() <= d.data.size() &&
               bytes + out[next + k].data.size() <= kMaxGsoBytes && same_path(d, out[next + k])) {
          bytes += out[next + k].data.size();
          ++k;
        }
      }
      first[n] = next;
      count[n] = k;
      msghdr& h = msgs[n].msg_hdr;
      h = {};
      for (size_t s = 0; s < k; ++s) {
        auto& seg = out[next + s].data;
        iov[used_iov + s] = {seg.data(), seg.size()};
      }
      h.msg_iov = &iov[used_iov];
      h.msg_iovlen = k;
      used_iov += k;
      h.msg_name = const_cast<sockaddr*>(d.remote.get());
      h.msg_namelen = d.remote.len;
      h.msg_control = control[n].data();
      h.msg_controllen = 0;
      if (wildcard_ && d.local.storage.ss_family == AF_INET) {
        // Answer from the address the client sent to (the socket is bound to a wildcard).
        in_pktinfo pi{};
        pi.ipi_spec_dst = reinterpret_cast<const sockaddr_in*>(&d.local.storage)->sin_addr;
        std::memcpy(add_cmsg(h, IPPROTO_IP, IP_PKTINFO, sizeof pi), &pi, sizeof pi);
      } else if (wildcard_ && d.local.storage.ss_family == AF_INET6) {
        in6_pktinfo pi{};
        pi.ipi6_addr = reinterpret_cast<const sockaddr_in6*>(&d.local.storage)->sin6_addr;
        std::memcpy(add_cmsg(h, IPPROTO_IPV6, IPV6_PKTINFO, sizeof pi), &pi, sizeof pi);
      }
      if (k > 1) {
        const uint16_t segment = static_cast<uint16_t>(d.data.size());
        std::memcpy(add_cmsg(h, SOL_UDP, UDP_SEGMENT, sizeof segment), &segment, sizeof segment);
      }
      if (h.msg_controllen == 0) h.msg_control = nullptr;
      ++n;
      next += k;
    }
    int sent =
        ::sendmmsg(sock_.native_handle(), msgs.data(), static_cast<unsigned>(n), MSG_DONTWAIT);
    if (sent <= 0) {
      if (count[0] > 1 && (errno == EIO || errno == EINVAL || errno == ENOPROTOOPT)) {
        // The kernel or the device refuses GSO: send datagram by datagram from now on.
        gso_ = false;
        log::info("h3_gso_off").kv("port", static_cast<int>(port())).kv("errno", errno);
        continue;
      }
      // A full socket buffer (EAGAIN) or an unreachable peer: QUIC's loss recovery resends
      // what matters; skip this message rather than block the worker.
      done = first[0] + count[0];
      continue;
    }
    const size_t m = static_cast<size_t>(sent);
    done = first[m - 1] + count[m - 1];
  }
}

asio::awaitable<void> H3Endpoint::timer_loop() {
  auto self = shared_from_this();
  boost::system::error_code ec;
  auto next_tick = Clock::now() + kWatchdogTick;
  while (!finished_) {
    const uint64_t expiry = server_->expiry();
    auto at = next_tick;
    if (expiry != UINT64_MAX) {
      auto e = Clock::time_point(std::chrono::nanoseconds(expiry));
      if (e < at) at = e;
    }
    armed_for_ = expiry;
    timer_.expires_at(at);
    co_await timer_.async_wait(redirect_error(use_awaitable, ec));
    armed_for_ = UINT64_MAX;
    if (finished_) break;
    const uint64_t now = h3::now_ns();
    if (server_->expiry() <= now) server_->handle_expiry(now);
    if (Clock::now() >= next_tick) {
      next_tick = Clock::now() + kWatchdogTick;
      watchdog();
    }
    after_io();
  }
}

void H3Endpoint::watchdog() {
  if (w_.shared.aborting.load(std::memory_order_acquire)) {
    if (!aborted_) {
      aborted_ = true;
      server_->close_all(h3::now_ns());
    }
    return;
  }
  bool drain = w_.shared.draining.load(std::memory_order_acquire);
  if (!drain && server_index_.of(*w_.reader.current(), key_) == SIZE_MAX) drain = true;
  if (drain && !stopping_) stop_accepting();
}

void H3Endpoint::finish() {
  if (finished_) return;
  finished_ = true;
  done_.store(true, std::memory_order_release);
  if (counted_conns_ != 0) {
    w_.shared.open_conns.fetch_sub(counted_conns_, std::memory_order_relaxed);
    counted_conns_ = 0;
  }
  boost::system::error_code ignored;
  sock_.close(ignored);
  timer_.cancel();
  log::info("h3_listener_closed").kv("port", static_cast<int>(port())).kv("worker", w_.index);
}

Result<H3Listener> open_h3(const std::vector<Worker*>& workers, const asio::ip::address& addr,
                           uint16_t port, const ListenerKey& key, bool always_retry,
                           const config::GlobalOptions& g) {
  H3Listener l;
  auto peers = std::make_shared<H3Endpoint::Peers>();
  const bool wildcard = addr.is_unspecified();
  udp::endpoint ep(addr, port);
  auto fail = [&](const char* what, const boost::system::error_code& ec) -> Errors {
    std::string where = (addr.is_v6() ? "[" + addr.to_string() + "]" : addr.to_string()) + ":" +
                        std::to_string(port);
    return Errors{Error{SourceLoc{}, "listen udp " + where + ": " + what + ": " + ec.message()}};
  };
  for (Worker* w : workers) {
    boost::system::error_code ec;
    udp::socket sock(*w->ioc);
    if (!open_udp(sock, ep, ec)) return fail("bind", ec);
    h3::Address local = to_address(sock.local_endpoint(ec));
    auto e = std::make_shared<H3Endpoint>(*w, std::move(sock), key, local, wildcard);
    if (auto ok = e->init(peers, workers.size(), always_retry, g); !ok) return ok.errors();
    peers->push_back(e);
    l.endpoints.push_back(std::move(e));
  }
  l.port = port;
  return l;
}

void start_h3(H3Listener& l) {
  for (auto& e : l.endpoints) e->post([e] { e->start(); });
}

void close_h3(H3Listener& l) {
  for (auto& e : l.endpoints) e->post([e] { e->stop_accepting(); });
}

void resume_h3(H3Listener& l) {
  for (auto& e : l.endpoints) e->post([e] { e->resume(); });
}

bool h3_done(const H3Listener& l) {
  return std::all_of(l.endpoints.begin(), l.endpoints.end(), [](auto& e) { return e->done(); });
}

std::string alt_svc_value(const ListenerKey& key) {
  if (!key.h3 || key.port == 0) return {};
  // RFC 7838 §3; 30 days, as Caddy (quic-go) advertises.
  return "h3=\":" + std::to_string(key.port) + "\"; ma=2592000";
}

}  // namespace hsp::http1
