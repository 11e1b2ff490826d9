// The TLS side of the config compiler: the `tls` directive, the `auto_https` and
// `servers { protocols }` options, which servers terminate TLS with which policies, and the
// HTTP->HTTPS redirects Caddy 2.6 adds while provisioning (modules/caddyhttp/autohttps.go).
// The model only; the certificates themselves are gateway/tls's business.
#include <arpa/inet.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "config/compile_internal.h"

namespace hsp::config::compile_detail {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_ip(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// certmagic.SubjectQualifiesForPublicCert, negated: names no public CA will certify. Caddy
// gives these to its internal issuer; everything else would go to ACME.
bool internal_name(const std::string& host) {
  return host == "localhost" || ends_with(host, ".localhost") || ends_with(host, ".local") ||
         ends_with(host, ".internal") || ends_with(host, ".home.arpa") || is_ip(host);
}

// A host the user's HTTP site at `key` answers before Caddy's appended redirect routes would.
bool covers(const RawAddress& key, const std::string& host) {
  if (!key.path.empty()) return false;  // other paths still reach the redirect
  if (key.host.empty() || key.host == host) return true;
  if (key.host.rfind("*.", 0) == 0) {
    size_t dot = host.find('.');
    return dot != std::string::npos && host.substr(dot + 1) == key.host.substr(2);
  }
  return false;
}

}  // namespace

bool qualifies_for_https(const RawAddress& ra, const std::string& ln_port,
                         const std::string& http_port, const std::string& https_port) {
  return ra.scheme == "https" ||
         (ra.scheme != "http" && !ra.host.empty() && ra.port != http_port) ||
         (ra.scheme.empty() && ln_port == https_port);
}

// `auto_https off|disable_redirects|ignore_loaded_certs|disable_certs` (Caddy 2.6).
void Compiler::auto_https_option(const Directive& d) {
  std::string v;
  if (!one_arg(d, v) || !no_block(d)) return;
  if (v == "off") {
    cfg_.global.auto_https = AutoHttps::off;
  } else if (v == "disable_redirects") {
    cfg_.global.auto_https = AutoHttps::disable_redirects;
  } else if (v == "ignore_loaded_certs" || v == "disable_certs") {
    error(d.args[0], "auto_https " + v + " is not supported yet by hsp-gateway");
  } else {
    error(d.args[0],
          "auto_https must be one of 'off', 'disable_redirects', "
          "'ignore_loaded_certs' or 'disable_certs'; got '" +
              v + "'");
  }
}

void Compiler::protocols_option(const Directive& d) {
  if (!no_block(d) || !arg_count(d, 0, 1, 4)) return;
  std::vector<std::string> out;
  for (const auto& a : d.args) {
    static const std::set<std::string> known = {"h1", "h2", "h2c", "h3"};
    if (!known.count(a.text)) {
      error(a, "unknown protocol '" + a.text + "' (expected h1, h2, h2c or h3)");
      return;
    }
    if (std::find(out.begin(), out.end(), a.text) != out.end()) {
      error(a, "protocol '" + a.text + "' is listed more than once");  // as Caddy 2.6
      return;
    }
    out.push_back(a.text);
  }
  auto has = [&](const char* p) { return std::find(out.begin(), out.end(), p) != out.end(); };
  if ((has("h2") || has("h2c")) && !has("h1")) {
    // Caddy 2.6 refuses it too: Go's server speaks HTTP/2 only beside HTTP/1.1.
    error(d.args.front(), "cannot enable HTTP/2 or H2C without enabling HTTP/1.1");
    return;
  }
  cfg_.global.protocols = out;
  cfg_.global.protocols_set = true;
}

// Caddy 2.6's `tls` directive: `tls internal`, `tls EMAIL`, `tls CERT KEY`, then an optional
// block. Subdirectives not listed here are refused by name rather than ignored: each changes
// which certificate a client gets or who may connect.
bool Compiler::tls_directive(const Directive& d, SiteTls& out) {
  out.written = true;
  out.loc = d.name.loc;
  if (d.args.size() == 1) {
    const std::string& a = d.args[0].text;
    if (a == "internal") {
      out.issuer = SiteTls::Issuer::internal;
    } else if (a.find('@') != std::string::npos) {
      out.issuer = SiteTls::Issuer::acme;
      out.email = a;
    } else {
      error(d.args[0], "single argument must either be 'internal' or an email address");
      return false;
    }
  } else if (d.args.size() == 2) {
    out.cert_file = d.args[0].text;
    out.key_file = d.args[1].text;
  } else if (d.args.size() > 2) {
    wrong_arg_count(d);
    return false;
  }
  bool ok = true;
  for (const auto& sub : d.block) {
    const std::string& n = sub.name.text;
    if (n == "protocols") {
      if (!no_block(sub) || !arg_count(sub, 0, 1, 2)) {
        ok = false;
        continue;
      }
      for (const auto& a : sub.args) {
        if (a.text != "tls1.2" && a.text != "tls1.3") {
          error(a, "wrong protocol name or protocol not supported: '" + a.text + "'");
          ok = false;
        }
      }
      out.protocol_min = sub.args[0].text;
      if (sub.args.size() == 2) out.protocol_max = sub.args[1].text;
    } else if (n == "ca" || n == "ca_root") {
      std::string v;
      if (!one_arg(sub, v) || !no_block(sub)) {
        ok = false;
        continue;
      }
      if (n == "ca" && !acme_url(sub.args[0])) ok = false;
      (n == "ca" ? out.acme_ca : out.acme_ca_root) = v;
      if (n == "ca_root") out.acme_ca_root_loc = sub.args[0].loc;
      out.issuer = SiteTls::Issuer::acme;
    } else if (n == "issuer") {
      if (sub.args.empty()) {
        wrong_arg_count(sub);
        ok = false;
      } else if (sub.args[0].text == "internal" && sub.args.size() == 1 && !sub.has_block) {
        out.issuer = SiteTls::Issuer::internal;
      } else if (sub.args[0].text == "acme" && sub.args.size() == 1) {
        if (!acme_issuer(sub, out)) ok = false;
      } else {
        error(sub.args[0], "tls issuer '" + sub.args[0].text +
                               "' is not supported yet by hsp-gateway; only 'issuer internal' "
                               "and 'issuer acme'");
        ok = false;
      }
    } else {
      static const std::set<std::string> caddy26 = {"ciphers",
                                                    "curves",
                                                    "alpn",
                                                    "load",
                                                    "key_type",
                                                    "eab",
                                                    "issuer",
                                                    "get_certificate",
                                                    "dns",
                                                    "dns_ttl",
                                                    "resolvers",
                                                    "on_demand",
                                                    "client_auth",
                                                    "insecure_secrets_log",
                                                    "propagation_timeout",
                                                    "propagation_delay",
                                                    "dns_challenge_override_domain"};
      if (caddy26.count(n)) {
        error(sub.name, "tls subdirective '" + n + "' is not supported yet by hsp-gateway");
      } else {
        error(sub.name, "unknown subdirective '" + n + "' in tls: Caddy 2.6 has none");
      }
      ok = false;
    }
  }
  if (!out.cert_file.empty() && out.issuer == SiteTls::Issuer::internal) {
    error(d.name, "tls: a certificate file pair and 'issuer internal' exclude each other");
    ok = false;
  }
  if (!out.cert_file.empty() && out.issuer == SiteTls::Issuer::acme) {
    error(d.name, "tls: a certificate file pair and an ACME issuer exclude each other");
    ok = false;
  }
  return ok;
}

// `issuer acme { ... }` (Caddy 2.6's caddytls/acmeissuer.go subset): the CA, the account's
// e-mail, extra roots for the CA's HTTPS, and which challenges the gateway may answer.
bool Compiler::acme_issuer(const Directive& d, SiteTls& out) {
  out.issuer = SiteTls::Issuer::acme;
  bool ok = true;
  for (const auto& sub : d.block) {
    const std::string& n = sub.name.text;
    std::string v;
    if (n == "dir" || n == "email" || n == "trusted_roots") {
      if (!one_arg(sub, v) || !no_block(sub)) {
        ok = false;
        continue;
      }
      if (n == "dir") {
        if (!acme_url(sub.args[0])) ok = false;
        out.acme_ca = v;
      } else if (n == "email") {
        out.email = v;
      } else {
        out.acme_ca_root = v;
        out.acme_ca_root_loc = sub.args[0].loc;
      }
    } else if (n == "disable_http_challenge" || n == "disable_tlsalpn_challenge") {
      if (!no_args(sub)) {
        ok = false;
        continue;
      }
      (n == "disable_http_challenge" ? out.disable_http_challenge : out.disable_tlsalpn_challenge) =
          true;
    } else if (n == "test_dir" || n == "timeout" || n == "alt_http_port" ||
               n == "alt_tlsalpn_port" || n == "eab" || n == "dns" || n == "propagation_delay" ||
               n == "propagation_timeout" || n == "resolvers" || n == "preferred_chains" ||
               n == "dns_ttl" || n == "dns_challenge_override_domain") {
      error(sub.name, "issuer acme option '" + n + "' is not supported yet by hsp-gateway");
      ok = false;
    } else {
      error(sub.name, "unknown subdirective '" + n + "' in issuer acme: Caddy 2.6 has none");
      ok = false;
    }
  }
  if (out.disable_http_challenge && out.disable_tlsalpn_challenge) {
    error(d.name,
          "issuer acme: both the HTTP and the TLS-ALPN challenge are disabled, and DNS-01 is "
          "not supported yet: the CA could validate nothing");
    ok = false;
  }
  return ok;
}

bool Compiler::acme_url(const Token& t) {
  const std::string& u = t.text;
  bool https = u.rfind("https://", 0) == 0 && u.size() > 8;
  if (!https) {
    error(t, "ACME directory '" + u + "' must be an https:// URL (RFC 8555 section 6.1)");
    return false;
  }
  return true;
}

// Which servers terminate TLS, with which policies and ALPN. A server is TLS when one of its
// sites has a key on it that qualifies for HTTPS; TLS servers are never on the HTTP port
// (a key there does not qualify, and `http://` on the HTTPS port is refused).
void Compiler::derive_tls() {
  const GlobalOptions& g = cfg_.global;
  auto has = [&](const char* p) {
    return std::find(g.protocols.begin(), g.protocols.end(), p) != g.protocols.end();
  };
  std::map<std::pair<std::string, std::string>, std::string> tags;  // (cert, key) -> "certN"
  for (auto& srv : cfg_.servers) {
    for (size_t i : srv.sites) {
      for (const auto& k : site_keys_[i])
        if (k.listen_port == srv.port && k.https) srv.tls = true;
    }
    if (!srv.tls) {
      srv.h2c = has("h2c");
      continue;
    }
    if (has("h2")) srv.alpn.push_back("h2");
    if (has("h1")) srv.alpn.push_back("http/1.1");
    srv.h3 = has("h3");
    for (size_t i : srv.sites) {
      const Site& site = cfg_.sites[i];
      std::vector<std::string> names;
      for (const auto& k : site_keys_[i]) {
        if (k.listen_port != srv.port || !k.https || k.raw.host.empty()) continue;
        if (std::find(names.begin(), names.end(), k.raw.host) == names.end())
          names.push_back(k.raw.host);
      }
      if (names.empty()) continue;  // `:443` only: the catch-all policy covers it
      TlsPolicy base;
      base.protocol_min = site.tls.protocol_min;
      base.protocol_max = site.tls.protocol_max;
      base.email = site.tls.email;
      if (!site.tls.cert_file.empty()) {
        base.source = TlsPolicy::Source::files;
        base.cert_file = site.tls.cert_file;
        base.key_file = site.tls.key_file;
        auto [it, fresh] = tags.emplace(std::make_pair(base.cert_file, base.key_file), "");
        if (fresh) it->second = "cert" + std::to_string(tags.size() - 1);
        base.tag = it->second;
        base.names = names;
        srv.tls_policies.push_back(base);
        continue;
      }
      if (site.tls.issuer == SiteTls::Issuer::internal) {
        base.source = TlsPolicy::Source::local_ca;
        base.names = names;
        srv.tls_policies.push_back(base);
        continue;
      }
      // What ACME needs, whichever way the site comes to it: the site's own CA, roots and
      // e-mail over the global options, Let's Encrypt when nothing says.
      base.acme_ca = !site.tls.acme_ca.empty() ? site.tls.acme_ca
                     : !g.acme_ca.empty()      ? g.acme_ca
                                               : kLetsEncryptDirectory;
      const bool own_roots = !site.tls.acme_ca_root.empty();
      base.acme_ca_root = own_roots ? site.tls.acme_ca_root : g.acme_ca_root;
      base.acme_ca_root_loc = own_roots ? site.tls.acme_ca_root_loc : g.acme_ca_root_loc;
      if (base.email.empty()) base.email = g.email;
      if (!site.tls.disable_http_challenge) base.challenges.push_back("http-01");
      if (!site.tls.disable_tlsalpn_challenge) base.challenges.push_back("tls-alpn-01");
      if (site.tls.issuer == SiteTls::Issuer::acme) {
        for (const auto& n : names) {
          if (!is_ip(n)) continue;
          // Caddy orders IP identifiers (RFC 8738); the client here speaks DNS ones only.
          error(site.tls.loc, "tls: " + n +
                                  " is an IP address: ACME certificates for IP addresses (RFC "
                                  "8738) are not supported yet by hsp-gateway; use 'tls internal'");
        }
        base.source = TlsPolicy::Source::acme;
        base.names = names;
        srv.tls_policies.push_back(base);
        continue;
      }
      // No issuer written: Caddy picks by name; split so that the log line about ACME names
      // can list exactly those. With `auto_https off` none of them gets a certificate
      // (TlsPolicy::automatic; the certificate build skips them).
      base.automatic = true;
      TlsPolicy local = base, pub = base;
      local.source = TlsPolicy::Source::local_ca;
      pub.source = TlsPolicy::Source::acme;
      for (const auto& n : names) (internal_name(n) ? local : pub).names.push_back(n);
      if (!local.names.empty()) srv.tls_policies.push_back(local);
      if (!pub.names.empty()) srv.tls_policies.push_back(pub);
    }
    // The catch-all (Caddy's trailing `{}`): SNI names no policy lists, and clients without
    // SNI. It holds no certificate source of its own; the TLS module answers with a
    // certificate from the other policies that matches the name, or fails the handshake.
    TlsPolicy all;
    all.source = TlsPolicy::Source::local_ca;
    srv.tls_policies.push_back(all);
  }
}

// Caddy's automaticHTTPSPhase1 redirects: for the host names of each TLS server, a route on
// the HTTP port answering 308 to the same host over HTTPS, appended after the user's routes of
// a server already listening there, then one catch-all redirect. Modelled as synthetic sites
// so that the engine serves them with the static_response handler it already has.
//
// The engine looks hosts up exact > wildcard > catch-all rather than in route order, so a
// redirect whose host a user HTTP site already answers (same host, a matching wildcard, or a
// catch-all, without a path) is left out: in Caddy that user route comes first and wins.
// Known gap: a user HTTP site that covers the host only for some paths through a wildcard
// (`http://*.example.com/api*`) loses to an exact-host redirect here; Caddy serves its paths.
void Compiler::add_redirects() {
  const GlobalOptions& g = cfg_.global;
  if (g.auto_https != AutoHttps::on) return;
  // bind host -> (host -> target port), domains in first-seen order per bind host
  std::map<std::string, std::vector<std::pair<std::string, uint16_t>>> by_bind;
  for (const auto& srv : cfg_.servers) {
    if (!srv.tls) continue;
    auto& list = by_bind[srv.bind_host];
    for (size_t i : srv.sites) {
      for (const auto& k : site_keys_[i]) {
        if (k.listen_port != srv.port || !k.https || k.raw.host.empty()) continue;
        auto it = std::find_if(list.begin(), list.end(),
                               [&](const auto& p) { return p.first == k.raw.host; });
        if (it == list.end())
          list.emplace_back(k.raw.host, srv.port);
        else if (srv.port == g.https_port)
          it->second = srv.port;  // a host on several HTTPS ports: prefer the HTTPS port
      }
    }
  }
  // No port when the target is the https_port option, even when that is not 443: Caddy 2.6.2
  // does so (observed: https_port 44821 redirects to "https://a.localhost/x"), which is right
  // behind a port mapping such as Docker's 443:8443, the usual reason for another https_port.
  auto location = [&](uint16_t port) {
    std::string to = "https://{http.request.host}";
    if (port != g.https_port) to += ":" + std::to_string(port);
    return to + "{http.request.uri}";
  };
  auto redirect_site = [&](const std::vector<std::string>& hosts, uint16_t port) {
    Site s;
    s.synthetic_redirect = true;
    for (const auto& h : hosts) {
      Address a;
      a.scheme = "http";
      a.host = h;
      a.port = g.http_port;
      std::string shown = h.find(':') != std::string::npos ? "[" + h + "]" : h;
      // Only for logs and errors: these sites are not printed by `adapt`.
      a.original = "http://" + shown + ":" + std::to_string(g.http_port);
      s.addresses.push_back(a);
    }
    StaticResponse r;
    r.status = 308;
    r.headers = {{"Location", location(port)}, {"Connection", "close"}};
    r.close = true;
    Route route;
    route.handle.push_back(r);
    route.directive = "redir";
    s.routes.push_back(std::move(route));
    return s;
  };

  for (const auto& [bind, domains] : by_bind) {
    if (domains.empty()) continue;
    Server* http = nullptr;
    for (auto& srv : cfg_.servers)
      if (srv.port == g.http_port && srv.bind_host == bind) http = &srv;
    std::vector<RawAddress> user_keys;
    if (http) {
      for (size_t i : http->sites)
        for (const auto& k : site_keys_[i])
          if (k.listen_port == g.http_port) user_keys.push_back(k.raw);
    }
    auto covered = [&](const std::string& host) {
      return std::any_of(user_keys.begin(), user_keys.end(),
                         [&](const RawAddress& k) { return covers(k, host); });
    };
    std::map<uint16_t, std::vector<std::string>> by_port;
    for (const auto& [host, port] : domains)
      if (!covered(host)) by_port[port].push_back(host);
    std::vector<size_t> added;
    for (const auto& [port, hosts] : by_port) {
      cfg_.sites.push_back(redirect_site(hosts, port));
      added.push_back(cfg_.sites.size() - 1);
    }
    if (!covered("")) {
      // Caddy's appendCatchAll: names not in the config (on-demand TLS) go to the HTTPS port.
      cfg_.sites.push_back(redirect_site({""}, g.https_port));
      added.push_back(cfg_.sites.size() - 1);
    }
    if (added.empty()) continue;
    if (http) {
      http->sites.insert(http->sites.end(), added.begin(), added.end());
    } else {
      Server srv;
      srv.bind_host = bind;
      srv.port = g.http_port;
      srv.redirect_only = true;
      srv.sites = added;
      srv.h2c = std::find(g.protocols.begin(), g.protocols.end(), "h2c") != g.protocols.end();
      cfg_.servers.push_back(std::move(srv));
    }
  }
  std::stable_sort(cfg_.servers.begin(), cfg_.servers.end(), [](const Server& a, const Server& b) {
    return std::tie(a.port, a.bind_host) < std::tie(b.port, b.bind_host);
  });
}

}  // namespace hsp::config::compile_detail
