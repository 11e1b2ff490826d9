#include "cli.h"

#include <arpa/inet.h>

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

namespace hsp::bench {

namespace {

bool is_ip_literal(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

std::optional<uint64_t> parse_uint(const std::string& s) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

std::optional<double> parse_seconds(const std::string& s) {
  // Plain seconds, or with a unit as wrk takes them: 500ms, 10s, 2m.
  std::string num = s;
  double scale = 1.0;
  auto ends = [&](const char* suf) {
    size_t n = std::char_traits<char>::length(suf);
    return num.size() > n && num.compare(num.size() - n, n, suf) == 0;
  };
  if (ends("ms")) {
    scale = 1e-3;
    num.resize(num.size() - 2);
  } else if (ends("s")) {
    num.resize(num.size() - 1);
  } else if (ends("m")) {
    scale = 60.0;
    num.resize(num.size() - 1);
  }
  if (num.empty()) return std::nullopt;
  double v = 0;
  auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
  if (ec != std::errc() || p != num.data() + num.size() || !std::isfinite(v) || v < 0)
    return std::nullopt;
  return v * scale;
}

std::optional<uint16_t> parse_port(const std::string& s) {
  auto v = parse_uint(s);
  if (!v || *v == 0 || *v > 65535) return std::nullopt;
  return uint16_t(*v);
}

std::string trim(std::string s) {
  size_t b = s.find_first_not_of(" \t");
  size_t e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

bool valid_token(const std::string& s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (c <= 0x20 || c >= 0x7f || std::strchr("()<>@,;:\\\"/[]?={}", c)) return false;
  }
  return true;
}

// Splits "host:port" where host may be "[v6]"; returns false on bad brackets.
bool split_host_port(const std::string& s, std::string& host, std::string& port) {
  if (!s.empty() && s[0] == '[') {
    size_t close = s.find(']');
    if (close == std::string::npos) return false;
    host = s.substr(1, close - 1);
    std::string rest = s.substr(close + 1);
    if (rest.empty()) {
      port.clear();
      return true;
    }
    if (rest[0] != ':') return false;
    port = rest.substr(1);
    return true;
  }
  size_t colon = s.rfind(':');
  if (colon == std::string::npos) {
    host = s;
    port.clear();
    return true;
  }
  host = s.substr(0, colon);
  port = s.substr(colon + 1);
  return host.find(':') == std::string::npos;  // an unbracketed IPv6 literal is ambiguous
}

}  // namespace

std::optional<Url> parse_url(const std::string& text) {
  Url url;
  std::string rest;
  if (text.rfind("http://", 0) == 0) {
    rest = text.substr(7);
  } else if (text.rfind("https://", 0) == 0) {
    url.https = true;
    rest = text.substr(8);
  } else {
    return std::nullopt;
  }
  size_t slash = rest.find_first_of("/?");
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) {
    url.target = rest.substr(slash);
    if (url.target[0] == '?') url.target = "/" + url.target;
  }
  if (size_t hash = url.target.find('#'); hash != std::string::npos) url.target.resize(hash);
  if (authority.find('@') != std::string::npos) return std::nullopt;  // no userinfo
  std::string port;
  if (!split_host_port(authority, url.host, port) || url.host.empty()) return std::nullopt;
  if (port.empty()) {
    url.port = url.https ? 443 : 80;
  } else {
    auto p = parse_port(port);
    if (!p) return std::nullopt;
    url.port = *p;
  }
  for (char& c : url.host) c = char(std::tolower((unsigned char)c));
  url.host_is_ip = is_ip_literal(url.host);
  return url;
}

std::optional<ConnectTo> parse_connect_to(const std::string& text) {
  // HOST:PORT:ADDR:PORT, where HOST and ADDR may be bracketed IPv6 literals.
  std::vector<std::string> parts;
  size_t i = 0;
  while (parts.size() < 4) {
    std::string part;
    if (i < text.size() && text[i] == '[') {
      size_t close = text.find(']', i);
      if (close == std::string::npos) return std::nullopt;
      part = text.substr(i + 1, close - i - 1);
      i = close + 1;
      if (i < text.size() && text[i] != ':') return std::nullopt;
    } else {
      size_t colon = text.find(':', i);
      part = text.substr(i, colon == std::string::npos ? std::string::npos : colon - i);
      i = colon == std::string::npos ? text.size() : colon;
    }
    parts.push_back(part);
    if (i >= text.size()) break;
    ++i;                                         // the ':'
    if (parts.size() == 4) return std::nullopt;  // trailing fields
  }
  if (parts.size() != 4 || i < text.size()) return std::nullopt;
  ConnectTo rule;
  rule.host = parts[0];
  for (char& c : rule.host) c = char(std::tolower((unsigned char)c));
  rule.addr = parts[2];
  if (!parts[1].empty()) {
    rule.port = parse_port(parts[1]);
    if (!rule.port) return std::nullopt;
  }
  if (!parts[3].empty()) {
    rule.addr_port = parse_port(parts[3]);
    if (!rule.addr_port) return std::nullopt;
  }
  return rule;
}

std::string usage() {
  return R"(usage: hsp-bench URL [options]

Load generator for HTTP/1.1, HTTP/2 (TLS or h2c) and HTTP/3.

  -c, --connections N     connections in total (default 10)
  -m, --streams N         concurrent requests per connection, h2/h3 (default 1)
  -t, --threads N         threads, each with its share of the connections (default 1)
  -d, --duration T        measured time, seconds or 500ms/10s/2m (default 10s)
  -n, --requests N        exactly N requests instead of a duration
  -w, --warmup T          run this long first without recording (default 0)
      --timeout T         per request (default 10s); after the measured time the run waits
                          at most this long for requests in flight (the report says how long)
      --proto P           auto|h1|h2|h2c|h3 (auto: http:// is h1, https:// offers h2 and
                          http/1.1 by ALPN and the server picks)
  -X, --method M          request method (default GET)
  -H, --header "N: v"     extra request header, repeatable; Host sets the authority
      --body FILE         request body (Content-Length is set)
      --cacert FILE       trust these CA certificates instead of the system store
  -k, --insecure          do not verify the server certificate
      --sni NAME          TLS server name (default: the URL host unless it is an IP)
      --connect-to H:P:A:Q  send requests for H:P to A:Q; Host and SNI stay H (curl syntax)
      --rate R            open loop: R requests/s in total, latency from the intended send
                          time (coordinated omission corrected); default closed loop
      --json              print one JSON object on stdout instead of the text report
      --histogram FILE    write the latency percentile distribution (.hgrm, milliseconds);
                          checked writable at start. '-': to stdout, and the report (text or
                          JSON) then goes to stderr
  -q, --quiet             no progress line
  -h, --help              this text

Ctrl-C ends the run at once and prints the report of what ran (requests in flight count as
not finished); a second Ctrl-C exits at once without a report.
Exit status: 0 when at least one request got a response (any status), 1 when none did (every
request failed, or none completed), 2 for a bad option or an unusable file (--body, --cacert,
--histogram).
)";
}

