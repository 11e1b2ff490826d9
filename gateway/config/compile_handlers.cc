// Handler directives other than reverse_proxy: respond, redir, header, request_body, rewrite,
// uri, handle, handle_path and route, plus the site-level `bind` and `log`.
#include <algorithm>
#include <cctype>
#include <string>
#include <utility>
#include <vector>

#include "config/compile_internal.h"

namespace hsp::config::compile_detail {
namespace {

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

}  // namespace

// ---------------------------------------------------------------------------------------------
// Header operations, shared by `header` and reverse_proxy's header_up/header_down.

HeaderOps OpsAcc::finish() const {
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

void OpsAcc::upsert_set(const HeaderOp& op) {
  for (auto& s : set) {
    if (s.field == op.field) {
      s = op;
      return;
    }
  }
  set.push_back(op);
}

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
    acc.upsert_set(op);
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
    acc.upsert_set(op);
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Handlers.

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
      ok &= size_arg(sub, out.max_size, false);
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
    wrong_arg_count(d);
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

bool Compiler::rewrite(const Directive& d, size_t first, Rewrite& out) {
  if (!arg_count(d, first, 1, 1) || !no_block(d)) return false;
  out.uri = d.args[first].text;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Blocks of directives: handle, route, handle_path.

void Compiler::handle_or_route(const Directive& d, size_t first,
                               const std::vector<MatcherSet>& match, const MatcherDefs& defs,
                               std::vector<RouteVal>& out) {
  if (!arg_count(d, first, 0, 0)) return;
  std::vector<RouteVal> vals = nested(d, defs);
  Subroute sub;
  if (d.name.text == "handle") {
    sub = build_subroute(std::move(vals));
  } else {
    // `route` keeps the written order (Caddy: parseRoute); only handler directives are allowed
    // inside, which nested() enforces by passing no SiteExtras.
    for (auto& v : vals) sub.routes.push_back(std::move(v.route));
  }
  add_route(out, d, match, std::move(sub));
}

// handle_path is `handle` with a path matcher whose prefix is stripped first.
void Compiler::handle_path(const Directive& d, const MatcherDefs& defs,
                           std::vector<RouteVal>& out) {
  if (d.args.empty()) {
    wrong_arg_count(d);
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
}

// ---------------------------------------------------------------------------------------------
// Site-level directives: bind and log.

void Compiler::bind(const Directive& d, SiteExtras& extras) {
  if (!arg_count(d, 0, 1, 1000000) || !no_block(d)) return;
  for (const auto& a : d.args) {
    std::string h = a.text;
    if (h.find('/') != std::string::npos) {
      error(a, "bind with a network ('" + h + "') is not supported yet by hsp-gateway");
      continue;
    }
    if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
    extras.bind.push_back(h);
  }
}

bool Compiler::site_log(const Directive& d, AccessLog& log) {
  if (!arg_count(d, 0, 0, 0)) return false;
  log.enabled = true;
  bool ok = true;
  for (const auto& sub : d.block) {
    const std::string& n = sub.name.text;
    if (n == "output") {
      ok &= log_output(sub, log);
    } else if (n == "format") {
      std::string f;
      if (!one_arg(sub, f)) {
        ok = false;
      } else if (f != "json" && f != "console") {
        error(sub.args[0], "log format '" + f + "' is not supported yet by hsp-gateway");
        ok = false;
      } else {
        log.format = f;
      }
    } else if (n == "level") {
      std::string lvl;
      if (one_arg(sub, lvl))
        log.level = upper(lvl);
      else
        ok = false;
    } else {
      error(sub.name, "unrecognized log subdirective: " + n);
      ok = false;
    }
  }
  return ok;
}

bool Compiler::log_output(const Directive& sub, AccessLog& log) {
  if (sub.args.empty()) {
    wrong_arg_count(sub);
    return false;
  }
  const std::string& o = sub.args[0].text;
  if (o == "stdout" || o == "stderr" || o == "discard") {
    log.output = o;
    return arg_count(sub, 0, 1, 1) && no_block(sub);
  }
  if (o != "file") {
    error(sub.args[0], "log output '" + o + "' is not supported yet by hsp-gateway");
    return false;
  }
  if (!arg_count(sub, 0, 2, 2)) return false;
  if (sub.has_block) {
    // Rotation (roll_size, roll_keep, ...) needs a rotating writer we do not have yet;
    // accepting the options and not rotating would fill disks silently.
    error(sub.block_open, "log file rotation options are not supported yet by hsp-gateway");
    return false;
  }
  log.output = "file";
  log.file = sub.args[1].text;
  return true;
}

}  // namespace hsp::config::compile_detail
