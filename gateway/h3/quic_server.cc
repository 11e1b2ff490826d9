// QuicServer: connection-ID dispatch, QUIC v1 accept, and one Connection per client, each an
// ngtcp2 server connection + GnuTLS session + nghttp3 server connection, with one Stream per
// request. The shape follows the project's h3 client (bench/load/h3_connection.cc), and the glue
// that is the same on both sides (packet writing, flow-control credit, crypto callbacks) is
// shared in h3/common.h: library callbacks only touch the library state of their own connection
// and call the handler; datagrams are queued on the server, and a connection that ends is reaped
// by the server after the library call that ended it has returned.
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
#include <deque>

#include "h2/common.h"  // the field rules, which HTTP/3 shares with HTTP/2 (RFC 9114 §4.2)
#include "h3/common.h"
#include "http/hop_by_hop.h"
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

// RFC 9114 §8.1.
constexpr uint64_t kH3MessageError = 0x10e;

// How long a Retry token is good for: the client answers a Retry at once, so a few RTTs; long
// enough for a slow link, short enough that a captured token is of little use.
constexpr uint64_t kRetryTokenLifetime = 10 * NGTCP2_SECONDS;
// The smallest short-header packet that can be one of ours: the first byte, our CID, then at
// least 4 bytes before the 16-byte header-protection sample (RFC 9001 §5.4.2). Anything shorter
// is not a QUIC packet for a connection we had and gets no stateless reset: with the reset
// always shorter than what triggers it, this also stops two endpoints from looping.
constexpr size_t kMinResetTrigger = 1 + kScidLen + 4 + 16;
// Packets up to this size are answered by a reset one byte shorter (RFC 9000 §10.3); longer
// ones by a reset of this size plus a random few bytes, so that resets vary like real packets.
constexpr size_t kResetAnswerSize = 1 + NGTCP2_MAX_CIDLEN + 22;

std::string cid_key(const uint8_t* data, size_t len) {
  return std::string(reinterpret_cast<const char*>(data), len);
}

// The stateless reset token of one of our CIDs (RFC 9000 §10.3.2): derived from the CID with the
// server's static key, so that a reset can be sent for a connection we no longer know.
bool derive_reset_token(const std::vector<uint8_t>& secret, const ngtcp2_cid& cid, uint8_t* token) {
  int rv = ngtcp2_crypto_generate_stateless_reset_token(token, secret.data(), secret.size(), &cid);
  return rv == 0;
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

std::string_view rcbuf_view(nghttp3_rcbuf* b) {
  nghttp3_vec v = nghttp3_rcbuf_get_buf(b);
  return {reinterpret_cast<const char*>(v.base), v.len};
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

std::string Address::ip() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (storage.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage)->sin_addr, buf, sizeof buf);
    return buf;
  }
  if (storage.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      inet_ntop(AF_INET, in6->sin6_addr.s6_addr + 12, buf, sizeof buf);
    } else {
      inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
    }
    return buf;
  }
  return "";
}

