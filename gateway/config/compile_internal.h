// Private to gateway/config: the state and helpers the config compiler's files share.
// compile.cc      entry point, global options, sites and servers, directive order and groups
// compile_matchers.cc, compile_handlers.cc, compile_reverse_proxy.cc   one area each
// compile_helpers.cc   argument checks, error reporting, string helpers, placeholder shorthands
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "caddyfile/ast.h"
#include "config/address.h"
#include "config/config.h"
#include "util/error.h"

namespace hsp::config::compile_detail {

using caddyfile::Directive;
using caddyfile::Token;
using MatcherDefs = std::map<std::string, MatcherSet>;

// Bound for int_arg when only the sign is checked.
inline constexpr int kNoMax = 1 << 30;

// A route produced by one directive, before sorting.
struct RouteVal {
  std::string directive;  // normalized: handle_path -> handle
  Route route;
};

// Header operations as Caddy's HeaderOps holds them: Add and Set are maps (one entry per
// canonical field; Set keeps the last value), Delete a list, Replace a map of lists. Caddy
// applies them in the order add, set, delete, replace whatever the written order was, and
// the maps' iteration order is random in Go, so fields are sorted to make the result
// deterministic (it only matters when two ops name the same field, which Go makes random too).
struct OpsAcc {
  std::vector<HeaderOp> add, set, del, replace;
  bool deferred = false;

  bool empty() const { return add.empty() && set.empty() && del.empty() && replace.empty(); }
  HeaderOps finish() const;
  // Set keeps one entry per field: a later value replaces an earlier one in place.
  void upsert_set(const HeaderOp& op);
};

// headers.applyHeaderOp. `response` says whether `?` and `>` are allowed (the `header`
// directive) or not (reverse_proxy header_up/header_down). On false, `err` says why.
bool apply_header_op(OpsAcc& acc, bool response, std::string field, const std::string& value,
                     const std::string& replacement, const SourceLoc& loc, std::string& err);

// Directive-level things that are not handlers: they configure the site itself.
struct SiteExtras {
  std::vector<std::string> bind;
  std::optional<AccessLog> log;
  std::optional<SiteTls> tls;
};

// One site key, parsed, with where it listens.
struct SiteKey {
  RawAddress raw;
  uint16_t listen_port = 0;
  bool https = false;  // Caddy's automatic HTTPS takes this key (see qualifies_for_https)
};

// Caddy's rule (httpcaddyfile): an explicit https://, a host name not on the HTTP port, or the
// HTTPS port. `ln_port` is the port the key listens on.
bool qualifies_for_https(const RawAddress& ra, const std::string& ln_port,
                         const std::string& http_port, const std::string& https_port);

// Caddy v2.6.2 directiveOrder (caddyconfig/httpcaddyfile/directives.go).
const std::vector<std::string>& caddy_directive_order();

// Placeholder shorthands ({host}, {header.X}, ...) rewritten to their long form in every token.
std::string expand_placeholders(const std::string& in);
void expand_tokens(Directive& d);

// Go's textproto.CanonicalMIMEHeaderKey: returned unchanged if it holds a non-token byte.
std::string canonical_header(const std::string& s);
std::string upper(std::string s);
// A decimal int32 with optional sign; false on anything else.
bool parse_int(const std::string& s, int& out);
// A status code ("502") or class ("5xx", giving 5) as Caddy's reverse_proxy accepts them.
bool parse_status_or_class(const std::string& s, int& out);

class Compiler {
 public:
  Result<Config> run(const caddyfile::File& file);

 private:
  // -- errors and arguments (compile_helpers.cc) ----------------------------------------------
  void error(const Token& t, const std::string& msg);
  void error(const SourceLoc& loc, const std::string& msg) { errs_.push_back(Error{loc, msg}); }
  // Caddy's ArgErr wording, for a directive whose arguments are missing.
  void wrong_arg_count(const Directive& d);
  // `first` is the index of the first argument after a matcher token.
  bool arg_count(const Directive& d, size_t first, size_t min, size_t max);
  bool no_block(const Directive& d);
  bool no_args(const Directive& d) { return arg_count(d, 0, 0, 0) && no_block(d); }
  bool one_arg(const Directive& d, std::string& out);
  bool duration_arg(const Directive& d, Duration& out);
  bool int_arg(const Directive& d, int& out, int min, int max);
  // A size ("10MB"); `positive` rejects 0 and below.
  bool size_arg(const Directive& d, int64_t& out, bool positive);
  // Appends `t` (an IP, a CIDR range or `private_ranges`) to `out`; `what` names the option.
  bool ip_range(const Token& t, std::vector<std::string>& out, const std::string& what);
  bool ip_ranges(const Directive& d, size_t first, std::vector<std::string>& out,
                 const std::string& what);
  void unsupported_sub(const Directive& parent, const Directive& sub);

