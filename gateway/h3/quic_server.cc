// QuicServer: connection-ID dispatch, QUIC v1 accept, and one Connection per client, each an
// ngtcp2 server connection + GnuTLS session + nghttp3 server connection. The shape follows the
// project's h3 client (bench/load/h3_connection.cc), and the glue that is the same on both sides
// (packet writing, flow-control credit, crypto callbacks) is shared in h3/common.h: library
// callbacks only touch the library state of their own connection; datagrams are queued on the
// server, and a connection that ends is reaped by the server after the library call that ended it
// has returned.
#include "h3/quic_server.h"

#include <arpa/inet.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "h3/common.h"
#include "tls/certified_key.h"
#include "util/log.h"

namespace hsp::h3 {

namespace {

// Our connection IDs: long enough to be unguessable, and the length short-header packets are
// parsed with (every CID we issue has it).
constexpr size_t kScidLen = 18;
// Largest UDP payload we send; ngtcp2 starts at 1200 and probes up to this (PMTUD).
constexpr size_t kMaxUdpPayload = 1452;
// Packets written per connection per call: bounds one connection's share of a loop turn; the
// rest goes out on the next expiry (ngtcp2 paces and sets it).
constexpr size_t kMaxPacketsPerWrite = 64;

// TLS 1.3 only, with the cipher suites QUIC allows (RFC 9001 §5.3: no CCM-8), and no
// middlebox-compatibility mode (RFC 9001 §8.4).
constexpr const char* kPriority =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:"
    "+AES-128-CCM:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:+GROUP-SECP521R1:"
    "%DISABLE_TLS13_COMPAT_MODE";

constexpr std::string_view kHelloBody = "hello";

std::string cid_key(const uint8_t* data, size_t len) {
  return std::string(reinterpret_cast<const char*>(data), len);
}

std::string hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

Error make_error(std::string message) {
  return Error{SourceLoc{"h3", 0, 0}, std::move(message)};
}

// RFC 9001 §8.1: a server must refuse a client that offers no protocol it speaks. GnuTLS's
// ALPN_MANDATORY flag alone leaves a client that sends no ALPN extension through, so the choice
// is checked after the ClientHello; the error becomes alert 120 through the crypto helper.
int check_alpn(gnutls_session_t session, unsigned, unsigned, unsigned, const gnutls_datum_t*) {
  gnutls_datum_t selected{};
  if (gnutls_alpn_get_selected_protocol(session, &selected) != 0 || selected.size != 2 ||
      std::memcmp(selected.data, "h3", 2) != 0) {
    return GNUTLS_E_NO_APPLICATION_PROTOCOL;
  }
  return 0;
}

}  // namespace

// --- Address --------------------------------------------------------------------------------

Address Address::from(const sockaddr* addr, socklen_t len) {
  Address a;
  a.len = std::min<socklen_t>(len, sizeof(a.storage));
  std::memcpy(&a.storage, addr, a.len);
  return a;
}

std::string Address::str() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (storage.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&storage);
    inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (storage.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage);
    inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
    return "[" + std::string(buf) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  return "?";
}

// --- ServerCredentials ----------------------------------------------------------------------

ServerCredentials::~ServerCredentials() {
  if (cred_ != nullptr) {
    gnutls_certificate_free_credentials(static_cast<gnutls_certificate_credentials_t>(cred_));
  }
}

Result<std::shared_ptr<ServerCredentials>> ServerCredentials::from_pem(std::string_view cert_pem,
                                                                       std::string_view key_pem) {
  std::shared_ptr<ServerCredentials> creds(new ServerCredentials());
  gnutls_certificate_credentials_t cred = nullptr;
  if (int rv = gnutls_certificate_allocate_credentials(&cred); rv < 0) {
    return make_error(std::string("gnutls credentials: ") + gnutls_strerror(rv));
  }
  creds->cred_ = cred;
  auto added = creds->add_pem(cert_pem, key_pem, "certificate");
  if (!added) return added.errors();
  return creds;
}

Result<std::shared_ptr<ServerCredentials>> ServerCredentials::from_certified_key(
    const tls::CertifiedKey& key) {
  return from_pem(key.cert_chain_pem(), key.key_pem());
}

