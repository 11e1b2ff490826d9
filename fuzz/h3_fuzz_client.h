// The in-memory QUIC client of the HTTP/3 server fuzz target (h3_server_fuzz.cc): ngtcp2 0.12 +
// GnuTLS, no socket, no HTTP/3 library. It completes a handshake with a QuicServer through
// datagrams the target hands across, then writes whatever bytes it is given on the streams it
// opens (raw HTTP/3 frames, or anything else), and keeps what the server sends on each stream.
// Adapted from the MemoryClient of tests/unit/h3/quic_server_test.cc, with two differences that
// matter under ASan: the clock is the caller's (simulated), and stream bytes stay allocated until
// the stream closes (ngtcp2 keeps pointing at them for retransmission until acknowledged).
#pragma once

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "h3/common.h"
#include "h3/quic_server.h"

namespace h3fuzz {

using hsp::h3::Address;

class Client {
 public:
  struct RecvStream {
    std::string data;  // what the server sent on it (raw HTTP/3 frames)
    bool fin = false;
    bool reset = false;  // RESET_STREAM from the server
    uint64_t reset_code = 0;
    bool closed = false;  // ngtcp2 closed it (both directions done)
  };

  // alpn empty: no ALPN extension at all. stream_window: what the server may send on a request
  // stream before this client's credit comes back (which it gives as soon as bytes arrive).
  Client(std::vector<std::string> alpn, const Address& local, const Address& remote,
         std::string sni = "x.test", uint64_t stream_window = 256 << 10)
      : alpn_(std::move(alpn)),
        sni_(std::move(sni)),
        stream_window_(stream_window),
        local_(local),
        remote_(remote) {
    conn_ref_ = {&Client::get_conn, this};
  }
  ~Client() {
    if (conn_ != nullptr) ngtcp2_conn_del(conn_);
    if (tls_ != nullptr) gnutls_deinit(tls_);
    if (cred_ != nullptr) gnutls_certificate_free_credentials(cred_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool start(uint64_t now) {
    ngtcp2_callbacks cb{};
    hsp::h3::set_crypto_callbacks(cb);
    cb.client_initial = ngtcp2_crypto_client_initial_cb;
    cb.recv_retry = ngtcp2_crypto_recv_retry_cb;
    cb.rand = hsp::h3::rand_nonce;
    cb.get_new_connection_id = [](ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token, size_t cidlen,
                                  void*) {
      gnutls_rnd(GNUTLS_RND_NONCE, cid->data, cidlen);
      cid->datalen = cidlen;
      gnutls_rnd(GNUTLS_RND_NONCE, token, NGTCP2_STATELESS_RESET_TOKENLEN);
      return 0;
    };
    cb.handshake_completed = [](ngtcp2_conn*, void* user_data) {
      self(user_data)->handshake_completed_ = true;
      return 0;
    };
    cb.recv_stream_data = [](ngtcp2_conn* conn, uint32_t flags, int64_t stream_id, uint64_t,
                             const uint8_t* data, size_t len, void* user_data, void*) {
      RecvStream& st = self(user_data)->recv_[stream_id];
      st.data.append(reinterpret_cast<const char*>(data), len);
      if (flags & NGTCP2_STREAM_DATA_FLAG_FIN) st.fin = true;
      hsp::h3::extend_credit(conn, stream_id, len);
      return 0;
    };
    cb.stream_reset = [](ngtcp2_conn*, int64_t stream_id, uint64_t, uint64_t app_error_code,
                         void* user_data, void*) {
      RecvStream& st = self(user_data)->recv_[stream_id];
      st.reset = true;
      st.reset_code = app_error_code;
      return 0;
    };
    cb.stream_close = [](ngtcp2_conn*, uint32_t, int64_t stream_id, uint64_t, void* user_data,
                         void*) {
      Client* c = self(user_data);
      c->recv_[stream_id].closed = true;
      c->send_.erase(stream_id);  // ngtcp2 refers to its bytes no more
      return 0;
    };
    cb.recv_stateless_reset = [](ngtcp2_conn*, const ngtcp2_pkt_stateless_reset*, void* user_data) {
      self(user_data)->stateless_reset_ = true;
      return 0;
    };
    ngtcp2_cid dcid, scid;
    dcid.datalen = 16;
    scid.datalen = 16;
    gnutls_rnd(GNUTLS_RND_NONCE, dcid.data, dcid.datalen);
    gnutls_rnd(GNUTLS_RND_NONCE, scid.data, scid.datalen);
    ngtcp2_settings settings;
    ngtcp2_settings_default(&settings);
    settings.initial_ts = now;
    ngtcp2_transport_params params;
    ngtcp2_transport_params_default(&params);
    params.initial_max_streams_uni = 3;  // the server's control and QPACK streams
    params.initial_max_stream_data_uni = 64 << 10;
    params.initial_max_stream_data_bidi_local = stream_window_;  // room for the responses
    params.initial_max_data = 4 << 20;
    ngtcp2_path path = this->path();
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
        (!sni_.empty() &&
         gnutls_server_name_set(tls_, GNUTLS_NAME_DNS, sni_.data(), sni_.size()) != 0)) {
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

  // -1 when the server's stream limit (or a dead connection) allows none now.
  int64_t open_bidi() {
    int64_t id = -1;
    if (dead_ || ngtcp2_conn_open_bidi_stream(conn_, &id, nullptr) != 0) return -1;
    order_.push_back(id);
    return id;
  }
  int64_t open_uni() {
    int64_t id = -1;
    if (dead_ || ngtcp2_conn_open_uni_stream(conn_, &id, nullptr) != 0) return -1;
    order_.push_back(id);
    return id;
  }

  // Queues bytes (and the FIN) on a stream this client opened; sent by the next write().
  void append(int64_t id, std::string_view bytes, bool fin) {
    SendStream& s = send_[id];
    if (s.fin_queued) return;
    if (!bytes.empty()) s.chunks.emplace_back(bytes);
    s.fin_queued = fin;
  }

  // RESET_STREAM and STOP_SENDING (either may be left out).
  void shutdown_stream(int64_t id, uint64_t code, bool write_side, bool read_side) {
    if (dead_) return;
    if (write_side && read_side) {
      ngtcp2_conn_shutdown_stream(conn_, id, code);
    } else if (write_side) {
      ngtcp2_conn_shutdown_stream_write(conn_, id, code);
    } else if (read_side) {
      ngtcp2_conn_shutdown_stream_read(conn_, id, code);
    }
    if (write_side) {
      // Nothing more is written; the bytes stay until the stream closes, since frames in
      // flight may still point at them.
      auto it = send_.find(id);
      if (it != send_.end()) it->second.stopped = true;
    }
  }

  std::vector<std::vector<uint8_t>> write(uint64_t now) {
    std::vector<std::vector<uint8_t>> out;
    if (dead_) return out;
    constexpr size_t kMaxPackets = 256;  // per call; the rest goes on the next one
    for (size_t i = 0; i < order_.size() && out.size() < kMaxPackets; ++i) {
      if (!write_stream(order_[i], now, out, kMaxPackets)) return out;
    }
    while (out.size() < kMaxPackets) {
      std::vector<uint8_t> buf(1452);
      ngtcp2_ssize n = ngtcp2_conn_write_pkt(conn_, nullptr, nullptr, buf.data(), buf.size(), now);
      if (n < 0) {
        dead_ = true;
        break;
      }
      if (n == 0) break;
      buf.resize(static_cast<size_t>(n));
      out.push_back(std::move(buf));
    }
    // Forget the streams that are done in both directions (a long-lived connection opens many).
    std::vector<int64_t> keep;
    for (int64_t id : order_) {
      if (send_.count(id) != 0) keep.push_back(id);
    }
    order_.swap(keep);
    return out;
  }

  // ngtcp2's result: 0, NGTCP2_ERR_DRAINING when the server closed, other errors.
  int read(const std::vector<uint8_t>& data, uint64_t now) {
    if (dead_) return NGTCP2_ERR_DRAINING;
    ngtcp2_path path = this->path();
    ngtcp2_pkt_info pi{};
    int rv = ngtcp2_conn_read_pkt(conn_, &path, &pi, data.data(), data.size(), now);
    if (rv != 0) dead_ = true;
    if (rv == NGTCP2_ERR_DRAINING) closed_by_server_ = true;
    return rv;
  }

  // A CONNECTION_CLOSE (H3_NO_ERROR), as a client closing its connection sends it.
  std::vector<uint8_t> write_close(uint64_t now) {
    std::vector<uint8_t> buf(1452);
    if (dead_) return {};
    ngtcp2_connection_close_error ccerr;
    ngtcp2_connection_close_error_default(&ccerr);
    ngtcp2_connection_close_error_set_application_error(&ccerr, 0x100, nullptr, 0);
    ngtcp2_ssize n = ngtcp2_conn_write_connection_close(conn_, nullptr, nullptr, buf.data(),
                                                        buf.size(), &ccerr, now);
    dead_ = true;
    buf.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return buf;
  }

  // What the server's CONNECTION_CLOSE said (once read() returned NGTCP2_ERR_DRAINING).
  ngtcp2_connection_close_error close_error() const {
    ngtcp2_connection_close_error ccerr;
    ngtcp2_conn_get_connection_close_error(conn_, &ccerr);
    return ccerr;
  }

  uint64_t expiry() const { return dead_ ? UINT64_MAX : ngtcp2_conn_get_expiry(conn_); }
  void handle_expiry(uint64_t now) {
    if (dead_ || now < expiry()) return;
    if (ngtcp2_conn_handle_expiry(conn_, now) != 0) dead_ = true;
  }

  // The connection ID the client sends to now (one the server issued, once it answered).
  std::string dcid() const {
    const ngtcp2_cid* cid = ngtcp2_conn_get_dcid(conn_);
    return std::string(reinterpret_cast<const char*>(cid->data), cid->datalen);
  }

  // Bidirectional streams the server's MAX_STREAMS lets this client open now.
  uint64_t streams_bidi_left() const { return ngtcp2_conn_get_streams_bidi_left(conn_); }
  bool handshake_completed() const { return handshake_completed_; }
  bool dead() const { return dead_; }
  bool closed_by_server() const { return closed_by_server_; }
  bool stateless_reset_received() const { return stateless_reset_; }
  const Address& address() const { return local_; }
  std::map<int64_t, RecvStream>& received() { return recv_; }
  bool sending(int64_t id) const { return send_.count(id) != 0; }

 private:
  struct SendStream {
    // Each chunk's bytes stay where they are until the stream closes: ngtcp2 keeps pointers
    // into them for retransmission (std::deque never moves its elements on push_back).
    std::deque<std::string> chunks;
    size_t chunk = 0;  // the first chunk not wholly handed to ngtcp2
    size_t off = 0;    // bytes of it handed
    bool fin_queued = false;
    bool fin_sent = false;
    bool stopped = false;  // reset by us: nothing more to write
  };

  static Client* self(void* user_data) { return static_cast<Client*>(user_data); }
  static ngtcp2_conn* get_conn(ngtcp2_crypto_conn_ref* ref) {
    return static_cast<Client*>(ref->user_data)->conn_;
  }
  ngtcp2_path path() const {
    return ngtcp2_path{{const_cast<sockaddr*>(local_.get()), local_.len},
                       {const_cast<sockaddr*>(remote_.get()), remote_.len},
                       nullptr};
  }

  // False when the connection cannot write any more (dead or congested).
  bool write_stream(int64_t id, uint64_t now, std::vector<std::vector<uint8_t>>& out,
                    size_t max_packets) {
    while (out.size() < max_packets) {
      auto it = send_.find(id);
      if (it == send_.end() || it->second.stopped) return true;
      SendStream& s = it->second;
      std::vector<ngtcp2_vec> vec;
      for (size_t c = s.chunk; c < s.chunks.size() && vec.size() < 16; ++c) {
        std::string& chunk = s.chunks[c];
        size_t from = c == s.chunk ? s.off : 0;
        vec.push_back({reinterpret_cast<uint8_t*>(chunk.data()) + from, chunk.size() - from});
      }
      const bool last = s.chunks.size() - s.chunk <= 16;
      if (vec.empty() && (!s.fin_queued || s.fin_sent)) return true;
      uint32_t flags = s.fin_queued && last ? NGTCP2_WRITE_STREAM_FLAG_FIN : 0;
      std::vector<uint8_t> buf(1452);
      ngtcp2_ssize accepted = -1;
      ngtcp2_ssize n = ngtcp2_conn_writev_stream(conn_, nullptr, nullptr, buf.data(), buf.size(),
                                                 &accepted, flags, id, vec.data(), vec.size(), now);
      if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED) return true;  // flow control: later
      if (n == NGTCP2_ERR_STREAM_SHUT_WR || n == NGTCP2_ERR_STREAM_NOT_FOUND) {
        s.stopped = true;
        return true;
      }
      if (n < 0) {
        dead_ = true;
        return false;
      }
      if (n == 0) return false;  // congestion control or pacing: later
      buf.resize(static_cast<size_t>(n));
      out.push_back(std::move(buf));
      if (accepted < 0) continue;             // the packet carried other frames only
      if (send_.count(id) == 0) return true;  // closed meanwhile
      size_t left = static_cast<size_t>(accepted);
      while (left > 0 && s.chunk < s.chunks.size()) {
        size_t avail = s.chunks[s.chunk].size() - s.off;
        size_t take = std::min(avail, left);
        s.off += take;
        left -= take;
        if (s.off == s.chunks[s.chunk].size()) {
          ++s.chunk;
          s.off = 0;
        }
      }
      if (flags != 0 && s.chunk == s.chunks.size()) {
        s.fin_sent = true;
        return true;
      }
    }
    return true;
  }

  std::vector<std::string> alpn_;
  std::string sni_;  // empty: no server_name extension
  uint64_t stream_window_;
  Address local_, remote_;
  ngtcp2_crypto_conn_ref conn_ref_;
  ngtcp2_conn* conn_ = nullptr;
  gnutls_session_t tls_ = nullptr;
  gnutls_certificate_credentials_t cred_ = nullptr;
  bool handshake_completed_ = false;
  bool stateless_reset_ = false;
  bool dead_ = false;
  bool closed_by_server_ = false;
  std::map<int64_t, RecvStream> recv_;
  std::map<int64_t, SendStream> send_;
  std::vector<int64_t> order_;  // streams with bytes to send, in the order they were opened
};

}  // namespace h3fuzz
