// Protocol-independent request/response heads shared by the HTTP/1.1 front end (and later h2,
// h3) and the routing engine. Bodies never live here: the data plane streams them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hsp::http {

bool iequals(std::string_view a, std::string_view b);
// ASCII lower case (field names, host names; never locale-dependent).
std::string ascii_lower(std::string_view s);
// Request::host from an authority: "Example.COM:8080" -> "example.com", "[::1]:80" -> "::1".
// One rule for every protocol front end (HTTP/1 Host, HTTP/2 :authority).
std::string host_of_authority(std::string_view authority);

// Ordered multimap of header fields, case-insensitive names, insertion order preserved (so the
// upstream sees fields in the order the client sent them).
class HeaderMap {
 public:
  using Field = std::pair<std::string, std::string>;

  // First value of the field, or nullptr.
  const std::string* get(std::string_view name) const;
  bool has(std::string_view name) const { return get(name) != nullptr; }
  // All values joined with ", " (RFC 9110 §5.3); empty string if absent.
  std::string joined(std::string_view name) const;
  void add(std::string_view name, std::string_view value);
  void set(std::string_view name, std::string_view value);  // replace every value
  size_t remove(std::string_view name);                     // returns how many were removed
  size_t remove_prefix(std::string_view prefix);            // case-insensitive name prefix
  void clear() { fields_.clear(); }
  void reserve(size_t n) { fields_.reserve(n); }
  size_t size() const { return fields_.size(); }
  bool empty() const { return fields_.empty(); }

  std::vector<Field>& fields() { return fields_; }
  const std::vector<Field>& fields() const { return fields_; }
  auto begin() const { return fields_.begin(); }
  auto end() const { return fields_.end(); }

 private:
  std::vector<Field> fields_;
};

// The downstream request as the engine sees and rewrites it.
struct Request {
  uint64_t id = 0;  // connection-unique request id, for logs
  uint64_t conn_id = 0;
  std::string method;     // "GET"
  std::string scheme;     // "http" or "https" (how the client reached us)
  std::string authority;  // Host header / :authority as received, e.g. "example.com:8080"
  std::string host;       // authority without port, lower-case
  std::string path;       // path as received, not decoded, always starting with '/'
                          // (or "*" for OPTIONS *)
  std::string query;      // without '?'; empty if none
  std::string orig_uri;   // request-target as first received (for {http.request.orig_uri})
  int version = 11;       // 10, 11, 20, 30
  HeaderMap headers;
  std::string remote_ip;  // peer address (no brackets for IPv6)
  uint16_t remote_port = 0;
  std::string client_ip;  // remote_ip, or the first untrusted X-Forwarded-For hop when
                          // the peer is a trusted proxy
  std::string local_ip;
  uint16_t local_port = 0;
  bool tls = false;
  std::string tls_server_name;  // SNI
  // The TLS connection, as Caddy's access log (`request.tls`) and {http.request.tls.*} show it.
  uint16_t tls_version = 0;       // TLS 1.2 0x0303, TLS 1.3 0x0304
  uint16_t tls_cipher_suite = 0;  // IANA id
  std::string tls_cipher_name;    // IANA name (Go's), e.g. "TLS_AES_128_GCM_SHA256"
  std::string tls_proto;          // ALPN protocol negotiated, "" when none
  bool tls_resumed = false;

  std::string uri() const { return query.empty() ? path : path + "?" + query; }
  std::string_view proto() const;  // "HTTP/1.1", "HTTP/2.0", ...
};

struct ResponseHead {
  int status = 200;
  std::string reason;  // empty: the standard reason phrase
  HeaderMap headers;
};

std::string_view reason_phrase(int status);

// The value of the first cookie called `name` in the request's Cookie fields, without
// surrounding quotes; a view into `headers`. Names compare exactly, as Go's Request.Cookie (which
// Caddy's lb_policy cookie uses); `ignore_case` matches the way Caddy's
// {http.request.cookie.*} placeholder looks them up.
bool find_cookie(const HeaderMap& headers, std::string_view name, std::string_view& value,
                 bool ignore_case = false);

}  // namespace hsp::http
