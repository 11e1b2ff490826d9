// Certificates of TLS servers, built with the snapshot: files, local-CA names, the default for
// clients without SNI, protocol ranges, errors with the `tls` directive's position, and the
// renewal point the process uses to rebuild before local-CA leaves expire.
#include "engine/tls_certs.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "config/compile.h"
#include "engine/engine.h"
#include "tls/cert_selector.h"
#include "tls/local_ca.h"

namespace hsp::engine {
namespace {

namespace fs = std::filesystem;
using std::chrono::hours;

std::string fresh_dir(const std::string& name) {
  static std::atomic<int> n{0};
  fs::path p =
      fs::path(::testing::TempDir()) / ("hsp-tls-certs-" + name + "-" + std::to_string(::getpid()) +
                                        "-" + std::to_string(n.fetch_add(1)));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

void write(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

config::Config load(const std::string& text) {
  auto cfg = config::load_caddyfile_text(text, "Caddyfile");
  if (!cfg.ok()) {
    ADD_FAILURE() << cfg.errors()[0].str();
    return {};
  }
  return cfg.value();
}

size_t tls_server(const config::Config& cfg) {
  for (size_t i = 0; i < cfg.servers.size(); ++i)
    if (cfg.servers[i].tls) return i;
  ADD_FAILURE() << "no TLS server";
  return 0;
}

struct Fixture {
  std::string dir;
  tls::SystemTime now = std::chrono::system_clock::now();
  std::unique_ptr<CertAuthority> certs;
  std::string cert_file, key_file, file_serial;

  explicit Fixture(const std::string& name) : dir(fresh_dir(name)) {
    tls::LocalCa::Options o;
    o.now = [this] { return now; };
    certs = std::make_unique<CertAuthority>(dir + "/data", o);
    // A certificate file pair, made by a throwaway CA (any valid pair will do).
    auto other = tls::LocalCa::open(dir + "/other");
    EXPECT_TRUE(other.ok());
    auto leaf = (*other)->issue({"a.example.test"});
    EXPECT_TRUE(leaf.ok());
    cert_file = dir + "/a.pem";
    key_file = dir + "/a.key";
    write(cert_file, (*leaf)->cert_chain_pem());
    write(key_file, (*leaf)->key_pem());
    file_serial = (*leaf)->serial_hex();
  }

  std::string caddyfile() const {
    return "a.example.test {\n\ttls " + cert_file + " " + key_file +
           " {\n\t\tprotocols tls1.3\n\t}\n\trespond a\n}\n"
           "*.localhost {\n\trespond w\n}\n"
           "127.0.0.1 {\n\trespond ip\n}\n";
  }
};

TEST(TlsCerts, FilesLocalNamesAndTheDefault) {
  Fixture f("select");
  config::Config cfg = load(f.caddyfile());
  auto tls = build_server_tls(cfg, f.certs.get());
  ASSERT_TRUE(tls.ok()) << tls.errors()[0].str();
  const ServerTls& st = (*tls)[tls_server(cfg)];
  ASSERT_TRUE(st.selector);
  const tls::CertifiedKey* a = st.selector->select("A.Example.Test");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->serial_hex(), f.file_serial);
  const tls::CertifiedKey* w = st.selector->select("x.localhost");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dns_names(), std::vector<std::string>{"*.localhost"});
  // No SNI (clients never send one for an IP): the IP site's certificate.
  const tls::CertifiedKey* d = st.selector->select("");
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->ip_addresses(), std::vector<std::string>{"127.0.0.1"});
  // One site asks for TLS 1.3 only, the others allow 1.2: the server takes the widest range.
  EXPECT_EQ(st.min_version, TLS1_2_VERSION);
  EXPECT_EQ(st.max_version, TLS1_3_VERSION);
  // Cleartext servers (the HTTP->HTTPS redirects) have no selector.
  for (size_t i = 0; i < cfg.servers.size(); ++i) {
    if (!cfg.servers[i].tls) {
      EXPECT_FALSE((*tls)[i].selector) << i;
    }
  }
}

// Caddy 2.6 with `auto_https off` manages no certificate: a site without its own `tls` issuer
// gets none (its handshakes fail), while `tls internal` and certificate files still apply.
TEST(TlsCerts, AutoHttpsOffIssuesNothingForAutomaticNames) {
  Fixture f("off");
  config::Config cfg = load(
      "{\n\tauto_https off\n}\n"
      "https://a.localhost {\n\trespond a\n}\n"
      "https://b.localhost {\n\ttls internal\n\trespond b\n}\n"
      "https://a.example.test {\n\ttls " +
      f.cert_file + " " + f.key_file + "\n\trespond c\n}\n");
  auto tls = build_server_tls(cfg, f.certs.get());
  ASSERT_TRUE(tls.ok()) << tls.errors()[0].str();
  const ServerTls& st = (*tls)[tls_server(cfg)];
  ASSERT_TRUE(st.selector);
  EXPECT_EQ(st.selector->select("a.localhost"), nullptr);
  EXPECT_NE(st.selector->select("b.localhost"), nullptr);
  EXPECT_NE(st.selector->select("a.example.test"), nullptr);
}

TEST(TlsCerts, ProtocolRangeOfASingleSite) {
  Fixture f("proto");
  config::Config cfg = load("a.example.test {\n\ttls " + f.cert_file + " " + f.key_file +
                            " {\n\t\tprotocols tls1.3\n\t}\n}\n");
  auto tls = build_server_tls(cfg, f.certs.get());
  ASSERT_TRUE(tls.ok());
  EXPECT_EQ((*tls)[tls_server(cfg)].min_version, TLS1_3_VERSION);
}

TEST(TlsCerts, BadFilesAreErrorsAtTheTlsDirective) {
  Fixture f("bad");
  write(f.dir + "/junk.key", "not a key\n");
  config::Config cfg =
      load("a.example.test {\n\trespond a\n\ttls " + f.dir + "/missing.pem " + f.key_file +
           "\n}\nb.example.test {\n\ttls " + f.cert_file + " " + f.dir + "/junk.key\n}\n");
  auto tls = build_server_tls(cfg, f.certs.get());
  ASSERT_FALSE(tls.ok());
  ASSERT_EQ(tls.errors().size(), 2u);
  EXPECT_EQ(tls.errors()[0].loc.str(), "Caddyfile:3:2");
  EXPECT_NE(tls.errors()[0].message.find("missing.pem"), std::string::npos)
      << tls.errors()[0].message;
  EXPECT_EQ(tls.errors()[1].loc.str(), "Caddyfile:6:2");
  // The snapshot build reports them too, so a reload with a bad file keeps the old snapshot.
  UpstreamRegistry reg;
  EXPECT_FALSE(Snapshot::build(cfg, reg, 1, f.certs.get()).ok());
  EXPECT_FALSE(Snapshot::build(cfg, reg, 1).ok());  // validate: files are checked as well
}

TEST(TlsCerts, WithoutAnAuthorityNothingIsCreated) {
  Fixture f("noca");
  config::Config cfg = load(f.caddyfile());
  auto tls = build_server_tls(cfg, nullptr);
  ASSERT_TRUE(tls.ok());
  const ServerTls& st = (*tls)[tls_server(cfg)];
  EXPECT_NE(st.selector->select("a.example.test"), nullptr);  // files still load
  EXPECT_EQ(st.selector->select("x.localhost"), nullptr);
  EXPECT_FALSE(fs::exists(f.dir + "/data"));
  EXPECT_FALSE(f.certs->renew_at().has_value());
}

TEST(TlsCerts, LeavesAreRenewedByARebuildAtTheRenewalPoint) {
  Fixture f("renew");
  config::Config cfg = load("a.localhost {\n\trespond a\n}\n");
  size_t si = tls_server(cfg);
  auto first = build_server_tls(cfg, f.certs.get());
  ASSERT_TRUE(first.ok());
  std::string serial1 = (*first)[si].selector->select("a.localhost")->serial_hex();
  auto at = f.certs->renew_at();
  ASSERT_TRUE(at.has_value());
  // Leaves live 12 hours; renewal is due at 2/3 of that.
  EXPECT_GT(*at, f.now + hours(7));
  EXPECT_LT(*at, f.now + hours(9));
  // Before the renewal point a rebuild reuses the leaf...
  auto again = build_server_tls(cfg, f.certs.get());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)[si].selector->select("a.localhost")->serial_hex(), serial1);
  // ...after it, a rebuild gets a new one and the next renewal point moves on.
  f.now += hours(9);
  auto renewed = build_server_tls(cfg, f.certs.get());
  ASSERT_TRUE(renewed.ok());
  EXPECT_NE((*renewed)[si].selector->select("a.localhost")->serial_hex(), serial1);
  ASSERT_TRUE(f.certs->renew_at().has_value());
  EXPECT_GT(*f.certs->renew_at(), f.now + hours(7));
}

