// The compiled configuration: what a Caddyfile (or, later, Docker labels) means, as plain typed
// data. Produced by config/compile.h, printed by config/adapt_json.h, and turned into a routing
// snapshot by engine/snapshot.h. No I/O, no Beast, no runtime state here.
//
// Strings that may hold Caddy placeholders ({host}, {http.request.header.X}, ...) are kept as
// written; the engine compiles them once per snapshot.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "util/error.h"

namespace hsp::config {

using Duration = std::chrono::nanoseconds;

// ---------------------------------------------------------------------------------------------
// Matchers. A MatcherSet matches when every non-empty condition matches (AND); within one
// condition the listed values are alternatives (OR). A route's `match` list is OR of sets; an
// empty list matches everything. This is Caddy's model.
struct PathRegexp {
  std::string name;  // for {re.NAME.N} placeholders; may be empty
  std::string pattern;
};

struct HeaderRegexp {
  std::string name;
  std::string field;
  std::string pattern;
};

struct MatcherSet {
  SourceLoc loc;                  // where the matcher was written (named matcher or inline)
  std::string name;               // "@api" for a named matcher; empty for inline ones
  std::vector<std::string> host;  // exact or "*.example.com"
  std::vector<std::string> path;  // Caddy path globs: "/api/*", "*.php", "/exact"
  std::vector<PathRegexp> path_regexp;
  std::vector<std::string> method;  // upper-case
  // field -> accepted values. An empty list means "field present". A value "*" means any
  // value; a leading/trailing '*' is a suffix/prefix match as in Caddy. Field "!X" (written
  // `header !X`) means the field is absent.
  std::vector<std::pair<std::string, std::vector<std::string>>> header;
  std::vector<HeaderRegexp> header_regexp;
  std::vector<std::pair<std::string, std::vector<std::string>>> query;  // key -> values
  std::vector<std::string> remote_ip;  // CIDR or single IP; "private_ranges" expanded
  std::vector<std::string> client_ip;
  std::optional<std::string> protocol;  // "http", "https", "grpc", "http/1.0", "http/1.1", ...
  std::vector<MatcherSet> not_sets;     // matches only if none of these matches

