// The config compiler's shared helpers: error reporting with import chains, argument checks
// worded as Caddy words them, and the string conversions several directives need.
#include <algorithm>
#include <cctype>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "config/address.h"
#include "config/compile.h"
#include "config/compile_internal.h"

namespace hsp::config::compile_detail {
namespace {

const std::vector<std::string>& private_ranges() {
  static const std::vector<std::string> r = {"192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/8",
                                             "127.0.0.1/8",    "fd00::/8",      "::1"};
  return r;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Placeholder shorthands (httptype.go placeholderShorthands and its regexp replacements).
std::string expand_placeholders(const std::string& in) {
  if (in.find('{') == std::string::npos) return in;
  static const std::vector<std::pair<std::string, std::string>> simple = {
      {"{dir}", "{http.request.uri.path.dir}"},
      {"{file}", "{http.request.uri.path.file}"},
      {"{host}", "{http.request.host}"},
      {"{hostport}", "{http.request.hostport}"},
      {"{port}", "{http.request.port}"},
      {"{method}", "{http.request.method}"},
      {"{path}", "{http.request.uri.path}"},
      {"{query}", "{http.request.uri.query}"},
      {"{remote}", "{http.request.remote}"},
      {"{remote_host}", "{http.request.remote.host}"},
      {"{remote_port}", "{http.request.remote.port}"},
      {"{scheme}", "{http.request.scheme}"},
      {"{uri}", "{http.request.uri}"},
      {"{tls_cipher}", "{http.request.tls.cipher_suite}"},
      {"{tls_version}", "{http.request.tls.version}"},
      {"{tls_client_fingerprint}", "{http.request.tls.client.fingerprint}"},
      {"{tls_client_issuer}", "{http.request.tls.client.issuer}"},
      {"{tls_client_serial}", "{http.request.tls.client.serial}"},
      {"{tls_client_subject}", "{http.request.tls.client.subject}"},
      {"{tls_client_certificate_pem}", "{http.request.tls.client.certificate_pem}"},
      {"{tls_client_certificate_der_base64}", "{http.request.tls.client.certificate_der_base64}"},
      {"{upstream_hostport}", "{http.reverse_proxy.upstream.hostport}"},
      // Not in 2.6.2; Caddy 2.7 added it together with trusted_proxies-aware client IPs.
      {"{client_ip}", "{http.vars.client_ip}"},
  };
  // Like Go's strings.Replacer: one left-to-right pass, no overlapping matches. No shorthand
  // is a prefix of another, so at most one can match at a position.
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size();) {
    bool matched = false;
    if (in[i] == '{') {
      for (const auto& [from, to] : simple) {
        if (in.compare(i, from.size(), from) == 0) {
          out += to;
          i += from.size();
          matched = true;
          break;
        }
      }
    }
    if (!matched) out += in[i++];
  }
  static const std::vector<std::pair<std::regex, std::string>> res = [] {
    std::vector<std::pair<std::regex, std::string>> v;
    auto add = [&](const char* re, const char* to) { v.emplace_back(std::regex(re), to); };
    add(R"(\{header\.([\w-]*)\})", "{http.request.header.$1}");
    add(R"(\{cookie\.([\w-]*)\})", "{http.request.cookie.$1}");
    add(R"(\{labels\.([\w-]*)\})", "{http.request.host.labels.$1}");
    add(R"(\{path\.([\w-]*)\})", "{http.request.uri.path.$1}");
    add(R"(\{file\.([\w-]*)\})", "{http.request.uri.path.file.$1}");
    add(R"(\{query\.([\w-]*)\})", "{http.request.uri.query.$1}");
    add(R"(\{re\.([\w-]*)\.([\w-]*)\})", "{http.regexp.$1.$2}");
    add(R"(\{vars\.([\w-]*)\})", "{http.vars.$1}");
    add(R"(\{rp\.([\w\-\.]*)\})", "{http.reverse_proxy.$1}");
    add(R"(\{err\.([\w\-\.]*)\})", "{http.error.$1}");
    add(R"(\{file_match\.([\w-]*)\})", "{http.matchers.file.$1}");
    return v;
  }();
  for (const auto& [re, to] : res) out = std::regex_replace(out, re, to);
  return out;
}

void expand_tokens(Directive& d) {
  d.name.text = expand_placeholders(d.name.text);
  for (auto& a : d.args) a.text = expand_placeholders(a.text);
  for (auto& b : d.block) expand_tokens(b);
}

// Go's textproto.CanonicalMIMEHeaderKey: returned unchanged if it holds a non-token byte.
std::string canonical_header(const std::string& s) {
  static const std::string extra = "!#$%&'*+-.^_`|~";
  for (char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && extra.find(c) == std::string::npos)
      return s;
  }
  std::string out = s;
  bool upper = true;
  for (auto& c : out) {
    c = upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c)))
              : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    upper = c == '-';
  }
  return out;
}

