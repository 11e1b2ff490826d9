#include "engine/placeholder.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <unordered_map>

#include "http/message.h"

namespace hsp::engine {

namespace {

using Kind = Template::Kind;

bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}

bool parse_index(std::string_view s, int& out) {
  if (s.empty() || s.size() > 6) return false;
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  out = v;
  return true;
}

// Caddyfile shorthands, which Caddy's adapter rewrites into long names. The config compiler
// normally did that already; accepting them here too costs nothing and keeps hand-built configs
// (tests, Docker labels later) working.
std::string expand_shorthand(std::string_view key) {
  static const std::unordered_map<std::string_view, std::string_view> kShort = {
      {"dir", "http.request.uri.path.dir"},
      {"file", "http.request.uri.path.file"},
      {"host", "http.request.host"},
      {"hostport", "http.request.hostport"},
      {"port", "http.request.port"},
      {"method", "http.request.method"},
      {"path", "http.request.uri.path"},
      {"query", "http.request.uri.query"},
      {"remote", "http.request.remote"},
      {"remote_host", "http.request.remote.host"},
      {"remote_port", "http.request.remote.port"},
      {"scheme", "http.request.scheme"},
      {"uri", "http.request.uri"},
      {"orig_uri", "http.request.orig_uri"},
      {"client_ip", "http.vars.client_ip"},
      {"upstream_hostport", "http.reverse_proxy.upstream.hostport"},
      {"tls_server_name", "http.request.tls.server_name"},
      {"tls_cipher", "http.request.tls.cipher_suite"},
      {"tls_version", "http.request.tls.version"},
  };
  auto it = kShort.find(key);
  if (it != kShort.end()) return std::string(it->second);
  static const std::pair<std::string_view, std::string_view> kPrefixes[] = {
      {"header.", "http.request.header."},
      {"cookie.", "http.request.cookie."},
      {"labels.", "http.request.host.labels."},
      {"path.", "http.request.uri.path."},
      {"query.", "http.request.uri.query."},
      {"re.", "http.regexp."},
      {"vars.", "http.vars."},
      {"rp.", "http.reverse_proxy."},
  };
  for (const auto& [from, to] : kPrefixes) {
    if (starts_with(key, from)) return std::string(to) + std::string(key.substr(from.size()));
  }
  return std::string(key);
}

Template::Part classify(std::string_view written) {
  Template::Part p;
  p.key = std::string(written);
  std::string key = expand_shorthand(written);
  static const std::unordered_map<std::string_view, Kind> kExact = {
      {"http.request.host", Kind::req_host},
      {"http.request.hostport", Kind::req_hostport},
      {"http.request.port", Kind::req_port},
      {"http.request.method", Kind::req_method},
      {"http.request.scheme", Kind::req_scheme},
      {"http.request.proto", Kind::req_proto},
      {"http.request.uri", Kind::req_uri},
      {"http.request.uri.path", Kind::req_uri_path},
      {"http.request.uri.query", Kind::req_uri_query},
      {"http.request.uri.path.file", Kind::req_uri_path_file},
      {"http.request.uri.path.dir", Kind::req_uri_path_dir},
      {"http.request.uri.path.file.base", Kind::req_uri_path_file_base},
      {"http.request.uri.path.file.ext", Kind::req_uri_path_file_ext},
      {"http.request.orig_uri", Kind::req_orig_uri},
      {"http.request.orig_uri.path", Kind::req_orig_uri_path},
      {"http.request.orig_uri.query", Kind::req_orig_uri_query},
      {"http.request.orig_method", Kind::req_orig_method},
      {"http.request.remote", Kind::req_remote},
      {"http.request.remote.host", Kind::req_remote_host},
      {"http.request.remote.port", Kind::req_remote_port},
      {"http.request.tls.server_name", Kind::req_tls_server_name},
      {"http.request.tls.version", Kind::req_tls_version},
      {"http.request.tls.cipher_suite", Kind::req_tls_cipher_suite},
      {"http.request.tls.resumed", Kind::req_tls_resumed},
      {"http.request.tls.proto", Kind::req_tls_proto},
      {"http.request.tls.proto_mutual", Kind::req_tls_proto_mutual},
      {"http.request.client_ip", Kind::client_ip},
      {"http.vars.client_ip", Kind::client_ip},
      {"http.reverse_proxy.upstream.host", Kind::upstream_host},
      {"http.reverse_proxy.upstream.port", Kind::upstream_port},
      {"http.reverse_proxy.upstream.hostport", Kind::upstream_hostport},
      {"http.reverse_proxy.upstream.address", Kind::upstream_address},
      {"http.reverse_proxy.upstream.requests", Kind::upstream_requests},
      {"http.reverse_proxy.upstream.fails", Kind::upstream_fails},
      {"http.response.status", Kind::resp_status},
      {"system.hostname", Kind::system_hostname},
      {"system.slash", Kind::system_slash},
      {"system.os", Kind::system_os},
      {"system.arch", Kind::system_arch},
      {"system.wd", Kind::system_wd},
      {"time.now", Kind::time_now},
      {"time.now.common_log", Kind::time_now_common_log},
      {"time.now.year", Kind::time_now_year},
      {"time.now.unix", Kind::time_now_unix},
      {"time.now.unix_ms", Kind::time_now_unix_ms},
  };
  auto it = kExact.find(key);
  if (it != kExact.end()) {
    p.kind = it->second;
    return p;
  }
  struct Prefix {
    std::string_view prefix;
    Kind kind;
    bool indexed;
  };
  static constexpr Prefix kPrefixes[] = {
      {"http.request.header.", Kind::req_header, false},
      {"http.request.cookie.", Kind::req_cookie, false},
      {"http.request.uri.query.", Kind::req_query_arg, false},
      {"http.request.host.labels.", Kind::req_host_label, true},
      {"http.request.uri.path.", Kind::req_path_segment, true},
      {"http.regexp.", Kind::regexp, false},
      {"http.response.header.", Kind::resp_header, false},
      {"env.", Kind::env, false},
  };
  for (const auto& pre : kPrefixes) {
    if (!starts_with(key, pre.prefix)) continue;
    std::string_view arg = std::string_view(key).substr(pre.prefix.size());
    if (pre.indexed) {
      // Caddy answers "unknown" for a non-numeric index.
      if (!parse_index(arg, p.index)) return p.kind = Kind::unknown, p;
    }
    p.kind = pre.kind;
    p.text = std::string(arg);
    return p;
  }
  // Every other http.vars.* is an unset variable: known and empty, as in Caddy.
  if (starts_with(key, "http.vars.")) {
    p.kind = Kind::literal;
    return p;
  }
  p.kind = Kind::unknown;
  return p;
}

void append_literal(std::vector<Template::Part>& parts, std::string_view text) {
  if (text.empty()) return;
  if (!parts.empty() && parts.back().kind == Kind::literal && parts.back().key.empty()) {
    parts.back().text.append(text);
    return;
  }
  Template::Part p;
  p.text = std::string(text);
  parts.push_back(std::move(p));
}

std::string_view authority_host(const http::Request& r) {
  if (r.authority.empty()) return r.host;
  std::string_view host, port;
  split_host_port(r.authority, host, port);
  return host;
}

void append_join_host_port(std::string& out, std::string_view host, uint16_t port) {
  bool v6 = host.find(':') != std::string_view::npos;
  if (v6) out += '[';
  out.append(host);
  if (v6) out += ']';
  out += ':';
  out += std::to_string(port);
}

// Go's path.Base / path.Ext over an unescaped request path.
std::string_view go_base(std::string_view p) {
  if (p.empty()) return ".";
  while (p.size() > 0 && p.back() == '/') p.remove_suffix(1);
  if (p.empty()) return "/";
  size_t slash = p.rfind('/');
  return slash == std::string_view::npos ? p : p.substr(slash + 1);
}

std::string_view go_ext(std::string_view p) {
  for (size_t i = p.size(); i > 0; --i) {
    if (p[i - 1] == '/') break;
    if (p[i - 1] == '.') return p.substr(i - 1);
  }
  return {};
}

// Go's URL.Path is the unescaped path; Caddy's path placeholders read it.
std::string decoded_path(std::string_view raw) {
  std::string out;
  if (raw.find('%') == std::string_view::npos || !percent_decode(raw, out, false)) {
    out.assign(raw);
  }
  return out;
}

void split_uri(std::string_view uri, std::string_view& path, std::string_view& query) {
  size_t q = uri.find('?');
  path = uri.substr(0, q);
  query = q == std::string_view::npos ? std::string_view() : uri.substr(q + 1);
}

// Go's url.ParseQuery result for one key, values joined with ",".
bool query_values(std::string_view query, std::string_view want, std::string& out) {
  bool first = true;
  std::string key, val;
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty() || pair.find(';') != std::string_view::npos) continue;
    size_t eq = pair.find('=');
    key.clear();
    val.clear();
    if (!percent_decode(pair.substr(0, eq), key, true)) continue;
    if (key != want) continue;
    if (eq != std::string_view::npos && !percent_decode(pair.substr(eq + 1), val, true)) continue;
    if (!first) out += ',';
    out += val;
    first = false;
  }
  return true;
}