  // -- global options (compile.cc) ------------------------------------------------------------
  void global_options(const caddyfile::ServerBlock& gb);
  void order_option(const Directive& d);
  void global_log(const Directive& d, bool& level_set);
  void servers_option(const Directive& d);
  void auto_https_option(const Directive& d);
  void protocols_option(const Directive& d);

  // -- sites and servers (compile.cc) ---------------------------------------------------------
  void site(const caddyfile::ServerBlock& sb);
  std::optional<SiteKey> site_key(const Token& k, Site& site);
  void derive_servers();

  // -- TLS and automatic HTTPS (compile_tls.cc) -----------------------------------------------
  bool tls_directive(const Directive& d, SiteTls& out);
  bool acme_issuer(const Directive& sub, SiteTls& out);
  // An ACME directory URL: https (http only for loopback test CAs), with a host.
  bool acme_url(const Token& t);
  void derive_tls();
  void add_redirects();
  void build_site_routes();

  // -- matchers (compile_matchers.cc) ---------------------------------------------------------
  void define_matcher(MatcherDefs& defs, const Directive& d);
  void matcher(MatcherSet& ms, const Token& name, const std::vector<Token>& args, size_t from,
               const Directive* with_block);
  void header_matcher(MatcherSet& ms, const Token& name, const std::vector<Token>& args,
                      size_t from);
  void header_regexp_matcher(MatcherSet& ms, const Token& name, const std::vector<Token>& args,
                             size_t from);
  void query_matcher(MatcherSet& ms, const Token& name, const std::vector<Token>& args,
                     size_t from);
  bool extract_matcher(const Directive& d, const MatcherDefs& defs, std::vector<MatcherSet>& match,
                       size_t& first);

  // -- directive dispatch, order and grouping (compile.cc) ------------------------------------
  void directive(const Directive& d, const MatcherDefs& defs, SiteExtras* extras,
                 std::vector<RouteVal>& out);
  void handler(const Directive& d, size_t first, const std::vector<MatcherSet>& match,
               const MatcherDefs& defs, std::vector<RouteVal>& out);
  std::vector<RouteVal> directives(const std::vector<Directive>& dirs, MatcherDefs& defs,
                                   SiteExtras* extras);
  std::vector<RouteVal> nested(const Directive& d, const MatcherDefs& defs);
  Subroute build_subroute(std::vector<RouteVal> vals);
  void add_route(std::vector<RouteVal>& out, const Directive& d,
                 const std::vector<MatcherSet>& match, Handler h);

  // -- handler directives (compile_handlers.cc) -----------------------------------------------
  bool respond(const Directive& d, size_t first, StaticResponse& out);
  bool redir(const Directive& d, size_t first, StaticResponse& out);
  void header(const Directive& d, size_t first, const std::vector<MatcherSet>& match,
              std::vector<RouteVal>& out);
  bool request_body(const Directive& d, size_t first, RequestBody& out);
  bool rewrite(const Directive& d, size_t first, Rewrite& out);
  bool uri(const Directive& d, size_t first, Rewrite& out);
  void handle_or_route(const Directive& d, size_t first, const std::vector<MatcherSet>& match,
                       const MatcherDefs& defs, std::vector<RouteVal>& out);
  void handle_path(const Directive& d, const MatcherDefs& defs, std::vector<RouteVal>& out);
  void bind(const Directive& d, SiteExtras& extras);
  bool site_log(const Directive& d, AccessLog& log);
  bool log_output(const Directive& sub, AccessLog& log);

  // -- reverse_proxy (compile_reverse_proxy.cc) -----------------------------------------------
  bool reverse_proxy(const Directive& d, size_t first, ReverseProxy& rp);
  bool upstream(const Token& t, std::string& common_scheme, ReverseProxy& rp);
  std::optional<bool> health_option(const Directive& sub, ReverseProxy& rp);
  bool status_list(const Directive& sub, std::vector<int>& out);
  bool flush_interval(const Directive& sub, std::optional<Duration>& out);
  bool transport(const Directive& d, HttpTransport& t);
  std::optional<bool> transport_tls_option(const Directive& sub, HttpTransport& t);
  bool versions(const Directive& sub, std::vector<std::string>& out);
  bool readable_file(const Token& t, const std::string& what);
  bool upstream_scheme(const std::string& scheme, const Directive* transport_dir,
                       const Directive& d, HttpTransport& t);
  bool lb_policy(const Directive& d, ReverseProxy& rp);

  Errors errs_;
  Config cfg_;
  std::vector<std::string> order_ = caddy_directive_order();
  int group_counter_ = 0;
  std::vector<std::vector<SiteKey>> site_keys_;   // per site
  std::vector<std::vector<RouteVal>> site_vals_;  // per site, built after all parsing
};

}  // namespace hsp::config::compile_detail
