// hsp-bench over HTTP/3: one QUIC connection (ngtcp2 0.12 with the GnuTLS crypto helper) carrying
// requests through nghttp3 0.8, driven by Asio on the Connection's io_context.
//
// Shape of the code:
// - Everything happens in "rounds": a socket readiness, a timer expiry or a posted flush. A round
//   reads every datagram that is waiting (recvmmsg until EAGAIN), hands the completions that the
//   libraries produced to the driver, writes what is due (sendmmsg, one syscall per batch) and
//   re-arms ngtcp2's expiry timer. Library callbacks never call the driver: they only record
//   completions, so the driver may submit or destroy us from on_complete without re-entering
//   ngtcp2 or nghttp3 while they are inside a callback.
// - The object the driver owns (H3Connection) is a thin shell around a shared Impl. Asio handlers
//   hold the Impl, so destroying the shell while reads and timers are pending is safe: it only
//   detaches the Impl, which closes the socket and dies with the last handler.
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "connection.h"
#include "h3/common.h"

namespace hsp::bench {
namespace {

namespace asio = boost::asio;
using asio::ip::udp;

// Datagrams larger than this are never asked for: we announce it as max_udp_payload_size, so a
// receive slot of this size always holds a whole datagram.
constexpr size_t kMaxUdpPayload = 2048;
// Datagrams per recvmmsg / sendmmsg call. 16 slots of 2 KiB each way: 64 KiB per connection.
constexpr size_t kBatch = 16;
// QUIC's own give-up time for a handshake that gets no answer. The seam carries no timeout, so
// this matches hsp-bench's default --timeout (10 s); a shorter --timeout still ends the run on
// time through the driver, only the connection lingers until this deadline.
constexpr ngtcp2_duration kHandshakeTimeout = 10 * NGTCP2_SECONDS;
// Idle timeout announced to the server: long enough that a slow response does not trip it.
constexpr ngtcp2_duration kIdleTimeout = 30 * NGTCP2_SECONDS;

// The QUIC + HTTP/3 glue that is the same on the gateway's server side (gateway/h3/common.h).
using h3::extend_credit;
using h3::make_nv;
using h3::now_ns;

// GnuTLS certificate credentials are read-only once built and may be shared by sessions on any
// thread, so each trust setting is loaded once per process instead of once per (re)connection:
// the system store alone is ~150 certificates. They live until exit (a load tool has one or two).
struct Credentials {
  gnutls_certificate_credentials_t cred = nullptr;
  ~Credentials() {
    if (cred != nullptr) gnutls_certificate_free_credentials(cred);
  }
};

std::shared_ptr<Credentials> credentials_for(const Endpoint& ep, std::string& error) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<Credentials>> cache;
  std::string key = ep.insecure ? "insecure" : ep.ca_file.empty() ? "system" : "ca:" + ep.ca_file;
  std::lock_guard lock(mu);
  if (auto it = cache.find(key); it != cache.end()) return it->second;

  auto creds = std::make_shared<Credentials>();
  if (int rv = gnutls_certificate_allocate_credentials(&creds->cred); rv < 0) {
    error = std::string("gnutls credentials: ") + gnutls_strerror(rv);
    return nullptr;
  }
  if (!ep.insecure) {
    int rv = ep.ca_file.empty() ? gnutls_certificate_set_x509_system_trust(creds->cred)
                                : gnutls_certificate_set_x509_trust_file(
                                      creds->cred, ep.ca_file.c_str(), GNUTLS_X509_FMT_PEM);
    if (rv <= 0) {  // the count of certificates loaded; none is as useless as an error
      error = ep.ca_file.empty() ? "no system trust store"
                                 : "cannot load CA file " + ep.ca_file +
                                       (rv < 0 ? std::string(": ") + gnutls_strerror(rv) : "");
      return nullptr;
    }
  }
  cache.emplace(key, creds);
  return creds;
}

// The name the server certificate must carry: the SNI if any, else the URL's host (an IP
// literal, which GnuTLS matches against the certificate's IP addresses).
std::string verify_name(const Endpoint& ep) {
  if (!ep.sni.empty()) return ep.sni;
  std::string_view a = ep.authority;
  if (!a.empty() && a.front() == '[') {
    auto end = a.find(']');
    return std::string(a.substr(1, end == std::string_view::npos ? a.npos : end - 1));
  }
  auto colon = a.rfind(':');
  if (colon != std::string_view::npos && a.find(':') == colon) a = a.substr(0, colon);
  return a.empty() ? ep.connect_host : std::string(a);
}

// Fields not sent as given: the connection-specific ones make an HTTP/3 message malformed
// (RFC 9114 §4.2), Host travels as :authority, and Content-Length is set from the body.
bool is_dropped_field(std::string_view lower_name) {
  return lower_name == "connection" || lower_name == "keep-alive" ||
         lower_name == "proxy-connection" || lower_name == "transfer-encoding" ||
         lower_name == "upgrade" || lower_name == "host" || lower_name == "content-length";
}

// One request in flight. Pooled per connection, so this file allocates nothing per request once
// the pool and queues have grown (ngtcp2 and nghttp3 still allocate their per-stream state).
struct H3Stream {
  int64_t id = -1;
  uint64_t tag = 0;
  int status = 0;
  uint64_t body_bytes = 0;
  bool in_use = false;
  bool done = false;  // its completion was queued
};

class H3Connection;

class Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(asio::io_context& io, const Endpoint& ep, const RequestTemplate& req,
       ConnectionEvents& events, uint32_t max_streams, Connection& shell)
      : io_(io),
        ep_(ep),
        req_(req),
        events_(&events),
        shell_(&shell),
        wanted_streams_(std::max<uint32_t>(1, max_streams)),
        sock_(io),
        timer_(io),
        conn_ref_{&Impl::get_conn, this} {
    build_header_fields();
  }

  ~Impl() { release(); }

  void start() {
    post_round([](Impl& self) { self.connect(); });
  }

  void detach() {
    events_ = nullptr;
    shell_ = nullptr;
    if (!closing_) begin_close(ErrorKind::none, "destroyed", CloseSend::app_no_error);
    release();
  }

