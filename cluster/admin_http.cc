#include "cluster/admin_http.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "util/log.h"

namespace hsp::cluster {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kHeadLimit = 16 * 1024;

bool is_tchar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

Error head_error(const std::string& what) {
  return Error{{}, "bad request head: " + what};
}

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

// Waits until `fd` is ready for `events` or the deadline passes.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int ms = remaining_ms(deadline);
    if (ms == 0) return false;
    int n = ::poll(&p, 1, ms);
    if (n > 0) return true;
    if (n < 0 && errno == EINTR) continue;
    return false;
  }
}

bool write_all(int fd, std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(fd, POLLOUT, deadline))
      continue;
    return false;
  }
  return true;
}

// Reads into `buf` until it holds `want` bytes or `stop_at` appears; false on EOF before that,
// an error or the deadline.
enum class ReadEnd { done, eof, failed };
ReadEnd read_more(int fd, std::string& buf, size_t limit, Clock::time_point deadline) {
  char chunk[16384];
  for (;;) {
    ssize_t n = ::recv(fd, chunk, std::min(sizeof chunk, limit - buf.size() + 1), 0);
    if (n > 0) {
      buf.append(chunk, static_cast<size_t>(n));
      return ReadEnd::done;
    }
    if (n == 0) return ReadEnd::eof;
    if (errno == EINTR) continue;
    if ((errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(fd, POLLIN, deadline)) continue;
    return ReadEnd::failed;
  }
}

const char* reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 413:
      return "Content Too Large";
    case 422:
      return "Unprocessable Content";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

std::string peer_text(const sockaddr_storage& ss) {
  char ip[INET6_ADDRSTRLEN] = {};
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    port = ntohs(a->sin_port);
    return std::string(ip) + ":" + std::to_string(port);
  }
  const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
  if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
    inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12], ip, sizeof ip);
    return std::string(ip) + ":" + std::to_string(ntohs(a->sin6_port));
  }
  inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
  return "[" + std::string(ip) + "]:" + std::to_string(ntohs(a->sin6_port));
}

std::string host_of_peer(const std::string& peer) {
  if (!peer.empty() && peer.front() == '[') return peer.substr(1, peer.find(']') - 1);
  return peer.substr(0, peer.rfind(':'));
}

Result<int> connect_to(const HostPort& to, Clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(to.host.c_str(), to.port.c_str(), &hints, &res);
  if (rc != 0) return Error{{}, "resolve " + to.host + ": " + gai_strerror(rc)};
  std::string last = "no address";
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ||
        (errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline))) {
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err == 0) {
        ::freeaddrinfo(res);
        return fd;
      }
      last = std::strerror(err);
    } else {
      last = errno == EINPROGRESS ? "timed out" : std::strerror(errno);
    }
    ::close(fd);
  }
  ::freeaddrinfo(res);
  return Error{{}, "connect " + to.host + ":" + to.port + ": " + last};
}

}  // namespace

