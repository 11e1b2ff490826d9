// hsp-floor-forwarder: a MEASURING STICK, NOT A PROXY. It copies bytes between each client
// connection and one upstream connection of its own, and knows nothing of HTTP: no parsing, no
// routing, no headers, no pooling, no timeouts, no limits. bench/floor.sh runs it in the same
// layout as nginx and hsp-gateway to measure the kernel's share of a proxied request (accept,
// epoll, one read and one write per direction on loopback TCP). What a real proxy spends above
// this figure is its HTTP work; hsp-gateway's CPU target must leave room for that.
//
//   hsp-floor-forwarder LISTEN_PORT UPSTREAM_PORT
//
// Listens on 127.0.0.1:LISTEN_PORT (0: the kernel picks; the port is printed on stdout either
// way) and connects each accepted client to 127.0.0.1:UPSTREAM_PORT. One thread, one epoll set,
// level-triggered, nonblocking sockets. SIGINT/SIGTERM end it after freeing every connection.
//
// Shape of the work per proxied request/response, the minimum a userspace forwarder can do:
// epoll_wait, recv from one side, send to the other; nothing else runs unless a send is
// partial. Then the rest waits in that direction's buffer, the source is no longer read (so
// the buffer is bounded: back-pressure), and the destination is watched for EPOLLOUT.
// On EOF or an error on either side, what was already read from that side is still sent on
// (while the other side accepts it), then both sockets are closed. Known gaps, which cost
// nothing in the measured load (it closes connections only at its end): bytes travelling
// towards the side that ended are dropped, and a half-closed connection is not kept open as a
// proxy would (no shutdown(SHUT_WR) propagation), so a client that half-closes after its
// request gets no response.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace hsp::bench::floor {
namespace {

// One direction's bytes in flight. 16 KiB holds a whole request or response of the measured
// load; bigger bodies go through in 16 KiB steps.
constexpr std::size_t kBufferSize = 16 * 1024;
constexpr int kMaxEvents = 256;

struct Pair;

// One socket of a pair. Its epoll registration points here (data.ptr).
struct Side {
  Pair* pair = nullptr;
  int fd = -1;
  std::uint32_t events = 0;  // what epoll watches now, to skip epoll_ctl calls that change nothing
};

// Bytes read from one side and not yet sent to the other.
struct Buffer {
  std::array<char, kBufferSize> bytes;
  std::size_t begin = 0;
  std::size_t end = 0;
  bool empty() const { return begin == end; }
};

struct Pair {
  Side client;
  Side upstream;
  Buffer to_upstream;  // read from client
  Buffer to_client;    // read from upstream
  bool connecting = true;
  // The side that hung up while bytes read from it were still waiting: nothing more is read
  // from either side, and the pair closes once those bytes are sent.
  Side* ended = nullptr;
  bool closed = false;  // closed in this epoll_wait batch; freed after it
};

class Forwarder {
 public:
  Forwarder(int epoll_fd, int listen_fd, int signal_fd, sockaddr_in upstream)
      : epoll_fd_(epoll_fd), listen_fd_(listen_fd), signal_fd_(signal_fd), upstream_(upstream) {}

  ~Forwarder() {
    for (auto& [pair, owner] : live_) close_fds(*pair);
  }