void append_time(std::string& out, Kind kind) {
  auto now = std::chrono::system_clock::now();
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
  time_t secs = static_cast<time_t>(ns / 1000000000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[64];
  switch (kind) {
    case Kind::time_now_unix:
      out += std::to_string(ns / 1000000000);
      return;
    case Kind::time_now_unix_ms:
      out += std::to_string(ns / 1000000);
      return;
    case Kind::time_now_year:
      out += std::to_string(tm.tm_year + 1900);
      return;
    case Kind::time_now_common_log:
      strftime(buf, sizeof buf, "%d/%b/%Y:%H:%M:%S +0000", &tm);
      out += buf;
      return;
    default: {
      // Go's Time.String() without the monotonic clock suffix, in UTC.
      strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
      out += buf;
      long frac = static_cast<long>(ns % 1000000000);
      if (frac != 0) {
        char f[16];
        snprintf(f, sizeof f, ".%09ld", frac);
        std::string_view fv(f);
        while (fv.back() == '0') fv.remove_suffix(1);
        out.append(fv);
      }
      out += " +0000 UTC";
    }
  }
}

}  // namespace

bool split_host_port(std::string_view hp, std::string_view& host, std::string_view& port) {
  port = {};
  if (!hp.empty() && hp.front() == '[') {
    size_t close = hp.find(']');
    if (close == std::string_view::npos) {
      host = hp;
      return false;
    }
    host = hp.substr(1, close - 1);
    if (close + 1 < hp.size() && hp[close + 1] == ':') {
      port = hp.substr(close + 2);
      return true;
    }
    return false;
  }
  size_t colon = hp.rfind(':');
  if (colon == std::string_view::npos || hp.find(':') != colon) {
    host = hp;  // no port, or a bare IPv6 address
    return false;
  }
  host = hp.substr(0, colon);
  port = hp.substr(colon + 1);
  return true;
}

