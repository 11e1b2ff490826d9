// hsp-bench's command line: `hsp-bench URL [options]`. Parsing is pure (no I/O but reading the
// --body file), so the tests drive it with argument vectors.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "connection.h"

namespace hsp::bench {

enum class ProtoChoice { automatic, h1, h2, h2c, h3 };

struct Url {
  bool https = false;
  std::string host;  // without brackets for IPv6 literals
  uint16_t port = 0;
  std::string target = "/";  // path and query as given
  bool host_is_ip = false;
};

// One --connect-to rule in curl's syntax HOST:PORT:ADDR:PORT; an empty HOST or PORT on the
// left matches any, an empty ADDR or PORT on the right keeps the URL's.
struct ConnectTo {
  std::string host;
  std::optional<uint16_t> port;
  std::string addr;
  std::optional<uint16_t> addr_port;
};

struct Options {
  std::string url_text;
  Url url;
  uint32_t connections = 10;
  uint32_t streams = 1;
  uint32_t threads = 1;
  double duration_s = 10.0;  // used when requests == 0
  uint64_t requests = 0;     // -n: exact count; 0 means duration mode
  double warmup_s = 0.0;
  double timeout_s = 10.0;
  ProtoChoice proto = ProtoChoice::automatic;
  std::string method = "GET";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body_file;
  std::shared_ptr<const std::string> body;
  std::string ca_file;
  bool insecure = false;
  std::string sni;  // --sni; empty: the URL host unless it is an IP literal
  std::vector<ConnectTo> connect_to;
  double rate = 0.0;  // --rate; 0: closed loop
  bool json = false;
  std::string histogram_file;
  bool quiet = false;
};

struct CliResult {
  enum class Kind { run, help, error } kind = Kind::run;
  Options options;
  std::string message;  // help text or the one-line error
};

CliResult parse_cli(const std::vector<std::string>& args);  // args without argv[0]
std::string usage();

std::optional<Url> parse_url(const std::string& text);
std::optional<ConnectTo> parse_connect_to(const std::string& text);

// Where to connect (before name resolution) and what to send as authority / SNI, after the
// --connect-to rules, -H Host and --sni.
struct Target {
  std::string connect_host;  // a name or an address literal (no brackets)
  uint16_t connect_port = 0;
  std::string authority;
  std::string sni;
  bool connect_to_matched = false;  // a --connect-to rule applied
};
Target resolve_target(const Options& opts);

// The RequestTemplate for the run (headers minus Host, which becomes the authority).
RequestTemplate make_request(const Options& opts);

}  // namespace hsp::bench