  uint32_t free_slots() const {
    if (!ready_ || closing_ || shutting_down_ || goaway_) return 0;
    // At least 1: a server that starts at 0 streams and grants them later (MAX_STREAMS) gets
    // one request queued in pending_ instead of a driver that never submits.
    uint64_t cap = std::min<uint64_t>(wanted_streams_, std::max<uint64_t>(server_streams_, 1));
    return cap > in_flight_ ? static_cast<uint32_t>(cap - in_flight_) : 0;
  }

  void submit(uint64_t tag) {
    ++in_flight_;
    if (closing_) {
      // Only reachable if the driver ignores free_slots(); answered in the next round.
      completions_.push_back({tag, Completion{0, 0, ErrorKind::reset}});
      request_round();
      return;
    }
    pending_.push_back(tag);
    open_pending();
    request_round();
  }

  void shutdown(bool graceful) {
    if (closing_) return;
    if (graceful) {
      shutting_down_ = true;
      maybe_finish_graceful();
    } else {
      begin_close(ErrorKind::none, "shutdown", CloseSend::app_no_error);
    }
    request_round();
  }

  uint64_t bytes_in() const { return bytes_in_; }
  uint64_t bytes_out() const { return bytes_out_; }

 private:
  enum class CloseSend { none, app_no_error, app_error, transport_liberr, tls_alert };

  static ngtcp2_conn* get_conn(ngtcp2_crypto_conn_ref* ref) {
    return static_cast<Impl*>(ref->user_data)->conn_;
  }

  // --- setup ------------------------------------------------------------------------------