Result<bool> ServerCredentials::add_pem(std::string_view cert_pem, std::string_view key_pem,
                                        const std::string& where) {
  gnutls_datum_t cert{reinterpret_cast<unsigned char*>(const_cast<char*>(cert_pem.data())),
                      static_cast<unsigned>(cert_pem.size())};
  gnutls_datum_t key{reinterpret_cast<unsigned char*>(const_cast<char*>(key_pem.data())),
                     static_cast<unsigned>(key_pem.size())};
  int rv =
      gnutls_certificate_set_x509_key_mem2(static_cast<gnutls_certificate_credentials_t>(cred_),
                                           &cert, &key, GNUTLS_X509_FMT_PEM, nullptr, 0);
  if (rv < 0) return make_error(where + ": gnutls cannot load it: " + gnutls_strerror(rv));
  return true;
}

// --- Connection -----------------------------------------------------------------------------

class Connection {
 public:
  Connection(QuicServer& server, const Address& local, const Address& remote)
      : server_(server), local_(local), remote_(remote), conn_ref_{&Connection::get_conn, this} {}

  ~Connection() {
    if (h3_ != nullptr) nghttp3_conn_del(h3_);
    if (conn_ != nullptr) ngtcp2_conn_del(conn_);
    if (tls_ != nullptr) gnutls_deinit(tls_);
  }

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Sets up the QUIC connection for a client's first Initial (hd from ngtcp2_accept).
  Result<bool> init(const ngtcp2_pkt_hd& hd, uint64_t now) {
    ngtcp2_cid scid;
    scid.datalen = kScidLen;
    if (gnutls_rnd(GNUTLS_RND_RANDOM, scid.data, scid.datalen) != 0) {
      return make_error("no randomness for a connection ID");
    }

    ngtcp2_callbacks cb{};
    set_crypto_callbacks(cb);
    cb.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
    cb.handshake_completed = &Connection::on_handshake_completed;
    cb.recv_stream_data = &Connection::on_recv_stream_data;
    cb.acked_stream_data_offset = &Connection::on_acked_stream_data_offset;
    cb.stream_close = &Connection::on_stream_close;
    cb.stream_reset = &Connection::on_stream_reset;
    cb.stream_stop_sending = &Connection::on_stream_stop_sending;
    cb.extend_max_remote_streams_bidi = &Connection::on_extend_max_remote_streams_bidi;
    cb.extend_max_stream_data = &Connection::on_extend_max_stream_data;
    cb.rand = rand_nonce;
    cb.get_new_connection_id = &Connection::on_get_new_connection_id;
    cb.remove_connection_id = &Connection::on_remove_connection_id;
    cb.recv_tx_key = &Connection::on_recv_tx_key;

    ngtcp2_settings settings;
    ngtcp2_settings_default(&settings);
    settings.initial_ts = now;  // handshake_timeout stays at ngtcp2's 10 s
    settings.max_tx_udp_payload_size = kMaxUdpPayload;
    // Receive windows may grow to these when the application keeps up (auto-tuning).
    settings.max_window = 24 << 20;
    settings.max_stream_window = 16 << 20;

    const ServerOptions& opt = server_.options_;
    ngtcp2_transport_params params;
    ngtcp2_transport_params_default(&params);
    params.initial_max_stream_data_bidi_local = 256 << 10;
    params.initial_max_stream_data_bidi_remote = 256 << 10;
    params.initial_max_stream_data_uni = 256 << 10;
    params.initial_max_data = 1 << 20;
    params.initial_max_streams_bidi = opt.max_bidi_streams;
    // The client's control and QPACK encoder/decoder streams; it may not open more.
    params.initial_max_streams_uni = 3;
    params.max_idle_timeout = opt.idle_timeout_ns;
    params.active_connection_id_limit = 7;
    params.original_dcid = hd.dcid;  // required of a server (RFC 9000 §7.3)
    params.stateless_reset_token_present = 1;
    if (!reset_token(params.stateless_reset_token, scid)) {
      return make_error("cannot derive a stateless reset token");
    }

    ngtcp2_path path{{const_cast<sockaddr*>(local_.get()), local_.len},
                     {const_cast<sockaddr*>(remote_.get()), remote_.len},
                     nullptr};
    int rv = ngtcp2_conn_server_new(&conn_, &hd.scid, &scid, &path, hd.version, &cb, &settings,
                                    &params, nullptr, this);
    if (rv != 0) return make_error(std::string("ngtcp2_conn_server_new: ") + ngtcp2_strerror(rv));

    if (auto ok = init_tls(); !ok) return ok;
    ngtcp2_conn_set_tls_native_handle(conn_, tls_);

    // Both the client's chosen DCID (its Initial retransmissions still carry it) and ours. The
    // client's is new to us: receive() only accepts packets whose DCID no connection has.
    scid_hex_ = hex(cid_key(scid.data, scid.datalen));
    if (!add_cid(cid_key(hd.dcid.data, hd.dcid.datalen)) ||
        !add_cid(cid_key(scid.data, scid.datalen))) {
      return make_error("connection ID already in use");
    }
    return true;
  }