CliResult parse_cli(const std::vector<std::string>& args) {
  CliResult res;
  Options& o = res.options;
  auto fail = [&](const std::string& msg) {
    res.kind = CliResult::Kind::error;
    res.message = msg;
    return res;
  };
  bool have_url = false, have_duration = false;
  std::vector<std::string> raw_connect_to;

  for (size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    std::string name = arg, value;
    bool inline_value = false;
    if (arg.rfind("--", 0) == 0) {
      if (size_t eq = arg.find('='); eq != std::string::npos) {
        name = arg.substr(0, eq);
        value = arg.substr(eq + 1);
        inline_value = true;
      }
    } else if (arg.size() > 2 && arg[0] == '-' && arg[1] != '-') {
      // -c10 and -H"Name: v" as getopt takes them (flags without values stand alone).
      name = arg.substr(0, 2);
      if (name != "-k" && name != "-q" && name != "-h") {
        value = arg.substr(2);
        inline_value = true;
      }
    }
    auto need = [&](std::string& out) -> bool {
      if (inline_value) {
        out = value;
        return true;
      }
      if (i + 1 >= args.size()) return false;
      out = args[++i];
      return true;
    };
    auto flag = [&]() { return !inline_value; };
    std::string v;
    auto missing = [&]() { return fail(name + ": missing value"); };
    auto positive = [&](uint32_t& out, uint64_t max) -> bool {
      auto n = parse_uint(v);
      if (!n || *n == 0 || *n > max) return false;
      out = uint32_t(*n);
      return true;
    };

    if (name == "-h" || name == "--help") {
      res.kind = CliResult::Kind::help;
      res.message = usage();
      return res;
    } else if (name == "-c" || name == "--connections") {
      if (!need(v)) return missing();
      if (!positive(o.connections, 1000000))
        return fail(name + ": expected a positive integer, got '" + v + "'");
    } else if (name == "-m" || name == "--streams") {
      if (!need(v)) return missing();
      if (!positive(o.streams, 1u << 20))
        return fail(name + ": expected a positive integer, got '" + v + "'");
    } else if (name == "-t" || name == "--threads") {
      if (!need(v)) return missing();
      if (!positive(o.threads, 1024))
        return fail(name + ": expected a positive integer up to 1024, got '" + v + "'");
    } else if (name == "-d" || name == "--duration") {
      if (!need(v)) return missing();
      auto s = parse_seconds(v);
      if (!s || *s <= 0) return fail(name + ": expected a positive duration, got '" + v + "'");
      o.duration_s = *s;
      have_duration = true;
    } else if (name == "-n" || name == "--requests") {
      if (!need(v)) return missing();
      auto n = parse_uint(v);
      if (!n || *n == 0) return fail(name + ": expected a positive integer, got '" + v + "'");
      o.requests = *n;
    } else if (name == "-w" || name == "--warmup") {
      if (!need(v)) return missing();
      auto s = parse_seconds(v);
      if (!s) return fail(name + ": expected a duration, got '" + v + "'");
      o.warmup_s = *s;
    } else if (name == "--timeout") {
      if (!need(v)) return missing();
      auto s = parse_seconds(v);
      if (!s || *s <= 0) return fail(name + ": expected a positive duration, got '" + v + "'");
      o.timeout_s = *s;
    } else if (name == "--proto") {
      if (!need(v)) return missing();
      if (v == "auto")
        o.proto = ProtoChoice::automatic;
      else if (v == "h1")
        o.proto = ProtoChoice::h1;
      else if (v == "h2")
        o.proto = ProtoChoice::h2;
      else if (v == "h2c")
        o.proto = ProtoChoice::h2c;
      else if (v == "h3")
        o.proto = ProtoChoice::h3;
      else
        return fail(name + ": expected auto, h1, h2, h2c or h3, got '" + v + "'");
    } else if (name == "-X" || name == "--method") {
      if (!need(v)) return missing();
      if (!valid_token(v)) return fail(name + ": not a valid method: '" + v + "'");
      o.method = v;
    } else if (name == "-H" || name == "--header") {
      if (!need(v)) return missing();
      size_t colon = v.find(':');
      if (colon == std::string::npos || colon == 0)
        return fail(name + ": expected \"Name: value\", got '" + v + "'");
      std::string hname = trim(v.substr(0, colon));
      std::string hvalue = trim(v.substr(colon + 1));
      if (!valid_token(hname)) return fail(name + ": not a valid field name: '" + hname + "'");
      for (unsigned char c : hvalue) {
        if ((c < 0x20 && c != '\t') || c == 0x7f)
          return fail(name + ": control character in the value of '" + hname + "'");
      }
      o.headers.emplace_back(hname, hvalue);
    } else if (name == "--body") {
      if (!need(v)) return missing();
      o.body_file = v;
    } else if (name == "--cacert") {
      if (!need(v)) return missing();
      if (v.empty()) return fail(name + ": empty file name");
      o.ca_file = v;
    } else if (name == "-k" || name == "--insecure") {
      if (!flag()) return fail(name + ": takes no value");
      o.insecure = true;
    } else if (name == "--sni") {
      if (!need(v)) return missing();
      if (v.empty()) return fail(name + ": empty server name");
      o.sni = v;
    } else if (name == "--connect-to") {
      if (!need(v)) return missing();
      auto rule = parse_connect_to(v);
      if (!rule) return fail(name + ": expected HOST:PORT:ADDR:PORT, got '" + v + "'");
      o.connect_to.push_back(*rule);
    } else if (name == "--rate") {
      if (!need(v)) return missing();
      double r = 0;
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), r);
      if (ec != std::errc() || p != v.data() + v.size() || !std::isfinite(r) || r <= 0)
        return fail(name + ": expected a positive number of requests per second, got '" + v + "'");
      o.rate = r;
    } else if (name == "--json") {
      if (!flag()) return fail(name + ": takes no value");
      o.json = true;
    } else if (name == "--histogram") {
      if (!need(v)) return missing();
      if (v.empty()) return fail(name + ": empty file name");
      o.histogram_file = v;
    } else if (name == "-q" || name == "--quiet") {
      if (!flag()) return fail(name + ": takes no value");
      o.quiet = true;
    } else if (arg.size() > 1 && arg[0] == '-') {
      return fail(name + ": unknown option");
    } else {
      if (have_url) return fail(arg + ": more than one URL");
      auto url = parse_url(arg);
      if (!url) return fail(arg + ": not an http:// or https:// URL");
      o.url_text = arg;
      o.url = *url;
      have_url = true;
    }
  }

  if (!have_url) return fail("URL: missing (hsp-bench URL [options]; --help)");
  if (o.requests > 0 && have_duration) return fail("-n: cannot be combined with -d");
  switch (o.proto) {
    case ProtoChoice::h2:
    case ProtoChoice::h3:
      if (!o.url.https)
        return fail(std::string("--proto: ") + (o.proto == ProtoChoice::h2 ? "h2" : "h3") +
                    " needs an https:// URL (h2c is HTTP/2 without TLS)");
      break;
    case ProtoChoice::h2c:
      if (o.url.https) return fail("--proto: h2c needs an http:// URL");
      break;
    default:
      break;
  }
  if (o.streams > 1 &&
      (o.proto == ProtoChoice::h1 || (o.proto == ProtoChoice::automatic && !o.url.https)))
    return fail("-m: more than one stream per connection needs h2, h2c or h3");
  if (o.connections < o.threads)
    return fail("-t: more threads (" + std::to_string(o.threads) + ") than connections (" +
                std::to_string(o.connections) + ")");
  if (!o.body_file.empty()) {
    std::ifstream in(o.body_file, std::ios::binary);
    if (!in) return fail("--body: cannot read '" + o.body_file + "'");
    std::ostringstream ss;
    ss << in.rdbuf();
    o.body = std::make_shared<const std::string>(ss.str());
  }
  if (!o.ca_file.empty()) {
    std::ifstream in(o.ca_file);
    if (!in) return fail("--cacert: cannot read '" + o.ca_file + "'");
    // Both TLS stacks (OpenSSL for TCP, GnuTLS for QUIC) read PEM only; anything else used to
    // fail every handshake later with a vague error.
    std::ostringstream ss;
    ss << in.rdbuf();
    if (ss.str().find("-----BEGIN CERTIFICATE-----") == std::string::npos)
      return fail("--cacert: '" + o.ca_file + "' holds no PEM certificate");
  }
  return res;
}