Result<RequestHead> parse_request_head(std::string_view head) {
  if (head.size() > kHeadLimit) return head_error("longer than 16 KiB");
  size_t end = head.find("\r\n");
  if (end == std::string_view::npos) return head_error("no request line");
  std::string_view line = head.substr(0, end);
  RequestHead out;
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return head_error("the request line is not 'METHOD TARGET VERSION'");
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (method.empty()) return head_error("empty method");
  for (char c : method)
    if (!is_tchar(c)) return head_error("method is not a token");
  if (target.empty() || target.front() != '/') return head_error("target must start with '/'");
  for (char c : target)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return head_error("bad target byte");
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return head_error("not HTTP/1.x");
  out.method = std::string(method);
  out.target = std::string(target);

  size_t pos = end + 2;
  bool have_length = false;
  for (;;) {
    size_t eol = head.find("\r\n", pos);
    if (eol == std::string_view::npos) return head_error("unterminated header section");
    std::string_view field = head.substr(pos, eol - pos);
    pos = eol + 2;
    if (field.empty()) break;
    if (field.front() == ' ' || field.front() == '\t') return head_error("obsolete line folding");
    size_t colon = field.find(':');
    if (colon == std::string_view::npos || colon == 0) return head_error("field without a name");
    std::string_view name = field.substr(0, colon);
    for (char c : name)
      if (!is_tchar(c)) return head_error("field name is not a token");
    std::string_view value = trim(field.substr(colon + 1));
    for (char c : value) {
      if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f)
        return head_error("control byte in a field value");
    }
    std::string key = lower(name);
    if (key == "transfer-encoding") return head_error("Transfer-Encoding is not accepted");
    if (!out.headers.emplace(key, std::string(value)).second)
      return head_error("repeated field " + key);
    if (key == "content-length") {
      size_t n = 0;
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (value.empty() || ec != std::errc() || p != value.data() + value.size())
        return head_error("Content-Length is not a number");
      out.content_length = n;
      have_length = true;
    }
  }
  if (pos != head.size()) return head_error("bytes after the header section");
  (void)have_length;
  return out;
}

Result<HostPort> parse_host_port(std::string_view text) {
  HostPort hp;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return Error{{}, "'" + std::string(text) + "': expected [ipv6]:port"};
    hp.host = std::string(text.substr(1, close - 1));
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon)
      return Error{{}, "'" + std::string(text) + "': expected host:port"};
    hp.host = std::string(text.substr(0, colon));
    port = text.substr(colon + 1);
  }
  unsigned n = 0;
  auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
  if (hp.host.empty() || port.empty() || ec != std::errc() || p != port.data() + port.size() ||
      n == 0 || n > 65535) {
    return Error{{}, "'" + std::string(text) + "': expected host:port with a port 1-65535"};
  }
  hp.port = std::string(port);
  return hp;
}

bool address_in_cidr(std::string_view ip, std::string_view cidr) {
  // inet_pton reads up to a NUL: "10.0.0.1\0junk" would pass as 10.0.0.1.
  if (ip.find('\0') != std::string_view::npos || cidr.find('\0') != std::string_view::npos)
    return false;
  size_t slash = cidr.find('/');
  if (slash == std::string_view::npos) return false;
  std::string net(cidr.substr(0, slash));
  int bits = 0;
  auto tail = cidr.substr(slash + 1);
  if (tail.empty() || tail.front() < '0' || tail.front() > '9') return false;  // from_chars: "-0"
  auto [p, ec] = std::from_chars(tail.data(), tail.data() + tail.size(), bits);
  if (ec != std::errc() || p != tail.data() + tail.size() || bits < 0) return false;
  unsigned char a[16], b[16];
  std::string addr(ip);
  int family = addr.find(':') == std::string::npos ? AF_INET : AF_INET6;
  size_t len = family == AF_INET ? 4 : 16;
  if (inet_pton(family, addr.c_str(), a) != 1 || inet_pton(family, net.c_str(), b) != 1)
    return false;
  if (static_cast<size_t>(bits) > len * 8) return false;
  for (size_t i = 0; i < len; ++i) {
    int take = std::min(8, std::max(0, bits - static_cast<int>(i) * 8));
    unsigned char mask = take == 0 ? 0 : static_cast<unsigned char>(0xff << (8 - take));
    if ((a[i] & mask) != (b[i] & mask)) return false;
  }
  return true;
}

std::vector<std::string> local_addresses_in(std::string_view cidr) {
  std::vector<std::string> v4, v6;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return {};
  for (ifaddrs* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr) continue;
    char ip[INET6_ADDRSTRLEN] = {};
    if (i->ifa_addr->sa_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, ip, sizeof ip);
      if (address_in_cidr(ip, cidr)) v4.emplace_back(ip);
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr, ip, sizeof ip);
      if (address_in_cidr(ip, cidr)) v6.emplace_back(ip);
    }
  }
  ::freeifaddrs(list);
  v4.insert(v4.end(), v6.begin(), v6.end());
  return v4;
}