// --data-dir, then $HSP_DATA_DIR, then Caddy's XDG layout under our own name.
TEST(TlsCerts, DataDirectoryOrder) {
  std::string saved_hsp = std::getenv("HSP_DATA_DIR") ? std::getenv("HSP_DATA_DIR") : "";
  std::string saved_xdg = std::getenv("XDG_DATA_HOME") ? std::getenv("XDG_DATA_HOME") : "";
  std::string saved_home = std::getenv("HOME") ? std::getenv("HOME") : "";
  ::setenv("HSP_DATA_DIR", "/d/hsp", 1);
  ::setenv("XDG_DATA_HOME", "/d/xdg", 1);
  ::setenv("HOME", "/d/home", 1);
  EXPECT_EQ(data_dir("/flag"), "/flag");
  // Relative directories become absolute: the root's logged path must work from anywhere.
  EXPECT_EQ(data_dir("rel/./dir"),
            (std::filesystem::current_path() / "rel/dir").lexically_normal().string());
  EXPECT_EQ(data_dir(""), "/d/hsp");
  ::unsetenv("HSP_DATA_DIR");
  EXPECT_EQ(data_dir(""), "/d/xdg/hsp-gateway");
  ::unsetenv("XDG_DATA_HOME");
  EXPECT_EQ(data_dir(""), "/d/home/.local/share/hsp-gateway");
  auto restore = [](const char* name, const std::string& v) {
    if (v.empty()) {
      ::unsetenv(name);
    } else {
      ::setenv(name, v.c_str(), 1);
    }
  };
  restore("HSP_DATA_DIR", saved_hsp);
  restore("XDG_DATA_HOME", saved_xdg);
  restore("HOME", saved_home);
}

