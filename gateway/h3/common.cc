#include "h3/common.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include <array>
#include <chrono>

namespace hsp::h3 {

uint64_t now_ns() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

nghttp3_nv make_nv(std::string_view name, std::string_view value, bool copy) {
  const uint8_t flags =
      copy ? NGHTTP3_NV_FLAG_NONE : NGHTTP3_NV_FLAG_NO_COPY_NAME | NGHTTP3_NV_FLAG_NO_COPY_VALUE;
  return nghttp3_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                    value.size(), flags};
}

void set_crypto_callbacks(ngtcp2_callbacks& cb) {
  cb.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
  cb.encrypt = ngtcp2_crypto_encrypt_cb;
  cb.decrypt = ngtcp2_crypto_decrypt_cb;
  cb.hp_mask = ngtcp2_crypto_hp_mask_cb;
  cb.update_key = ngtcp2_crypto_update_key_cb;
  cb.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
  cb.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
  cb.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
  cb.version_negotiation = ngtcp2_crypto_version_negotiation_cb;
}

int set_h3_alpn(gnutls_session_t session) {
  gnutls_datum_t alpn{reinterpret_cast<unsigned char*>(const_cast<char*>("h3")), 2};
  return gnutls_alpn_set_protocols(session, &alpn, 1, GNUTLS_ALPN_MANDATORY);
}

void rand_nonce(uint8_t* dest, size_t len, const ngtcp2_rand_ctx*) {
  gnutls_rnd(GNUTLS_RND_NONCE, dest, len);
}

void extend_credit(ngtcp2_conn* conn, int64_t stream_id, uint64_t n) {
  ngtcp2_conn_extend_max_stream_offset(conn, stream_id, n);
  ngtcp2_conn_extend_max_offset(conn, n);
}

int stop_reading(ngtcp2_conn* conn, int64_t stream_id, uint64_t app_error_code) {
  return ngtcp2_conn_shutdown_stream_read(conn, stream_id, app_error_code) == 0
             ? 0
             : NGHTTP3_ERR_CALLBACK_FAILURE;
}

int stop_writing(ngtcp2_conn* conn, int64_t stream_id, uint64_t app_error_code) {
  return ngtcp2_conn_shutdown_stream_write(conn, stream_id, app_error_code) == 0
             ? 0
             : NGHTTP3_ERR_CALLBACK_FAILURE;
}

int shutdown_h3_read(nghttp3_conn* h3, int64_t stream_id) {
  if (h3 != nullptr && nghttp3_conn_shutdown_stream_read(h3, stream_id) != 0) {
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

int unblock_h3_stream(nghttp3_conn* h3, int64_t stream_id) {
  if (h3 != nullptr && nghttp3_conn_unblock_stream(h3, stream_id) != 0) {
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

nghttp3_settings h3_settings() {
  nghttp3_settings settings;
  nghttp3_settings_default(&settings);
  settings.qpack_max_dtable_capacity = 4096;
  settings.qpack_blocked_streams = 100;
  return settings;
}

bool open_h3_local_streams(ngtcp2_conn* conn, nghttp3_conn* h3) {
  int64_t ctrl, enc, dec;
  return ngtcp2_conn_open_uni_stream(conn, &ctrl, nullptr) == 0 &&
         nghttp3_conn_bind_control_stream(h3, ctrl) == 0 &&
         ngtcp2_conn_open_uni_stream(conn, &enc, nullptr) == 0 &&
         ngtcp2_conn_open_uni_stream(conn, &dec, nullptr) == 0 &&
         nghttp3_conn_bind_qpack_streams(h3, enc, dec) == 0;
}

namespace {

// Tells nghttp3 how many bytes of a stream ngtcp2 took; 0 or an nghttp3 error.
int add_write_offset(nghttp3_conn* h3, int64_t stream_id, ngtcp2_ssize n) {
  if (h3 == nullptr || stream_id < 0) return 0;
  return nghttp3_conn_add_write_offset(h3, stream_id, static_cast<size_t>(n));
}

}  // namespace

PacketWrite write_packet(ngtcp2_conn* conn, nghttp3_conn* h3, ngtcp2_path* path,
                         ngtcp2_pkt_info* pi, uint8_t* dest, size_t destlen, uint64_t now) {
  std::array<nghttp3_vec, 16> vec;
  PacketWrite out;
  for (;;) {
    int64_t stream_id = -1;
    int fin = 0;
    nghttp3_ssize nvec = 0;
    // With no connection credit left nghttp3's data could not go out: only ACKs and the like.
    if (h3 != nullptr && ngtcp2_conn_get_max_data_left(conn) > 0) {
      nvec = nghttp3_conn_writev_stream(h3, &stream_id, &fin, vec.data(), vec.size());
      if (nvec < 0) {
        out.h3_error = static_cast<int>(nvec);
        return out;
      }
    }
    uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE | (fin ? NGTCP2_WRITE_STREAM_FLAG_FIN : 0);
    ngtcp2_ssize accepted = -1;
    ngtcp2_ssize n = ngtcp2_conn_writev_stream(
        conn, path, pi, dest, destlen, &accepted, flags, stream_id,
        reinterpret_cast<const ngtcp2_vec*>(vec.data()), static_cast<size_t>(nvec), now);
    if (n < 0) {
      if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
        nghttp3_conn_block_stream(h3, stream_id);
        continue;
      }
      if (n == NGTCP2_ERR_STREAM_SHUT_WR) {
        nghttp3_conn_shutdown_stream_write(h3, stream_id);
        continue;
      }
      if (n == NGTCP2_ERR_WRITE_MORE) {
        // The packet has room for more: the frame went in, pull the next stream's data.
        out.h3_error = add_write_offset(h3, stream_id, accepted);
        if (out.failed()) return out;
        continue;
      }
      out.quic_error = static_cast<int>(n);
      return out;
    }
    if (accepted >= 0) {
      out.h3_error = add_write_offset(h3, stream_id, accepted);
      if (out.failed()) return out;
    }
    out.size = static_cast<size_t>(n);
    return out;
  }
}

}  // namespace hsp::h3