  // One datagram for this connection. Writes what is due afterwards.
  void receive(std::span<const uint8_t> data, const Address& local, const Address& remote,
               uint64_t now) {
    if (dead_) return;
    ngtcp2_path path{{const_cast<sockaddr*>(local.get()), local.len},
                     {const_cast<sockaddr*>(remote.get()), remote.len},
                     nullptr};
    ngtcp2_pkt_info pi{};
    int rv = ngtcp2_conn_read_pkt(conn_, &path, &pi, data.data(), data.size(), now);
    if (rv != 0) return read_failed(rv, now);
    write(now);
  }

  uint64_t expiry() const { return dead_ ? 0 : ngtcp2_conn_get_expiry(conn_); }

  void handle_expiry(uint64_t now) {
    if (dead_) return;
    int rv = ngtcp2_conn_handle_expiry(conn_, now);
    if (rv == NGTCP2_ERR_IDLE_CLOSE || rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
      // Silent close (RFC 9000 §10.1): the client gives up on its own idle timer.
      log::debug("h3_connection_idle").kv("remote", remote_.str()).kv("scid", scid_hex_);
      if (!handshake_done_) ++server_.stats_.handshakes_failed;
      dead_ = true;
      return;
    }
    if (rv != 0) {
      liberr_ = rv;
      return close(CloseKind::liberr, std::string("expiry: ") + ngtcp2_strerror(rv), now);
    }
    write(now);
  }

  bool dead() const { return dead_; }
  const std::vector<std::string>& cids() const { return cids_; }

 private:
  enum class CloseKind { liberr, tls_alert, app_error };

  static ngtcp2_conn* get_conn(ngtcp2_crypto_conn_ref* ref) {
    return static_cast<Connection*>(ref->user_data)->conn_;
  }
  static Connection* self(void* user_data) { return static_cast<Connection*>(user_data); }

  bool reset_token(uint8_t* token, const ngtcp2_cid& cid) const {
    const auto& secret = server_.reset_secret_;
    return ngtcp2_crypto_generate_stateless_reset_token(token, secret.data(), secret.size(),
                                                        &cid) == 0;
  }

  // False when another connection already has this CID (random 18 bytes: not expected).
  bool add_cid(std::string cid) {
    if (!server_.add_cid(cid, this)) return false;
    cids_.push_back(std::move(cid));
    return true;
  }

  Result<bool> init_tls() {
    int rv = gnutls_init(&tls_, GNUTLS_SERVER | GNUTLS_NO_END_OF_EARLY_DATA);
    if (rv == 0) rv = gnutls_priority_set_direct(tls_, kPriority, nullptr);
    if (rv != 0) return make_error(std::string("gnutls session: ") + gnutls_strerror(rv));
    if (ngtcp2_crypto_gnutls_configure_server_session(tls_) != 0) {
      return make_error("ngtcp2_crypto_gnutls_configure_server_session failed");
    }
    rv = gnutls_credentials_set(
        tls_, GNUTLS_CRD_CERTIFICATE,
        static_cast<gnutls_certificate_credentials_t>(server_.credentials_->native()));
    if (rv != 0) return make_error(std::string("gnutls credentials: ") + gnutls_strerror(rv));
    gnutls_session_set_ptr(tls_, &conn_ref_);  // the crypto helper finds the ngtcp2_conn here
    rv = set_h3_alpn(tls_);
    if (rv != 0) return make_error(std::string("gnutls alpn: ") + gnutls_strerror(rv));
    gnutls_handshake_set_hook_function(tls_, GNUTLS_HANDSHAKE_CLIENT_HELLO, GNUTLS_HOOK_POST,
                                       &check_alpn);
    return true;
  }