  bool empty() const;
};

// ---------------------------------------------------------------------------------------------
// Header manipulation (the `header` directive, reverse_proxy header_up / header_down).
struct HeaderOp {
  enum class Kind {
    set,         // replace all values with `value`
    add,         // append a value
    remove,      // delete field; `field` may end with '*' to delete by prefix
    replace,     // substring or regex replacement in existing values
    set_default  // set only if absent (Caddy's `?Field`)
  };
  Kind kind = Kind::set;
  std::string field;
  std::string value;   // set/add/default; for replace: the replacement
  std::string search;  // replace: substring (when !regex) or regex pattern
  bool regex = false;
  SourceLoc loc;
};

struct HeaderOps {
  std::vector<HeaderOp> ops;
  bool deferred = false;  // apply when the response is written (Caddy's `>` and `defer`)
};

// ---------------------------------------------------------------------------------------------
// Handlers. A route runs its handlers in order; the first that produces a response ends the
// request (StaticResponse, ReverseProxy, or a Subroute that did).
struct StaticResponse {
  int status = 200;
  std::string body;                                          // may hold placeholders
  std::vector<std::pair<std::string, std::string>> headers;  // e.g. Location for `redir`
  bool close = false;
};

struct Headers {
  HeaderOps request;
  HeaderOps response;
};

struct Rewrite {
  std::string uri;           // `rewrite` target (may hold placeholders); empty: none
  std::string strip_prefix;  // `uri strip_prefix`, `handle_path`
  std::string strip_suffix;
  struct Replace {
    std::string find;
    std::string replace;
    int limit = 0;  // 0: all
  };
  std::vector<Replace> uri_substring;  // `uri replace`
  struct PathRegexpReplace {
    std::string find;
    std::string replace;
  };
  std::vector<PathRegexpReplace> path_regexp;  // `uri path_regexp`
};

struct RequestBody {
  int64_t max_size = -1;  // bytes; -1: unlimited
};

enum class LbPolicy {
  random,
  round_robin,
  least_conn,
  first,
  ip_hash,
  client_ip_hash,
  uri_hash,
  header,
  cookie
};

struct Upstream {
  std::string dial;  // "host:port" as written after scheme stripping, e.g. "127.0.0.1:9000"
  SourceLoc loc;
};

struct PassiveHealth {
  Duration fail_duration{0};  // 0: passive checks off
  int max_fails = 1;
  // Response codes that count as a failure; a single digit N (written `Nxx`) is a class.
  std::vector<int> unhealthy_status;
  Duration unhealthy_latency{0};
  int unhealthy_request_count = 0;  // 0: unlimited concurrent requests per upstream
};

struct ActiveHealth {
  std::string uri;          // empty: active checks off
  std::optional<int> port;  // probe port instead of the upstream's
  Duration interval{std::chrono::seconds(30)};
  Duration timeout{std::chrono::seconds(5)};
  int expect_status = 0;    // 0: any 2xx; otherwise exact code (or 2/3/4/5 for a class: "2xx")
  std::string expect_body;  // regex; empty: not checked
  std::vector<std::pair<std::string, std::string>> headers;
};

struct HttpTransport {
  Duration dial_timeout{std::chrono::seconds(3)};
  Duration response_header_timeout{0};  // 0: none
  Duration read_timeout{0};
  Duration write_timeout{0};
  Duration keepalive_idle{std::chrono::minutes(2)};  // idle upstream conns kept this long
  int keepalive_idle_conns_per_host = 32;
  int keepalive_idle_conns = 0;  // across all hosts; 0: unlimited (Go's MaxIdleConns)
  bool keepalive = true;
  int max_conns_per_host = 0;  // 0: unlimited
  // TLS to the upstream: on for `https://` upstreams and whenever `tls` or any tls_* option is
  // written (Caddy enables its TLS config for each of them). tls_server_name may hold
  // placeholders ({http.request.host}), replaced per request as in Caddy.
  bool tls = false;
  std::string tls_server_name;                    // SNI and the name verified; empty: the dial host
  bool tls_insecure_skip_verify = false;          // no certificate or name verification at all
  std::vector<std::string> tls_trusted_ca_certs;  // PEM files (exist at load); empty: system roots
  Duration tls_timeout{0};                        // handshake limit; 0: none, as in Caddy 2.6
  // `versions` as written ("1.1", "2", "h2c"); empty: Caddy's default {"1.1", "2"}. h2c://
  // upstreams force {"h2c", "2"} as Caddy does. See upstream_proto() for what the data plane
  // speaks.
  std::vector<std::string> versions;
};

// The HTTP version the data plane uses to an upstream, as Caddy 2.6's HTTPTransport chooses it
// (Go's http.Transport, plus its own h2c transport):
//   - TLS on: ALPN offering "h2" and "http/1.1" when versions (or the default) contain "2"
//     (h2_tls_alpn: speak h2 if the server selects it, HTTP/1.1 otherwise); without "2", TLS
//     with HTTP/1.1 only (h1, HttpTransport::tls tells it is over TLS).
//   - TLS off: h2c with prior knowledge when versions contain "h2c"; else HTTP/1.1. Go never
//     speaks h2 over cleartext unless asked for h2c, whatever versions says.
// TLS is checked first because Caddy does so: with TLS on its requests carry the https scheme
// and never reach the h2c transport, so `versions h2c 2` plus `tls` means h2 over TLS.
enum class UpstreamProto { h1, h2c, h2_tls_alpn };
inline UpstreamProto upstream_proto(const HttpTransport& t) {
  auto has = [&](const char* v) {
    if (t.versions.empty()) return std::string(v) == "1.1" || std::string(v) == "2";
    for (const auto& s : t.versions)
      if (s == v) return true;
    return false;
  };
  if (t.tls) return has("2") ? UpstreamProto::h2_tls_alpn : UpstreamProto::h1;
  return has("h2c") ? UpstreamProto::h2c : UpstreamProto::h1;
}

struct ReverseProxy {
  std::vector<Upstream> upstreams;
  LbPolicy lb_policy = LbPolicy::random;
  std::string lb_key;           // header field for `header`, cookie name for `cookie`
  std::string lb_secret;        // cookie: HMAC secret
  Duration lb_try_duration{0};  // 0: no retries
  Duration lb_try_interval{std::chrono::milliseconds(250)};
  HeaderOps header_up;
  HeaderOps header_down;
  std::optional<Duration> flush_interval;  // negative: flush every write
  PassiveHealth passive;
  ActiveHealth active;
  HttpTransport transport;
  std::vector<std::string> trusted_proxies;  // per-handler override; empty: use global
  SourceLoc loc;
};

struct Route;

// `handle`, `handle_path`, `route`: an ordered list of routes evaluated as a unit.
struct Subroute {
  std::vector<Route> routes;
};

using Handler = std::variant<StaticResponse, Headers, Rewrite, RequestBody, Subroute, ReverseProxy>;

struct Route {
  std::vector<MatcherSet> match;  // OR; empty: always
  std::vector<Handler> handle;
  // Among consecutive routes with the same non-empty group only the first matching one runs
  // (mutually exclusive `handle` blocks).
  std::string group;
  bool terminal = false;  // stop evaluating later routes after this one ran
  std::string directive;  // the directive it came from, for adapt output and errors
  SourceLoc loc;
};

// ---------------------------------------------------------------------------------------------
// Sites and servers.
struct Address {
  std::string original;  // as written: "http://example.com:8080/api"
  std::string scheme;    // "http", "https" or "" (unspecified)
  std::string host;      // lower-case; "" for any host; "*.example.com" for wildcards
  uint16_t port = 0;     // 0: from scheme / global http_port / https_port
  std::string path;      // path prefix matcher, e.g. "/api*"; empty: none
  SourceLoc loc;
};

struct AccessLog {
  bool enabled = false;
  std::string output = "stdout";  // "stdout", "stderr", "discard" or "file"
  std::string file;               // when output == "file"
  std::string format = "json";    // only json for now
  std::string level = "INFO";
};

// The site's `tls` directive (Caddy 2.6's tlsconfig/tls.go subset). Nothing here says whether
// the site is served over HTTPS: Site::https does; a `tls` directive on a plain-HTTP site is
// accepted and ignored, as Caddy does.
struct SiteTls {
  enum class Issuer {
    automatic,  // no issuer written: the local CA or ACME by name (TlsPolicy::source)
    internal,   // `tls internal`, `tls { issuer internal }`: the local CA
    acme        // `tls EMAIL`, `tls { ca ...; ca_root ...; issuer acme {...} }`: ACME for all
  };
  bool written = false;  // a `tls` directive was present
  Issuer issuer = Issuer::automatic;
  std::string email;      // `tls EMAIL`
  std::string cert_file;  // `tls CERT KEY`: load this pair; no automation for the site
  std::string key_file;
  std::string protocol_min;  // "tls1.2" / "tls1.3"; empty: the default (TLS 1.2)
  std::string protocol_max;  // empty: the newest (TLS 1.3)
  // ACME, written in the block (`ca`, `ca_root`, `issuer acme { dir; email; trusted_roots;
  // disable_http_challenge; disable_tlsalpn_challenge }`); empty: the global options'.
  std::string acme_ca;
  std::string acme_ca_root;
  SourceLoc acme_ca_root_loc;
  bool disable_http_challenge = false;
  bool disable_tlsalpn_challenge = false;
  SourceLoc loc;  // the `tls` directive
};

struct Site {
  std::vector<Address> addresses;
  std::vector<std::string> bind;  // `bind` directive: listen on these host addresses only
  std::vector<Route> routes;      // already in Caddy's directive order
  AccessLog log;
  SourceLoc loc;
  // Caddy's automatic HTTPS: some key is `https://`, a host not on the HTTP port, or on the
  // HTTPS port. `auto_https off` does not change this (Caddy 2.6 still serves such keys over
  // TLS, only without certificate automation and redirects).
  bool https = false;
  SiteTls tls;
  // An HTTP->HTTPS redirect that Caddy adds while provisioning (autohttps.go), not a site the
  // user wrote: its only route is a 308 static_response. Not printed by `adapt`, as Caddy's
  // `adapt` does not print them either.
  bool synthetic_redirect = false;
};

// One TLS connection policy of a server: which SNI names it covers and where their
// certificate comes from. The gateway/tls module turns these into an SSL_CTX with SNI selection.
struct TlsPolicy {
  enum class Source {
    files,     // `tls CERT KEY`
    local_ca,  // the local CA (`tls internal`, or implicit: localhost, *.localhost, IPs)
    acme       // ACME (a public name with no issuer written, or an explicit ACME issuer)
  };
  // SNI names (site hosts). Empty: the catch-all (SNI no policy lists, or none); it carries
  // only defaults, and the certificate is the one another policy has for the name, if any.
  std::vector<std::string> names;
  Source source = Source::local_ca;
  std::string cert_file;  // Source::files
  std::string key_file;
  std::string tag;           // "cert0", ... as `caddy adapt` tags load_files (Source::files)
  std::string email;         // `tls EMAIL`
  std::string protocol_min;  // as in SiteTls
  std::string protocol_max;
  // Source::acme, resolved from the site's `tls` and the global options: the CA's directory
  // (default Let's Encrypt's production), extra roots for its HTTPS, and the challenge types
  // the gateway may answer, by preference.
  std::string acme_ca;
  std::string acme_ca_root;
  SourceLoc acme_ca_root_loc;  // where it was written (errors about the file point there)
  std::vector<std::string> challenges;
  // No issuer was written: Caddy manages the certificate automatically (local CA or ACME by
  // name). With `auto_https off` nothing is managed: no certificate, handshakes for these
  // names fail, as in Caddy, unless another policy loads one.
  bool automatic = false;
};

// One listening socket and the sites reachable through it.
struct Server {
  std::string bind_host;  // "" for all interfaces
  uint16_t port = 0;
  bool tls = false;           // terminates TLS (some site on it is HTTPS)
  std::vector<size_t> sites;  // indices into Config::sites, in lookup priority order
  // TLS only: one policy per distinct certificate source, then the catch-all (names empty).
  std::vector<TlsPolicy> tls_policies;
  // ALPN to offer, from `servers { protocols }`: "h2", "http/1.1"; empty when !tls.
  std::vector<std::string> alpn;
  // h2c with prior knowledge on a cleartext listener (`protocols ... h2c`).
  bool h2c = false;
  // TLS only: HTTP/3 over QUIC on the same port (UDP), advertised with Alt-Svc on HTTP/1.1
  // and HTTP/2 responses (`protocols ... h3`, on by default as in Caddy).
  bool h3 = false;
  // Holds only HTTP->HTTPS redirects (Caddy's "remaining_auto_https_redirects"); not printed
  // by `adapt`.
  bool redirect_only = false;
};

// Caddy's default ACME CA (certmagic.LetsEncryptProductionCA), and its staging twin.
inline constexpr const char* kLetsEncryptDirectory =
    "https://acme-v02.api.letsencrypt.org/directory";
inline constexpr const char* kLetsEncryptStagingDirectory =
    "https://acme-staging-v02.api.letsencrypt.org/directory";

// Global `auto_https`.
enum class AutoHttps {
  on,
  off,  // no redirects and no certificate automation; HTTPS keys are still TLS (Site::https)
  disable_redirects  // HTTPS as usual, no HTTP->HTTPS redirects
};

struct GlobalOptions {
  bool admin_off = false;  // accepted for Caddy compatibility; there is no admin API
  bool skip_install_trust = false;
  bool debug = false;
  uint16_t http_port = 80;
  uint16_t https_port = 443;
  AutoHttps auto_https = AutoHttps::on;
  // `servers { protocols ... }`: "h1", "h2", "h2c", "h3". Caddy 2.6's default is h1 h2 h3.
  std::vector<std::string> protocols = {"h1", "h2", "h3"};
  bool protocols_set = false;  // written explicitly (adapt prints it then, as Caddy does)
  Duration grace_period{std::chrono::seconds(30)};
  std::vector<std::string> trusted_proxies;  // CIDRs; "private_ranges" expanded
  std::vector<std::string> order;            // `order X before|after Y` lines, as written
  std::string email;         // the ACME account's contact, unless a site's `tls EMAIL` says
  std::string acme_ca;       // ACME directory URL; empty: Let's Encrypt's production
  std::string acme_ca_root;  // PEM of roots trusted for the CA's HTTPS, with the system's
  SourceLoc acme_ca_root_loc;
  std::string log_level = "INFO";
  // Server-wide limits on a request's head (431 / 414 when exceeded). Caddy 2.6 used Go's 1 MiB;
  // current Caddy uses 16 KiB and Envoy 60 KiB. 32 KiB fits real browsers' cookies with room.
  int64_t max_header_bytes = 32 * 1024;
  int max_header_count = 100;
  int64_t max_request_line = 8192;
  Duration read_header_timeout{std::chrono::seconds(30)};
  Duration idle_timeout{std::chrono::minutes(5)};
};

struct Config {
  GlobalOptions global;
  std::vector<Site> sites;
  std::vector<Server> servers;  // derived from sites' addresses; sorted by (port, bind_host)
};

}  // namespace hsp::config
