// Caddyfile AST -> Config, following Caddy 2.6's httpcaddyfile adapter: global options, site
// addresses and the servers they imply, named/inline matchers, the directive order with its
// path-length sub-sort, mutually exclusive `handle`/`rewrite` groups and route consolidation.
//
// Every directive, sub-directive, matcher and option that is not handled here is an error that
// names it and its position; nothing is dropped silently.
#include "config/compile.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "config/address.h"
#include "config/json_internal.h"

namespace hsp::config {
namespace {

using caddyfile::Directive;
using caddyfile::Token;
using MatcherDefs = std::map<std::string, MatcherSet>;

// Caddy v2.6.2 directiveOrder (caddyconfig/httpcaddyfile/directives.go).
const std::vector<std::string>& caddy_directive_order() {
  static const std::vector<std::string> order = {
      "tracing",
      "map",
      "vars",
      "root",
      "skip_log",
      "header",
      "copy_response_headers",
      "request_body",
      "redir",
      "method",
      "rewrite",
      "uri",
      "try_files",
      "basicauth",
      "forward_auth",
      "request_header",
      "encode",
      "push",
      "templates",
      "handle",
      "handle_path",
      "route",
      "abort",
      "error",
      "copy_response",
      "respond",
      "metrics",
      "reverse_proxy",
      "php_fastcgi",
      "file_server",
      "acme_server",
  };
  return order;
}

// Directives Caddy registers without an order (they do not produce handlers).
bool caddy_unordered_directive(const std::string& n) {
  return n == "bind" || n == "tls" || n == "log" || n == "handle_errors" || n == "import";
}

const std::vector<std::string>& private_ranges() {
  static const std::vector<std::string> r = {"192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/8",
                                             "127.0.0.1/8",    "fd00::/8",      "::1"};
  return r;
}

// ---------------------------------------------------------------------------------------------
// Go's sort.SliceStable (insertion sort on blocks of 20, then SymMerge). Caddy's route and site
// comparators are not strict weak orders, so the exact algorithm decides the result; using
// std::stable_sort would give a different order for some inputs.
template <typename T, typename Less>
class GoStableSorter {
 public:
  GoStableSorter(std::vector<T>& v, Less less) : v_(v), less_(less) {}

  void run() {
    int n = static_cast<int>(v_.size());
    int block = 20;
    int a = 0, b = block;
    while (b <= n) {
      insertion(a, b);
      a = b;
      b += block;
    }
    insertion(a, n);
    while (block < n) {
      a = 0;
      b = 2 * block;
      while (b <= n) {
        sym_merge(a, a + block, b);
        a = b;
        b += 2 * block;
      }
      if (int m = a + block; m < n) sym_merge(a, m, n);
      block *= 2;
    }
  }

 private:
  bool less(int i, int j) { return less_(v_[i], v_[j]); }
  void swap(int i, int j) { std::swap(v_[i], v_[j]); }

  void insertion(int a, int b) {
    for (int i = a + 1; i < b; ++i)
      for (int j = i; j > a && less(j, j - 1); --j) swap(j, j - 1);
  }

  void swap_range(int a, int b, int n) {
    for (int i = 0; i < n; ++i) swap(a + i, b + i);
  }

  void rotate(int a, int m, int b) {
    int i = m - a;
    int j = b - m;
    while (i != j) {
      if (i > j) {
        swap_range(m - i, m, j);
        i -= j;
      } else {
        swap_range(m - i, m + j - i, i);
        j -= i;
      }
    }
    swap_range(m - i, m, i);
  }

  void sym_merge(int a, int m, int b) {
    if (m - a == 1) {
      int i = m, j = b;
      while (i < j) {
        int h = static_cast<int>(static_cast<unsigned>(i + j) >> 1);
        if (less(h, a))
          i = h + 1;
        else
          j = h;
      }
      for (int k = a; k < i - 1; ++k) swap(k, k + 1);
      return;
    }
    if (b - m == 1) {
      int i = a, j = m;
      while (i < j) {
        int h = static_cast<int>(static_cast<unsigned>(i + j) >> 1);
        if (!less(m, h))
          i = h + 1;
        else
          j = h;
      }
      for (int k = m; k > i; --k) swap(k, k - 1);
      return;
    }
    int mid = static_cast<int>(static_cast<unsigned>(a + b) >> 1);
    int n = mid + m;
    int start, r;
    if (m > mid) {
      start = n - b;
      r = mid;
    } else {
      start = a;
      r = m;
    }
    int p = n - 1;
    while (start < r) {
      int c = static_cast<int>(static_cast<unsigned>(start + r) >> 1);
      if (!less(p - c, c))
        start = c + 1;
      else
        r = c;
    }
    int end = n - start;
    if (start < m && m < end) rotate(start, m, end);
    if (a < start && start < mid) sym_merge(a, start, mid);
    if (mid < end && end < b) sym_merge(mid, end, b);
  }

  std::vector<T>& v_;
  Less less_;
};

template <typename T, typename Less>
void go_stable_sort(std::vector<T>& v, Less less) {
  GoStableSorter<T, Less>(v, less).run();
}

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

// Caddy's specificity(): length minus wildcards and {placeholders}.
int specificity(const std::string& str) {
  int l = static_cast<int>(str.size()) - static_cast<int>(std::count(str.begin(), str.end(), '*'));
  std::string s = str;
  while (!s.empty()) {
    size_t start = s.find('{');
    if (start == std::string::npos) return l;
    size_t close = s.find('}', start);
    if (close == std::string::npos) return l;
    size_t end = close + 1;
    l -= static_cast<int>(end - start);
    s = s.substr(end);
  }
  return l;
}

// A route produced by one directive, before sorting.
struct RouteVal {
  std::string directive;  // normalized: handle_path -> handle
  Route route;
};

// Header operations as Caddy's HeaderOps holds them: Add and Set are maps (one entry per
// canonical field; Set keeps the last value), Delete a list, Replace a map of lists. Caddy
// applies them in the order add, set, delete, replace whatever the written order was, and
// the maps' iteration order is random in Go, so fields are sorted to make the result
// deterministic (it only matters when two ops name the same field, which Go makes random too).
struct OpsAcc {
  std::vector<HeaderOp> add, set, del, replace;
  bool deferred = false;

  bool empty() const { return add.empty() && set.empty() && del.empty() && replace.empty(); }

