// What the QUIC + HTTP/3 code of both roles shares: the gateway's server (h3/quic_server.cc)
// and hsp-bench's client (bench/load/h3_connection.cc) glue ngtcp2 0.12 (GnuTLS crypto helper)
// and nghttp3 0.8 together the same way. Only what is the same on both sides lives here; what
// depends on the role (accepting vs connecting, the TLS priorities, what ends a connection and
// how it is reported) stays with each role.
#pragma once

#include <gnutls/gnutls.h>
#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace hsp::h3 {

// Steady-clock nanoseconds: ngtcp2's timestamps on both sides.
uint64_t now_ns();

// A header field over `name` and `value`. Without `copy`, nghttp3 keeps pointing into them:
// they must outlive the submission, i.e. until nghttp3 has encoded the header block. With it,
// nghttp3 copies them (for strings that end with the call).
nghttp3_nv make_nv(std::string_view name, std::string_view value, bool copy = false);

// The ngtcp2 callbacks that are the GnuTLS crypto helper's on both roles (keys, AEAD, header
// protection, key update, path challenge, version negotiation). The role's own initial
// callback (client_initial / recv_client_initial) and recv_retry are set by the caller.
void set_crypto_callbacks(ngtcp2_callbacks& cb);

// Offers (client) or accepts (server) only ALPN "h3", mandatory; a GnuTLS result code.
int set_h3_alpn(gnutls_session_t session);

// ngtcp2's `rand` callback: nonces from GnuTLS.
void rand_nonce(uint8_t* dest, size_t len, const ngtcp2_rand_ctx* ctx);

// Gives `n` bytes of flow-control credit back on a stream and on the connection, once the
// application has consumed them.
void extend_credit(ngtcp2_conn* conn, int64_t stream_id, uint64_t n);

// nghttp3 asks the QUIC layer to stop reading / writing a stream; the result is what nghttp3's
// stop_sending / reset_stream callbacks return.
int stop_reading(ngtcp2_conn* conn, int64_t stream_id, uint64_t app_error_code);
int stop_writing(ngtcp2_conn* conn, int64_t stream_id, uint64_t app_error_code);

// QUIC tells HTTP/3 that the peer no longer sends / reads a stream; the result is what ngtcp2's
// stream_reset / stream_stop_sending callbacks return. h3 may be null (HTTP/3 not set up yet).
int shutdown_h3_read(nghttp3_conn* h3, int64_t stream_id);

// ngtcp2 allows more data on a stream nghttp3 had to block; the result is what ngtcp2's
// extend_max_stream_data callback returns. h3 may be null.
int unblock_h3_stream(nghttp3_conn* h3, int64_t stream_id);

// nghttp3's settings on both roles: a 4 KiB QPACK dynamic table, up to 100 streams blocked on it.
nghttp3_settings h3_settings();

// Opens this endpoint's HTTP/3 control stream and QPACK encoder/decoder streams (RFC 9114 §6.2,
// RFC 9204 §4.2) and binds them to nghttp3; false on any failure.
bool open_h3_local_streams(ngtcp2_conn* conn, nghttp3_conn* h3);

// The outcome of write_packet: a packet of `size` bytes (0: nothing to send now, or blocked by
// congestion control, pacing or anti-amplification), or the error that ends the connection.
// At most one of h3_error (an nghttp3 error code) and quic_error (an ngtcp2 one) is set.
struct PacketWrite {
  size_t size = 0;
  int h3_error = 0;
  int quic_error = 0;
  bool failed() const { return h3_error != 0 || quic_error != 0; }
};

// Packs the next QUIC packet into dest[0, destlen): pulls stream data from nghttp3 (h3 may be
// null before HTTP/3 is set up) and coalesces frames with ngtcp2_conn_writev_stream, telling
// nghttp3 what was accepted, which streams are blocked and which are shut. `path` and `pi` may
// be null (a connected socket needs neither). The caller sends the packet, calls again until
// size is 0 or its batch is full, then calls ngtcp2_conn_update_pkt_tx_time.
PacketWrite write_packet(ngtcp2_conn* conn, nghttp3_conn* h3, ngtcp2_path* path,
                         ngtcp2_pkt_info* pi, uint8_t* dest, size_t destlen, uint64_t now);

}  // namespace hsp::h3
