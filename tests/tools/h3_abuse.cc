// hsp-h3-abuse: a misbehaving HTTP/3 client for the abuse tests (tests/integration/
// test_h3_abuse.py). Debian has no aioquic and gtlsclient respects every limit, so the two
// attacks the issue names are made here with the same ngtcp2 0.12 + GnuTLS + nghttp3 0.8 as the
// gateway. Only for servers the test started itself on loopback.
//
//   hsp-h3-abuse flood --connect 127.0.0.1:PORT --count N --sni NAME [--listen-ms MS]
//       N real QUIC v1 client Initials (ALPN h3, random DCID, ClientHello from GnuTLS), each from
//       its own UDP socket on 127.0.0.1 (N distinct source ports: the "spoofed" clients), never
//       answering anything; then listens MS ms (default 1000) after the last one and prints
//       what each socket got first: a Retry (long header type 3, addressed to our SCID),
//       an Initial or Handshake packet (the server started a handshake), a Version Negotiation,
//       anything else, or nothing. N <= 5000.
//
//   hsp-h3-abuse streams --connect 127.0.0.1:PORT --sni NAME --authority A --count M
//                        [--path P] [--timeout-ms MS]
//       Completes a handshake (h3), then opens M bidirectional streams at once, a GET request
//       HEADERS frame on each, whatever the server's initial_max_streams_bidi: the client's
//       ngtcp2 is told the server allows max(M, its real limit) (see on_tp_recv), so it opens
//       streams the server never allowed. Reads until the server closes the connection, every
//       response is in, or MS ms (default 10000), and prints how it ended: the server's
//       CONNECTION_CLOSE (transport or application, code and name; STREAM_LIMIT_ERROR is 0x4)
//       and the responses received before it. M <= 10000.
//
// Output: one JSON object on stdout. Exit 0 when the run took place (whatever the server did,
// handshake timeouts included), 1 when it could not or failed on its own side (no socket, a
// local ngtcp2/nghttp3/GnuTLS error), 2 on bad arguments. Everything is bounded: the counts
// above, and each mode ends on its own deadline (flood: at most 30 s to send, then the listen
// time, at most 10 s; streams: MS, at most 60 s).
#include <arpa/inet.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "h3/common.h"

