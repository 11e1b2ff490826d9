// Private to the engine: the compiled form of a Config that a Snapshot owns. Matchers, header
// operations, handlers and routes are built once here and then only read, from any thread.
#pragma once

#include <boost/regex.hpp>

#include <array>
#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "engine/engine.h"
#include "engine/host_table.h"
#include "engine/ip.h"
#include "engine/placeholder.h"

namespace hsp::engine {

// ---------------------------------------------------------------------------------------------
// Regular expressions (Boost.Regex, Perl syntax, which accepts the RE2 patterns Caddy users
// write: (?P<name>...), (?i), \d, classes...).
struct Regex {
  boost::regex re;
  std::vector<std::string> names;  // named groups in the pattern, for {re.NAME.group}

  // False with a message on a bad pattern.
  static bool compile(const std::string& pattern, Regex& out, std::string& why);
  // regex_search; never throws (a pattern too complex for this input does not match).
  bool search(std::string_view in, boost::match_results<std::string_view::const_iterator>& m) const;
  // Go's Regexp.ReplaceAllString: $1, ${1}, $name, ${name}, $$ in `repl`.
  std::string replace_all(std::string_view in, std::string_view repl) const;
};

// ---------------------------------------------------------------------------------------------
// Per-request scratch state while dispatching.
struct DispatchState {
  RequestCtx& ctx;
  Decision& decision;

  // Caddy matches paths on the unescaped, cleaned path; each form is computed on first use
  // and kept until req.path changes (a rewrite), so many path matchers cost one computation.
  const std::string& clean();        // unescaped, path.Clean'd, trailing slash kept
  const std::string& lower_clean();  // lower-cased, trailing ". " trimmed, then cleaned
  const std::string& lower_keep();   // as lower_clean but repeated slashes kept

  // Groups already satisfied by a matching route (only the first in a group runs).
  std::array<const std::string*, 16> groups{};
  size_t ngroups = 0;
  std::vector<const std::string*> more_groups;
  bool group_taken(const std::string& g) const;
  void take_group(const std::string& g);

  // Deferred response header ops in the order their handlers ran.
  std::vector<const CompiledHeaderOps*> deferred;

  DispatchState(RequestCtx& c, Decision& d) : ctx(c), decision(d) {}

 private:
  void check_path();
  std::string src_;  // the req.path the cached forms belong to
  bool have_src_ = false;
  std::string decoded_, clean_, lower_clean_, lower_keep_;
  bool have_decoded_ = false, have_clean_ = false, have_lower_clean_ = false,
       have_lower_keep_ = false;
};

// ---------------------------------------------------------------------------------------------
// Matchers.
struct PathPattern {
  enum class Mode { any, contains, suffix, prefix, glob } mode = Mode::glob;
  std::string text;           // lower-cased pattern (or the fixed part for contains/prefix/suffix)
  bool keep_slashes = false;  // the pattern holds "//": match without merging slashes
  bool escaped = false;       // the pattern holds '%': compare against the escaped path
  Template dynamic;           // placeholders in the pattern: resolved per request
  bool is_dynamic = false;

  static PathPattern compile(const std::string& pattern);
  bool match(DispatchState& st) const;
};

struct ValuePattern {
  enum class Mode { any, contains, suffix, prefix, exact } mode = Mode::exact;
  std::string text;
  Template dynamic;
  bool is_dynamic = false;
  static ValuePattern compile(const std::string& v);
  bool match(std::string_view actual, const RequestCtx& ctx) const;
};

struct HeaderCond {
  std::string field;
  bool absent = false;  // `!Field`
  bool is_host = false;
  std::vector<ValuePattern> values;  // empty: present with any value
};

struct RegexCond {
  std::string name;   // capture prefix: "NAME." (or "" when unnamed)
  std::string field;  // header_regexp only
  bool is_host = false;
  Regex re;
};

struct CompiledMatcherSet {
  std::vector<std::string> hosts;  // lower-case, may hold '*' labels
  std::vector<PathPattern> paths;
  std::vector<std::string> methods;
  std::vector<HeaderCond> headers;
  std::vector<std::pair<std::string, std::vector<std::string>>> query;
  bool has_query = false;
  std::vector<IpRange> remote_ip;
  bool has_remote_ip = false;
  std::vector<IpRange> client_ip;
  bool has_client_ip = false;
  std::string protocol;
  std::vector<CompiledMatcherSet> not_sets;
  std::vector<RegexCond> path_regexp;
  std::vector<RegexCond> header_regexp;

  bool match(DispatchState& st) const;
};

// Compiles one config matcher set; errors are appended with the set's SourceLoc.
CompiledMatcherSet compile_matcher_set(const config::MatcherSet& ms, Errors& errors);
bool host_pattern_match(std::string_view pattern, std::string_view host);
// Go's path.Match (no error reporting: a malformed pattern does not match).
bool glob_match(std::string_view pattern, std::string_view name);
// Caddy's CleanPath: path.Clean that keeps a trailing slash, merging repeated slashes only
// when asked.
std::string clean_path(std::string_view p, bool merge_slashes);

// ---------------------------------------------------------------------------------------------
// Header operations (`header`, `request_header`, header_up / header_down).
class HeaderOpsImpl final : public CompiledHeaderOps {
 public:
  struct Op {
    config::HeaderOp::Kind kind;
    Template field;
    std::string field_lower;  // for delete patterns when the field has no placeholder
    Template value;
    Template search;
    std::unique_ptr<Regex> re;
  };

  // Ops of one kind are applied together in Caddy's fixed order: add, set, delete, replace.
  // `?Field` defaults are split off by the caller into their own object (see compile()).
  static std::unique_ptr<HeaderOpsImpl> compile(const std::vector<const config::HeaderOp*>& ops,
                                                bool deferred, bool require_absent, Errors& errors);