  bool init_http3() {
    if (h3_ != nullptr) return true;
    nghttp3_callbacks cb{};
    cb.stream_close = &Connection::h3_stream_close;
    cb.recv_data = &Connection::h3_recv_data;
    cb.deferred_consume = &Connection::h3_deferred_consume;
    cb.end_stream = &Connection::h3_end_stream;
    cb.stop_sending = &Connection::h3_stop_sending;
    cb.reset_stream = &Connection::h3_reset_stream;
    nghttp3_settings settings = h3_settings();
    if (nghttp3_conn_server_new(&h3_, &cb, &settings, nghttp3_mem_default(), this) != 0) {
      return false;
    }
    nghttp3_conn_set_max_client_streams_bidi(h3_, server_.options_.max_bidi_streams);
    return open_h3_local_streams(conn_, h3_);
  }

  void read_failed(int rv, uint64_t now) {
    switch (rv) {
      case NGTCP2_ERR_DRAINING:  // the client closed: the normal end
        log::debug("h3_connection_closed_by_peer")
            .kv("remote", remote_.str())
            .kv("scid", scid_hex_);
        if (!handshake_done_) ++server_.stats_.handshakes_failed;
        dead_ = true;
        return;
      case NGTCP2_ERR_RETRY:
      case NGTCP2_ERR_DROP_CONN:
        // RETRY needs the Retry tokens that are not built yet: drop like DROP_CONN.
        if (!handshake_done_) ++server_.stats_.handshakes_failed;
        dead_ = true;
        return;
      case NGTCP2_ERR_CRYPTO:
        return close(CloseKind::tls_alert, "TLS handshake failed", now);
      case NGTCP2_ERR_CALLBACK_FAILURE:
        if (app_error_set_) return close(CloseKind::app_error, "HTTP/3 error", now);
        [[fallthrough]];
      default:
        liberr_ = rv;
        return close(CloseKind::liberr, std::string("QUIC: ") + ngtcp2_strerror(rv), now);
    }
  }

  // Sends one CONNECTION_CLOSE and forgets the connection (no closing period yet, see the
  // header: a lost close is not repeated).
  void close(CloseKind kind, const std::string& why, uint64_t now) {
    if (dead_) return;
    dead_ = true;
    if (!handshake_done_) ++server_.stats_.handshakes_failed;
    ngtcp2_connection_close_error ccerr;
    ngtcp2_connection_close_error_default(&ccerr);
    uint8_t alert = ngtcp2_conn_get_tls_alert(conn_);
    switch (kind) {
      case CloseKind::tls_alert:
        ngtcp2_connection_close_error_set_transport_error_tls_alert(&ccerr, alert, nullptr, 0);
        break;
      case CloseKind::app_error:
        ngtcp2_connection_close_error_set_application_error(&ccerr, app_error_, nullptr, 0);
        break;
      case CloseKind::liberr:
        ngtcp2_connection_close_error_set_transport_error_liberr(&ccerr, liberr_, nullptr, 0);
        break;
    }
    // Before the handshake completes, failures are whatever any sender on the internet makes
    // them (scanners, wrong ALPN): debug, so that they cannot flood the log.
    auto line =
        log::Line(handshake_done_ ? log::Level::info : log::Level::debug, "h3_connection_error");
    line.kv("remote", remote_.str()).kv("scid", scid_hex_).kv("error", why);
    line.kv("error_code", static_cast<uint64_t>(ccerr.error_code));
    if (kind == CloseKind::tls_alert && alert != 0) {
      line.kv("tls_alert", gnutls_alert_get_name(static_cast<gnutls_alert_description_t>(alert)));
    }
    if (ngtcp2_conn_is_in_closing_period(conn_) || ngtcp2_conn_is_in_draining_period(conn_)) {
      return;
    }
    std::vector<uint8_t> buf(kMaxUdpPayload);
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi{};
    ngtcp2_ssize n = ngtcp2_conn_write_connection_close(conn_, &ps.path, &pi, buf.data(),
                                                        buf.size(), &ccerr, now);
    if (n > 0) {
      buf.resize(static_cast<size_t>(n));
      emit(ps.path, std::move(buf));
    }
  }

