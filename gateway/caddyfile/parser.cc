// Caddyfile parser: lexer tokens to server blocks, with Caddy 2.7's structure rules.
//
// Imports work like Caddy's: an `import` at the start of a line is replaced, in the token
// stream, by the snippet's or files' tokens (after {args[...]} substitution), and parsing goes
// on from the first inserted token. So an import may bring whole site blocks at the top level,
// directives inside a site, or sub-directives inside a directive block. Each inserted token
// remembers the chain of imports that brought it (ImportSite), which gives both cycle detection
// and the "imported via" part of error messages.
//
// Where this is stricter than Caddy 2.6/2.7 (clear errors instead of odd parses):
//   - `}` must be alone at the start of its line, and nothing may follow it on that line
//     (Caddy appends tokens after a `}` to the enclosing directive);
//   - a site block without braces is accepted only when it is the only site block;
//   - an imported file must leave its braces balanced.
// Where it is more lenient: {args[N:M]} slices out of range are clamped (Caddy keeps the
// placeholder text and logs a warning), and a heredoc closes only on a line holding the marker.
// Known gaps: Caddy 2.7 named routes `&(name)` and 2.8 import blocks ({block}) are not
// supported; `&(name) {` parses as a site block whose address the compiler rejects.
#include <glob.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>

#include "caddyfile/ast.h"
#include "caddyfile/lexer.h"

namespace hsp::caddyfile {
namespace {

namespace fs = std::filesystem;

constexpr int kMaxNesting = 64;
constexpr size_t kMaxErrors = 50;

struct ImportSite {
  std::string key;   // "snippet:name" or "file:/canonical/path": what was imported
  std::string desc;  // "Caddyfile:3:3 import common": where and how
  std::shared_ptr<const ImportSite> parent;
  int depth = 1;
};
using SitePtr = std::shared_ptr<const ImportSite>;

struct PTok {
  LexToken lt;
  SitePtr via;  // null when written in the main file

  const std::string& text() const { return lt.token.text; }
  const SourceLoc& loc() const { return lt.token.loc; }
  bool plain() const { return lt.token.quote == Token::Quote::none; }
};

struct Snippet {
  std::vector<PTok> tokens;
  SourceLoc loc;
};

std::string shown(const PTok& t) {
  std::string s;
  const std::string& text = t.lt.raw;
  size_t limit = 60;
  for (size_t i = 0; i < text.size() && i < limit; ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      s += "\\n";
    } else if (c < 0x20 || c == 0x7f) {
      static const char* hex = "0123456789abcdef";
      s += "\\x";
      s += hex[c >> 4];
      s += hex[c & 15];
    } else {
      s += static_cast<char>(c);
    }
  }
  if (text.size() > limit) s += "...";
  switch (t.lt.token.quote) {
    case Token::Quote::none:
      return "'" + s + "'";
    case Token::Quote::dquote:
      return "'\"" + s + "\"'";
    case Token::Quote::backtick:
      return "'`" + s + "`'";
    case Token::Quote::heredoc:
      return "a heredoc";
  }
  return s;
}

std::string via_suffix(const SitePtr& via) {
  if (!via) return "";
  std::string s = " (imported via " + via->desc;
  for (SitePtr p = via->parent; p; p = p->parent) s += ", via " + p->desc;
  return s + ")";
}

bool read_file(const std::string& path, std::string& out, std::string& why) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    why = std::strerror(errno);
    return false;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) {
    why = "read error";
    return false;
  }
  out = ss.str();
  return true;
}

// {args[N:M]} as a token of its own expands to arguments N..M-1 (either bound optional).
bool variadic(const std::string& text, size_t argc, size_t& from, size_t& to) {
  constexpr std::string_view open = "{args[", close = "]}";
  if (text.size() < open.size() + close.size() + 1 || text.compare(0, open.size(), open) != 0 ||
      text.compare(text.size() - close.size(), close.size(), close) != 0) {
    return false;
  }
  std::string_view inner(text);
  inner = inner.substr(open.size(), text.size() - open.size() - close.size());
  size_t colon = inner.find(':');
  if (colon == std::string_view::npos) return false;
  auto number = [](std::string_view s, size_t dflt, size_t& v) {
    if (s.empty()) {
      v = dflt;
      return true;
    }
    if (s.size() > 6) return false;
    v = 0;
    for (char c : s) {
      if (c < '0' || c > '9') return false;
      v = v * 10 + (c - '0');
    }
    return true;
  };
  if (!number(inner.substr(0, colon), 0, from) || !number(inner.substr(colon + 1), argc, to)) {
    return false;
  }
  to = std::min(to, argc);
  from = std::min(from, to);
  return true;
}

