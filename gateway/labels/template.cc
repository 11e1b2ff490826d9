#include "labels/template.h"

#include <algorithm>
#include <cctype>
#include <optional>
#include <variant>

namespace hsp::labels {

namespace {

// A value inside a pipeline. Go's int constants become int arguments; strings stay strings.
using Value = std::variant<std::string, int64_t>;

Error template_error(const std::string& message) {
  return Error{{}, "template: :1: " + message};
}

std::string to_text(const Value& v) {
  if (const auto* s = std::get_if<std::string>(&v)) return *s;
  return std::to_string(std::get<int64_t>(v));
}

// CDP's upstreams: each argument is applied to every target in the order given (a string is a
// scheme, an int a port); targets are sorted before and after.
std::string upstreams(const std::vector<Value>& args, const TemplateContext& context) {
  std::vector<std::string> targets = context.upstream_targets;
  std::sort(targets.begin(), targets.end());
  std::vector<std::string> out;
  out.reserve(targets.size());
  for (auto target : targets) {
    for (const auto& arg : args) {
      if (const auto* scheme = std::get_if<std::string>(&arg)) {
        target = *scheme + "://" + target;
      } else {
        target += ":" + std::to_string(std::get<int64_t>(arg));
      }
    }
    out.push_back(std::move(target));
  }
  std::sort(out.begin(), out.end());
  std::string joined;
  for (size_t i = 0; i < out.size(); ++i) {
    if (i) joined += ' ';
    joined += out[i];
  }
  return joined;
}

// Go's fmt.Sprint / Sprintln for strings and ints: Sprint puts a space between two operands
// when neither is a string; Sprintln always does and appends a newline.
std::string sprint(const std::vector<Value>& args, bool line) {
  std::string out;
  for (size_t i = 0; i < args.size(); ++i) {
    const bool both_ints = i > 0 && std::holds_alternative<int64_t>(args[i - 1]) &&
                           std::holds_alternative<int64_t>(args[i]);
    if (i > 0 && (line || both_ints)) out += ' ';
    out += to_text(args[i]);
  }
  if (line) out += '\n';
  return out;
}

// Go's fmt.Sprintf for the verbs %s, %d, %v and %%; other verbs are an error.
Result<Value> sprintf(const std::vector<Value>& args) {
  if (args.empty()) return template_error("wrong number of args for printf: want at least 1");
  const auto* format = std::get_if<std::string>(&args[0]);
  if (!format) return template_error("printf: the format must be a string");
  std::string out;
  size_t next = 1;
  for (size_t i = 0; i < format->size(); ++i) {
    const char c = (*format)[i];
    if (c != '%') {
      out += c;
      continue;
    }
    if (i + 1 >= format->size()) return template_error("printf: format ends with %");
    const char verb = (*format)[++i];
    if (verb == '%') {
      out += '%';
    } else if (verb == 's' || verb == 'd' || verb == 'v') {
      if (next >= args.size()) return template_error("printf: missing argument");
      out += to_text(args[next++]);
    } else {
      return template_error(std::string("printf: verb %") + verb + " is not supported yet");
    }
  }
  return Value{out};
}

class ActionParser {
 public:
  ActionParser(std::string_view text, const TemplateContext& context)
      : s_(text), context_(context) {}

  Result<std::string> run() {
    std::optional<Value> piped;
    bool any = false;
    while (true) {
      skip_space();
      if (pos_ >= s_.size()) {
        if (!any) return template_error("missing value for command");
        break;
      }
      auto value = command(piped);
      if (!value.ok()) return value.errors();
      piped = Value{std::move(*value)};
      any = true;
      skip_space();
      if (pos_ >= s_.size()) break;
      if (s_[pos_] != '|') return template_error("unexpected \"" + std::string(1, s_[pos_]) + "\"");
      ++pos_;
    }
    return to_text(*piped);
  }

 private:
  void skip_space() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }

  bool at_end_of_command() {
    skip_space();
    return pos_ >= s_.size() || s_[pos_] == '|';
  }