  void emit(const ngtcp2_path& path, std::vector<uint8_t> data) {
    Datagram d;
    d.local = path.local.addrlen > 0 ? Address::from(path.local.addr, path.local.addrlen) : local_;
    d.remote =
        path.remote.addrlen > 0 ? Address::from(path.remote.addr, path.remote.addrlen) : remote_;
    d.data = std::move(data);
    server_.out_.push_back(std::move(d));
  }

  void write(uint64_t now) {
    if (dead_) return;
    std::vector<uint8_t> buf;
    for (size_t packets = 0; packets < kMaxPacketsPerWrite; ++packets) {
      buf.resize(kMaxUdpPayload);
      ngtcp2_path_storage ps;
      ngtcp2_path_storage_zero(&ps);
      ngtcp2_pkt_info pi{};
      PacketWrite w = write_packet(conn_, h3_, &ps.path, &pi, buf.data(), buf.size(), now);
      if (w.h3_error != 0) {
        set_app_error(nghttp3_err_infer_quic_app_error_code(w.h3_error));
        return close(CloseKind::app_error, std::string("HTTP/3: ") + nghttp3_strerror(w.h3_error),
                     now);
      }
      if (w.quic_error != 0) {
        liberr_ = w.quic_error;
        return close(CloseKind::liberr, std::string("QUIC: ") + ngtcp2_strerror(liberr_), now);
      }
      if (w.size == 0) break;  // nothing more to send now (or blocked by anti-amplification/pacing)
      buf.resize(w.size);
      emit(ps.path, std::move(buf));
      buf = {};
    }
    ngtcp2_conn_update_pkt_tx_time(conn_, now);
  }

  void set_app_error(uint64_t code) {
    app_error_set_ = true;
    app_error_ = code;
  }

  // The stand-in for proxying: every request gets 200 "hello" once its request ends.
  int answer(int64_t stream_id) {
    static const std::string kLength = std::to_string(kHelloBody.size());
    std::array<nghttp3_nv, 3> nva{make_nv(":status", "200"),
                                  make_nv("content-type", "text/plain; charset=utf-8"),
                                  make_nv("content-length", kLength)};
    nghttp3_data_reader reader{&Connection::h3_read_hello};
    int rv = nghttp3_conn_submit_response(h3_, stream_id, nva.data(), nva.size(), &reader);
    if (rv != 0) return rv;
    ++server_.stats_.requests_answered;
    return 0;
  }

  // --- ngtcp2 callbacks ---------------------------------------------------------------------

  static int on_handshake_completed(ngtcp2_conn* conn, void* user_data) {
    Connection* c = self(user_data);
    c->handshake_done_ = true;
    ++c->server_.stats_.handshakes_completed;
    gnutls_datum_t alpn{};
    std::string proto;
    if (gnutls_alpn_get_selected_protocol(c->tls_, &alpn) == 0) {
      proto.assign(reinterpret_cast<const char*>(alpn.data), alpn.size);
    }
    log::debug("h3_handshake_completed")
        .kv("remote", c->remote_.str())
        .kv("scid", c->scid_hex_)
        .kv("alpn", proto)
        .kv("version", static_cast<uint64_t>(ngtcp2_conn_get_negotiated_version(conn)));
    return 0;
  }

  static int on_recv_tx_key(ngtcp2_conn*, ngtcp2_crypto_level level, void* user_data) {
    // The 1-RTT key is ready: HTTP/3's control and QPACK streams can be opened (their data
    // goes out as 0.5-RTT with the handshake).
    if (level != NGTCP2_CRYPTO_LEVEL_APPLICATION) return 0;
    return self(user_data)->init_http3() ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
  }