// N when text is exactly {args[N]} or {args.N}, else SIZE_MAX.
size_t exact_arg(const std::string& text) {
  bool brackets = text.rfind("{args[", 0) == 0;
  bool dot = text.rfind("{args.", 0) == 0;
  std::string_view tail = brackets ? "]}" : "}";
  if ((!brackets && !dot) || text.size() < 6 + tail.size() + 1 ||
      text.size() > 6 + tail.size() + 6 ||
      text.compare(text.size() - tail.size(), tail.size(), tail) != 0) {
    return SIZE_MAX;
  }
  size_t n = 0;
  for (size_t i = 6; i < text.size() - tail.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return SIZE_MAX;
    n = n * 10 + (text[i] - '0');
  }
  return n;
}

// Replaces {args[N]} and Caddy 2.6's {args.N}; an index out of range stays as written, as in
// Caddy (which also logs a warning we have no channel for).
std::string replace_args(const std::string& text, const std::vector<std::string>& args) {
  if (text.find("{args") == std::string::npos) return text;
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    size_t p = text.find("{args", i);
    if (p == std::string::npos) break;
    out.append(text, i, p - i);
    size_t q = p + 5;
    char sep = q < text.size() ? text[q] : '\0';
    char end = sep == '[' ? ']' : '}';
    size_t d = q + 1;
    size_t idx = 0;
    size_t digits = 0;
    while (d < text.size() && digits < 7 && text[d] >= '0' && text[d] <= '9') {
      idx = idx * 10 + (text[d] - '0');
      ++d;
      ++digits;
    }
    bool shape = (sep == '[' || sep == '.') && digits > 0 && d < text.size() && text[d] == end &&
                 (sep == '.' || (d + 1 < text.size() && text[d + 1] == '}'));
    if (shape && idx < args.size()) {
      out += args[idx];
      i = d + (sep == '[' ? 2 : 1);
    } else {
      out.append(text, p, 5);
      i = p + 5;
    }
  }
  out.append(text, i, std::string::npos);
  return out;
}

class Parser {
 public:
  Parser(const std::string& filename, const ParseOptions& opts)
      : file_name_(filename), opts_(opts) {
    fs::path f(filename);
    base_dir_ = opts.base_dir;
    if (base_dir_.empty()) base_dir_ = f.has_parent_path() ? f.parent_path().string() : ".";
    std::error_code ec;
    fs::path root = f.is_absolute() ? f : fs::path(base_dir_) / f.filename();
    root_key_ = "file:" + fs::weakly_canonical(root, ec).string();
  }

  Result<File> run(const std::string& text) {
    LexOutput lo = lex(text, file_name_, opts_.env);
    if (!lo.errors.empty()) return lo.errors;
    eof_ = lo.eof;
    toks_.reserve(lo.tokens.size());
    for (auto it = lo.tokens.rbegin(); it != lo.tokens.rend(); ++it) {
      toks_.push_back(PTok{std::move(*it), nullptr});
    }
    top_level();
    if (!errors_.empty()) return errors_;
    return std::move(file_);
  }

 private:
  // The token stream is stored reversed: the current token is the last element, so consuming
  // is a pop and an import splices in its tokens at the end, at a cost proportional to what it
  // brings rather than to the size of the whole stream.
  bool eof() const { return fatal_ || toks_.empty(); }
  PTok& peek() { return toks_.back(); }
  void advance() { toks_.pop_back(); }
  PTok* ahead(size_t n) { return toks_.size() > n ? &toks_[toks_.size() - 1 - n] : nullptr; }
  // True when the current line has no more tokens.
  bool at_eol() { return eof() || peek().lt.line_start; }
  bool is_import(const PTok& t) const {
    return t.lt.line_start && t.plain() && t.lt.raw == "import";
  }