  void build_header_fields() {
    scheme_ = "https";
    method_ = req_.method;
    is_head_ = method_ == "HEAD";
    req_path_ = req_.path.empty() ? "/" : req_.path;
    names_.reserve(req_.headers.size() + 2);
    values_.reserve(req_.headers.size() + 2);
    for (const auto& [name, value] : req_.headers) {
      std::string lower = name;
      std::transform(lower.begin(), lower.end(), lower.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      if (is_dropped_field(lower)) continue;
      names_.push_back(std::move(lower));
      values_.push_back(value);
    }
    if (std::find(names_.begin(), names_.end(), "user-agent") == names_.end()) {
      names_.push_back("user-agent");  // as the h1 and h2 connections send
      values_.push_back("hsp-bench");
    }
    if (req_.body) {
      names_.push_back("content-length");
      values_.push_back(std::to_string(req_.body->size()));
    }
    nva_.push_back(make_nv(k_method_, method_));
    nva_.push_back(make_nv(k_scheme_, scheme_));
    nva_.push_back(make_nv(k_authority_, ep_.authority));
    nva_.push_back(make_nv(k_path_, req_path_));
    for (size_t i = 0; i < names_.size(); ++i) nva_.push_back(make_nv(names_[i], values_[i]));
  }

  void connect() {
    if (closing_) return;  // shut down before the posted start ran
    boost::system::error_code ec;
    auto addr = asio::ip::make_address(ep_.connect_host, ec);
    if (ec) return begin_close(ErrorKind::connect, "not an address: " + ep_.connect_host);
    udp::endpoint remote(addr, ep_.connect_port);
    sock_.open(remote.protocol(), ec);
    // A connected UDP socket turns the ICMP port-unreachable of a closed port into
    // ECONNREFUSED on the next receive, so "nothing listening" fails at once, not after the
    // handshake timeout.
    if (!ec) sock_.connect(remote, ec);
    if (!ec) sock_.non_blocking(true, ec);
    if (ec) return begin_close(ErrorKind::connect, "udp socket: " + ec.message());
    // Best effort: a larger receive buffer absorbs a burst of a large response between rounds.
    int size = 1 << 20;
    ::setsockopt(sock_.native_handle(), SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    auto local = sock_.local_endpoint(ec);
    if (ec) return begin_close(ErrorKind::connect, "udp socket: " + ec.message());
    std::memcpy(&local_addr_, local.data(), local.size());
    local_len_ = static_cast<ngtcp2_socklen>(local.size());
    std::memcpy(&remote_addr_, remote.data(), remote.size());
    remote_len_ = static_cast<ngtcp2_socklen>(remote.size());
    path_.local = {reinterpret_cast<ngtcp2_sockaddr*>(&local_addr_), local_len_};
    path_.remote = {reinterpret_cast<ngtcp2_sockaddr*>(&remote_addr_), remote_len_};
    path_.user_data = nullptr;

    std::string error;
    if (!setup_quic(error)) return begin_close(ErrorKind::connect, error);
    // An unreadable --cacert or a GnuTLS failure counts with the TLS errors it stands for.
    if (!setup_tls(error)) return begin_close(ErrorKind::tls, error);
    arm_read();
  }

  bool setup_quic(std::string& error) {
    ngtcp2_callbacks cb{};
    h3::set_crypto_callbacks(cb);
    cb.client_initial = ngtcp2_crypto_client_initial_cb;
    cb.recv_retry = ngtcp2_crypto_recv_retry_cb;
    cb.handshake_completed = &Impl::on_handshake_completed;
    cb.recv_stream_data = &Impl::on_recv_stream_data;
    cb.acked_stream_data_offset = &Impl::on_acked_stream_data_offset;
    cb.stream_close = &Impl::on_stream_close;
    cb.extend_max_local_streams_bidi = &Impl::on_extend_max_local_streams_bidi;
    cb.rand = h3::rand_nonce;
    cb.get_new_connection_id = &Impl::on_get_new_connection_id;
    cb.stream_reset = &Impl::on_stream_reset;
    cb.extend_max_stream_data = &Impl::on_extend_max_stream_data;
    cb.stream_stop_sending = &Impl::on_stream_stop_sending;
    cb.recv_rx_key = &Impl::on_recv_rx_key;

    ngtcp2_cid dcid, scid;
    dcid.datalen = 18;
    scid.datalen = 17;
    if (gnutls_rnd(GNUTLS_RND_RANDOM, dcid.data, dcid.datalen) != 0 ||
        gnutls_rnd(GNUTLS_RND_RANDOM, scid.data, scid.datalen) != 0) {
      error = "no randomness for connection IDs";
      return false;
    }

    ngtcp2_settings settings;
    ngtcp2_settings_default(&settings);
    settings.initial_ts = now_ns();
    settings.handshake_timeout = kHandshakeTimeout;
    // Receive windows start at the initial_max_* below and may grow to these as ngtcp2 sees the
    // application keep up (loopback: large bodies at full speed without stalls).
    settings.max_window = 64 << 20;
    settings.max_stream_window = 16 << 20;

    ngtcp2_transport_params params;
    ngtcp2_transport_params_default(&params);
    params.initial_max_stream_data_bidi_local = 1 << 20;
    params.initial_max_stream_data_uni = 256 << 10;
    params.initial_max_data = 8 << 20;
    params.initial_max_streams_bidi = 0;  // the server opens no requests toward us
    params.initial_max_streams_uni = 16;  // control + QPACK encoder/decoder (+ room)
    params.max_idle_timeout = kIdleTimeout;
    params.max_udp_payload_size = kMaxUdpPayload;
    params.active_connection_id_limit = 4;

    int rv = ngtcp2_conn_client_new(&conn_, &dcid, &scid, &path_, NGTCP2_PROTO_VER_V1, &cb,
                                    &settings, &params, nullptr, this);
    if (rv != 0) {
      error = std::string("ngtcp2_conn_client_new: ") + ngtcp2_strerror(rv);
      return false;
    }
    return true;
  }

  bool setup_tls(std::string& error) {
    creds_ = credentials_for(ep_, error);
    if (!creds_) return false;
    int rv = gnutls_init(&tls_, GNUTLS_CLIENT | GNUTLS_NO_END_OF_EARLY_DATA);
    if (rv == 0) {
      rv = gnutls_priority_set_direct(
          tls_, "NORMAL:-VERS-ALL:+VERS-TLS1.3:%DISABLE_TLS13_COMPAT_MODE", nullptr);
    }
    if (rv == 0 && ngtcp2_crypto_gnutls_configure_client_session(tls_) != 0) {
      error = "ngtcp2_crypto_gnutls_configure_client_session failed";
      return false;
    }
    if (rv == 0) rv = gnutls_credentials_set(tls_, GNUTLS_CRD_CERTIFICATE, creds_->cred);
    if (rv == 0 && !ep_.sni.empty()) {
      rv = gnutls_server_name_set(tls_, GNUTLS_NAME_DNS, ep_.sni.data(), ep_.sni.size());
    }
    if (rv != 0) {
      error = std::string("gnutls session: ") + gnutls_strerror(rv);
      return false;
    }
    gnutls_session_set_ptr(tls_, &conn_ref_);
    h3::set_h3_alpn(tls_);
    if (!ep_.insecure) {
      // The handshake itself fails (bad_certificate alert, NGTCP2_ERR_CRYPTO) when the chain
      // or the name does not verify.
      verify_name_ = verify_name(ep_);
      gnutls_session_set_verify_cert(tls_, verify_name_.c_str(), 0);
    }
    ngtcp2_conn_set_tls_native_handle(conn_, tls_);
    return true;
  }

  bool setup_http3() {
    if (ngtcp2_conn_get_max_local_streams_uni(conn_) < 3) {
      set_app_error(NGHTTP3_H3_GENERAL_PROTOCOL_ERROR);
      detail_ = "server allows fewer than 3 unidirectional streams";
      return false;
    }
    nghttp3_callbacks cb{};
    cb.acked_stream_data = nullptr;  // the body is the run's shared buffer: nothing to free
    cb.stream_close = &Impl::h3_stream_close;
    cb.recv_data = &Impl::h3_recv_data;
    cb.deferred_consume = &Impl::h3_deferred_consume;
    cb.begin_headers = &Impl::h3_begin_headers;
    cb.recv_header = &Impl::h3_recv_header;
    cb.end_headers = &Impl::h3_end_headers;
    cb.stop_sending = &Impl::h3_stop_sending;
    cb.end_stream = &Impl::h3_end_stream;
    cb.reset_stream = &Impl::h3_reset_stream;
    cb.shutdown = &Impl::h3_shutdown;
    nghttp3_settings settings = h3::h3_settings();
    if (nghttp3_conn_client_new(&h3_, &cb, &settings, nghttp3_mem_default(), this) != 0) {
      return false;
    }
    return h3::open_h3_local_streams(conn_, h3_);
  }

  // --- rounds -------------------------------------------------------------------------------

  template <class F>
  void post_round(F&& f) {
    asio::post(io_, [self = shared_from_this(), f = std::forward<F>(f)]() mutable {
      if (self->released_) return;
      self->in_round_ = true;
      f(*self);
      self->end_round();
    });
  }

  // A change outside a round (submit or shutdown called by the driver from its own timer)
  // needs a round to be sent; several such calls share one. Inside a round, end_round writes.
  void request_round() {
    if (!in_round_) schedule_round();
  }

  void schedule_round() {
    if (round_posted_ || released_) return;
    round_posted_ = true;
    post_round([](Impl& self) { self.round_posted_ = false; });
  }

  void end_round() {
    // Completions first: what the driver submits from on_complete rides in the same packets
    // as the ACKs this round owes. Repeated while writing produced completions (GOAWAY, a
    // failed write), so that on_closed and new requests are not left for a later event.
    for (;;) {
      deliver();
      if (closing_) break;
      open_pending();
      cancel_beyond_goaway();
      write_packets();
      if (completions_.empty() && !ready_pending_ && !closing_) break;
    }
    if (!closing_) {
      arm_timer();
      // The send quantum ran out before the data did: go on in a round of its own, so that
      // reads and timers interleave with a long upload.
      if (write_more_ && !send_blocked_) schedule_round();
    }
    in_round_ = false;
    if (closing_ && closed_reported_) release();
  }

  void deliver() {
    while (!completions_.empty()) {
      delivering_.swap(completions_);
      for (const auto& [tag, done] : delivering_) {
        --in_flight_;
        if (events_ != nullptr) events_->on_complete(*shell_, tag, done);
      }
      delivering_.clear();
    }
    if (ready_pending_ && !closing_) {
      ready_pending_ = false;
      if (events_ != nullptr) events_->on_ready(*shell_);
      deliver();
      return;
    }
    maybe_finish_graceful();
    if (closing_ && !closed_reported_ && completions_.empty()) {
      closed_reported_ = true;
      if (events_ != nullptr) events_->on_closed(*shell_, close_why_, detail_);
    }
  }

  void maybe_finish_graceful() {
    if (closing_ || in_flight_ != 0) return;
    if (shutting_down_) {
      begin_close(ErrorKind::none, "shutdown", CloseSend::app_no_error);
    } else if (goaway_) {
      begin_close(ErrorKind::none, "server sent GOAWAY", CloseSend::app_no_error);
    }
  }

  // --- reading ------------------------------------------------------------------------------

  void arm_read() {
    if (released_ || read_armed_) return;
    read_armed_ = true;
    sock_.async_wait(udp::socket::wait_read,
                     [self = shared_from_this()](const boost::system::error_code& ec) {
                       self->read_armed_ = false;
                       if (self->released_ || ec) return;
                       self->in_round_ = true;
                       self->read_datagrams();
                       self->end_round();
                       if (!self->closing_) self->arm_read();
                     });
  }

  void read_datagrams() {
    std::array<mmsghdr, kBatch> msgs{};
    std::array<iovec, kBatch> iov{};
    for (size_t i = 0; i < kBatch; ++i) {
      iov[i] = {rx_buf_.data() + i * kMaxUdpPayload, kMaxUdpPayload};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    while (!closing_) {
      int n = ::recvmmsg(sock_.native_handle(), msgs.data(), kBatch, MSG_DONTWAIT, nullptr);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        return socket_failed(errno);
      }
      ngtcp2_tstamp ts = now_ns();
      for (int i = 0; i < n && !closing_; ++i) {
        size_t len = msgs[i].msg_len;
        bytes_in_ += len;
        if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) continue;  // larger than we allowed
        feed(rx_buf_.data() + i * kMaxUdpPayload, len, ts);
      }
      // Answer (ACKs, new requests) between batches of a long burst rather than after it.
      if (static_cast<size_t>(n) == kBatch && !closing_) {
        deliver();
        if (!closing_) write_packets();
      } else {
        return;
      }
    }
  }

  void feed(const uint8_t* data, size_t len, ngtcp2_tstamp ts) {
    ngtcp2_pkt_info pi{};
    int rv = ngtcp2_conn_read_pkt(conn_, &path_, &pi, data, len, ts);
    if (rv == 0) return;
    switch (rv) {
      case NGTCP2_ERR_DRAINING:
        return peer_closed();
      case NGTCP2_ERR_CRYPTO:
        return begin_close(ErrorKind::tls, tls_failure_detail(), CloseSend::tls_alert);
      case NGTCP2_ERR_DROP_CONN:
        return begin_close(ErrorKind::protocol, "server packet made the connection unusable");
      case NGTCP2_ERR_RECV_VERSION_NEGOTIATION:
        return begin_close(ready_ ? ErrorKind::protocol : ErrorKind::connect,
                           "server does not speak QUIC v1");
      case NGTCP2_ERR_CALLBACK_FAILURE:
        if (app_error_set_) {
          return begin_close(ErrorKind::protocol, detail_.empty() ? "HTTP/3 error" : detail_,
                             CloseSend::app_error);
        }
        [[fallthrough]];
      default:
        liberr_ = rv;
        return begin_close(ErrorKind::protocol, std::string("QUIC: ") + ngtcp2_strerror(rv),
                           CloseSend::transport_liberr);
    }
  }

  std::string tls_failure_detail() {
    std::string detail = "TLS handshake failed";
    if (uint8_t alert = ngtcp2_conn_get_tls_alert(conn_); alert != 0) {
      detail += std::string(" (alert ") +
                gnutls_alert_get_name(static_cast<gnutls_alert_description_t>(alert)) + ")";
    }
    unsigned status = gnutls_session_get_verify_cert_status(tls_);
    if (status != 0 && !ep_.insecure) {
      gnutls_datum_t out{};
      if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) == 0) {
        detail += ": ";
        detail.append(reinterpret_cast<const char*>(out.data), out.size);
        gnutls_free(out.data);
      }
    }
    return detail;
  }

  void peer_closed() {
    ngtcp2_connection_close_error ccerr;
    ngtcp2_conn_get_connection_close_error(conn_, &ccerr);
    std::string reason(reinterpret_cast<const char*>(ccerr.reason), ccerr.reasonlen);
    std::string detail = "server closed the connection";
    ErrorKind why = ErrorKind::none;
    if (ccerr.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION) {
      if (ccerr.error_code != NGHTTP3_H3_NO_ERROR) why = ErrorKind::protocol;
      detail += " (HTTP/3 error 0x";
    } else {
      // Transport codes 0x100-0x1ff carry a TLS alert (RFC 9001 §4.8).
      if (ccerr.error_code >= 0x100 && ccerr.error_code <= 0x1ff) {
        why = ErrorKind::tls;
      } else if (ccerr.error_code != 0) {
        why = ready_ ? ErrorKind::protocol : ErrorKind::connect;
      }
      detail += " (QUIC error 0x";
    }
    char hex[20];
    std::snprintf(hex, sizeof(hex), "%llx", static_cast<unsigned long long>(ccerr.error_code));
    detail += hex;
    detail += reason.empty() ? ")" : ": " + reason + ")";
    begin_close(why, detail, CloseSend::none);
  }

  void socket_failed(int err) {
    std::string detail = std::string("udp: ") + std::strerror(err);
    if (err == ECONNREFUSED)
      detail = "connection refused (ICMP port unreachable: nothing listening on UDP)";
    begin_close(ready_ ? ErrorKind::reset : ErrorKind::connect, detail);
  }

  // --- writing ------------------------------------------------------------------------------

  void write_packets() {
    if (closing_ || conn_ == nullptr || send_blocked_) return;
    ngtcp2_tstamp ts = now_ns();
    size_t max_size = std::min(ngtcp2_conn_get_max_tx_udp_payload_size(conn_), kMaxUdpPayload);
    size_t quantum = std::max<size_t>(1, ngtcp2_conn_get_send_quantum(conn_) / max_size);
    size_t max_packets = std::min(kBatch, quantum);
    tx_count_ = 0;
    for (;;) {
      uint8_t* dest = tx_buf_.data() + tx_count_ * kMaxUdpPayload;
      h3::PacketWrite w = h3::write_packet(conn_, h3_, nullptr, nullptr, dest, max_size, ts);
      if (w.h3_error != 0) {
        set_app_error(nghttp3_err_infer_quic_app_error_code(w.h3_error));
        return begin_close(ErrorKind::protocol,
                           std::string("HTTP/3: ") + nghttp3_strerror(w.h3_error),
                           CloseSend::app_error);
      }
      if (w.quic_error != 0) {
        liberr_ = w.quic_error;
        return begin_close(ErrorKind::protocol, std::string("QUIC: ") + ngtcp2_strerror(liberr_),
                           CloseSend::transport_liberr);
      }
      if (w.size == 0) break;
      tx_len_[tx_count_++] = w.size;
      if (tx_count_ == max_packets) break;
    }
    ngtcp2_conn_update_pkt_tx_time(conn_, ts);
    write_more_ = tx_count_ == max_packets;
    tx_sent_ = 0;
    send_batch();
  }

  // Sends tx packets [tx_sent_, tx_count_); on EAGAIN waits for the socket and resumes.
  void send_batch() {
    while (tx_sent_ < tx_count_) {
      std::array<mmsghdr, kBatch> msgs{};
      std::array<iovec, kBatch> iov{};
      size_t n = tx_count_ - tx_sent_;
      for (size_t i = 0; i < n; ++i) {
        iov[i] = {tx_buf_.data() + (tx_sent_ + i) * kMaxUdpPayload, tx_len_[tx_sent_ + i]};
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
      }
      int sent =
          ::sendmmsg(sock_.native_handle(), msgs.data(), static_cast<unsigned>(n), MSG_DONTWAIT);
      if (sent < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
          send_blocked_ = true;
          sock_.async_wait(udp::socket::wait_write,
                           [self = shared_from_this()](const boost::system::error_code& ec) {
                             if (self->released_ || ec) return;
                             self->in_round_ = true;
                             self->send_blocked_ = false;
                             self->send_batch();
                             self->end_round();
                           });
          return;
        }
        return socket_failed(errno);
      }
      for (int i = 0; i < sent; ++i) bytes_out_ += tx_len_[tx_sent_ + i];
      tx_sent_ += static_cast<size_t>(sent);
    }
  }

  // --- timer --------------------------------------------------------------------------------

  // Re-arming an Asio timer is a timerfd_settime syscall, and ngtcp2's expiry moves on nearly
  // every packet (ACK delay, loss detection, pacing): re-arming each time cost more than the
  // QUIC packets' own syscalls. So the timer is only moved earlier; when it fires before a
  // deadline that has since moved later, handle_expiry does nothing and the round re-arms.
  //
  // Deadlines are also kept at least 1 ms away. After every write ngtcp2 sets a pacing time a
  // few microseconds ahead, which woke a round per write for nothing: ngtcp2 lets packets
  // leave up to 1 ms before their pacing time anyway (NGTCP2_PKT_PACING_OVERHEAD), a round
  // that stopped at the send quantum has already posted its successor, and the other
  // deadlines (ACK delay, loss detection, idle) are tens of milliseconds long.
  void arm_timer() {
    if (conn_ == nullptr) return;
    ngtcp2_tstamp expiry = ngtcp2_conn_get_expiry(conn_);
    if (expiry == UINT64_MAX) return;  // an armed timer still fires once, harmlessly
    expiry = std::max(expiry, now_ns() + NGTCP2_MILLISECONDS);
    if (timer_armed_ && armed_expiry_ <= expiry) return;
    ++timer_gen_;  // a wait already queued with an older deadline is ignored by its handler
    armed_expiry_ = expiry;
    timer_armed_ = true;
    timer_.expires_at(asio::steady_timer::time_point(std::chrono::nanoseconds(expiry)));
    timer_.async_wait(
        [self = shared_from_this(), gen = timer_gen_](const boost::system::error_code& ec) {
          if (self->released_ || ec || gen != self->timer_gen_) return;
          self->timer_armed_ = false;
          self->in_round_ = true;
          self->on_expiry();
          self->end_round();
        });
  }

  void on_expiry() {
    if (closing_) return;
    int rv = ngtcp2_conn_handle_expiry(conn_, now_ns());
    if (rv == 0) return;
    if (rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
      return begin_close(ErrorKind::connect, "QUIC handshake timed out");
    }
    if (rv == NGTCP2_ERR_IDLE_CLOSE) {
      if (!ready_) return begin_close(ErrorKind::connect, "no answer from the server");
      // Requests still open when the server went silent for the idle timeout timed out.
      inflight_kind_ = ErrorKind::timeout;
      return begin_close(in_flight_ > 0 ? ErrorKind::timeout : ErrorKind::none, "idle timeout");
    }
    liberr_ = rv;
    begin_close(ErrorKind::protocol, std::string("QUIC: ") + ngtcp2_strerror(rv),
                CloseSend::transport_liberr);
  }

  // --- requests -----------------------------------------------------------------------------

  H3Stream* take_stream() {
    if (free_streams_.empty()) {
      streams_.push_back(std::make_unique<H3Stream>());
      return streams_.back().get();
    }
    H3Stream* s = free_streams_.back();
    free_streams_.pop_back();
    return s;
  }

  void put_stream(H3Stream* s) {
    s->in_use = false;
    free_streams_.push_back(s);
  }

  // Opens a QUIC stream for each queued request while the server's MAX_STREAMS allows. A
  // request waits here when the server has not yet returned the credit of a finished stream
  // (it does so once it has seen the stream closed on its side).
  void open_pending() {
    if (!ready_ || closing_ || h3_ == nullptr) return;
    while (pending_head_ < pending_.size()) {
      if (ngtcp2_conn_get_streams_bidi_left(conn_) == 0) return;
      H3Stream* s = take_stream();
      int64_t id;
      if (int rv = ngtcp2_conn_open_bidi_stream(conn_, &id, s); rv != 0) {
        put_stream(s);
        return;
      }
      *s = H3Stream{id, pending_[pending_head_++], 0, 0, true, false};
      nghttp3_data_reader reader{&Impl::h3_read_body};
      int rv = nghttp3_conn_submit_request(h3_, id, nva_.data(), nva_.size(),
                                           req_.body ? &reader : nullptr, s);
      if (rv != 0) {
        set_app_error(nghttp3_err_infer_quic_app_error_code(rv));
        begin_close(ErrorKind::protocol, std::string("HTTP/3: ") + nghttp3_strerror(rv),
                    CloseSend::app_error);
        return;
      }
    }
    pending_.clear();
    pending_head_ = 0;
  }

  void complete(H3Stream* s, ErrorKind error, bool refused = false) {
    if (s->done) return;
    s->done = true;
    Completion c;
    c.body_bytes = s->body_bytes;
    c.error = error;
    c.refused = refused;
    if (error == ErrorKind::none) {
      if (s->status == 0) c.error = ErrorKind::protocol;  // a response without :status
      c.status = s->status;
    }
    completions_.push_back({s->tag, c});
  }

  // After GOAWAY(id), the server will not process streams >= id (RFC 9114 §5.2): they end now
  // instead of waiting for the idle timeout, as refused, so the driver resends them.
  void cancel_beyond_goaway() {
    if (!goaway_ || goaway_id_ == INT64_MAX) return;
    for (auto& s : streams_) {
      if (s->in_use && !s->done && s->id >= goaway_id_) {
        complete(s.get(), ErrorKind::reset, /*refused=*/true);
        ngtcp2_conn_shutdown_stream(conn_, s->id, NGHTTP3_H3_REQUEST_CANCELLED);
      }
    }
    goaway_id_ = INT64_MAX;
  }

  // The server broke HTTP on one request stream: fail that request (a no-op if it already
  // completed) and reset the stream both ways; the stream then closes through the usual
  // callbacks, which return its slot.
  void stream_failed(int64_t stream_id) {
    for (auto& st : streams_) {
      if (st->in_use && st->id == stream_id) {
        complete(st.get(), ErrorKind::protocol);
        break;
      }
    }
    nghttp3_conn_shutdown_stream_read(h3_, stream_id);
    ngtcp2_conn_shutdown_stream(conn_, stream_id, NGHTTP3_H3_MESSAGE_ERROR);
  }

  void set_app_error(uint64_t code) {
    app_error_set_ = true;
    app_error_ = code;
  }

  // --- closing ------------------------------------------------------------------------------

  // Ends the connection: fails every open and queued request, sends CONNECTION_CLOSE when asked,
  // and lets the end of the round report on_closed after those completions.
  void begin_close(ErrorKind why, std::string detail, CloseSend send = CloseSend::none) {
    if (closing_) return;
    closing_ = true;
    close_why_ = why;
    detail_ = std::move(detail);
    if (send != CloseSend::none) send_connection_close(send);
    for (auto& s : streams_) {
      if (s->in_use && !s->done) complete(s.get(), inflight_kind_);
    }
    for (; pending_head_ < pending_.size(); ++pending_head_) {
      completions_.push_back({pending_[pending_head_], Completion{0, 0, inflight_kind_}});
    }
    pending_.clear();
    pending_head_ = 0;
    timer_.cancel();
    request_round();
  }

  void send_connection_close(CloseSend send) {
    if (conn_ == nullptr || ngtcp2_conn_is_in_closing_period(conn_) ||
        ngtcp2_conn_is_in_draining_period(conn_)) {
      return;
    }
    ngtcp2_connection_close_error ccerr;
    ngtcp2_connection_close_error_default(&ccerr);
    switch (send) {
      case CloseSend::app_no_error:
        ngtcp2_connection_close_error_set_application_error(&ccerr, NGHTTP3_H3_NO_ERROR, nullptr,
                                                            0);
        break;
      case CloseSend::app_error:
        ngtcp2_connection_close_error_set_application_error(&ccerr, app_error_, nullptr, 0);
        break;
      case CloseSend::tls_alert:
        ngtcp2_connection_close_error_set_transport_error_tls_alert(
            &ccerr, ngtcp2_conn_get_tls_alert(conn_), nullptr, 0);
        break;
      case CloseSend::transport_liberr:
        ngtcp2_connection_close_error_set_transport_error_liberr(&ccerr, liberr_, nullptr, 0);
        break;
      case CloseSend::none:
        return;
    }
    std::array<uint8_t, 1500> buf;
    ngtcp2_ssize n = ngtcp2_conn_write_connection_close(conn_, nullptr, nullptr, buf.data(),
                                                        buf.size(), &ccerr, now_ns());
    if (n > 0 && sock_.is_open()) {
      // Best effort, once: the server's idle timeout covers a lost CONNECTION_CLOSE.
      if (::send(sock_.native_handle(), buf.data(), static_cast<size_t>(n), MSG_DONTWAIT) > 0) {
        bytes_out_ += static_cast<uint64_t>(n);
      }
    }
  }

  // Frees the libraries' state and the socket. Only outside library calls (end of a round or
  // detach from the driver).
  void release() {
    if (released_) return;
    if (in_round_ && !closed_reported_ && events_ != nullptr) return;
    released_ = true;
    boost::system::error_code ec;
    sock_.close(ec);
    timer_.cancel();
    if (h3_ != nullptr) nghttp3_conn_del(h3_);
    h3_ = nullptr;
    if (conn_ != nullptr) ngtcp2_conn_del(conn_);
    conn_ = nullptr;
    if (tls_ != nullptr) gnutls_deinit(tls_);
    tls_ = nullptr;
  }

  // --- ngtcp2 callbacks ---------------------------------------------------------------------

  static Impl* self(void* user_data) { return static_cast<Impl*>(user_data); }

  static int on_handshake_completed(ngtcp2_conn* conn, void* user_data) {
    Impl* s = self(user_data);
    if (s->h3_ == nullptr) return NGTCP2_ERR_CALLBACK_FAILURE;
    const ngtcp2_transport_params* tp = ngtcp2_conn_get_remote_transport_params(conn);
    s->server_streams_ = tp != nullptr ? tp->initial_max_streams_bidi : 0;
    s->ready_ = true;
    s->ready_pending_ = true;
    return 0;
  }

  static int on_recv_rx_key(ngtcp2_conn*, ngtcp2_crypto_level level, void* user_data) {
    if (level != NGTCP2_CRYPTO_LEVEL_APPLICATION) return 0;
    return self(user_data)->setup_http3() ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
  }

  static int on_recv_stream_data(ngtcp2_conn* conn, uint32_t flags, int64_t stream_id, uint64_t,
                                 const uint8_t* data, size_t len, void* user_data, void*) {
    Impl* s = self(user_data);
    nghttp3_ssize n =
        nghttp3_conn_read_stream(s->h3_, stream_id, data, len, flags & NGTCP2_STREAM_DATA_FLAG_FIN);
    if (n == NGHTTP3_ERR_MALFORMED_HTTP_MESSAGING && ngtcp2_is_bidi_stream(stream_id)) {
      // A malformed response is a stream error, not a connection error (RFC 9114 §4.1.2):
      // only this request fails (already complete for HEAD, see h3_end_headers), the
      // connection and its other requests go on. nghttp3 0.8 leaves resetting it to us.
      s->stream_failed(stream_id);
      ngtcp2_conn_extend_max_offset(conn, len);  // the bytes are dropped, not held
      return 0;
    }
    if (n < 0) {
      s->set_app_error(nghttp3_err_infer_quic_app_error_code(static_cast<int>(n)));
      s->detail_ = std::string("HTTP/3: ") + nghttp3_strerror(static_cast<int>(n));
      return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    // Framing bytes are consumed here; body bytes are credited in h3_recv_data.
    extend_credit(conn, stream_id, static_cast<uint64_t>(n));
    return 0;
  }

  static int on_acked_stream_data_offset(ngtcp2_conn*, int64_t stream_id, uint64_t, uint64_t len,
                                         void* user_data, void*) {
    Impl* s = self(user_data);
    return nghttp3_conn_add_ack_offset(s->h3_, stream_id, len) == 0 ? 0
                                                                    : NGTCP2_ERR_CALLBACK_FAILURE;
  }

  static int on_stream_close(ngtcp2_conn* conn, uint32_t flags, int64_t stream_id,
                             uint64_t app_error_code, void* user_data, void*) {
    Impl* s = self(user_data);
    if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET)) {
      app_error_code = NGHTTP3_H3_NO_ERROR;
    }
    if (s->h3_ == nullptr) return 0;
    int rv = nghttp3_conn_close_stream(s->h3_, stream_id, app_error_code);
    if (rv == NGHTTP3_ERR_STREAM_NOT_FOUND) {
      if (!ngtcp2_is_bidi_stream(stream_id)) ngtcp2_conn_extend_max_streams_uni(conn, 1);
      return 0;
    }
    if (rv != 0) {
      s->set_app_error(nghttp3_err_infer_quic_app_error_code(rv));
      s->detail_ = std::string("HTTP/3: ") + nghttp3_strerror(rv);
      return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
  }

  static int on_stream_reset(ngtcp2_conn* conn, int64_t stream_id, uint64_t, uint64_t,
                             void* user_data, void* stream_user_data) {
    Impl* s = self(user_data);
    if (auto* st = static_cast<H3Stream*>(stream_user_data); st != nullptr && !st->done) {
      // The response will not end: fail it now and stop our side too, so the stream closes.
      s->complete(st, ErrorKind::reset);
      ngtcp2_conn_shutdown_stream_write(conn, stream_id, NGHTTP3_H3_REQUEST_CANCELLED);
    }
    return h3::shutdown_h3_read(s->h3_, stream_id);
  }

  static int on_stream_stop_sending(ngtcp2_conn*, int64_t stream_id, uint64_t, void* user_data,
                                    void*) {
    return h3::shutdown_h3_read(self(user_data)->h3_, stream_id);
  }

  static int on_extend_max_local_streams_bidi(ngtcp2_conn*, uint64_t, void*) {
    return 0;  // queued requests are opened at the end of the round (open_pending)
  }

  static int on_extend_max_stream_data(ngtcp2_conn*, int64_t stream_id, uint64_t, void* user_data,
                                       void*) {
    return h3::unblock_h3_stream(self(user_data)->h3_, stream_id);
  }

  static int on_get_new_connection_id(ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token, size_t cidlen,
                                      void*) {
    // A client never checks its own reset tokens (the server does not reset toward them
    // unless it lost state), so random ones are enough.
    if (gnutls_rnd(GNUTLS_RND_RANDOM, cid->data, cidlen) != 0 ||
        gnutls_rnd(GNUTLS_RND_RANDOM, token, NGTCP2_STATELESS_RESET_TOKENLEN) != 0) {
      return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    cid->datalen = cidlen;
    return 0;
  }

  // --- nghttp3 callbacks --------------------------------------------------------------------

  static nghttp3_ssize h3_read_body(nghttp3_conn*, int64_t, nghttp3_vec* vec, size_t,
                                    uint32_t* flags, void* user_data, void*) {
    // The whole body in one vector: the template's buffer outlives every request of the run,
    // so nghttp3 may reference it until the server acknowledges it.
    const std::string& body = *self(user_data)->req_.body;
    vec[0].base = reinterpret_cast<uint8_t*>(const_cast<char*>(body.data()));
    vec[0].len = body.size();
    *flags |= NGHTTP3_DATA_FLAG_EOF;
    return 1;
  }

  static int h3_stream_close(nghttp3_conn*, int64_t stream_id, uint64_t app_error_code,
                             void* user_data, void* stream_user_data) {
    Impl* s = self(user_data);
    if (auto* st = static_cast<H3Stream*>(stream_user_data); st != nullptr) {
      s->complete(st, ErrorKind::reset);  // no-op when the response already ended
      s->put_stream(st);
    }
    if (!ngtcp2_is_bidi_stream(stream_id)) ngtcp2_conn_extend_max_streams_uni(s->conn_, 1);
    return 0;
  }

  static int h3_recv_data(nghttp3_conn*, int64_t stream_id, const uint8_t*, size_t len,
                          void* user_data, void* stream_user_data) {
    Impl* s = self(user_data);
    if (auto* st = static_cast<H3Stream*>(stream_user_data); st != nullptr) st->body_bytes += len;
    extend_credit(s->conn_, stream_id, len);
    return 0;
  }

  static int h3_deferred_consume(nghttp3_conn*, int64_t stream_id, size_t consumed, void* user_data,
                                 void*) {
    extend_credit(self(user_data)->conn_, stream_id, consumed);
    return 0;
  }

  static int h3_begin_headers(nghttp3_conn*, int64_t, void*, void* stream_user_data) {
    // A final response after 1xx ones: only the last block's status counts.
    if (auto* st = static_cast<H3Stream*>(stream_user_data); st != nullptr) st->status = 0;
    return 0;
  }

  static int h3_recv_header(nghttp3_conn*, int64_t, int32_t token, nghttp3_rcbuf*,
                            nghttp3_rcbuf* value, uint8_t, void*, void* stream_user_data) {
    auto* st = static_cast<H3Stream*>(stream_user_data);
    if (st == nullptr || token != NGHTTP3_QPACK_TOKEN__STATUS) return 0;
    nghttp3_vec v = nghttp3_rcbuf_get_buf(value);
    int status = 0;
    for (size_t i = 0; i < v.len; ++i) {
      if (v.base[i] < '0' || v.base[i] > '9' || v.len != 3) return NGHTTP3_ERR_CALLBACK_FAILURE;
      status = status * 10 + (v.base[i] - '0');
    }
    st->status = status;
    return 0;
  }

  static int h3_end_headers(nghttp3_conn*, int64_t, int, void* user_data, void* stream_user_data) {
    // The response to HEAD ends with its header section (RFC 9110 §9.3.2): complete it now.
    // Some servers send the body anyway (quic-go before 0.40, so Caddy 2.6), which nghttp3
    // then rejects as malformed; the request is already counted and only its stream is reset
    // (on_recv_stream_data). A 1xx head does not count (status reset by h3_begin_headers).
    auto* st = static_cast<H3Stream*>(stream_user_data);
    Impl* s = self(user_data);
    if (st != nullptr && s->is_head_ && st->status >= 200) s->complete(st, ErrorKind::none);
    return 0;
  }

  static int h3_end_stream(nghttp3_conn*, int64_t, void* user_data, void* stream_user_data) {
    // The response is complete; the stream itself closes once our side is acknowledged too,
    // which must not add to the measured latency.
    if (auto* st = static_cast<H3Stream*>(stream_user_data); st != nullptr) {
      self(user_data)->complete(st, ErrorKind::none);
    }
    return 0;
  }

  static int h3_stop_sending(nghttp3_conn*, int64_t stream_id, uint64_t app_error_code,
                             void* user_data, void*) {
    return h3::stop_reading(self(user_data)->conn_, stream_id, app_error_code);
  }

  static int h3_reset_stream(nghttp3_conn*, int64_t stream_id, uint64_t app_error_code,
                             void* user_data, void*) {
    return h3::stop_writing(self(user_data)->conn_, stream_id, app_error_code);
  }

  static int h3_shutdown(nghttp3_conn*, int64_t id, void* user_data) {
    Impl* s = self(user_data);
    s->goaway_ = true;
    s->goaway_id_ = id;
    return 0;
  }

  // --- state --------------------------------------------------------------------------------

  asio::io_context& io_;
  const Endpoint ep_;
  const RequestTemplate& req_;
  ConnectionEvents* events_;
  Connection* shell_;
  const uint32_t wanted_streams_;

  udp::socket sock_;
  asio::steady_timer timer_;
  sockaddr_storage local_addr_{};
  sockaddr_storage remote_addr_{};
  ngtcp2_socklen local_len_ = 0;
  ngtcp2_socklen remote_len_ = 0;
  ngtcp2_path path_{};

  ngtcp2_crypto_conn_ref conn_ref_;
  ngtcp2_conn* conn_ = nullptr;
  nghttp3_conn* h3_ = nullptr;
  gnutls_session_t tls_ = nullptr;
  std::shared_ptr<Credentials> creds_;
  std::string verify_name_;

  // Request header fields, built once; nva_ points into these strings.
  const std::string k_method_ = ":method";
  const std::string k_scheme_ = ":scheme";
  const std::string k_authority_ = ":authority";
  const std::string k_path_ = ":path";
  std::string method_, scheme_, req_path_;
  bool is_head_ = false;
  std::vector<std::string> names_, values_;
  std::vector<nghttp3_nv> nva_;

  std::vector<std::unique_ptr<H3Stream>> streams_;
  std::vector<H3Stream*> free_streams_;
  std::vector<uint64_t> pending_;  // submitted, waiting for the server's stream credit
  size_t pending_head_ = 0;
  std::vector<std::pair<uint64_t, Completion>> completions_, delivering_;
  uint64_t in_flight_ = 0;  // submitted and not yet delivered to the driver
  uint64_t server_streams_ = 0;

  std::array<uint8_t, kBatch * kMaxUdpPayload> rx_buf_;
  std::array<uint8_t, kBatch * kMaxUdpPayload> tx_buf_;
  std::array<size_t, kBatch> tx_len_{};
  size_t tx_count_ = 0;
  size_t tx_sent_ = 0;
  bool send_blocked_ = false;
  bool write_more_ = false;  // the last write stopped at the send quantum

  uint64_t bytes_in_ = 0;
  uint64_t bytes_out_ = 0;

  ngtcp2_tstamp armed_expiry_ = 0;
  bool timer_armed_ = false;
  uint64_t timer_gen_ = 0;
  bool read_armed_ = false;
  bool in_round_ = false;
  bool round_posted_ = false;

  bool ready_ = false;
  bool ready_pending_ = false;
  bool shutting_down_ = false;
  bool goaway_ = false;
  int64_t goaway_id_ = INT64_MAX;
  bool closing_ = false;
  bool closed_reported_ = false;
  bool released_ = false;
  ErrorKind close_why_ = ErrorKind::none;
  ErrorKind inflight_kind_ = ErrorKind::reset;
  std::string detail_;
  bool app_error_set_ = false;
  uint64_t app_error_ = NGHTTP3_H3_NO_ERROR;
  int liberr_ = 0;
};

}  // namespace

std::unique_ptr<Connection> make_h3_connection(asio::io_context& io, const Endpoint& ep,
                                               const RequestTemplate& req, ConnectionEvents& events,
                                               uint32_t max_streams) {
  return std::make_unique<DetachingConnection<Impl>>([&](Connection& self) {
    return std::make_shared<Impl>(io, ep, req, events, max_streams, self);
  });
}

}  // namespace hsp::bench