  // One operand: a literal, or an identifier naming a function.
  struct Operand {
    std::optional<Value> literal;
    std::string function;
  };

  Result<Operand> operand() {
    const char c = s_[pos_];
    if (c == '"') return quoted();
    if (c == '`') {
      const size_t end = s_.find('`', pos_ + 1);
      if (end == std::string_view::npos) return template_error("unterminated raw quoted string");
      Operand op;
      op.literal = std::string(s_.substr(pos_ + 1, end - pos_ - 1));
      pos_ = end + 1;
      return op;
    }
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '+') {
      size_t end = pos_ + 1;
      while (end < s_.size() && std::isalnum(static_cast<unsigned char>(s_[end]))) ++end;
      const std::string num(s_.substr(pos_, end - pos_));
      size_t used = 0;
      int64_t v = 0;
      bool ok = true;
      try {
        v = std::stoll(num, &used, 10);
      } catch (...) {
        ok = false;
      }
      // Floats, hex, octal, chars and complex numbers are Go literals we do not evaluate.
      if (!ok || used != num.size()) return template_error("unsupported number literal " + num);
      pos_ = end;
      Operand op;
      op.literal = v;
      return op;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t end = pos_ + 1;
      while (end < s_.size() &&
             (std::isalnum(static_cast<unsigned char>(s_[end])) || s_[end] == '_')) {
        ++end;
      }
      Operand op;
      op.function = std::string(s_.substr(pos_, end - pos_));
      pos_ = end;
      return op;
    }
    if (c == '.') return template_error("template data (\".\" and fields) is not supported yet");
    if (c == '$') return template_error("template variables are not supported yet");
    if (c == '(') return template_error("parenthesized pipelines are not supported yet");
    return template_error("unexpected \"" + std::string(1, c) + "\" in command");
  }

  Result<Operand> quoted() {
    std::string out;
    size_t i = pos_ + 1;
    while (true) {
      if (i >= s_.size() || s_[i] == '\n') return template_error("unterminated quoted string");
      const char c = s_[i];
      if (c == '"') break;
      if (c != '\\') {
        out += c;
        ++i;
        continue;
      }
      if (i + 1 >= s_.size()) return template_error("unterminated quoted string");
      const char e = s_[i + 1];
      i += 2;
      switch (e) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'v':
          out += '\v';
          break;
        case '\\':
          out += '\\';
          break;
        case '"':
          out += '"';
          break;
        case '\'':
          out += '\'';
          break;
        default:
          // \x, \u, \U and octal escapes: rare in labels, not decoded yet.
          return template_error(std::string("unsupported escape \\") + e + " in string literal");
      }
    }
    pos_ = i + 1;
    Operand op;
    op.literal = std::move(out);
    return op;
  }

  Result<Value> command(const std::optional<Value>& piped) {
    auto first = operand();
    if (!first.ok()) return first.errors();
    if (first->literal) {
      if (!at_end_of_command()) return template_error("can't give argument to non-function");
      if (piped) return template_error("can't give argument to non-function");
      return *first->literal;
    }
    std::vector<Value> args;
    while (!at_end_of_command()) {
      auto op = operand();
      if (!op.ok()) return op.errors();
      if (op->literal) {
        args.push_back(*op->literal);
        continue;
      }
      // Go calls a function named as an argument with no arguments (`upstreams https 80`).
      auto value = call(op->function, {});
      if (!value.ok()) return value.errors();
      args.push_back(*value);
    }
    if (piped) args.push_back(*piped);
    return call(first->function, args);
  }

  Result<Value> call(const std::string& name, const std::vector<Value>& args) {
    static const char* kKeywords[] = {"if",     "else",     "end",   "range", "with",
                                      "define", "template", "block", "break", "continue"};
    for (const char* k : kKeywords) {
      if (name == k) return template_error("\"" + name + "\" actions are not supported yet");
    }
    if (name == "nil") return template_error("nil is not a command");
    if (name == "true" || name == "false") {
      return template_error("boolean literals are not supported yet");
    }
    if (name == "print" || name == "println") return Value{sprint(args, name == "println")};
    if (name == "printf") return sprintf(args);
    static const char* kBuiltins[] = {"and", "call", "html", "index",    "slice", "js",
                                      "len", "not",  "or",   "urlquery", "eq",    "ge",
                                      "gt",  "le",   "lt",   "ne"};
    for (const char* b : kBuiltins) {
      if (name == b) return template_error("function \"" + name + "\" is not supported yet");
    }
    const bool known = context_.cdp_functions &&
                       (name == "upstreams" || name == "http" || name == "https" || name == "h2c");
    if (!known) {
      // With CDP's function set, Go would also know the sprig functions; none is implemented.
      return template_error("function \"" + name + "\" not defined" +
                            (context_.cdp_functions
                                 ? " (known: upstreams, http, https, h2c, print, println, "
                                   "printf; sprig functions are not supported yet)"
                                 : ""));
    }
    if (name == "upstreams") return Value{upstreams(args, context_)};
    if (!args.empty()) {
      return template_error("wrong number of args for " + name + ": want 0 got " +
                            std::to_string(args.size()));
    }
    return Value{name};
  }

  std::string_view s_;
  const TemplateContext& context_;
  size_t pos_ = 0;
};

