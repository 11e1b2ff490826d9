// Request matchers with Caddy 2.6 semantics (modules/caddyhttp/matchers.go).
#include <algorithm>

#include "engine/compiled.h"
#include "http/message.h"

namespace hsp::engine {

namespace {

using SvIter = std::string_view::const_iterator;

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = lower(c);
  return out;
}

bool ends_with(std::string_view s, std::string_view x) {
  return s.size() >= x.size() && s.substr(s.size() - x.size()) == x;
}
bool starts_with(std::string_view s, std::string_view x) {
  return s.substr(0, x.size()) == x;
}

// Go's path.Clean.
std::string go_clean(std::string_view p) {
  if (p.empty()) return ".";
  bool rooted = p.front() == '/';
  std::string out;
  out.reserve(p.size());
  if (rooted) out += '/';
  size_t dotdot_floor = out.size();  // ".." may not remove below this
  size_t i = rooted ? 1 : 0;
  while (i < p.size()) {
    if (p[i] == '/') {
      ++i;
    } else if (p[i] == '.' && (i + 1 == p.size() || p[i + 1] == '/')) {
      ++i;
    } else if (p[i] == '.' && p[i + 1] == '.' && (i + 2 == p.size() || p[i + 2] == '/')) {
      i += 2;
      if (out.size() > dotdot_floor) {
        size_t cut = out.size() - 1;
        while (cut > dotdot_floor && out[cut] != '/') --cut;
        out.resize(cut);
      } else if (!rooted) {
        if (!out.empty()) out += '/';
        out += "..";
        dotdot_floor = out.size();
      }
    } else {
      if ((rooted && out.size() != 1) || (!rooted && !out.empty())) out += '/';
      while (i < p.size() && p[i] != '/') out += p[i++];
    }
  }
  if (out.empty()) return ".";
  return out;
}

// The group names of a pattern: "(?P<name>" and "(?<name>" (not look-behind "(?<=" / "(?<!").
std::vector<std::string> group_names(const std::string& pattern) {
  std::vector<std::string> names;
  for (size_t i = 0; i + 3 < pattern.size(); ++i) {
    if (pattern[i] == '\\') {
      ++i;
      continue;
    }
    if (pattern[i] != '(' || pattern[i + 1] != '?') continue;
    size_t start;
    if (pattern[i + 2] == 'P' && pattern[i + 3] == '<') {
      start = i + 4;
    } else if (pattern[i + 2] == '<' && pattern[i + 3] != '=' && pattern[i + 3] != '!') {
      start = i + 3;
    } else {
      continue;
    }
    size_t end = pattern.find('>', start);
    if (end == std::string::npos) break;
    names.push_back(pattern.substr(start, end - start));
  }
  return names;
}

void set_captures(const RegexCond& c, const boost::match_results<SvIter>& m, RequestCtx& ctx) {
  for (size_t i = 0; i < m.size(); ++i) {
    ctx.captures.emplace_back(c.name + std::to_string(i), m[i].matched ? m[i].str() : "");
  }
  for (const auto& n : c.re.names) {
    auto sub = m[n];
    ctx.captures.emplace_back(c.name + n, sub.matched ? sub.str() : "");
  }
}

bool match_regex(const RegexCond& c, std::string_view in, RequestCtx& ctx) {
  boost::match_results<SvIter> m;
  if (!c.re.search(in, m)) return false;
  set_captures(c, m, ctx);
  return true;
}

// The header values a matcher sees: Go keeps Host out of the header map and answers r.Host.
template <typename F>
bool any_value(const RequestCtx& ctx, const std::string& field, bool is_host, F&& f) {
  if (is_host) {
    const auto& r = ctx.req;
    if (!r.authority.empty() || !r.host.empty())
      return f(r.authority.empty() ? r.host : r.authority);
  }
  for (const auto& h : ctx.req.headers) {
    if (http::iequals(h.first, field) && f(h.second)) return true;
  }
  return false;
}

bool field_present(const RequestCtx& ctx, const std::string& field, bool is_host) {
  return any_value(ctx, field, is_host, [](std::string_view) { return true; });
}

// Go's url.ParseQuery for matching: false on a malformed query (Caddy then never matches).
bool parse_query(std::string_view q, std::vector<std::pair<std::string, std::string>>& out) {
  bool ok = true;
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view pair = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    if (pair.empty()) continue;
    if (pair.find(';') != std::string_view::npos) {
      ok = false;
      continue;
    }
    size_t eq = pair.find('=');
    std::string k, v;
    if (!percent_decode(pair.substr(0, eq), k, true)) {
      ok = false;
      continue;
    }
    if (eq != std::string_view::npos && !percent_decode(pair.substr(eq + 1), v, true)) {
      ok = false;
      continue;
    }
    out.emplace_back(std::move(k), std::move(v));
  }
  return ok;
}