  void apply(const RequestCtx& ctx, http::HeaderMap& headers) const override;
  bool deferred() const override { return deferred_; }
  // For request headers: Host is read and written through req.authority as in Caddy.
  void apply_request(const RequestCtx& ctx, http::Request& req) const;
  bool empty() const { return ops_.empty(); }

 private:
  std::vector<Op> ops_;
  bool deferred_ = false;
  // Caddy's `?Field value`: the sets apply only when none of these fields is present.
  std::vector<std::string> require_absent_;
};

// Builds the pair Caddy builds for one HeaderOps: the plain ops and the `?` defaults (which
// always apply at write time). Either may be null.
void compile_header_ops(const config::HeaderOps& ops, std::unique_ptr<HeaderOpsImpl>& plain,
                        std::unique_ptr<HeaderOpsImpl>& defaults, Errors& errors);

// ---------------------------------------------------------------------------------------------
// reverse_proxy.
class ProxyHandlerImpl final : public ProxyHandler {
 public:
  static std::unique_ptr<ProxyHandlerImpl> compile(const config::ReverseProxy& cfg,
                                                   const config::GlobalOptions& global,
                                                   UpstreamRegistry& registry, Errors& errors);

  const config::ReverseProxy& cfg() const override { return *cfg_; }
  const std::vector<std::shared_ptr<UpstreamHost>>& upstreams() const override {
    return upstreams_;
  }
  UpstreamHost* select(const RequestCtx& ctx,
                       const std::vector<const UpstreamHost*>& exclude) const override;
  void apply_header_up(const RequestCtx& ctx, http::HeaderMap& out) const override;
  void apply_header_down(const RequestCtx& ctx, http::HeaderMap& out) const override;
  bool peer_trusted(const http::Request& req) const override;
  std::string sticky_cookie(const RequestCtx& ctx, const UpstreamHost& chosen) const override;
  bool health_body_ok(std::string_view body) const override;

 private:
  bool usable(const UpstreamHost* u, Clock::time_point now,
              const std::vector<const UpstreamHost*>& exclude) const;
  UpstreamHost* pick_random(Clock::time_point now,
                            const std::vector<const UpstreamHost*>& exclude) const;
  UpstreamHost* pick_hash(std::string_view key, Clock::time_point now,
                          const std::vector<const UpstreamHost*>& exclude) const;
  const std::string* cookie_match(const RequestCtx& ctx) const;

  const config::ReverseProxy* cfg_ = nullptr;
  std::vector<std::shared_ptr<UpstreamHost>> upstreams_;
  std::vector<std::string> cookie_hashes_;  // hex HMAC-SHA256(secret, dial) per upstream
  std::string cookie_name_;
  std::unique_ptr<HeaderOpsImpl> header_up_;
  std::unique_ptr<HeaderOpsImpl> header_down_;
  std::vector<IpRange> trusted_;
  mutable std::atomic<uint32_t> robin_{0};
  std::unique_ptr<Regex> health_body_;  // cfg.active.expect_body, when set
};

// ---------------------------------------------------------------------------------------------
// Handlers and routes.
struct CompiledRoute;

struct StaticResponseH {
  int status = 200;
  Template body;
  std::vector<std::pair<Template, Template>> headers;
  bool close = false;
};

struct HeadersH {
  std::unique_ptr<HeaderOpsImpl> request;
  std::unique_ptr<HeaderOpsImpl> request_defaults;  // never set: `?` is response-only
  std::unique_ptr<HeaderOpsImpl> response;
  std::unique_ptr<HeaderOpsImpl> response_defaults;
};

struct RewriteH {
  bool has_uri = false;
  bool has_path = false, has_query = false, has_frag = false;
  Template path;  // with {http.request.uri} handled specially, as Caddy does
  bool path_has_uri = false;
  struct QueryComp {
    Template text;
    bool key = false;       // starts a key=value pair (Caddy's wroteVal)
    bool amp_next = false;  // the component was ended by '&'
  };
  std::vector<QueryComp> query;
  std::string raw_query;  // the query part as written, for injected-query fallback
  Template strip_prefix, strip_suffix;
  struct Replace {
    Template find, replace;
    bool keep_slashes = false;
    int limit = 0;
  };
  std::vector<Replace> replaces;
  struct ReReplace {
    Regex re;
    Template replace;
  };
  std::vector<ReReplace> re_replaces;
};

struct RequestBodyH {
  int64_t max_size = -1;
};

struct SubrouteH {
  std::vector<CompiledRoute> routes;
};

struct ProxyH {
  std::unique_ptr<ProxyHandlerImpl> proxy;
};

using CompiledHandler =
    std::variant<StaticResponseH, HeadersH, RewriteH, RequestBodyH, SubrouteH, ProxyH>;

struct CompiledRoute {
  std::vector<CompiledMatcherSet> match;
  std::vector<CompiledHandler> handlers;
  std::string group;
  bool terminal = false;
};

// One config site compiled: its routes, shared by every host and server that reaches it.
struct CompiledSite {
  const config::Site* cfg = nullptr;
  std::vector<CompiledRoute> routes;
};

}  // namespace hsp::engine

namespace hsp::engine {

// What find_site returns: the sites that may answer a host, in order. Usually one; a site
// address with a path ("example.com/api") only takes requests under that path, and the next
// candidate (a wildcard or catch-all site for the same host) gets the rest, as in Caddy where
// each site is a route with host and path matchers.
class Site {
 public:
  struct Candidate {
    const CompiledSite* site = nullptr;
    std::vector<PathPattern> paths;  // empty: every path
  };
  std::vector<Candidate> candidates;
};

}  // namespace hsp::engine