// The `}}` that ends an action, skipping string literals so that `{{"}}"}}` works as in Go.
size_t find_close(std::string_view text, size_t pos) {
  while (pos + 1 < text.size()) {
    const char c = text[pos];
    if (c == '"') {
      ++pos;
      while (pos < text.size() && text[pos] != '"' && text[pos] != '\n') {
        pos += text[pos] == '\\' ? 2 : 1;
      }
      ++pos;
    } else if (c == '`') {
      const size_t end = text.find('`', pos + 1);
      if (end == std::string_view::npos) return std::string_view::npos;
      pos = end + 1;
    } else if (c == '}' && text[pos + 1] == '}') {
      return pos;
    } else {
      ++pos;
    }
  }
  return std::string_view::npos;
}

}  // namespace

Result<std::string> render_template(std::string_view text, const TemplateContext& context) {
  std::string out;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t open = text.find("{{", pos);
    if (open == std::string_view::npos) {
      out.append(text.substr(pos));
      break;
    }
    std::string_view literal = text.substr(pos, open - pos);
    size_t inner = open + 2;
    // `{{- ` trims the white space before the action.
    if (inner + 1 < text.size() && text[inner] == '-' &&
        std::isspace(static_cast<unsigned char>(text[inner + 1]))) {
      while (!literal.empty() && std::isspace(static_cast<unsigned char>(literal.back()))) {
        literal.remove_suffix(1);
      }
      inner += 2;
    }
    out.append(literal);
    const size_t close = find_close(text, inner);
    if (close == std::string_view::npos) return template_error("unclosed action");
    std::string_view action = text.substr(inner, close - inner);
    pos = close + 2;
    // ` -}}` trims the white space after it.
    if (action.size() >= 2 && action.back() == '-' &&
        std::isspace(static_cast<unsigned char>(action[action.size() - 2]))) {
      action.remove_suffix(2);
      while (pos < text.size() && std::isspace(static_cast<unsigned char>(text[pos]))) ++pos;
    }
    std::string_view trimmed = action;
    while (!trimmed.empty() && std::isspace(static_cast<unsigned char>(trimmed.front()))) {
      trimmed.remove_prefix(1);
    }
    while (!trimmed.empty() && std::isspace(static_cast<unsigned char>(trimmed.back()))) {
      trimmed.remove_suffix(1);
    }
    if (trimmed.starts_with("/*")) {
      if (!trimmed.ends_with("*/")) return template_error("unclosed comment");
      continue;
    }
    auto value = ActionParser(trimmed, context).run();
    if (!value.ok()) return value.errors();
    out += *value;
  }
  return out;
}

}  // namespace hsp::labels