bool match_protocol(const std::string& proto, const http::Request& r) {
  int major = r.version / 10, minor = r.version % 10;
  if (proto == "grpc") {
    const std::string* ct = r.headers.get("Content-Type");
    return ct != nullptr && starts_with(*ct, "application/grpc");
  }
  if (proto == "https") return r.tls;
  if (proto == "http") return !r.tls;
  if (proto == "http/1.0") return major == 1 && minor == 0;
  if (proto == "http/1.0+") return r.version >= 10;
  if (proto == "http/1.1") return major == 1 && minor == 1;
  if (proto == "http/1.1+") return r.version >= 11;
  if (proto == "http/2") return major == 2;
  if (proto == "http/2+") return major >= 2;
  if (proto == "http/3") return major == 3;
  if (proto == "http/3+") return major >= 3;
  return false;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
bool Regex::compile(const std::string& pattern, Regex& out, std::string& why) {
  // RE2 (Go) spells named groups "(?P<name>"; Boost's Perl syntax wants "(?<name>".
  std::string translated;
  translated.reserve(pattern.size());
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '\\' && i + 1 < pattern.size()) {
      translated += pattern[i];
      translated += pattern[++i];
      continue;
    }
    if (pattern.compare(i, 4, "(?P<") == 0) {
      translated += "(?<";
      i += 3;
      continue;
    }
    translated += pattern[i];
  }
  try {
    out.re.assign(translated, boost::regex::perl);
  } catch (const boost::regex_error& e) {
    why = e.what();
    return false;
  }
  out.names = group_names(pattern);
  return true;
}

bool Regex::search(std::string_view in, boost::match_results<SvIter>& m) const {
  try {
    return boost::regex_search(in.begin(), in.end(), m, re);
  } catch (const std::exception&) {
    return false;  // boost throws when matching would take exponential time
  }
}

std::string Regex::replace_all(std::string_view in, std::string_view repl) const {
  std::string out;
  size_t last_end = 0;       // end of the text already copied
  long prev_match_end = -1;  // Go ignores an empty match abutting the previous match
  size_t pos = 0;
  boost::match_results<SvIter> m;
  while (pos <= in.size()) {
    auto flags = boost::match_default;
    if (pos > 0) flags |= boost::match_prev_avail;
    bool found;
    try {
      found = boost::regex_search(in.begin() + static_cast<long>(pos), in.end(), m, re, flags);
    } catch (const std::exception&) {
      found = false;
    }
    if (!found) break;
    size_t start = static_cast<size_t>(m[0].first - in.begin());
    size_t end = static_cast<size_t>(m[0].second - in.begin());
    if (!(start == end && static_cast<long>(start) == prev_match_end)) {
      out.append(in.substr(last_end, start - last_end));
      // Expand $1 ${1} $name ${name} $$ like Go's Regexp.Expand.
      for (size_t i = 0; i < repl.size(); ++i) {
        char c = repl[i];
        if (c != '$' || i + 1 >= repl.size()) {
          out += c;
          continue;
        }
        if (repl[i + 1] == '$') {
          out += '$';
          ++i;
          continue;
        }
        std::string_view name;
        size_t next;
        if (repl[i + 1] == '{') {
          size_t close = repl.find('}', i + 2);
          if (close == std::string_view::npos) {
            out += c;
            continue;
          }
          name = repl.substr(i + 2, close - i - 2);
          next = close + 1;
        } else {
          size_t j = i + 1;
          while (j < repl.size() &&
                 (std::isalnum(static_cast<unsigned char>(repl[j])) || repl[j] == '_')) {
            ++j;
          }
          name = repl.substr(i + 1, j - i - 1);
          next = j;
        }
        if (name.empty()) {
          out += c;
          continue;
        }
        bool numeric =
            std::all_of(name.begin(), name.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
        if (numeric && name.size() > 6) {
          // A group number this large cannot exist; also keeps stoul from throwing.
        } else if (numeric) {
          size_t idx = std::stoul(std::string(name));
          if (idx < m.size() && m[idx].matched) out += m[idx].str();
        } else if (std::find(names.begin(), names.end(), name) != names.end()) {
          auto sub = m[std::string(name)];
          if (sub.matched) out += sub.str();
        }
        i = next - 1;
      }
      last_end = end;
    }
    prev_match_end = static_cast<long>(end);
    pos = end > pos ? end : pos + 1;
  }
  out.append(in.substr(std::min(last_end, in.size())));
  return out;
}

// ---------------------------------------------------------------------------------------------
std::string clean_path(std::string_view p, bool merge_slashes) {
  if (merge_slashes) {
    std::string c = go_clean(p);
    if (c != "/" && !p.empty() && p.back() == '/') c += '/';
    return c;
  }
  // Caddy's trick: mark each repeated slash with an impossible byte so Clean keeps the empty
  // segment, then drop the marks.
  constexpr char kMark = '\xff';
  std::string marked;
  marked.reserve(p.size() + 4);
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == '/' && i > 0 && p[i - 1] == '/') marked += kMark;
    marked += p[i];
  }
  std::string c = clean_path(marked, true);
  c.erase(std::remove(c.begin(), c.end(), kMark), c.end());
  return c;
}