  static int on_recv_stream_data(ngtcp2_conn* conn, uint32_t flags, int64_t stream_id, uint64_t,
                                 const uint8_t* data, size_t len, void* user_data, void*) {
    Connection* c = self(user_data);
    if (c->h3_ == nullptr) return NGTCP2_ERR_CALLBACK_FAILURE;
    nghttp3_ssize n =
        nghttp3_conn_read_stream(c->h3_, stream_id, data, len, flags & NGTCP2_STREAM_DATA_FLAG_FIN);
    // A malformed request needs no handling here: nghttp3 0.8's server side resets just that
    // stream with H3_MESSAGE_ERROR through h3_stop_sending/h3_reset_stream and reads on
    // (RFC 9114 §4.1.2; MalformedRequestResetsOnlyItsStream). Errors left are connection errors.
    if (n < 0) {
      c->set_app_error(nghttp3_err_infer_quic_app_error_code(static_cast<int>(n)));
      return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    // Framing bytes are consumed here; body bytes are credited in h3_recv_data.
    extend_credit(conn, stream_id, static_cast<uint64_t>(n));
    return 0;
  }

  static int on_acked_stream_data_offset(ngtcp2_conn*, int64_t stream_id, uint64_t, uint64_t len,
                                         void* user_data, void*) {
    Connection* c = self(user_data);
    if (c->h3_ == nullptr) return 0;
    return nghttp3_conn_add_ack_offset(c->h3_, stream_id, len) == 0 ? 0
                                                                    : NGTCP2_ERR_CALLBACK_FAILURE;
  }

  static int on_stream_close(ngtcp2_conn* conn, uint32_t flags, int64_t stream_id,
                             uint64_t app_error_code, void* user_data, void*) {
    Connection* c = self(user_data);
    if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET)) {
      app_error_code = NGHTTP3_H3_NO_ERROR;
    }
    if (c->h3_ == nullptr) return 0;
    int rv = nghttp3_conn_close_stream(c->h3_, stream_id, app_error_code);
    if (rv == NGHTTP3_ERR_STREAM_NOT_FOUND) {
      // nghttp3 never saw it: give the stream credit back here instead of h3_stream_close.
      if (ngtcp2_is_bidi_stream(stream_id)) ngtcp2_conn_extend_max_streams_bidi(conn, 1);
      return 0;
    }
    if (rv != 0) {
      c->set_app_error(nghttp3_err_infer_quic_app_error_code(rv));
      return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
  }

  static int on_stream_reset(ngtcp2_conn*, int64_t stream_id, uint64_t, uint64_t, void* user_data,
                             void*) {
    return shutdown_h3_read(self(user_data)->h3_, stream_id);
  }

  static int on_stream_stop_sending(ngtcp2_conn*, int64_t stream_id, uint64_t, void* user_data,
                                    void*) {
    return shutdown_h3_read(self(user_data)->h3_, stream_id);
  }

  static int on_extend_max_remote_streams_bidi(ngtcp2_conn*, uint64_t max_streams,
                                               void* user_data) {
    Connection* c = self(user_data);
    if (c->h3_ != nullptr) nghttp3_conn_set_max_client_streams_bidi(c->h3_, max_streams);
    return 0;
  }

  static int on_extend_max_stream_data(ngtcp2_conn*, int64_t stream_id, uint64_t, void* user_data,
                                       void*) {
    return unblock_h3_stream(self(user_data)->h3_, stream_id);
  }

  static int on_get_new_connection_id(ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token, size_t cidlen,
                                      void* user_data) {
    Connection* c = self(user_data);
    if (gnutls_rnd(GNUTLS_RND_RANDOM, cid->data, cidlen) != 0) return NGTCP2_ERR_CALLBACK_FAILURE;
    cid->datalen = cidlen;
    // Derived from the CID, so that a stateless reset can later be sent without state.
    if (!c->reset_token(token, *cid)) return NGTCP2_ERR_CALLBACK_FAILURE;
    return c->add_cid(cid_key(cid->data, cid->datalen)) ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
  }

  static int on_remove_connection_id(ngtcp2_conn*, const ngtcp2_cid* cid, void* user_data) {
    Connection* c = self(user_data);
    std::string key = cid_key(cid->data, cid->datalen);
    c->cids_.erase(std::remove(c->cids_.begin(), c->cids_.end(), key), c->cids_.end());
    c->server_.remove_cid(key);
    return 0;
  }

  // --- nghttp3 callbacks --------------------------------------------------------------------