  HeaderOps finish() const {
    HeaderOps out;
    out.deferred = deferred;
    auto by_field = [](const HeaderOp& a, const HeaderOp& b) { return a.field < b.field; };
    std::vector<HeaderOp> a = add, s = set, r = replace;
    std::stable_sort(a.begin(), a.end(), by_field);
    std::stable_sort(s.begin(), s.end(), by_field);
    std::stable_sort(r.begin(), r.end(), by_field);
    const std::vector<HeaderOp>* parts[] = {&a, &s, &del, &r};
    for (const std::vector<HeaderOp>* v : parts)
      for (const auto& op : *v) out.ops.push_back(op);
    return out;
  }
};

// headers.applyHeaderOp. `response` says whether `?` and `>` are allowed (the `header`
// directive) or not (reverse_proxy header_up/header_down).
bool apply_header_op(OpsAcc& acc, bool response, std::string field, const std::string& value,
                     const std::string& replacement, const SourceLoc& loc, std::string& err) {
  if (!field.empty() && field[0] == '>') {
    // Caddy 2.7's defer prefix; 2.6.2 has only the `defer` sub-directive.
    if (!response) {
      err = field + ": the defer modifier ('>') can only be used with the header directive";
      return false;
    }
    acc.deferred = true;
    field = field.substr(1);
  }
  HeaderOp op;
  op.loc = loc;
  if (!field.empty() && field[0] == '+') {
    op.kind = HeaderOp::Kind::add;
    op.field = canonical_header(field.substr(1));
    op.value = value;
    acc.add.push_back(op);
  } else if (!field.empty() && field[0] == '-') {
    op.kind = HeaderOp::Kind::remove;
    op.field = field.substr(1);
    acc.del.push_back(op);
    if (response) acc.deferred = true;
  } else if (!field.empty() && field[0] == '?') {
    if (!response) {
      err = field +
            ": the default header modifier ('?') can only be used on response headers; for "
            "conditional manipulation of request headers, use matchers";
      return false;
    }
    op.kind = HeaderOp::Kind::set_default;
    op.field = canonical_header(field.substr(1));
    op.value = value;
    // Caddy's Require makes the whole handler wait for the response head. Known difference:
    // Caddy puts every `?` field of one `header` block into one handler whose Require needs
    // all of them absent; here each default applies on its own, which is what users expect
    // and only differs when a response already has some but not all of those fields.
    acc.deferred = true;
    for (auto& s : acc.set) {
      if (s.field == op.field) {
        s = op;
        return true;
      }
    }
    acc.set.push_back(op);
  } else if (!replacement.empty()) {
    op.kind = HeaderOp::Kind::replace;
    size_t p = field.find_first_not_of("+-?");
    op.field = p == std::string::npos ? "" : field.substr(p);
    op.search = value;
    op.value = replacement;
    op.regex = true;  // the Caddyfile always produces search_regexp
    acc.replace.push_back(op);
  } else {
    op.kind = HeaderOp::Kind::set;
    op.field = canonical_header(field);
    op.value = value;
    for (auto& s : acc.set) {
      if (s.field == op.field) {
        s = op;
        return true;
      }
    }
    acc.set.push_back(op);
  }
  return true;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '\'':
        out += "&#39;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

struct SiteExtras {
  std::vector<std::string> bind;
  std::optional<AccessLog> log;
};

// One site key, parsed, with where it listens.
struct SiteKey {
  RawAddress raw;
  uint16_t listen_port = 0;
};

class Compiler {
 public:
  Result<Config> run(const caddyfile::File& file);

 private:
  // -- errors ---------------------------------------------------------------------------------
  void error(const Token& t, const std::string& msg) {
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
  void error(const SourceLoc& loc, const std::string& msg) { errs_.push_back(Error{loc, msg}); }

  // Argument helpers; `first` is the index of the first argument after a matcher token.
  bool arg_count(const Directive& d, size_t first, size_t min, size_t max) {
    size_t n = d.args.size() - first;
    if (n < min) {
      error(d.name, "wrong argument count or unexpected line ending after '" + d.name.text + "'");
      return false;
    }
    if (n > max) {
      error(d.args[first + max],
            "unexpected argument '" + d.args[first + max].text + "' after '" + d.name.text + "'");
      return false;
    }
    return true;
  }
  bool no_block(const Directive& d) {
    if (!d.has_block) return true;
    error(d.block_open, "'" + d.name.text + "' does not take a block");
    return false;
  }
  bool one_arg(const Directive& d, std::string& out) {
    if (!arg_count(d, 0, 1, 1) || !no_block(d)) return false;
    out = d.args[0].text;
    return true;
  }
  bool duration_arg(const Directive& d, Duration& out) {
    std::string s;
    if (!one_arg(d, s)) return false;
    if (!parse_duration(s, out)) {
      error(d.args[0], "bad duration '" + s + "' for '" + d.name.text + "'");
      return false;
    }
    return true;
  }
  bool int_arg(const Directive& d, int& out, int min, int max) {
    std::string s;
    if (!one_arg(d, s)) return false;
    if (!parse_int(s, out) || out < min || out > max) {
      std::string want =
          max >= (1 << 30) ? "a non-negative integer"
                           : "a number from " + std::to_string(min) + " to " + std::to_string(max);
      error(d.args[0], "bad number '" + s + "' for '" + d.name.text + "' (expected " + want + ")");
      return false;
    }
    return true;
  }
  bool no_args(const Directive& d) { return arg_count(d, 0, 0, 0) && no_block(d); }
  void unsupported_sub(const Directive& parent, const Directive& sub) {
    error(sub.name, "unknown " + parent.name.text + " subdirective '" + sub.name.text +
                        "': not supported yet by hsp-gateway");
  }

  // -- global options -------------------------------------------------------------------------
  void global_options(const caddyfile::ServerBlock& gb);
  void order_option(const Directive& d);
  void global_log(const Directive& d, bool& level_set);
  void servers_option(const Directive& d);
  bool ip_ranges(const Directive& d, size_t first, std::vector<std::string>& out,
                 const std::string& what);

  // -- sites ----------------------------------------------------------------------------------
  void site(const caddyfile::ServerBlock& sb);
  void derive_servers();

  // -- matchers -------------------------------------------------------------------------------
  void define_matcher(MatcherDefs& defs, const Directive& d);
  void matcher(MatcherSet& ms, const Token& name, const std::vector<Token>& args, size_t from,
               const Directive* with_block);
  bool extract_matcher(const Directive& d, const MatcherDefs& defs, std::vector<MatcherSet>& match,
                       size_t& first);

  // -- directives -----------------------------------------------------------------------------
  void directive(const Directive& d, const MatcherDefs& defs, SiteExtras* extras,
                 std::vector<RouteVal>& out);
  std::vector<RouteVal> nested(const Directive& d, const MatcherDefs& defs);
  Subroute build_subroute(std::vector<RouteVal> vals);
  void add_route(std::vector<RouteVal>& out, const Directive& d,
                 const std::vector<MatcherSet>& match, Handler h);

  bool respond(const Directive& d, size_t first, StaticResponse& out);
  bool redir(const Directive& d, size_t first, StaticResponse& out);
  void header(const Directive& d, size_t first, const std::vector<MatcherSet>& match,
              std::vector<RouteVal>& out);
  bool request_body(const Directive& d, size_t first, RequestBody& out);
  bool uri(const Directive& d, size_t first, Rewrite& out);
  bool reverse_proxy(const Directive& d, size_t first, ReverseProxy& rp);
  bool transport(const Directive& d, HttpTransport& t);
  bool lb_policy(const Directive& d, ReverseProxy& rp);
  bool site_log(const Directive& d, AccessLog& log);

  Errors errs_;
  Config cfg_;
  std::vector<std::string> order_ = caddy_directive_order();
  int group_counter_ = 0;
  std::vector<std::vector<SiteKey>> site_keys_;   // per site
  std::vector<std::vector<RouteVal>> site_vals_;  // per site, built after all parsing
};

// ---------------------------------------------------------------------------------------------
// Global options.

void Compiler::global_options(const caddyfile::ServerBlock& gb) {
  GlobalOptions& g = cfg_.global;
  bool level_set = false;
  for (const auto& d : gb.directives) {
    const std::string& n = d.name.text;
    if (n == "admin") {
      // There is no admin API; `admin off` is what the Caddyfiles we replace say.
      if (d.args.size() == 1 && d.args[0].text == "off" && !d.has_block) {
        g.admin_off = true;
      } else {
        error(d.name, "global option 'admin' only accepts 'off': hsp-gateway has no admin API");
      }
    } else if (n == "skip_install_trust") {
      if (no_args(d)) g.skip_install_trust = true;
    } else if (n == "debug") {
      if (no_args(d)) g.debug = true;
    } else if (n == "http_port" || n == "https_port") {
      int v = 0;
      if (int_arg(d, v, 1, 65535))
        (n == "http_port" ? g.http_port : g.https_port) = static_cast<uint16_t>(v);
    } else if (n == "grace_period") {
      duration_arg(d, g.grace_period);
    } else if (n == "email") {
      one_arg(d, g.email);
    } else if (n == "order") {
      order_option(d);
    } else if (n == "log") {
      global_log(d, level_set);
    } else if (n == "servers") {
      servers_option(d);
    } else {
      error(d.name, "unknown global option '" + n + "': not supported yet by hsp-gateway");
    }
  }
  if (g.debug && !level_set) g.log_level = "DEBUG";
}

void Compiler::order_option(const Directive& d) {
  if (!no_block(d)) return;
  if (d.args.size() < 2) {
    error(d.name, "wrong argument count or unexpected line ending after 'order'");
    return;
  }
  const Token& dir = d.args[0];
  const auto& known = caddy_directive_order();
  if (std::find(known.begin(), known.end(), dir.text) == known.end() &&
      !caddy_unordered_directive(dir.text)) {
    error(dir, dir.text + " is not a registered directive");
    return;
  }
  const std::string& pos = d.args[1].text;
  std::vector<std::string> order = order_;
  order.erase(std::remove(order.begin(), order.end(), dir.text), order.end());
  if (pos == "first" || pos == "last") {
    if (!arg_count(d, 0, 2, 2)) return;
    if (pos == "first")
      order.insert(order.begin(), dir.text);
    else
      order.push_back(dir.text);
  } else if (pos == "before" || pos == "after") {
    if (!arg_count(d, 0, 3, 3)) return;
    const std::string& other = d.args[2].text;
    auto it = std::find(order.begin(), order.end(), other);
    if (it == order.end()) {
      // Caddy silently drops the directive from the order in this case, which then fails
      // later with "not an ordered HTTP handler"; say so here instead.
      error(d.args[2], "cannot order '" + dir.text + "' " + pos + " '" + other + "': '" + other +
                           "' is not an ordered directive");
      return;
    }
    order.insert(pos == "before" ? it : it + 1, dir.text);
  } else {
    error(d.args[1], "unknown positional '" + pos + "' (expected first, last, before, after)");
    return;
  }
  order_ = order;
  std::string line = "order";
  for (const auto& a : d.args) line += " " + a.text;
  cfg_.global.order.push_back(line);
}

void Compiler::global_log(const Directive& d, bool& level_set) {
  if (!d.args.empty() && d.args[0].text != "default") {
    error(d.args[0], "named loggers ('log " + d.args[0].text +
                         "') are not supported yet by hsp-gateway; only the default logger");
    return;
  }
  if (!arg_count(d, 0, 0, 1)) return;
  for (const auto& sub : d.block) {
    if (sub.name.text == "level") {
      std::string lvl;
      if (!one_arg(sub, lvl)) continue;
      lvl = upper(lvl);
      if (lvl == "WARNING") lvl = "WARN";
      static const std::set<std::string> ok = {"DEBUG", "INFO", "WARN", "ERROR", "PANIC", "FATAL"};
      if (!ok.count(lvl)) {
        error(sub.args[0], "unknown log level '" + sub.args[0].text + "'");
        continue;
      }
      cfg_.global.log_level = lvl;
      level_set = true;
    } else {
      unsupported_sub(d, sub);
    }
  }
}

bool Compiler::ip_ranges(const Directive& d, size_t first, std::vector<std::string>& out,
                         const std::string& what) {
  bool ok = true;
  for (size_t i = first; i < d.args.size(); ++i) {
    const Token& t = d.args[i];
    if (t.text == "private_ranges") {
      out.insert(out.end(), private_ranges().begin(), private_ranges().end());
    } else if (valid_ip_or_cidr(t.text)) {
      out.push_back(t.text);
    } else {
      error(t, "invalid IP address or CIDR range '" + t.text + "' for " + what);
      ok = false;
    }
  }
  return ok;
}

void Compiler::servers_option(const Directive& d) {
  if (!d.args.empty()) {
    error(d.args[0], "per-listener 'servers " + d.args[0].text +
                         "' options are not supported yet by hsp-gateway; write 'servers' "
                         "without an address");
    return;
  }
  GlobalOptions& g = cfg_.global;
  for (const auto& sub : d.block) {
    const std::string& n = sub.name.text;
    if (n == "trusted_proxies") {
      // Caddy 2.6.3+ syntax: trusted_proxies static <ranges...>
      if (sub.args.empty() || sub.args[0].text != "static") {
        error(sub.name, "trusted_proxies needs the 'static' source followed by ranges");
        continue;
      }
      if (!no_block(sub)) continue;
      if (sub.args.size() < 2) {
        error(sub.args[0], "trusted_proxies static needs at least one range");
        continue;
      }
      ip_ranges(sub, 1, g.trusted_proxies, "trusted_proxies");
    } else if (n == "max_header_size") {
      std::string s;
      if (!one_arg(sub, s)) continue;
      int64_t v = 0;
      if (!parse_size(s, v) || v <= 0) {
        error(sub.args[0], "bad size '" + s + "' for 'max_header_size'");
        continue;
      }
      g.max_header_bytes = v;
    } else if (n == "timeouts") {
      if (!arg_count(sub, 0, 0, 0)) continue;
      for (const auto& t : sub.block) {
        if (t.name.text == "read_header")
          duration_arg(t, g.read_header_timeout);
        else if (t.name.text == "idle")
          duration_arg(t, g.idle_timeout);
        else
          unsupported_sub(sub, t);
      }
    } else {
      unsupported_sub(d, sub);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Matchers.

void Compiler::matcher(MatcherSet& ms, const Token& name, const std::vector<Token>& args,
                       size_t from, const Directive* with_block) {
  const std::string& n = name.text;
  auto rest = [&](std::vector<std::string>& out) {
    for (size_t i = from; i < args.size(); ++i) out.push_back(args[i].text);
  };
  auto no_blk = [&]() {
    if (with_block && with_block->has_block) {
      error(with_block->block_open, "malformed " + n + " matcher: blocks are not supported");
      return false;
    }
    return true;
  };
  size_t nargs = args.size() - from;
  if (n == "not") {
    MatcherSet sub;
    sub.loc = name.loc;
    if (nargs > 0) matcher(sub, args[from], args, from + 1, nullptr);
    if (with_block)
      for (const auto& line : with_block->block) matcher(sub, line.name, line.args, 0, &line);
    ms.not_sets.push_back(std::move(sub));
    return;
  }
  if (!no_blk()) return;
  if (n == "path") {
    rest(ms.path);
  } else if (n == "host") {
    for (size_t i = from; i < args.size(); ++i)
      ms.host.push_back(lower_except_placeholders(args[i].text));
  } else if (n == "method") {
    for (size_t i = from; i < args.size(); ++i) ms.method.push_back(upper(args[i].text));
  } else if (n == "path_regexp") {
    if (!ms.path_regexp.empty()) {
      error(name, "regular expression can only be used once per named matcher");
      return;
    }
    if (nargs == 1) {
      ms.path_regexp.push_back({"", args[from].text});
    } else if (nargs == 2) {
      ms.path_regexp.push_back({args[from].text, args[from + 1].text});
    } else {
      error(name, "path_regexp takes [name] pattern");
      return;
    }
  } else if (n == "header") {
    if (nargs == 0) {
      error(name, "malformed header matcher: expected field");
      return;
    }
    std::string field = args[from].text;
    std::vector<std::string> vals;
    for (size_t i = from + 1; i < args.size(); ++i) vals.push_back(args[i].text);
    if (!field.empty() && field[0] == '!') {
      if (field.size() == 1) {
        error(args[from], "malformed header matcher: must have field name following ! character");
        return;
      }
      if (!vals.empty()) {
        error(args[from + 1],
              "malformed header matcher: null matching headers cannot have a field value");
        return;
      }
      field = "!" + canonical_header(field.substr(1));
    } else {
      // Caddy 2.6 requires a value; a field alone is accepted here as "present" (2.7+).
      field = canonical_header(field);
    }
    for (auto& [f, v] : ms.header) {
      if (f == field) {
        v.insert(v.end(), vals.begin(), vals.end());
        return;
      }
    }
    ms.header.emplace_back(field, vals);
  } else if (n == "header_regexp") {
    HeaderRegexp hr;
    if (nargs == 2) {
      hr.field = args[from].text;
      hr.pattern = args[from + 1].text;
    } else if (nargs == 3) {
      hr.name = args[from].text;
      hr.field = args[from + 1].text;
      hr.pattern = args[from + 2].text;
    } else {
      error(name, "header_regexp takes [name] field pattern");
      return;
    }
    hr.field = canonical_header(hr.field);
    for (const auto& e : ms.header_regexp) {
      if (e.field == hr.field) {
        error(name,
              "header_regexp matcher can only be used once per named matcher, per "
              "header field: " +
                  hr.field);
        return;
      }
    }
    ms.header_regexp.push_back(hr);
  } else if (n == "query") {
    for (size_t i = from; i < args.size(); ++i) {
      const std::string& q = args[i].text;
      if (q.empty()) continue;
      size_t eq = q.find('=');
      if (eq == std::string::npos) {
        error(args[i], "malformed query matcher token: " + q + "; must be in param=val format");
        continue;
      }
      std::string key = q.substr(0, eq), val = q.substr(eq + 1);
      bool found = false;
      for (auto& [k, v] : ms.query) {
        if (k == key) {
          v.push_back(val);
          found = true;
        }
      }
      if (!found) ms.query.emplace_back(key, std::vector<std::string>{val});
    }
  } else if (n == "remote_ip" || n == "client_ip") {
    auto& out = n == "remote_ip" ? ms.remote_ip : ms.client_ip;
    for (size_t i = from; i < args.size(); ++i) {
      const Token& t = args[i];
      if (t.text == "forwarded") {
        error(t,
              "remote_ip forwarded is not supported: use the client_ip matcher with the "
              "trusted_proxies server option");
      } else if (t.text == "private_ranges") {
        out.insert(out.end(), private_ranges().begin(), private_ranges().end());
      } else if (valid_ip_or_cidr(t.text)) {
        out.push_back(t.text);
      } else {
        error(t, "invalid IP address or CIDR range '" + t.text + "' for " + n);
      }
    }
  } else if (n == "protocol") {
    if (nargs != 1) {
      error(name, "expected exactly one protocol");
      return;
    }
    ms.protocol = args[from].text;
  } else {
    error(name, "unknown matcher '" + n + "': not supported yet by hsp-gateway");
  }
}

void Compiler::define_matcher(MatcherDefs& defs, const Directive& d) {
  const std::string& name = d.name.text;
  if (defs.count(name)) {
    error(d.name, "matcher is defined more than once: " + name);
    return;
  }
  MatcherSet ms;
  ms.name = name;
  ms.loc = d.name.loc;
  if (!d.args.empty()) {
    if (d.args[0].quoted()) {
      error(d.args[0], "expression matchers are not supported yet by hsp-gateway");
      return;
    }
    matcher(ms, d.args[0], d.args, 1, &d);
  } else {
    for (const auto& line : d.block) matcher(ms, line.name, line.args, 0, &line);
  }
  defs.emplace(name, std::move(ms));
}

bool Compiler::extract_matcher(const Directive& d, const MatcherDefs& defs,
                               std::vector<MatcherSet>& match, size_t& first) {
  first = 0;
  if (d.args.empty()) return true;
  const Token& t = d.args[0];
  if (t.text == "*") {
    first = 1;
  } else if (!t.text.empty() && t.text[0] == '/') {
    MatcherSet ms;
    ms.loc = t.loc;
    ms.path.push_back(t.text);
    match.push_back(std::move(ms));
    first = 1;
  } else if (!t.text.empty() && t.text[0] == '@') {
    auto it = defs.find(t.text);
    if (it == defs.end()) {
      error(t, "undefined matcher '" + t.text + "'");
      return false;
    }
    match.push_back(it->second);
    first = 1;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Directives.

void Compiler::add_route(std::vector<RouteVal>& out, const Directive& d,
                         const std::vector<MatcherSet>& match, Handler h) {
  RouteVal v;
  v.directive = d.name.text == "handle_path" ? "handle" : d.name.text;
  v.route.match = match;
  v.route.handle.push_back(std::move(h));
  v.route.directive = v.directive;
  v.route.loc = d.name.loc;
  out.push_back(std::move(v));
}

std::vector<RouteVal> Compiler::nested(const Directive& d, const MatcherDefs& outer) {
  MatcherDefs defs = outer;
  // Matchers defined inside the block are visible only there; define them before use, as
  // Caddy does, regardless of where in the block they are written.
  for (const auto& sub : d.block) {
    if (!sub.name.text.empty() && sub.name.text[0] == '@') {
      define_matcher(defs, sub);
    }
  }
  std::vector<RouteVal> vals;
  for (const auto& sub : d.block) {
    if (!sub.name.text.empty() && sub.name.text[0] == '@') continue;
    directive(sub, defs, nullptr, vals);
  }
  return vals;
}

Subroute Compiler::build_subroute(std::vector<RouteVal> vals) {
  std::map<std::string, int> pos;
  for (size_t i = 0; i < order_.size(); ++i) pos[order_[i]] = static_cast<int>(i);
  auto path_len = [](const Route& r) {
    if (r.match.size() == 1 && r.match[0].path.size() == 1)
      return static_cast<int>(r.match[0].path[0].size());
    return 0;
  };
  go_stable_sort(vals, [&](const RouteVal& i, const RouteVal& j) {
    if (i.directive != j.directive) return pos[i.directive] < pos[j.directive];
    int il = path_len(i.route), jl = path_len(j.route);
    if (il > 0 && jl > 0) return il > jl;
    return !i.route.match.empty() && j.route.match.empty();
  });

  // Mutually exclusive directives, in sorted name order as Caddy numbers them. `rewrite`
  // always takes a group name (even when absent) so that the numbering matches Caddy's.
  std::map<std::string, std::string> groups;
  for (const char* me : {"handle", "rewrite", "root"}) {
    int count = 0;
    for (const auto& v : vals) count += v.directive == me;
    std::string name;
    if (count > 1 || std::string(me) == "rewrite")
      name = "group" + std::to_string(group_counter_++);
    groups[me] = name;
  }
  Subroute sub;
  for (auto& v : vals) {
    if (auto it = groups.find(v.directive); it != groups.end()) v.route.group = it->second;
    sub.routes.push_back(std::move(v.route));
  }
  // consolidateRoutes: merge neighbours with the same matchers, terminal flag and group.
  auto same_match = [](const Route& a, const Route& b) {
    if (a.match.size() != b.match.size()) return false;
    for (size_t i = 0; i < a.match.size(); ++i)
      if (matcher_to_json(a.match[i]) != matcher_to_json(b.match[i])) return false;
    return true;
  };
  for (size_t i = 0; i + 1 < sub.routes.size();) {
    Route& a = sub.routes[i];
    Route& b = sub.routes[i + 1];
    if (same_match(a, b) && a.terminal == b.terminal && a.group == b.group) {
      for (auto& h : b.handle) a.handle.push_back(std::move(h));
      sub.routes.erase(sub.routes.begin() + static_cast<long>(i) + 1);
    } else {
      ++i;
    }
  }
  return sub;
}

void Compiler::directive(const Directive& d, const MatcherDefs& defs, SiteExtras* extras,
                         std::vector<RouteVal>& out) {
  const std::string& n = d.name.text;
  auto not_here = [&]() {
    error(d.name,
          "directive '" + n + "' is not an ordered HTTP handler, so it cannot be used here");
  };
  if (n == "bind") {
    if (!extras) return not_here();
    if (!arg_count(d, 0, 1, 1000000) || !no_block(d)) return;
    for (const auto& a : d.args) {
      std::string h = a.text;
      if (h.find('/') != std::string::npos) {
        error(a, "bind with a network ('" + h + "') is not supported yet by hsp-gateway");
        continue;
      }
      if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
      extras->bind.push_back(h);
    }
    return;
  }
  if (n == "log") {
    if (!extras) return not_here();
    if (extras->log) {
      error(d.name, "only one log directive per site is supported yet by hsp-gateway");
      return;
    }
    AccessLog log;
    if (site_log(d, log)) extras->log = log;
    return;
  }
  if (n == "handle_path") {
    if (d.args.empty()) {
      error(d.name, "wrong argument count or unexpected line ending after 'handle_path'");
      return;
    }
    const Token& p = d.args[0];
    if (p.text.empty() || p.text[0] != '/') {
      error(p, "path matcher must begin with '/', got " + p.text);
      return;
    }
    if (!arg_count(d, 1, 0, 0)) return;
    std::string strip = p.text;
    if (strip.size() >= 2 && strip.compare(strip.size() - 2, 2, "/*") == 0)
      strip.resize(strip.size() - 2);
    else if (!strip.empty() && strip.back() == '*')
      strip.pop_back();
    Subroute sub = build_subroute(nested(d, defs));
    Route strip_route;
    Rewrite rw;
    rw.strip_prefix = strip;
    strip_route.handle.push_back(rw);
    strip_route.directive = "handle_path";
    strip_route.loc = p.loc;
    sub.routes.insert(sub.routes.begin(), std::move(strip_route));
    MatcherSet ms;
    ms.loc = p.loc;
    ms.path.push_back(p.text);
    add_route(out, d, {ms}, std::move(sub));
    return;
  }
  static const std::set<std::string> handlers = {"respond",      "redir",   "header",
                                                 "request_body", "rewrite", "uri",
                                                 "handle",       "route",   "reverse_proxy"};
  if (!handlers.count(n)) {
    error(d.name, "unknown directive '" + n + "': not supported yet by hsp-gateway");
    return;
  }
  std::vector<MatcherSet> match;
  size_t first = 0;
  if (!extract_matcher(d, defs, match, first)) return;

  if (n == "respond") {
    StaticResponse r;
    if (respond(d, first, r)) add_route(out, d, match, r);
  } else if (n == "redir") {
    StaticResponse r;
    if (redir(d, first, r)) add_route(out, d, match, r);
  } else if (n == "header") {
    header(d, first, match, out);
  } else if (n == "request_body") {
    RequestBody rb;
    if (request_body(d, first, rb)) add_route(out, d, match, rb);
  } else if (n == "rewrite") {
    if (!arg_count(d, first, 1, 1) || !no_block(d)) return;
    Rewrite rw;
    rw.uri = d.args[first].text;
    add_route(out, d, match, rw);
  } else if (n == "uri") {
    Rewrite rw;
    if (uri(d, first, rw)) add_route(out, d, match, rw);
  } else if (n == "handle" || n == "route") {
    if (!arg_count(d, first, 0, 0)) return;
    std::vector<RouteVal> vals = nested(d, defs);
    Subroute sub;
    if (n == "handle") {
      sub = build_subroute(std::move(vals));
    } else {
      for (auto& v : vals) {
        // Inside `route` only handler directives are allowed (Caddy: parseRoute).
        sub.routes.push_back(std::move(v.route));
      }
    }
    add_route(out, d, match, std::move(sub));
  } else if (n == "reverse_proxy") {
    ReverseProxy rp;
    rp.loc = d.name.loc;
    if (reverse_proxy(d, first, rp)) add_route(out, d, match, std::move(rp));
  }
}

bool Compiler::respond(const Directive& d, size_t first, StaticResponse& out) {
  size_t n = d.args.size() - first;
  if (n < 1 || n > 2) {
    arg_count(d, first, 1, 2);
    return false;
  }
  const Token& a0 = d.args[first];
  auto status_of = [&](const Token& t, int& code) {
    if (!parse_int(t.text, code) || code < 100 || code > 999) {
      error(t, "bad status code '" + t.text +
                   "' for 'respond' (a number 100..999; placeholders are not supported yet)");
      return false;
    }
    return true;
  };
  bool ok = true;
  if (n == 1) {
    int code = 0;
    bool digits = a0.text.size() == 3 && std::all_of(a0.text.begin(), a0.text.end(), [](char c) {
                    return std::isdigit(static_cast<unsigned char>(c));
                  });
    if (digits && parse_int(a0.text, code) && code > 0) {
      ok = status_of(a0, out.status);
    } else {
      out.body = a0.text;
    }
  } else {
    out.body = a0.text;
    ok = status_of(d.args[first + 1], out.status);
  }
  bool has_body = !out.body.empty();
  for (const auto& sub : d.block) {
    if (sub.name.text == "body") {
      if (has_body) {
        error(sub.name, "body already specified");
        ok = false;
        continue;
      }
      std::string b;
      if (!one_arg(sub, b)) {
        ok = false;
        continue;
      }
      out.body = b;
      has_body = true;
    } else if (sub.name.text == "close") {
      if (out.close) {
        error(sub.name, "close already specified");
        ok = false;
        continue;
      }
      if (!no_args(sub)) {
        ok = false;
        continue;
      }
      out.close = true;
    } else {
      error(sub.name, "unrecognized respond subdirective '" + sub.name.text + "'");
      ok = false;
    }
  }
  return ok;
}

bool Compiler::redir(const Directive& d, size_t first, StaticResponse& out) {
  if (!arg_count(d, first, 1, 2) || !no_block(d)) return false;
  std::string to = d.args[first].text;
  std::string code = d.args.size() - first == 2 ? d.args[first + 1].text : "";
  if (code == "permanent") {
    out.status = 301;
  } else if (code == "temporary" || code.empty()) {
    out.status = 302;
  } else if (code == "html") {
    std::string t = html_escape(to);
    out.body =
        "<!DOCTYPE html>\n<html>\n\t<head>\n\t\t<title>Redirecting...</title>\n"
        "\t\t<script>window.location.replace(\"" +
        t +
        "\");</script>\n"
        "\t\t<meta http-equiv=\"refresh\" content=\"0; URL='" +
        t +
        "'\">\n"
        "\t</head>\n\t<body>Redirecting to <a href=\"" +
        t + "\">" + t +
        "</a>...</body>\n"
        "</html>\n";
    out.status = 200;  // don't redirect non-browser clients
    return true;
  } else {
    const Token& ct = d.args[first + 1];
    if (!code.empty() && code[0] == '{') {
      error(ct, "placeholder status codes in redir are not supported yet by hsp-gateway");
      return false;
    }
    int c = 0;
    if (!parse_int(code, c)) {
      error(ct, "Not a supported redir code type or not valid integer: '" + code + "'");
      return false;
    }
    if (c < 300 || (c > 399 && c != 401)) {
      error(ct, "Redir code not in the 3xx range or 401: '" + code + "'");
      return false;
    }
    out.status = c;
  }
  out.headers.emplace_back("Location", to);
  return true;
}

void Compiler::header(const Directive& d, size_t first, const std::vector<MatcherSet>& match,
                      std::vector<RouteVal>& out) {
  OpsAcc main, require;
  bool has_args = d.args.size() > first;
  if (has_args) {
    if (!arg_count(d, first, 1, 3)) return;
    const Token& f = d.args[first];
    std::string value = d.args.size() > first + 1 ? d.args[first + 1].text : "";
    std::string repl = d.args.size() > first + 2 ? d.args[first + 2].text : "";
    std::string err;
    if (!apply_header_op(main, true, f.text, value, repl, f.loc, err)) {
      error(f, err);
      return;
    }
  }
  for (const auto& sub : d.block) {
    std::string field = sub.name.text;
    if (field == "defer") {
      if (!no_args(sub)) return;
      main.deferred = true;
      continue;
    }
    if (has_args) {
      error(sub.name, "cannot specify headers in both arguments and block");
      return;
    }
    if (!field.empty() && field.back() == ':') field.pop_back();
    if (!arg_count(sub, 0, 0, 2) || !no_block(sub)) return;
    std::string value = sub.args.size() > 0 ? sub.args[0].text : "";
    std::string repl = sub.args.size() > 1 ? sub.args[1].text : "";
    OpsAcc& acc = (!field.empty() && field[0] == '?') ? require : main;
    std::string err;
    if (!apply_header_op(acc, true, field, value, repl, sub.name.loc, err)) {
      error(sub.name, err);
      return;
    }
  }
  for (OpsAcc* acc : {&main, &require}) {
    if (acc->empty() && !acc->deferred) continue;
    Headers h;
    h.response = acc->finish();
    add_route(out, d, match, h);
  }
}

bool Compiler::request_body(const Directive& d, size_t first, RequestBody& out) {
  if (!arg_count(d, first, 0, 0)) return false;
  bool ok = true;
  for (const auto& sub : d.block) {
    if (sub.name.text == "max_size") {
      std::string s;
      if (!one_arg(sub, s)) {
        ok = false;
        continue;
      }
      int64_t v = 0;
      if (!parse_size(s, v)) {
        error(sub.args[0], "bad size '" + s + "' for 'max_size'");
        ok = false;
        continue;
      }
      out.max_size = v;
    } else {
      unsupported_sub(d, sub);
      ok = false;
    }
  }
  return ok;
}

bool Compiler::uri(const Directive& d, size_t first, Rewrite& out) {
  if (!no_block(d)) return false;
  size_t n = d.args.size() - first;
  if (n < 2) {
    error(d.name, "wrong argument count or unexpected line ending after 'uri'");
    return false;
  }
  const Token& op = d.args[first];
  auto a = [&](size_t i) { return d.args[first + i].text; };
  if (op.text == "strip_prefix") {
    if (!arg_count(d, first, 2, 2)) return false;
    out.strip_prefix = a(1);
    if (out.strip_prefix[0] != '/') out.strip_prefix = "/" + out.strip_prefix;
  } else if (op.text == "strip_suffix") {
    if (!arg_count(d, first, 2, 2)) return false;
    out.strip_suffix = a(1);
  } else if (op.text == "replace") {
    if (!arg_count(d, first, 3, 4)) return false;
    Rewrite::Replace r;
    r.find = a(1);
    r.replace = a(2);
    if (n == 4 && !parse_int(a(3), r.limit)) {
      error(d.args[first + 3], "limit must be an integer; invalid: '" + a(3) + "'");
      return false;
    }
    out.uri_substring.push_back(r);
  } else if (op.text == "path_regexp") {
    if (!arg_count(d, first, 3, 3)) return false;
    out.path_regexp.push_back({a(1), a(2)});
  } else {
    error(op, "unrecognized URI manipulation '" + op.text + "'");
    return false;
  }
  return true;
}

bool Compiler::lb_policy(const Directive& d, ReverseProxy& rp) {
  if (!no_block(d)) return false;
  if (d.args.empty()) {
    error(d.name, "wrong argument count or unexpected line ending after 'lb_policy'");
    return false;
  }
  const Token& p = d.args[0];
  static const std::map<std::string, LbPolicy> simple = {
      {"random", LbPolicy::random},         {"round_robin", LbPolicy::round_robin},
      {"least_conn", LbPolicy::least_conn}, {"first", LbPolicy::first},
      {"ip_hash", LbPolicy::ip_hash},       {"client_ip_hash", LbPolicy::client_ip_hash},
      {"uri_hash", LbPolicy::uri_hash},
  };
  if (auto it = simple.find(p.text); it != simple.end()) {
    if (!arg_count(d, 0, 1, 1)) return false;
    rp.lb_policy = it->second;
  } else if (p.text == "header") {
    if (!arg_count(d, 0, 2, 2)) return false;
    rp.lb_policy = LbPolicy::header;
    rp.lb_key = d.args[1].text;
  } else if (p.text == "cookie") {
    if (!arg_count(d, 0, 1, 3)) return false;
    rp.lb_policy = LbPolicy::cookie;
    rp.lb_key = d.args.size() > 1 ? d.args[1].text : "lb";  // Caddy's default cookie name
    if (d.args.size() > 2) rp.lb_secret = d.args[2].text;
  } else {
    error(p, "unknown lb_policy '" + p.text +
                 "' (supported: random, round_robin, least_conn, first, ip_hash, "
                 "client_ip_hash, uri_hash, header, cookie)");
    return false;
  }
  return true;
}

bool Compiler::transport(const Directive& d, HttpTransport& t) {
  if (d.args.empty()) {
    error(d.name, "wrong argument count or unexpected line ending after 'transport'");
    return false;
  }
  if (d.args[0].text != "http") {
    error(d.args[0], "transport '" + d.args[0].text + "' is not supported yet by hsp-gateway");
    return false;
  }
  if (!arg_count(d, 0, 1, 1)) return false;
  bool ok = true;
  for (const auto& sub : d.block) {
    const std::string& n = sub.name.text;
    if (n == "dial_timeout") {
      ok &= duration_arg(sub, t.dial_timeout);
    } else if (n == "response_header_timeout") {
      ok &= duration_arg(sub, t.response_header_timeout);
    } else if (n == "read_timeout") {
      ok &= duration_arg(sub, t.read_timeout);
    } else if (n == "write_timeout") {
      ok &= duration_arg(sub, t.write_timeout);
    } else if (n == "keepalive") {
      // Caddy replaces its whole KeepAlive default when any keepalive option is written, so
      // e.g. `keepalive 30s` there also drops the per-host idle limit to Go's default of 2.
      // Here only the written field changes; the others keep Caddy's defaults (32 per host).
      if (sub.args.size() == 1 && sub.args[0].text == "off" && !sub.has_block) {
        t.keepalive = false;
      } else {
        ok &= duration_arg(sub, t.keepalive_idle);
      }
    } else if (n == "keepalive_idle_conns") {
      ok &= int_arg(sub, t.keepalive_idle_conns, 0, 1 << 30);
    } else if (n == "keepalive_idle_conns_per_host") {
      ok &= int_arg(sub, t.keepalive_idle_conns_per_host, 0, 1 << 30);
    } else if (n == "max_conns_per_host") {
      ok &= int_arg(sub, t.max_conns_per_host, 0, 1 << 30);
    } else {
      error(sub.name,
            "unknown transport http subdirective '" + n + "': not supported yet by hsp-gateway");
      ok = false;
    }
  }
  return ok;
}

bool Compiler::reverse_proxy(const Directive& d, size_t first, ReverseProxy& rp) {
  bool ok = true;
  std::string common_scheme;
  auto add_upstream = [&](const Token& t) {
    const std::string& s = t.text;
    if (s.rfind("srv+", 0) == 0) {
      error(t, "SRV upstreams ('" + s + "') are not supported yet by hsp-gateway");
      return false;
    }
    UpstreamAddress ua;
    std::string err;
    if (!parse_upstream_address(s, ua, err)) {
      error(t, "bad upstream address '" + s + "': " + err);
      return false;
    }
    if (ua.scheme == "https") {
      error(t, "upstream '" + s + "': HTTPS upstreams are not supported yet by hsp-gateway");
      return false;
    }
    if (ua.scheme == "h2c") {
      error(t, "upstream '" + s + "': h2c upstreams are not supported yet by hsp-gateway");
      return false;
    }
    if (!ua.scheme.empty() && ua.scheme != "http") {
      error(t, "upstream '" + s + "': unsupported scheme '" + ua.scheme + "://'");
      return false;
    }
    if (ua.network == "unix") {
      error(t, "upstream '" + s + "': unix socket upstreams are not supported yet by hsp-gateway");
      return false;
    }
    if (!ua.network.empty()) {
      error(t, "upstream '" + s + "': network '" + ua.network +
                   "/' is not supported yet by hsp-gateway");
      return false;
    }
    if (ua.dial.find('{') != std::string::npos) {
      error(t, "upstream '" + s +
                   "': placeholders in upstream addresses are not supported yet "
                   "by hsp-gateway");
      return false;
    }
    std::string scheme = ua.scheme;
    // As in Caddy, only a non-empty scheme seen earlier is binding: "a:1 http://b" passes,
    // "http://b a:1" does not.
    if (!common_scheme.empty() && scheme != common_scheme) {
      error(t,
            "for now, all proxy upstreams must use the same scheme (transport protocol); "
            "expecting '" +
                common_scheme + "://' but got '" + scheme + "://'");
      return false;
    }
    common_scheme = scheme;
    rp.upstreams.push_back(Upstream{ua.dial, t.loc});
    return true;
  };
  for (size_t i = first; i < d.args.size(); ++i) ok &= add_upstream(d.args[i]);

  OpsAcc up, down;
  bool have_policy = false, have_transport = false;
  auto status_list = [&](const Directive& sub, std::vector<int>& out) {
    if (sub.args.empty()) {
      error(sub.name,
            "wrong argument count or unexpected line ending after '" + sub.name.text + "'");
      return false;
    }
    for (const auto& a : sub.args) {
      std::string v = a.text;
      if (v.size() == 3 && v.compare(1, 2, "xx") == 0) v = v.substr(0, 1);
      int code = 0;
      if (!parse_int(v, code)) {
        error(a, "bad status value '" + a.text + "' for '" + sub.name.text +
                     "' (a code like 502 or a class like 5xx)");
        return false;
      }
      out.push_back(code);
    }
    return no_block(sub);
  };
  for (const auto& sub : d.block) {
    const std::string& n = sub.name.text;
    if (!n.empty() && n[0] == '@') {
      error(sub.name, "response matchers in reverse_proxy are not supported yet by hsp-gateway");
      ok = false;
    } else if (n == "to") {
      if (sub.args.empty()) {
        error(sub.name, "wrong argument count or unexpected line ending after 'to'");
        ok = false;
      }
      for (const auto& a : sub.args) ok &= add_upstream(a);
      ok &= no_block(sub);
    } else if (n == "lb_policy") {
      if (have_policy) {
        error(sub.name, "load balancing selection policy already specified");
        ok = false;
        continue;
      }
      have_policy = true;
      ok &= lb_policy(sub, rp);
    } else if (n == "lb_try_duration") {
      ok &= duration_arg(sub, rp.lb_try_duration);
    } else if (n == "lb_try_interval") {
      ok &= duration_arg(sub, rp.lb_try_interval);
    } else if (n == "health_uri") {
      ok &= one_arg(sub, rp.active.uri);
    } else if (n == "health_port") {
      int p = 0;
      if (int_arg(sub, p, 1, 65535))
        rp.active.port = p;
      else
        ok = false;
    } else if (n == "health_interval") {
      ok &= duration_arg(sub, rp.active.interval);
    } else if (n == "health_timeout") {
      ok &= duration_arg(sub, rp.active.timeout);
    } else if (n == "health_status") {
      std::string v;
      if (!one_arg(sub, v)) {
        ok = false;
        continue;
      }
      std::string num = v;
      if (num.size() == 3 && num.compare(1, 2, "xx") == 0) num = num.substr(0, 1);
      if (!parse_int(num, rp.active.expect_status)) {
        error(sub.args[0], "bad status value '" + v +
                               "' for 'health_status' (a code like 200 or a class like 2xx)");
        ok = false;
      }
    } else if (n == "health_body") {
      ok &= one_arg(sub, rp.active.expect_body);
    } else if (n == "health_headers") {
      if (!arg_count(sub, 0, 0, 0)) {
        ok = false;
        continue;
      }
      for (const auto& h : sub.block) {
        if (h.args.empty()) {
          rp.active.headers.emplace_back(h.name.text, "");
        } else {
          for (const auto& v : h.args) rp.active.headers.emplace_back(h.name.text, v.text);
        }
      }
    } else if (n == "max_fails") {
      ok &= int_arg(sub, rp.passive.max_fails, 0, 1 << 30);
    } else if (n == "fail_duration") {
      ok &= duration_arg(sub, rp.passive.fail_duration);
    } else if (n == "unhealthy_request_count") {
      ok &= int_arg(sub, rp.passive.unhealthy_request_count, 0, 1 << 30);
    } else if (n == "unhealthy_status") {
      ok &= status_list(sub, rp.passive.unhealthy_status);
    } else if (n == "unhealthy_latency") {
      ok &= duration_arg(sub, rp.passive.unhealthy_latency);
    } else if (n == "flush_interval") {
      std::string v;
      if (!one_arg(sub, v)) {
        ok = false;
        continue;
      }
      int iv = 0;
      Duration dur{0};
      if (parse_int(v, iv)) {
        rp.flush_interval = Duration(iv);  // Caddy: a bare integer is nanoseconds (-1: always)
      } else if (parse_duration(v, dur)) {
        rp.flush_interval = dur;
      } else {
        error(sub.args[0], "bad duration '" + v + "' for 'flush_interval'");
        ok = false;
      }
    } else if (n == "trusted_proxies") {
      ok &= no_block(sub) && ip_ranges(sub, 0, rp.trusted_proxies, "trusted_proxies");
    } else if (n == "header_up" || n == "header_down") {
      if (!arg_count(sub, 0, 1, 3) || !no_block(sub)) {
        ok = false;
        continue;
      }
      std::string value = sub.args.size() > 1 ? sub.args[1].text : "";
      std::string repl = sub.args.size() > 2 ? sub.args[2].text : "";
      std::string err;
      if (!apply_header_op(n == "header_up" ? up : down, false, sub.args[0].text, value, repl,
                           sub.args[0].loc, err)) {
        error(sub.args[0], err);
        ok = false;
      }
    } else if (n == "transport") {
      if (have_transport) {
        error(sub.name, "transport already specified");
        ok = false;
        continue;
      }
      have_transport = true;
      ok &= transport(sub, rp.transport);
    } else {
      unsupported_sub(d, sub);
      ok = false;
    }
  }
  rp.header_up = up.finish();
  rp.header_down = down.finish();
  if (ok && rp.upstreams.empty()) {
    error(d.name,
          "reverse_proxy needs at least one upstream (dynamic upstreams are not "
          "supported yet by hsp-gateway)");
    ok = false;
  }
  return ok;
}

bool Compiler::site_log(const Directive& d, AccessLog& log) {
  if (!arg_count(d, 0, 0, 0)) return false;
  log.enabled = true;
  bool ok = true;
  for (const auto& sub : d.block) {
    const std::string& n = sub.name.text;
    if (n == "output") {
      if (sub.args.empty()) {
        error(sub.name, "wrong argument count or unexpected line ending after 'output'");
        ok = false;
        continue;
      }
      const std::string& o = sub.args[0].text;
      if (o == "stdout" || o == "stderr" || o == "discard") {
        ok &= arg_count(sub, 0, 1, 1) && no_block(sub);
        log.output = o;
      } else if (o == "file") {
        if (!arg_count(sub, 0, 2, 2)) {
          ok = false;
          continue;
        }
        if (sub.has_block) {
          // Rotation (roll_size, roll_keep, ...) needs a rotating writer we do not have yet;
          // accepting the options and not rotating would fill disks silently.
          error(sub.block_open,
                "log file rotation options are not supported yet by "
                "hsp-gateway");
          ok = false;
          continue;
        }
        log.output = "file";
        log.file = sub.args[1].text;
      } else {
        error(sub.args[0], "log output '" + o + "' is not supported yet by hsp-gateway");
        ok = false;
      }
    } else if (n == "format") {
      std::string f;
      if (!one_arg(sub, f)) {
        ok = false;
        continue;
      }
      if (f != "json" && f != "console") {
        error(sub.args[0], "log format '" + f + "' is not supported yet by hsp-gateway");
        ok = false;
        continue;
      }
      log.format = f;
    } else if (n == "level") {
      std::string lvl;
      if (!one_arg(sub, lvl)) {
        ok = false;
        continue;
      }
      log.level = upper(lvl);
    } else {
      error(sub.name, "unrecognized log subdirective: " + n);
      ok = false;
    }
  }
  return ok;
}

// ---------------------------------------------------------------------------------------------
// Sites and servers.

void Compiler::site(const caddyfile::ServerBlock& sb) {
  const GlobalOptions& g = cfg_.global;
  Site site;
  site.loc = sb.loc;
  std::vector<SiteKey> keys;
  const std::string http_port = std::to_string(g.http_port);
  const std::string https_port = std::to_string(g.https_port);
  for (const auto& k : sb.keys) {
    if (!k.text.empty() && k.text[0] == '@') {
      error(k, "cannot define a matcher outside of a site block: '" + k.text + "'");
      continue;
    }
    RawAddress ra;
    std::string err;
    if (!parse_site_address(k.text, ra, err)) {
      error(k, "bad site address '" + k.text + "': " + err);
      continue;
    }
    if (ra.scheme != "" && ra.scheme != "http" && ra.scheme != "https") {
      error(k, "site address '" + k.text + "' has an unsupported scheme '" + ra.scheme + "'");
      continue;
    }
    std::string ln_port = !ra.port.empty() ? ra.port : ra.scheme == "http" ? http_port : https_port;
    if ((ra.scheme == "http" && ln_port == https_port) ||
        (ra.scheme == "https" && ln_port == http_port)) {
      error(k, "[" + k.text + "] scheme and port violate convention");
      continue;
    }
    bool https = ra.scheme == "https" ||
                 (ra.scheme != "http" && !ra.host.empty() && ra.port != http_port) ||
                 (ra.scheme.empty() && ln_port == https_port);
    if (https) {
      std::string suggestion;
      if (!ra.host.empty()) {
        std::string host = ra.host.find(':') != std::string::npos ? "[" + ra.host + "]" : ra.host;
        bool keep_port = !ra.port.empty() && ra.port != https_port;
        suggestion = "write http://" + host + (keep_port ? ":" + ra.port : "") + ra.path +
                     " to serve plain HTTP";
      } else {
        suggestion = "listen on another port, e.g. :8080, to serve plain HTTP";
      }
      error(k, "site '" + k.text +
                   "' would be served over HTTPS by Caddy; TLS is not "
                   "supported yet: " +
                   suggestion);
      continue;
    }
    if (ra.host.empty() && ra.port.empty() && ra.scheme.empty()) {
      error(k, "site address '" + k.text + "' names neither a host nor a port");
      continue;
    }
    SiteKey sk;
    sk.raw = ra;
    sk.listen_port = static_cast<uint16_t>(std::stoi(ln_port));
    keys.push_back(sk);
    Address a;
    a.original = ra.original;
    a.scheme = ra.scheme;
    a.host = ra.host;
    a.port = ra.port.empty() ? 0 : static_cast<uint16_t>(std::stoi(ra.port));
    a.path = ra.path;
    a.loc = k.loc;
    site.addresses.push_back(a);
  }

  std::vector<Directive> dirs = sb.directives;
  for (auto& d : dirs) expand_tokens(d);
  MatcherDefs defs;
  for (const auto& d : dirs)
    if (!d.name.text.empty() && d.name.text[0] == '@') define_matcher(defs, d);
  SiteExtras extras;
  std::vector<RouteVal> vals;
  for (const auto& d : dirs) {
    if (!d.name.text.empty() && d.name.text[0] == '@') continue;
    directive(d, defs, &extras, vals);
  }
  site.bind = extras.bind;
  if (extras.log) site.log = *extras.log;
  cfg_.sites.push_back(std::move(site));
  site_keys_.push_back(std::move(keys));
  site_vals_.push_back(std::move(vals));
}

void Compiler::derive_servers() {
  struct Member {
    size_t site;
    std::vector<RawAddress> keys;
  };
  std::map<std::pair<uint16_t, std::string>, std::vector<Member>> by_listener;
  for (size_t i = 0; i < cfg_.sites.size(); ++i) {
    std::vector<std::string> binds = cfg_.sites[i].bind;
    if (binds.empty()) binds.push_back("");
    for (const auto& sk : site_keys_[i]) {
      for (const auto& b : binds) {
        auto& members = by_listener[{sk.listen_port, b}];
        if (members.empty() || members.back().site != i) members.push_back({i, {}});
        members.back().keys.push_back(sk.raw);
      }
    }
  }
  for (auto& [listener, members] : by_listener) {
    // Two sites claiming the same key on one socket would make lookup ambiguous.
    for (size_t a = 0; a < members.size(); ++a) {
      for (size_t b = a + 1; b < members.size(); ++b) {
        for (const auto& ka : members[a].keys) {
          for (const auto& kb : members[b].keys) {
            if (ka.original == kb.original) {
              const Site& s = cfg_.sites[members[b].site];
              error(s.loc, "ambiguous site definition: " + ka.original);
            }
          }
        }
      }
    }
    // Caddy's site order within a server: most specific host first, wildcard hosts after
    // exact ones, catch-all sites last; longer path first on equal hosts.
    go_stable_sort(members, [](const Member& i, const Member& j) {
      auto summarize = [](const Member& m, std::string& host, std::string& path, bool& wild) {
        for (const auto& k : m.keys) {
          if (k.host.find('*') != std::string::npos || k.host.empty()) wild = true;
          if (specificity(k.host) > specificity(host)) host = k.host;
          if (specificity(k.path) > specificity(path)) path = k.path;
        }
      };
      std::string ih, ip, jh, jp;
      bool iw = false, jw = false;
      summarize(i, ih, ip, iw);
      summarize(j, jh, jp, jw);
      if (specificity(ih) == 0) return false;
      if (specificity(jh) == 0) return true;
      if (iw != jw) return jw && !iw;
      if (specificity(ih) == specificity(jh)) return ip.size() > jp.size();
      return specificity(ih) > specificity(jh);
    });
    Server srv;
    srv.port = listener.first;
    srv.bind_host = listener.second;
    for (const auto& m : members) srv.sites.push_back(m.site);
    cfg_.servers.push_back(std::move(srv));
  }
  std::stable_sort(cfg_.servers.begin(), cfg_.servers.end(), [](const Server& a, const Server& b) {
    return std::tie(a.port, a.bind_host) < std::tie(b.port, b.bind_host);
  });
}

Result<Config> Compiler::run(const caddyfile::File& file) {
  if (file.has_global_options) global_options(file.global_options);
  for (const auto& sb : file.blocks) {
    if (sb.keys.empty()) {
      error(sb.loc,
            "server block without any key is global configuration, and if used, it "
            "must be first");
      continue;
    }
    site(sb);
  }
  derive_servers();
  // Site-level subroutes are built after every directive was parsed and in Caddy's server
  // order (listener address as text, then site priority), so that group numbers come out as
  // Caddy numbers them. Only the names differ otherwise; grouping is the same.
  std::vector<const Server*> by_listen;
  for (const auto& s : cfg_.servers) by_listen.push_back(&s);
  auto listen_text = [](const Server* s) {
    std::string h =
        s->bind_host.find(':') != std::string::npos ? "[" + s->bind_host + "]" : s->bind_host;
    return h + ":" + std::to_string(s->port);
  };
  std::stable_sort(by_listen.begin(), by_listen.end(), [&](const Server* a, const Server* b) {
    return listen_text(a) < listen_text(b);
  });
  std::vector<bool> built(cfg_.sites.size(), false);
  auto build = [&](size_t i) {
    if (built[i]) return;
    built[i] = true;
    cfg_.sites[i].routes = build_subroute(std::move(site_vals_[i])).routes;
  };
  for (const Server* s : by_listen)
    for (size_t i : s->sites) build(i);
  for (size_t i = 0; i < cfg_.sites.size(); ++i) build(i);
  if (!errs_.empty()) return errs_;
  return std::move(cfg_);
}

}  // namespace

Result<Config> compile(const caddyfile::File& file) {
  Compiler c;
  return c.run(file);
}

}  // namespace hsp::config
