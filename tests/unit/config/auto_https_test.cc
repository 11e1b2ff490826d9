// Caddy 2.6's automatic HTTPS as the config model holds it: which sites and servers are HTTPS,
// their TLS policies, ALPN, and the HTTP->HTTPS redirects Caddy adds while provisioning.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "config/adapt_json.h"
#include "config/compile.h"
#include "load_util.h"

namespace hsp::config {
namespace {

using testing::errors;
using testing::load;

const Server* server(const Config& c, uint16_t port) {
  for (const auto& s : c.servers)
    if (s.port == port) return &s;
  return nullptr;
}

// The redirect sites on a server, as (hosts, Location).
struct Redirect {
  std::vector<std::string> hosts;
  std::string location;
};

std::vector<Redirect> redirects(const Config& c, const Server& s) {
  std::vector<Redirect> out;
  for (size_t i : s.sites) {
    const Site& site = c.sites[i];
    if (!site.synthetic_redirect) continue;
    Redirect r;
    for (const auto& a : site.addresses) r.hosts.push_back(a.host);
    EXPECT_EQ(site.routes.size(), 1u);
    const auto& sr = std::get<StaticResponse>(site.routes[0].handle[0]);
    EXPECT_EQ(sr.status, 308);
    EXPECT_TRUE(sr.close);
    for (const auto& [k, v] : sr.headers)
      if (k == "Location") r.location = v;
    out.push_back(r);
  }
  return out;
}

TEST(AutoHttps, WhichSitesAreHttps) {
  Config c = load(R"(
example.com {
}
http://plain.example.com {
}
b.example.com:8443 {
}
:443 {
}
:8080 {
}
c.example.com:80 {
}
https://:9443 {
}
)");
  std::vector<bool> want = {true, false, true, true, false, false, true};
  ASSERT_EQ(c.sites.size(), 7u + 3u);  // + redirects to :443 and :8443, and the catch-all
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(c.sites[i].https, want[i]) << i;
  ASSERT_TRUE(server(c, 443) && server(c, 8443) && server(c, 9443) && server(c, 80));
  EXPECT_TRUE(server(c, 443)->tls);
  EXPECT_TRUE(server(c, 8443)->tls);
  EXPECT_TRUE(server(c, 9443)->tls);
  EXPECT_FALSE(server(c, 80)->tls);
  EXPECT_FALSE(server(c, 8080)->tls);
  EXPECT_EQ(server(c, 443)->alpn, (std::vector<std::string>{"h2", "http/1.1"}));
  EXPECT_TRUE(server(c, 8080)->alpn.empty());
}

TEST(AutoHttps, TlsDirectiveForms) {
  Config c = load(R"(
a.example.com {
	tls internal
}
b.example.com {
	tls admin@example.com
}
c.example.com {
	tls /c.pem /c.key {
		protocols tls1.2 tls1.3
	}
}
d.example.com {
	tls {
		issuer internal
		protocols tls1.3
	}
}
)");
  ASSERT_GE(c.sites.size(), 4u);
  EXPECT_EQ(c.sites[0].tls.issuer, SiteTls::Issuer::internal);
  EXPECT_EQ(c.sites[1].tls.issuer, SiteTls::Issuer::acme);
  EXPECT_EQ(c.sites[1].tls.email, "admin@example.com");
  EXPECT_EQ(c.sites[2].tls.cert_file, "/c.pem");
  EXPECT_EQ(c.sites[2].tls.key_file, "/c.key");
  EXPECT_EQ(c.sites[2].tls.protocol_min, "tls1.2");
  EXPECT_EQ(c.sites[2].tls.protocol_max, "tls1.3");
  EXPECT_EQ(c.sites[3].tls.issuer, SiteTls::Issuer::internal);
  EXPECT_EQ(c.sites[3].tls.protocol_min, "tls1.3");
  EXPECT_TRUE(c.sites[3].tls.protocol_max.empty());
  EXPECT_EQ(c.sites[3].tls.loc.str(), "Caddyfile:14:2");
}