bool glob_match(std::string_view pattern, std::string_view name) {
  // Iterative matcher for Go's path.Match: '*' (not across '/'), '?', [classes], '\' escapes.
  size_t p = 0, n = 0;
  size_t star_p = std::string_view::npos, star_n = 0;
  auto match_class = [&](size_t& pi, char c, bool& ok) -> bool {
    // pattern[pi] == '['; advance pi past the class. ok=false when malformed.
    size_t i = pi + 1;
    bool negate = false;
    if (i < pattern.size() && pattern[i] == '^') {
      negate = true;
      ++i;
    }
    bool matched = false;
    bool first = true;
    while (true) {
      if (i >= pattern.size()) {
        ok = false;
        return false;
      }
      if (pattern[i] == ']' && !first) {
        ++i;
        break;
      }
      first = false;
      char lo = pattern[i];
      if (lo == '\\') {
        if (++i >= pattern.size()) {
          ok = false;
          return false;
        }
        lo = pattern[i];
      }
      ++i;
      char hi = lo;
      if (i + 1 < pattern.size() && pattern[i] == '-' && pattern[i + 1] != ']') {
        hi = pattern[i + 1];
        if (hi == '\\') {
          if (i + 2 >= pattern.size()) {
            ok = false;
            return false;
          }
          hi = pattern[i + 2];
          ++i;
        }
        i += 2;
      }
      if (lo <= c && c <= hi) matched = true;
    }
    pi = i;
    return matched != negate;
  };
  while (n < name.size() || p < pattern.size()) {
    if (p < pattern.size()) {
      char pc = pattern[p];
      if (pc == '*') {
        star_p = p++;
        star_n = n;
        continue;
      }
      if (n < name.size()) {
        char c = name[n];
        if (pc == '?' && c != '/') {
          ++p;
          ++n;
          continue;
        }
        if (pc == '[' && c != '/') {
          bool ok = true;
          size_t pi = p;
          bool m = match_class(pi, c, ok);
          if (!ok) return false;
          if (m) {
            p = pi;
            ++n;
            continue;
          }
        } else if (pc == '\\' && p + 1 < pattern.size()) {
          if (pattern[p + 1] == c) {
            p += 2;
            ++n;
            continue;
          }
        } else if (pc != '?' && pc != '[' && pc == c) {
          ++p;
          ++n;
          continue;
        }
      }
    }
    // Mismatch: let the last '*' absorb one more character, unless that would cross '/'.
    if (star_p != std::string_view::npos && star_n < name.size() && name[star_n] != '/') {
      p = star_p + 1;
      n = ++star_n;
      continue;
    }
    return false;
  }
  return true;
}

