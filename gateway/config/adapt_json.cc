// Config -> JSON in the shape of Caddy's own adapted JSON where there is a natural counterpart
// (apps.http.servers.srvN.listen, routes with match/handle/group/terminal, handler names,
// upstreams with dial), with hsp-specific additions (a "global" object, per-server "sites").
// Key order is fixed by construction (ordered_json); handler fields are printed with their
// defaults so that the output says what the gateway will do.
#include <algorithm>
#include <type_traits>
#include <variant>

#include <nlohmann/json.hpp>

#include "config/adapt_json.h"
#include "config/json_internal.h"
#include "config/units.h"

namespace hsp::config {
namespace {

Json dur(Duration d) {
  return format_go_duration(d);
}

Json strings(const std::vector<std::string>& v) {
  Json a = Json::array();
  for (const auto& s : v) a.push_back(s);
  return a;
}

Json header_ops_json(const HeaderOps& h, bool response) {
  Json j = Json::object();
  Json add = Json::object(), set = Json::object(), del = Json::array(), repl = Json::object();
  Json require = Json::object();
  for (const auto& op : h.ops) {
    switch (op.kind) {
      case HeaderOp::Kind::add:
        if (!add.contains(op.field)) add[op.field] = Json::array();
        add[op.field].push_back(op.value);
        break;
      case HeaderOp::Kind::set:
        set[op.field] = Json::array({op.value});
        break;
      case HeaderOp::Kind::set_default:
        set[op.field] = Json::array({op.value});
        require[op.field] = nullptr;
        break;
      case HeaderOp::Kind::remove:
        del.push_back(op.field);
        break;
      case HeaderOp::Kind::replace: {
        if (!repl.contains(op.field)) repl[op.field] = Json::array();
        Json r = Json::object();
        r[op.regex ? "search_regexp" : "search"] = op.search;
        r["replace"] = op.value;
        repl[op.field].push_back(r);
        break;
      }
    }
  }
  if (!add.empty()) j["add"] = add;
  if (!set.empty()) j["set"] = set;
  if (!del.empty()) j["delete"] = del;
  if (!repl.empty()) j["replace"] = repl;
  if (response) {
    if (!require.empty()) j["require"] = Json{{"headers", require}};
    j["deferred"] = h.deferred;
  }
  return j;
}

const char* policy_name(LbPolicy p) {
  switch (p) {
    case LbPolicy::random:
      return "random";
    case LbPolicy::round_robin:
      return "round_robin";
    case LbPolicy::least_conn:
      return "least_conn";
    case LbPolicy::first:
      return "first";
    case LbPolicy::ip_hash:
      return "ip_hash";
    case LbPolicy::client_ip_hash:
      return "client_ip_hash";
    case LbPolicy::uri_hash:
      return "uri_hash";
    case LbPolicy::header:
      return "header";
    case LbPolicy::cookie:
      return "cookie";
  }
  return "?";
}

Json reverse_proxy_json(const ReverseProxy& rp) {
  Json j = Json::object();
  j["handler"] = "reverse_proxy";
  Json ups = Json::array();
  for (const auto& u : rp.upstreams) ups.push_back(Json{{"dial", u.dial}});
  j["upstreams"] = ups;

  Json pol = Json::object();
  pol["policy"] = policy_name(rp.lb_policy);
  if (rp.lb_policy == LbPolicy::header) pol["field"] = rp.lb_key;
  if (rp.lb_policy == LbPolicy::cookie) {
    pol["name"] = rp.lb_key;
    pol["secret"] = rp.lb_secret;
  }
  j["load_balancing"] = Json{{"selection_policy", pol},
                             {"try_duration", dur(rp.lb_try_duration)},
                             {"try_interval", dur(rp.lb_try_interval)}};

  Json active = Json::object();
  active["uri"] = rp.active.uri;
  active["port"] = rp.active.port ? Json(*rp.active.port) : Json(nullptr);
  active["interval"] = dur(rp.active.interval);
  active["timeout"] = dur(rp.active.timeout);
  active["expect_status"] = rp.active.expect_status;
  active["expect_body"] = rp.active.expect_body;
  Json hh = Json::object();
  for (const auto& [k, v] : rp.active.headers) {
    if (!hh.contains(k)) hh[k] = Json::array();
    hh[k].push_back(v);
  }
  active["headers"] = hh;
  Json passive = Json::object();
  passive["fail_duration"] = dur(rp.passive.fail_duration);
  passive["max_fails"] = rp.passive.max_fails;
  passive["unhealthy_status"] = rp.passive.unhealthy_status;
  passive["unhealthy_latency"] = dur(rp.passive.unhealthy_latency);
  passive["unhealthy_request_count"] = rp.passive.unhealthy_request_count;
  j["health_checks"] = Json{{"active", active}, {"passive", passive}};

  j["headers"] = Json{{"request", header_ops_json(rp.header_up, false)},
                      {"response", header_ops_json(rp.header_down, false)}};
  j["flush_interval"] = rp.flush_interval ? dur(*rp.flush_interval) : Json(nullptr);
  j["trusted_proxies"] = strings(rp.trusted_proxies);

  const HttpTransport& t = rp.transport;
  Json tr = Json::object();
  tr["protocol"] = "http";
  tr["dial_timeout"] = dur(t.dial_timeout);
  tr["response_header_timeout"] = dur(t.response_header_timeout);
  tr["read_timeout"] = dur(t.read_timeout);
  tr["write_timeout"] = dur(t.write_timeout);
  tr["keep_alive"] = Json{{"enabled", t.keepalive},
                          {"idle_timeout", dur(t.keepalive_idle)},
                          {"max_idle_conns", t.keepalive_idle_conns},
                          {"max_idle_conns_per_host", t.keepalive_idle_conns_per_host}};
  tr["max_conns_per_host"] = t.max_conns_per_host;
  // Printed only when written (or implied by the upstreams' scheme), under Caddy's JSON names:
  // a plain transport keeps the shape it had before upstream TLS and h2 existed.
  if (!t.versions.empty()) tr["versions"] = strings(t.versions);
  if (t.tls) {
    tr["tls"] = Json{{"server_name", t.tls_server_name},
                     {"insecure_skip_verify", t.tls_insecure_skip_verify},
                     {"root_ca_pem_files", strings(t.tls_trusted_ca_certs)},
                     {"handshake_timeout", dur(t.tls_timeout)}};
  }
  j["transport"] = tr;
  return j;
}

Json access_log_json(const AccessLog& l) {
  Json j = Json::object();
  j["enabled"] = l.enabled;
  j["output"] = l.output;
  if (l.output == "file") j["file"] = l.file;
  j["format"] = l.format;
  j["level"] = l.level;
  return j;
}

std::string listen_addr(const Server& s) {
  std::string host = s.bind_host;
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return host + ":" + std::to_string(s.port);
}

// The site's own matcher as Caddy builds it (compileEncodedMatcherSets): one set per distinct
// address path, holding every host of the site; no host list when any address is catch-all.
Json site_match_json(const Site& site) {
  struct Pair {
    std::vector<std::string> hosts;
    std::string path;
  };
  std::vector<Pair> pairs;
  bool catch_all = false;
  for (const auto& a : site.addresses) {
    Pair* chosen = nullptr;
    for (auto& p : pairs)
      if (p.path == a.path) chosen = &p;
    if (!chosen) {
      pairs.push_back({{}, a.path});
      chosen = &pairs.back();
    }
    if (a.host.empty() && !catch_all) {
      chosen->hosts.clear();
      catch_all = true;
    }
    if (catch_all) continue;
    if (std::find(chosen->hosts.begin(), chosen->hosts.end(), a.host) == chosen->hosts.end())
      chosen->hosts.push_back(a.host);
  }
  Json out = Json::array();
  for (const auto& p : pairs) {
    Json m = Json::object();
    if (!p.hosts.empty()) m["host"] = strings(p.hosts);
    if (!p.path.empty()) m["path"] = Json::array({p.path});
    if (!m.empty()) out.push_back(m);
  }
  return out;
}

// Whether `caddy adapt` prints this server's tls_connection_policies (httptype.go): when a
// site asks for something (a certificate pair, protocols), with `auto_https off`, or when
// automatic HTTPS would not add the catch-all policy itself (a key without a host, on a port
// other than the HTTPS port, e.g. `https://:9443`). Otherwise automatic HTTPS adds it at
// provisioning and adapt shows none; the model always has it.
bool prints_conn_policies(const Config& cfg, const Server& s) {
  for (const auto& p : s.tls_policies)
    if (!p.tag.empty() || !p.protocol_min.empty() || !p.protocol_max.empty()) return true;
  if (cfg.global.auto_https == AutoHttps::off) return true;
  for (size_t idx : s.sites) {
    const Site& site = cfg.sites[idx];
    if (site.synthetic_redirect) continue;
    for (const auto& a : site.addresses) {
      uint16_t port = a.port != 0          ? a.port
                      : a.scheme == "http" ? cfg.global.http_port
                                           : cfg.global.https_port;
      if (port == s.port && a.host.empty() && port != cfg.global.https_port) return true;
    }
  }
  return false;
}

Json conn_policies_json(const Server& s) {
  Json out = Json::array();
  for (const auto& p : s.tls_policies) {
    if (p.names.empty()) continue;
    if (p.tag.empty() && p.protocol_min.empty() && p.protocol_max.empty()) continue;
    Json j = Json::object();
    j["match"] = Json{{"sni", strings(p.names)}};
    if (!p.tag.empty()) j["certificate_selection"] = Json{{"any_tag", Json::array({p.tag})}};
    if (!p.protocol_min.empty()) j["protocol_min"] = p.protocol_min;
    if (!p.protocol_max.empty()) j["protocol_max"] = p.protocol_max;
    out.push_back(j);
  }
  out.push_back(Json::object());
  return out;
}

// apps.tls as `caddy adapt` writes it: certificate files to load, and automation policies for
// sites that name an issuer. Names left to automatic HTTPS get their policy at provisioning.
Json tls_app_json(const Config& cfg) {
  Json load = Json::array();
  std::vector<std::string> seen_tags;
  std::vector<std::string> internal;
  std::vector<std::pair<std::string, std::vector<std::string>>> by_email;
  auto add_unique = [](std::vector<std::string>& v, const std::vector<std::string>& names) {
    for (const auto& n : names)
      if (std::find(v.begin(), v.end(), n) == v.end()) v.push_back(n);
  };
  for (const auto& s : cfg.servers) {
    for (const auto& p : s.tls_policies) {
      if (!p.tag.empty() &&
          std::find(seen_tags.begin(), seen_tags.end(), p.tag) == seen_tags.end()) {
        seen_tags.push_back(p.tag);
        load.push_back(Json{
            {"certificate", p.cert_file}, {"key", p.key_file}, {"tags", Json::array({p.tag})}});
      }
    }
    for (size_t idx : s.sites) {
      const Site& site = cfg.sites[idx];
      if (!s.tls || site.synthetic_redirect) continue;
      std::vector<std::string> names;
      for (const auto& p : s.tls_policies)
        for (const auto& a : site.addresses)
          if (std::find(p.names.begin(), p.names.end(), a.host) != p.names.end())
            add_unique(names, {a.host});
      // Caddy collects a site's hosts through a Go map (random order); sorted here so that
      // the output is stable and equal to Caddy's whenever Caddy's is deterministic.
      std::sort(names.begin(), names.end());
      if (site.tls.issuer == SiteTls::Issuer::internal) add_unique(internal, names);
      if (site.tls.issuer == SiteTls::Issuer::acme) {
        auto it = std::find_if(by_email.begin(), by_email.end(),
                               [&](const auto& e) { return e.first == site.tls.email; });
        if (it == by_email.end()) {
          by_email.emplace_back(site.tls.email, std::vector<std::string>{});
          it = by_email.end() - 1;
        }
        add_unique(it->second, names);
      }
    }
  }
  Json policies = Json::array();
  if (!internal.empty())
    policies.push_back(Json{{"subjects", strings(internal)},
                            {"issuers", Json::array({Json{{"module", "internal"}}})}});
  for (const auto& [email, names] : by_email) {
    policies.push_back(
        Json{{"subjects", strings(names)},
             {"issuers", Json::array({Json{{"email", email}, {"module", "acme"}},
                                      Json{{"email", email}, {"module", "zerossl"}}})}});
  }
  Json app = Json::object();
  if (!load.empty()) app["certificates"] = Json{{"load_files", load}};
  if (!policies.empty()) app["automation"] = Json{{"policies", policies}};
  return app;
}

}  // namespace

Json matcher_to_json(const MatcherSet& ms) {
  Json j = Json::object();
  if (!ms.host.empty()) j["host"] = strings(ms.host);
  if (!ms.path.empty()) j["path"] = strings(ms.path);
  if (!ms.path_regexp.empty()) {
    // Caddy allows one path_regexp per set; the model keeps a list.
    const auto& pr = ms.path_regexp.front();
    j["path_regexp"] = Json{{"name", pr.name}, {"pattern", pr.pattern}};
  }
  if (!ms.method.empty()) j["method"] = strings(ms.method);
  if (!ms.header.empty()) {
    Json h = Json::object();
    for (const auto& [field, vals] : ms.header) {
      if (!field.empty() && field[0] == '!')
        h[field.substr(1)] = nullptr;  // Caddy's encoding of "field absent"
      else
        h[field] = strings(vals);
    }
    j["header"] = h;
  }
  if (!ms.header_regexp.empty()) {
    Json h = Json::object();
    for (const auto& hr : ms.header_regexp)
      h[hr.field] = Json{{"name", hr.name}, {"pattern", hr.pattern}};
    j["header_regexp"] = h;
  }
  if (!ms.query.empty()) {
    Json q = Json::object();
    for (const auto& [k, v] : ms.query) q[k] = strings(v);
    j["query"] = q;
  }
  if (!ms.remote_ip.empty()) j["remote_ip"] = Json{{"ranges", strings(ms.remote_ip)}};
  if (!ms.client_ip.empty()) j["client_ip"] = Json{{"ranges", strings(ms.client_ip)}};
  if (ms.protocol) j["protocol"] = *ms.protocol;
  if (!ms.not_sets.empty()) {
    Json n = Json::array();
    for (const auto& s : ms.not_sets) n.push_back(matcher_to_json(s));
    j["not"] = n;
  }
  return j;
}

Json handler_to_json(const Handler& h) {
  return std::visit(
      [](const auto& v) -> Json {
        using T = std::decay_t<decltype(v)>;
        Json j = Json::object();
        if constexpr (std::is_same_v<T, StaticResponse>) {
          j["handler"] = "static_response";
          j["status_code"] = v.status;
          Json hs = Json::object();
          for (const auto& [k, val] : v.headers) {
            if (!hs.contains(k)) hs[k] = Json::array();
            hs[k].push_back(val);
          }
          j["headers"] = hs;
          j["body"] = v.body;
          j["close"] = v.close;
        } else if constexpr (std::is_same_v<T, Headers>) {
          j["handler"] = "headers";
          if (!v.request.ops.empty()) j["request"] = header_ops_json(v.request, false);
          if (!v.response.ops.empty() || v.response.deferred)
            j["response"] = header_ops_json(v.response, true);
        } else if constexpr (std::is_same_v<T, Rewrite>) {
          j["handler"] = "rewrite";
          if (!v.uri.empty()) j["uri"] = v.uri;
          if (!v.strip_prefix.empty()) j["strip_path_prefix"] = v.strip_prefix;
          if (!v.strip_suffix.empty()) j["strip_path_suffix"] = v.strip_suffix;
          if (!v.uri_substring.empty()) {
            Json a = Json::array();
            for (const auto& r : v.uri_substring)
              a.push_back(Json{{"find", r.find}, {"replace", r.replace}, {"limit", r.limit}});
            j["uri_substring"] = a;
          }
          if (!v.path_regexp.empty()) {
            Json a = Json::array();
            for (const auto& r : v.path_regexp)
              a.push_back(Json{{"find", r.find}, {"replace", r.replace}});
            j["path_regexp"] = a;
          }
        } else if constexpr (std::is_same_v<T, RequestBody>) {
          j["handler"] = "request_body";
          j["max_size"] = v.max_size;
        } else if constexpr (std::is_same_v<T, Subroute>) {
          j["handler"] = "subroute";
          Json rs = Json::array();
          for (const auto& r : v.routes) rs.push_back(route_to_json(r));
          j["routes"] = rs;
        } else if constexpr (std::is_same_v<T, ReverseProxy>) {
          j = reverse_proxy_json(v);
        }
        return j;
      },
      h);
}

Json route_to_json(const Route& r) {
  Json j = Json::object();
  if (!r.group.empty()) j["group"] = r.group;
  if (!r.match.empty()) {
    Json m = Json::array();
    for (const auto& ms : r.match) m.push_back(matcher_to_json(ms));
    j["match"] = m;
  }
  Json hs = Json::array();
  for (const auto& h : r.handle) hs.push_back(handler_to_json(h));
  j["handle"] = hs;
  if (r.terminal) j["terminal"] = true;
  return j;
}

std::string to_json(const Config& cfg, int indent) {
  const GlobalOptions& g = cfg.global;
  Json global = Json::object();
  global["admin_off"] = g.admin_off;
  global["skip_install_trust"] = g.skip_install_trust;
  global["debug"] = g.debug;
  global["http_port"] = g.http_port;
  global["https_port"] = g.https_port;
  global["grace_period"] = dur(g.grace_period);
  global["email"] = g.email;
  global["order"] = strings(g.order);
  global["log_level"] = g.log_level;
  global["trusted_proxies"] = strings(g.trusted_proxies);
  global["max_header_bytes"] = g.max_header_bytes;
  global["max_header_count"] = g.max_header_count;
  global["max_request_line"] = g.max_request_line;
  global["read_header_timeout"] = dur(g.read_header_timeout);
  global["idle_timeout"] = dur(g.idle_timeout);

  Json servers = Json::object();
  size_t n = 0;
  for (const Server& s : cfg.servers) {
    // Caddy adds the automatic redirects after adapting; `adapt` shows neither them nor the
    // server that only holds them.
    if (s.redirect_only) continue;
    Json sj = Json::object();
    sj["listen"] = Json::array({listen_addr(s)});
    sj["tls"] = s.tls;
    Json sites = Json::array();
    for (size_t idx : s.sites) {
      const Site& site = cfg.sites[idx];
      if (site.synthetic_redirect) continue;
      Json st = Json::object();
      st["site"] = idx;
      Json addrs = Json::array();
      for (const auto& a : site.addresses) addrs.push_back(a.original);
      st["addresses"] = addrs;
      if (!site.bind.empty()) st["bind"] = strings(site.bind);
      st["match"] = site_match_json(site);
      Json rs = Json::array();
      for (const auto& r : site.routes) rs.push_back(route_to_json(r));
      st["routes"] = rs;
      st["log"] = access_log_json(site.log);
      sites.push_back(st);
    }
    sj["sites"] = sites;
    if (s.tls && prints_conn_policies(cfg, s))
      sj["tls_connection_policies"] = conn_policies_json(s);
    if (g.auto_https == AutoHttps::off) sj["automatic_https"] = Json{{"disable", true}};
    if (g.auto_https == AutoHttps::disable_redirects)
      sj["automatic_https"] = Json{{"disable_redirects", true}};
    if (g.protocols_set) sj["protocols"] = strings(g.protocols);
    servers["srv" + std::to_string(n++)] = sj;
  }
  Json root = Json::object();
  root["global"] = global;
  root["apps"] = Json{{"http", Json{{"servers", servers}}}};
  if (Json tls = tls_app_json(cfg); !tls.empty()) root["apps"]["tls"] = tls;
  return root.dump(indent) + "\n";
}

}  // namespace hsp::config