TEST(AutoHttps, PoliciesBySource) {
  Config c = load(R"(
localhost, *.localhost, 127.0.0.1, [::1], public.example.com {
}
files.example.com {
	tls /f.pem /f.key
}
again.example.com {
	tls /f.pem /f.key
}
other.example.com {
	tls /o.pem /o.key
}
mail.example.com {
	tls me@example.com
}
)");
  const Server* s = server(c, 443);
  ASSERT_TRUE(s);
  const auto& p = s->tls_policies;
  auto find = [&](const std::string& name) -> const TlsPolicy* {
    for (const auto& x : p)
      if (std::find(x.names.begin(), x.names.end(), name) != x.names.end()) return &x;
    return nullptr;
  };
  for (const char* n : {"localhost", "*.localhost", "127.0.0.1", "::1"}) {
    ASSERT_TRUE(find(n)) << n;
    EXPECT_EQ(find(n)->source, TlsPolicy::Source::local_ca) << n;
  }
  ASSERT_TRUE(find("public.example.com"));
  EXPECT_EQ(find("public.example.com")->source, TlsPolicy::Source::acme);
  EXPECT_EQ(find("public.example.com")->acme_ca, kLetsEncryptDirectory);
  EXPECT_EQ(find("public.example.com")->challenges,
            (std::vector<std::string>{"http-01", "tls-alpn-01"}));
  ASSERT_TRUE(find("files.example.com") && find("again.example.com") && find("other.example.com"));
  EXPECT_EQ(find("files.example.com")->source, TlsPolicy::Source::files);
  EXPECT_EQ(find("files.example.com")->tag, "cert0");
  EXPECT_EQ(find("again.example.com")->tag, "cert0");  // the same pair, the same tag
  EXPECT_EQ(find("other.example.com")->tag, "cert1");
  EXPECT_EQ(find("other.example.com")->cert_file, "/o.pem");
  ASSERT_TRUE(find("mail.example.com"));
  EXPECT_EQ(find("mail.example.com")->email, "me@example.com");
  EXPECT_EQ(find("mail.example.com")->source, TlsPolicy::Source::acme);
  ASSERT_FALSE(p.empty());
  EXPECT_TRUE(p.back().names.empty()) << "the catch-all policy comes last";
}

// ACME settings reach each policy: the site's own over the global options, Let's Encrypt when
// neither says, and the challenge types the issuer block leaves enabled.
TEST(AutoHttps, AcmeOptionsResolvePerSite) {
  Config c = load(R"({
	email global@example.com
	acme_ca https://ca.example/dir
	acme_ca_root /global-root.pem
}
a.example.com {
	respond a
}
b.example.com {
	tls {
		ca https://other.example/directory
		ca_root /b-root.pem
	}
}
c.example.com {
	tls {
		issuer acme {
			dir https://third.example/dir
			email c@example.com
			disable_tlsalpn_challenge
		}
	}
}
d.example.com {
	tls d@example.com {
		issuer acme {
			disable_http_challenge
		}
	}
}
)");
  const Server* s = server(c, 443);
  ASSERT_TRUE(s);
  auto find = [&](const std::string& name) -> const TlsPolicy* {
    for (const auto& x : s->tls_policies)
      if (std::find(x.names.begin(), x.names.end(), name) != x.names.end()) return &x;
    return nullptr;
  };
  for (const char* n : {"a.example.com", "b.example.com", "c.example.com", "d.example.com"}) {
    ASSERT_TRUE(find(n)) << n;
    EXPECT_EQ(find(n)->source, TlsPolicy::Source::acme) << n;
  }
  EXPECT_EQ(find("a.example.com")->acme_ca, "https://ca.example/dir");
  EXPECT_EQ(find("a.example.com")->acme_ca_root, "/global-root.pem");
  EXPECT_EQ(find("a.example.com")->email, "global@example.com");
  EXPECT_EQ(find("b.example.com")->acme_ca, "https://other.example/directory");
  EXPECT_EQ(find("b.example.com")->acme_ca_root, "/b-root.pem");
  EXPECT_EQ(find("c.example.com")->acme_ca, "https://third.example/dir");
  EXPECT_EQ(find("c.example.com")->email, "c@example.com");
  EXPECT_EQ(find("c.example.com")->challenges, std::vector<std::string>{"http-01"});
  EXPECT_EQ(find("d.example.com")->email, "d@example.com");
  EXPECT_EQ(find("d.example.com")->challenges, std::vector<std::string>{"tls-alpn-01"});
}