TEST(TlsCerts, CreatesAMissingDataDirectory) {
  std::string base = fresh_dir("mkdir");
  CertAuthority certs(base + "/x/y/hsp-gateway");
  auto ca = certs.local_ca();
  ASSERT_TRUE(ca.ok()) << ca.errors()[0].str();
  EXPECT_TRUE(fs::exists((*ca)->root_path()));
  auto perms = fs::status(base + "/x/y/hsp-gateway").permissions();
  EXPECT_EQ(perms & fs::perms::all, fs::perms::owner_all);
}

// ACME names go to the ManagedCerts source: every name of the configuration in one want(), with
// the CA, roots, e-mail and challenges its site resolves to; what current() returns is served,
// and a name it has nothing for gets no certificate (handshakes fail until one arrives).
class RecordingManaged : public ManagedCerts {
 public:
  void want(const std::vector<AcmeName>& names) override {
    wanted = names;
    ++calls;
  }
  std::shared_ptr<const tls::CertifiedKey> current(const std::string& name) override {
    auto it = have.find(name);
    return it == have.end() ? nullptr : it->second;
  }
  std::vector<AcmeName> wanted;
  int calls = 0;
  std::map<std::string, std::shared_ptr<const tls::CertifiedKey>> have;
};

const AcmeName* wanted(const RecordingManaged& m, const std::string& name) {
  for (const auto& w : m.wanted)
    if (w.name == name) return &w;
  return nullptr;
}

TEST(TlsCerts, AcmeNamesGoToTheManagedSource) {
  Fixture f("acme");
  RecordingManaged managed;
  f.certs->set_managed(&managed);
  auto other = tls::LocalCa::open(f.dir + "/issuer");
  ASSERT_TRUE(other.ok());
  auto leaf = (*other)->issue({"pub.example.com"});
  ASSERT_TRUE(leaf.ok());
  managed.have["pub.example.com"] = *leaf;
  config::Config cfg = load(
      "{\n\temail ops@example.com\n\tacme_ca https://ca.example/dir\n}\n"
      "pub.example.com {\n\trespond p\n}\n"
      "wait.example.com {\n\trespond w\n}\n"
      "app.localhost {\n\trespond l\n}\n");
  auto tls = build_server_tls(cfg, f.certs.get());
  ASSERT_TRUE(tls.ok()) << tls.errors()[0].str();
  EXPECT_EQ(managed.calls, 1);
  ASSERT_EQ(managed.wanted.size(), 2u);  // not app.localhost: the local CA's
  const AcmeName* pub = wanted(managed, "pub.example.com");
  ASSERT_TRUE(pub);
  EXPECT_EQ(pub->ca, "https://ca.example/dir");
  EXPECT_EQ(pub->email, "ops@example.com");
  EXPECT_EQ(pub->challenges, (std::vector<std::string>{"http-01", "tls-alpn-01"}));
  const ServerTls& st = (*tls)[tls_server(cfg)];
  ASSERT_TRUE(st.selector);
  const tls::CertifiedKey* got = st.selector->select("pub.example.com");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->serial_hex(), (*leaf)->serial_hex());
  EXPECT_EQ(st.selector->select("wait.example.com"), nullptr);  // nothing yet: no certificate
  EXPECT_NE(st.selector->select("app.localhost"), nullptr);
}