  void add_error(SourceLoc loc, std::string msg) {
    if (fatal_) return;
    if (errors_.size() + 1 >= kMaxErrors) {
      errors_.push_back(Error{std::move(loc), "too many errors; stopping here"});
      fatal_ = true;
      return;
    }
    errors_.push_back(Error{std::move(loc), std::move(msg)});
  }
  void error_at(const PTok& t, const std::string& msg) {
    add_error(t.loc(), msg + via_suffix(t.via));
  }
  void eof_error(const std::string& expected) {
    add_error(eof_, "unexpected end of file, expected " + expected);
  }

  Token to_token(const PTok& t) const {
    Token out = t.lt.token;
    for (SitePtr p = t.via; p; p = p->parent) out.imported_from.push_back(p->desc);
    std::reverse(out.imported_from.begin(), out.imported_from.end());
    return out;
  }

  // Skips the rest of the current line (with the current token when `current`), and the whole
  // block a skipped `{` opens, so that one mistake gives one error.
  void skip_line(bool current) {
    int depth = 0;
    bool first = true;
    while (!eof()) {
      const LexToken& t = peek().lt;
      if (t.line_start && depth <= 0 && !(first && current)) break;
      first = false;
      if (t.open_brace) ++depth;
      if (t.close_brace) --depth;
      advance();
    }
  }

  void expect_eol(const char* after) {
    if (at_eol()) return;
    error_at(peek(), "found " + shown(peek()) + ", expected end of line after '" + after + "'");
    skip_line(false);
  }

  void top_level() {
    while (!eof()) {
      PTok& t = peek();
      if (!t.lt.line_start) {  // only after error recovery
        error_at(t, "found " + shown(t) + ", expected end of line");
        skip_line(true);
      } else if (is_import(t)) {
        import(true);
      } else if (t.lt.open_brace) {
        global_options();
      } else if (t.lt.close_brace) {
        error_at(t, "found '}', expected a site address or snippet (no block is open here)");
        skip_line(true);
      } else if (snippet_start()) {
        snippet();
      } else {
        site_block();
      }
    }
  }

  void global_options() {
    PTok open = peek();
    advance();
    if (seen_site_ || file_.has_global_options) {
      error_at(open,
               "found '{', expected a site address (a block without addresses is the global "
               "options block, which must come first and only once)");
      std::vector<Directive> discard;
      open_block(open, 1, discard);
      return;
    }
    file_.has_global_options = true;
    file_.global_options.loc = open.loc();
    open_block(open, 1, file_.global_options.directives);
  }

  bool snippet_start() {
    const PTok& t = peek();
    const std::string& s = t.text();
    return t.plain() && s.size() >= 3 && s.front() == '(' && s.back() == ')' && ahead(1) &&
           ahead(1)->lt.open_brace && !ahead(1)->lt.line_start;
  }

  void snippet() {
    PTok name = peek();
    std::string sname = name.text().substr(1, name.text().size() - 2);
    PTok open = *ahead(1);
    advance();
    advance();
    if (!at_eol() && !skip_one_line_block()) return;
    Snippet sn{{}, name.loc()};
    int depth = 1;
    while (true) {
      if (eof()) {
        eof_error("'}' to close snippet '" + sname + "' opened at " + open.loc().str());
        return;
      }
      PTok& t = peek();
      if (t.lt.open_brace) ++depth;
      if (t.lt.close_brace && --depth == 0) {
        if (!t.lt.line_start) {
          error_at(t, "found '}', expected end of line ('}' closes a block only on its own line)");
        }
        advance();
        expect_eol("}");
        break;
      }
      sn.tokens.push_back(t);
      advance();
    }
    auto [it, inserted] = snippets_.emplace(sname, std::move(sn));
    if (!inserted) {
      error_at(name, "snippet '" + sname + "' is already defined at " + it->second.loc.str());
    }
  }

