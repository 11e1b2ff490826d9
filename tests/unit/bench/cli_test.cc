// hsp-bench's command line: good and bad options, --connect-to, headers, targets.
#include "cli.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

namespace hsp::bench {
namespace {

CliResult parse(std::vector<std::string> args) {
  return parse_cli(args);
}

Options ok(std::vector<std::string> args) {
  CliResult r = parse(args);
  EXPECT_EQ(r.kind, CliResult::Kind::run) << r.message;
  return r.options;
}

// A bad option: one line that names the option.
void expect_error(std::vector<std::string> args, const std::string& names) {
  CliResult r = parse(args);
  EXPECT_EQ(r.kind, CliResult::Kind::error);
  EXPECT_EQ(r.message.find('\n'), std::string::npos) << r.message;
  EXPECT_NE(r.message.find(names), std::string::npos) << r.message;
}

TEST(Cli, Defaults) {
  Options o = ok({"http://127.0.0.1:8080/"});
  EXPECT_EQ(o.connections, 10u);
  EXPECT_EQ(o.streams, 1u);
  EXPECT_EQ(o.threads, 1u);
  EXPECT_EQ(o.requests, 0u);
  EXPECT_EQ(o.rate, 0.0);
  EXPECT_EQ(o.method, "GET");
  EXPECT_EQ(o.proto, ProtoChoice::automatic);
  EXPECT_EQ(o.url.host, "127.0.0.1");
  EXPECT_EQ(o.url.port, 8080);
  EXPECT_EQ(o.url.target, "/");
  EXPECT_FALSE(o.url.https);
}

TEST(Cli, ShortLongAndAttachedForms) {
  Options o = ok({"-c", "50", "--streams=8", "-t2", "-d", "500ms", "--warmup", "2", "--timeout=3s",
                  "https://example.test/a?b=1", "--rate", "2500.5", "--json", "-q", "-k",
                  "--histogram", "h.hgrm", "-X", "PUT"});
  EXPECT_EQ(o.connections, 50u);
  EXPECT_EQ(o.streams, 8u);
  EXPECT_EQ(o.threads, 2u);
  EXPECT_DOUBLE_EQ(o.duration_s, 0.5);
  EXPECT_DOUBLE_EQ(o.warmup_s, 2.0);
  EXPECT_DOUBLE_EQ(o.timeout_s, 3.0);
  EXPECT_DOUBLE_EQ(o.rate, 2500.5);
  EXPECT_TRUE(o.json && o.quiet && o.insecure);
  EXPECT_EQ(o.histogram_file, "h.hgrm");
  EXPECT_EQ(o.method, "PUT");
  EXPECT_TRUE(o.url.https);
  EXPECT_EQ(o.url.port, 443);
  EXPECT_EQ(o.url.target, "/a?b=1");
}

TEST(Cli, RequestCount) {
  Options o = ok({"http://h/", "-n", "1000"});
  EXPECT_EQ(o.requests, 1000u);
}

TEST(Cli, Headers) {
  Options o = ok({"http://127.0.0.1/", "-H", "X-One: 1", "--header", "x-two:two words ",
                  "-HAccept: */*", "-H", "Host: site.test"});
  ASSERT_EQ(o.headers.size(), 4u);
  EXPECT_EQ(o.headers[0], std::make_pair(std::string("X-One"), std::string("1")));
  EXPECT_EQ(o.headers[1], std::make_pair(std::string("x-two"), std::string("two words")));
  EXPECT_EQ(o.headers[2].first, "Accept");
  RequestTemplate req = make_request(o);
  EXPECT_EQ(req.headers.size(), 3u);  // Host becomes the authority
  EXPECT_EQ(resolve_target(o).authority, "site.test");
}

TEST(Cli, BadOptionsNameTheOption) {
  expect_error({}, "URL");
  expect_error({"ftp://x/"}, "ftp://x/");
  expect_error({"http://x/", "-c", "0"}, "-c");
  expect_error({"http://x/", "--connections", "ten"}, "--connections");
  expect_error({"http://x/", "-c"}, "-c");
  expect_error({"http://x/", "-t", "0"}, "-t");
  expect_error({"http://x/", "-c", "2", "-t", "4"}, "-t");
  expect_error({"http://x/", "-d", "soon"}, "-d");
  expect_error({"http://x/", "-d", "0"}, "-d");
  expect_error({"http://x/", "-n", "-5"}, "-n");
  expect_error({"http://x/", "-n", "5", "-d", "3"}, "-n");
  expect_error({"http://x/", "--rate", "0"}, "--rate");
  expect_error({"http://x/", "--rate", "fast"}, "--rate");
  expect_error({"http://x/", "--proto", "h4"}, "--proto");
  expect_error({"http://x/", "--proto", "h2"}, "--proto");
  expect_error({"https://x/", "--proto", "h2c"}, "--proto");
  expect_error({"http://x/", "--proto", "h3"}, "--proto");
  expect_error({"http://x/", "-m", "4"}, "-m");
  expect_error({"http://x/", "-H", "NoColon"}, "-H");
  expect_error({"http://x/", "-H", "Bad Name: v"}, "-H");
  expect_error({"http://x/", "-X", "GE T"}, "-X");
  expect_error({"http://x/", "--body", "/nonexistent/file"}, "--body");
  expect_error({"http://x/", "--cacert", "/nonexistent/ca.pem"}, "--cacert");
  expect_error({"http://x/", "--connect-to", "a:b"}, "--connect-to");
  expect_error({"http://x/", "--connect-to", "h:99999:127.0.0.1:80"}, "--connect-to");
  expect_error({"http://x/", "--frobnicate"}, "--frobnicate");
  expect_error({"http://x/", "--json=yes"}, "--json");
  expect_error({"http://x/", "http://y/"}, "more than one URL");
  expect_error({"http://x:0/"}, "http://x:0/");
  expect_error({"http://[::1/"}, "http://[::1/");
}

TEST(Cli, HelpIsNotAnError) {
  CliResult r = parse({"--help"});
  EXPECT_EQ(r.kind, CliResult::Kind::help);
  EXPECT_NE(r.message.find("--connect-to"), std::string::npos);
}

TEST(Cli, Ipv6Urls) {
  Options o = ok({"http://[::1]:8080/x"});
  EXPECT_EQ(o.url.host, "::1");
  EXPECT_TRUE(o.url.host_is_ip);
  Target t = resolve_target(o);
  EXPECT_EQ(t.authority, "[::1]:8080");
  EXPECT_EQ(t.sni, "");  // no SNI for IP literals
}

TEST(Cli, ConnectToSyntax) {
  auto r = parse_connect_to("example.test:443:127.0.0.1:8443");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->host, "example.test");
  EXPECT_EQ(*r->port, 443);
  EXPECT_EQ(r->addr, "127.0.0.1");
  EXPECT_EQ(*r->addr_port, 8443);
  r = parse_connect_to("::[::1]:");
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->host.empty());
  EXPECT_FALSE(r->port);
  EXPECT_EQ(r->addr, "::1");
  EXPECT_FALSE(r->addr_port);
  EXPECT_FALSE(parse_connect_to("a:1:b"));
  EXPECT_FALSE(parse_connect_to("a:1:b:2:3"));
  EXPECT_FALSE(parse_connect_to("a:x:b:2"));
}

