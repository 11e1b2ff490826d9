// Matchers: named definitions (`@name ...` lines and blocks), inline matcher tokens (`*`, a path,
// `@name`) and the matcher types hsp-gateway supports, including `not`.
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "config/address.h"
#include "config/compile_internal.h"

namespace hsp::config::compile_detail {

// One matcher line: `name` with its arguments from args[from]. `with_block` is the line's
// directive when it may carry a block (only `not` takes one).
void Compiler::matcher(MatcherSet& ms, const Token& name, const std::vector<Token>& args,
                       size_t from, const Directive* with_block) {
  const std::string& n = name.text;
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
  if (with_block && with_block->has_block) {
    error(with_block->block_open, "malformed " + n + " matcher: blocks are not supported");
    return;
  }
  if (n == "path") {
    for (size_t i = from; i < args.size(); ++i) ms.path.push_back(args[i].text);
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
    header_matcher(ms, name, args, from);
  } else if (n == "header_regexp") {
    header_regexp_matcher(ms, name, args, from);
  } else if (n == "query") {
    query_matcher(ms, name, args, from);
  } else if (n == "remote_ip" || n == "client_ip") {
    auto& out = n == "remote_ip" ? ms.remote_ip : ms.client_ip;
    for (size_t i = from; i < args.size(); ++i) {
      const Token& t = args[i];
      if (t.text == "forwarded") {
        error(t,
              "remote_ip forwarded is not supported: use the client_ip matcher with the "
              "trusted_proxies server option");
      } else {
        ip_range(t, out, n);
      }
    }
  } else if (n == "protocol") {
    if (nargs != 1) {
      error(name, "expected exactly one protocol");
      return;
    }
    ms.protocol = args[from].text;
  } else {
    static const std::set<std::string> caddy_matchers = {"expression", "file", "vars",
                                                         "vars_regexp"};
    if (caddy_matchers.count(n)) {
      error(name, "matcher '" + n + "' is not supported yet by hsp-gateway");
    } else {
      error(name, "unknown matcher '" + n + "': Caddy 2.6 has no such matcher");
    }
  }
}

// header: "Field value...", "!Field" (absent); values for the same field accumulate.
void Compiler::header_matcher(MatcherSet& ms, const Token& name, const std::vector<Token>& args,
                              size_t from) {
  size_t nargs = args.size() - from;
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
}

// header_regexp: [name] field pattern; one per field in a matcher set.
void Compiler::header_regexp_matcher(MatcherSet& ms, const Token& name,
                                     const std::vector<Token>& args, size_t from) {
  size_t nargs = args.size() - from;
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
}

// query: key=value pairs; repeated keys accumulate values.
void Compiler::query_matcher(MatcherSet& ms, const Token& name, const std::vector<Token>& args,
                             size_t from) {
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

}  // namespace hsp::config::compile_detail