namespace {

using hsp::h3::now_ns;
using nlohmann::json;

constexpr size_t kMaxFlood = 5000;
constexpr size_t kMaxStreams = 10000;
constexpr uint64_t kFloodSendBudget = 30 * NGTCP2_SECONDS;  // generating N ClientHellos
constexpr uint64_t kMaxListen = 10 * NGTCP2_SECONDS;
constexpr uint64_t kMaxTimeout = 60 * NGTCP2_SECONDS;
constexpr size_t kMaxUdpPayload = 1452;  // what we send; receive slots are larger
constexpr size_t kRecvSlot = 2048;
constexpr size_t kScidLen = 17;

// QUIC transport error codes (RFC 9000 §20.1), for the report.
std::string transport_error_name(uint64_t code) {
  static constexpr const char* kNames[] = {"NO_ERROR",
                                           "INTERNAL_ERROR",
                                           "CONNECTION_REFUSED",
                                           "FLOW_CONTROL_ERROR",
                                           "STREAM_LIMIT_ERROR",
                                           "STREAM_STATE_ERROR",
                                           "FINAL_SIZE_ERROR",
                                           "FRAME_ENCODING_ERROR",
                                           "TRANSPORT_PARAMETER_ERROR",
                                           "CONNECTION_ID_LIMIT_ERROR",
                                           "PROTOCOL_VIOLATION",
                                           "INVALID_TOKEN",
                                           "APPLICATION_ERROR",
                                           "CRYPTO_BUFFER_EXCEEDED",
                                           "KEY_UPDATE_ERROR",
                                           "AEAD_LIMIT_REACHED",
                                           "NO_VIABLE_PATH"};
  if (code < std::size(kNames)) return kNames[code];
  if (code >= 0x100 && code <= 0x1ff) return "CRYPTO_ERROR";
  return "UNKNOWN";
}

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// --- command line ----------------------------------------------------------------------------

struct Args {
  std::string mode;
  sockaddr_in target{};
  bool have_target = false;
  std::string sni;
  std::string authority;
  std::string path = "/";
  size_t count = 0;
  uint64_t listen_ns = 1 * NGTCP2_SECONDS;
  uint64_t timeout_ns = 10 * NGTCP2_SECONDS;
};

[[noreturn]] void usage(const std::string& why) {
  if (!why.empty()) std::fprintf(stderr, "hsp-h3-abuse: %s\n", why.c_str());
  std::fprintf(stderr,
               "usage: hsp-h3-abuse flood --connect 127.0.0.1:PORT --count N --sni NAME "
               "[--listen-ms MS]\n"
               "       hsp-h3-abuse streams --connect 127.0.0.1:PORT --sni NAME --authority A "
               "--count M [--path P] [--timeout-ms MS]\n"
               "Only IPv4 loopback targets (127.0.0.0/8). N <= %zu, M <= %zu.\n",
               kMaxFlood, kMaxStreams);
  std::exit(2);
}

bool parse_u64(std::string_view s, uint64_t& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

Args parse_args(int argc, char** argv) {
  if (argc < 2) usage("");
  Args a;
  a.mode = argv[1];
  if (a.mode != "flood" && a.mode != "streams") usage("unknown mode " + a.mode);
  for (int i = 2; i < argc; ++i) {
    std::string_view opt = argv[i];
    if (i + 1 >= argc) usage("missing value for " + std::string(opt));
    std::string_view val = argv[++i];
    uint64_t n = 0;
    if (opt == "--connect") {
      auto colon = val.rfind(':');
      if (colon == std::string_view::npos || !parse_u64(val.substr(colon + 1), n) || n == 0 ||
          n > 65535) {
        usage("--connect wants IPV4:PORT");
      }
      std::string host(val.substr(0, colon));
      a.target.sin_family = AF_INET;
      a.target.sin_port = htons(static_cast<uint16_t>(n));
      if (inet_pton(AF_INET, host.c_str(), &a.target.sin_addr) != 1) {
        usage("--connect wants an IPv4 address");
      }
      // The network rule: never anything but loopback.
      if ((ntohl(a.target.sin_addr.s_addr) >> 24) != 127) usage("--connect must be 127.0.0.0/8");
      a.have_target = true;
    } else if (opt == "--count") {
      if (!parse_u64(val, n) || n == 0) usage("--count wants a positive number");
      a.count = n;
    } else if (opt == "--sni") {
      a.sni = val;
    } else if (opt == "--authority") {
      a.authority = val;
    } else if (opt == "--path") {
      a.path = val;
    } else if (opt == "--listen-ms") {
      if (!parse_u64(val, n)) usage("--listen-ms wants a number");
      a.listen_ns = std::min(n * NGTCP2_MILLISECONDS, kMaxListen);
    } else if (opt == "--timeout-ms") {
      if (!parse_u64(val, n) || n == 0) usage("--timeout-ms wants a positive number");
      a.timeout_ns = std::min(n * NGTCP2_MILLISECONDS, kMaxTimeout);
    } else {
      usage("unknown option " + std::string(opt));
    }
  }
  if (!a.have_target) usage("--connect is required");
  if (a.count == 0) usage("--count is required");
  if (a.mode == "flood" && a.count > kMaxFlood) usage("--count: at most 5000 Initials");
  if (a.mode == "streams" && a.count > kMaxStreams) usage("--count: at most 10000 streams");
  if (a.mode == "streams" && a.authority.empty()) usage("--authority is required");
  return a;
}

// --- one QUIC client connection ----------------------------------------------------------------

// A client connection on a connected UDP socket. The TLS glue is ours instead of
// ngtcp2_crypto_gnutls_configure_client_session(): the same three GnuTLS hooks (secrets, handshake
// messages, alerts) and the quic_transport_parameters extension, so that the server's transport
// parameters pass through on_tp_recv, where streams mode raises initial_max_streams_bidi before
// ngtcp2 sees it. Nothing else differs from a well-behaved client.
class Client {
 public:
  explicit Client(int fd) : fd_(fd), ref_{&Client::get_conn, this} {}
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client() {
    if (h3_ != nullptr) nghttp3_conn_del(h3_);
    if (conn_ != nullptr) ngtcp2_conn_del(conn_);
    if (tls_ != nullptr) gnutls_deinit(tls_);
  }

  // Streams mode: the server's initial_max_streams_bidi as ngtcp2 will believe it (at least).
  void claim_streams(uint64_t n) { claimed_streams_ = n; }
  // Streams mode: requests are opened once the handshake completes.
  void set_requests(size_t count, std::string authority, std::string path) {
    wanted_ = count;
    authority_ = std::move(authority);
    path_str_ = std::move(path);
  }

  bool init(const sockaddr_in& local, const sockaddr_in& remote, const std::string& sni,
            gnutls_certificate_credentials_t cred, std::string& error) {
    local_ = local;
    remote_ = remote;
    path_.local = {reinterpret_cast<ngtcp2_sockaddr*>(&local_), sizeof local_};
    path_.remote = {reinterpret_cast<ngtcp2_sockaddr*>(&remote_), sizeof remote_};

    ngtcp2_callbacks cb{};
    hsp::h3::set_crypto_callbacks(cb);
    cb.client_initial = ngtcp2_crypto_client_initial_cb;
    cb.recv_retry = ngtcp2_crypto_recv_retry_cb;
    cb.rand = hsp::h3::rand_nonce;
    cb.get_new_connection_id = &Client::on_new_cid;
    cb.handshake_completed = &Client::on_handshake_completed;
    cb.recv_rx_key = &Client::on_recv_rx_key;
    cb.recv_stream_data = &Client::on_recv_stream_data;
    cb.acked_stream_data_offset = &Client::on_acked_stream_data_offset;
    cb.stream_close = &Client::on_stream_close;
    cb.stream_reset = &Client::on_stream_reset;
    cb.stream_stop_sending = &Client::on_stream_stop_sending;
    cb.extend_max_stream_data = &Client::on_extend_max_stream_data;

    // A random DCID of 8..20 bytes (RFC 9000 §7.2: at least 8 for the first Initial).
    ngtcp2_cid dcid;
    uint8_t len_byte = 0;
    if (gnutls_rnd(GNUTLS_RND_NONCE, &len_byte, 1) != 0) return fail(error, "no randomness");
    dcid.datalen = NGTCP2_MIN_INITIAL_DCIDLEN + len_byte % (NGTCP2_MAX_CIDLEN - 7);
    scid_.datalen = kScidLen;
    if (gnutls_rnd(GNUTLS_RND_NONCE, dcid.data, dcid.datalen) != 0 ||
        gnutls_rnd(GNUTLS_RND_NONCE, scid_.data, scid_.datalen) != 0) {
      return fail(error, "no randomness");
    }

    ngtcp2_settings settings;
    ngtcp2_settings_default(&settings);
    settings.initial_ts = now_ns();
    settings.handshake_timeout = 10 * NGTCP2_SECONDS;
    settings.max_tx_udp_payload_size = kMaxUdpPayload;

    ngtcp2_transport_params params;
    ngtcp2_transport_params_default(&params);
    params.initial_max_stream_data_bidi_local = 1 << 20;
    params.initial_max_stream_data_uni = 256 << 10;
    params.initial_max_data = 16 << 20;
    params.initial_max_streams_bidi = 0;
    params.initial_max_streams_uni = 16;
    params.max_idle_timeout = 30 * NGTCP2_SECONDS;
    params.active_connection_id_limit = 4;

    int rv = ngtcp2_conn_client_new(&conn_, &dcid, &scid_, &path_, NGTCP2_PROTO_VER_V1, &cb,
                                    &settings, &params, nullptr, this);
    if (rv != 0) return fail(error, std::string("ngtcp2_conn_client_new: ") + ngtcp2_strerror(rv));

    rv = gnutls_init(&tls_, GNUTLS_CLIENT | GNUTLS_NO_END_OF_EARLY_DATA);
    if (rv == 0) {
      rv = gnutls_priority_set_direct(
          tls_, "NORMAL:-VERS-ALL:+VERS-TLS1.3:%DISABLE_TLS13_COMPAT_MODE", nullptr);
    }
    if (rv == 0) rv = gnutls_credentials_set(tls_, GNUTLS_CRD_CERTIFICATE, cred);
    if (rv == 0 && !sni.empty()) {
      rv = gnutls_server_name_set(tls_, GNUTLS_NAME_DNS, sni.data(), sni.size());
    }
    if (rv == 0) rv = hsp::h3::set_h3_alpn(tls_);
    if (rv == 0) {
      gnutls_handshake_set_secret_function(tls_, &Client::on_secret);
      gnutls_handshake_set_read_function(tls_, &Client::on_handshake_read);
      gnutls_alert_set_read_function(tls_, &Client::on_alert_read);
      rv = gnutls_session_ext_register(
          tls_, "QUIC Transport Parameters", NGTCP2_TLSEXT_QUIC_TRANSPORT_PARAMETERS_V1,
          GNUTLS_EXT_TLS, &Client::on_tp_recv, &Client::on_tp_send, nullptr, nullptr, nullptr,
          GNUTLS_EXT_FLAG_TLS | GNUTLS_EXT_FLAG_CLIENT_HELLO | GNUTLS_EXT_FLAG_EE);
    }
    if (rv != 0) return fail(error, std::string("gnutls: ") + gnutls_strerror(rv));
    // No certificate verification: this client attacks, it does not trust.
    gnutls_session_set_ptr(tls_, &ref_);
    ngtcp2_conn_set_tls_native_handle(conn_, tls_);
    return true;
  }

  const ngtcp2_cid& scid() const { return scid_; }

  // Writes what ngtcp2/nghttp3 have to send and sends it; false once the connection failed.
  bool write(std::string& error) {
    std::array<uint8_t, kMaxUdpPayload> buf;
    const uint64_t ts = now_ns();
    for (int i = 0; i < 256; ++i) {
      hsp::h3::PacketWrite w =
          hsp::h3::write_packet(conn_, h3_, nullptr, nullptr, buf.data(), buf.size(), ts);
      if (w.failed()) {
        error = w.h3_error != 0 ? std::string("nghttp3: ") + nghttp3_strerror(w.h3_error)
                                : std::string("ngtcp2 write: ") + ngtcp2_strerror(w.quic_error);
        return false;
      }
      if (w.size == 0) break;
      // A full socket buffer drops the packet; QUIC's loss recovery covers it (streams mode),
      // and the flood reports it.
      if (::send(fd_, buf.data(), w.size, 0) < 0) {
        ++send_errors_;
      } else {
        ++packets_sent_;
      }
    }
    ngtcp2_conn_update_pkt_tx_time(conn_, ts);
    return true;
  }

  // One received datagram; the result of ngtcp2_conn_read_pkt.
  int read(const uint8_t* data, size_t len) {
    ngtcp2_pkt_info pi{};
    return ngtcp2_conn_read_pkt(conn_, &path_, &pi, data, len, now_ns());
  }

  int handle_expiry() { return ngtcp2_conn_handle_expiry(conn_, now_ns()); }
  uint64_t expiry() const { return ngtcp2_conn_get_expiry(conn_); }
  ngtcp2_conn* conn() const { return conn_; }

  bool handshake_done() const { return handshake_done_; }
  uint64_t real_server_streams() const { return real_server_streams_; }
  size_t opened() const { return opened_; }
  size_t responses() const { return responses_; }
  size_t resets() const { return resets_; }
  size_t send_errors() const { return send_errors_; }
  size_t packets_sent() const { return packets_sent_; }
  const std::map<int, size_t>& statuses() const { return statuses_; }
  const std::string& open_error() const { return open_error_; }

  // Streams mode, after the handshake: every request at once, beyond the server's limit.
  bool open_requests() {
    const std::string_view kMethod = ":method", kScheme = ":scheme", kAuthority = ":authority",
                           kPath = ":path", kUa = "user-agent";
    const std::array<nghttp3_nv, 5> nva = {
        hsp::h3::make_nv(kMethod, "GET"), hsp::h3::make_nv(kScheme, "https"),
        hsp::h3::make_nv(kAuthority, authority_), hsp::h3::make_nv(kPath, path_str_),
        hsp::h3::make_nv(kUa, "hsp-h3-abuse")};
    for (size_t i = 0; i < wanted_; ++i) {
      int64_t id = -1;
      int rv = ngtcp2_conn_open_bidi_stream(conn_, &id, nullptr);
      if (rv != 0) {
        open_error_ = std::string("ngtcp2_conn_open_bidi_stream: ") + ngtcp2_strerror(rv);
        break;
      }
      rv = nghttp3_conn_submit_request(h3_, id, nva.data(), nva.size(), nullptr, nullptr);
      if (rv != 0) {
        open_error_ = std::string("nghttp3_conn_submit_request: ") + nghttp3_strerror(rv);
        break;
      }
      ++opened_;
    }
    return opened_ > 0;
  }

 private:
  static ngtcp2_conn* get_conn(ngtcp2_crypto_conn_ref* ref) {
    return static_cast<Client*>(ref->user_data)->conn_;
  }
  static Client* from(gnutls_session_t s) {
    auto* ref = static_cast<ngtcp2_crypto_conn_ref*>(gnutls_session_get_ptr(s));
    return static_cast<Client*>(ref->user_data);
  }
  static bool fail(std::string& error, std::string what) {
    error = std::move(what);
    return false;
  }

  // --- GnuTLS hooks (QUIC's use of TLS, RFC 9001 §4) ---

  static int on_secret(gnutls_session_t s, gnutls_record_encryption_level_t level,
                       const void* rx_secret, const void* tx_secret, size_t len) {
    Client* c = from(s);
    auto lvl = ngtcp2_crypto_gnutls_from_gnutls_record_encryption_level(level);
    if (rx_secret != nullptr &&
        ngtcp2_crypto_derive_and_install_rx_key(c->conn_, nullptr, nullptr, nullptr, lvl,
                                                static_cast<const uint8_t*>(rx_secret), len) != 0) {
      return -1;
    }
    if (tx_secret != nullptr &&
        ngtcp2_crypto_derive_and_install_tx_key(c->conn_, nullptr, nullptr, nullptr, lvl,
                                                static_cast<const uint8_t*>(tx_secret), len) != 0) {
      return -1;
    }
    return 0;
  }

  static int on_handshake_read(gnutls_session_t s, gnutls_record_encryption_level_t level,
                               gnutls_handshake_description_t type, const void* data, size_t len) {
    if (type == GNUTLS_HANDSHAKE_CHANGE_CIPHER_SPEC) return 0;  // not in QUIC
    Client* c = from(s);
    int rv = ngtcp2_conn_submit_crypto_data(
        c->conn_, ngtcp2_crypto_gnutls_from_gnutls_record_encryption_level(level),
        static_cast<const uint8_t*>(data), len);
    if (rv != 0) {
      ngtcp2_conn_set_tls_error(c->conn_, rv);
      return -1;
    }
    return 0;
  }

  static int on_alert_read(gnutls_session_t s, gnutls_record_encryption_level_t,
                           gnutls_alert_level_t, gnutls_alert_description_t desc) {
    ngtcp2_conn_set_tls_alert(from(s)->conn_, static_cast<uint8_t>(desc));
    return 0;
  }

  // The server's transport parameters (EncryptedExtensions). The lie of streams mode: the
  // stream limit is raised to what we want to open before ngtcp2 gets them. The TLS transcript
  // is untouched (GnuTLS has already hashed the real bytes); only our ngtcp2 is misinformed.
  static int on_tp_recv(gnutls_session_t s, const unsigned char* data, size_t len) {
    Client* c = from(s);
    ngtcp2_transport_params params;
    int rv = ngtcp2_decode_transport_params(
        &params, NGTCP2_TRANSPORT_PARAMS_TYPE_ENCRYPTED_EXTENSIONS, data, len);
    if (rv == 0) {
      c->real_server_streams_ = params.initial_max_streams_bidi;
      if (c->claimed_streams_ > params.initial_max_streams_bidi) {
        params.initial_max_streams_bidi = c->claimed_streams_;
      }
      std::array<uint8_t, 1024> buf;
      ngtcp2_ssize n = ngtcp2_encode_transport_params(
          buf.data(), buf.size(), NGTCP2_TRANSPORT_PARAMS_TYPE_ENCRYPTED_EXTENSIONS, &params);
      rv = n < 0 ? static_cast<int>(n)
                 : ngtcp2_conn_decode_remote_transport_params(c->conn_, buf.data(),
                                                              static_cast<size_t>(n));
    }
    if (rv != 0) {
      ngtcp2_conn_set_tls_error(c->conn_, rv);
      return -1;
    }
    return 0;
  }

  static int on_tp_send(gnutls_session_t s, gnutls_buffer_t out) {
    std::array<uint8_t, 256> buf;
    ngtcp2_ssize n =
        ngtcp2_conn_encode_local_transport_params(from(s)->conn_, buf.data(), buf.size());
    if (n < 0) return -1;
    return gnutls_buffer_append_data(out, buf.data(), static_cast<size_t>(n)) == 0 ? 0 : -1;
  }

  // --- ngtcp2 callbacks ---

  static int on_new_cid(ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token, size_t cidlen, void*) {
    if (gnutls_rnd(GNUTLS_RND_NONCE, cid->data, cidlen) != 0 ||
        gnutls_rnd(GNUTLS_RND_NONCE, token, NGTCP2_STATELESS_RESET_TOKENLEN) != 0) {
      return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    cid->datalen = cidlen;
    return 0;
  }

  static int on_handshake_completed(ngtcp2_conn*, void* user_data) {
    static_cast<Client*>(user_data)->handshake_done_ = true;
    return 0;
  }

  static int on_recv_rx_key(ngtcp2_conn*, ngtcp2_crypto_level level, void* user_data) {
    if (level != NGTCP2_CRYPTO_LEVEL_APPLICATION) return 0;
    return static_cast<Client*>(user_data)->setup_http3() ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
  }

  bool setup_http3() {
    nghttp3_callbacks cb{};
    cb.recv_header = &Client::h3_recv_header;
    cb.end_stream = &Client::h3_end_stream;
    cb.reset_stream = &Client::h3_reset_stream;
    cb.stop_sending = &Client::h3_stop_sending;
    cb.recv_data = &Client::h3_recv_data;
    cb.deferred_consume = &Client::h3_deferred_consume;
    nghttp3_settings settings = hsp::h3::h3_settings();
    if (nghttp3_conn_client_new(&h3_, &cb, &settings, nghttp3_mem_default(), this) != 0) {
      return false;
    }
    return hsp::h3::open_h3_local_streams(conn_, h3_);
  }

  static int on_recv_stream_data(ngtcp2_conn* conn, uint32_t flags, int64_t stream_id, uint64_t,
                                 const uint8_t* data, size_t len, void* user_data, void*) {
    Client* c = static_cast<Client*>(user_data);
    if (c->h3_ == nullptr) return NGTCP2_ERR_CALLBACK_FAILURE;
    nghttp3_ssize n =
        nghttp3_conn_read_stream(c->h3_, stream_id, data, len, flags & NGTCP2_STREAM_DATA_FLAG_FIN);
    if (n < 0) return NGTCP2_ERR_CALLBACK_FAILURE;
    hsp::h3::extend_credit(conn, stream_id, static_cast<uint64_t>(n));
    return 0;
  }

  static int on_acked_stream_data_offset(ngtcp2_conn*, int64_t stream_id, uint64_t, uint64_t len,
                                         void* user_data, void*) {
    Client* c = static_cast<Client*>(user_data);
    if (c->h3_ == nullptr) return 0;
    return nghttp3_conn_add_ack_offset(c->h3_, stream_id, len) == 0 ? 0
                                                                    : NGTCP2_ERR_CALLBACK_FAILURE;
  }

  static int on_stream_close(ngtcp2_conn*, uint32_t flags, int64_t stream_id, uint64_t code,
                             void* user_data, void*) {
    Client* c = static_cast<Client*>(user_data);
    if (c->h3_ == nullptr) return 0;
    if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET)) code = NGHTTP3_H3_NO_ERROR;
    int rv = nghttp3_conn_close_stream(c->h3_, stream_id, code);
    return rv == 0 || rv == NGHTTP3_ERR_STREAM_NOT_FOUND ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
  }

  static int on_stream_reset(ngtcp2_conn*, int64_t stream_id, uint64_t, uint64_t, void* user_data,
                             void*) {
    Client* c = static_cast<Client*>(user_data);
    if (ngtcp2_is_bidi_stream(stream_id)) ++c->resets_;
    return hsp::h3::shutdown_h3_read(c->h3_, stream_id);
  }

  static int on_stream_stop_sending(ngtcp2_conn*, int64_t stream_id, uint64_t, void* user_data,
                                    void*) {
    return hsp::h3::shutdown_h3_read(static_cast<Client*>(user_data)->h3_, stream_id);
  }

  static int on_extend_max_stream_data(ngtcp2_conn*, int64_t stream_id, uint64_t, void* user_data,
                                       void*) {
    return hsp::h3::unblock_h3_stream(static_cast<Client*>(user_data)->h3_, stream_id);
  }

  // --- nghttp3 callbacks ---

  static int h3_recv_header(nghttp3_conn*, int64_t, int32_t token, nghttp3_rcbuf*,
                            nghttp3_rcbuf* value, uint8_t, void* user_data, void*) {
    if (token != NGHTTP3_QPACK_TOKEN__STATUS) return 0;
    nghttp3_vec v = nghttp3_rcbuf_get_buf(value);
    int status = 0;
    for (size_t i = 0; i < v.len && i < 3; ++i) status = status * 10 + (v.base[i] - '0');
    ++static_cast<Client*>(user_data)->statuses_[status];
    return 0;
  }

  static int h3_end_stream(nghttp3_conn*, int64_t, void* user_data, void*) {
    ++static_cast<Client*>(user_data)->responses_;
    return 0;
  }

  static int h3_recv_data(nghttp3_conn*, int64_t stream_id, const uint8_t*, size_t len,
                          void* user_data, void*) {
    hsp::h3::extend_credit(static_cast<Client*>(user_data)->conn_, stream_id, len);
    return 0;
  }

  static int h3_deferred_consume(nghttp3_conn*, int64_t stream_id, size_t n, void* user_data,
                                 void*) {
    hsp::h3::extend_credit(static_cast<Client*>(user_data)->conn_, stream_id, n);
    return 0;
  }

  static int h3_stop_sending(nghttp3_conn*, int64_t stream_id, uint64_t code, void* user_data,
                             void*) {
    return hsp::h3::stop_reading(static_cast<Client*>(user_data)->conn_, stream_id, code);
  }

  static int h3_reset_stream(nghttp3_conn*, int64_t stream_id, uint64_t code, void* user_data,
                             void*) {
    return hsp::h3::stop_writing(static_cast<Client*>(user_data)->conn_, stream_id, code);
  }

  int fd_;
  ngtcp2_crypto_conn_ref ref_;
  sockaddr_in local_{};
  sockaddr_in remote_{};
  ngtcp2_path path_{};
  ngtcp2_cid scid_{};
  ngtcp2_conn* conn_ = nullptr;
  gnutls_session_t tls_ = nullptr;
  nghttp3_conn* h3_ = nullptr;

  uint64_t claimed_streams_ = 0;
  uint64_t real_server_streams_ = 0;
  size_t wanted_ = 0;
  std::string authority_, path_str_;
  bool handshake_done_ = false;
  size_t opened_ = 0;
  size_t responses_ = 0;
  size_t resets_ = 0;
  size_t send_errors_ = 0;
  size_t packets_sent_ = 0;
  std::map<int, size_t> statuses_;
  std::string open_error_;
};

// A UDP socket on 127.0.0.1 with a port of its own, connected to the target (so it only hears
// the target, and an ICMP port unreachable shows as ECONNREFUSED). -1 on failure.
int open_socket(const sockaddr_in& target, sockaddr_in& local, std::string& error) {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::string("socket: ") + std::strerror(errno);
    return -1;
  }
  sockaddr_in loopback{};
  loopback.sin_family = AF_INET;
  loopback.sin_addr.s_addr = htonl(INADDR_LOOPBACK);  // port 0: the kernel picks
  socklen_t len = sizeof local;
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&loopback), sizeof loopback) != 0 ||
      ::connect(fd, reinterpret_cast<const sockaddr*>(&target), sizeof target) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) {
    error = std::string("udp socket: ") + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

struct Credentials {
  gnutls_certificate_credentials_t cred = nullptr;
  Credentials() { gnutls_certificate_allocate_credentials(&cred); }
  ~Credentials() {
    if (cred != nullptr) gnutls_certificate_free_credentials(cred);
  }
};

void print(const json& j) {
  std::printf("%s\n", j.dump().c_str());
}

int fail_run(const std::string& mode, const std::string& error) {
  print(json{{"mode", mode}, {"error", error}});
  return 1;
}

// --- flood -----------------------------------------------------------------------------------

// What a socket heard first, from the first byte (RFC 9000 §17: long header bit, version, type).
enum class Answer { none, retry, initial_or_handshake, version_negotiation, other };

Answer classify(const uint8_t* p, size_t len, const ngtcp2_cid& our_scid) {
  if (len < 7 || (p[0] & 0x80) == 0) return Answer::other;  // short header: not for a new client
  const uint32_t version =
      (uint32_t{p[1]} << 24) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 8) | uint32_t{p[4]};
  if (version == 0) return Answer::version_negotiation;
  if (version != NGTCP2_PROTO_VER_V1) return Answer::other;
  // A server's packet to us carries our SCID as its DCID; anything else is not an answer.
  const size_t dcidlen = p[5];
  if (dcidlen != our_scid.datalen || len < 6 + dcidlen ||
      std::memcmp(p + 6, our_scid.data, dcidlen) != 0) {
    return Answer::other;
  }
  switch ((p[0] >> 4) & 0x3) {
    case 0:  // Initial
    case 2:  // Handshake
      return Answer::initial_or_handshake;
    case 3:
      return Answer::retry;
    default:  // 0-RTT: a server never sends it
      return Answer::other;
  }
}