Target resolve_target(const Options& opts) {
  Target t;
  t.connect_host = opts.url.host;
  t.connect_port = opts.url.port;
  for (const auto& rule : opts.connect_to) {
    if (!rule.host.empty() && rule.host != opts.url.host) continue;
    if (rule.port && *rule.port != opts.url.port) continue;
    if (!rule.addr.empty()) t.connect_host = rule.addr;
    if (rule.addr_port) t.connect_port = *rule.addr_port;
    t.connect_to_matched = true;
    break;  // the first matching rule wins, as in curl
  }
  bool default_port = opts.url.port == (opts.url.https ? 443 : 80);
  std::string host =
      opts.url.host.find(':') != std::string::npos ? "[" + opts.url.host + "]" : opts.url.host;
  t.authority = default_port ? host : host + ":" + std::to_string(opts.url.port);
  for (const auto& [name, value] : opts.headers) {
    if (name.size() == 4 && (name[0] | 0x20) == 'h' && (name[1] | 0x20) == 'o' &&
        (name[2] | 0x20) == 's' && (name[3] | 0x20) == 't')
      t.authority = value;
  }
  t.sni = !opts.sni.empty() ? opts.sni : (opts.url.host_is_ip ? std::string() : opts.url.host);
  return t;
}

RequestTemplate make_request(const Options& opts) {
  RequestTemplate req;
  req.method = opts.method;
  req.path = opts.url.target;
  for (const auto& h : opts.headers) {
    if (h.first.size() == 4 && (h.first[0] | 0x20) == 'h' && (h.first[1] | 0x20) == 'o' &&
        (h.first[2] | 0x20) == 's' && (h.first[3] | 0x20) == 't')
      continue;
    req.headers.push_back(h);
  }
  req.body = opts.body;
  return req;
}

}  // namespace hsp::bench