TEST(Cli, ConnectToKeepsHostAndSni) {
  Options o = ok({"https://site.test:8443/p", "--connect-to", "other:1:10.0.0.1:1", "--connect-to",
                  "site.test:8443:127.0.0.2:9000"});
  Target t = resolve_target(o);
  EXPECT_EQ(t.connect_host, "127.0.0.2");
  EXPECT_EQ(t.connect_port, 9000);
  EXPECT_EQ(t.authority, "site.test:8443");
  EXPECT_EQ(t.sni, "site.test");
}

TEST(Cli, ConnectToWildcardsAndNoMatch) {
  Options o = ok({"http://site.test/", "--connect-to", "::127.0.0.1:8080"});
  Target t = resolve_target(o);
  EXPECT_EQ(t.connect_host, "127.0.0.1");
  EXPECT_EQ(t.connect_port, 8080);
  EXPECT_EQ(t.authority, "site.test");
  EXPECT_TRUE(t.connect_to_matched);
  o = ok({"http://site.test/", "--connect-to", "elsewhere:80:127.0.0.1:8080"});
  t = resolve_target(o);
  EXPECT_EQ(t.connect_host, "site.test");
  EXPECT_EQ(t.connect_port, 80);
  EXPECT_FALSE(t.connect_to_matched);  // main() warns: the URL's own host gets the load
}

TEST(Cli, CaCertMustBePem) {
  std::string der = testing::TempDir() + "hsp_bench_ca.der";
  std::string pem = testing::TempDir() + "hsp_bench_ca.pem";
  {
    std::ofstream out(der, std::ios::binary);
    out << std::string("\x30\x82\x01\x0a binary", 12);
    std::ofstream out2(pem);
    out2 << "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  }
  expect_error({"https://127.0.0.1/", "--cacert", der}, "--cacert");
  ok({"https://127.0.0.1/", "--cacert", pem});  // OpenSSL judges the content at start-up
  std::remove(der.c_str());
  std::remove(pem.c_str());
}

TEST(Cli, HelpStatesExitStatusInterruptsAndHistogramStdout) {
  CliResult r = parse({"--help"});
  EXPECT_NE(r.message.find("Exit status"), std::string::npos);
  EXPECT_NE(r.message.find("second Ctrl-C exits at once"), std::string::npos);
  EXPECT_NE(r.message.find("'-': to stdout"), std::string::npos);
}

TEST(Cli, SniOverride) {
  Options o = ok({"https://127.0.0.1:8443/", "--sni", "name.test"});
  EXPECT_EQ(resolve_target(o).sni, "name.test");
}

TEST(Cli, BodyFromFile) {
  std::string path = testing::TempDir() + "hsp_bench_body.bin";
  {
    std::ofstream out(path, std::ios::binary);
    out << std::string("a\0b", 3);
  }
  Options o = ok({"http://x/", "-X", "POST", "--body", path});
  ASSERT_TRUE(o.body);
  EXPECT_EQ(*o.body, std::string("a\0b", 3));
  EXPECT_EQ(make_request(o).body->size(), 3u);
  std::remove(path.c_str());
}

TEST(Cli, H2cAndStreams) {
  Options o = ok({"http://x/", "--proto", "h2c", "-m", "16"});
  EXPECT_EQ(o.proto, ProtoChoice::h2c);
  EXPECT_EQ(o.streams, 16u);
  o = ok({"https://x/", "-m", "16"});  // auto over TLS: the server may pick h2
  EXPECT_EQ(o.streams, 16u);
}

}  // namespace
}  // namespace hsp::bench
