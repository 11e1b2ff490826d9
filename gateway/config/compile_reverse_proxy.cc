// reverse_proxy: upstreams, load balancing, active and passive health checks, header_up/down,
// flush_interval, trusted_proxies and the http transport (with TLS and HTTP versions).
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "config/address.h"
#include "config/compile.h"
#include "config/compile_internal.h"

namespace hsp::config::compile_detail {

bool Compiler::reverse_proxy(const Directive& d, size_t first, ReverseProxy& rp) {
  bool ok = true;
  std::string common_scheme;
  for (size_t i = first; i < d.args.size(); ++i) ok &= upstream(d.args[i], common_scheme, rp);

  OpsAcc up, down;
  bool have_policy = false, have_transport = false;
  const Directive* transport_dir = nullptr;
  auto first_time = [&](const Directive& sub, bool& seen, const std::string& what) {
    if (seen) error(sub.name, what + " already specified");
    return !std::exchange(seen, true);
  };
  for (const auto& sub : d.block) {
    const std::string& n = sub.name.text;
    if (std::optional<bool> health = health_option(sub, rp)) {
      ok &= *health;
    } else if (!n.empty() && n[0] == '@') {
      error(sub.name, "response matchers in reverse_proxy are not supported yet by hsp-gateway");
      ok = false;
    } else if (n == "to") {
      if (sub.args.empty()) {
        wrong_arg_count(sub);
        ok = false;
      }
      for (const auto& a : sub.args) ok &= upstream(a, common_scheme, rp);
      ok &= no_block(sub);
    } else if (n == "lb_policy") {
      ok &= first_time(sub, have_policy, "load balancing selection policy") && lb_policy(sub, rp);
    } else if (n == "lb_try_duration") {
      ok &= duration_arg(sub, rp.lb_try_duration);
    } else if (n == "lb_try_interval") {
      ok &= duration_arg(sub, rp.lb_try_interval);
    } else if (n == "flush_interval") {
      ok &= flush_interval(sub, rp.flush_interval);
    } else if (n == "trusted_proxies") {
      ok &= no_block(sub) && ip_ranges(sub, 0, rp.trusted_proxies, "trusted_proxies");
    } else if (n == "header_up" || n == "header_down") {
      if (!arg_count(sub, 0, 1, 3) || !no_block(sub)) {
        ok = false;
        continue;
      }
      std::string value = sub.args.size() > 1 ? sub.args[1].text : "";
      std::string repl = sub.args.size() > 2 ? sub.args[2].text : "";
      std::string err;
      if (!apply_header_op(n == "header_up" ? up : down, false, sub.args[0].text, value, repl,
                           sub.args[0].loc, err)) {
        error(sub.args[0], err);
        ok = false;
      }
    } else if (n == "transport") {
      bool first = first_time(sub, have_transport, "transport");
      if (first) transport_dir = &sub;
      ok &= first && transport(sub, rp.transport);
    } else {
      unsupported_sub(d, sub);
      ok = false;
    }
  }
  rp.header_up = up.finish();
  rp.header_down = down.finish();
  ok &= upstream_scheme(common_scheme, transport_dir, d, rp.transport);
  // No upstream at all is valid, as in Caddy: every request gets 503. It is what
  // `{{upstreams}}` gives a labelled service with no running task; the site must stay.
  return ok;
}

// What the upstreams' common scheme means for the transport, after the whole block is read
// (Caddy's UnmarshalCaddyfile epilogue): https:// turns TLS on, h2c:// sets versions to
// {"h2c", "2"} whatever was written, http:// with a TLS transport is an error.
bool Compiler::upstream_scheme(const std::string& scheme, const Directive* transport_dir,
                               const Directive& d, HttpTransport& t) {
  // Caddy reports at the end of the directive; the transport line is where the fix goes.
  const Token& where = transport_dir != nullptr ? transport_dir->name : d.name;
  if (scheme == "https") {
    t.tls = true;
  } else if (scheme == "http" && t.tls) {
    error(where,
          "upstream address scheme is HTTP but transport is configured for HTTP+TLS "
          "(HTTPS)");
    return false;
  } else if (scheme == "h2c") {
    // Caddy accepts this and, as its TLS transport never hands requests to the h2c one, ends
    // up speaking h2 over TLS to an h2c:// address; refused here as the contradiction it is.
    if (t.tls) {
      error(where,
            "upstream address scheme is h2c (cleartext HTTP/2) but transport is "
            "configured for HTTP+TLS (HTTPS)");
      return false;
    }
    t.versions = {"h2c", "2"};
  }
  return true;
}

// One static upstream, from an argument of reverse_proxy or `to`. HTTP, HTTPS and h2c over TCP
// to a fixed address are supported; everything else is refused by name rather than half-served.
bool Compiler::upstream(const Token& t, std::string& common_scheme, ReverseProxy& rp) {
  const std::string& s = t.text;
  if (s.rfind("srv+", 0) == 0) {
    error(t, "SRV upstreams ('" + s + "') are not supported yet by hsp-gateway");
    return false;
  }
  UpstreamAddress ua;
  std::string err;
  if (!parse_upstream_address(s, ua, err)) {
    error(t, "bad upstream address '" + s + "': " + err);
    return false;
  }
  std::string problem;
  if (!ua.scheme.empty() && ua.scheme != "http" && ua.scheme != "https" && ua.scheme != "h2c") {
    problem = "unsupported scheme '" + ua.scheme + "://'";
  } else if (ua.network == "unix") {
    problem = "unix socket upstreams are not supported yet by hsp-gateway";
  } else if (!ua.network.empty()) {
    problem = "network '" + ua.network + "/' is not supported yet by hsp-gateway";
  } else if (ua.dial.find('{') != std::string::npos) {
    problem = "placeholders in upstream addresses are not supported yet by hsp-gateway";
  }
  if (!problem.empty()) {
    error(t, "upstream '" + s + "': " + problem);
    return false;
  }
  // As in Caddy, only a non-empty scheme seen earlier is binding: "a:1 http://b" passes,
  // "http://b a:1" does not.
  if (!common_scheme.empty() && ua.scheme != common_scheme) {
    error(t,
          "for now, all proxy upstreams must use the same scheme (transport protocol); "
          "expecting '" +
              common_scheme + "://' but got '" + ua.scheme + "://'");
    return false;
  }
  common_scheme = ua.scheme;
  rp.upstreams.push_back(Upstream{ua.dial, t.loc});
  return true;
}

// Active (health_*) and passive (max_fails, fail_duration, unhealthy_*) health options.
// Returns nullopt when `sub` is not one of them, else whether it was valid.
std::optional<bool> Compiler::health_option(const Directive& sub, ReverseProxy& rp) {
  const std::string& n = sub.name.text;
  if (n == "health_uri") return one_arg(sub, rp.active.uri);
  if (n == "health_port") {
    int p = 0;
    if (!int_arg(sub, p, 1, 65535)) return false;
    rp.active.port = p;
    return true;
  }
  if (n == "health_interval") return duration_arg(sub, rp.active.interval);
  if (n == "health_timeout") return duration_arg(sub, rp.active.timeout);
  if (n == "health_status") {
    std::string v;
    if (!one_arg(sub, v)) return false;
    if (!parse_status_or_class(v, rp.active.expect_status)) {
      error(sub.args[0], "bad status value '" + v +
                             "' for 'health_status' (a code like 200 or a class like 2xx)");
      return false;
    }
    return true;
  }
  if (n == "health_body") return one_arg(sub, rp.active.expect_body);
  if (n == "health_headers") {
    if (!arg_count(sub, 0, 0, 0)) return false;
    for (const auto& h : sub.block) {
      if (h.args.empty()) {
        rp.active.headers.emplace_back(h.name.text, "");
      } else {
        for (const auto& v : h.args) rp.active.headers.emplace_back(h.name.text, v.text);
      }
    }
    return true;
  }
  if (n == "max_fails") return int_arg(sub, rp.passive.max_fails, 0, kNoMax);
  if (n == "fail_duration") return duration_arg(sub, rp.passive.fail_duration);
  if (n == "unhealthy_request_count")
    return int_arg(sub, rp.passive.unhealthy_request_count, 0, kNoMax);
  if (n == "unhealthy_status") return status_list(sub, rp.passive.unhealthy_status);
  if (n == "unhealthy_latency") return duration_arg(sub, rp.passive.unhealthy_latency);
  return std::nullopt;
}

bool Compiler::status_list(const Directive& sub, std::vector<int>& out) {
  if (sub.args.empty()) {
    wrong_arg_count(sub);
    return false;
  }
  for (const auto& a : sub.args) {
    int code = 0;
    if (!parse_status_or_class(a.text, code)) {
      error(a, "bad status value '" + a.text + "' for '" + sub.name.text +
                   "' (a code like 502 or a class like 5xx)");
      return false;
    }
    out.push_back(code);
  }
  return no_block(sub);
}

bool Compiler::flush_interval(const Directive& sub, std::optional<Duration>& out) {
  std::string v;
  if (!one_arg(sub, v)) return false;
  int iv = 0;
  Duration dur{0};
  if (parse_int(v, iv)) {
    out = Duration(iv);  // Caddy: a bare integer is nanoseconds (-1: always)
  } else if (parse_duration(v, dur)) {
    out = dur;
  } else {
    error(sub.args[0], "bad duration '" + v + "' for 'flush_interval'");
    return false;
  }
  return true;
}

bool Compiler::lb_policy(const Directive& d, ReverseProxy& rp) {
  if (!no_block(d)) return false;
  if (d.args.empty()) {
    wrong_arg_count(d);
    return false;
  }
  const Token& p = d.args[0];
  static const std::map<std::string, LbPolicy> simple = {
      {"random", LbPolicy::random},         {"round_robin", LbPolicy::round_robin},
      {"least_conn", LbPolicy::least_conn}, {"first", LbPolicy::first},
      {"ip_hash", LbPolicy::ip_hash},       {"client_ip_hash", LbPolicy::client_ip_hash},
      {"uri_hash", LbPolicy::uri_hash},
  };
  if (auto it = simple.find(p.text); it != simple.end()) {
    if (!arg_count(d, 0, 1, 1)) return false;
    rp.lb_policy = it->second;
  } else if (p.text == "header") {
    if (!arg_count(d, 0, 2, 2)) return false;
    rp.lb_policy = LbPolicy::header;
    rp.lb_key = d.args[1].text;
  } else if (p.text == "cookie") {
    if (!arg_count(d, 0, 1, 3)) return false;
    rp.lb_policy = LbPolicy::cookie;
    rp.lb_key = d.args.size() > 1 ? d.args[1].text : "lb";  // Caddy's default cookie name
    if (d.args.size() > 2) rp.lb_secret = d.args[2].text;
  } else {
    error(p, "unknown lb_policy '" + p.text +
                 "' (supported: random, round_robin, least_conn, first, ip_hash, "
                 "client_ip_hash, uri_hash, header, cookie)");
    return false;
  }
  return true;
}

bool Compiler::transport(const Directive& d, HttpTransport& t) {
  if (d.args.empty()) {
    wrong_arg_count(d);
    return false;
  }
  if (d.args[0].text != "http") {
    error(d.args[0], "transport '" + d.args[0].text + "' is not supported yet by hsp-gateway");
    return false;
  }
  if (!arg_count(d, 0, 1, 1)) return false;
  bool ok = true;
  for (const auto& sub : d.block) {
    const std::string& n = sub.name.text;
    if (n == "dial_timeout") {
      ok &= duration_arg(sub, t.dial_timeout);
    } else if (n == "response_header_timeout") {
      ok &= duration_arg(sub, t.response_header_timeout);
    } else if (n == "read_timeout") {
      ok &= duration_arg(sub, t.read_timeout);
    } else if (n == "write_timeout") {
      ok &= duration_arg(sub, t.write_timeout);
    } else if (n == "keepalive") {
      // Caddy replaces its whole KeepAlive default when any keepalive option is written, so
      // e.g. `keepalive 30s` there also drops the per-host idle limit to Go's default of 2.
      // Here only the written field changes; the others keep Caddy's defaults (32 per host).
      if (sub.args.size() == 1 && sub.args[0].text == "off" && !sub.has_block) {
        t.keepalive = false;
      } else {
        ok &= duration_arg(sub, t.keepalive_idle);
      }
    } else if (n == "keepalive_idle_conns") {
      ok &= int_arg(sub, t.keepalive_idle_conns, 0, kNoMax);
    } else if (n == "keepalive_idle_conns_per_host") {
      ok &= int_arg(sub, t.keepalive_idle_conns_per_host, 0, kNoMax);
    } else if (n == "max_conns_per_host") {
      ok &= int_arg(sub, t.max_conns_per_host, 0, kNoMax);
    } else if (std::optional<bool> tls = transport_tls_option(sub, t)) {
      ok &= *tls;
    } else if (n == "versions") {
      ok &= versions(sub, t.versions);
    } else {
      unsupported_sub(d, sub);
      ok = false;
    }
  }
  return ok;
}

// The TLS options of `transport http` that hsp-gateway implements. Each one turns TLS on, as
// in Caddy, where any of them creates the transport's TLS config. Returns nullopt when `sub`
// is not one of them, else whether it was valid. Not supported yet (refused by name):
// tls_client_auth, tls_renegotiation, tls_except_ports.
std::optional<bool> Compiler::transport_tls_option(const Directive& sub, HttpTransport& t) {
  const std::string& n = sub.name.text;
  bool ok = true;
  if (n == "tls") {
    ok = no_args(sub);
  } else if (n == "tls_server_name") {
    ok = one_arg(sub, t.tls_server_name);
  } else if (n == "tls_insecure_skip_verify") {
    ok = no_args(sub);
    if (ok) t.tls_insecure_skip_verify = true;
  } else if (n == "tls_timeout") {
    ok = duration_arg(sub, t.tls_timeout);
  } else if (n == "tls_trusted_ca_certs") {
    if (sub.args.empty()) {
      wrong_arg_count(sub);
      return false;
    }
    if (!no_block(sub)) return false;
    for (const auto& a : sub.args) ok &= readable_file(a, "tls_trusted_ca_certs");
    if (ok)
      for (const auto& a : sub.args) t.tls_trusted_ca_certs.push_back(a.text);
  } else {
    return std::nullopt;
  }
  if (ok) t.tls = true;
  return ok;
}

// Caddy reads the CA files when the transport is provisioned, so a missing file fails the
// config load there; here it fails at compile time, at the argument that names it. Only
// existence and readability are checked: the PEM is parsed when the data plane builds its TLS
// client context. Relative paths are relative to the working directory, as in Caddy.
bool Compiler::readable_file(const Token& t, const std::string& what) {
  std::error_code ec;
  const std::filesystem::path p(t.text);
  auto st = std::filesystem::status(p, ec);
  std::string problem;
  if (ec || !std::filesystem::exists(st)) {
    problem = "no such file";
  } else if (std::filesystem::is_directory(st)) {
    problem = "it is a directory";
  } else if (!std::ifstream(p, std::ios::binary).is_open()) {
    problem = "cannot be read";
  }
  if (problem.empty()) return true;
  error(t, what + ": cannot use '" + t.text + "': " + problem);
  return false;
}

// `versions 1.1 2 h2c`: the HTTP versions allowed to the upstream (see upstream_proto()).
// Caddy 2.6 stores any word; only the ones its transport acts on are accepted here.
bool Compiler::versions(const Directive& sub, std::vector<std::string>& out) {
  if (sub.args.empty()) {
    wrong_arg_count(sub);
    return false;
  }
  if (!no_block(sub)) return false;
  bool ok = true;
  std::vector<std::string> vs;
  for (const auto& a : sub.args) {
    if (a.text == "1.1" || a.text == "2" || a.text == "h2c") {
      vs.push_back(a.text);
    } else if (a.text == "3") {
      error(a, "HTTP/3 to upstreams ('versions 3') is not supported yet by hsp-gateway");
      ok = false;
    } else {
      error(a, "unknown HTTP version '" + a.text + "' for 'versions' (expected 1.1, 2, h2c or 3)");
      ok = false;
    }
  }
  if (ok) out = std::move(vs);  // a later `versions` line replaces an earlier one, as in Caddy
  return ok;
}

}  // namespace hsp::config::compile_detail
