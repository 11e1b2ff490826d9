// Private to gateway/http1/: HTTP/3 listeners. An HTTPS server with `h3` in its protocols (the
// default) also listens on UDP at the same address and port; each worker owns one SO_REUSEPORT
// UDP socket and one h3::QuicServer (gateway/h3/quic_server.h) on it, and serves its requests
// through MuxConn::serve_stream, as HTTP/2 does.
//
// Connection IDs carry the owning worker's index in their first byte: the kernel spreads
// datagrams over the workers' sockets by the 4-tuple, so a client whose address changed (NAT
// rebinding, migration) may land on another worker, which hands such datagrams to the owner's
// thread. New connections (Initials) are served where they arrive.
//
// Certificates come from the snapshot current at each handshake (the server's CertSelector,
// chosen by SNI and converted to GnuTLS credentials once per certificate and snapshot), so they
// swap with the snapshot as they do for TLS over TCP.
//
// Closing (reload without the listener, SIGTERM): GOAWAY on every connection, no new ones;
// open requests finish; the socket closes once the last connection has. Abort (the grace
// period ran out): CONNECTION_CLOSE to every connection, requests end as client_closed.
#pragma once

#include <memory>
#include <vector>

#include "http1/worker.h"
#include "util/error.h"

namespace hsp::http1 {

class H3Endpoint;

struct H3Listener {
  std::vector<std::shared_ptr<H3Endpoint>> endpoints;  // [worker index]
  uint16_t port = 0;                                   // the bound port
};

// Binds one UDP socket per worker on `addr`:`port` (the TCP listener's address and bound port)
// on that worker's io_context. Errors name the address.
// `always_retry`: every new connection is asked for a Retry first (else only under load).
// `g`: the current config's global options (header limits). Call on the control thread.
Result<H3Listener> open_h3(const std::vector<Worker*>& workers, const asio::ip::address& addr,
                           uint16_t port, const ListenerKey& key, bool always_retry,
                           const config::GlobalOptions& g);
// Starts the receive loops (on each worker's thread).
void start_h3(H3Listener& l);
// Stops accepting connections; existing ones get GOAWAY and drain, then each socket closes.
// The endpoints stay in `l`: resume_h3() may take them back.
void close_h3(H3Listener& l);
// Accepts again on endpoints close_h3() stopped (the listener is back on the same address and
// port): their draining connections go on, and an endpoint whose socket already closed binds a
// new one. Never a second socket set beside a draining one (see h3_endpoint.cc).
void resume_h3(H3Listener& l);
// Every endpoint of `l` has closed its socket for good (any thread).
bool h3_done(const H3Listener& l);

// The Alt-Svc value HTTP/1.1 and HTTP/2 responses of an h3-enabled listener carry (RFC 7838);
// empty when the listener has no HTTP/3.
std::string alt_svc_value(const ListenerKey& key);

}  // namespace hsp::http1