int run_flood(const Args& a) {
  // One descriptor per Initial, plus a margin.
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < a.count + 64) {
    rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, a.count + 64);
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  Credentials creds;
  struct Sock {
    int fd = -1;
    ngtcp2_cid scid{};
    Answer first = Answer::none;
    size_t datagrams = 0;
  };
  std::vector<Sock> socks;
  socks.reserve(a.count);
  const uint64_t start = now_ns();
  size_t send_errors = 0;
  std::string error;
  for (size_t i = 0; i < a.count && now_ns() - start < kFloodSendBudget; ++i) {
    sockaddr_in local{};
    int fd = open_socket(a.target, local, error);
    if (fd < 0) break;
    Sock s;
    s.fd = fd;
    {
      // The connection exists only long enough to produce its first Initial: we never answer.
      Client c(fd);
      if (!c.init(local, a.target, a.sni, creds.cred, error)) {
        ::close(fd);
        break;
      }
      s.scid = c.scid();
      if (!c.write(error)) {
        ::close(fd);
        break;
      }
      send_errors += c.send_errors();
    }
    socks.push_back(s);
  }
  const uint64_t sent_at = now_ns();

  // Listen: every socket, until listen_ns after the last Initial.
  std::vector<pollfd> pfds(socks.size());
  for (size_t i = 0; i < socks.size(); ++i) pfds[i] = {socks[i].fd, POLLIN, 0};
  std::array<uint8_t, kRecvSlot> buf;
  size_t datagrams = 0, refused = 0;
  std::map<std::string, size_t> all_kinds;
  auto kind_name = [](Answer k) {
    switch (k) {
      case Answer::retry:
        return "retry";
      case Answer::initial_or_handshake:
        return "initial_or_handshake";
      case Answer::version_negotiation:
        return "version_negotiation";
      case Answer::other:
        return "other";
      case Answer::none:
        break;
    }
    return "none";
  };
  for (;;) {
    const uint64_t now = now_ns();
    if (now >= sent_at + a.listen_ns || pfds.empty()) break;
    int wait_ms = static_cast<int>((sent_at + a.listen_ns - now) / NGTCP2_MILLISECONDS) + 1;
    int n = ::poll(pfds.data(), pfds.size(), wait_ms);
    if (n < 0 && errno != EINTR) break;
    for (size_t i = 0; i < pfds.size() && n > 0; ++i) {
      if (pfds[i].revents == 0) continue;
      for (;;) {
        ssize_t r = ::recv(pfds[i].fd, buf.data(), buf.size(), 0);
        if (r < 0) {
          if (errno == ECONNREFUSED) ++refused;
          break;
        }
        ++datagrams;
        Answer k = classify(buf.data(), static_cast<size_t>(r), socks[i].scid);
        ++all_kinds[kind_name(k)];
        if (socks[i].datagrams++ == 0) socks[i].first = k;
      }
    }
  }
  std::map<std::string, size_t> first = {{"retry", 0},
                                         {"initial_or_handshake", 0},
                                         {"version_negotiation", 0},
                                         {"other", 0},
                                         {"none", 0}};
  for (const Sock& s : socks) {
    ++first[kind_name(s.first)];
    ::close(s.fd);
  }
  json out = {{"mode", "flood"},
              {"requested", a.count},
              {"sent", socks.size()},
              {"send_errors", send_errors},
              {"send_ms", (sent_at - start) / NGTCP2_MILLISECONDS},
              {"listen_ms", a.listen_ns / NGTCP2_MILLISECONDS},
              {"first_answer", first},
              {"retry", first["retry"]},
              {"initial_or_handshake", first["initial_or_handshake"]},
              {"version_negotiation", first["version_negotiation"]},
              {"other", first["other"]},
              {"none", first["none"]},
              {"datagrams_received", datagrams},
              {"datagrams_by_kind", all_kinds},
              {"icmp_refused", refused}};
  if (socks.size() < a.count) out["error"] = error.empty() ? "send budget exhausted" : error;
  print(out);
  return socks.empty() ? 1 : 0;
}