TEST(AutoHttps, RedirectsToHttpsPort) {
  Config c = load(R"(
a.example.com, b.example.com {
}
c.example.com:8443 {
}
)");
  const Server* http = server(c, 80);
  ASSERT_TRUE(http);
  EXPECT_TRUE(http->redirect_only);
  EXPECT_FALSE(http->tls);
  auto r = redirects(c, *http);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].hosts, (std::vector<std::string>{"a.example.com", "b.example.com"}));
  EXPECT_EQ(r[0].location, "https://{http.request.host}{http.request.uri}");
  EXPECT_EQ(r[1].hosts, (std::vector<std::string>{"c.example.com"}));
  EXPECT_EQ(r[1].location, "https://{http.request.host}:8443{http.request.uri}");
  EXPECT_EQ(r[2].hosts, (std::vector<std::string>{""}));  // Caddy's catch-all redirect
  EXPECT_EQ(r[2].location, "https://{http.request.host}{http.request.uri}");
}

TEST(AutoHttps, RedirectPortFollowsHttpsPortOption) {
  Config c = load(R"(
{
	http_port 8080
	https_port 8443
}
a.example.com {
}
b.example.com:9443 {
}
)");
  const Server* http = server(c, 8080);
  ASSERT_TRUE(http);
  auto r = redirects(c, *http);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[1].location, "https://{http.request.host}:9443{http.request.uri}");
  r.erase(r.begin() + 1);
  // As Caddy 2.6.2: no port when the target is https_port (a port mapping usually hides it).
  EXPECT_EQ(r[0].location, "https://{http.request.host}{http.request.uri}");
  EXPECT_EQ(r[1].location, "https://{http.request.host}{http.request.uri}");
  for (const auto& a : c.sites[c.sites.size() - 1].addresses) EXPECT_EQ(a.port, 8080);
}

TEST(AutoHttps, UserHttpSitesWinOverRedirects) {
  Config c = load(R"(
a.example.com, b.example.com, x.wild.example.com, api.example.com {
}
http://a.example.com {
	respond "plain a"
}
http://*.wild.example.com {
}
http://api.example.com/v1* {
}
)");
  const Server* http = server(c, 80);
  ASSERT_TRUE(http);
  EXPECT_FALSE(http->redirect_only);
  auto r = redirects(c, *http);
  ASSERT_EQ(r.size(), 2u);
  // a: the explicit http:// site; x.wild: its wildcard. api keeps the redirect for the paths
  // its http:// site does not take.
  EXPECT_EQ(r[0].hosts, (std::vector<std::string>{"b.example.com", "api.example.com"}));
  EXPECT_EQ(r[1].hosts, (std::vector<std::string>{""}));
  // Redirects come after the user's sites on the same server.
  ASSERT_EQ(http->sites.size(), 5u);
  EXPECT_FALSE(c.sites[http->sites[0]].synthetic_redirect);
  EXPECT_TRUE(c.sites[http->sites[3]].synthetic_redirect);
}

TEST(AutoHttps, UserCatchAllOnHttpPortTakesEverything) {
  Config c = load(R"(
a.example.com {
}
:80 {
	respond "mine"
}
)");
  const Server* http = server(c, 80);
  ASSERT_TRUE(http);
  EXPECT_TRUE(redirects(c, *http).empty());
}

TEST(AutoHttps, NoRedirectsWhenOffOrDisabled) {
  for (const char* opt : {"off", "disable_redirects"}) {
    Config c = load(std::string("{\n\tauto_https ") + opt + "\n}\na.example.com {\n}\n");
    EXPECT_EQ(server(c, 80), nullptr) << opt;
    for (const auto& s : c.sites) EXPECT_FALSE(s.synthetic_redirect) << opt;
    ASSERT_TRUE(server(c, 443)) << opt;
    EXPECT_TRUE(server(c, 443)->tls) << opt;
  }
  EXPECT_EQ(load("{\n\tauto_https off\n}\n").global.auto_https, AutoHttps::off);
}

TEST(AutoHttps, NoRedirectsWithoutHostNames) {
  Config c = load(":443 {\n}\nhttps://:9443 {\n}\n");
  EXPECT_EQ(server(c, 80), nullptr);
}