  void site_block() {
    ServerBlock sb;
    sb.loc = peek().loc();
    bool expecting = false;
    bool braces = false;
    PTok open;
    PTok last;
    while (true) {
      PTok& t = peek();
      if (t.lt.open_brace) {
        if (expecting) error_at(t, "found '{', expected another site address after ','");
        braces = true;
        open = t;
        advance();
        break;
      }
      if (t.lt.close_brace) {
        error_at(t, "found '}', expected a site address");
        skip_line(true);
        return;
      }
      const std::string& v = t.text();
      if (t.plain() && v.size() > 1 && v.back() == '{') {
        error_at(t, "found " + shown(t) +
                        ", expected a site address (put a space between the address and '{')");
        // Read on as if the space were there, so the block's `}` is not reported as well.
        sb.keys.push_back(to_token(t));
        sb.keys.back().text.pop_back();
        braces = true;
        open = t;
        advance();
        break;
      }
      if (t.plain() && !v.empty() && v.front() == '@') {
        error_at(t, "found " + shown(t) +
                        ", expected a site address (named matchers are defined inside a site "
                        "block)");
        skip_line(true);
        return;
      }
      std::string addr = v;
      expecting = !addr.empty() && addr.back() == ',';
      if (expecting) addr.pop_back();
      if (!addr.empty()) {
        sb.keys.push_back(to_token(t));
        sb.keys.back().text = addr;
      }
      last = t;
      advance();
      if (eof()) {
        if (expecting) eof_error("another site address after ','");
        break;
      }
      if (!expecting && peek().lt.line_start) break;
    }
    if (!braces && !eof() && peek().lt.open_brace) {
      error_at(peek(),
               "found '{' at the start of a line, expected it at the end of the site "
               "address line (e.g. 'example.com {')");
      open = peek();
      advance();
      braces = true;
    }
    if (braces) {
      if (sb.keys.empty()) {
        error_at(open, "found '{', expected a site address before it");
      }
      open_block(open, 1, sb.directives);
    } else {
      if (seen_site_) {
        error_at(last, "found end of line after " + shown(last) +
                           ", expected '{' (only a Caddyfile with a single site block may leave "
                           "out the braces)");
      }
      unbraced_body(sb.directives);
    }
    seen_site_ = true;
    file_.blocks.push_back(std::move(sb));
  }

  // The `{` was just consumed. Checks that it ended its line, then reads the block.
  void open_block(const PTok& open, int depth, std::vector<Directive>& out) {
    if (!at_eol() && !skip_one_line_block()) return;
    block_body(open, depth, out);
  }

  // After a `{` with more on its line: reports it and skips the rest of the line. Returns
  // false when a one-line block `{ a b }` closed there (nothing more to read for it), true
  // when the block goes on below.
  bool skip_one_line_block() {
    error_at(peek(), "found " + shown(peek()) +
                         ", expected end of line after '{' (a block's contents start on the "
                         "next line)");
    int net = 1;
    while (!at_eol()) {
      if (peek().lt.open_brace) ++net;
      if (peek().lt.close_brace) --net;
      advance();
    }
    return net > 0;
  }

  void block_body(const PTok& open, int depth, std::vector<Directive>& out) {
    if (depth > kMaxNesting) {
      error_at(open, "blocks nested more than " + std::to_string(kMaxNesting) + " levels deep");
      fatal_ = true;
      return;
    }
    while (true) {
      if (eof()) {
        if (!fatal_) eof_error("'}' to close the block opened at " + open.loc().str());
        return;
      }
      PTok& t = peek();
      if (t.lt.close_brace) {
        advance();
        expect_eol("}");
        return;
      }
      if (is_import(t)) {
        import(false);
        continue;
      }
      directive(depth, out);
    }
  }

  void unbraced_body(std::vector<Directive>& out) {
    while (!eof()) {
      PTok& t = peek();
      if (t.lt.close_brace) {
        error_at(t, "found '}', expected a directive (no block is open here)");
        skip_line(true);
      } else if (is_import(t)) {
        import(false);
      } else {
        directive(1, out, false);
      }
    }
  }