// --- streams ---------------------------------------------------------------------------------

int run_streams(const Args& a) {
  Credentials creds;
  std::string error;
  sockaddr_in local{};
  int fd = open_socket(a.target, local, error);
  if (fd < 0) return fail_run("streams", error);
  const uint64_t start = now_ns();
  const uint64_t deadline = start + a.timeout_ns;

  json out = {{"mode", "streams"}, {"requested_streams", a.count}};
  std::string ended = "timeout";
  bool server_closed = false;
  uint64_t handshake_ms = 0;
  {
    Client c(fd);
    c.claim_streams(a.count);
    c.set_requests(a.count, a.authority, a.path);
    if (!c.init(local, a.target, a.sni, creds.cred, error)) {
      ::close(fd);
      return fail_run("streams", error);
    }
    std::array<uint8_t, kRecvSlot> buf;
    bool failed = false;
    if (!c.write(error)) {
      ended = "local_error";
      failed = true;
    }
    while (!failed) {
      const uint64_t now = now_ns();
      if (now >= deadline) break;
      if (c.handshake_done() && c.opened() == 0 && c.open_error().empty()) {
        handshake_ms = (now - start) / NGTCP2_MILLISECONDS;
        c.open_requests();
        if (!c.write(error)) {
          ended = "local_error";
          break;
        }
      }
      if (c.opened() > 0 && c.responses() + c.resets() >= c.opened()) {
        ended = "all_streams_done";  // the server served them all: it did not enforce the limit
        break;
      }
      uint64_t until = std::min(deadline, c.expiry());
      int wait_ms = until <= now ? 0 : static_cast<int>((until - now) / NGTCP2_MILLISECONDS) + 1;
      pollfd p{fd, POLLIN, 0};
      int n = ::poll(&p, 1, wait_ms);
      if (n < 0 && errno != EINTR) {
        ended = std::string("poll: ") + std::strerror(errno);
        break;
      }
      int rv = 0;
      while (rv == 0 && (p.revents & (POLLIN | POLLERR)) != 0) {
        ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
        if (r < 0) {
          if (errno == ECONNREFUSED) {
            ended = "icmp_port_unreachable";
            failed = true;
          }
          break;
        }
        rv = c.read(buf.data(), static_cast<size_t>(r));
      }
      if (failed) break;
      if (rv == NGTCP2_ERR_DRAINING) {
        server_closed = true;
        ended = "server_closed";
        break;
      }
      if (rv != 0) {
        ended = "local_error";
        error = std::string("ngtcp2 read: ") + ngtcp2_strerror(rv);
        break;
      }
      if (now_ns() >= c.expiry()) {
        rv = c.handle_expiry();
        if (rv != 0) {
          ended = rv == NGTCP2_ERR_IDLE_CLOSE || rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT ? "timeout"
                                                                                    : "local_error";
          error = std::string("ngtcp2 expiry: ") + ngtcp2_strerror(rv);
          break;
        }
      }
      if (!c.write(error)) {
        ended = "local_error";
        break;
      }
    }
    out["handshake_completed"] = c.handshake_done();
    out["handshake_ms"] = handshake_ms;
    out["server_initial_max_streams_bidi"] = c.real_server_streams();
    out["streams_opened"] = c.opened();
    out["responses"] = c.responses();
    out["streams_reset_by_server"] = c.resets();
    json statuses = json::object();
    for (const auto& [status, n] : c.statuses()) statuses[std::to_string(status)] = n;
    out["statuses"] = statuses;
    out["packets_sent"] = c.packets_sent();
    if (!c.open_error().empty()) out["open_error"] = c.open_error();
    if (server_closed) {
      ngtcp2_connection_close_error ccerr;
      ngtcp2_conn_get_connection_close_error(c.conn(), &ccerr);
      const bool app = ccerr.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION;
      out["close"] = {
          {"type", app ? "application" : "transport"},
          {"error_code", ccerr.error_code},
          {"error_code_hex", hex(ccerr.error_code)},
          {"error_name", app ? "" : transport_error_name(ccerr.error_code)},
          {"frame_type", ccerr.frame_type},
          {"reason", ccerr.reasonlen == 0 ? std::string()
                                          : std::string(reinterpret_cast<const char*>(ccerr.reason),
                                                        ccerr.reasonlen)}};
    }
  }
  ::close(fd);
  out["closed_by_server"] = server_closed;
  out["ended"] = ended;
  out["elapsed_ms"] = (now_ns() - start) / NGTCP2_MILLISECONDS;
  if (!error.empty()) out["error"] = error;
  print(out);
  return ended == "local_error" ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a = parse_args(argc, argv);
  if (gnutls_global_init() != 0) return fail_run(a.mode, "gnutls_global_init failed");
  int rc = a.mode == "flood" ? run_flood(a) : run_streams(a);
  std::fflush(stdout);
  return rc;
}
