// Hop-by-hop header handling for a proxy (RFC 9110 §7.6.1), with Caddy 2.6's list and its
// exceptions: "TE: trailers" survives on requests and a protocol upgrade is re-announced.
#pragma once

#include <string>
#include <string_view>

#include "http/message.h"

namespace hsp::http {

// Does any value of `field` hold `token` as one of its comma-separated elements (case-insensitive,
// optional whitespace around elements)?
bool has_token(const HeaderMap& headers, std::string_view field, std::string_view token);

// The lower-cased Upgrade protocol when Connection names "upgrade"; empty otherwise.
std::string upgrade_type(const HeaderMap& headers);

// Removes every field named by Connection, then Connection, Proxy-Connection, Keep-Alive,
// Proxy-Authenticate, Proxy-Authorization, TE, Trailer, Transfer-Encoding, Upgrade and Alt-Svc
// (Caddy 2.6 strips Alt-Svc too). Returns nothing; the caller decides what to re-add.
void remove_hop_by_hop(HeaderMap& headers);

// What Caddy does to a request head before sending it upstream: removes hop-by-hop fields,
// keeps "TE: trailers" when the client offered it, and, for an upgrade request, re-adds
// "Connection: Upgrade" and "Upgrade: <type>" so the tunnel can be negotiated upstream.
void strip_request_hop_by_hop(HeaderMap& headers);

// What Caddy does to a non-101 response head from upstream: removes hop-by-hop fields.
inline void strip_response_hop_by_hop(HeaderMap& headers) {
  remove_hop_by_hop(headers);
}

}  // namespace hsp::http