void query_escape(std::string_view in, std::string& out) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (unsigned char c : in) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else if (c == ' ') {
      out += '+';
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
}

void path_escape(std::string_view in, std::string& out) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (unsigned char c : in) {
    bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    switch (c) {
      case '-':
      case '_':
      case '.':
      case '~':
      case '$':
      case '&':
      case '+':
      case ',':
      case '/':
      case ':':
      case ';':
      case '=':
      case '@':
        keep = true;
        break;
      default:
        break;
    }
    if (keep) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
}

bool percent_decode(std::string_view in, std::string& out, bool plus_as_space) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      int hi = hex(in[i + 1]), lo = hex(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_as_space) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return true;
}

Template Template::compile(std::string_view in) {
  Template t;
  size_t cursor = 0;  // start of text not yet emitted
  for (size_t i = 0; i < in.size(); ++i) {
    // "\{" and "\}" are literal braces; the backslash is dropped.
    if (i > 0 && in[i - 1] == '\\' && (in[i] == '{' || in[i] == '}')) {
      append_literal(t.parts_, in.substr(cursor, i - 1 - cursor));
      cursor = i;
      continue;
    }
    if (in[i] != '{') continue;
    size_t end = in.find('}', i);
    if (end == std::string_view::npos) continue;  // an unclosed brace is literal text
    while (end + 1 < in.size() && in[end - 1] == '\\') {
      size_t next = in.find('}', end + 1);
      if (next == std::string_view::npos) break;
      end = next;
    }
    append_literal(t.parts_, in.substr(cursor, i - cursor));
    t.parts_.push_back(classify(in.substr(i + 1, end - i - 1)));
    t.dynamic_ = true;
    i = end;
    cursor = end + 1;
  }
  append_literal(t.parts_, in.substr(cursor));
  // A placeholder that is known to be empty (unset http.vars) is a literal with a key; fold it.
  for (auto& p : t.parts_) {
    if (p.kind == Kind::literal) p.key.clear();
  }
  if (!t.dynamic_) {
    for (const auto& p : t.parts_) t.literal_ += p.text;
  }
  return t;
}