uint16_t Address::port() const {
  if (storage.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
  }
  if (storage.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
  }
  return 0;
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
  Connection(QuicServer& server, uint64_t id, const Address& local, const Address& remote)
      : server_(server),
        id_(id),
        local_(local),
        remote_(remote),
        conn_ref_{&Connection::get_conn, this} {}

  ~Connection() {
    if (h3_ != nullptr) nghttp3_conn_del(h3_);
    if (conn_ != nullptr) ngtcp2_conn_del(conn_);
    if (tls_ != nullptr) gnutls_deinit(tls_);
  }

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  uint64_t id() const { return id_; }

  // Sets up the QUIC connection for a client's first Initial (hd from ngtcp2_accept). odcid:
  // the DCID of the client's Initial before our Retry, taken from the token hd carries; null
  // when there was no Retry.
  Result<bool> init(const ngtcp2_pkt_hd& hd, const ngtcp2_cid* odcid, uint64_t now) {
    ngtcp2_cid scid;
    if (!new_cid(scid, kScidLen)) return make_error("no randomness for a connection ID");

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
    // The Retry token: it lifts the 3x limit (the address is proven), and ngtcp2 wants it in
    // every later Initial of this connection.
    if (odcid != nullptr) settings.token = hd.token;

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
    // RFC 9000 §7.3: the client checks both against what it sent and what our Retry said.
    if (odcid != nullptr) {
      params.original_dcid = *odcid;
      params.retry_scid = hd.dcid;  // the Retry's SCID, which the client now sends to
      params.retry_scid_present = 1;
    } else {
      params.original_dcid = hd.dcid;
    }
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

    tmpl_.conn_id = id_;
    tmpl_.version = 30;
    tmpl_.scheme = "https";
    tmpl_.remote_ip = remote_.ip();
    tmpl_.remote_port = remote_.port();
    tmpl_.local_ip = local_.ip();
    tmpl_.local_port = local_.port();
    tmpl_.tls = true;
    tmpl_.tls_version = 0x0304;
    tmpl_.tls_proto = "h3";
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
      log::debug("h3_connection_idle")
          .kv("conn_id", id_)
          .kv("remote", remote_.str())
          .kv("scid", scid_hex_);
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

  // Writes what the handler queued; closes a draining connection with no request left.
  void write(uint64_t now) {
    if (dead_) return;
    if (goaway_sent_ && streams_.empty() && h3_ != nullptr) {
      return close(CloseKind::no_error, "drained", now);
    }
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

  // GOAWAY (RFC 9114 §5.2): requests already opened go on, later ones are refused.
  void shutdown(uint64_t now) {
    if (dead_ || goaway_sent_) return;
    if (h3_ == nullptr) {
      // Still in the handshake: nothing was asked of us yet.
      return close(CloseKind::no_error, "shutting down", now);
    }
    goaway_sent_ = true;
    if (int rv = nghttp3_conn_shutdown(h3_); rv != 0) {
      set_app_error(nghttp3_err_infer_quic_app_error_code(rv));
      return close(CloseKind::app_error, std::string("GOAWAY: ") + nghttp3_strerror(rv), now);
    }
    write(now);
  }

  void close_now(uint64_t now) { close(CloseKind::no_error, "closed by the server", now); }

  bool dead() const { return dead_; }
  const std::vector<std::string>& cids() const { return cids_; }
  // Once dead: ngtcp2 asked for a Retry (the first Initial could not start the handshake).
  bool retry_wanted() const { return retry_wanted_; }
  // Once dead: when its closing or draining period ends (0: none, forget it now), and in the
  // closing period the CONNECTION_CLOSE to repeat.
  uint64_t period_end() const { return period_end_; }
  std::optional<Datagram>& close_datagram() { return close_datagram_; }

  // Counted in the server's handshakes in progress from acceptance until the handshake is over
  // either way.
  void count_handshake() {
    in_handshake_count_ = true;
    ++server_.handshakes_in_progress_;
  }
  void uncount_handshake() {
    if (!in_handshake_count_) return;
    in_handshake_count_ = false;
    --server_.handshakes_in_progress_;
  }

  // Tells the handler that every delivered stream is gone (the connection ended).
  void abandon_streams() {
    auto streams = std::move(streams_);
    streams_.clear();
    for (auto& [sid, st] : streams) {
      if (st->delivered) server_.options_.handler->on_stream_closed(id_, sid);
    }
  }

  // --- the handler's side -------------------------------------------------------------------

  Result<bool> submit_response(int64_t stream_id, const http::ResponseHead& head, bool end) {
    Stream* st = find(stream_id);
    if (st == nullptr || dead_) return make_error("stream is gone");
    if (st->reset) return make_error("stream was reset");
    if (st->response_submitted) return make_error("response already submitted");
    std::string status = std::to_string(head.status);
    h2::detail::Fields fields = h2::detail::h2_fields(head.headers, false);
    std::vector<nghttp3_nv> nva;
    nva.reserve(fields.size() + 1);
    static const std::string kStatus = ":status";
    nva.push_back(make_nv(kStatus, status, /*copy=*/true));
    for (const auto& [n, v] : fields) nva.push_back(make_nv(n, v, /*copy=*/true));
    st->response_submitted = true;
    st->body_open = !end;
    nghttp3_data_reader reader{&Connection::h3_read_data};
    int rv = nghttp3_conn_submit_response(h3_, stream_id, nva.data(), nva.size(),
                                          end ? nullptr : &reader);
    if (rv != 0) return make_error(std::string("submit response: ") + nghttp3_strerror(rv));
    mark_dirty();
    return true;
  }

  Result<size_t> send_data(int64_t stream_id, std::string_view data) {
    Stream* st = find(stream_id);
    if (st == nullptr || dead_) return make_error("stream is gone");
    if (st->reset) return make_error("stream was reset");
    if (!st->body_open || st->ended) return make_error("no response body open on this stream");
    const size_t limit = server_.options_.stream_buffer_bytes;
    size_t n = st->held >= limit ? 0 : std::min(data.size(), limit - st->held);
    if (n < data.size()) st->notify_ready = true;
    if (n == 0) return size_t{0};
    st->chunks.emplace_back(data.substr(0, n));
    st->held += n;
    resume(*st);
    return n;
  }

  Result<bool> end_stream(int64_t stream_id, std::optional<http::HeaderMap> trailers) {
    Stream* st = find(stream_id);
    if (st == nullptr || dead_) return make_error("stream is gone");
    if (st->reset) return make_error("stream was reset");
    if (!st->body_open || st->ended) return make_error("no response body open on this stream");
    st->ended = true;
    if (trailers && !trailers->empty()) st->trailers = std::move(trailers);
    resume(*st);
    return true;
  }

  void consume(int64_t stream_id, size_t n) {
    if (dead_ || n == 0) return;
    extend_credit(conn_, stream_id, n);
    mark_dirty();
  }

  void stop_reading(int64_t stream_id) {
    Stream* st = find(stream_id);
    if (st == nullptr || dead_) return;
    ngtcp2_conn_shutdown_stream_read(conn_, stream_id, NGHTTP3_H3_NO_ERROR);
    mark_dirty();
  }

  void reset_stream(int64_t stream_id, uint64_t code) {
    Stream* st = find(stream_id);
    if (st == nullptr || dead_) return;
    // Both directions: the response stops, and the client stops sending a body nobody reads.
    ngtcp2_conn_shutdown_stream(conn_, stream_id, code);
    st->reset = true;
    st->notify_ready = false;
    mark_dirty();
  }

 private:
  enum class CloseKind { liberr, tls_alert, app_error, no_error };

  // One request stream: the head as it is parsed, then the response body held until the
  // client acknowledges it (nghttp3 refers to these bytes until then).
  struct Stream {
    int64_t id = 0;
    http::Request req;
    std::string path_pseudo;
    std::string host_field;
    std::string cookie;
    bool has_method = false;
    bool has_path = false;
    size_t header_bytes = 0;
    size_t header_count = 0;
    bool too_large = false;
    bool rejected = false;   // malformed or answered here: the handler never sees it
    bool delivered = false;  // on_request was called
    bool in_trailers = false;
    bool body_done = false;
    http::HeaderMap req_trailers;
    // Response side.
    bool response_submitted = false;
    bool body_open = false;
    bool ended = false;
    bool would_block = false;  // the reader said WOULDBLOCK: resume on new bytes
    bool notify_ready = false;
    bool reset = false;  // reset by the handler: no more body, no more on_send_ready
    std::deque<std::string> chunks;
    size_t handed = 0;   // chunks at the front already given to nghttp3
    size_t held = 0;     // bytes in chunks
    uint64_t acked = 0;  // acknowledged bytes of the front chunks not yet popped
    std::optional<http::HeaderMap> trailers;
  };

  static ngtcp2_conn* get_conn(ngtcp2_crypto_conn_ref* ref) {
    return static_cast<Connection*>(ref->user_data)->conn_;
  }
  static Connection* self(void* user_data) { return static_cast<Connection*>(user_data); }

  Stream* find(int64_t stream_id) {
    auto it = streams_.find(stream_id);
    return it == streams_.end() ? nullptr : it->second.get();
  }

  void mark_dirty() {
    if (dirty_ || dead_) return;
    dirty_ = true;
    server_.dirty_.push_back(id_);
  }

 public:
  void clear_dirty() { dirty_ = false; }

 private:
  void resume(Stream& st) {
    if (st.would_block) {
      st.would_block = false;
      nghttp3_conn_resume_stream(h3_, st.id);
    }
    mark_dirty();
  }

  bool new_cid(ngtcp2_cid& cid, size_t len) {
    cid.datalen = len;
    if (gnutls_rnd(GNUTLS_RND_RANDOM, cid.data, len) != 0) return false;
    if (server_.options_.cid_prefix) cid.data[0] = *server_.options_.cid_prefix;
    return true;
  }

  bool reset_token(uint8_t* token, const ngtcp2_cid& cid) const {
    return derive_reset_token(server_.reset_secret_, cid, token);
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
    if (server_.credentials_) {
      rv = gnutls_credentials_set(
          tls_, GNUTLS_CRD_CERTIFICATE,
          static_cast<gnutls_certificate_credentials_t>(server_.credentials_->native()));
      if (rv != 0) return make_error(std::string("gnutls credentials: ") + gnutls_strerror(rv));
    }
    if (server_.options_.select_credentials) {
      // The certificate is chosen once the ClientHello (and its SNI) has been read.
      gnutls_handshake_set_post_client_hello_function(tls_, &Connection::on_client_hello);
    }
    gnutls_session_set_ptr(tls_, &conn_ref_);  // the crypto helper finds the ngtcp2_conn here
    rv = set_h3_alpn(tls_);
    if (rv != 0) return make_error(std::string("gnutls alpn: ") + gnutls_strerror(rv));
    gnutls_handshake_set_hook_function(tls_, GNUTLS_HANDSHAKE_CLIENT_HELLO, GNUTLS_HOOK_POST,
                                       &check_alpn);
    return true;
  }

  static int on_client_hello(gnutls_session_t session) {
    auto* ref = static_cast<ngtcp2_crypto_conn_ref*>(gnutls_session_get_ptr(session));
    Connection* c = static_cast<Connection*>(ref->user_data);
    std::array<char, 256> name{};
    size_t len = name.size() - 1;
    unsigned type = 0;
    std::string sni;
    if (gnutls_server_name_get(session, name.data(), &len, &type, 0) == 0 &&
        type == GNUTLS_NAME_DNS) {
      sni.assign(name.data(), len);
    }
    c->tmpl_.tls_server_name = sni;
    c->creds_ = c->server_.options_.select_credentials(sni);
    if (!c->creds_) {
      log::debug("h3_no_certificate")
          .kv("conn_id", c->id_)
          .kv("remote", c->remote_.str())
          .kv("sni", sni);
      return GNUTLS_E_UNRECOGNIZED_NAME;
    }
    int rv =
        gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE,
                               static_cast<gnutls_certificate_credentials_t>(c->creds_->native()));
    return rv == 0 ? 0 : rv;
  }

  bool init_http3() {
    if (h3_ != nullptr) return true;
    nghttp3_callbacks cb{};
    cb.acked_stream_data = &Connection::h3_acked_stream_data;
    cb.stream_close = &Connection::h3_stream_close;
    cb.recv_data = &Connection::h3_recv_data;
    cb.deferred_consume = &Connection::h3_deferred_consume;
    cb.begin_headers = &Connection::h3_begin_headers;
    cb.recv_header = &Connection::h3_recv_header;
    cb.end_headers = &Connection::h3_end_headers;
    cb.begin_trailers = &Connection::h3_begin_trailers;
    cb.recv_trailer = &Connection::h3_recv_header;
    cb.end_trailers = &Connection::h3_end_trailers;
    cb.stop_sending = &Connection::h3_stop_sending;
    cb.end_stream = &Connection::h3_end_stream;
    cb.reset_stream = &Connection::h3_reset_stream;
    nghttp3_settings settings = h3_settings();
    settings.max_field_section_size = server_.options_.max_header_bytes;
    if (nghttp3_conn_server_new(&h3_, &cb, &settings, nghttp3_mem_default(), this) != 0) {
      return false;
    }
    nghttp3_conn_set_max_client_streams_bidi(h3_, server_.options_.max_bidi_streams);
    if (!open_h3_local_streams(conn_, h3_)) return false;
    // A GOAWAY asked for during the handshake goes out with the first HTTP/3 bytes.
    if (server_.shutting_down_) {
      goaway_sent_ = true;
      if (nghttp3_conn_shutdown(h3_) != 0) return false;
    }
    return true;
  }

  void read_failed(int rv, uint64_t now) {
    switch (rv) {
      case NGTCP2_ERR_DRAINING:  // the client closed: the normal end
        log::debug("h3_connection_closed_by_peer")
            .kv("conn_id", id_)
            .kv("remote", remote_.str())
            .kv("scid", scid_hex_);
        if (!handshake_done_) ++server_.stats_.handshakes_failed;
        dead_ = true;
        // Draining (RFC 9000 §10.2.2): silent, but known, so that late packets of it get no
        // stateless reset.
        period_end_ = now + 3 * ngtcp2_conn_get_pto(conn_);
        return;
      case NGTCP2_ERR_RETRY:  // the server answers with a Retry (see accept())
        retry_wanted_ = true;
        [[fallthrough]];
      case NGTCP2_ERR_DROP_CONN:
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

  // Sends CONNECTION_CLOSE and starts the closing period (RFC 9000 §10.2.1): the server keeps
  // the packet to send again when the client, which may not have got it, sends more.
  void close(CloseKind kind, const std::string& why, uint64_t now) {
    if (dead_) return;
    dead_ = true;
    period_end_ = now + 3 * ngtcp2_conn_get_pto(conn_);
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
      case CloseKind::no_error:
        if (h3_ != nullptr) {
          ngtcp2_connection_close_error_set_application_error(&ccerr, NGHTTP3_H3_NO_ERROR, nullptr,
                                                              0);
        }
        break;
    }
    if (kind != CloseKind::no_error) {
      // Before the handshake completes, failures are whatever any sender on the internet makes
      // them (scanners, wrong ALPN): debug, so that they cannot flood the log.
      auto line =
          log::Line(handshake_done_ ? log::Level::info : log::Level::debug, "h3_connection_error");
      line.kv("conn_id", id_).kv("remote", remote_.str()).kv("scid", scid_hex_).kv("error", why);
      line.kv("error_code", static_cast<uint64_t>(ccerr.error_code));
      if (kind == CloseKind::tls_alert && alert != 0) {
        line.kv("tls_alert", gnutls_alert_get_name(static_cast<gnutls_alert_description_t>(alert)));
      }
    } else {
      log::debug("h3_connection_closed").kv("conn_id", id_).kv("reason", why);
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
      close_datagram_ = server_.out_.back();
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

  void set_app_error(uint64_t code) {
    app_error_set_ = true;
    app_error_ = code;
  }

  // A request the handler never sees: reset both ways with H3_MESSAGE_ERROR.
  void reject(Stream& st) {
    st.rejected = true;
    ngtcp2_conn_shutdown_stream(conn_, st.id, kH3MessageError);
  }

  // Answers a request here (431, 501) instead of handing it over.
  void answer_here(Stream& st, int status) {
    st.rejected = true;
    std::string code = std::to_string(status);
    static const std::string kStatus = ":status";
    static const std::string kLength = "content-length";
    static const std::string kZero = "0";
    std::array<nghttp3_nv, 2> nva{make_nv(kStatus, code, /*copy=*/true),
                                  make_nv(kLength, kZero, /*copy=*/true)};
    st.response_submitted = true;
    nghttp3_conn_submit_response(h3_, st.id, nva.data(), nva.size(), nullptr);
    // The body the client may still send is not read.
    ngtcp2_conn_shutdown_stream_read(conn_, st.id, NGHTTP3_H3_NO_ERROR);
  }

  void deliver(Stream& st, bool end) {
    http::Request& r = st.req;
    if (r.authority.empty()) r.authority = st.host_field;  // RFC 9114 §4.3.1
    r.host = http::host_of_authority(r.authority);
    r.orig_uri = st.path_pseudo;
    size_t q = st.path_pseudo.find('?');
    r.path = st.path_pseudo.substr(0, q);
    if (q != std::string::npos) r.query = st.path_pseudo.substr(q + 1);
    if (!st.cookie.empty()) r.headers.add("cookie", st.cookie);
    r.id = ++next_request_id_;
    st.delivered = true;
    st.body_done = end;
    ++server_.stats_.requests_received;
    server_.options_.handler->on_request(id_, st.id, std::move(r), end);
  }

  // --- ngtcp2 callbacks ---------------------------------------------------------------------

  static int on_handshake_completed(ngtcp2_conn* conn, void* user_data) {
    Connection* c = self(user_data);
    c->handshake_done_ = true;
    c->uncount_handshake();
    ++c->server_.stats_.handshakes_completed;
    gnutls_cipher_algorithm_t cipher = gnutls_cipher_get(c->tls_);
    switch (cipher) {
      case GNUTLS_CIPHER_AES_128_GCM:
        c->tmpl_.tls_cipher_suite = 0x1301;
        c->tmpl_.tls_cipher_name = "TLS_AES_128_GCM_SHA256";
        break;
      case GNUTLS_CIPHER_AES_256_GCM:
        c->tmpl_.tls_cipher_suite = 0x1302;
        c->tmpl_.tls_cipher_name = "TLS_AES_256_GCM_SHA384";
        break;
      case GNUTLS_CIPHER_CHACHA20_POLY1305:
        c->tmpl_.tls_cipher_suite = 0x1303;
        c->tmpl_.tls_cipher_name = "TLS_CHACHA20_POLY1305_SHA256";
        break;
      case GNUTLS_CIPHER_AES_128_CCM:
        c->tmpl_.tls_cipher_suite = 0x1304;
        c->tmpl_.tls_cipher_name = "TLS_AES_128_CCM_SHA256";
        break;
      default:
        break;
    }
    log::debug("h3_handshake_completed")
        .kv("conn_id", c->id_)
        .kv("remote", c->remote_.str())
        .kv("scid", c->scid_hex_)
        .kv("sni", c->tmpl_.tls_server_name)
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
    // A malformed request is a stream error (RFC 9114 §4.1.2). nghttp3 0.8 resets a request
    // with bad fields itself (through h3_stop_sending/h3_reset_stream) and reads on, but a body
    // that contradicts its content-length comes back here as MALFORMED_HTTP_MESSAGING: that
    // stream alone is reset. Other errors are the connection's.
    if ((n == NGHTTP3_ERR_MALFORMED_HTTP_MESSAGING || n == NGHTTP3_ERR_MALFORMED_HTTP_HEADER) &&
        ngtcp2_is_bidi_stream(stream_id)) {
      c->message_error(stream_id, len);
      return 0;
    }
    if (n < 0) {
      c->set_app_error(nghttp3_err_infer_quic_app_error_code(static_cast<int>(n)));
      return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    // Framing bytes are consumed here; body bytes are credited when the handler consumed them.
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
    // The stream is gone at the QUIC level: the client may open another (100 at a time). Given
    // back here rather than when nghttp3 lets go of it: nghttp3 keeps a request that waits for
    // QPACK encoder data past its close, and never lets go when that data never comes.
    if (ngtcp2_is_bidi_stream(stream_id)) ngtcp2_conn_extend_max_streams_bidi(conn, 1);
    if (c->h3_ == nullptr) return 0;
    int rv = nghttp3_conn_close_stream(c->h3_, stream_id, app_error_code);
    if (rv != 0 && rv != NGHTTP3_ERR_STREAM_NOT_FOUND) {
      c->set_app_error(nghttp3_err_infer_quic_app_error_code(rv));
      return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    // Such a request (blocked on QPACK) is over for us too: tell the handler now.
    c->forget_stream(stream_id);
    return 0;
  }

  // A request nghttp3 found malformed after its head (a body that contradicts content-length):
  // reset both ways with H3_MESSAGE_ERROR; the handler abandons it. The bytes of the offending
  // read are given back to the connection window (nobody will consume them).
  void message_error(int64_t stream_id, size_t len) {
    ngtcp2_conn_extend_max_offset(conn_, len);
    nghttp3_conn_shutdown_stream_read(h3_, stream_id);
    ngtcp2_conn_shutdown_stream(conn_, stream_id, kH3MessageError);
    Stream* st = find(stream_id);
    if (st == nullptr) return;
    st->rejected = true;
    if (st->delivered) server_.options_.handler->on_stream_reset(id_, stream_id);
  }

  // The stream is over: its state goes, and the handler hears of it (once).
  void forget_stream(int64_t stream_id) {
    auto it = streams_.find(stream_id);
    if (it == streams_.end()) return;
    std::unique_ptr<Stream> st = std::move(it->second);
    streams_.erase(it);
    if (st->delivered) server_.options_.handler->on_stream_closed(id_, stream_id);
    mark_dirty();  // a draining connection may now be done
  }

  // The client stopped sending (RESET_STREAM) or reading (STOP_SENDING) a stream.
  static int on_stream_reset(ngtcp2_conn*, int64_t stream_id, uint64_t, uint64_t, void* user_data,
                             void*) {
    Connection* c = self(user_data);
    c->peer_abandoned(stream_id, false);
    return shutdown_h3_read(c->h3_, stream_id);
  }

  static int on_stream_stop_sending(ngtcp2_conn*, int64_t stream_id, uint64_t, void* user_data,
                                    void*) {
    Connection* c = self(user_data);
    c->peer_abandoned(stream_id, true);
    return shutdown_h3_read(c->h3_, stream_id);
  }

  void peer_abandoned(int64_t stream_id, bool stop_sending) {
    Stream* st = find(stream_id);
    if (st == nullptr || !st->delivered) return;
    if (!stop_sending && st->body_done) return;
    // A RESET_STREAM after the whole request arrived only ends the request side (RFC 9114
    // §4.1.2 allows a client to abort the rest of a body it no longer needs to send); the
    // response still matters, so only a reset before the end, or STOP_SENDING, abandons it.
    server_.options_.handler->on_stream_reset(id_, stream_id);
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
    if (!c->new_cid(*cid, cidlen)) return NGTCP2_ERR_CALLBACK_FAILURE;
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

  static int h3_begin_headers(nghttp3_conn*, int64_t stream_id, void* user_data, void*) {
    Connection* c = self(user_data);
    auto st = std::make_unique<Stream>();
    st->id = stream_id;
    st->req = c->tmpl_;
    c->streams_[stream_id] = std::move(st);
    return 0;
  }

  static int h3_begin_trailers(nghttp3_conn*, int64_t stream_id, void* user_data, void*) {
    Connection* c = self(user_data);
    if (Stream* st = c->find(stream_id)) {
      st->in_trailers = true;
      st->header_bytes = 0;
      st->header_count = 0;
    }
    return 0;
  }

  static int h3_recv_header(nghttp3_conn*, int64_t stream_id, int32_t, nghttp3_rcbuf* name_buf,
                            nghttp3_rcbuf* value_buf, uint8_t, void* user_data, void*) {
    Connection* c = self(user_data);
    Stream* st = c->find(stream_id);
    if (st == nullptr || st->rejected || st->too_large) return 0;
    std::string_view name = rcbuf_view(name_buf);
    std::string_view value = rcbuf_view(value_buf);
    // Counted as HTTP/2 counts them (RFC 7541 §4.1 sizes), so that both protocols share one
    // limit; past it the rest of the section is dropped and a 431 follows.
    st->header_bytes += name.size() + value.size() + 32;
    ++st->header_count;
    const ServerOptions& o = c->server_.options_;
    if (st->header_bytes > o.max_header_bytes || st->header_count > o.max_header_count) {
      st->too_large = true;
      return 0;
    }
    const bool pseudo = !name.empty() && name.front() == ':';
    if (!h2::detail::valid_value(value) ||
        !h2::detail::valid_name(pseudo ? name.substr(1) : name)) {
      c->reject(*st);
      return 0;
    }
    if (st->in_trailers) {
      if (pseudo || h2::detail::connection_specific(name) || name == "te") {
        c->reject(*st);
        return 0;
      }
      st->req_trailers.add(name, value);
      return 0;
    }
    if (pseudo) {
      if (name == ":method") {
        st->req.method = std::string(value);
        st->has_method = true;
      } else if (name == ":path") {
        st->path_pseudo = std::string(value);
        st->has_path = true;
      } else if (name == ":scheme") {
        // How the client reached us is what counts ({scheme} is "https" on QUIC).
      } else if (name == ":authority") {
        st->req.authority = std::string(value);
      } else {
        c->reject(*st);  // :protocol (extended CONNECT is not enabled) and unknown ones
      }
      return 0;
    }
    if (h2::detail::connection_specific(name) || (name == "te" && value != "trailers")) {
      c->reject(*st);
      return 0;
    }
    if (name == "host") {
      if (st->host_field.empty()) st->host_field = std::string(value);
      return 0;  // as on HTTP/1 and HTTP/2: the authority lives in Request::authority only
    }
    if (name == "cookie") {
      if (!st->cookie.empty()) st->cookie += "; ";
      st->cookie.append(value);
      return 0;
    }
    st->req.headers.add(name, value);
    return 0;
  }

  static int h3_end_headers(nghttp3_conn*, int64_t stream_id, int fin, void* user_data, void*) {
    Connection* c = self(user_data);
    Stream* st = c->find(stream_id);
    if (st == nullptr || st->rejected) return 0;
    if (st->too_large) {
      c->answer_here(*st, 431);
      return 0;
    }
    if (st->req.method == "CONNECT") {
      c->answer_here(*st, 501);  // CONNECT tunnels are not proxied (yet)
      return 0;
    }
    const std::string& p = st->path_pseudo;
    if (!st->has_method || !st->has_path || p.empty() ||
        (p.front() != '/' && !(p == "*" && st->req.method == "OPTIONS"))) {
      c->reject(*st);
      return 0;
    }
    c->deliver(*st, fin != 0);
    return 0;
  }

  static int h3_end_trailers(nghttp3_conn*, int64_t stream_id, int, void* user_data, void*) {
    Connection* c = self(user_data);
    Stream* st = c->find(stream_id);
    if (st == nullptr || st->rejected || !st->delivered) return 0;
    if (st->too_large) {
      c->reject(*st);  // trailers over the limit
      c->server_.options_.handler->on_stream_reset(c->id_, stream_id);
      return 0;
    }
    c->server_.options_.handler->on_request_trailers(c->id_, stream_id,
                                                     std::move(st->req_trailers));
    return 0;
  }

  static int h3_recv_data(nghttp3_conn*, int64_t stream_id, const uint8_t* data, size_t len,
                          void* user_data, void*) {
    Connection* c = self(user_data);
    Stream* st = c->find(stream_id);
    if (st == nullptr || st->rejected || !st->delivered) {
      // Nobody reads it: the credit goes back at once.
      extend_credit(c->conn_, stream_id, len);
      return 0;
    }
    c->server_.options_.handler->on_request_data(
        c->id_, stream_id, std::string_view(reinterpret_cast<const char*>(data), len));
    return 0;
  }

  static int h3_deferred_consume(nghttp3_conn*, int64_t stream_id, size_t consumed, void* user_data,
                                 void*) {
    extend_credit(self(user_data)->conn_, stream_id, consumed);
    return 0;
  }

  static int h3_end_stream(nghttp3_conn*, int64_t stream_id, void* user_data, void*) {
    Connection* c = self(user_data);
    Stream* st = c->find(stream_id);
    if (st == nullptr || st->rejected || !st->delivered || st->body_done) return 0;
    st->body_done = true;
    c->server_.options_.handler->on_request_end(c->id_, stream_id);
    return 0;
  }

  static int h3_stop_sending(nghttp3_conn*, int64_t stream_id, uint64_t app_error_code,
                             void* user_data, void*) {
    return h3::stop_reading(self(user_data)->conn_, stream_id, app_error_code);
  }

  static int h3_reset_stream(nghttp3_conn*, int64_t stream_id, uint64_t app_error_code,
                             void* user_data, void*) {
    return stop_writing(self(user_data)->conn_, stream_id, app_error_code);
  }

  static int h3_stream_close(nghttp3_conn*, int64_t stream_id, uint64_t, void* user_data, void*) {
    // Stream credit went back in on_stream_close (the QUIC stream's end).
    self(user_data)->forget_stream(stream_id);
    return 0;
  }

  static int h3_acked_stream_data(nghttp3_conn*, int64_t stream_id, uint64_t datalen,
                                  void* user_data, void*) {
    Connection* c = self(user_data);
    Stream* st = c->find(stream_id);
    if (st == nullptr) return 0;
    st->acked += datalen;
    while (st->handed > 0 && !st->chunks.empty() && st->acked >= st->chunks.front().size()) {
      st->acked -= st->chunks.front().size();
      st->held -= st->chunks.front().size();
      st->chunks.pop_front();
      --st->handed;
    }
    if (st->notify_ready && st->held < c->server_.options_.stream_buffer_bytes) {
      st->notify_ready = false;
      c->server_.options_.handler->on_send_ready(c->id_, stream_id);
    }
    return 0;
  }

  // nghttp3 pulls response body bytes: the chunks not handed out yet, in place (they stay in
  // the deque until acknowledged), then the end (with trailers if there are some).
  static nghttp3_ssize h3_read_data(nghttp3_conn* h3, int64_t stream_id, nghttp3_vec* vec,
                                    size_t veccnt, uint32_t* flags, void* user_data, void*) {
    Connection* c = self(user_data);
    Stream* st = c->find(stream_id);
    if (st == nullptr) return NGHTTP3_ERR_CALLBACK_FAILURE;
    size_t n = 0;
    while (st->handed < st->chunks.size() && n < veccnt) {
      std::string& chunk = st->chunks[st->handed++];
      vec[n].base = reinterpret_cast<uint8_t*>(chunk.data());
      vec[n].len = chunk.size();
      ++n;
    }
    if (st->handed == st->chunks.size() && st->ended) {
      *flags |= NGHTTP3_DATA_FLAG_EOF;
      if (st->trailers) {
        *flags |= NGHTTP3_DATA_FLAG_NO_END_STREAM;
        h2::detail::Fields fields = h2::detail::h2_fields(*st->trailers, false);
        std::vector<nghttp3_nv> nva;
        for (const auto& [name, value] : fields) nva.push_back(make_nv(name, value, /*copy=*/true));
        st->trailers.reset();
        if (nghttp3_conn_submit_trailers(h3, stream_id, nva.data(), nva.size()) != 0) {
          return NGHTTP3_ERR_CALLBACK_FAILURE;
        }
      }
      return static_cast<nghttp3_ssize>(n);
    }
    if (n == 0) {
      st->would_block = true;
      return NGHTTP3_ERR_WOULDBLOCK;
    }
    return static_cast<nghttp3_ssize>(n);
  }

  QuicServer& server_;
  uint64_t id_;
  Address local_;
  Address remote_;
  ngtcp2_crypto_conn_ref conn_ref_;
  ngtcp2_conn* conn_ = nullptr;
  nghttp3_conn* h3_ = nullptr;
  gnutls_session_t tls_ = nullptr;
  std::shared_ptr<const ServerCredentials> creds_;  // chosen by SNI; kept for the session
  http::Request tmpl_;  // what every request of this connection starts from
  std::unordered_map<int64_t, std::unique_ptr<Stream>> streams_;
  std::vector<std::string> cids_;
  std::string scid_hex_;  // our first CID, to tie log lines together
  uint64_t next_request_id_ = 0;
  bool handshake_done_ = false;
  bool goaway_sent_ = false;
  bool dirty_ = false;
  bool dead_ = false;
  bool app_error_set_ = false;
  uint64_t app_error_ = NGHTTP3_H3_NO_ERROR;
  int liberr_ = 0;
  bool retry_wanted_ = false;
  bool in_handshake_count_ = false;
  uint64_t period_end_ = 0;
  std::optional<Datagram> close_datagram_;
};

// A connection in its closing or draining period (RFC 9000 §10.2): no library state, only
// what answers its late packets.
struct QuicServer::Closed {
  std::vector<std::string> cids;
  Address local;
  Address remote;
  std::vector<uint8_t> close_packet;  // empty: draining, nothing is sent
  uint64_t until = 0;
  uint64_t packets_in = 0;  // received during the period
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;  // repeated closes
};

// --- QuicServer -----------------------------------------------------------------------------

QuicServer::QuicServer(std::shared_ptr<const ServerCredentials> credentials, ServerOptions options)
    : credentials_(std::move(credentials)),
      options_(std::move(options)),
      reset_secret_(32),
      token_secret_(32),
      reset_allowance_(options_.stateless_resets_per_second) {}

QuicServer::~QuicServer() {
  // The handler hears of no stream after this: the data plane destroys it with the server.
  dirty_.clear();
}

Result<std::unique_ptr<QuicServer>> QuicServer::create(
    std::shared_ptr<const ServerCredentials> credentials, ServerOptions options) {
  if ((!credentials || credentials->native() == nullptr) && !options.select_credentials) {
    return make_error("QUIC server without certificates");
  }
  if (options.handler == nullptr) return make_error("QUIC server without a request handler");
  if (options.max_bidi_streams == 0) return make_error("max_bidi_streams must be at least 1");
  std::unique_ptr<QuicServer> server(new QuicServer(std::move(credentials), std::move(options)));
  // Per process start: after a restart, old connections cannot be reset statelessly (they time
  // out instead). A secret shared by all threads and kept across restarts is for the listener.
  if (gnutls_rnd(GNUTLS_RND_KEY, server->reset_secret_.data(), server->reset_secret_.size()) != 0) {
    return make_error("no randomness for the stateless reset secret");
  }
  // Likewise: a Retry token is only good for the server (thread) that made it, hence owner_of().
  if (gnutls_rnd(GNUTLS_RND_KEY, server->token_secret_.data(), server->token_secret_.size()) != 0) {
    return make_error("no randomness for the Retry token secret");
  }
  return server;
}

std::optional<uint8_t> QuicServer::owner_of(std::span<const uint8_t> data) {
  // Debian's ngtcp2 0.12 asserts on an empty buffer (assertions are on in its build): an empty
  // datagram, which anyone can send, would abort the process.
  if (data.empty()) return std::nullopt;
  ngtcp2_version_cid vc;
  if (ngtcp2_pkt_decode_version_cid(&vc, data.data(), data.size(), kScidLen) != 0) {
    return std::nullopt;
  }
  if (vc.dcidlen != kScidLen) return std::nullopt;
  if (vc.version != 0) {
    // Long header: the type is in bits 4-5 of the first byte for v1 (RFC 9000 §17.2); Initial
    // (0) and 0-RTT (1) carry the DCID the client chose, not one of ours.
    const unsigned type = (data[0] >> 4) & 0x3;
    if (vc.version != NGTCP2_PROTO_VER_V1 || type == 1) return std::nullopt;
    if (type == 0) {
      // An Initial answering our Retry is sent to the Retry's SCID, which we chose.
      ngtcp2_pkt_hd hd;
      if (ngtcp2_pkt_decode_hd_long(&hd, data.data(), data.size()) < 0 || hd.token.len == 0 ||
          hd.token.base[0] != NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY) {
        return std::nullopt;
      }
    }
  }
  return vc.dcid[0];
}

void QuicServer::receive(std::span<const uint8_t> data, const Address& local, const Address& remote,
                         uint64_t now) {
  if (data.empty()) {  // see owner_of(): ngtcp2 asserts on it
    ++stats_.datagrams_dropped;
    return;
  }
  ngtcp2_version_cid vc;
  int rv = ngtcp2_pkt_decode_version_cid(&vc, data.data(), data.size(), kScidLen);
  if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
    // Only for datagrams a client's Initial could be (RFC 9000 §6.1, §14.1): anything smaller
    // would let a spoofed source amplify.
    if (data.size() >= NGTCP2_MAX_UDP_PAYLOAD_SIZE && !shutting_down_) {
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
  const std::string key = cid_key(vc.dcid, vc.dcidlen);
  if (auto it = cids_.find(key); it != cids_.end()) {
    Connection* conn = it->second;
    conn->receive(data, local, remote, now);
    if (conn->dead()) reap(conn);
    return;
  }
  if (auto it = closed_cids_.find(key); it != closed_cids_.end()) {
    receive_closed(*it->second, data.size());
    return;
  }
  if (vc.version == 0) {
    // A short-header packet of a connection we do not know (any more): a stateless reset tells
    // its client at once instead of after its idle timeout.
    send_stateless_reset(vc.dcid, vc.dcidlen, data.size(), local, remote, now);
    return;
  }
  if (shutting_down_) {
    refuse(data, local, remote);
    return;
  }
  accept(data, local, remote, now);
}

void QuicServer::refuse(std::span<const uint8_t> data, const Address& local,
                        const Address& remote) {
  // Shutting down: a new client's Initial gets CONNECTION_REFUSED at once (RFC 9000 §20.1),
  // statelessly and smaller than the Initial, instead of waiting out its handshake timeout.
  ngtcp2_pkt_hd hd;
  if (ngtcp2_accept(&hd, data.data(), data.size()) != 0) {
    ++stats_.datagrams_dropped;
    return;
  }
  std::vector<uint8_t> buf(std::min(kMaxUdpPayload, data.size()));
  ngtcp2_ssize n =
      ngtcp2_crypto_write_connection_close(buf.data(), buf.size(), hd.version, &hd.scid, &hd.dcid,
                                           NGTCP2_CONNECTION_REFUSED, nullptr, 0);
  if (n <= 0) return;
  buf.resize(static_cast<size_t>(n));
  out_.push_back(Datagram{local, remote, std::move(buf)});
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
  // An Initial that answers our Retry: its token proves the client's address (it came back to
  // that address and port within kRetryTokenLifetime), and holds the DCID before the Retry.
  std::optional<ngtcp2_cid> odcid;
  if (hd.token.len > 0 && hd.token.base[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY) {
    ngtcp2_cid cid;
    if (ngtcp2_crypto_verify_retry_token(&cid, hd.token.base, hd.token.len, token_secret_.data(),
                                         token_secret_.size(), hd.version, remote.get(), remote.len,
                                         &hd.dcid, kRetryTokenLifetime, now) != 0) {
      // Forged, expired, or from another address. The client would refuse a second Retry, so
      // tell it (RFC 9000 §8.1.2), statelessly and smaller than its Initial.
      ++stats_.tokens_rejected;
      log::debug("h3_retry_token_rejected").kv("remote", remote.str());
      std::vector<uint8_t> buf(std::min(kMaxUdpPayload, data.size()));
      ngtcp2_ssize n = ngtcp2_crypto_write_connection_close(
          buf.data(), buf.size(), hd.version, &hd.scid, &hd.dcid, NGTCP2_INVALID_TOKEN, nullptr, 0);
      if (n > 0) {
        buf.resize(static_cast<size_t>(n));
        out_.push_back(Datagram{local, remote, std::move(buf)});
      }
      return;
    }
    odcid = cid;
  } else if (hd.token.len > 0) {
    // Not a token of ours (we send no NEW_TOKEN): as if there were none (RFC 9000 §8.1.3).
    hd.token = ngtcp2_vec{nullptr, 0};
    if (hd.dcid.datalen < NGTCP2_MIN_INITIAL_DCIDLEN) {
      ++stats_.datagrams_dropped;
      return;
    }
  }
  if (connections_.size() >= options_.max_connections) {
    ++stats_.datagrams_dropped;
    log::warn("h3_connection_limit")
        .kv("remote", remote.str())
        .kv("limit", options_.max_connections);
    return;
  }
  if (!odcid &&
      (options_.always_retry || handshakes_in_progress_ >= options_.retry_above_handshakes)) {
    send_retry(hd, data.size(), local, remote, now);
    return;
  }
  const uint64_t id = options_.next_conn_id ? options_.next_conn_id() : ++conn_counter_;
  auto conn = std::make_unique<Connection>(*this, id, local, remote);
  Connection* raw = conn.get();
  connections_.emplace(id, std::move(conn));
  if (auto ok = raw->init(hd, odcid ? &*odcid : nullptr, now); !ok) {
    log::error("h3_accept_failed")
        .kv("conn_id", id)
        .kv("remote", remote.str())
        .kv("error", ok.errors().front().message);
    reap(raw);
    return;
  }
  ++stats_.connections_accepted;
  raw->count_handshake();
  raw->receive(data, local, remote, now);
  if (raw->dead()) {
    // ngtcp2 asks for a Retry when the first Initial could not start the handshake (a
    // ClientHello split over Initials that arrived out of order): only data from a validated
    // address is worth buffering.
    const bool retry = raw->retry_wanted() && !odcid;
    reap(raw);
    if (retry) send_retry(hd, data.size(), local, remote, now);
  }
}

void QuicServer::send_retry(const ngtcp2_pkt_hd& hd, size_t size, const Address& local,
                            const Address& remote, uint64_t now) {
  // The Retry's SCID is the DCID of the client's next Initial, so it is one of our CIDs (with
  // the cid_prefix byte, for owner_of()); the connection that follows registers it.
  ngtcp2_cid scid;
  scid.datalen = kScidLen;
  if (gnutls_rnd(GNUTLS_RND_RANDOM, scid.data, scid.datalen) != 0) return;
  if (options_.cid_prefix) scid.data[0] = *options_.cid_prefix;
  std::array<uint8_t, NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN> token;
  ngtcp2_ssize tokenlen = ngtcp2_crypto_generate_retry_token(
      token.data(), token_secret_.data(), token_secret_.size(), hd.version, remote.get(),
      remote.len, &scid, &hd.dcid, now);
  if (tokenlen < 0) return;
  // Never larger than the Initial it answers (about 140 bytes against at least 1200).
  std::vector<uint8_t> buf(std::min(kMaxUdpPayload, size));
  ngtcp2_ssize n = ngtcp2_crypto_write_retry(buf.data(), buf.size(), hd.version, &hd.scid, &scid,
                                             &hd.dcid, token.data(), static_cast<size_t>(tokenlen));
  if (n <= 0) return;
  buf.resize(static_cast<size_t>(n));
  out_.push_back(Datagram{local, remote, std::move(buf)});
  ++stats_.retries_sent;
  log::debug("h3_retry_sent")
      .kv("remote", remote.str())
      .kv("handshakes_in_progress", handshakes_in_progress_);
}

void QuicServer::send_stateless_reset(const uint8_t* dcid, size_t dcidlen, size_t size,
                                      const Address& local, const Address& remote, uint64_t now) {
  // A CID with another server's prefix was not issued here: our token for it would be wrong.
  if (size < kMinResetTrigger || dcidlen != kScidLen ||
      (options_.cid_prefix && dcid[0] != *options_.cid_prefix)) {
    ++stats_.datagrams_dropped;
    return;
  }
  // Token bucket: resets are smaller than what triggers them, but a flood of junk should not
  // turn into as many packets towards whatever source address it claims.
  const double rate = options_.stateless_resets_per_second;
  if (now > reset_allowance_at_) {
    reset_allowance_ =
        std::min(rate, reset_allowance_ + static_cast<double>(now - reset_allowance_at_) * rate /
                                              static_cast<double>(NGTCP2_SECONDS));
    reset_allowance_at_ = now;
  }
  if (reset_allowance_ < 1) {
    ++stats_.datagrams_dropped;
    return;
  }
  reset_allowance_ -= 1;

  ngtcp2_cid cid;
  ngtcp2_cid_init(&cid, dcid, dcidlen);
  uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN];
  std::array<uint8_t, kResetAnswerSize + 16> rand;
  if (!derive_reset_token(reset_secret_, cid, token) ||
      gnutls_rnd(GNUTLS_RND_NONCE, rand.data(), rand.size()) != 0) {
    return;
  }
  // At least 1 byte shorter than the packet (RFC 9000 §10.3.3), kMinResetTrigger - 1 at least.
  size_t len = size - 1;
  if (len > kResetAnswerSize) {
    len = std::min(len, kResetAnswerSize + rand.back() % 16);
  }
  std::vector<uint8_t> buf(len);
  ngtcp2_ssize n = ngtcp2_pkt_write_stateless_reset(buf.data(), buf.size(), token, rand.data(),
                                                    len - NGTCP2_STATELESS_RESET_TOKENLEN);
  if (n <= 0) return;
  buf.resize(static_cast<size_t>(n));
  out_.push_back(Datagram{local, remote, std::move(buf)});
  ++stats_.stateless_resets_sent;
}

void QuicServer::receive_closed(Closed& closed, size_t size) {
  ++closed.packets_in;
  closed.bytes_in += size;
  if (closed.close_packet.empty()) return;  // draining: silence
  // The 1st, 2nd, 4th, 8th... packet gets the close again (RFC 9000 §10.2.1 asks for a limit),
  // and never more than 3x what arrived in the period, whether the address was validated or not.
  if ((closed.packets_in & (closed.packets_in - 1)) != 0) return;
  if (closed.bytes_out + closed.close_packet.size() > 3 * closed.bytes_in) return;
  closed.bytes_out += closed.close_packet.size();
  out_.push_back(Datagram{closed.local, closed.remote, closed.close_packet});
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
  // A scan, linear in connections (see the header).
  uint64_t earliest = UINT64_MAX;
  for (const auto& [id, conn] : connections_) earliest = std::min(earliest, conn->expiry());
  for (const auto& [seq, closed] : closed_) earliest = std::min(earliest, closed->until);
  return earliest;
}

void QuicServer::handle_expiry(uint64_t now) {
  reap_closed(now);
  std::vector<Connection*> due;
  for (const auto& [id, conn] : connections_) {
    if (conn->expiry() <= now) due.push_back(conn.get());
  }
  for (Connection* conn : due) {
    conn->handle_expiry(now);
    if (conn->dead()) reap(conn);
  }
}

void QuicServer::flush(uint64_t now) {
  // Writing may make more connections dirty (a stream closing): loop until quiet.
  while (!dirty_.empty()) {
    std::vector<uint64_t> dirty;
    dirty.swap(dirty_);
    for (uint64_t id : dirty) {
      Connection* conn = find(id);
      if (conn == nullptr) continue;  // reaped meanwhile
      conn->clear_dirty();
      conn->write(now);
      if (conn->dead()) reap(conn);
    }
  }
}

Connection* QuicServer::find(uint64_t conn_id) const {
  auto it = connections_.find(conn_id);
  return it == connections_.end() ? nullptr : it->second.get();
}

Result<bool> QuicServer::submit_response(uint64_t conn_id, int64_t stream_id,
                                         const http::ResponseHead& head, bool end_stream) {
  Connection* c = find(conn_id);
  if (c == nullptr) return make_error("connection is gone");
  return c->submit_response(stream_id, head, end_stream);
}

Result<size_t> QuicServer::send_data(uint64_t conn_id, int64_t stream_id, std::string_view data) {
  Connection* c = find(conn_id);
  if (c == nullptr) return make_error("connection is gone");
  return c->send_data(stream_id, data);
}

Result<bool> QuicServer::end_stream(uint64_t conn_id, int64_t stream_id,
                                    std::optional<http::HeaderMap> trailers) {
  Connection* c = find(conn_id);
  if (c == nullptr) return make_error("connection is gone");
  return c->end_stream(stream_id, std::move(trailers));
}

void QuicServer::consume(uint64_t conn_id, int64_t stream_id, size_t n) {
  if (Connection* c = find(conn_id)) c->consume(stream_id, n);
}

void QuicServer::reset_stream(uint64_t conn_id, int64_t stream_id, uint64_t app_error_code) {
  if (Connection* c = find(conn_id)) c->reset_stream(stream_id, app_error_code);
}

void QuicServer::stop_reading(uint64_t conn_id, int64_t stream_id) {
  if (Connection* c = find(conn_id)) c->stop_reading(stream_id);
}

void QuicServer::shutdown_graceful(uint64_t now) {
  shutting_down_ = true;
  std::vector<Connection*> all;
  for (const auto& [id, conn] : connections_) all.push_back(conn.get());
  for (Connection* conn : all) {
    conn->shutdown(now);
    if (conn->dead()) reap(conn);
  }
}

void QuicServer::close_all(uint64_t now) {
  shutting_down_ = true;
  std::vector<Connection*> all;
  for (const auto& [id, conn] : connections_) all.push_back(conn.get());
  for (Connection* conn : all) {
    conn->close_now(now);
    reap(conn);
  }
}

void QuicServer::reap(Connection* conn) {
  for (const std::string& cid : conn->cids()) {
    if (auto it = cids_.find(cid); it != cids_.end() && it->second == conn) cids_.erase(it);
  }
  // Taken out of the table first: the handler may call back (and must find nothing).
  auto it = connections_.find(conn->id());
  if (it == connections_.end()) return;
  std::unique_ptr<Connection> owned = std::move(it->second);
  connections_.erase(it);
  owned->uncount_handshake();
  if (owned->period_end() != 0) {
    // Its CIDs stay known until the closing or draining period ends; the rest goes now.
    auto closed = std::make_unique<Closed>();
    closed->until = owned->period_end();
    if (auto& d = owned->close_datagram()) {
      closed->local = d->local;
      closed->remote = d->remote;
      closed->close_packet = std::move(d->data);
    }
    for (const std::string& cid : owned->cids()) {
      if (closed_cids_.try_emplace(cid, closed.get()).second) closed->cids.push_back(cid);
    }
    closed_.emplace(++closed_seq_, std::move(closed));
  }
  // The handler hears now, not when the period ends: nothing can happen on its streams.
  owned->abandon_streams();
  options_.handler->on_connection_closed(owned->id());
}

void QuicServer::reap_closed(uint64_t now) {
  for (auto it = closed_.begin(); it != closed_.end();) {
    if (it->second->until > now) {
      ++it;
      continue;
    }
    for (const std::string& cid : it->second->cids) closed_cids_.erase(cid);
    it = closed_.erase(it);
  }
}

bool QuicServer::add_cid(std::string cid, Connection* conn) {
  return cids_.try_emplace(std::move(cid), conn).second;
}

void QuicServer::remove_cid(const std::string& cid) {
  cids_.erase(cid);
}

}  // namespace hsp::h3
