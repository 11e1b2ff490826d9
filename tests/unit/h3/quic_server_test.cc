// QuicServer: a real client (Debian's gtlsclient, ngtcp2-client 0.12) over a UDP socket on
// 127.0.0.1, and an in-memory ngtcp2 + GnuTLS client (datagrams handed across in the test, no
// socket) for what gtlsclient cannot do: offer another ALPN or none, choose the SNI, watch the
// first flight's size, send a malformed request, and step a simulated clock.
#include "h3/quic_server.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "../tls/tls_test_util.h"
#include "tls/local_ca.h"

namespace hsp::h3 {
namespace {

Address loopback(uint16_t port) {
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(port);
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return Address::from(reinterpret_cast<const sockaddr*>(&in), sizeof in);
}

// Serves a QuicServer on a UDP socket bound to 127.0.0.1 (port chosen by the kernel) from a
// thread of its own, the way the listener will: recvmmsg, receive(), handle_expiry(), sendto.
class UdpLoop {
 public:
  explicit UdpLoop(QuicServer& server) : server_(server) {
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    EXPECT_GE(fd_, 0);
    Address any = loopback(0);
    EXPECT_EQ(::bind(fd_, any.get(), any.len), 0);
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    EXPECT_EQ(::getsockname(fd_, reinterpret_cast<sockaddr*>(&bound), &len), 0);
    local_ = Address::from(reinterpret_cast<sockaddr*>(&bound), len);
    port_ = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~UdpLoop() {
    stop();
    ::close(fd_);
  }

  uint16_t port() const { return port_; }
  // Joins the loop thread; the server may be inspected afterwards.
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run() {
    constexpr size_t kBatch = 16;
    constexpr size_t kSlot = 2048;
    std::vector<uint8_t> rx(kBatch * kSlot);
    std::array<mmsghdr, kBatch> msgs{};
    std::array<iovec, kBatch> iov{};
    std::array<sockaddr_storage, kBatch> from{};
    while (!stop_) {
      uint64_t now = now_ns();
      uint64_t expiry = server_.expiry();
      int timeout_ms = 50;  // also how often stop_ is looked at
      if (expiry <= now) {
        timeout_ms = 0;
      } else if (expiry - now < 50'000'000) {
        timeout_ms = static_cast<int>((expiry - now) / 1'000'000) + 1;
      }
      pollfd pfd{fd_, POLLIN, 0};
      ::poll(&pfd, 1, timeout_ms);
      for (;;) {
        for (size_t i = 0; i < kBatch; ++i) {
          iov[i] = {rx.data() + i * kSlot, kSlot};
          msgs[i].msg_hdr = {};
          msgs[i].msg_hdr.msg_iov = &iov[i];
          msgs[i].msg_hdr.msg_iovlen = 1;
          msgs[i].msg_hdr.msg_name = &from[i];
          msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
        }
        int n = ::recvmmsg(fd_, msgs.data(), kBatch, MSG_DONTWAIT, nullptr);
        if (n <= 0) break;
        uint64_t ts = now_ns();
        for (int i = 0; i < n; ++i) {
          Address remote =
              Address::from(reinterpret_cast<sockaddr*>(&from[i]), msgs[i].msg_hdr.msg_namelen);
          server_.receive({rx.data() + i * kSlot, msgs[i].msg_len}, local_, remote, ts);
        }
      }
      if (now_ns() >= server_.expiry()) server_.handle_expiry(now_ns());
      for (const Datagram& d : server_.take_datagrams()) {
        ::sendto(fd_, d.data.data(), d.data.size(), 0, d.remote.get(), d.remote.len);
      }
    }
  }

  QuicServer& server_;
  int fd_ = -1;
  Address local_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

struct RunResult {
  int exit_code = -1;
  std::string output;
};

// gtlsclient, bounded by coreutils' timeout so that a broken server fails the test instead of
// hanging it.
RunResult run_gtlsclient(const std::string& args) {
  RunResult r;
  std::string cmd = "timeout 30 gtlsclient " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// The handler of these tests: answers every request with 200 "hello" once the request has
// ended, through the handler-side API (submit_response, send_data, end_stream) called back from
// inside the server's callbacks, which the contract allows.
class HelloHandler : public Handler {
 public:
  QuicServer* server = nullptr;
  uint64_t answered = 0;
  std::vector<http::Request> requests;
  std::string body_received;
  bool send_trailers = false;
  bool hold = false;                                  // answer nothing
  std::vector<std::pair<uint64_t, int64_t>> streams;  // (conn, stream) of each request
  uint64_t closed = 0;                                // on_stream_closed calls

  void on_request(uint64_t conn, int64_t id, http::Request&& r, bool end) override {
    requests.push_back(std::move(r));
    streams.emplace_back(conn, id);
    if (end && !hold) answer(conn, id);
  }
  void on_request_data(uint64_t conn, int64_t id, std::string_view data) override {
    body_received.append(data);
    server->consume(conn, id, data.size());
  }
  void on_request_trailers(uint64_t, int64_t, http::HeaderMap&&) override {}
  void on_request_end(uint64_t conn, int64_t id) override {
    if (!hold) answer(conn, id);
  }
  void on_stream_reset(uint64_t, int64_t) override {}
  void on_stream_closed(uint64_t, int64_t) override { ++closed; }
  void on_send_ready(uint64_t, int64_t) override {}

 private:
  void answer(uint64_t conn, int64_t id) {
    http::ResponseHead head;
    head.status = 200;
    head.headers.add("Content-Type", "text/plain; charset=utf-8");
    head.headers.add("Content-Length", "5");
    head.headers.add("Connection", "close");  // connection-specific: never framed in HTTP/3
    ASSERT_TRUE(server->submit_response(conn, id, head, false));
    auto n = server->send_data(conn, id, "hello");
    ASSERT_TRUE(n);
    ASSERT_EQ(*n, 5u);
    std::optional<http::HeaderMap> trailers;
    if (send_trailers) trailers.emplace().add("x-checksum", "abc");
    ASSERT_TRUE(server->end_stream(conn, id, std::move(trailers)));
    ++answered;
  }
};

Result<std::unique_ptr<QuicServer>> make_server(
    std::shared_ptr<const ServerCredentials> creds, HelloHandler& handler,
    const std::function<void(ServerOptions&)>& configure = {}) {
  ServerOptions o;
  o.handler = &handler;
  if (configure) configure(o);
  auto server = QuicServer::create(std::move(creds), o);
  if (server) handler.server = server->get();
  return server;
}

class QuicServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = tls::LocalCa::open(tmp_.path());
    ASSERT_TRUE(ca);
    auto leaf = (*ca)->issue({"x.test"});
    ASSERT_TRUE(leaf);
    auto creds = ServerCredentials::from_certified_key(**leaf);
    ASSERT_TRUE(creds) << creds.errors().front().str();
    creds_ = *creds;
    auto server = make_server(creds_, hello_);
    ASSERT_TRUE(server);
    server_ = std::move(*server);
  }

  // Replaces server_ by one with other options.
  void remake_server(const std::function<void(ServerOptions&)>& configure) {
    server_.reset();
    auto server = make_server(creds_, hello_, configure);
    ASSERT_TRUE(server);
    server_ = std::move(*server);
  }

  tls::testing::TempDir tmp_;
  std::shared_ptr<const ServerCredentials> creds_;
  HelloHandler hello_;
  std::unique_ptr<QuicServer> server_;
};

TEST_F(QuicServerTest, GtlsclientGetsHelloOverUdp) {
  UdpLoop loop(*server_);
  std::string port = std::to_string(loop.port());
  RunResult r = run_gtlsclient("--exit-on-all-streams-close --sni=x.test 127.0.0.1 " + port +
                               " https://x.test:" + port + "/");
  loop.stop();
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // gtlsclient's debug output: the response head, then the body as a hex dump.
  EXPECT_NE(r.output.find("http: stream 0x0 [:status: 200]"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("http: stream 0x0 body 5 bytes"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("68 65 6c 6c 6f                                    |hello|"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("Negotiated ALPN is h3"), std::string::npos) << r.output;
  EXPECT_EQ(server_->stats().handshakes_completed, 1u);
  EXPECT_EQ(hello_.answered, 1u);
}

TEST_F(QuicServerTest, ManyRequestsOnOneConnectionAndSeveralClients) {
  UdpLoop loop(*server_);
  std::string port = std::to_string(loop.port());
  auto args = [&](int requests) {
    return "-q --exit-on-all-streams-close -n " + std::to_string(requests) + " 127.0.0.1 " + port +
           " https://x.test:" + port + "/";
  };
  // 150 requests on the first connection: more than the 100 streams it may have open at once,
  // so it only finishes if every closed request gives its stream credit back.
  std::vector<int> requests{150, 20, 20};
  std::vector<RunResult> results(requests.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < requests.size(); ++i) {
    clients.emplace_back([&, i] { results[i] = run_gtlsclient(args(requests[i])); });
  }
  for (auto& t : clients) t.join();
  loop.stop();
  for (const auto& r : results) EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(server_->stats().handshakes_completed, 3u);
  EXPECT_EQ(hello_.answered, 190u);
}

// --- the in-memory client -------------------------------------------------------------------

// A QUIC v1 client on ngtcp2 + GnuTLS that only handshakes (no HTTP/3): enough to choose the
// ALPN it offers, which gtlsclient cannot.
class MemoryClient {
 public:
  // alpn empty: no ALPN extension at all.
  explicit MemoryClient(std::vector<std::string> alpn, std::string sni = "x.test")
      : alpn_(std::move(alpn)), sni_(std::move(sni)) {
    conn_ref_ = {&MemoryClient::get_conn, this};
  }
  ~MemoryClient() {
    if (conn_ != nullptr) ngtcp2_conn_del(conn_);
    if (tls_ != nullptr) gnutls_deinit(tls_);
    if (cred_ != nullptr) gnutls_certificate_free_credentials(cred_);
  }

  bool start(const Address& local, const Address& remote) {
    local_ = local;
    remote_ = remote;
    ngtcp2_callbacks cb{};
    set_crypto_callbacks(cb);
    cb.client_initial = ngtcp2_crypto_client_initial_cb;
    cb.recv_retry = ngtcp2_crypto_recv_retry_cb;
    cb.rand = rand_nonce;
    cb.get_new_connection_id = [](ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token, size_t cidlen,
                                  void*) {
      gnutls_rnd(GNUTLS_RND_NONCE, cid->data, cidlen);
      cid->datalen = cidlen;
      gnutls_rnd(GNUTLS_RND_NONCE, token, NGTCP2_STATELESS_RESET_TOKENLEN);
      return 0;
    };
    cb.handshake_completed = [](ngtcp2_conn*, void* user_data) {
      static_cast<MemoryClient*>(user_data)->handshake_completed_ = true;
      return 0;
    };
    cb.recv_stream_data = [](ngtcp2_conn* conn, uint32_t flags, int64_t stream_id, uint64_t,
                             const uint8_t* data, size_t len, void* user_data, void*) {
      auto& st = static_cast<MemoryClient*>(user_data)->streams_[stream_id];
      st.data.append(reinterpret_cast<const char*>(data), len);
      if (flags & NGTCP2_STREAM_DATA_FLAG_FIN) st.fin = true;
      extend_credit(conn, stream_id, len);
      return 0;
    };
    cb.stream_reset = [](ngtcp2_conn*, int64_t stream_id, uint64_t, uint64_t app_error_code,
                         void* user_data, void*) {
      auto& st = static_cast<MemoryClient*>(user_data)->streams_[stream_id];
      st.reset_code = static_cast<int64_t>(app_error_code);
      return 0;
    };
    // Called only for a reset whose token the server announced for a CID this client uses.
    cb.recv_stateless_reset = [](ngtcp2_conn*, const ngtcp2_pkt_stateless_reset*, void* user_data) {
      static_cast<MemoryClient*>(user_data)->stateless_reset_ = true;
      return 0;
    };
    ngtcp2_cid dcid, scid;
    dcid.datalen = 16;
    scid.datalen = 16;
    gnutls_rnd(GNUTLS_RND_NONCE, dcid.data, dcid.datalen);
    gnutls_rnd(GNUTLS_RND_NONCE, scid.data, scid.datalen);
    ngtcp2_settings settings;
    ngtcp2_settings_default(&settings);
    settings.initial_ts = now_ns();
    ngtcp2_transport_params params;
    ngtcp2_transport_params_default(&params);
    params.initial_max_streams_uni = 3;
    params.initial_max_stream_data_uni = 64 << 10;
    params.initial_max_stream_data_bidi_local = 64 << 10;  // room for the responses
    params.initial_max_data = 1 << 20;
    ngtcp2_path path{{const_cast<sockaddr*>(local_.get()), local_.len},
                     {const_cast<sockaddr*>(remote_.get()), remote_.len},
                     nullptr};
    if (ngtcp2_conn_client_new(&conn_, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cb, &settings,
                               &params, nullptr, this) != 0) {
      return false;
    }
    if (gnutls_certificate_allocate_credentials(&cred_) != 0 ||
        gnutls_init(&tls_, GNUTLS_CLIENT | GNUTLS_NO_END_OF_EARLY_DATA) != 0 ||
        gnutls_priority_set_direct(tls_, "NORMAL:-VERS-ALL:+VERS-TLS1.3:%DISABLE_TLS13_COMPAT_MODE",
                                   nullptr) != 0 ||
        ngtcp2_crypto_gnutls_configure_client_session(tls_) != 0 ||
        gnutls_credentials_set(tls_, GNUTLS_CRD_CERTIFICATE, cred_) != 0 ||
        gnutls_server_name_set(tls_, GNUTLS_NAME_DNS, sni_.data(), sni_.size()) != 0) {
      return false;
    }
    std::vector<gnutls_datum_t> protos;
    for (auto& p : alpn_) {
      protos.push_back(
          {reinterpret_cast<unsigned char*>(p.data()), static_cast<unsigned>(p.size())});
    }
    if (!protos.empty() && gnutls_alpn_set_protocols(tls_, protos.data(), protos.size(), 0) != 0) {
      return false;
    }
    gnutls_session_set_ptr(tls_, &conn_ref_);
    ngtcp2_conn_set_tls_native_handle(conn_, tls_);
    return true;
  }

  struct Stream {
    std::string data;  // what the server sent on it, raw HTTP/3 frames
    bool fin = false;
    int64_t reset_code = -1;  // RESET_STREAM's application error code, -1: none
  };

  // Opens a request stream carrying `frames` (raw HTTP/3) and FIN; sent by the next write().
  int64_t send_request(std::string frames) {
    int64_t id = -1;
    EXPECT_EQ(ngtcp2_conn_open_bidi_stream(conn_, &id, nullptr), 0);
    outgoing_.push_back({id, std::move(frames)});
    return id;
  }
  const Stream& stream(int64_t id) { return streams_[id]; }

  std::vector<std::vector<uint8_t>> write() {
    std::vector<std::vector<uint8_t>> out;
    while (!outgoing_.empty()) {
      auto& [id, frames] = outgoing_.front();
      std::vector<uint8_t> buf(1452);
      ngtcp2_vec v{reinterpret_cast<uint8_t*>(frames.data()), frames.size()};
      ngtcp2_ssize accepted = -1;
      ngtcp2_ssize n =
          ngtcp2_conn_writev_stream(conn_, nullptr, nullptr, buf.data(), buf.size(), &accepted,
                                    NGTCP2_WRITE_STREAM_FLAG_FIN, id, &v, 1, now_ns());
      if (n <= 0) break;  // blocked: left for a later write
      buf.resize(static_cast<size_t>(n));
      out.push_back(std::move(buf));
      if (accepted >= 0) frames.erase(0, static_cast<size_t>(accepted));
      if (frames.empty()) outgoing_.erase(outgoing_.begin());
    }
    for (;;) {
      std::vector<uint8_t> buf(1452);
      ngtcp2_ssize n =
          ngtcp2_conn_write_pkt(conn_, nullptr, nullptr, buf.data(), buf.size(), now_ns());
      if (n <= 0) break;
      buf.resize(static_cast<size_t>(n));
      out.push_back(std::move(buf));
    }
    return out;
  }

  int read(const std::vector<uint8_t>& data) {
    ngtcp2_path path{{const_cast<sockaddr*>(local_.get()), local_.len},
                     {const_cast<sockaddr*>(remote_.get()), remote_.len},
                     nullptr};
    ngtcp2_pkt_info pi{};
    return ngtcp2_conn_read_pkt(conn_, &path, &pi, data.data(), data.size(), now_ns());
  }

  ngtcp2_connection_close_error close_error() const {
    ngtcp2_connection_close_error ccerr;
    ngtcp2_conn_get_connection_close_error(conn_, &ccerr);
    return ccerr;
  }
  const ngtcp2_transport_params* server_params() const {
    return ngtcp2_conn_get_remote_transport_params(conn_);
  }
  bool handshake_completed() const { return handshake_completed_; }
  bool stateless_reset_received() const { return stateless_reset_; }
  const Address& address() const { return local_; }  // the client's own
  ngtcp2_conn* native() { return conn_; }

  // A CONNECTION_CLOSE (H3_NO_ERROR), as a client closing its connection sends it.
  std::vector<uint8_t> write_close() {
    std::vector<uint8_t> buf(1452);
    ngtcp2_connection_close_error ccerr;
    ngtcp2_connection_close_error_default(&ccerr);
    ngtcp2_connection_close_error_set_application_error(&ccerr, NGHTTP3_H3_NO_ERROR, nullptr, 0);
    ngtcp2_ssize n = ngtcp2_conn_write_connection_close(conn_, nullptr, nullptr, buf.data(),
                                                        buf.size(), &ccerr, now_ns());
    buf.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return buf;
  }
  uint64_t expiry() const { return ngtcp2_conn_get_expiry(conn_); }
  void handle_expiry() {
    uint64_t now = now_ns();
    if (now >= expiry()) ngtcp2_conn_handle_expiry(conn_, now);
  }

  // Whether the certificate the server presented is valid for `name` (not verified further:
  // the test only checks which certificate was chosen).
  bool peer_certificate_matches(const std::string& name) const {
    unsigned count = 0;
    const gnutls_datum_t* certs = gnutls_certificate_get_peers(tls_, &count);
    if (certs == nullptr || count == 0) return false;
    gnutls_x509_crt_t crt;
    if (gnutls_x509_crt_init(&crt) != 0) return false;
    bool ok = gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) == 0 &&
              gnutls_x509_crt_check_hostname(crt, name.c_str()) != 0;
    gnutls_x509_crt_deinit(crt);
    return ok;
  }

 private:
  static ngtcp2_conn* get_conn(ngtcp2_crypto_conn_ref* ref) {
    return static_cast<MemoryClient*>(ref->user_data)->conn_;
  }

  std::vector<std::string> alpn_;
  std::string sni_;
  Address local_, remote_;
  ngtcp2_crypto_conn_ref conn_ref_;
  ngtcp2_conn* conn_ = nullptr;
  gnutls_session_t tls_ = nullptr;
  gnutls_certificate_credentials_t cred_ = nullptr;
  bool handshake_completed_ = false;
  bool stateless_reset_ = false;
  std::map<int64_t, Stream> streams_;
  std::vector<std::pair<int64_t, std::string>> outgoing_;
};

struct Exchange {
  bool handshake_completed = false;
  bool closed_by_server = false;
  size_t first_flight_in = 0;   // bytes of the client's first datagrams
  size_t first_flight_out = 0;  // bytes the server answered with before hearing more
  uint64_t last_receive = 0;    // when the server last got a datagram (steady ns)
};

// Hands datagrams back and forth until the client completes its handshake and the server has
// nothing more to say, or the server closes the connection. Bounded in rounds; when a round
// moves nothing, the loop waits for the earlier of the two timers (pacing, loss recovery).
void pump(QuicServer& server, MemoryClient& client, Exchange& ex,
          const std::function<bool()>& done) {
  Address client_addr = client.address(), server_addr = loopback(443);
  for (int round = 0; round < 100 && !ex.closed_by_server; ++round) {
    bool moved = false;
    for (const auto& pkt : client.write()) {
      if (round == 0) ex.first_flight_in += pkt.size();
      ex.last_receive = now_ns();
      server.receive(pkt, server_addr, client_addr, ex.last_receive);
      moved = true;
    }
    for (const Datagram& d : server.take_datagrams()) {
      if (d.remote.port() != client_addr.port()) continue;  // another (simulated) client's
      if (round == 0) ex.first_flight_out += d.data.size();
      int rv = client.read(d.data);
      if (rv == NGTCP2_ERR_DRAINING) ex.closed_by_server = true;
      moved = true;
    }
    ex.handshake_completed = client.handshake_completed();
    if (moved) continue;
    if (done()) break;
    uint64_t wake = std::min(server.expiry(), client.expiry());
    uint64_t now = now_ns();
    if (wake > now)
      std::this_thread::sleep_for(
          std::chrono::nanoseconds(std::min<uint64_t>(wake - now, 50'000'000)));
    if (now_ns() >= server.expiry()) server.handle_expiry(now_ns());
    client.handle_expiry();
  }
}

Exchange exchange(QuicServer& server, MemoryClient& client) {
  Exchange ex;
  EXPECT_TRUE(client.start(loopback(40000), loopback(443)));
  pump(server, client, ex, [&] { return ex.handshake_completed; });
  return ex;
}

TEST_F(QuicServerTest, HandshakeWithAlpnH3CompletesWithTheAnnouncedLimits) {
  MemoryClient client({"h3"});
  Exchange ex = exchange(*server_, client);
  EXPECT_TRUE(ex.handshake_completed);
  EXPECT_FALSE(ex.closed_by_server);
  const ngtcp2_transport_params* tp = client.server_params();
  ASSERT_NE(tp, nullptr);
  EXPECT_EQ(tp->initial_max_streams_bidi, 100u);
  EXPECT_EQ(tp->max_idle_timeout, 30 * NGTCP2_SECONDS);
  EXPECT_EQ(tp->stateless_reset_token_present, 1);
  // Before the client's address is validated the server sends at most 3x what it received.
  EXPECT_GT(ex.first_flight_out, 0u);
  EXPECT_LE(ex.first_flight_out, 3 * ex.first_flight_in);
  EXPECT_EQ(server_->connection_count(), 1u);
}

TEST_F(QuicServerTest, LargeFirstFlightWaitsForAddressValidation) {
  // A leaf with many names makes the server's handshake flight several times larger than the
  // client's 1200-byte Initial: the server must stop at 3x until the client answers.
  auto ca = tls::LocalCa::open(tmp_.file("big"));
  ASSERT_TRUE(ca);
  std::vector<std::string> names;
  for (int i = 0; i < 200; ++i) {
    names.push_back("name-" + std::to_string(i) + ".a-long-label-to-make-the-certificate-big.test");
  }
  auto leaf = (*ca)->issue(names);
  ASSERT_TRUE(leaf);
  ASSERT_GT((*leaf)->cert_chain_pem().size(), 12'000u);
  auto creds = ServerCredentials::from_certified_key(**leaf);
  ASSERT_TRUE(creds);
  HelloHandler hello;
  auto server = make_server(*creds, hello);
  ASSERT_TRUE(server);

  MemoryClient client({"h3"});
  Exchange ex = exchange(**server, client);
  EXPECT_GE(ex.first_flight_in, 1200u);
  EXPECT_GT(ex.first_flight_out, 2 * ex.first_flight_in);  // it did send up to the limit...
  EXPECT_LE(ex.first_flight_out, 3 * ex.first_flight_in);  // ...and not beyond
  EXPECT_TRUE(ex.handshake_completed);                     // the rest followed validation
}

TEST_F(QuicServerTest, IdleConnectionIsForgottenAfterThirtySeconds) {
  MemoryClient client({"h3"});
  Exchange ex = exchange(*server_, client);
  ASSERT_TRUE(ex.handshake_completed);
  ASSERT_EQ(server_->connection_count(), 1u);
  // The client says nothing more: step the server's clock from expiry to expiry (loss
  // recovery probes go unanswered) until it drops the connection. Simulated time, no waiting.
  uint64_t t = ex.last_receive;
  for (int i = 0; i < 1000 && server_->connection_count() > 0; ++i) {
    t = std::max(t, server_->expiry());
    server_->handle_expiry(t);
    server_->take_datagrams();
  }
  EXPECT_EQ(server_->connection_count(), 0u);
  EXPECT_GE(t - ex.last_receive, 30 * NGTCP2_SECONDS);
  EXPECT_LT(t - ex.last_receive, 31 * NGTCP2_SECONDS);
}

TEST_F(QuicServerTest, MalformedRequestResetsOnlyItsStream) {
  MemoryClient client({"h3"});
  Exchange ex = exchange(*server_, client);
  ASSERT_TRUE(ex.handshake_completed);
  // HEADERS frames, QPACK with static-table references only (RFC 9204 Appendix A): required
  // insert count 0, base 0, then the field lines.
  auto headers = [](std::string fields) {
    std::string block = std::string("\x00\x00", 2) + fields;
    return std::string("\x01") + static_cast<char>(block.size()) + block;
  };
  // Only ":method: GET" (index 17): no :scheme and no :path, a malformed request.
  int64_t bad = client.send_request(headers("\xd1"));
  // GET (17), :scheme https (23), :path / (1), :authority with the literal value "x.test".
  int64_t good = client.send_request(headers("\xd1\xd7\xc1\x50\x06x.test"));
  pump(*server_, client, ex, [&] { return client.stream(good).fin; });
  EXPECT_FALSE(ex.closed_by_server);
  EXPECT_EQ(client.stream(bad).reset_code, static_cast<int64_t>(NGHTTP3_H3_MESSAGE_ERROR));
  EXPECT_TRUE(client.stream(good).fin);
  EXPECT_NE(client.stream(good).data.find("hello"), std::string::npos);
  EXPECT_EQ(hello_.answered, 1u);
  EXPECT_EQ(server_->connection_count(), 1u);
}

// QPACK (RFC 9204 Appendix A) with static-table references only: required insert count 0,
// base 0, then the field lines; wrapped in a HEADERS frame.
std::string headers_frame(const std::string& fields) {
  std::string block = std::string("\x00\x00", 2) + fields;
  return std::string("\x01") + static_cast<char>(block.size()) + block;
}
// POST (20), :scheme https (23), :path / (1), :authority "x.test".
const std::string kPostFields = "\xd4\xd7\xc1\x50\x06x.test";
// GET (17), :scheme https (23), :path / (1), :authority "x.test".
const std::string kGetFields = "\xd1\xd7\xc1\x50\x06x.test";

// A body that contradicts its content-length is a malformed request, a stream error (RFC 9114
// §4.1.2): nghttp3 reports it from the read, and only that stream may end.
TEST_F(QuicServerTest, ContentLengthMismatchResetsOnlyItsStream) {
  hello_.hold = true;  // the good request stays open while the bad one fails
  MemoryClient client({"h3"});
  Exchange ex = exchange(*server_, client);
  ASSERT_TRUE(ex.handshake_completed);
  int64_t good = client.send_request(headers_frame(kGetFields));
  pump(*server_, client, ex, [&] { return hello_.requests.size() == 1; });
  ASSERT_EQ(hello_.requests.size(), 1u);
  // content-length: 5 (static entry 4's name, literal value), then a DATA frame of 3 bytes.
  int64_t bad = client.send_request(headers_frame(kPostFields + "\x54\x01"
                                                                "5") +
                                    std::string("\x00\x03abc"));
  pump(*server_, client, ex, [&] { return client.stream(bad).reset_code >= 0; });
  EXPECT_FALSE(ex.closed_by_server);
  EXPECT_EQ(client.stream(bad).reset_code, static_cast<int64_t>(NGHTTP3_H3_MESSAGE_ERROR));
  // The other request still gets its answer on the same connection.
  hello_.hold = false;
  auto [conn, id] = hello_.streams.front();
  http::ResponseHead head;
  ASSERT_TRUE(server_->submit_response(conn, id, head, true));
  server_->flush(now_ns());
  pump(*server_, client, ex, [&] { return client.stream(good).fin; });
  EXPECT_TRUE(client.stream(good).fin);
  EXPECT_FALSE(ex.closed_by_server);
  EXPECT_EQ(server_->connection_count(), 1u);
}

// A request whose head waits for a QPACK dynamic-table entry that never comes stays blocked in
// nghttp3, which never reports it closed. When the client gives up on it, the QUIC stream's end
// must still give the stream back (MAX_STREAMS), or a few such requests exhaust the connection.
TEST_F(QuicServerTest, QpackBlockedRequestsGiveTheirStreamsBack) {
  remake_server([](ServerOptions& o) { o.max_bidi_streams = 2; });
  MemoryClient client({"h3"});
  Exchange ex = exchange(*server_, client);
  ASSERT_TRUE(ex.handshake_completed);
  // Required insert count 1 (encoded 2), base 1, then dynamic entry 0: never inserted.
  const std::string blocked = std::string("\x01\x03\x02\x00\x80", 5);
  const auto quiet = [] { return true; };  // pump() then stops once nothing moves
  std::vector<int64_t> ids;
  for (int i = 0; i < 2; ++i) ids.push_back(client.send_request(blocked));
  pump(*server_, client, ex, quiet);
  ASSERT_EQ(ngtcp2_conn_get_streams_bidi_left(client.native()), 0u);
  for (int64_t id : ids) ngtcp2_conn_shutdown_stream(client.native(), id, 0x10c);
  pump(*server_, client, ex,
       [&] { return ngtcp2_conn_get_streams_bidi_left(client.native()) == 2; });
  ASSERT_EQ(ngtcp2_conn_get_streams_bidi_left(client.native()), 2u);
  // Both slots are free again: two more requests get their answers.
  int64_t a = client.send_request(headers_frame(kGetFields));
  int64_t b = client.send_request(headers_frame(kGetFields));
  pump(*server_, client, ex, [&] { return client.stream(a).fin && client.stream(b).fin; });
  EXPECT_TRUE(client.stream(a).fin);
  EXPECT_TRUE(client.stream(b).fin);
  EXPECT_FALSE(ex.closed_by_server);
  EXPECT_EQ(hello_.answered, 2u);
}

TEST_F(QuicServerTest, CertificateIsChosenBySni) {
  auto ca = tls::LocalCa::open(tmp_.file("sni"));
  ASSERT_TRUE(ca);
  auto a = (*ca)->issue({"a.test"});
  auto b = (*ca)->issue({"b.test"});
  ASSERT_TRUE(a && b);
  auto creds = ServerCredentials::from_certified_key(**a);
  ASSERT_TRUE(creds);
  ASSERT_TRUE((*creds)->add_pem((*b)->cert_chain_pem(), (*b)->key_pem(), "b.test"));
  HelloHandler hello;
  auto server = make_server(*creds, hello);
  ASSERT_TRUE(server);
  for (std::string sni : {"a.test", "b.test", "unknown.test"}) {
    MemoryClient client({"h3"}, sni);
    ASSERT_TRUE(exchange(**server, client).handshake_completed) << sni;
    std::string expected = sni == "b.test" ? "b.test" : "a.test";  // else the first one
    EXPECT_TRUE(client.peer_certificate_matches(expected)) << sni;
  }
}

TEST_F(QuicServerTest, ClientOfferingAnotherAlpnIsRefused) {
  MemoryClient client({"h2", "http/1.1"});
  Exchange ex = exchange(*server_, client);
  EXPECT_FALSE(ex.handshake_completed);
  ASSERT_TRUE(ex.closed_by_server);
  ngtcp2_connection_close_error ccerr = client.close_error();
  EXPECT_EQ(ccerr.type, NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_TRANSPORT);
  // CRYPTO_ERROR carrying TLS alert 120, no_application_protocol (RFC 9001 §4.8, §8.1).
  EXPECT_EQ(ccerr.error_code, NGTCP2_CRYPTO_ERROR | GNUTLS_A_NO_APPLICATION_PROTOCOL);
  EXPECT_EQ(server_->stats().handshakes_failed, 1u);
  EXPECT_EQ(server_->stats().handshakes_completed, 0u);
  // Only its closing period is left (RFC 9000 §10.2.1).
  EXPECT_EQ(server_->connection_count(), 1u);
  EXPECT_EQ(server_->closing_count(), 1u);
}

TEST_F(QuicServerTest, ClientOfferingNoAlpnIsRefused) {
  MemoryClient client({});
  Exchange ex = exchange(*server_, client);
  EXPECT_FALSE(ex.handshake_completed);
  ASSERT_TRUE(ex.closed_by_server);
  EXPECT_EQ(client.close_error().error_code,
            NGTCP2_CRYPTO_ERROR | GNUTLS_A_NO_APPLICATION_PROTOCOL);
  EXPECT_EQ(server_->closing_count(), 1u);
}

TEST_F(QuicServerTest, UnknownVersionGetsVersionNegotiation) {
  // A long-header packet of version 0x1a2a3a4a (reserved for greasing), padded to 1200 bytes.
  std::vector<uint8_t> pkt(1200, 0);
  size_t i = 0;
  pkt[i++] = 0xc0;
  for (uint8_t b : {0x1a, 0x2a, 0x3a, 0x4a}) pkt[i++] = b;
  pkt[i++] = 8;  // DCID
  for (int k = 0; k < 8; ++k) pkt[i++] = static_cast<uint8_t>(0x10 + k);
  pkt[i++] = 8;  // SCID
  for (int k = 0; k < 8; ++k) pkt[i++] = static_cast<uint8_t>(0x20 + k);
  server_->receive(pkt, loopback(443), loopback(40000), now_ns());
  auto out = server_->take_datagrams();
  ASSERT_EQ(out.size(), 1u);
  const auto& vn = out[0].data;
  ASSERT_GE(vn.size(), 5u + 1 + 8 + 1 + 8 + 4);
  EXPECT_EQ(vn[0] & 0x80, 0x80);
  EXPECT_EQ(vn[1] | vn[2] | vn[3] | vn[4], 0);  // version 0: Version Negotiation
  EXPECT_EQ(vn[6], 0x20);                       // our DCID is the client's SCID
  EXPECT_EQ(server_->connection_count(), 0u);

  // The same packet below 1200 bytes gets nothing: no amplification for spoofed sources.
  pkt.resize(200);
  server_->receive(pkt, loopback(443), loopback(40000), now_ns());
  EXPECT_TRUE(server_->take_datagrams().empty());
}

// Debian's ngtcp2 asserts on empty buffers: an empty datagram (anyone can send one) must never
// reach it, in either entry point.
TEST_F(QuicServerTest, EmptyDatagramIsDropped) {
  std::vector<uint8_t> none;
  EXPECT_FALSE(QuicServer::owner_of(none).has_value());
  server_->receive(none, loopback(443), loopback(40000), now_ns());
  EXPECT_TRUE(server_->take_datagrams().empty());
  EXPECT_EQ(server_->stats().datagrams_dropped, 1u);
}

TEST_F(QuicServerTest, ShortInitialOpensNoConnection) {
  MemoryClient client({"h3"});
  ASSERT_TRUE(client.start(loopback(40000), loopback(443)));
  auto pkts = client.write();
  ASSERT_FALSE(pkts.empty());
  ASSERT_GE(pkts[0].size(), 1200u);  // a client pads its Initial...
  pkts[0].resize(1000);              // ...and a truncated one must not be accepted
  server_->receive(pkts[0], loopback(443), loopback(40000), now_ns());
  EXPECT_EQ(server_->connection_count(), 0u);
  EXPECT_TRUE(server_->take_datagrams().empty());
}

// --- Retry, stateless resets, closing and draining periods ---------------------------------

// A long-header QUIC v1 packet of the given type (RFC 9000 §17.2: 0 Initial, 3 Retry).
bool is_long_v1(const std::vector<uint8_t>& d, unsigned type) {
  return d.size() > 5 && (d[0] & 0x80) != 0 && ((d[0] >> 4) & 3) == type && d[1] == 0 &&
         d[2] == 0 && d[3] == 0 && d[4] == 1;
}
bool is_retry(const std::vector<uint8_t>& d) {
  return is_long_v1(d, 3);
}
bool is_initial(const std::vector<uint8_t>& d) {
  return is_long_v1(d, 0);
}

// A short-header packet of `size` bytes to connection ID `dcid`, random after it: junk, or a
// late packet of a connection the server no longer knows.
std::vector<uint8_t> short_packet(const std::vector<uint8_t>& dcid, size_t size) {
  std::vector<uint8_t> pkt(size);
  gnutls_rnd(GNUTLS_RND_NONCE, pkt.data(), pkt.size());
  pkt[0] = static_cast<uint8_t>((pkt[0] & 0x3f) | 0x40);
  std::copy(dcid.begin(), dcid.end(), pkt.begin() + 1);
  return pkt;
}

// HTTP/3 HEADERS for GET https://x.test/ (QPACK static-table references only, RFC 9204
// Appendix A: GET, :scheme https, :path /, then :authority with the literal value "x.test").
std::string get_request() {
  std::string block = std::string("\x00\x00", 2) + "\xd1\xd7\xc1\x50\x06x.test";
  return std::string("\x01") + static_cast<char>(block.size()) + block;
}

TEST_F(QuicServerTest, GtlsclientGetsHelloAfterRetry) {
  remake_server([](ServerOptions& o) { o.always_retry = true; });
  UdpLoop loop(*server_);
  std::string port = std::to_string(loop.port());
  RunResult r = run_gtlsclient("--exit-on-all-streams-close --sni=x.test 127.0.0.1 " + port +
                               " https://x.test:" + port + "/");
  loop.stop();
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("http: stream 0x0 body 5 bytes"), std::string::npos) << r.output;
  EXPECT_EQ(server_->stats().retries_sent, 1u);
  EXPECT_EQ(server_->stats().tokens_rejected, 0u);
  EXPECT_EQ(server_->stats().connections_accepted, 1u);
  EXPECT_EQ(server_->stats().handshakes_completed, 1u);
  EXPECT_EQ(hello_.answered, 1u);
}

TEST_F(QuicServerTest, FloodOfInitialsGetsRetriesWhileEstablishedClientGoesOn) {
  remake_server([](ServerOptions& o) {
    o.retry_above_handshakes = 5;
    o.cid_prefix = 0x42;
  });
  MemoryClient established({"h3"});
  Exchange ex = exchange(*server_, established);
  ASSERT_TRUE(ex.handshake_completed);

  // 20 new clients on as many ports send their first Initial and never answer (as spoofed
  // sources would not): 5 handshakes start, every later Initial gets a Retry and no state.
  constexpr int kFlood = 20;
  constexpr int kUnderLoad = 5;
  std::vector<std::unique_ptr<MemoryClient>> flood;
  std::vector<std::vector<uint8_t>> retries(kFlood);
  for (int i = 0; i < kFlood; ++i) {
    auto c = std::make_unique<MemoryClient>(std::vector<std::string>{"h3"});
    ASSERT_TRUE(c->start(loopback(static_cast<uint16_t>(50000 + i)), loopback(443)));
    auto pkts = c->write();
    ASSERT_EQ(pkts.size(), 1u);
    EXPECT_FALSE(QuicServer::owner_of(pkts[0]).has_value());  // a DCID the client chose
    server_->receive(pkts[0], loopback(443), c->address(), now_ns());
    for (Datagram& d : server_->take_datagrams()) {
      if (!is_retry(d.data)) continue;
      EXPECT_LE(d.data.size(), pkts[0].size());  // no amplification
      EXPECT_EQ(d.remote.port(), 50000 + i);
      retries[i] = std::move(d.data);
    }
    flood.push_back(std::move(c));
  }
  for (int i = 0; i < kFlood; ++i) EXPECT_EQ(retries[i].empty(), i < kUnderLoad) << i;
  EXPECT_EQ(server_->stats().retries_sent, static_cast<uint64_t>(kFlood - kUnderLoad));
  EXPECT_EQ(server_->stats().connections_accepted, 1u + kUnderLoad);
  EXPECT_EQ(server_->connection_count(), 1u + kUnderLoad);

  // The established client is served as before.
  int64_t id = established.send_request(get_request());
  pump(*server_, established, ex, [&] { return established.stream(id).fin; });
  EXPECT_NE(established.stream(id).data.find("hello"), std::string::npos);
  EXPECT_EQ(hello_.answered, 1u);

  // A real client among them answers its Retry: the token proves its address, so it gets its
  // connection while the server is still under load, and its handshake completing means the
  // transport parameters carried the Retry's CIDs as the client checks them (RFC 9000 §7.3).
  MemoryClient& real = *flood.back();
  ASSERT_EQ(real.read(retries.back()), 0);
  auto pkts = real.write();
  ASSERT_FALSE(pkts.empty());
  EXPECT_TRUE(is_initial(pkts[0]));
  EXPECT_EQ(QuicServer::owner_of(pkts[0]), std::optional<uint8_t>(0x42));  // the Retry's SCID
  Exchange rex;
  for (const auto& p : pkts) server_->receive(p, loopback(443), real.address(), now_ns());
  pump(*server_, real, rex, [&] { return rex.handshake_completed; });
  EXPECT_TRUE(rex.handshake_completed);
  EXPECT_EQ(server_->stats().connections_accepted, 1u + kUnderLoad + 1);
  EXPECT_EQ(server_->stats().retries_sent, static_cast<uint64_t>(kFlood - kUnderLoad));
  EXPECT_EQ(server_->stats().tokens_rejected, 0u);
}

TEST_F(QuicServerTest, ForgedExpiredOrMovedRetryTokenIsRejected) {
  remake_server([](ServerOptions& o) { o.always_retry = true; });
  // The Initial a client sends after our Retry, and where its token is in it.
  auto after_retry = [&](MemoryClient& client, uint64_t at) {
    const size_t connections = server_->connection_count();
    server_->receive(client.write().at(0), loopback(443), client.address(), at);
    auto out = server_->take_datagrams();
    EXPECT_EQ(out.size(), 1u);
    EXPECT_TRUE(!out.empty() && is_retry(out[0].data));
    EXPECT_EQ(server_->connection_count(), connections);  // a Retry keeps no state
    EXPECT_EQ(client.read(out.at(0).data), 0);
    auto pkts = client.write();
    EXPECT_FALSE(pkts.empty());
    return pkts.at(0);
  };
  auto token_end = [](std::vector<uint8_t>& pkt) -> uint8_t& {
    ngtcp2_pkt_hd hd;
    EXPECT_GT(ngtcp2_pkt_decode_hd_long(&hd, pkt.data(), pkt.size()), 0);
    EXPECT_GT(hd.token.len, 0u);
    return pkt[static_cast<size_t>(hd.token.base - pkt.data()) + hd.token.len - 1];
  };

  MemoryClient client({"h3"});
  ASSERT_TRUE(client.start(loopback(40000), loopback(443)));
  const uint64_t t0 = now_ns();
  std::vector<uint8_t> initial = after_retry(client, t0);
  std::vector<uint8_t> forged = initial;
  token_end(forged) ^= 1;
  struct Case {
    const char* what;
    const std::vector<uint8_t>& pkt;
    Address from;
    uint64_t at;
  };
  for (const Case& c : {Case{"forged", forged, client.address(), t0 + 1},
                        Case{"from another port", initial, loopback(40001), t0 + 1},
                        Case{"expired", initial, client.address(), t0 + 11 * NGTCP2_SECONDS}}) {
    server_->receive(c.pkt, loopback(443), c.from, c.at);
    auto out = server_->take_datagrams();
    ASSERT_EQ(out.size(), 1u) << c.what;
    EXPECT_TRUE(is_initial(out[0].data)) << c.what;  // CONNECTION_CLOSE, no state
    EXPECT_LT(out[0].data.size(), c.pkt.size()) << c.what;
    EXPECT_EQ(server_->connection_count(), 0u) << c.what;
  }
  EXPECT_EQ(server_->stats().tokens_rejected, 3u);

  // The genuine one, in time and from the address the Retry went to, is accepted.
  Exchange ex;
  server_->receive(initial, loopback(443), client.address(), t0 + 2);
  pump(*server_, client, ex, [&] { return ex.handshake_completed; });
  EXPECT_TRUE(ex.handshake_completed);
  EXPECT_EQ(server_->stats().tokens_rejected, 3u);
  EXPECT_EQ(server_->stats().retries_sent, 1u);

  // What a client with a bad token hears (it would refuse a second Retry): INVALID_TOKEN.
  MemoryClient other({"h3"});
  ASSERT_TRUE(other.start(loopback(40002), loopback(443)));
  std::vector<uint8_t> bad = after_retry(other, now_ns());
  token_end(bad) ^= 1;
  server_->receive(bad, loopback(443), other.address(), now_ns());
  auto out = server_->take_datagrams();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(other.read(out[0].data), NGTCP2_ERR_DRAINING);
  EXPECT_EQ(other.close_error().error_code, NGTCP2_INVALID_TOKEN);
  EXPECT_EQ(server_->connection_count(), 1u);  // the genuine client's only
}

TEST_F(QuicServerTest, ClientOfAForgottenConnectionGetsAStatelessReset) {
  MemoryClient client({"h3"});
  Exchange ex = exchange(*server_, client);
  ASSERT_TRUE(ex.handshake_completed);
  // The server forgets the connection (idle: silently, RFC 9000 §10.1) while the client, on
  // its own clock, still has it.
  uint64_t t = ex.last_receive;
  for (int i = 0; i < 1000 && server_->connection_count() > 0; ++i) {
    t = std::max(t, server_->expiry());
    server_->handle_expiry(t);
    server_->take_datagrams();
  }
  ASSERT_EQ(server_->connection_count(), 0u);
  client.send_request(get_request());
  auto pkts = client.write();
  ASSERT_FALSE(pkts.empty());
  ASSERT_EQ(pkts[0][0] & 0x80, 0);  // a short header
  server_->receive(pkts[0], loopback(443), client.address(), t);
  auto out = server_->take_datagrams();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_LT(out[0].data.size(), pkts[0].size());
  EXPECT_GE(out[0].data.size(), 21u);
  // The client recognises the token announced for the CID it sent to and stops at once.
  EXPECT_EQ(client.read(out[0].data), NGTCP2_ERR_DRAINING);
  EXPECT_TRUE(client.stateless_reset_received());
  EXPECT_EQ(server_->stats().stateless_resets_sent, 1u);
}

TEST_F(QuicServerTest, StatelessResetsAreSmallerThanTheirTriggerAndRateLimited) {
  remake_server([](ServerOptions& o) {
    o.stateless_resets_per_second = 10;
    o.cid_prefix = 0x42;
  });
  std::vector<uint8_t> cid(18);
  gnutls_rnd(GNUTLS_RND_NONCE, cid.data(), cid.size());
  cid[0] = 0x42;
  auto send = [&](const std::vector<uint8_t>& pkt, uint64_t at) {
    server_->receive(pkt, loopback(443), loopback(40000), at);
    return server_->take_datagrams();
  };
  const uint64_t t = now_ns();
  // Too short to be a packet of ours (first byte, 18-byte CID, 4 + 16 bytes for the header
  // protection sample): no answer.
  EXPECT_TRUE(send(short_packet(cid, 38), t).empty());
  // The shortest that could be: a reset one byte shorter, looking like a short header.
  auto out = send(short_packet(cid, 39), t);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data.size(), 38u);
  EXPECT_EQ(out[0].data[0] & 0xc0, 0x40);
  // A long packet: a reset of 43 bytes and a random few more, far below the trigger.
  out = send(short_packet(cid, 1200), t);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_GE(out[0].data.size(), 43u);
  EXPECT_LT(out[0].data.size(), 60u);
  // A CID with another server's prefix was not issued here.
  std::vector<uint8_t> foreign = cid;
  foreign[0] = 0x43;
  EXPECT_TRUE(send(short_packet(foreign, 100), t).empty());
  // A flood: 10 a second, in bursts of at most 10 (2 of the first burst were used above).
  auto flood = [&](uint64_t at) {
    size_t resets = 0;
    for (int i = 0; i < 50; ++i) resets += send(short_packet(cid, 100), at).size();
    return resets;
  };
  EXPECT_EQ(flood(t), 8u);
  EXPECT_EQ(flood(t + NGTCP2_SECONDS / 2), 5u);
  EXPECT_EQ(flood(t + 60 * NGTCP2_SECONDS), 10u);
  EXPECT_EQ(server_->stats().stateless_resets_sent, 2u + 8 + 5 + 10);
}

TEST_F(QuicServerTest, ClosedConnectionRepeatsItsCloseThenIsForgotten) {
  hello_.hold = true;  // the request stays open
  MemoryClient client({"h3"});
  Exchange ex = exchange(*server_, client);
  ASSERT_TRUE(ex.handshake_completed);
  client.send_request(get_request());
  pump(*server_, client, ex, [&] { return !hello_.streams.empty(); });
  ASSERT_EQ(hello_.streams.size(), 1u);
  auto [conn_id, stream_id] = hello_.streams[0];

  const uint64_t t = now_ns();
  server_->close_all(t);
  // The handler hears at once that the stream is gone, not when the closing period ends.
  EXPECT_EQ(hello_.closed, 1u);
  EXPECT_FALSE(server_->submit_response(conn_id, stream_id, http::ResponseHead{}, true));
  EXPECT_EQ(server_->connection_count(), 1u);
  EXPECT_EQ(server_->closing_count(), 1u);
  auto out = server_->take_datagrams();
  ASSERT_EQ(out.size(), 1u);
  const std::vector<uint8_t> close = out[0].data;  // lost: the client never sees it

  // The client goes on sending; its 1st, 2nd, 4th and 8th packet get the same close again.
  client.send_request(get_request());
  auto pkts = client.write();
  ASSERT_FALSE(pkts.empty());
  std::vector<int> answered;
  for (int i = 1; i <= 8; ++i) {
    server_->receive(pkts[0], loopback(443), client.address(), t + i);
    for (const Datagram& d : server_->take_datagrams()) {
      EXPECT_EQ(d.data, close);
      EXPECT_EQ(d.remote.port(), client.address().port());
      answered.push_back(i);
    }
  }
  EXPECT_EQ(answered, (std::vector<int>{1, 2, 4, 8}));
  EXPECT_EQ(client.read(close), NGTCP2_ERR_DRAINING);
  EXPECT_EQ(client.close_error().type, NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION);
  EXPECT_EQ(client.close_error().error_code, NGHTTP3_H3_NO_ERROR);

  // 3 PTO later it is forgotten; its packets then get a stateless reset.
  const uint64_t end = server_->expiry();
  EXPECT_GT(end, t);
  EXPECT_LT(end - t, 3 * NGTCP2_SECONDS);  // 3 PTO on loopback: far less
  server_->handle_expiry(end - 1);
  EXPECT_EQ(server_->connection_count(), 1u);
  server_->handle_expiry(end);
  EXPECT_EQ(server_->connection_count(), 0u);
  EXPECT_EQ(server_->expiry(), UINT64_MAX);
  server_->receive(pkts[0], loopback(443), client.address(), end + 1);
  out = server_->take_datagrams();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_LT(out[0].data.size(), pkts[0].size());
  EXPECT_EQ(server_->stats().stateless_resets_sent, 1u);
  EXPECT_EQ(hello_.closed, 1u);
}

TEST_F(QuicServerTest, ConnectionTheClientClosedDrainsSilently) {
  MemoryClient client({"h3"});
  Exchange ex = exchange(*server_, client);
  ASSERT_TRUE(ex.handshake_completed);
  std::vector<uint8_t> close = client.write_close();
  ngtcp2_version_cid vc;
  ASSERT_EQ(ngtcp2_pkt_decode_version_cid(&vc, close.data(), close.size(), 18), 0);
  ASSERT_EQ(vc.dcidlen, 18u);
  const std::vector<uint8_t> server_cid(vc.dcid, vc.dcid + vc.dcidlen);
  const uint64_t t = now_ns();
  server_->receive(close, loopback(443), client.address(), t);
  // Draining (RFC 9000 §10.2.2): nothing is sent, late packets included (no stateless reset).
  EXPECT_TRUE(server_->take_datagrams().empty());
  EXPECT_EQ(server_->closing_count(), 1u);
  server_->receive(short_packet(server_cid, 100), loopback(443), client.address(), t + 1);
  EXPECT_TRUE(server_->take_datagrams().empty());

  const uint64_t end = server_->expiry();
  EXPECT_GT(end, t);
  server_->handle_expiry(end);
  EXPECT_EQ(server_->connection_count(), 0u);
  server_->receive(short_packet(server_cid, 100), loopback(443), client.address(), end + 1);
  EXPECT_EQ(server_->take_datagrams().size(), 1u);  // unknown now: a stateless reset
  EXPECT_EQ(server_->stats().stateless_resets_sent, 1u);
}

TEST(ServerCredentialsTest, GarbagePemIsAnError) {
  auto creds = ServerCredentials::from_pem("not a certificate", "not a key");
  ASSERT_FALSE(creds);
  EXPECT_NE(creds.errors().front().message.find("gnutls"), std::string::npos);
}

// --- write_packet (h3/common.h), on the test client's connection ---------------------------

// Before any answer from a server: the first Initial (padded to the 1200 bytes of RFC 9000
// §14.1), then nothing until the server speaks.
TEST(WritePacketTest, PacksTheInitialThenWaitsForTheServer) {
  MemoryClient client({"h3"});
  ASSERT_TRUE(client.start(loopback(40000), loopback(443)));
  std::array<uint8_t, 1452> buf;
  uint64_t now = now_ns();
  PacketWrite first =
      write_packet(client.native(), nullptr, nullptr, nullptr, buf.data(), buf.size(), now);
  ASSERT_FALSE(first.failed()) << first.quic_error << " " << first.h3_error;
  EXPECT_GE(first.size, 1200u);
  EXPECT_NE(buf[0] & 0x80, 0);  // a long header: the Initial
  PacketWrite second =
      write_packet(client.native(), nullptr, nullptr, nullptr, buf.data(), buf.size(), now);
  EXPECT_FALSE(second.failed());
  EXPECT_EQ(second.size, 0u);
}

TEST(WritePacketTest, ReportsQuicErrors) {
  MemoryClient client({"h3"});
  ASSERT_TRUE(client.start(loopback(40000), loopback(443)));
  std::array<uint8_t, 1452> buf;
  uint64_t now = now_ns();
  ASSERT_GT(
      write_packet(client.native(), nullptr, nullptr, nullptr, buf.data(), buf.size(), now).size,
      0u);
  ngtcp2_connection_close_error ccerr;
  ngtcp2_connection_close_error_default(&ccerr);
  ASSERT_GT(ngtcp2_conn_write_connection_close(client.native(), nullptr, nullptr, buf.data(),
                                               buf.size(), &ccerr, now),
            0);
  // In the closing period nothing but the close may be sent: the caller must learn it.
  PacketWrite w =
      write_packet(client.native(), nullptr, nullptr, nullptr, buf.data(), buf.size(), now);
  EXPECT_EQ(w.quic_error, NGTCP2_ERR_CLOSING);
  EXPECT_EQ(w.h3_error, 0);
  EXPECT_EQ(w.size, 0u);
}

}  // namespace
}  // namespace hsp::h3