  // `braced`: the enclosing block has a `{` (false for a site written without braces).
  void directive(int depth, std::vector<Directive>& out, bool braced = true) {
    PTok& t = peek();
    if (t.lt.open_brace) {
      error_at(t,
               "found '{' at the start of a line, expected a directive (a block's '{' goes at "
               "the end of the line that names it)");
      skip_line(true);
      return;
    }
    Directive d;
    d.name = to_token(t);
    std::optional<PTok> last;  // the line's last token, when it is not a block's `{`
    if (at_eol_after_current()) last = t;
    advance();
    while (!at_eol()) {
      PTok& a = peek();
      if (a.lt.open_brace) {
        PTok open = a;
        advance();
        d.has_block = true;
        d.block_open = open.loc();
        open_block(open, depth + 1, d.block);
        break;
      }
      if (a.lt.close_brace) {
        error_at(a, "found '}', expected end of line ('}' closes a block only on its own line)");
        if (!braced) {
          advance();
          continue;
        }
        a.lt.line_start = true;  // let the enclosing block close here, as the writer meant
        break;
      }
      if (a.plain() && a.lt.raw == "{}" && (!ahead(1) || ahead(1)->lt.line_start)) {
        error_at(a,
                 "found '{}', expected end of line (to open a block put '{' here and '}' on a "
                 "later line; quote \"{}\" to mean the text)");
        advance();
        continue;
      }
      d.args.push_back(to_token(a));
      if (at_eol_after_current()) last = a;
      advance();
    }
    if (!d.has_block && last && glued_open_brace(*last)) {
      // `handle{` or `reverse_proxy x{`: read on as if the space were there.
      error_at(*last, "found " + shown(*last) +
                          ", expected a space before '{' (a block opens with a '{' of its own)");
      Token& tok = d.args.empty() ? d.name : d.args.back();
      tok.text.pop_back();
      d.has_block = true;
      d.block_open = last->loc();
      d.block_open.col += static_cast<int>(last->lt.raw.size()) - 1;
      block_body(*last, depth + 1, d.block);
    }
    out.push_back(std::move(d));
  }

  bool at_eol_after_current() {
    const PTok* next = ahead(1);
    return next == nullptr || next->lt.line_start;
  }

  // A plain token ending in an unmatched `{`: a block opener missing its space. Placeholders
  // such as {host} have their braces matched and are left alone.
  static bool glued_open_brace(const PTok& t) {
    const std::string& r = t.lt.raw;
    return t.plain() && r.size() > 1 && r.back() == '{' &&
           std::count(r.begin(), r.end(), '{') > std::count(r.begin(), r.end(), '}');
  }

  // --- import ------------------------------------------------------------------------------

  struct Group {
    std::string key;
    std::vector<PTok> tokens;
    bool file = false;
  };

  void import(bool top_level) {
    PTok imp = peek();
    advance();
    std::vector<std::string> words;
    std::vector<Token::Quote> quotes;
    while (!at_eol()) {
      if (peek().lt.open_brace) {
        error_at(peek(), "found '{', expected end of line (import takes no block)");
        skip_line(false);
        return;
      }
      words.push_back(peek().text());
      quotes.push_back(peek().lt.token.quote);
      advance();
    }
    if (words.empty()) {
      error_at(imp, "found end of line, expected a snippet name or file path after 'import'");
      return;
    }
    const std::string& target = words[0];
    std::vector<std::string> args(words.begin() + 1, words.end());
    std::vector<Token::Quote> arg_quotes(quotes.begin() + 1, quotes.end());
    int depth = imp.via ? imp.via->depth : 0;
    if (depth >= opts_.max_import_depth) {
      error_at(imp, "import " + target + ": imports nested more than " +
                        std::to_string(opts_.max_import_depth) + " levels deep");
      return;
    }
    std::vector<Group> groups;
    if (auto it = snippets_.find(target); it != snippets_.end()) {
      groups.push_back(Group{"snippet:" + target, it->second.tokens, false});
    } else if (!import_files(imp, target, groups)) {
      return;
    }
    std::string desc = imp.loc().str() + " import";
    for (size_t i = 0; i < words.size(); ++i) {
      bool q = quotes[i] != Token::Quote::none || words[i].empty() ||
               words[i].find_first_of(" \t\n") != std::string::npos;
      desc += q ? " \"" + words[i] + "\"" : " " + words[i];
    }

    std::vector<PTok> spliced;
    for (Group& g : groups) {
      if (in_chain(imp, g.key)) {
        error_at(imp, "import cycle: " + describe_key(g.key) +
                          " is imported again while it is being imported");
        return;
      }
      auto site = std::make_shared<ImportSite>(ImportSite{g.key, desc, imp.via, depth + 1});
      substitute(g, args, arg_quotes, top_level && g.file, site, spliced);
    }
    produced_ += spliced.size();
    if (produced_ > opts_.max_tokens) {
      error_at(imp, "import " + target + ": the imports expand to more than " +
                        std::to_string(opts_.max_tokens) + " tokens");
      fatal_ = true;
      return;
    }
    for (auto it = spliced.rbegin(); it != spliced.rend(); ++it) toks_.push_back(std::move(*it));
  }