std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

bool parse_int(const std::string& s, int& out) {
  if (s.empty() || s.size() > 10) return false;
  size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (i == s.size()) return false;
  for (size_t k = i; k < s.size(); ++k)
    if (!std::isdigit(static_cast<unsigned char>(s[k]))) return false;
  long long v = std::stoll(s);
  if (v > 2147483647LL || v < -2147483648LL) return false;
  out = static_cast<int>(v);
  return true;
}

bool parse_status_or_class(const std::string& s, int& out) {
  std::string v = s;
  if (v.size() == 3 && v.compare(1, 2, "xx") == 0) v = v.substr(0, 1);
  return parse_int(v, out);
}

// ---------------------------------------------------------------------------------------------
// Errors and arguments.

void Compiler::error(const Token& t, const std::string& msg) {
  std::string m = msg;
  if (!t.imported_from.empty()) {
    m += " (imported via ";
    for (size_t i = 0; i < t.imported_from.size(); ++i) {
      if (i) m += ", ";
      m += t.imported_from[i];
    }
    m += ")";
  }
  errs_.push_back(Error{t.loc, m});
}

void Compiler::wrong_arg_count(const Directive& d) {
  error(d.name, "wrong argument count or unexpected line ending after '" + d.name.text + "'");
}

bool Compiler::arg_count(const Directive& d, size_t first, size_t min, size_t max) {
  size_t n = d.args.size() - first;
  if (n < min) {
    wrong_arg_count(d);
    return false;
  }
  if (n > max) {
    error(d.args[first + max],
          "unexpected argument '" + d.args[first + max].text + "' after '" + d.name.text + "'");
    return false;
  }
  return true;
}

bool Compiler::no_block(const Directive& d) {
  if (!d.has_block) return true;
  error(d.block_open, "'" + d.name.text + "' does not take a block");
  return false;
}

bool Compiler::one_arg(const Directive& d, std::string& out) {
  if (!arg_count(d, 0, 1, 1) || !no_block(d)) return false;
  out = d.args[0].text;
  return true;
}

bool Compiler::duration_arg(const Directive& d, Duration& out) {
  std::string s;
  if (!one_arg(d, s)) return false;
  if (!parse_duration(s, out)) {
    error(d.args[0], "bad duration '" + s + "' for '" + d.name.text + "'");
    return false;
  }
  return true;
}

bool Compiler::int_arg(const Directive& d, int& out, int min, int max) {
  std::string s;
  if (!one_arg(d, s)) return false;
  if (!parse_int(s, out) || out < min || out > max) {
    std::string want = max >= kNoMax
                           ? "a non-negative integer"
                           : "a number from " + std::to_string(min) + " to " + std::to_string(max);
    error(d.args[0], "bad number '" + s + "' for '" + d.name.text + "' (expected " + want + ")");
    return false;
  }
  return true;
}

