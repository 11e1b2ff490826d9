// Caddyfile lexer: text to tokens, with Caddy 2.7's rules. Internal to the caddyfile area (the
// parser and the tests use it); everything else goes through parse() in ast.h.
//
//   - Tokens split on whitespace. A token's line_start says it is the first on its line, which
//     is how the parser ends a directive at the end of a line.
//   - "double quotes": `\"` is a quote and `\<newline>` a newline; any other backslash stays as
//     written (`"\d"` is `\d`, `"\\"` is `\\`), as in Caddy, so regexes survive unchanged.
//   - `backticks`: raw, no escapes at all.
//   - `#` starts a comment only at the start of a token (`a#b` is one token).
//   - Heredocs `<<MARKER` (marker followed directly by the end of the line) up to a line
//     holding only indentation and MARKER; that indentation is stripped from every line, and
//     lexing continues after the marker on the closing line (`MARKER 200`).
//   - `\` at the end of a line continues the line; `\<<` at the start of a token is a literal
//     `<<`, not a heredoc.
//   - {$VAR} and {$VAR:default} are substituted per token after lexing. A `{$...}` span may
//     hold spaces (`{$ADDR:a.com b.com}`). In a quoted token the value stays one token; in an
//     unquoted one it splits on whitespace and an empty value leaves no token, which is what
//     Caddy 2.6 gives by substituting before lexing (`{$DOMAINS} {` with two domains works).
//     Unlike 2.6, a value can never open or close a block, and positions stay those of the
//     text as written. (Caddy 2.7 keeps unquoted values as one token: a value with spaces is
//     one address there.)
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "caddyfile/ast.h"
#include "util/error.h"

namespace hsp::caddyfile {

struct LexToken {
  Token token;
  bool line_start = false;   // first token on its logical line (continuations join lines)
  bool open_brace = false;   // written as an unquoted `{` (decided before any substitution)
  bool close_brace = false;  // written as an unquoted `}`
  std::string raw;           // text before env substitution (placeholders for error messages)
};

struct LexOutput {
  std::vector<LexToken> tokens;
  Errors errors;  // lexing stops at the first error
  SourceLoc eof;  // just past the last byte, for "unexpected end of file" errors
};

LexOutput lex(std::string_view text, const std::string& filename, EnvLookup env);

// Replaces {$VAR} and {$VAR:default} in s. A variable that is set (even to "") wins over the
// default; an unset one without a default becomes "". Replacement values are not rescanned.
std::string substitute_env(std::string_view s, EnvLookup env);

}  // namespace hsp::caddyfile