  static nghttp3_ssize h3_read_hello(nghttp3_conn*, int64_t, nghttp3_vec* vec, size_t,
                                     uint32_t* flags, void*, void*) {
    // Static storage: nghttp3 may reference it until the client acknowledges it.
    vec[0].base = reinterpret_cast<uint8_t*>(const_cast<char*>(kHelloBody.data()));
    vec[0].len = kHelloBody.size();
    *flags |= NGHTTP3_DATA_FLAG_EOF;
    return 1;
  }

  static int h3_stream_close(nghttp3_conn*, int64_t stream_id, uint64_t, void* user_data, void*) {
    Connection* c = self(user_data);
    // The request stream is gone: the client may open another (100 at a time).
    if (ngtcp2_is_bidi_stream(stream_id)) ngtcp2_conn_extend_max_streams_bidi(c->conn_, 1);
    return 0;
  }

  static int h3_recv_data(nghttp3_conn*, int64_t stream_id, const uint8_t*, size_t len,
                          void* user_data, void*) {
    // Request bodies are discarded for now; their flow-control credit goes back at once.
    extend_credit(self(user_data)->conn_, stream_id, len);
    return 0;
  }

  static int h3_deferred_consume(nghttp3_conn*, int64_t stream_id, size_t consumed, void* user_data,
                                 void*) {
    extend_credit(self(user_data)->conn_, stream_id, consumed);
    return 0;
  }

  static int h3_end_stream(nghttp3_conn*, int64_t stream_id, void* user_data, void*) {
    return self(user_data)->answer(stream_id) == 0 ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE;
  }

  static int h3_stop_sending(nghttp3_conn*, int64_t stream_id, uint64_t app_error_code,
                             void* user_data, void*) {
    return stop_reading(self(user_data)->conn_, stream_id, app_error_code);
  }

  static int h3_reset_stream(nghttp3_conn*, int64_t stream_id, uint64_t app_error_code,
                             void* user_data, void*) {
    return stop_writing(self(user_data)->conn_, stream_id, app_error_code);
  }

  QuicServer& server_;
  Address local_;
  Address remote_;
  ngtcp2_crypto_conn_ref conn_ref_;
  ngtcp2_conn* conn_ = nullptr;
  nghttp3_conn* h3_ = nullptr;
  gnutls_session_t tls_ = nullptr;
  std::vector<std::string> cids_;
  std::string scid_hex_;  // our first CID, to tie log lines together
  bool handshake_done_ = false;
  bool dead_ = false;
  bool app_error_set_ = false;
  uint64_t app_error_ = NGHTTP3_H3_NO_ERROR;
  int liberr_ = 0;
};

// --- QuicServer -----------------------------------------------------------------------------

QuicServer::QuicServer(std::shared_ptr<const ServerCredentials> credentials, ServerOptions options)
    : credentials_(std::move(credentials)), options_(options), reset_secret_(32) {}

QuicServer::~QuicServer() = default;

Result<std::unique_ptr<QuicServer>> QuicServer::create(
    std::shared_ptr<const ServerCredentials> credentials, ServerOptions options) {
  if (!credentials || credentials->native() == nullptr) {
    return make_error("QUIC server without certificates");
  }
  if (options.max_bidi_streams == 0) return make_error("max_bidi_streams must be at least 1");
  std::unique_ptr<QuicServer> server(new QuicServer(std::move(credentials), options));
  // Per process start: after a restart, old connections cannot be reset statelessly (they time
  // out instead). A secret shared by all threads and kept across restarts is for the listener.
  if (gnutls_rnd(GNUTLS_RND_KEY, server->reset_secret_.data(), server->reset_secret_.size()) != 0) {
    return make_error("no randomness for the stateless reset secret");
  }
  return server;
}

