// Site addresses and upstream addresses as Caddy 2.6 parses them (httpcaddyfile.ParseAddress
// plus Normalize; reverseproxy's upstream dial address parsing).
#pragma once

#include <string>

#include "config/config.h"

namespace hsp::config {

// A site key split the way Caddy splits it. `port` is the text after the colon ("" if none).
struct RawAddress {
  std::string original;
  std::string scheme;
  std::string host;
  std::string port;
  std::string path;
};

// Parses and normalizes a site key: lower-cases scheme and host (outside placeholders) and
// writes IPv6 hosts in canonical form. Returns false with `err` set on a bad port.
bool parse_site_address(const std::string& key, RawAddress& out, std::string& err);

// Go's net.SplitHostPort. Returns false (like Go's error) when there is no port or the
// brackets/colons are malformed.
bool split_host_port(const std::string& hostport, std::string& host, std::string& port);

// "host:port" with brackets around IPv6 hosts (Go's net.JoinHostPort).
std::string join_host_port(const std::string& host, const std::string& port);

// Lower-cases ASCII letters outside {placeholders}.
std::string lower_except_placeholders(const std::string& s);

// True if `s` is an IP address (v4 or v6) or a CIDR prefix.
bool valid_ip_or_cidr(const std::string& s);

// Upstream address -> dial string and scheme. Accepts host:port, :port, host (port 80),
// [v6]:port, http://host[:port], https://..., h2c://..., network/address. Returns false with
// `err` set when the address is malformed; scheme/network are reported so that the caller can
// reject what is not supported yet.
struct UpstreamAddress {
  std::string dial;     // "127.0.0.1:9000"
  std::string scheme;   // "", "http", "https", "h2c"
  std::string network;  // "", "unix", "tcp", ...
};
bool parse_upstream_address(const std::string& text, UpstreamAddress& out, std::string& err);

}  // namespace hsp::config
