// The part of Go's text/template that label values use (docs/label-dialect.md §1a.3, §1a.7):
// text with `{{ pipeline }}` actions (trim markers `{{-`/`-}}`, comments), string, raw-string
// and integer literals, function calls and `|` pipes. Functions: CDP's `upstreams`, `http`,
// `https`, `h2c` when enabled; Go's `print`, `println`, `printf` (%s %d %v). What is missing and
// errors out (naming the function or construct): sprig functions, the other Go built-ins,
// `.`/fields (template data), variables, if/range/with/define, parentheses.
// That covers every value in conformance/wild/; each missing piece costs the labels of the one
// service that uses it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "util/error.h"

namespace hsp::labels {

struct TemplateContext {
  // CDP's generator defines upstreams/http/https/h2c; its caddyfile package tests do not.
  bool cdp_functions = true;
  // What `{{upstreams}}` expands: task/container IPs or service names.
  std::vector<std::string> upstream_targets;
};

// Expands one label value. The error message starts with "template: " like Go's and names the
// function or construct at fault.
Result<std::string> render_template(std::string_view text, const TemplateContext& context);

}  // namespace hsp::labels