  // The listener and the signalfd are told apart from sockets by their tags: the addresses of
  // the members holding their descriptors.
  int register_fds() {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = &listen_fd_;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev) != 0) {
      std::perror("floor-forwarder: epoll_ctl listener");
      return 1;
    }
    ev.data.ptr = &signal_fd_;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, signal_fd_, &ev) != 0) {
      std::perror("floor-forwarder: epoll_ctl signalfd");
      return 1;
    }
    return 0;
  }

  // Returns the process exit status.
  int run() {
    std::array<epoll_event, kMaxEvents> events;
    for (;;) {
      int n = epoll_wait(epoll_fd_, events.data(), kMaxEvents, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        std::perror("floor-forwarder: epoll_wait");
        return 1;
      }
      for (int i = 0; i < n; ++i) {
        void* tag = events[i].data.ptr;
        if (tag == &listen_fd_) {
          accept_all();
        } else if (tag == &signal_fd_) {
          return 0;
        } else {
          auto* side = static_cast<Side*>(tag);
          // An earlier event of this batch may have closed the pair; it is freed only below.
          if (!side->pair->closed) on_event(*side->pair, *side, events[i].events);
        }
      }
      graveyard_.clear();
    }
  }

 private:
  void accept_all() {
    for (;;) {
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        // EMFILE/ENFILE would make a level-triggered listener spin; the measured loads use 50
        // connections, so running out of descriptors is reported rather than handled.
        if (errno != EAGAIN && errno != EWOULDBLOCK) std::perror("floor-forwarder: accept4");
        return;
      }
      open_pair(fd);
    }
  }

  void open_pair(int client_fd) {
    int up = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (up < 0) {
      std::perror("floor-forwarder: socket");
      close(client_fd);
      return;
    }
    // As nginx and hsp-gateway do: a response is sent at once, not held back by Nagle.
    int one = 1;
    setsockopt(client_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(up, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto owner = std::make_unique<Pair>();
    Pair& p = *owner;
    p.client = Side{&p, client_fd, 0};
    p.upstream = Side{&p, up, 0};
    live_.emplace(&p, std::move(owner));
    if (!add(p.client) || !add(p.upstream)) return close_pair(p);
    int rc = connect(up, reinterpret_cast<const sockaddr*>(&upstream_), sizeof upstream_);
    if (rc == 0) {
      p.connecting = false;
    } else if (errno != EINPROGRESS) {
      std::perror("floor-forwarder: connect");
      return close_pair(p);
    }
    update(p);
  }

  bool add(Side& s) {
    epoll_event ev{};
    ev.data.ptr = &s;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, s.fd, &ev) != 0) {
      std::perror("floor-forwarder: epoll_ctl add");
      return false;
    }
    return true;
  }

  void on_event(Pair& p, Side& s, std::uint32_t ev) {
    const bool is_client = &s == &p.client;
    Side& other = is_client ? p.upstream : p.client;
    Buffer& from_s = is_client ? p.to_upstream : p.to_client;
    Buffer& to_s = is_client ? p.to_client : p.to_upstream;
    if (p.connecting && !is_client && !finish_connect(p)) return;
    if (ev & EPOLLERR) return close_pair(p);
    if ((ev & (EPOLLIN | EPOLLHUP)) && p.ended == nullptr) {
      if (from_s.empty()) {
        // A hang-up with an empty buffer: the recv sees the EOF or the error and closes.
        if (!read_into(p, s, from_s)) return;
        if (!p.connecting && !flush(p, other, from_s)) return;
      } else if (ev & EPOLLHUP) {
        // s is gone, but bytes read from it still wait for the other side. Level-triggered
        // epoll would report the hang-up on every wait until they are sent, so s leaves the set.
        p.ended = &s;
        epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, s.fd, nullptr);
        s.events = 0;
      }
    }
    if ((ev & EPOLLOUT) && !p.connecting && !flush(p, s, to_s)) return;
    if (p.ended != nullptr) {
      const Buffer& rest = p.ended == &p.client ? p.to_upstream : p.to_client;
      if (rest.empty()) return close_pair(p);
    }
    update(p);
  }

  bool finish_connect(Pair& p) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(p.upstream.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) {
      std::fprintf(stderr, "floor-forwarder: connect: %s\n", std::strerror(err));
      close_pair(p);
      return false;
    }
    p.connecting = false;
    return true;
  }

  // One recv per readiness: level-triggered epoll reports the socket again if more is waiting,
  // and a loop until EAGAIN would cost one more system call per request.
  bool read_into(Pair& p, Side& s, Buffer& b) {
    ssize_t n = recv(s.fd, b.bytes.data(), b.bytes.size(), 0);
    if (n > 0) {
      b.begin = 0;
      b.end = static_cast<std::size_t>(n);
      return true;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return true;
    // EOF or error. s is only read while b is empty, so nothing read from s is lost; bytes on
    // their way to s are dropped (see the top of the file).
    close_pair(p);
    return false;
  }

  // Sends what b holds to s; false once the pair is closed.
  bool flush(Pair& p, Side& s, Buffer& b) {
    while (!b.empty()) {
      ssize_t n = send(s.fd, b.bytes.data() + b.begin, b.end - b.begin, MSG_NOSIGNAL);
      if (n > 0) {
        b.begin += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;  // EPOLLOUT then
      close_pair(p);
      return false;
    }
    b.begin = b.end = 0;
    return true;
  }

  // Watch each socket for reading while the buffer it fills is empty (back-pressure otherwise)
  // and for writing while the buffer it drains holds bytes or its connect is pending.
  void update(Pair& p) {
    std::uint32_t client = 0, upstream = 0;
    if (p.ended == nullptr && p.to_upstream.empty()) client |= EPOLLIN;
    if (p.ended == nullptr && p.to_client.empty() && !p.connecting) upstream |= EPOLLIN;
    if (!p.to_client.empty()) client |= EPOLLOUT;
    if (p.connecting || !p.to_upstream.empty()) upstream |= EPOLLOUT;
    // The side that ended is out of the epoll set.
    if ((p.ended != &p.client && !modify(p.client, client)) ||
        (p.ended != &p.upstream && !modify(p.upstream, upstream))) {
      close_pair(p);
    }
  }

  bool modify(Side& s, std::uint32_t events) {
    if (s.events == events) return true;
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = &s;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, s.fd, &ev) != 0) {
      std::perror("floor-forwarder: epoll_ctl mod");
      return false;
    }
    s.events = events;
    return true;
  }

  static void close_fds(Pair& p) {
    // close() also removes the descriptors from the epoll set (no dup()s exist).
    if (p.client.fd >= 0) close(p.client.fd);
    if (p.upstream.fd >= 0) close(p.upstream.fd);
    p.client.fd = p.upstream.fd = -1;
  }

  void close_pair(Pair& p) {
    if (p.closed) return;
    p.closed = true;
    close_fds(p);
    auto it = live_.find(&p);
    // Kept alive until the end of the epoll_wait batch: later events in it may point here.
    graveyard_.push_back(std::move(it->second));
    live_.erase(it);
  }

  int epoll_fd_;
  int listen_fd_;
  int signal_fd_;
  sockaddr_in upstream_;
  std::unordered_map<Pair*, std::unique_ptr<Pair>> live_;
  std::vector<std::unique_ptr<Pair>> graveyard_;
};

