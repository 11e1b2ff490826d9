// Caddyfile AST -> Config, following Caddy 2.6's httpcaddyfile adapter. This file holds the
// entry point, global options, site addresses and the servers they imply, and the directive
// order with its path-length sub-sort, mutually exclusive `handle`/`rewrite` groups and route
// consolidation. Matchers, handler directives and reverse_proxy live in compile_*.cc.
//
// Every directive, sub-directive, matcher and option that is not handled is an error that
// names it and its position; nothing is dropped silently.
#include "config/compile.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "config/address.h"
#include "config/compile_go_sort.h"
#include "config/compile_internal.h"
#include "config/json_internal.h"

namespace hsp::config {
namespace compile_detail {
namespace {

// Directives Caddy registers without an order (they do not produce handlers).
bool caddy_unordered_directive(const std::string& n) {
  return n == "bind" || n == "tls" || n == "log" || n == "handle_errors" || n == "import";
}

// Caddy's specificity(): length minus wildcards and {placeholders}.
int specificity(const std::string& str) {
  int l = static_cast<int>(str.size()) - static_cast<int>(std::count(str.begin(), str.end(), '*'));
  std::string s = str;
  while (!s.empty()) {
    size_t start = s.find('{');
    if (start == std::string::npos) return l;
    size_t close = s.find('}', start);
    if (close == std::string::npos) return l;
    size_t end = close + 1;
    l -= static_cast<int>(end - start);
    s = s.substr(end);
  }
  return l;
}

}  // namespace

// Caddy v2.6.2 directiveOrder (caddyconfig/httpcaddyfile/directives.go).
const std::vector<std::string>& caddy_directive_order() {
  static const std::vector<std::string> order = {
      "tracing",
      "map",
      "vars",
      "root",
      "skip_log",
      "header",
      "copy_response_headers",
      "request_body",
      "redir",
      "method",
      "rewrite",
      "uri",
      "try_files",
      "basicauth",
      "forward_auth",
      "request_header",
      "encode",
      "push",
      "templates",
      "handle",
      "handle_path",
      "route",
      "abort",
      "error",
      "copy_response",
      "respond",
      "metrics",
      "reverse_proxy",
      "php_fastcgi",
      "file_server",
      "acme_server",
  };
  return order;
}

// ---------------------------------------------------------------------------------------------
// Global options.

void Compiler::global_options(const caddyfile::ServerBlock& gb) {
  GlobalOptions& g = cfg_.global;
  bool level_set = false;
  for (const auto& d : gb.directives) {
    const std::string& n = d.name.text;
    if (n == "admin") {
      // There is no admin API; `admin off` is what the Caddyfiles we replace say.
      if (d.args.size() == 1 && d.args[0].text == "off" && !d.has_block) {
        g.admin_off = true;
      } else {
        error(d.name, "global option 'admin' only accepts 'off': hsp-gateway has no admin API");
      }
    } else if (n == "skip_install_trust") {
      if (no_args(d)) g.skip_install_trust = true;
    } else if (n == "debug") {
      if (no_args(d)) g.debug = true;
    } else if (n == "http_port" || n == "https_port") {
      int v = 0;
      if (int_arg(d, v, 1, 65535))
        (n == "http_port" ? g.http_port : g.https_port) = static_cast<uint16_t>(v);
    } else if (n == "grace_period") {
      duration_arg(d, g.grace_period);
    } else if (n == "email") {
      one_arg(d, g.email);
    } else if (n == "acme_ca") {
      if (one_arg(d, g.acme_ca)) acme_url(d.args[0]);
    } else if (n == "acme_ca_root") {
      if (one_arg(d, g.acme_ca_root)) g.acme_ca_root_loc = d.args[0].loc;
    } else if (n == "order") {
      order_option(d);
    } else if (n == "log") {
      global_log(d, level_set);
    } else if (n == "servers") {
      servers_option(d);
    } else if (n == "auto_https") {
      auto_https_option(d);
    } else {
      error(d.name, "unknown global option '" + n + "': not supported yet by hsp-gateway");
    }
  }
  if (g.debug && !level_set) g.log_level = "DEBUG";
  // Equal ports would make every HTTPS site's redirect point at itself.
  if (g.http_port == g.https_port) {
    for (const auto& d : gb.directives)
      if (d.name.text == "http_port" || d.name.text == "https_port") {
        error(d.name, "http_port and https_port must differ (both are " +
                          std::to_string(g.http_port) + ")");
        break;
      }
  }
}

void Compiler::order_option(const Directive& d) {
  if (!no_block(d)) return;
  if (d.args.size() < 2) {
    error(d.name, "wrong argument count or unexpected line ending after 'order'");
    return;
  }
  const Token& dir = d.args[0];
  const auto& known = caddy_directive_order();
  if (std::find(known.begin(), known.end(), dir.text) == known.end() &&
      !caddy_unordered_directive(dir.text)) {
    error(dir, dir.text + " is not a registered directive");
    return;
  }
  const std::string& pos = d.args[1].text;
  std::vector<std::string> order = order_;
  order.erase(std::remove(order.begin(), order.end(), dir.text), order.end());
  if (pos == "first" || pos == "last") {
    if (!arg_count(d, 0, 2, 2)) return;
    if (pos == "first")
      order.insert(order.begin(), dir.text);
    else
      order.push_back(dir.text);
  } else if (pos == "before" || pos == "after") {
    if (!arg_count(d, 0, 3, 3)) return;
    const std::string& other = d.args[2].text;
    auto it = std::find(order.begin(), order.end(), other);
    if (it == order.end()) {
      // Caddy silently drops the directive from the order in this case, which then fails
      // later with "not an ordered HTTP handler"; say so here instead.
      error(d.args[2], "cannot order '" + dir.text + "' " + pos + " '" + other + "': '" + other +
                           "' is not an ordered directive");
      return;
    }
    order.insert(pos == "before" ? it : it + 1, dir.text);
  } else {
    error(d.args[1], "unknown positional '" + pos + "' (expected first, last, before, after)");
    return;
  }
  order_ = order;
  std::string line = "order";
  for (const auto& a : d.args) line += " " + a.text;
  cfg_.global.order.push_back(line);
}

void Compiler::global_log(const Directive& d, bool& level_set) {
  if (!d.args.empty() && d.args[0].text != "default") {
    error(d.args[0], "named loggers ('log " + d.args[0].text +
                         "') are not supported yet by hsp-gateway; only the default logger");
    return;
  }
  if (!arg_count(d, 0, 0, 1)) return;
  for (const auto& sub : d.block) {
    if (sub.name.text == "level") {
      std::string lvl;
      if (!one_arg(sub, lvl)) continue;
      lvl = upper(lvl);
      if (lvl == "WARNING") lvl = "WARN";
      static const std::set<std::string> ok = {"DEBUG", "INFO", "WARN", "ERROR", "PANIC", "FATAL"};
      if (!ok.count(lvl)) {
        error(sub.args[0], "unknown log level '" + sub.args[0].text + "'");
        continue;
      }
      cfg_.global.log_level = lvl;
      level_set = true;
    } else {
      unsupported_sub(d, sub);
    }
  }
}

void Compiler::servers_option(const Directive& d) {
  if (!d.args.empty()) {
    error(d.args[0], "per-listener 'servers " + d.args[0].text +
                         "' options are not supported yet by hsp-gateway; write 'servers' "
                         "without an address");
    return;
  }
  GlobalOptions& g = cfg_.global;
  for (const auto& sub : d.block) {
    const std::string& n = sub.name.text;
    if (n == "trusted_proxies") {
      // Caddy 2.6.3+ syntax: trusted_proxies static <ranges...>
      if (sub.args.empty() || sub.args[0].text != "static") {
        error(sub.name, "trusted_proxies needs the 'static' source followed by ranges");
        continue;
      }
      if (!no_block(sub)) continue;
      if (sub.args.size() < 2) {
        error(sub.args[0], "trusted_proxies static needs at least one range");
        continue;
      }
      ip_ranges(sub, 1, g.trusted_proxies, "trusted_proxies");
    } else if (n == "protocols") {
      protocols_option(sub);
    } else if (n == "max_header_size") {
      size_arg(sub, g.max_header_bytes, true);
    } else if (n == "timeouts") {
      if (!arg_count(sub, 0, 0, 0)) continue;
      for (const auto& t : sub.block) {
        if (t.name.text == "read_header")
          duration_arg(t, g.read_header_timeout);
        else if (t.name.text == "idle")
          duration_arg(t, g.idle_timeout);
        else
          unsupported_sub(sub, t);
      }
    } else {
      unsupported_sub(d, sub);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Directives: dispatch, nesting, order and grouping.

void Compiler::add_route(std::vector<RouteVal>& out, const Directive& d,
                         const std::vector<MatcherSet>& match, Handler h) {
  RouteVal v;
  v.directive = d.name.text == "handle_path" ? "handle" : d.name.text;
  v.route.match = match;
  v.route.handle.push_back(std::move(h));
  v.route.directive = v.directive;
  v.route.loc = d.name.loc;
  out.push_back(std::move(v));
}

// Matchers defined in a block are visible only there; they are defined before any directive is
// compiled, as Caddy does, regardless of where in the block they are written.
std::vector<RouteVal> Compiler::directives(const std::vector<Directive>& dirs, MatcherDefs& defs,
                                           SiteExtras* extras) {
  auto is_matcher = [](const Directive& d) {
    return !d.name.text.empty() && d.name.text[0] == '@';
  };
  for (const auto& d : dirs)
    if (is_matcher(d)) define_matcher(defs, d);
  std::vector<RouteVal> vals;
  for (const auto& d : dirs)
    if (!is_matcher(d)) directive(d, defs, extras, vals);
  return vals;
}

std::vector<RouteVal> Compiler::nested(const Directive& d, const MatcherDefs& outer) {
  MatcherDefs defs = outer;
  return directives(d.block, defs, nullptr);
}

Subroute Compiler::build_subroute(std::vector<RouteVal> vals) {
  std::map<std::string, int> pos;
  for (size_t i = 0; i < order_.size(); ++i) pos[order_[i]] = static_cast<int>(i);
  auto path_len = [](const Route& r) {
    if (r.match.size() == 1 && r.match[0].path.size() == 1)
      return static_cast<int>(r.match[0].path[0].size());
    return 0;
  };
  go_stable_sort(vals, [&](const RouteVal& i, const RouteVal& j) {
    if (i.directive != j.directive) return pos[i.directive] < pos[j.directive];
    int il = path_len(i.route), jl = path_len(j.route);
    if (il > 0 && jl > 0) return il > jl;
    return !i.route.match.empty() && j.route.match.empty();
  });

  // Mutually exclusive directives, in sorted name order as Caddy numbers them. `rewrite`
  // always takes a group name (even when absent) so that the numbering matches Caddy's.
  std::map<std::string, std::string> groups;
  for (const char* me : {"handle", "rewrite", "root"}) {
    int count = 0;
    for (const auto& v : vals) count += v.directive == me;
    std::string name;
    if (count > 1 || std::string(me) == "rewrite")
      name = "group" + std::to_string(group_counter_++);
    groups[me] = name;
  }
  Subroute sub;
  for (auto& v : vals) {
    if (auto it = groups.find(v.directive); it != groups.end()) v.route.group = it->second;
    sub.routes.push_back(std::move(v.route));
  }
  // consolidateRoutes: merge neighbours with the same matchers, terminal flag and group.
  auto same_match = [](const Route& a, const Route& b) {
    if (a.match.size() != b.match.size()) return false;
    for (size_t i = 0; i < a.match.size(); ++i)
      if (matcher_to_json(a.match[i]) != matcher_to_json(b.match[i])) return false;
    return true;
  };
  for (size_t i = 0; i + 1 < sub.routes.size();) {
    Route& a = sub.routes[i];
    Route& b = sub.routes[i + 1];
    if (same_match(a, b) && a.terminal == b.terminal && a.group == b.group) {
      for (auto& h : b.handle) a.handle.push_back(std::move(h));
      sub.routes.erase(sub.routes.begin() + static_cast<long>(i) + 1);
    } else {
      ++i;
    }
  }
  return sub;
}

// `extras` is null inside handle/route blocks, where site-level directives are not allowed.
void Compiler::directive(const Directive& d, const MatcherDefs& defs, SiteExtras* extras,
                         std::vector<RouteVal>& out) {
  const std::string& n = d.name.text;
  if ((n == "bind" || n == "log" || n == "tls") && !extras) {
    error(d.name,
          "directive '" + n + "' is not an ordered HTTP handler, so it cannot be used here");
    return;
  }
  if (n == "bind") return bind(d, *extras);
  if (n == "log") {
    if (extras->log) {
      error(d.name, "only one log directive per site is supported yet by hsp-gateway");
      return;
    }
    AccessLog log;
    if (site_log(d, log)) extras->log = log;
    return;
  }
  if (n == "tls") {
    if (extras->tls) {
      error(d.name, "only one tls directive per site is supported by hsp-gateway");
      return;
    }
    SiteTls t;
    if (tls_directive(d, t)) extras->tls = t;
    return;
  }
  if (n == "handle_path") return handle_path(d, defs, out);
  static const std::set<std::string> handlers = {"respond",      "redir",   "header",
                                                 "request_body", "rewrite", "uri",
                                                 "handle",       "route",   "reverse_proxy"};
  if (!handlers.count(n)) {
    // A directive Caddy has is "not supported yet"; a name Caddy does not know is a typo (or a
    // plugin's directive), and saying "not yet" would mislead.
    const auto& known = caddy_directive_order();
    static const std::set<std::string> unordered = {"bind", "tls", "log", "handle_errors",
                                                    "import"};
    if (std::find(known.begin(), known.end(), n) != known.end() || unordered.count(n)) {
      error(d.name, "directive '" + n + "' is not supported yet by hsp-gateway");
    } else {
      error(d.name, "unknown directive '" + n + "': Caddy 2.6 has no such directive");
    }
    return;
  }
  std::vector<MatcherSet> match;
  size_t first = 0;
  if (!extract_matcher(d, defs, match, first)) return;
  handler(d, first, match, defs, out);
}

// One handler directive whose matcher token (if any) is already resolved into `match`.
void Compiler::handler(const Directive& d, size_t first, const std::vector<MatcherSet>& match,
                       const MatcherDefs& defs, std::vector<RouteVal>& out) {
  const std::string& n = d.name.text;
  if (n == "respond") {
    StaticResponse r;
    if (respond(d, first, r)) add_route(out, d, match, r);
  } else if (n == "redir") {
    StaticResponse r;
    if (redir(d, first, r)) add_route(out, d, match, r);
  } else if (n == "header") {
    header(d, first, match, out);
  } else if (n == "request_body") {
    RequestBody rb;
    if (request_body(d, first, rb)) add_route(out, d, match, rb);
  } else if (n == "rewrite") {
    Rewrite rw;
    if (rewrite(d, first, rw)) add_route(out, d, match, rw);
  } else if (n == "uri") {
    Rewrite rw;
    if (uri(d, first, rw)) add_route(out, d, match, rw);
  } else if (n == "handle" || n == "route") {
    handle_or_route(d, first, match, defs, out);
  } else if (n == "reverse_proxy") {
    ReverseProxy rp;
    rp.loc = d.name.loc;
    if (reverse_proxy(d, first, rp)) add_route(out, d, match, std::move(rp));
  }
}

// ---------------------------------------------------------------------------------------------
// Sites and servers.

void Compiler::site(const caddyfile::ServerBlock& sb) {
  Site site;
  site.loc = sb.loc;
  std::vector<SiteKey> keys;
  for (const auto& k : sb.keys) {
    if (std::optional<SiteKey> sk = site_key(k, site)) keys.push_back(*sk);
  }
  std::vector<Directive> dirs = sb.directives;
  for (auto& d : dirs) expand_tokens(d);
  MatcherDefs defs;
  SiteExtras extras;
  std::vector<RouteVal> vals = directives(dirs, defs, &extras);
  site.bind = extras.bind;
  if (extras.log) site.log = *extras.log;
  if (extras.tls) site.tls = *extras.tls;
  cfg_.sites.push_back(std::move(site));
  site_keys_.push_back(std::move(keys));
  site_vals_.push_back(std::move(vals));
}

// Parses one site key and appends its Address to `site`; nullopt (with an error) if it is
// not a key hsp-gateway can serve.
std::optional<SiteKey> Compiler::site_key(const Token& k, Site& site) {
  const std::string http_port = std::to_string(cfg_.global.http_port);
  const std::string https_port = std::to_string(cfg_.global.https_port);
  if (!k.text.empty() && k.text[0] == '@') {
    error(k, "cannot define a matcher outside of a site block: '" + k.text + "'");
    return std::nullopt;
  }
  RawAddress ra;
  std::string err;
  if (!parse_site_address(k.text, ra, err)) {
    error(k, "bad site address '" + k.text + "': " + err);
    return std::nullopt;
  }
  if (ra.scheme != "" && ra.scheme != "http" && ra.scheme != "https") {
    error(k, "site address '" + k.text + "' has an unsupported scheme '" + ra.scheme + "'");
    return std::nullopt;
  }
  std::string ln_port = !ra.port.empty() ? ra.port : ra.scheme == "http" ? http_port : https_port;
  if ((ra.scheme == "http" && ln_port == https_port) ||
      (ra.scheme == "https" && ln_port == http_port)) {
    error(k, "[" + k.text + "] scheme and port violate convention");
    return std::nullopt;
  }
  if (ra.host.empty() && ra.port.empty() && ra.scheme.empty()) {
    error(k, "site address '" + k.text + "' names neither a host nor a port");
    return std::nullopt;
  }
  SiteKey sk;
  sk.raw = ra;
  sk.listen_port = static_cast<uint16_t>(std::stoi(ln_port));
  sk.https = qualifies_for_https(ra, ln_port, http_port, https_port);
  if (sk.https) site.https = true;
  Address a;
  a.original = ra.original;
  a.scheme = ra.scheme;
  a.host = ra.host;
  a.port = ra.port.empty() ? 0 : static_cast<uint16_t>(std::stoi(ra.port));
  a.path = ra.path;
  a.loc = k.loc;
  site.addresses.push_back(a);
  return sk;
}

void Compiler::derive_servers() {
  struct Member {
    size_t site;
    std::vector<RawAddress> keys;
  };
  std::map<std::pair<uint16_t, std::string>, std::vector<Member>> by_listener;
  for (size_t i = 0; i < cfg_.sites.size(); ++i) {
    std::vector<std::string> binds = cfg_.sites[i].bind;
    if (binds.empty()) binds.push_back("");
    for (const auto& sk : site_keys_[i]) {
      for (const auto& b : binds) {
        auto& members = by_listener[{sk.listen_port, b}];
        if (members.empty() || members.back().site != i) members.push_back({i, {}});
        members.back().keys.push_back(sk.raw);
      }
    }
  }
  for (auto& [listener, members] : by_listener) {
    // Two sites claiming the same key on one socket would make lookup ambiguous; the later
    // site is named. Hashed: a Swarm with 10 000 labelled services gives 10 000 sites here.
    std::unordered_map<std::string_view, size_t> claimed;
    for (size_t m = 0; m < members.size(); ++m) {
      for (const auto& k : members[m].keys) {
        auto [it, fresh] = claimed.emplace(k.original, m);
        if (!fresh && it->second != m) {
          error(cfg_.sites[members[m].site].loc, "ambiguous site definition: " + k.original);
        }
      }
    }
    // Caddy's site order within a server: most specific host first, wildcard hosts after
    // exact ones, catch-all sites last; longer path first on equal hosts.
    go_stable_sort(members, [](const Member& i, const Member& j) {
      auto summarize = [](const Member& m, std::string& host, std::string& path, bool& wild) {
        for (const auto& k : m.keys) {
          if (k.host.find('*') != std::string::npos || k.host.empty()) wild = true;
          if (specificity(k.host) > specificity(host)) host = k.host;
          if (specificity(k.path) > specificity(path)) path = k.path;
        }
      };
      std::string ih, ip, jh, jp;
      bool iw = false, jw = false;
      summarize(i, ih, ip, iw);
      summarize(j, jh, jp, jw);
      if (specificity(ih) == 0) return false;
      if (specificity(jh) == 0) return true;
      if (iw != jw) return jw && !iw;
      if (specificity(ih) == specificity(jh)) return ip.size() > jp.size();
      return specificity(ih) > specificity(jh);
    });
    Server srv;
    srv.port = listener.first;
    srv.bind_host = listener.second;
    for (const auto& m : members) srv.sites.push_back(m.site);
    cfg_.servers.push_back(std::move(srv));
  }
  std::stable_sort(cfg_.servers.begin(), cfg_.servers.end(), [](const Server& a, const Server& b) {
    return std::tie(a.port, a.bind_host) < std::tie(b.port, b.bind_host);
  });
}

Result<Config> Compiler::run(const caddyfile::File& file) {
  if (file.has_global_options) global_options(file.global_options);
  for (const auto& sb : file.blocks) {
    if (sb.keys.empty()) {
      error(sb.loc,
            "server block without any key is global configuration, and if used, it "
            "must be first");
      continue;
    }
    site(sb);
  }
  derive_servers();
  build_site_routes();
  derive_tls();
  add_redirects();
  if (!errs_.empty()) return errs_;
  return std::move(cfg_);
}

// Site-level subroutes are built after every directive was parsed and in Caddy's server order
// (listener address as text, then site priority), so that group numbers come out as Caddy
// numbers them. Only the names differ otherwise; grouping is the same.
void Compiler::build_site_routes() {
  std::vector<const Server*> by_listen;
  for (const auto& s : cfg_.servers) by_listen.push_back(&s);
  auto listen_text = [](const Server* s) {
    std::string h =
        s->bind_host.find(':') != std::string::npos ? "[" + s->bind_host + "]" : s->bind_host;
    return h + ":" + std::to_string(s->port);
  };
  std::stable_sort(by_listen.begin(), by_listen.end(), [&](const Server* a, const Server* b) {
    return listen_text(a) < listen_text(b);
  });
  std::vector<bool> built(cfg_.sites.size(), false);
  auto build = [&](size_t i) {
    if (built[i]) return;
    built[i] = true;
    cfg_.sites[i].routes = build_subroute(std::move(site_vals_[i])).routes;
  };
  for (const Server* s : by_listen)
    for (size_t i : s->sites) build(i);
  for (size_t i = 0; i < cfg_.sites.size(); ++i) build(i);
}

}  // namespace compile_detail

Result<Config> compile(const caddyfile::File& file) {
  compile_detail::Compiler c;
  return c.run(file);
}

}  // namespace hsp::config
