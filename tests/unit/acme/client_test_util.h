// Real components for the ACME client tests, all on 127.0.0.1 with ports chosen at run time:
// Debian's pebble and pebble-challtestsrv as child processes (their HTTPS served with a CA made
// by the openssl tool in a temporary directory), an HTTP-01 responder, and a one-answer-per-path
// HTTPS stub for answers Pebble never gives (rate limits). Every child process is killed by its
// owner's destructor, so also when an assertion ends a test early; PR_SET_PDEATHSIG covers a
// test binary that dies.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "acme_test_util.h"

namespace hsp::acme::testing {

// A port that was free on 127.0.0.1 a moment ago (bound to port 0, read back, closed).
inline int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

inline bool port_open(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// A child process with stdout and stderr to `log_file`; killed (TERM, then KILL) on destruction.
class Child {
 public:
  Child(std::vector<std::string> argv, std::vector<std::pair<std::string, std::string>> env,
        const std::string& log_file) {
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      int fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      ::_exit(127);
    }
  }
  ~Child() { stop(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // The exit status, or -1 while it runs.
  int poll_exit() {
    if (pid_ <= 0) return exit_;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      exit_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    return pid_ > 0 ? -1 : exit_;
  }

  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 100; ++i) {
      if (poll_exit() >= 0) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  int exit_ = -1;
};

// Runs a command to completion; its exit status.
inline int run(std::vector<std::string> argv, const std::string& log_file) {
  Child c(std::move(argv), {}, log_file);
  for (int i = 0; i < 3000; ++i) {
    int rc = c.poll_exit();
    if (rc >= 0) return rc;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

// A CA and a leaf for 127.0.0.1 / localhost made with the openssl tool, as stack-notes §4 does
// (Debian's pebble ships no test certificates). ca.pem is what clients trust.
struct TestCa {
  explicit TestCa(const TempDir& dir, const std::string& san = "DNS:localhost,IP:127.0.0.1")
      : ca_pem(dir.file("ca.pem")), leaf_pem(dir.file("wfe.pem")), leaf_key(dir.file("wfe.key")) {
    const std::string log = dir.file("openssl.log");
    ok = run({"openssl",
              "req",
              "-x509",
              "-newkey",
              "ec",
              "-pkeyopt",
              "ec_paramgen_curve:prime256v1",
              "-nodes",
              "-keyout",
              dir.file("ca.key"),
              "-out",
              ca_pem,
              "-days",
              "2",
              "-subj",
              "/CN=hsp acme test CA",
              "-addext",
              "basicConstraints=critical,CA:TRUE",
              "-addext",
              "keyUsage=critical,keyCertSign,cRLSign"},
             log) == 0;
    ok = ok &&
         run({"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
              "-nodes", "-keyout", leaf_key, "-out", dir.file("wfe.csr"), "-subj", "/CN=localhost"},
             log) == 0;
    write_text(dir.file("ext.cnf"), "subjectAltName=" + san + "\nextendedKeyUsage=serverAuth\n");
    ok = ok && run({"openssl", "x509", "-req", "-in", dir.file("wfe.csr"), "-CA", ca_pem, "-CAkey",
                    dir.file("ca.key"), "-CAcreateserial", "-out", leaf_pem, "-days", "2",
                    "-extfile", dir.file("ext.cnf")},
                   log) == 0;
    if (!ok) error = read_text(log);
  }
  std::string ca_pem, leaf_pem, leaf_key;
  bool ok = false;
  std::string error;
};

// pebble + pebble-challtestsrv on loopback (stack-notes §4: -dnsserver to challtestsrv, whose
// answers are 127.0.0.1 and no AAAA, every listener on 127.0.0.1 or off).
class Pebble {
 public:
  // `alternate_roots`: PEBBLE_ALTERNATE_ROOTS, extra root hierarchies offered as alternates.
  explicit Pebble(int nonce_reject_percent = 0, int alternate_roots = 0) : ca_(dir_) {
    if (!ca_.ok) {
      error_ = "openssl: " + ca_.error;
      return;
    }
    port_ = free_port();
    mgmt_port_ = free_port();
    http_port_ = free_port();
    tls_port_ = free_port();
    dns_port_ = free_port();
    const int chall_mgmt = free_port();
    write_text(dir_.file("pebble.json"),
               "{\"pebble\":{\"listenAddress\":\"127.0.0.1:" + std::to_string(port_) +
                   "\",\"managementListenAddress\":\"127.0.0.1:" + std::to_string(mgmt_port_) +
                   "\",\"certificate\":\"" + ca_.leaf_pem + "\",\"privateKey\":\"" + ca_.leaf_key +
                   "\",\"httpPort\":" + std::to_string(http_port_) +
                   ",\"tlsPort\":" + std::to_string(tls_port_) +
                   ",\"ocspResponderURL\":\"\",\"externalAccountBindingRequired\":false}}");
    chall_ = std::make_unique<Child>(
        std::vector<std::string>{"pebble-challtestsrv", "-dns01",
                                 "127.0.0.1:" + std::to_string(dns_port_), "-http01", "",
                                 "-https01", "", "-tlsalpn01", "", "-management",
                                 "127.0.0.1:" + std::to_string(chall_mgmt), "-defaultIPv4",
                                 "127.0.0.1", "-defaultIPv6", ""},
        std::vector<std::pair<std::string, std::string>>{}, dir_.file("challtestsrv.log"));
    pebble_ = std::make_unique<Child>(
        std::vector<std::string>{"pebble", "-config", dir_.file("pebble.json"), "-dnsserver",
                                 "127.0.0.1:" + std::to_string(dns_port_)},
        std::vector<std::pair<std::string, std::string>>{
            {"PEBBLE_VA_NOSLEEP", "1"},
            {"PEBBLE_WFE_NONCEREJECT", std::to_string(nonce_reject_percent)},
            {"PEBBLE_ALTERNATE_ROOTS", std::to_string(alternate_roots)}},
        dir_.file("pebble.log"));
    // Ready once both listen; a child that exits early (port taken, bad flag) ends the wait.
    for (int i = 0; i < 500; ++i) {
      if (port_open(port_) && port_open(mgmt_port_) && port_open(chall_mgmt)) return;
      if (pebble_->poll_exit() >= 0 || chall_->poll_exit() >= 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    error_ = "pebble did not start:\n" + logs();
  }

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  std::string directory_url() const {
    return "https://127.0.0.1:" + std::to_string(port_) + "/dir";
  }
  std::string management_url(const std::string& path) const {
    return "https://127.0.0.1:" + std::to_string(mgmt_port_) + path;
  }
  const std::string& ca_file() const { return ca_.ca_pem; }
  const TestCa& ca() const { return ca_; }
  int http_port() const { return http_port_; }
  std::string logs() const {
    return "--- pebble.log\n" + read_text(dir_.file("pebble.log")) + "--- challtestsrv.log\n" +
           read_text(dir_.file("challtestsrv.log"));
  }

 private:
  TempDir dir_;
  TestCa ca_;
  int port_ = 0, mgmt_port_ = 0, http_port_ = 0, tls_port_ = 0, dns_port_ = 0;
  std::unique_ptr<Child> chall_;
  std::unique_ptr<Child> pebble_;
  std::string error_;
};

// A blocking accept loop on 127.0.0.1:<port> on its own thread; handle(fd) serves one
// connection. Stopped by shutdown(2) on the listening socket, which wakes a blocked accept()
// where close() alone would not (stack-notes §4).
class Listener {
 public:
  Listener(int port, std::function<void(int)> handle) : handle_(std::move(handle)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    ok_ =
        ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 && ::listen(fd_, 16) == 0;
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    if (ok_) thread_ = std::thread([this] { loop(); });
  }
  ~Listener() {
    stopping_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    ::close(fd_);
  }
  bool ok() const { return ok_; }
  int port() const { return port_; }

 private:
  void loop() {
    while (!stopping_) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) {
        if (stopping_) return;
        continue;
      }
      timeval tv{5, 0};  // a stuck peer cannot hold the loop (or the destructor) for long
      ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ::setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      handle_(c);
      ::close(c);
    }
  }

  std::function<void(int)> handle_;
  int fd_ = -1;
  int port_ = 0;
  bool ok_ = false;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

struct StubRequest {
  std::string method, target, body;
};

// Reads one HTTP/1.1 request (headers and a Content-Length body) through `read`.
template <typename Read>
bool read_request(Read read, StubRequest& out) {
  std::string data;
  char buf[4096];
  std::size_t header_end = std::string::npos;
  while ((header_end = data.find("\r\n\r\n")) == std::string::npos) {
    int n = read(buf, sizeof buf);
    if (n <= 0) return false;
    data.append(buf, static_cast<std::size_t>(n));
  }
  std::istringstream first(data.substr(0, data.find("\r\n")));
  first >> out.method >> out.target;
  std::size_t length = 0;
  std::string lower = data.substr(0, header_end);
  for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (auto p = lower.find("\r\ncontent-length:"); p != std::string::npos) {
    length = std::stoul(lower.substr(p + 17));
  }
  out.body = data.substr(header_end + 4);
  while (out.body.size() < length) {
    int n = read(buf, sizeof buf);
    if (n <= 0) return false;
    out.body.append(buf, static_cast<std::size_t>(n));
  }
  return true;
}

// HTTP-01 answers on 127.0.0.1:<port>: GET /.well-known/acme-challenge/<token> gets the body
// put() for that token, anything else 404. Counts the hits, since Pebble's VA asks 3 times.
class Http01Server {
 public:
  explicit Http01Server(int port) : listener_(port, [this](int fd) { serve(fd); }) {}
  bool ok() const { return listener_.ok(); }
  void put(const std::string& token, const std::string& body) {
    std::lock_guard lock(mu_);
    answers_[token] = body;
  }
  void remove(const std::string& token) {
    std::lock_guard lock(mu_);
    answers_.erase(token);
  }
  int hits() const { return hits_; }

 private:
  void serve(int fd) {
    StubRequest req;
    if (!read_request([fd](char* b, std::size_t n) { return int(::recv(fd, b, n, 0)); }, req)) {
      return;
    }
    const std::string prefix = "/.well-known/acme-challenge/";
    std::string status = "404 Not Found", body = "no such token";
    if (req.target.rfind(prefix, 0) == 0) {
      std::lock_guard lock(mu_);
      auto it = answers_.find(req.target.substr(prefix.size()));
      if (it != answers_.end()) {
        status = "200 OK";
        body = it->second;
        ++hits_;
      }
    }
    const std::string out = "HTTP/1.1 " + status + "\r\nContent-Type: text/plain\r\n" +
                            "Content-Length: " + std::to_string(body.size()) +
                            "\r\nConnection: close\r\n\r\n" + body;
    ::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
  }

  std::mutex mu_;
  std::map<std::string, std::string> answers_;
  std::atomic<int> hits_{0};
  Listener listener_;  // last: its thread uses the members above
};

// An HTTPS server (OpenSSL, the test CA's leaf) answering each request with respond(req), a
// complete HTTP/1.1 response text.
class HttpsStub {
 public:
  HttpsStub(const TestCa& ca, std::function<std::string(const StubRequest&)> respond)
      : respond_(std::move(respond)), ctx_(SSL_CTX_new(TLS_server_method())) {
    ok_ = SSL_CTX_use_certificate_chain_file(ctx_, ca.leaf_pem.c_str()) == 1 &&
          SSL_CTX_use_PrivateKey_file(ctx_, ca.leaf_key.c_str(), SSL_FILETYPE_PEM) == 1;
    listener_ = std::make_unique<Listener>(0, [this](int fd) { serve(fd); });
    ok_ = ok_ && listener_->ok();
  }
  ~HttpsStub() {
    listener_.reset();
    SSL_CTX_free(ctx_);
  }
  bool ok() const { return ok_; }
  std::string url(const std::string& path) const {
    return "https://127.0.0.1:" + std::to_string(listener_->port()) + path;
  }

 private:
  void serve(int fd) {
    SSL* ssl = SSL_new(ctx_);
    SSL_set_fd(ssl, fd);
    StubRequest req;
    if (SSL_accept(ssl) == 1 &&
        read_request([ssl](char* b, std::size_t n) { return SSL_read(ssl, b, int(n)); }, req)) {
      const std::string out = respond_(req);
      SSL_write(ssl, out.data(), static_cast<int>(out.size()));
      SSL_shutdown(ssl);
    }
    SSL_free(ssl);
    ERR_clear_error();
  }

  std::function<std::string(const StubRequest&)> respond_;
  SSL_CTX* ctx_;
  bool ok_ = false;
  std::unique_ptr<Listener> listener_;
};

}  // namespace hsp::acme::testing