bool host_pattern_match(std::string_view pattern, std::string_view host) {
  if (pattern.find('*') == std::string_view::npos) return http::iequals(pattern, host);
  // Caddy 2.6: same number of labels; a "*" label matches any one label.
  while (true) {
    size_t pd = pattern.find('.'), hd = host.find('.');
    std::string_view pl = pattern.substr(0, pd), hl = host.substr(0, hd);
    if (pl != "*" && !http::iequals(pl, hl)) return false;
    if (pd == std::string_view::npos || hd == std::string_view::npos) {
      return pd == std::string_view::npos && hd == std::string_view::npos;
    }
    pattern.remove_prefix(pd + 1);
    host.remove_prefix(hd + 1);
  }
}

// ---------------------------------------------------------------------------------------------
void DispatchState::check_path() {
  const std::string& p = ctx.req.path;
  if (have_src_ && src_ == p) return;
  src_ = p;
  have_src_ = true;
  have_decoded_ = have_clean_ = have_lower_clean_ = have_lower_keep_ = false;
  decoded_.clear();
  // Go would have refused a malformed escape with 400; match the raw path then.
  if (p.find('%') == std::string::npos || !percent_decode(p, decoded_, false)) decoded_ = p;
  have_decoded_ = true;
}

namespace {

// Clean only when the path has something to clean: no "//" and no "/." segment means path.Clean
// would return it unchanged (paths are rooted), which is the common case.
std::string cleaned(std::string_view p, bool merge) {
  bool dirty = p.find("/.") != std::string_view::npos || p.empty() || p.front() != '/' ||
               (merge && p.find("//") != std::string_view::npos);
  return dirty ? clean_path(p, merge) : std::string(p);
}

}  // namespace

namespace {

// The decoded path lower-cased, without trailing dots and spaces (which Windows-style file
// systems ignore, so Caddy's path matcher does too).
std::string lower_trimmed(const std::string& decoded) {
  std::string lower = to_lower(decoded);
  while (!lower.empty() && (lower.back() == '.' || lower.back() == ' ')) lower.pop_back();
  return lower;
}

}  // namespace

const std::string& DispatchState::clean() {
  check_path();
  if (!have_clean_) {
    clean_ = cleaned(decoded_, true);
    have_clean_ = true;
  }
  return clean_;
}

const std::string& DispatchState::lower_clean() {
  check_path();
  if (!have_lower_clean_) {
    lower_clean_ = cleaned(lower_trimmed(decoded_), true);
    have_lower_clean_ = true;
  }
  return lower_clean_;
}

const std::string& DispatchState::lower_keep() {
  check_path();
  if (!have_lower_keep_) {
    lower_keep_ = cleaned(lower_trimmed(decoded_), false);
    have_lower_keep_ = true;
  }
  return lower_keep_;
}

bool DispatchState::group_taken(const std::string& g) const {
  for (size_t i = 0; i < ngroups; ++i) {
    if (*groups[i] == g) return true;
  }
  for (const auto* s : more_groups) {
    if (*s == g) return true;
  }
  return false;
}

void DispatchState::take_group(const std::string& g) {
  if (ngroups < groups.size()) {
    groups[ngroups++] = &g;
  } else {
    more_groups.push_back(&g);
  }
}

// ---------------------------------------------------------------------------------------------
PathPattern PathPattern::compile(const std::string& pattern) {
  PathPattern pp;
  Template t = Template::compile(pattern);
  if (t.has_placeholders()) {
    pp.is_dynamic = true;
    pp.dynamic = std::move(t);
    return pp;
  }
  std::string lp = to_lower(t.literal());
  pp.keep_slashes = lp.find("//") != std::string::npos;
  pp.escaped = lp.find('%') != std::string::npos;
  size_t stars = static_cast<size_t>(std::count(lp.begin(), lp.end(), '*'));
  if (lp == "*") {
    pp.mode = Mode::any;
  } else if (stars == 2 && lp.size() >= 2 && lp.front() == '*' && lp.back() == '*') {
    pp.mode = Mode::contains;
    pp.text = lp.substr(1, lp.size() - 2);
    return pp;
  } else if (stars == 1 && lp.front() == '*') {
    pp.mode = Mode::suffix;
    pp.text = lp.substr(1);
    return pp;
  } else if (stars == 1 && lp.back() == '*') {
    pp.mode = Mode::prefix;
    pp.text = lp.substr(0, lp.size() - 1);
    return pp;
  } else {
    pp.mode = Mode::glob;
  }
  pp.text = std::move(lp);
  return pp;
}