// A configuration that does not build (here a missing certificate file) tells the manager
// nothing: no orders for its names, and the serving snapshot's names stay managed.
TEST(TlsCerts, RejectedConfigurationLeavesTheManagerAlone) {
  Fixture f("acme-rejected");
  RecordingManaged managed;
  f.certs->set_managed(&managed);
  config::Config good = load("old.example.com {\n\trespond o\n}\n");
  ASSERT_TRUE(build_server_tls(good, f.certs.get()).ok());
  ASSERT_EQ(managed.calls, 1);
  config::Config bad = load(
      "new.example.com {\n\trespond n\n}\n"
      "files.example.com {\n\ttls " +
      f.dir + "/missing.pem " + f.dir + "/missing.key\n}\n");
  ASSERT_FALSE(build_server_tls(bad, f.certs.get()).ok());
  EXPECT_EQ(managed.calls, 1);
  ASSERT_EQ(managed.wanted.size(), 1u);
  EXPECT_EQ(managed.wanted[0].name, "old.example.com");
}

// No listener on http_port (redirects off, no http:// site): the CA could not reach HTTP-01,
// so only TLS-ALPN-01 is asked for; a site that allows HTTP-01 only keeps it (and fails loudly).
TEST(TlsCerts, NoHttpListenerLeavesHttp01Out) {
  Fixture f("acme-nohttp");
  RecordingManaged managed;
  f.certs->set_managed(&managed);
  config::Config cfg = load(
      "{\n\tauto_https disable_redirects\n}\n"
      "pub.example.com {\n\trespond p\n}\n"
      "only.example.com {\n\ttls {\n\t\tissuer acme {\n\t\t\tdisable_tlsalpn_challenge\n"
      "\t\t}\n\t}\n\trespond o\n}\n");
  ASSERT_TRUE(build_server_tls(cfg, f.certs.get()).ok());
  ASSERT_TRUE(wanted(managed, "pub.example.com"));
  EXPECT_EQ(wanted(managed, "pub.example.com")->challenges,
            std::vector<std::string>{"tls-alpn-01"});
  ASSERT_TRUE(wanted(managed, "only.example.com"));
  EXPECT_EQ(wanted(managed, "only.example.com")->challenges, std::vector<std::string>{"http-01"});

  // With the redirects (Caddy's default) the HTTP port listens: both.
  config::Config with = load("pub.example.com {\n\trespond p\n}\n");
  ASSERT_TRUE(build_server_tls(with, f.certs.get()).ok());
  EXPECT_EQ(wanted(managed, "pub.example.com")->challenges,
            (std::vector<std::string>{"http-01", "tls-alpn-01"}));
}

// The roots for an ACME CA's HTTPS are checked when the configuration loads (validate too), as
// certificate files are: not in the background, at the first order.
TEST(TlsCerts, AcmeCaRootsMustLoad) {
  Fixture f("acme-roots");
  write(f.dir + "/not-pem.txt", "hello\n");
  config::Config cfg = load("{\n\tacme_ca_root " + f.dir +
                            "/missing.pem\n}\n"
                            "a.example.com {\n\trespond a\n}\n"
                            "b.example.com {\n\ttls {\n\t\tca_root " +
                            f.dir +
                            "/not-pem.txt\n\t}\n}\n"
                            "c.example.com {\n\ttls {\n\t\tca_root " +
                            f.cert_file + "\n\t}\n}\n");
  auto tls = build_server_tls(cfg, nullptr);
  ASSERT_FALSE(tls.ok());
  ASSERT_EQ(tls.errors().size(), 2u);
  EXPECT_NE(tls.errors()[0].str().find("missing.pem: cannot read"), std::string::npos)
      << tls.errors()[0].str();
  EXPECT_NE(tls.errors()[1].str().find("not-pem.txt: no PEM certificate"), std::string::npos)
      << tls.errors()[1].str();
  // Each points where the file was named: the global option, then the site's `ca_root`.
  EXPECT_EQ(tls.errors()[0].loc.line, 2);
  EXPECT_EQ(tls.errors()[1].loc.line, 9);
}

}  // namespace
}  // namespace hsp::engine