AdminServer::AdminServer(Options options, Handler handler)
    : options_(std::move(options)), handler_(std::move(handler)) {}

AdminServer::~AdminServer() {
  stop();
}

Errors AdminServer::start() {
  auto hp = parse_host_port(options_.listen);
  if (!hp) return {Error{{}, options_.name + " listener: " + hp.errors().front().message}};
  sockaddr_storage ss{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  uint16_t port = static_cast<uint16_t>(std::stoi(hp->port));
  if (inet_pton(AF_INET, hp->host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    len = sizeof *v4;
  } else if (inet_pton(AF_INET6, hp->host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    len = sizeof *v6;
  } else {
    return {Error{
        {}, options_.name + " listener '" + options_.listen + "': the host must be an IP address"}};
  }
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, 64) != 0) {
    int err = errno;
    if (fd >= 0) ::close(fd);
    return {Error{{}, options_.name + " listener " + options_.listen + ": " + std::strerror(err)}};
  }
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
    ::close(fd);
    return {Error{{}, options_.name + " listener: pipe: " + std::strerror(errno)}};
  }
  listen_fd_ = fd;
  thread_ = std::thread([this] { loop(); });
  return {};
}

void AdminServer::stop() {
  if (thread_.joinable()) {
    (void)!::write(wake_[1], "x", 1);
    thread_.join();
  }
  {
    // Connections being read are cut at once; a request already in its handler finishes.
    std::unique_lock lock(conn_mu_);
    for (int fd : conn_fds_) ::shutdown(fd, SHUT_RDWR);
    conn_cv_.wait(lock, [this] { return conn_fds_.empty(); });
  }
  for (int* fd : {&listen_fd_, &wake_[0], &wake_[1]}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
}

bool AdminServer::refused_logged(const std::string& host) {
  // One line per refused address per minute: a scan or a flood from outside the allowed
  // networks must not fill the log.
  auto now = Clock::now();
  auto it = refused_.find(host);
  if (it != refused_.end() && now - it->second < std::chrono::minutes(1)) return false;
  if (refused_.size() >= 1024) refused_.clear();
  refused_[host] = now;
  return true;
}

void AdminServer::loop() {
  for (;;) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents) return;
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd =
        ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors or memory: back off instead of spinning on a pending connection.
        log::warn("admin_accept_failed")
            .kv("listener", options_.name)
            .kv("error", std::strerror(errno));
        pollfd w{wake_[0], POLLIN, 0};
        if (::poll(&w, 1, 100) > 0) return;
      }
      continue;
    }
    std::string peer = peer_text(ss);
    std::string host = host_of_peer(peer);
    bool allowed = options_.allowed.empty();
    for (const auto& cidr : options_.allowed) allowed |= address_in_cidr(host, cidr);
    if (!allowed) {
      if (refused_logged(host)) {
        log::warn("admin_peer_refused")
            .kv("listener", options_.name)
            .kv("peer", peer)
            .kv("allowed", options_.allowed);
      }
      ::close(fd);
      continue;
    }
    std::lock_guard lock(conn_mu_);
    if (conn_fds_.size() >= kMaxConnections || per_peer_[host] >= kMaxPerPeer) {
      // Each connection has a thread and a deadline; a peer holding many idle ones must not
      // starve the others (the controller's probes among them).
      log::debug("admin_connection_limit").kv("listener", options_.name).kv("peer", peer);
      ::close(fd);
      continue;
    }
    conn_fds_.insert(fd);
    ++per_peer_[host];
    std::thread([this, fd, peer, host] {
      serve(fd, peer);
      std::lock_guard lock(conn_mu_);
      ::close(fd);
      conn_fds_.erase(fd);
      if (--per_peer_[host] == 0) per_peer_.erase(host);
      conn_cv_.notify_all();
    }).detach();
  }
}

