// reverse_proxy upstream schemes and `transport http` TLS/version options (Caddy 2.6
// reverseproxy/caddyfile.go), and upstream_proto(): which protocol the data plane speaks.
#include <gtest/gtest.h>

#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "config/compile.h"
#include "load_util.h"

namespace hsp::config {
namespace {

using namespace std::chrono_literals;

using testing::errors;
using testing::load;

const ReverseProxy& proxy(const Config& c, size_t route = 0) {
  return std::get<ReverseProxy>(c.sites.at(0).routes.at(route).handle.at(0));
}

std::string site(const std::string& body) {
  return ":8080 {\n" + body + "}\n";
}

// A PEM file in a fresh temporary directory, removed with the object.
class TempCa {
 public:
  TempCa() {
    char tmpl[] = "/tmp/hsp-config-ca-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    std::ofstream(path()) << "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n";
  }
  ~TempCa() { std::filesystem::remove_all(dir_); }
  std::string dir() const { return dir_; }
  std::string path() const { return dir_ + "/ca.pem"; }

 private:
  std::string dir_;
};

TEST(UpstreamTransport, H2cSchemeSetsVersionsLikeCaddy) {
  Config c = load(site("\treverse_proxy h2c://127.0.0.1:50051 h2c://backend\n"));
  const ReverseProxy& rp = proxy(c);
  ASSERT_EQ(rp.upstreams.size(), 2u);
  EXPECT_EQ(rp.upstreams[0].dial, "127.0.0.1:50051");
  EXPECT_EQ(rp.upstreams[1].dial, "backend:80");
  EXPECT_EQ(rp.transport.versions, (std::vector<std::string>{"h2c", "2"}));
  EXPECT_FALSE(rp.transport.tls);
  EXPECT_EQ(upstream_proto(rp.transport), UpstreamProto::h2c);
}

TEST(UpstreamTransport, H2cSchemeOverridesWrittenVersions) {
  Config c = load(
      site("\treverse_proxy h2c://127.0.0.1:50051 {\n\t\ttransport http {\n\t\t\tversions 1.1\n"
           "\t\t}\n\t}\n"));
  EXPECT_EQ(proxy(c).transport.versions, (std::vector<std::string>{"h2c", "2"}));
}

TEST(UpstreamTransport, HttpsSchemeTurnsTlsOnWithDefaultPort) {
  Config c = load(site("\treverse_proxy https://backend.internal https://10.0.0.1:8443\n"));
  const ReverseProxy& rp = proxy(c);
  EXPECT_EQ(rp.upstreams[0].dial, "backend.internal:443");
  EXPECT_EQ(rp.upstreams[1].dial, "10.0.0.1:8443");
  EXPECT_TRUE(rp.transport.tls);
  EXPECT_TRUE(rp.transport.versions.empty());
  EXPECT_EQ(upstream_proto(rp.transport), UpstreamProto::h2_tls_alpn);
}

TEST(UpstreamTransport, HttpSchemeDefaultPortAndPlainDefaults) {
  Config c = load(site("\treverse_proxy http://backend\n"));
  const ReverseProxy& rp = proxy(c);
  EXPECT_EQ(rp.upstreams[0].dial, "backend:80");
  EXPECT_FALSE(rp.transport.tls);
  EXPECT_FALSE(rp.transport.tls_insecure_skip_verify);
  EXPECT_TRUE(rp.transport.tls_server_name.empty());
  EXPECT_TRUE(rp.transport.tls_trusted_ca_certs.empty());
  EXPECT_EQ(rp.transport.tls_timeout, 0s);
  EXPECT_EQ(upstream_proto(rp.transport), UpstreamProto::h1);
}

TEST(UpstreamTransport, TlsOptionsAreStoredAndEachTurnsTlsOn) {
  TempCa ca;
  Config c =
      load(site("\treverse_proxy 127.0.0.1:9443 {\n\t\ttransport http {\n"
                "\t\t\ttls_server_name api.internal\n"
                "\t\t\ttls_insecure_skip_verify\n"
                "\t\t\ttls_timeout 5s\n"
                "\t\t\ttls_trusted_ca_certs " +
                ca.path() + " " + ca.path() +
                "\n"
                "\t\t\tversions 1.1\n"
                "\t\t}\n\t}\n"));
  const HttpTransport& t = proxy(c).transport;
  EXPECT_TRUE(t.tls);
  EXPECT_EQ(t.tls_server_name, "api.internal");
  EXPECT_TRUE(t.tls_insecure_skip_verify);
  EXPECT_EQ(t.tls_timeout, 5s);
  EXPECT_EQ(t.tls_trusted_ca_certs, (std::vector<std::string>{ca.path(), ca.path()}));
  EXPECT_EQ(t.versions, (std::vector<std::string>{"1.1"}));
  EXPECT_EQ(upstream_proto(t), UpstreamProto::h1);  // TLS, HTTP/1.1 only

  const std::vector<std::string> options = {"tls", "tls_server_name x", "tls_insecure_skip_verify",
                                            "tls_timeout 1s", "tls_trusted_ca_certs " + ca.path()};
  for (const std::string& opt : options) {
    SCOPED_TRACE(opt);
    Config one = load(site("\treverse_proxy 127.0.0.1:9443 {\n\t\ttransport http {\n\t\t\t" + opt +
                           "\n\t\t}\n\t}\n"));
    EXPECT_TRUE(proxy(one).transport.tls);
  }
}

TEST(UpstreamTransport, VersionsWithoutScheme) {
  Config c =
      load(site("\treverse_proxy 127.0.0.1:9000 {\n\t\ttransport http {\n"
                "\t\t\tversions h2c 2\n\t\t}\n\t}\n"));
  EXPECT_EQ(proxy(c).transport.versions, (std::vector<std::string>{"h2c", "2"}));
  EXPECT_EQ(upstream_proto(proxy(c).transport), UpstreamProto::h2c);
}

TEST(UpstreamTransport, UpstreamProtoRules) {
  HttpTransport t;
  EXPECT_EQ(upstream_proto(t), UpstreamProto::h1);  // default 1.1 2 over cleartext: HTTP/1.1
  t.versions = {"2"};
  EXPECT_EQ(upstream_proto(t), UpstreamProto::h1);  // Go never speaks h2 in the clear unasked
  t.versions = {"h2c"};
  EXPECT_EQ(upstream_proto(t), UpstreamProto::h2c);
  t.tls = true;
  t.versions = {};
  EXPECT_EQ(upstream_proto(t), UpstreamProto::h2_tls_alpn);
  t.versions = {"1.1"};
  EXPECT_EQ(upstream_proto(t), UpstreamProto::h1);
  t.versions = {"2"};
  EXPECT_EQ(upstream_proto(t), UpstreamProto::h2_tls_alpn);
  t.versions = {"h2c", "2"};  // Caddy's TLS transport wins over its h2c one
  EXPECT_EQ(upstream_proto(t), UpstreamProto::h2_tls_alpn);
}

TEST(UpstreamTransport, SchemeAndTlsConflicts) {
  EXPECT_EQ(errors(site("\treverse_proxy http://a:1 {\n\t\ttransport http {\n\t\t\ttls\n"
                        "\t\t}\n\t}\n")),
            (std::vector<std::string>{"Caddyfile:3:3: upstream address scheme is HTTP but "
                                      "transport is configured for HTTP+TLS (HTTPS)"}));
  EXPECT_EQ(errors(site("\treverse_proxy h2c://a:1 {\n\t\ttransport http {\n\t\t\ttls_timeout 1s\n"
                        "\t\t}\n\t}\n")),
            (std::vector<std::string>{
                "Caddyfile:3:3: upstream address scheme is h2c (cleartext HTTP/2) but transport "
                "is configured for HTTP+TLS (HTTPS)"}));
  EXPECT_EQ(errors(site("\treverse_proxy https://a h2c://b\n")),
            (std::vector<std::string>{
                "Caddyfile:2:26: for now, all proxy upstreams must use the same scheme (transport "
                "protocol); expecting 'https://' but got 'h2c://'"}));
  EXPECT_EQ(errors(site("\treverse_proxy https://a:80\n")),
            (std::vector<std::string>{
                "Caddyfile:2:16: bad upstream address 'https://a:80': upstream address has "
                "conflicting scheme (https://) and port (:80, the HTTP port)"}));
}

TEST(UpstreamTransport, VersionErrors) {
  auto with = [](const std::string& line) {
    return errors(
        site("\treverse_proxy a:1 {\n\t\ttransport http {\n\t\t\t" + line + "\n\t\t}\n\t}\n"));
  };
  EXPECT_EQ(with("versions 1.1 3"),
            (std::vector<std::string>{"Caddyfile:4:17: HTTP/3 to upstreams ('versions 3') is not "
                                      "supported yet by hsp-gateway"}));
  EXPECT_EQ(with("versions h2"),
            (std::vector<std::string>{"Caddyfile:4:13: unknown HTTP version 'h2' for 'versions' "
                                      "(expected 1.1, 2, h2c or 3)"}));
  EXPECT_EQ(with("versions"),
            (std::vector<std::string>{
                "Caddyfile:4:4: wrong argument count or unexpected line ending after 'versions'"}));
}

TEST(UpstreamTransport, TlsOptionArity) {
  auto with = [](const std::string& line) {
    return errors(
        site("\treverse_proxy a:1 {\n\t\ttransport http {\n\t\t\t" + line + "\n\t\t}\n\t}\n"));
  };
  EXPECT_EQ(with("tls on"),
            (std::vector<std::string>{"Caddyfile:4:8: unexpected argument 'on' after 'tls'"}));
  EXPECT_EQ(with("tls_insecure_skip_verify yes"),
            (std::vector<std::string>{
                "Caddyfile:4:29: unexpected argument 'yes' after 'tls_insecure_skip_verify'"}));
  EXPECT_EQ(with("tls_server_name"),
            (std::vector<std::string>{"Caddyfile:4:4: wrong argument count or unexpected line "
                                      "ending after 'tls_server_name'"}));
  EXPECT_EQ(with("tls_server_name a b"),
            (std::vector<std::string>{
                "Caddyfile:4:22: unexpected argument 'b' after 'tls_server_name'"}));
  EXPECT_EQ(with("tls_timeout soon"),
            (std::vector<std::string>{"Caddyfile:4:16: bad duration 'soon' for 'tls_timeout'"}));
  EXPECT_EQ(with("tls_trusted_ca_certs"),
            (std::vector<std::string>{"Caddyfile:4:4: wrong argument count or unexpected line "
                                      "ending after 'tls_trusted_ca_certs'"}));
  EXPECT_EQ(with("tls_client_auth c.pem k.pem"),
            (std::vector<std::string>{"Caddyfile:4:4: unknown transport http subdirective "
                                      "'tls_client_auth': not supported yet by hsp-gateway"}));
}

TEST(UpstreamTransport, TrustedCaFileMustExist) {
  TempCa ca;
  auto with = [](const std::string& files) {
    return errors(site("\treverse_proxy a:1 {\n\t\ttransport http {\n\t\t\ttls_trusted_ca_certs " +
                       files + "\n\t\t}\n\t}\n"));
  };
  const std::string missing = ca.dir() + "/missing.pem";
  EXPECT_EQ(with(ca.path() + " " + missing),
            (std::vector<std::string>{"Caddyfile:4:" + std::to_string(25 + ca.path().size() + 1) +
                                      ": tls_trusted_ca_certs: cannot use '" + missing +
                                      "': no such file"}));
  EXPECT_EQ(with(ca.dir()), (std::vector<std::string>{"Caddyfile:4:25: tls_trusted_ca_certs: "
                                                      "cannot use '" +
                                                      ca.dir() + "': it is a directory"}));
  EXPECT_TRUE(with(ca.path()).empty());
}

}  // namespace
}  // namespace hsp::config