bool PathPattern::match(DispatchState& st) const {
  if (is_dynamic) {
    PathPattern resolved = compile(dynamic.str(st.ctx, Unknown::empty));
    return !resolved.is_dynamic && resolved.match(st);
  }
  if (mode == Mode::any) return true;
  std::string escaped_path;
  const std::string* subject = keep_slashes ? &st.lower_keep() : &st.lower_clean();
  if (escaped) {
    // Simplification of Caddy's escape-aware matching: compare against the lower-cased escaped
    // path, so "%2F" in a pattern matches an encoded slash and not a real one. Caddy also lets
    // a '%' wildcard stand for an escape sequence; that form is not supported.
    escaped_path = clean_path(to_lower(st.ctx.req.path), !keep_slashes);
    subject = &escaped_path;
  }
  const std::string& s = *subject;
  switch (mode) {
    case Mode::contains:
      return s.find(text) != std::string::npos;
    case Mode::suffix:
      return ends_with(s, text);
    case Mode::prefix:
      return starts_with(s, text);
    default:
      return glob_match(text, s);
  }
}

ValuePattern ValuePattern::compile(const std::string& v) {
  ValuePattern vp;
  Template t = Template::compile(v);
  if (t.has_placeholders()) {
    vp.is_dynamic = true;
    vp.dynamic = std::move(t);
    return vp;
  }
  const std::string& s = t.literal();
  if (s == "*") {
    vp.mode = Mode::any;
  } else if (s.size() >= 2 && s.front() == '*' && s.back() == '*') {
    vp.mode = Mode::contains;
    vp.text = s.substr(1, s.size() - 2);
  } else if (!s.empty() && s.front() == '*') {
    vp.mode = Mode::suffix;
    vp.text = s.substr(1);
  } else if (!s.empty() && s.back() == '*') {
    vp.mode = Mode::prefix;
    vp.text = s.substr(0, s.size() - 1);
  } else {
    vp.mode = Mode::exact;
    vp.text = s;
  }
  return vp;
}

bool ValuePattern::match(std::string_view actual, const RequestCtx& ctx) const {
  if (is_dynamic) {
    ValuePattern resolved = compile(dynamic.str(ctx, Unknown::empty));
    return !resolved.is_dynamic && resolved.match(actual, ctx);
  }
  switch (mode) {
    case Mode::any:
      return true;
    case Mode::contains:
      return actual.find(text) != std::string_view::npos;
    case Mode::suffix:
      return ends_with(actual, text);
    case Mode::prefix:
      return starts_with(actual, text);
    default:
      return actual == text;
  }
}

// ---------------------------------------------------------------------------------------------
bool CompiledMatcherSet::match(DispatchState& st) const {
  RequestCtx& ctx = st.ctx;
  const http::Request& r = ctx.req;

  if (!methods.empty() && std::find(methods.begin(), methods.end(), r.method) == methods.end()) {
    return false;
  }
  if (!hosts.empty()) {
    std::string_view host, port;
    split_host_port(r.authority.empty() ? std::string_view(r.host) : r.authority, host, port);
    bool any = false;
    for (const auto& h : hosts) {
      if (host_pattern_match(h, host)) {
        any = true;
        break;
      }
    }
    if (!any) return false;
  }
  if (!paths.empty()) {
    bool any = false;
    for (const auto& p : paths) {
      if (p.match(st)) {
        any = true;
        break;
      }
    }
    if (!any) return false;
  }
  for (const auto& h : headers) {
    bool present = field_present(ctx, h.field, h.is_host);
    if (h.absent) {
      if (present) return false;
      continue;
    }
    if (h.values.empty()) {
      if (!present) return false;
      continue;
    }
    bool ok = any_value(ctx, h.field, h.is_host, [&](std::string_view v) {
      for (const auto& vp : h.values) {
        if (vp.match(v, ctx)) return true;
      }
      return false;
    });
    if (!ok) return false;
  }
  if (has_query) {
    std::vector<std::pair<std::string, std::string>> parsed;
    if (!parse_query(r.query, parsed)) return false;
    // Caddy 2.6: any listed key whose first value matches one of its values (OR across keys);
    // no keys listed matches only a request without a query.
    bool ok = query.empty() && parsed.empty();
    for (const auto& [key, vals] : query) {
      // A named reference: clang 14 (the fuzz build) cannot capture a structured binding.
      const std::string& name = key;
      auto it = std::find_if(parsed.begin(), parsed.end(),
                             [&](const auto& kv) { return kv.first == name; });
      if (it == parsed.end()) continue;
      for (const auto& v : vals) {
        if (v == "*" || v == it->second) ok = true;
      }
      if (ok) break;
    }
    if (!ok) return false;
  }
  if (!protocol.empty() && !match_protocol(protocol, r)) return false;
  if (has_remote_ip && !in_ranges(std::string_view(r.remote_ip), remote_ip)) return false;
  if (has_client_ip &&
      !in_ranges(std::string_view(r.client_ip.empty() ? r.remote_ip : r.client_ip), client_ip)) {
    return false;
  }
  for (const auto& n : not_sets) {
    if (n.match(st)) return false;
  }
  // Regexes last: they record captures, which Caddy does only for a matcher that ran.
  for (const auto& c : path_regexp) {
    if (!match_regex(c, st.clean(), ctx)) return false;
  }
  for (const auto& c : header_regexp) {
    bool ok = any_value(ctx, c.field, c.is_host,
                        [&](std::string_view v) { return match_regex(c, v, ctx); });
    if (!ok) return false;
  }
  return true;
}