void AdminServer::serve(int fd, const std::string& peer) {
  auto deadline = Clock::now() + options_.deadline;
  std::string buf;
  size_t head_end = std::string::npos;
  AdminResponse resp;
  bool answer = true;
  while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
    if (buf.size() > kHeadLimit) break;
    if (read_more(fd, buf, kHeadLimit + 4, deadline) != ReadEnd::done) {
      answer = false;  // gone or too slow: nothing to say to it
      break;
    }
  }
  AdminRequest req;
  req.peer = peer;
  if (answer) {
    if (head_end == std::string::npos) {
      resp = {400, "text/plain", "request head longer than 16 KiB\n"};
    } else {
      auto head = parse_request_head(std::string_view(buf).substr(0, head_end + 4));
      if (!head) {
        resp = {400, "text/plain", head.errors().front().message + "\n"};
      } else if (head->content_length > options_.body_limit) {
        resp = {413, "text/plain", "body over " + std::to_string(options_.body_limit) + " bytes\n"};
      } else {
        req.head = std::move(*head);
        req.body = buf.substr(head_end + 4);
        while (answer && req.body.size() < req.head.content_length) {
          answer = read_more(fd, req.body, req.head.content_length, deadline) == ReadEnd::done;
        }
        if (answer && req.body.size() > req.head.content_length) {
          resp = {400, "text/plain", "bytes after the body (one request per connection)\n"};
        } else if (answer) {
          resp = handler_(req);
        }
      }
    }
  }
  if (!answer) {
    // A bare connect and close is what TCP probes do: not worth a line at info level.
    if (buf.empty()) {
      log::debug("admin_request_abandoned").kv("listener", options_.name).kv("peer", peer);
    } else {
      log::info("admin_request_abandoned").kv("listener", options_.name).kv("peer", peer);
    }
    return;
  }
  std::string out = "HTTP/1.1 " + std::to_string(resp.status) + " " + reason(resp.status) +
                    "\r\nContent-Type: " + resp.content_type +
                    "\r\nContent-Length: " + std::to_string(resp.body.size()) +
                    "\r\nConnection: close\r\n\r\n" + resp.body;
  write_all(fd, out, deadline);
  ::shutdown(fd, SHUT_WR);
}

Result<ClientResponse> http_request(const HostPort& to, std::string_view method,
                                    std::string_view target, std::string_view body,
                                    std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  auto fd = connect_to(to, deadline);
  if (!fd) return fd.errors();
  std::string host = to.host.find(':') != std::string::npos ? "[" + to.host + "]" : to.host;
  std::string req = std::string(method) + " " + std::string(target) + " HTTP/1.1\r\nHost: " + host +
                    ":" + to.port + "\r\nContent-Length: " + std::to_string(body.size()) +
                    "\r\nConnection: close\r\n\r\n";
  req.append(body);
  std::string where = to.host + ":" + to.port + std::string(target);
  if (!write_all(*fd, req, deadline)) {
    ::close(*fd);
    return Error{{}, "send to " + where + ": " + (remaining_ms(deadline) ? "failed" : "timed out")};
  }
  std::string buf;
  ReadEnd end;
  while ((end = read_more(*fd, buf, size_t{8} << 20, deadline)) == ReadEnd::done) {
    if (buf.size() > (size_t{8} << 20)) break;
  }
  ::close(*fd);
  if (end == ReadEnd::failed) return Error{{}, "no answer from " + where};
  size_t head_end = buf.find("\r\n\r\n");
  if (buf.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos || buf.size() < 12)
    return Error{{}, "malformed answer from " + where};
  ClientResponse out;
  auto [p, ec] = std::from_chars(buf.data() + 9, buf.data() + 12, out.status);
  if (ec != std::errc() || p != buf.data() + 12 || buf[8] != ' ' ||
      (buf[12] != ' ' && buf[12] != '\r'))
    return Error{{}, "bad status from " + where};
  out.body = buf.substr(head_end + 4);
  return out;
}

}  // namespace hsp::cluster