void QuicServer::receive(std::span<const uint8_t> data, const Address& local, const Address& remote,
                         uint64_t now) {
  ngtcp2_version_cid vc;
  int rv = ngtcp2_pkt_decode_version_cid(&vc, data.data(), data.size(), kScidLen);
  if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
    // Only for datagrams a client's Initial could be (RFC 9000 §6.1, §14.1): anything smaller
    // would let a spoofed source amplify.
    if (data.size() >= NGTCP2_MAX_UDP_PAYLOAD_SIZE) {
      send_version_negotiation(vc.scid, vc.scidlen, vc.dcid, vc.dcidlen, local, remote);
    } else {
      ++stats_.datagrams_dropped;
    }
    return;
  }
  if (rv != 0) {
    ++stats_.datagrams_dropped;
    return;
  }
  if (auto it = cids_.find(cid_key(vc.dcid, vc.dcidlen)); it != cids_.end()) {
    Connection* conn = it->second;
    conn->receive(data, local, remote, now);
    if (conn->dead()) reap(conn);
    return;
  }
  if (vc.version == 0) {
    // A short-header packet of a connection we do not know: a stateless reset would tell the
    // client at once; it is not built yet, the client times out instead.
    ++stats_.datagrams_dropped;
    return;
  }
  accept(data, local, remote, now);
}

void QuicServer::accept(std::span<const uint8_t> data, const Address& local, const Address& remote,
                        uint64_t now) {
  ngtcp2_pkt_hd hd;
  // Rejects anything but a client Initial of at least 1200 bytes, which is what keeps a spoofed
  // source from getting more than 3x its bytes back before validation.
  if (ngtcp2_accept(&hd, data.data(), data.size()) != 0) {
    ++stats_.datagrams_dropped;
    return;
  }
  if (connections_.size() >= options_.max_connections) {
    ++stats_.datagrams_dropped;
    log::warn("h3_connection_limit")
        .kv("remote", remote.str())
        .kv("limit", options_.max_connections);
    return;
  }
  auto conn = std::make_unique<Connection>(*this, local, remote);
  Connection* raw = conn.get();
  connections_.emplace(raw, std::move(conn));
  if (auto ok = raw->init(hd, now); !ok) {
    log::error("h3_accept_failed")
        .kv("remote", remote.str())
        .kv("error", ok.errors().front().message);
    reap(raw);
    return;
  }
  ++stats_.connections_accepted;
  raw->receive(data, local, remote, now);
  if (raw->dead()) reap(raw);
}

void QuicServer::send_version_negotiation(const uint8_t* dcid, size_t dcidlen, const uint8_t* scid,
                                          size_t scidlen, const Address& local,
                                          const Address& remote) {
  ++stats_.version_negotiations;
  std::array<uint32_t, 1> versions{NGTCP2_PROTO_VER_V1};
  uint8_t unused = 0;
  gnutls_rnd(GNUTLS_RND_NONCE, &unused, 1);
  std::vector<uint8_t> buf(kMaxUdpPayload);
  ngtcp2_ssize n =
      ngtcp2_pkt_write_version_negotiation(buf.data(), buf.size(), unused, dcid, dcidlen, scid,
                                           scidlen, versions.data(), versions.size());
  if (n <= 0) return;
  buf.resize(static_cast<size_t>(n));
  out_.push_back(Datagram{local, remote, std::move(buf)});
}

std::vector<Datagram> QuicServer::take_datagrams() {
  std::vector<Datagram> out;
  out.swap(out_);
  return out;
}

uint64_t QuicServer::expiry() const {
  // A scan: fine for the handful of connections of the tests; the listener needs a timer heap
  // (or one timer per connection) before it holds thousands.
  uint64_t earliest = UINT64_MAX;
  for (const auto& [raw, conn] : connections_) earliest = std::min(earliest, conn->expiry());
  return earliest;
}

void QuicServer::handle_expiry(uint64_t now) {
  std::vector<Connection*> due;
  for (const auto& [raw, conn] : connections_) {
    if (conn->expiry() <= now) due.push_back(raw);
  }
  for (Connection* conn : due) {
    conn->handle_expiry(now);
    if (conn->dead()) reap(conn);
  }
}

void QuicServer::reap(Connection* conn) {
  for (const std::string& cid : conn->cids()) {
    if (auto it = cids_.find(cid); it != cids_.end() && it->second == conn) cids_.erase(it);
  }
  connections_.erase(conn);
}

bool QuicServer::add_cid(std::string cid, Connection* conn) {
  return cids_.try_emplace(std::move(cid), conn).second;
}

void QuicServer::remove_cid(const std::string& cid) {
  cids_.erase(cid);
}

}  // namespace hsp::h3