  static std::string describe_key(const std::string& key) {
    if (key.rfind("snippet:", 0) == 0) return "snippet '" + key.substr(8) + "'";
    return "file '" + key.substr(5) + "'";
  }

  bool in_chain(const PTok& imp, const std::string& key) const {
    if (key == root_key_) return true;
    for (SitePtr p = imp.via; p; p = p->parent) {
      if (p->key == key) return true;
    }
    return false;
  }

  void substitute(Group& g, const std::vector<std::string>& args,
                  const std::vector<Token::Quote>& arg_quotes, bool keep_snippets,
                  const SitePtr& site, std::vector<PTok>& out) {
    // A file imported at the top level may define snippets; their {args} belong to their own
    // imports later, so they are left alone (Caddy does the same).
    int snippet_depth = 0;
    bool pending_line_start = true;  // the first inserted token starts a line
    for (size_t i = 0; i < g.tokens.size(); ++i) {
      PTok t = std::move(g.tokens[i]);
      t.via = site;
      if (keep_snippets) {
        if (snippet_depth == 0 && t.lt.line_start && t.plain() && t.text().size() >= 3 &&
            t.text().front() == '(' && t.text().back() == ')' && i + 1 < g.tokens.size() &&
            g.tokens[i + 1].lt.open_brace && !g.tokens[i + 1].lt.line_start) {
          if (pending_line_start) t.lt.line_start = true;
          pending_line_start = false;
          out.push_back(std::move(t));
          snippet_depth = -1;  // armed: the `{` that follows opens the snippet body
          continue;
        }
        if (snippet_depth != 0) {
          if (t.lt.open_brace)
            snippet_depth = snippet_depth < 0 ? 1 : snippet_depth + 1;
          else if (t.lt.close_brace)
            --snippet_depth;
          out.push_back(std::move(t));
          continue;
        }
      }
      size_t from, to;
      if (t.plain() && variadic(t.text(), args.size(), from, to)) {
        bool line_start = t.lt.line_start || pending_line_start;
        pending_line_start = line_start && from == to;
        for (size_t k = from; k < to; ++k) {
          PTok c = t;
          c.lt.token.text = args[k];
          c.lt.token.quote = arg_quotes[k];
          c.lt.line_start = line_start && k == from;
          out.push_back(std::move(c));
        }
        continue;
      }
      // A token that is exactly one argument takes over how the argument was quoted.
      if (size_t k = exact_arg(t.text()); t.plain() && k < args.size()) {
        t.lt.token.quote = arg_quotes[k];
      }
      t.lt.token.text = replace_args(t.text(), args);
      if (pending_line_start) t.lt.line_start = true;
      pending_line_start = false;
      out.push_back(std::move(t));
    }
  }

  std::string dir_of(const PTok& t) const {
    if (!t.via && t.loc().file == file_name_) return base_dir_;
    fs::path p(t.loc().file);
    return p.has_parent_path() ? p.parent_path().string() : ".";
  }

