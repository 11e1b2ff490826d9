#include "engine/tls_certs.h"

#include <openssl/ssl.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>

#include "engine/ip.h"
#include "tls/cert_selector.h"
#include "tls/certified_key.h"
#include "tls/local_ca.h"
#include "tls/server_context.h"
#include "util/log.h"

namespace hsp::engine {

std::string data_dir(const std::string& explicit_dir) {
  // Absolute, so that the root's path in the tls_local_ca_ready line is usable as logged.
  auto absolute = [](const std::string& d) {
    std::error_code ec;
    auto a = std::filesystem::absolute(d, ec);
    return ec ? d : a.lexically_normal().string();
  };
  if (!explicit_dir.empty()) return absolute(explicit_dir);
  auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v ? std::string(v) : std::string();
  };
  if (std::string d = env("HSP_DATA_DIR"); !d.empty()) return absolute(d);
  if (std::string x = env("XDG_DATA_HOME"); !x.empty()) return x + "/hsp-gateway";
  if (std::string h = env("HOME"); !h.empty()) return h + "/.local/share/hsp-gateway";
  return absolute("hsp-gateway-data");
}

CertAuthority::CertAuthority(std::string dir, tls::LocalCa::Options options)
    : dir_(std::move(dir)), options_(std::move(options)) {}
CertAuthority::~CertAuthority() = default;

Result<tls::LocalCa*> CertAuthority::local_ca() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!ca_) {
    // LocalCa creates its own directories but not the data directory's parents ($HOME/.local/
    // share may not exist yet on a fresh machine); Caddy creates them all.
    std::error_code ec;
    bool created = std::filesystem::create_directories(dir_, ec);
    if (ec) return Error{SourceLoc{dir_}, "cannot create the data directory: " + ec.message()};
    // Only a directory we made is narrowed to 0700; an existing one keeps its mode.
    if (created) {
      std::filesystem::permissions(dir_, std::filesystem::perms::owner_all,
                                   std::filesystem::perm_options::replace, ec);
    }
    auto ca = tls::LocalCa::open(dir_, options_);
    if (!ca) return ca.errors();
    ca_ = std::move(*ca);
  }
  return ca_.get();
}

std::optional<std::chrono::system_clock::time_point> CertAuthority::renew_at() const {
  std::lock_guard<std::mutex> lock(mu_);
  return renew_at_;
}

void CertAuthority::set_renew_at(std::optional<std::chrono::system_clock::time_point> t) {
  std::lock_guard<std::mutex> lock(mu_);
  renew_at_ = t;
}

std::chrono::system_clock::time_point CertAuthority::now() const {
  return options_.now ? options_.now() : std::chrono::system_clock::now();
}

namespace {

bool is_ip(const std::string& name) {
  IpAddr a;
  return parse_ip(name, a);
}

// Where the `tls CERT KEY` naming this pair was written, for the error message.
SourceLoc tls_loc(const config::Config& cfg, const config::TlsPolicy& p) {
  for (const auto& s : cfg.sites) {
    if (s.tls.cert_file == p.cert_file && s.tls.key_file == p.key_file) return s.tls.loc;
  }
  return {};
}

}  // namespace