TEST(AutoHttps, RedirectsNeverLoop) {
  // Every redirect lives on the HTTP port and points at a TLS port; ports cannot be equal.
  Config c = load("a.example.com, b.example.com:8443 {\n}\nhttp://c.example.com {\n}\n");
  for (const auto& s : c.servers) {
    for (size_t i : s.sites) {
      if (!c.sites[i].synthetic_redirect) continue;
      EXPECT_EQ(s.port, c.global.http_port);
      EXPECT_FALSE(s.tls);
    }
  }
  EXPECT_EQ(errors("{\n\thttp_port 8443\n\thttps_port 8443\n}\n"),
            (std::vector<std::string>{
                "Caddyfile:2:2: http_port and https_port must differ (both are 8443)"}));
}

TEST(AutoHttps, ProtocolsOption) {
  Config c = load(R"(
{
	servers {
		protocols h1 h2c
	}
}
a.localhost {
}
:8080 {
}
)");
  EXPECT_EQ(c.global.protocols, (std::vector<std::string>{"h1", "h2c"}));
  ASSERT_TRUE(server(c, 443) && server(c, 8080));
  EXPECT_EQ(server(c, 443)->alpn, (std::vector<std::string>{"http/1.1"}));
  EXPECT_TRUE(server(c, 8080)->h2c);
  EXPECT_FALSE(load(":8080 {\n}\n").servers[0].h2c);
  // No h3 in the list: no QUIC listener beside the HTTPS one.
  EXPECT_FALSE(server(c, 443)->h3);
}

TEST(AutoHttps, ProtocolsRefusedAsCaddyRefusesThem) {
  EXPECT_EQ(errors("{\n\tservers {\n\t\tprotocols h2 h3\n\t}\n}\n"),
            (std::vector<std::string>{
                "Caddyfile:3:13: cannot enable HTTP/2 or H2C without enabling HTTP/1.1"}));
  EXPECT_EQ(errors("{\n\tservers {\n\t\tprotocols h1 h3 h3\n\t}\n}\n"),
            (std::vector<std::string>{"Caddyfile:3:19: protocol 'h3' is listed more than once"}));
}

TEST(AutoHttps, Http3IsOnForHttpsServersByDefault) {
  Config c = load("a.localhost {\n}\n:8080 {\n}\n");
  ASSERT_TRUE(server(c, 443) && server(c, 8080));
  EXPECT_TRUE(server(c, 443)->h3);    // Caddy 2.6's default protocols are h1 h2 h3
  EXPECT_FALSE(server(c, 8080)->h3);  // QUIC is TLS: never on a cleartext listener
  Config only3 = load("{\n\tservers {\n\t\tprotocols h3\n\t}\n}\na.localhost {\n}\n");
  ASSERT_TRUE(server(only3, 443));
  EXPECT_TRUE(server(only3, 443)->h3);
  EXPECT_TRUE(server(only3, 443)->alpn.empty());
}

TEST(AutoHttps, RedirectsAreNotPrintedByAdapt) {
  Config c = load("a.example.com {\n}\n");
  std::string json = to_json(c);
  EXPECT_EQ(json.find("request.host"), std::string::npos) << json;
  EXPECT_EQ(json.find(":80\""), std::string::npos) << json;
}

TEST(AutoHttps, ErrorsNamePositions) {
  EXPECT_EQ(errors("a.example.com {\n\ttls {\n\t\tcurves x25519\n\t}\n}\n"),
            (std::vector<std::string>{
                "Caddyfile:3:3: tls subdirective 'curves' is not supported yet by hsp-gateway"}));
  EXPECT_EQ(errors("a.example.com {\n\ttls internal x y\n}\n"),
            (std::vector<std::string>{
                "Caddyfile:2:2: wrong argument count or unexpected line ending after 'tls'"}));
  EXPECT_EQ(errors("{\n\tauto_https sometimes\n}\n"),
            (std::vector<std::string>{
                "Caddyfile:2:13: auto_https must be one of 'off', 'disable_redirects', "
                "'ignore_loaded_certs' or 'disable_certs'; got 'sometimes'"}));
  EXPECT_EQ(errors("a.example.com {\n\troute {\n\t\ttls internal\n\t}\n}\n"),
            (std::vector<std::string>{"Caddyfile:3:3: directive 'tls' is not an ordered HTTP "
                                      "handler, so it cannot be used here"}));
}

}  // namespace
}  // namespace hsp::config