  bool import_files(const PTok& imp, const std::string& target, std::vector<Group>& groups) {
    if (target.empty() || target.find('\0') != std::string::npos) {
      error_at(imp, "import: found " + shown(imp) + " with an empty or invalid file path");
      return false;
    }
    fs::path pattern(target);
    if (pattern.is_relative()) pattern = fs::path(dir_of(imp)) / pattern;
    std::string full = pattern.string();
    std::vector<std::string> matches;
    if (full.find_first_of("*?[") == std::string::npos) {
      struct stat st;
      if (::stat(full.c_str(), &st) != 0) {
        error_at(imp, "import: no snippet or file named '" + target +
                          "' (no snippet of that name is defined above this line, and " + full +
                          " does not exist)");
        return false;
      }
      if (S_ISDIR(st.st_mode)) {
        error_at(imp, "import: '" + full + "' is a directory (use a glob such as dir/*)");
        return false;
      }
      // Devices and pipes (/dev/zero, a FIFO) could block or never end.
      if (!S_ISREG(st.st_mode)) {
        error_at(imp, "import: '" + full + "' is not a regular file");
        return false;
      }
      matches.push_back(full);
    } else {
      glob_t g{};
      int rc = ::glob(full.c_str(), 0, nullptr, &g);
      if (rc == 0) {
        for (size_t i = 0; i < g.gl_pathc; ++i) {
          struct stat st;
          if (::stat(g.gl_pathv[i], &st) != 0 || !S_ISREG(st.st_mode)) continue;
          matches.emplace_back(g.gl_pathv[i]);
        }
      }
      ::globfree(&g);
      // No match is not an error for a glob (Caddy only warns): `import conf.d/*` may be empty.
    }
    for (const std::string& path : matches) {
      std::string text, why;
      if (!read_file(path, text, why)) {
        error_at(imp, "import: cannot read '" + path + "': " + why);
        return false;
      }
      std::string suffix =
          " (imported via " + imp.loc().str() + " import " + target + via_suffix(imp.via) + ")";
      LexOutput lo = lex(text, path, opts_.env);
      for (Error& e : lo.errors) add_error(e.loc, e.message + suffix);
      if (!lo.errors.empty()) return false;
      if (!balanced(lo, suffix)) return false;
      std::error_code ec;
      Group grp{"file:" + fs::weakly_canonical(path, ec).string(), {}, true};
      for (LexToken& t : lo.tokens) grp.tokens.push_back(PTok{std::move(t), nullptr});
      groups.push_back(std::move(grp));
    }
    return true;
  }

  // An imported file must close every block it opens; otherwise its `{` would swallow the
  // importing file's text and the error would show up far from its cause.
  bool balanced(const LexOutput& lo, const std::string& suffix) {
    std::vector<const LexToken*> open;
    for (const LexToken& t : lo.tokens) {
      if (t.open_brace) open.push_back(&t);
      if (t.close_brace) {
        if (open.empty()) {
          add_error(t.token.loc,
                    "found '}', expected a directive (no block is open here)" + suffix);
          return false;
        }
        open.pop_back();
      }
    }
    if (!open.empty()) {
      add_error(lo.eof, "unexpected end of file, expected '}' to close the block opened at " +
                            open.back()->token.loc.str() + suffix);
      return false;
    }
    return true;
  }

  const std::string& file_name_;
  const ParseOptions& opts_;
  std::string base_dir_;
  std::string root_key_;
  SourceLoc eof_;
  std::vector<PTok> toks_;  // reversed: the current token is back()
  size_t produced_ = 0;     // tokens brought in by imports so far, against opts_.max_tokens
  bool fatal_ = false;
  bool seen_site_ = false;
  std::map<std::string, Snippet> snippets_;
  Errors errors_;
  File file_;
};

}  // namespace

Error error_at(const Token& token, const std::string& message) {
  std::string msg = message;
  for (size_t i = token.imported_from.size(); i-- > 0;) {
    msg += (i + 1 == token.imported_from.size() ? " (imported via " : ", via ") +
           token.imported_from[i];
  }
  if (!token.imported_from.empty()) msg += ")";
  return Error{token.loc, std::move(msg)};
}

Result<File> parse(const std::string& text, const std::string& filename, const ParseOptions& opts) {
  return Parser(filename, opts).run(text);
}

Result<File> parse_file(const std::string& path, const ParseOptions& opts) {
  std::string text, why;
  if (!read_file(path, text, why)) {
    return Error{SourceLoc{path, 0, 0}, "cannot read the Caddyfile: " + why};
  }
  return parse(text, path, opts);
}

}  // namespace hsp::caddyfile