bool parse_port(std::string_view s, std::uint16_t& out) {
  unsigned v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v > 65535) return false;
  out = static_cast<std::uint16_t>(v);
  return true;
}

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

int main_impl(int argc, char** argv) {
  std::uint16_t listen_port = 0, upstream_port = 0;
  if (argc != 3 || !parse_port(argv[1], listen_port) || !parse_port(argv[2], upstream_port) ||
      upstream_port == 0) {
    std::fprintf(stderr,
                 "usage: hsp-floor-forwarder LISTEN_PORT UPSTREAM_PORT\n"
                 "  a measuring stick, not a proxy: copies bytes between 127.0.0.1:LISTEN_PORT\n"
                 "  (0: any) and 127.0.0.1:UPSTREAM_PORT, one upstream connection per client\n");
    return 2;
  }
  // Termination arrives through the epoll set, so the loop ends between batches and every
  // connection is closed and freed by the destructor.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) return std::perror("sigprocmask"), 1;
  int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  int efd = epoll_create1(EPOLL_CLOEXEC);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (sfd < 0 || efd < 0 || lfd < 0) return std::perror("floor-forwarder: setup"), 1;
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr = loopback(listen_port);
  if (bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(lfd, 4096) != 0) {
    std::perror("floor-forwarder: bind/listen 127.0.0.1");
    return 1;
  }
  socklen_t len = sizeof addr;
  getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len);
  std::printf("floor-forwarder: listening on 127.0.0.1:%u, upstream 127.0.0.1:%u\n",
              ntohs(addr.sin_port), upstream_port);
  std::fflush(stdout);

  int rc;
  {
    Forwarder fwd(efd, lfd, sfd, loopback(upstream_port));
    rc = fwd.register_fds();
    if (rc == 0) rc = fwd.run();
  }
  close(lfd);
  close(sfd);
  close(efd);
  return rc;
}

}  // namespace
}  // namespace hsp::bench::floor

int main(int argc, char** argv) {
  return hsp::bench::floor::main_impl(argc, argv);
}