Result<std::vector<ServerTls>> build_server_tls(const config::Config& cfg, CertAuthority* certs) {
  std::vector<ServerTls> out(cfg.servers.size());
  Errors errors;
  // One load per certificate pair, however many servers use it.
  std::map<std::pair<std::string, std::string>, std::shared_ptr<const tls::CertifiedKey>> files;
  std::optional<tls::SystemTime> renew_at;
  std::set<std::string> checked_roots;
  // Every ACME name of this configuration. The manager hears of them only once the whole
  // configuration has built: a rejected reload must neither start orders for its names nor
  // make the manager forget the names the serving snapshot still has.
  std::vector<AcmeName> acme;
  if (certs && certs->managed()) {
    // HTTP-01 needs the CA to reach a listener on http_port. Caddy's solver would open one for
    // the challenge; with no site or redirect there (`auto_https disable_redirects` and no
    // http:// site) the gateway leaves HTTP-01 out and lets TLS-ALPN-01 validate instead.
    const bool http_listener = std::any_of(
        cfg.servers.begin(), cfg.servers.end(),
        [&](const config::Server& s) { return !s.tls && s.port == cfg.global.http_port; });
    for (const auto& srv : cfg.servers) {
      for (const auto& p : srv.tls_policies) {
        if (p.source != config::TlsPolicy::Source::acme) continue;
        if (p.automatic && cfg.global.auto_https == config::AutoHttps::off) continue;
        for (const auto& name : p.names) {
          AcmeName want{name, p.acme_ca, p.acme_ca_root, p.email, p.challenges};
          if (!http_listener && want.challenges.size() > 1) {
            std::erase(want.challenges, std::string("http-01"));
          }
          if (std::find(acme.begin(), acme.end(), want) == acme.end()) acme.push_back(want);
        }
      }
    }
  }
  // Where each ACME name's certificate goes once the manager has been told: (server, entry).
  std::vector<std::pair<size_t, tls::CertSelector::Entry>> acme_entries;
  std::vector<std::vector<tls::CertSelector::Entry>> entries_by_server(cfg.servers.size());
  std::vector<std::shared_ptr<const tls::CertifiedKey>> default_by_server(cfg.servers.size());
  for (size_t si = 0; si < cfg.servers.size(); ++si) {
    const config::Server& srv = cfg.servers[si];
    if (!srv.tls) continue;
    ServerTls& st = out[si];
    // Caddy sets the protocol range per connection policy, i.e. per SNI name. The listener
    // gets the widest range of its sites before the SNI is known; the certificate choice then
    // narrows it to the name's own range (tls::ServerContext's client-hello callback).
    int lo = 0, hi = 0;
    std::vector<tls::CertSelector::Entry> entries;
    std::shared_ptr<const tls::CertifiedKey> default_cert;
    for (const auto& p : srv.tls_policies) {
      if (p.names.empty()) continue;  // the catch-all: only a fallback, no certificate source
      int pmin = TLS1_2_VERSION, pmax = TLS1_3_VERSION;
      if (!p.protocol_min.empty()) {
        if (auto v = tls::parse_protocol(p.protocol_min)) pmin = *v;
      }
      if (!p.protocol_max.empty()) {
        if (auto v = tls::parse_protocol(p.protocol_max)) pmax = *v;
      }
      lo = lo == 0 ? pmin : std::min(lo, pmin);
      hi = std::max(hi, pmax);
      if (p.source == config::TlsPolicy::Source::files) {
        auto key = std::make_pair(p.cert_file, p.key_file);
        auto it = files.find(key);
        if (it == files.end()) {
          auto ck = tls::load_pem_files(p.cert_file, p.key_file);
          if (!ck) {
            for (const auto& e : ck.errors()) {
              errors.push_back(Error{tls_loc(cfg, p), "tls: " + e.str()});
            }
            continue;
          }
          it = files.emplace(key, std::make_shared<const tls::CertifiedKey>(std::move(*ck))).first;
        }
        entries.push_back({it->second, p.names, pmin, pmax});
        continue;
      }
      // The roots trusted for an ACME CA's HTTPS: a file that does not load is a load error,
      // as a bad `tls CERT KEY` is, rather than an order failing in the background.
      if (p.source == config::TlsPolicy::Source::acme && !p.acme_ca_root.empty() &&
          checked_roots.insert(p.acme_ca_root).second) {
        auto pem = tls::read_file(p.acme_ca_root);
        if (!pem) {
          for (const auto& e : pem.errors())
            errors.push_back(Error{p.acme_ca_root_loc, "ACME CA roots: " + e.str()});
        } else if (pem->find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
          errors.push_back(Error{p.acme_ca_root_loc, "ACME CA roots: " + p.acme_ca_root +
                                                         ": no PEM certificate in the file"});
        }
      }
      if (!certs) continue;  // validate / adapt: no local CA is created
      // `auto_https off`: Caddy manages no certificate, so names with no issuer of their own
      // get none (their handshakes fail unless another policy covers them).
      if (p.automatic && cfg.global.auto_https == config::AutoHttps::off) continue;
      if (p.source == config::TlsPolicy::Source::acme) {
        for (const auto& name : p.names)
          acme_entries.push_back({si, {nullptr, {name}, pmin, pmax}});
        continue;
      }
      auto ca = certs->local_ca();
      if (!ca) {
        errors.insert(errors.end(), ca.errors().begin(), ca.errors().end());
        break;
      }
      // One leaf per name, as Caddy's internal issuer does: a certificate never lists the
      // names of unrelated sites. LocalCa caches them, so a reload reuses the same leaves.
      for (const auto& name : p.names) {
        auto leaf = (*ca)->issue({name});
        if (!leaf) {
          errors.insert(errors.end(), leaf.errors().begin(), leaf.errors().end());
          continue;
        }
        const tls::CertifiedKey& ck = **leaf;
        tls::SystemTime at = ck.not_before() + (ck.not_after() - ck.not_before()) * 2 / 3;
        if (!renew_at || at < *renew_at) renew_at = at;
        entries.push_back({*leaf, {name}, pmin, pmax});
      }
    }
    // Clients send no SNI for IP addresses (RFC 6066), so the first IP site's certificate
    // answers handshakes without SNI. Without one, such handshakes fail, as in Caddy.
    for (const auto& e : entries) {
      bool ip = std::any_of(e.names.begin(), e.names.end(), is_ip);
      if (ip && !default_cert) default_cert = e.cert;
    }
    st.min_version = lo == 0 ? TLS1_2_VERSION : lo;
    st.max_version = hi == 0 ? TLS1_3_VERSION : hi;
    entries_by_server[si] = std::move(entries);
    default_by_server[si] = default_cert;
  }
  if (!errors.empty()) return errors;
  if (ManagedCerts* managed = certs ? certs->managed() : nullptr) {
    managed->want(acme);
    for (auto& [si, entry] : acme_entries) {
      const std::string& name = entry.names.front();
      entry.cert = managed->current(name);
      if (!entry.cert) continue;  // not obtained yet: handshakes for the name fail until then
      if (entry.cert->expired(certs->now())) {
        // Never served quietly: the manager keeps trying and logs each failure; this line
        // says what clients see meanwhile.
        log::error("tls_certificate_expired")
            .kv("name", name)
            .kv("not_after_unix",
                static_cast<int64_t>(std::chrono::system_clock::to_time_t(entry.cert->not_after())))
            .kv("detail",
                "the ACME certificate could not be renewed in time; clients will refuse it "
                "until a renewal succeeds");
      }
      entries_by_server[si].push_back(std::move(entry));
    }
  }
  for (size_t si = 0; si < cfg.servers.size(); ++si) {
    if (!cfg.servers[si].tls) continue;
    out[si].selector =
        tls::CertSelector::build(std::move(entries_by_server[si]), default_by_server[si]);
  }
  if (certs) certs->set_renew_at(renew_at);
  return out;
}

}  // namespace hsp::engine