bool Compiler::size_arg(const Directive& d, int64_t& out, bool positive) {
  std::string s;
  if (!one_arg(d, s)) return false;
  int64_t v = 0;
  if (!parse_size(s, v) || (positive && v <= 0)) {
    error(d.args[0], "bad size '" + s + "' for '" + d.name.text + "'");
    return false;
  }
  out = v;
  return true;
}

bool Compiler::ip_range(const Token& t, std::vector<std::string>& out, const std::string& what) {
  if (t.text == "private_ranges") {
    out.insert(out.end(), private_ranges().begin(), private_ranges().end());
  } else if (valid_ip_or_cidr(t.text)) {
    out.push_back(t.text);
  } else {
    error(t, "invalid IP address or CIDR range '" + t.text + "' for " + what);
    return false;
  }
  return true;
}

bool Compiler::ip_ranges(const Directive& d, size_t first, std::vector<std::string>& out,
                         const std::string& what) {
  bool ok = true;
  for (size_t i = first; i < d.args.size(); ++i) ok &= ip_range(d.args[i], out, what);
  return ok;
}

namespace {

// The subdirectives Caddy 2.6.2's Caddyfile adapter knows, for the blocks where hsp-gateway
// implements only some: a name outside these lists is a typo (Caddy rejects it too), a name in
// them is a feature still to come.
bool caddy_knows_sub(const std::string& parent, const std::string& sub) {
  static const std::map<std::string, std::set<std::string>> kKnown = {
      {"reverse_proxy",
       {"to",
        "lb_policy",
        "lb_retries",
        "lb_try_duration",
        "lb_try_interval",
        "lb_retry_match",
        "health_uri",
        "health_path",
        "health_port",
        "health_interval",
        "health_timeout",
        "health_status",
        "health_body",
        "health_headers",
        "fail_duration",
        "max_fails",
        "unhealthy_status",
        "unhealthy_latency",
        "unhealthy_request_count",
        "flush_interval",
        "request_buffers",
        "response_buffers",
        "buffer_requests",
        "buffer_responses",
        "max_buffer_size",
        "trusted_proxies",
        "header_up",
        "header_down",
        "method",
        "rewrite",
        "replace_status",
        "handle_response",
        "transport",
        "dynamic"}},
      {"transport",
       {"read_buffer",
        "write_buffer",
        "max_response_header",
        "dial_timeout",
        "dial_fallback_delay",
        "response_header_timeout",
        "expect_continue_timeout",
        "resolvers",
        "tls",
        "tls_client_auth",
        "tls_insecure_skip_verify",
        "tls_timeout",
        "tls_trusted_ca_certs",
        "tls_server_name",
        "tls_renegotiation",
        "tls_except_ports",
        "keepalive",
        "keepalive_interval",
        "keepalive_idle_conns",
        "keepalive_idle_conns_per_host",
        "versions",
        "compression",
        "max_conns_per_host",
        "read_timeout",
        "write_timeout",
        "proxy_protocol"}},
      {"servers",
       {"listener_wrappers", "timeouts", "trusted_proxies", "max_header_size", "log_credentials",
        "protocols", "strict_sni_host", "metrics", "name"}},
      {"timeouts", {"read_body", "read_header", "write", "idle"}},
  };
  auto it = kKnown.find(parent);
  return it == kKnown.end() || it->second.count(sub) > 0;
}

}  // namespace

void Compiler::unsupported_sub(const Directive& parent, const Directive& sub) {
  // A transport block is named with its module: "transport http".
  std::string label = parent.name.text;
  if (label == "transport" && !parent.args.empty()) label += " " + parent.args[0].text;
  const bool known = caddy_knows_sub(parent.name.text, sub.name.text);
  error(sub.name,
        "unknown " + label + " subdirective '" + sub.name.text + "': " +
            (known ? "not supported yet by hsp-gateway" : "Caddy 2.6 has no such subdirective"));
}

}  // namespace hsp::config::compile_detail
