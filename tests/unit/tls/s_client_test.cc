// One handshake with a client we did not write: Debian's `openssl s_client` against a minimal
// blocking accept loop on 127.0.0.1 (port chosen by the kernel) in this process.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mutex>
#include <thread>

#include "tls/local_ca.h"
#include "tls/server_context.h"
#include "tls_test_util.h"

namespace hsp::tls {
namespace {

struct Accepted {
  bool handshake_ok = false;
  std::string alpn;
};

// Serves `count` connections one after the other, then returns. Every wait is bounded so that a
// client that never shows up cannot hang the test binary.
class LoopbackTlsServer {
 public:
  LoopbackTlsServer(ServerContext& ctx, int count) : ctx_(ctx) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(fd_, 4), 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this, count] { run(count); });
  }
  ~LoopbackTlsServer() {
    join();
    ::close(fd_);
  }
  int port() const { return port_; }
  // Waits until the loop has served its connections (or given up) and returns what it saw.
  std::vector<Accepted> join() {
    if (thread_.joinable()) thread_.join();
    std::lock_guard<std::mutex> lock(mu_);
    return results_;
  }

 private:
  void run(int count) {
    for (int i = 0; i < count; ++i) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 30000) != 1) return;
      int conn = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) return;
      timeval tv{10, 0};
      ::setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ::setsockopt(conn, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      SSL* ssl = SSL_new(ctx_.native());
      SSL_set_fd(ssl, conn);
      Accepted a;
      a.handshake_ok = SSL_accept(ssl) == 1;
      a.alpn = std::string(ServerContext::selected_alpn(ssl));
      if (a.handshake_ok) {
        char buf[256];
        while (SSL_read(ssl, buf, sizeof buf) > 0) {
        }
        SSL_shutdown(ssl);
      }
      ERR_clear_error();
      SSL_free(ssl);
      ::close(conn);
      std::lock_guard<std::mutex> lock(mu_);
      results_.push_back(a);
    }
  }

  ServerContext& ctx_;
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::vector<Accepted> results_;
};

std::string run_command(const std::string& cmd) {
  std::string out;
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  ::pclose(f);
  return out;
}

TEST(OpensslSClient, NegotiatesAlpnAndVerifiesTheSiteCertificateFromTheLocalCa) {
  ::signal(SIGPIPE, SIG_IGN);  // s_client may close before our last write
  testing::TempDir tmp;
  auto ca = LocalCa::open(tmp.path());
  ASSERT_TRUE(ca);
  auto a = (*ca)->issue({"a.test"});
  auto b = (*ca)->issue({"b.test"});
  ASSERT_TRUE(a && b);
  auto selector = CertSelector::build({{*a, {}}, {*b, {}}});
  auto ctx = ServerContext::create(ServerOptions{}, [selector] { return selector; });
  ASSERT_TRUE(ctx);

  LoopbackTlsServer server(**ctx, 2);
  std::string base =
      "timeout 30 openssl s_client -connect 127.0.0.1:" + std::to_string(server.port()) +
      " -CAfile " + (*ca)->root_path() + " -verify_return_error";
  std::string h2 = run_command(base + " -servername a.test -verify_hostname a.test" +
                               " -alpn h2,http/1.1 </dev/null 2>&1");
  std::string h1 = run_command(base + " -servername b.test -verify_hostname b.test" +
                               " -alpn http/1.1 </dev/null 2>&1");

  EXPECT_NE(h2.find("ALPN protocol: h2"), std::string::npos) << h2;
  EXPECT_NE(h2.find("subject=CN = a.test"), std::string::npos) << h2;
  EXPECT_NE(h2.find("Verify return code: 0 (ok)"), std::string::npos) << h2;
  EXPECT_NE(h1.find("ALPN protocol: http/1.1"), std::string::npos) << h1;
  EXPECT_NE(h1.find("subject=CN = b.test"), std::string::npos) << h1;
  EXPECT_NE(h1.find("Verify return code: 0 (ok)"), std::string::npos) << h1;

  std::vector<Accepted> seen = server.join();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_TRUE(seen[0].handshake_ok);
  EXPECT_EQ(seen[0].alpn, "h2");
  EXPECT_TRUE(seen[1].handshake_ok);
  EXPECT_EQ(seen[1].alpn, "http/1.1");
}

}  // namespace
}  // namespace hsp::tls
