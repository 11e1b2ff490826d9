// Helpers for the TLS tests (the ACME tests share the temporary directory and common_name(), see
// tests/unit/acme/acme_test_util.h): a temporary directory, and a complete handshake between an
// OpenSSL client and our ServerContext over an in-memory BIO pair (no sockets, no threads).
#pragma once

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>

#include <filesystem>
#include <string>
#include <vector>

#include "tls/server_context.h"

namespace hsp::tls::testing {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "hsp-test-XXXXXX").string();
    char* made = ::mkdtemp(tmpl.data());
    EXPECT_NE(made, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct ClientOptions {
  std::string sni;                // empty: no server_name extension
  std::vector<std::string> alpn;  // empty: no ALPN extension
  int min_version = 0;            // 0: library default
  int max_version = 0;
  bool legacy = false;             // security level 0, so that TLS 1.0/1.1 can be offered
  std::string ca_file;             // verify the server against this root (and its name = sni)
  SSL_SESSION* session = nullptr;  // resume this session
};

struct HandshakeResult {
  bool client_ok = false;
  bool server_ok = false;
  int alert_received = -1;  // TLS alert description the client received, -1: none
  std::string alpn;
  std::string peer_cn;  // CN of the certificate the client received
  int version = 0;
  bool reused = false;
  SSL_SESSION* session = nullptr;  // resumable session after the handshake (caller frees)
};

inline void record_alert(const SSL* ssl, int where, int ret) {
  if ((where & SSL_CB_READ_ALERT) != 0) {
    static_cast<HandshakeResult*>(SSL_get_app_data(ssl))->alert_received = ret & 0xff;
  }
}

inline std::string common_name(X509* cert) {
  if (cert == nullptr) return {};
  char buf[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof buf);
  return buf;
}

inline HandshakeResult handshake(ServerContext& server_ctx, const ClientOptions& opt) {
  HandshakeResult res;
  SSL_CTX* cctx = SSL_CTX_new(TLS_client_method());
  if (opt.legacy) {
    SSL_CTX_set_security_level(cctx, 0);
    SSL_CTX_set_cipher_list(cctx, "DEFAULT:@SECLEVEL=0");
  }
  if (opt.min_version != 0) SSL_CTX_set_min_proto_version(cctx, opt.min_version);
  if (opt.max_version != 0) SSL_CTX_set_max_proto_version(cctx, opt.max_version);
  if (!opt.ca_file.empty()) {
    EXPECT_EQ(SSL_CTX_load_verify_file(cctx, opt.ca_file.c_str()), 1);
    SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, nullptr);
  }
  SSL* client = SSL_new(cctx);
  SSL* server = SSL_new(server_ctx.native());
  SSL_set_app_data(client, &res);
  SSL_set_info_callback(client, &record_alert);
  if (!opt.sni.empty()) {
    SSL_set_tlsext_host_name(client, opt.sni.c_str());
    if (!opt.ca_file.empty()) SSL_set1_host(client, opt.sni.c_str());
  }
  if (!opt.alpn.empty()) {
    std::string wire;
    for (const auto& p : opt.alpn) wire += static_cast<char>(p.size()) + p;
    SSL_set_alpn_protos(client, reinterpret_cast<const unsigned char*>(wire.data()),
                        static_cast<unsigned>(wire.size()));
  }
  if (opt.session != nullptr) SSL_set_session(client, opt.session);

  BIO* cbio = nullptr;
  BIO* sbio = nullptr;
  BIO_new_bio_pair(&cbio, 0, &sbio, 0);
  SSL_set_bio(client, cbio, cbio);
  SSL_set_bio(server, sbio, sbio);
  SSL_set_connect_state(client);
  SSL_set_accept_state(server);

  bool client_failed = false;
  bool server_failed = false;
  // Each side runs until it blocks; a handful of rounds completes any TLS 1.2/1.3 handshake.
  for (int round = 0; round < 20; ++round) {
    if (!res.client_ok && !client_failed) {
      int rc = SSL_do_handshake(client);
      int err = SSL_get_error(client, rc);
      if (rc == 1)
        res.client_ok = true;
      else if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
        client_failed = true;
    }
    if (!res.server_ok && !server_failed) {
      int rc = SSL_do_handshake(server);
      int err = SSL_get_error(server, rc);
      if (rc == 1)
        res.server_ok = true;
      else if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
        server_failed = true;
    }
    if ((res.client_ok || client_failed) && (res.server_ok || server_failed)) break;
  }
  ERR_clear_error();

  if (res.client_ok && res.server_ok) {
    // TLS 1.3 tickets arrive after the handshake; a round trip of application data makes the
    // client process them so that its session becomes resumable.
    char buf[8];
    EXPECT_EQ(SSL_write(server, "ping", 4), 4);
    EXPECT_EQ(SSL_read(client, buf, sizeof buf), 4);
    res.alpn = std::string(ServerContext::selected_alpn(server));
    res.peer_cn = common_name(SSL_get0_peer_certificate(client));
    res.version = SSL_version(server);
    res.reused = SSL_session_reused(server) == 1;
    res.session = SSL_get1_session(client);
    // Close cleanly: OpenSSL marks the session of a connection freed without close_notify as
    // not resumable (SSL_free -> ssl_clear_bad_session).
    SSL_shutdown(client);
  }
  SSL_free(client);
  SSL_free(server);
  SSL_CTX_free(cctx);
  return res;
}

}  // namespace hsp::tls::testing