bool eval_placeholder(const Template::Part& p, const RequestCtx& ctx, std::string& out) {
  const http::Request& r = ctx.req;
  switch (p.kind) {
    case Kind::literal:
      out += p.text;
      return true;
    case Kind::req_host:
      out.append(authority_host(r));
      return true;
    case Kind::req_hostport:
      out += r.authority.empty() ? r.host : r.authority;
      return true;
    case Kind::req_port: {
      std::string_view host, port;
      split_host_port(r.authority, host, port);
      out.append(port);
      return true;
    }
    case Kind::req_method:
      out += r.method;
      return true;
    case Kind::req_scheme:
      out += r.scheme.empty() ? (r.tls ? "https" : "http") : r.scheme;
      return true;
    case Kind::req_proto:
      out.append(r.proto());
      return true;
    case Kind::req_uri:
      out += r.path;
      if (!r.query.empty()) {
        out += '?';
        out += r.query;
      }
      return true;
    case Kind::req_uri_path:
      out += decoded_path(r.path);
      return true;
    case Kind::req_uri_query:
      out += r.query;
      return true;
    case Kind::req_uri_path_file:
    case Kind::req_uri_path_dir: {
      std::string path = decoded_path(r.path);
      size_t slash = path.rfind('/');
      size_t cut = slash == std::string::npos ? 0 : slash + 1;
      out.append(p.kind == Kind::req_uri_path_dir ? std::string_view(path).substr(0, cut)
                                                  : std::string_view(path).substr(cut));
      return true;
    }
    case Kind::req_uri_path_file_base: {
      std::string path = decoded_path(r.path);
      std::string_view base = go_base(path), ext = go_ext(path);
      if (base.size() >= ext.size() && base.substr(base.size() - ext.size()) == ext) {
        base.remove_suffix(ext.size());
      }
      out.append(base);
      return true;
    }
    case Kind::req_uri_path_file_ext:
      out.append(go_ext(decoded_path(r.path)));
      return true;
    case Kind::req_orig_uri:
      out += r.orig_uri.empty() ? r.uri() : r.orig_uri;
      return true;
    case Kind::req_orig_uri_path:
    case Kind::req_orig_uri_query: {
      std::string_view path, query;
      split_uri(r.orig_uri, path, query);
      if (p.kind == Kind::req_orig_uri_path) {
        out += decoded_path(path);
      } else {
        out.append(query);
      }
      return true;
    }
    case Kind::req_orig_method:
      out += r.method;
      return true;
    case Kind::req_remote:
      append_join_host_port(out, r.remote_ip, r.remote_port);
      return true;
    case Kind::req_remote_host:
      out += r.remote_ip;
      return true;
    case Kind::req_remote_port:
      out += std::to_string(r.remote_port);
      return true;
    case Kind::req_header: {
      // Go's server moves Host out of the header map, so Caddy sees no Host field here.
      if (http::iequals(p.text, "Host")) return true;
      bool first = true;
      for (const auto& f : r.headers) {
        if (!http::iequals(f.first, p.text)) continue;
        if (!first) out += ',';
        out += f.second;
        first = false;
      }
      return true;
    }
    case Kind::req_cookie: {
      std::string_view v;
      if (!http::find_cookie(r.headers, p.text, v, /*ignore_case=*/true)) return false;
      out.append(v);
      return true;
    }
    case Kind::req_query_arg:
      return query_values(r.query, p.text, out);
    case Kind::req_host_label: {
      std::string_view host = authority_host(r);
      // Labels count from the right: {labels.0} is the TLD.
      int idx = p.index;
      size_t end = host.size();
      while (true) {
        size_t dot = end == 0 ? std::string_view::npos : host.rfind('.', end - 1);
        size_t start = dot == std::string_view::npos ? 0 : dot + 1;
        if (idx == 0) {
          out.append(host.substr(start, end - start));
          return true;
        }
        if (dot == std::string_view::npos) return true;  // fewer labels than idx: empty
        end = dot;
        --idx;
      }
    }
    case Kind::req_path_segment: {
      std::string decoded = decoded_path(r.path);
      std::string_view path = decoded;
      if (!path.empty() && path.front() == '/') path.remove_prefix(1);
      int idx = p.index;
      while (true) {
        size_t slash = path.find('/');
        if (idx == 0) {
          out.append(path.substr(0, slash));
          return true;
        }
        if (slash == std::string_view::npos) return true;
        path.remove_prefix(slash + 1);
        --idx;
      }
    }
    case Kind::req_tls_server_name:
      if (!r.tls) return false;
      out += r.tls_server_name;
      return true;
    case Kind::req_tls_version:  // Caddy's names (caddytls.ProtocolName)
      if (!r.tls) return false;
      out += r.tls_version == 0x0304 ? "tls1.3" : r.tls_version == 0x0303 ? "tls1.2" : "";
      return true;
    case Kind::req_tls_cipher_suite:
      if (!r.tls) return false;
      out += r.tls_cipher_name;
      return true;
    case Kind::req_tls_resumed:
      if (!r.tls) return false;
      out += r.tls_resumed ? "true" : "false";
      return true;
    case Kind::req_tls_proto:
      if (!r.tls) return false;
      out += r.tls_proto;
      return true;
    case Kind::req_tls_proto_mutual:
      if (!r.tls) return false;
      out += "true";
      return true;
    case Kind::client_ip:
      out += r.client_ip.empty() ? r.remote_ip : r.client_ip;
      return true;
    case Kind::regexp:
      // The last capture set wins, as repeated repl.Set calls do in Caddy.
      for (auto it = ctx.captures.rbegin(); it != ctx.captures.rend(); ++it) {
        if (it->first == p.text) {
          out += it->second;
          return true;
        }
      }
      return false;
    case Kind::upstream_host:
    case Kind::upstream_port:
    case Kind::upstream_hostport:
    case Kind::upstream_address:
    case Kind::upstream_requests:
    case Kind::upstream_fails: {
      const UpstreamHost* u = ctx.upstream;
      if (u == nullptr) return false;
      if (p.kind == Kind::upstream_host) out += u->host();
      if (p.kind == Kind::upstream_port) out += std::to_string(u->port());
      if (p.kind == Kind::upstream_hostport) out += u->dial();
      if (p.kind == Kind::upstream_address) out += "tcp/" + u->dial();
      if (p.kind == Kind::upstream_requests) out += std::to_string(u->in_flight());
      if (p.kind == Kind::upstream_fails) out += std::to_string(u->fails(Clock::now()));
      return true;
    }
    case Kind::resp_header: {
      if (ctx.response_headers == nullptr) return true;
      bool first = true;
      for (const auto& f : *ctx.response_headers) {
        if (!http::iequals(f.first, p.text)) continue;
        if (!first) out += ',';
        out += f.second;
        first = false;
      }
      return true;
    }
    case Kind::resp_status:
      if (ctx.response_status == 0) return false;
      out += std::to_string(ctx.response_status);
      return true;
    case Kind::env: {
      const char* v = std::getenv(p.text.c_str());
      if (v != nullptr) out += v;
      return true;
    }
    case Kind::system_hostname: {
      char buf[256];
      if (gethostname(buf, sizeof buf) == 0) {
        buf[sizeof buf - 1] = '\0';
        out += buf;
      }
      return true;
    }
    case Kind::system_slash:
      out += '/';
      return true;
    case Kind::system_os:
      out += "linux";
      return true;
    case Kind::system_arch:
#if defined(__aarch64__)
      out += "arm64";
#elif defined(__x86_64__)
      out += "amd64";
#else
      out += "unknown";
#endif
      return true;
    case Kind::system_wd: {
      char buf[4096];
      if (getcwd(buf, sizeof buf) != nullptr) out += buf;
      return true;
    }
    case Kind::time_now:
    case Kind::time_now_common_log:
    case Kind::time_now_year:
    case Kind::time_now_unix:
    case Kind::time_now_unix_ms:
      append_time(out, p.kind);
      return true;
    case Kind::unknown:
      return false;
  }
  return false;
}

void Template::render(const RequestCtx& ctx, Unknown unknown, std::string& out,
                      Escape escape) const {
  if (!dynamic_) {
    out += literal_;
    return;
  }
  std::string tmp;
  for (const auto& p : parts_) {
    if (p.kind == Kind::literal) {
      out += p.text;
      continue;
    }
    bool raw =
        escape == Escape::none || (escape == Escape::query_key && p.kind == Kind::req_uri_query);
    if (raw) {
      size_t mark = out.size();
      if (!eval_placeholder(p, ctx, out)) {
        out.resize(mark);
        if (unknown == Unknown::keep) out += "{" + p.key + "}";
      }
      continue;
    }
    tmp.clear();
    // Caddy formats an unknown value as "<nil>" before escaping it into a query string.
    if (!eval_placeholder(p, ctx, tmp)) tmp = "<nil>";
    query_escape(tmp, out);
  }
}

}  // namespace hsp::engine