CompiledMatcherSet compile_matcher_set(const config::MatcherSet& ms, Errors& errors) {
  CompiledMatcherSet out;
  auto where = [&](const std::string& what) {
    std::string prefix = ms.name.empty() ? "matcher" : "matcher " + ms.name;
    errors.push_back(Error{ms.loc, prefix + ": " + what});
  };
  for (const auto& h : ms.host) out.hosts.push_back(to_lower(h));
  for (const auto& p : ms.path) out.paths.push_back(PathPattern::compile(p));
  out.methods = ms.method;
  for (const auto& [field, vals] : ms.header) {
    HeaderCond c;
    c.absent = !field.empty() && field.front() == '!';
    c.field = c.absent ? field.substr(1) : field;
    c.is_host = http::iequals(c.field, "Host");
    for (const auto& v : vals) c.values.push_back(ValuePattern::compile(v));
    out.headers.push_back(std::move(c));
  }
  if (!ms.query.empty()) {
    out.has_query = true;
    out.query = ms.query;
  }
  auto ranges = [&](const std::vector<std::string>& in, std::vector<IpRange>& dst,
                    const char* what) {
    for (const auto& s : in) {
      IpRange r;
      std::string why;
      if (!parse_range(s, r, &why)) {
        where(std::string(what) + ": " + why);
        continue;
      }
      dst.push_back(r);
    }
  };
  out.has_remote_ip = !ms.remote_ip.empty();
  ranges(ms.remote_ip, out.remote_ip, "remote_ip");
  out.has_client_ip = !ms.client_ip.empty();
  ranges(ms.client_ip, out.client_ip, "client_ip");
  if (ms.protocol) {
    static const char* kKnown[] = {"grpc",      "https",    "http",      "http/1.0",
                                   "http/1.0+", "http/1.1", "http/1.1+", "http/2",
                                   "http/2+",   "http/3",   "http/3+"};
    out.protocol = to_lower(*ms.protocol);
    if (std::none_of(std::begin(kKnown), std::end(kKnown),
                     [&](const char* k) { return out.protocol == k; })) {
      where("protocol: unknown protocol '" + *ms.protocol + "'");
    }
  }
  for (const auto& n : ms.not_sets) out.not_sets.push_back(compile_matcher_set(n, errors));
  for (const auto& pr : ms.path_regexp) {
    RegexCond c;
    c.name = pr.name.empty() ? "" : pr.name + ".";
    std::string why;
    if (!Regex::compile(pr.pattern, c.re, why)) {
      where("path_regexp: bad pattern '" + pr.pattern + "': " + why);
      continue;
    }
    out.path_regexp.push_back(std::move(c));
  }
  for (const auto& hr : ms.header_regexp) {
    RegexCond c;
    c.name = hr.name.empty() ? "" : hr.name + ".";
    c.field = hr.field;
    c.is_host = http::iequals(hr.field, "Host");
    std::string why;
    if (!Regex::compile(hr.pattern, c.re, why)) {
      where("header_regexp: bad pattern '" + hr.pattern + "': " + why);
      continue;
    }
    out.header_regexp.push_back(std::move(c));
  }
  return out;
}

}  // namespace hsp::engine
