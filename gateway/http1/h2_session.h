// Private to gateway/http1/: the HTTP/2 front end. A downstream connection becomes HTTP/2 when
// TLS negotiated ALPN "h2", or, on a cleartext listener whose server allows h2c, when the
// client opens with the HTTP/2 connection preface (prior knowledge). session.cc owns the socket,
// the TLS handshake and the final close; serve_h2 runs the HTTP/2 connection in between.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <string>
#include <string_view>

#include "http1/worker.h"

namespace hsp::http1 {

// RFC 9113 §3.4: what a client with prior knowledge sends first.
inline constexpr std::string_view kH2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// What the front end knows of the connection when it hands it over.
struct H2ConnInfo {
  ListenerKey key;
  uint64_t conn_id = 0;
  ConnSlot* slot = nullptr;  // the worker's handle on the connection (drain, abort)
  std::string remote_ip, local_ip;
  uint16_t remote_port = 0, local_port = 0;
  bool tls = false;
  std::string sni;
  // The TLS connection (Request::tls_* fields).
  uint16_t tls_version = 0;
  uint16_t tls_cipher_suite = 0;
  std::string tls_cipher_name;
  bool tls_resumed = false;
};

// An HTTP/1.1 request that asked for `Upgrade: h2c` and got the 101: it becomes stream 1.
struct H2Upgrade {
  std::string settings;  // the HTTP2-Settings value
  http::Request request;
};

// Serves HTTP/2 on `stream` until the connection ends (client gone, idle timeout, GOAWAY after
// a drain or protocol error). `received`: bytes already read from the connection (the h2c
// preface). Stream is beast::tcp_stream or TlsStream; both are instantiated in h2_session.cc.
template <class Stream>
asio::awaitable<void> serve_h2(Worker& w, const H2ConnInfo& info, Stream& stream,
                               std::string_view received, H2Upgrade* upgrade = nullptr);

}  // namespace hsp::http1
