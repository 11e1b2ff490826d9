#include "caddyfile/lexer.h"

#include <cstdlib>

namespace hsp::caddyfile {

bool getenv_lookup(const std::string& name, std::string& value) {
  const char* v = std::getenv(name.c_str());
  if (v == nullptr) return false;
  value = v;
  return true;
}

std::string substitute_env(std::string_view s, EnvLookup env) {
  std::string out;
  size_t pos = 0;
  while (true) {
    size_t begin = s.find("{$", pos);
    if (begin == std::string_view::npos) break;
    size_t end = s.find('}', begin + 2);
    if (end == std::string_view::npos) break;
    out.append(s.substr(pos, begin - pos));
    std::string_view inner = s.substr(begin + 2, end - begin - 2);
    pos = end + 1;
    if (inner.empty()) {  // "{$}" is not a variable; keep it as written
      out.append("{$}");
      continue;
    }
    size_t colon = inner.find(':');
    std::string name(inner.substr(0, colon));
    std::string value;
    bool found = env != nullptr && env(name, value);
    if (!found) value = colon == std::string_view::npos ? "" : std::string(inner.substr(colon + 1));
    out += value;
  }
  out.append(s.substr(pos));
  return out;
}

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

bool is_marker_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

// Length of the line break at i ("\n" or "\r\n"), 0 when there is none.
size_t newline_at(std::string_view t, size_t i) {
  if (i < t.size() && t[i] == '\n') return 1;
  if (i + 1 < t.size() && t[i] == '\r' && t[i + 1] == '\n') return 2;
  return 0;
}

class Lexer {
 public:
  Lexer(std::string_view text, const std::string& filename, EnvLookup env)
      : t_(text), file_(filename), env_(env) {}

  LexOutput run() {
    // Generated Caddyfiles run to megabytes; one token per ~8 bytes avoids regrowing (and
    // moving every token) a dozen times.
    out_.tokens.reserve(t_.size() / 8 + 16);
    if (t_.substr(0, 3) == "\xEF\xBB\xBF") i_ = line_begin_ = 3;  // UTF-8 byte order mark
    while (i_ < t_.size() && out_.errors.empty()) step();
    out_.eof = here();
    return std::move(out_);
  }

 private:
  SourceLoc here() const { return SourceLoc{file_, line_, static_cast<int>(i_ - line_begin_) + 1}; }

  void newline(size_t len) {
    i_ += len;
    ++line_;
    line_begin_ = i_;
  }

  void fail(const SourceLoc& loc, std::string msg) {
    out_.errors.push_back(Error{loc, std::move(msg)});
  }

  void step() {
    char c = t_[i_];
    if (c == '\n') {
      newline(1);
      at_line_start_ = true;
      return;
    }
    if (is_space(c)) {
      ++i_;
      return;
    }
    if (c == '\\' && newline_at(t_, i_ + 1) > 0) {  // line continuation: not a new line
      ++i_;
      newline(newline_at(t_, i_));
      return;
    }
    if (c == '#') {
      while (i_ < t_.size() && t_[i_] != '\n') ++i_;
      return;
    }
    SourceLoc start = here();
    Token::Quote quote = Token::Quote::none;
    std::string text;
    bool ok;
    if (c == '"') {
      quote = Token::Quote::dquote;
      ok = double_quoted(start, text);
    } else if (c == '`') {
      quote = Token::Quote::backtick;
      ok = backtick(start, text);
    } else if (c == '<' && heredoc_start()) {
      quote = Token::Quote::heredoc;
      ok = heredoc(start, text);
    } else {
      ok = plain(text);
    }
    if (!ok) return;
    LexToken tok;
    tok.open_brace = quote == Token::Quote::none && text == "{";
    tok.close_brace = quote == Token::Quote::none && text == "}";
    tok.token.loc = std::move(start);
    tok.token.quote = quote;
    std::string value = substitute_env(text, env_);
    tok.raw = std::move(text);
    if (quote != Token::Quote::none || tok.raw.find("{$") == std::string::npos) {
      tok.token.text = std::move(value);
      emit(std::move(tok));
      return;
    }
    // An unquoted token with variables splits on the whitespace of their values, and vanishes
    // when they are empty, as when Caddy 2.6 substituted before lexing: `{$DOMAINS} {` with
    // DOMAINS="a.com b.com" gives two addresses. Values cannot open or close blocks, though.
    size_t p = 0;
    while (true) {
      while (p < value.size() && is_space(value[p])) ++p;
      if (p >= value.size()) break;
      size_t e = p;
      while (e < value.size() && !is_space(value[e])) ++e;
      LexToken piece = tok;
      piece.token.text = value.substr(p, e - p);
      emit(std::move(piece));
      p = e;
    }
  }

  void emit(LexToken tok) {
    tok.line_start = at_line_start_;
    at_line_start_ = false;
    out_.tokens.push_back(std::move(tok));
  }

  bool plain(std::string& text) {
    // `\<<` keeps a literal "<<" token from being read as a heredoc.
    if (t_.substr(i_, 3) == "\\<<") ++i_;
    while (i_ < t_.size() && !is_space(t_[i_])) {
      if (t_[i_] == '\\' && newline_at(t_, i_ + 1) > 0) break;  // continuation ends the token
      // {$VAR:default with spaces} stays in one piece, as when Caddy 2.6 substituted before
      // lexing (and as users write it: {$ADDR:http://a.com, https://a.com}).
      if (t_.substr(i_, 2) == "{$") {
        size_t close = t_.find_first_of("}\n", i_ + 2);
        if (close != std::string_view::npos && t_[close] == '}') {
          text.append(t_.substr(i_, close + 1 - i_));
          i_ = close + 1;
          continue;
        }
      }
      text += t_[i_++];
    }
    return true;
  }

  bool double_quoted(const SourceLoc& start, std::string& text) {
    ++i_;
    while (i_ < t_.size()) {
      char ch = t_[i_];
      if (ch == '"') {
        ++i_;
        return true;
      }
      if (ch == '\\' && i_ + 1 < t_.size()) {
        char nx = t_[i_ + 1];
        if (nx == '"') {
          text += '"';
          i_ += 2;
          continue;
        }
        if (newline_at(t_, i_ + 1) > 0) {
          ++i_;
          text += '\n';
          newline(newline_at(t_, i_));
          continue;
        }
        // Any other escape stays as written, and `\\` must not let the next `\` escape a quote.
        text += ch;
        text += nx;
        i_ += 2;
        continue;
      }
      text += ch;
      if (ch == '\n') {
        newline(1);
      } else {
        ++i_;
      }
    }
    fail(start, "unclosed quote: the '\"' opened at " + start.str() + " is never closed");
    return false;
  }

  bool backtick(const SourceLoc& start, std::string& text) {
    ++i_;
    while (i_ < t_.size()) {
      char ch = t_[i_];
      if (ch == '`') {
        ++i_;
        return true;
      }
      text += ch;
      if (ch == '\n') {
        newline(1);
      } else {
        ++i_;
      }
    }
    fail(start, "unclosed quote: the '`' opened at " + start.str() + " is never closed");
    return false;
  }

  // At "<<": a heredoc only when the token runs straight into the end of the line (or file);
  // "<<x y" on one line is an ordinary token, as in Caddy.
  bool heredoc_start() const {
    if (t_.substr(i_, 2) != "<<") return false;
    size_t j = i_;
    while (j < t_.size() && !is_space(t_[j])) ++j;
    return j == t_.size() || newline_at(t_, j) > 0;
  }

  bool heredoc(const SourceLoc& start, std::string& text) {
    size_t j = i_;
    while (j < t_.size() && !is_space(t_[j])) ++j;
    std::string word(t_.substr(i_, j - i_));
    std::string marker = word.substr(2);
    if (marker.empty()) {
      fail(start, "found '<<', expected a heredoc marker such as <<END");
      return false;
    }
    if (marker[0] == '<') {
      fail(start,
           "found '" + word + "', expected a heredoc marker after exactly two '<', e.g. <<END");
      return false;
    }
    for (char ch : marker) {
      if (!is_marker_char(ch)) {
        fail(start,
             "heredoc marker '" + marker + "' may contain only letters, digits, '-' and '_'");
        return false;
      }
    }
    i_ = j;
    if (i_ >= t_.size()) {
      fail(start, "heredoc marker '" + marker + "' never closed (opened at " + start.str() + ")");
      return false;
    }
    newline(newline_at(t_, i_));

    std::vector<std::string_view> lines;
    std::vector<int> line_numbers;
    while (i_ < t_.size()) {
      size_t e = t_.find('\n', i_);
      if (e == std::string_view::npos) e = t_.size();
      std::string_view l = t_.substr(i_, e - i_);
      if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
      size_t ws = 0;
      while (ws < l.size() && (l[ws] == ' ' || l[ws] == '\t')) ++ws;
      std::string_view rest = l.substr(ws);
      if (rest.substr(0, marker.size()) == marker &&
          (rest.size() == marker.size() || is_space(rest[marker.size()]))) {
        std::string_view padding = l.substr(0, ws);
        if (!strip_padding(lines, line_numbers, padding, marker, text)) return false;
        i_ += ws + marker.size();  // lexing goes on after the marker: `MARKER 200`
        return true;
      }
      lines.push_back(l);
      line_numbers.push_back(line_);
      if (e == t_.size()) {
        i_ = e;
      } else {
        i_ = e;
        newline(1);
      }
    }
    fail(start, "heredoc marker '" + marker + "' never closed (opened at " + start.str() + ")");
    return false;
  }

  bool strip_padding(const std::vector<std::string_view>& lines, const std::vector<int>& numbers,
                     std::string_view padding, const std::string& marker, std::string& text) {
    for (size_t k = 0; k < lines.size(); ++k) {
      std::string_view l = lines[k];
      if (k > 0) text += '\n';
      if (l.substr(0, padding.size()) == padding) {
        text.append(l.substr(padding.size()));
        continue;
      }
      // Blank lines need not carry the indentation (editors strip trailing blanks).
      if (l.find_first_not_of(" \t") == std::string_view::npos) continue;
      fail(SourceLoc{file_, numbers[k], 1},
           "heredoc <<" + marker + ": this line does not start with the closing marker's " +
               "indentation (" + std::to_string(padding.size()) + " whitespace bytes)");
      return false;
    }
    return true;
  }

  std::string_view t_;
  const std::string& file_;
  EnvLookup env_;
  size_t i_ = 0;
  size_t line_begin_ = 0;
  int line_ = 1;
  bool at_line_start_ = true;
  LexOutput out_;
};

}  // namespace

LexOutput lex(std::string_view text, const std::string& filename, EnvLookup env) {
  return Lexer(text, filename, env).run();
}

}  // namespace hsp::caddyfile
