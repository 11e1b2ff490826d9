// The Caddyfile as parsed: server blocks of directives, after lexing, environment substitution,
// snippet and file imports. Nothing here knows what a directive means; config/compile.h does.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "util/error.h"

namespace hsp::caddyfile {

struct Token {
  enum class Quote { none, dquote, backtick, heredoc };

  std::string text;  // unquoted, unescaped, env-substituted
  SourceLoc loc;     // where the token starts in its (possibly imported) file
  Quote quote = Quote::none;
  // Snippet/import chain, innermost last, e.g. {"Caddyfile:3:3 import common"}; empty when the
  // token was written in place. Used to explain errors in imported text.
  std::vector<std::string> imported_from;

  bool quoted() const { return quote != Quote::none; }
};

// One directive line with its arguments and, if it has one, its `{ ... }` block.
//   reverse_proxy @api 127.0.0.1:9000 {      name = reverse_proxy, args = [@api, 127.0.0.1:9000]
//       lb_policy first                       block[0] = {name = lb_policy, args = [first]}
//   }
struct Directive {
  Token name;
  std::vector<Token> args;
  bool has_block = false;
  SourceLoc block_open;  // position of `{` when has_block
  std::vector<Directive> block;
};

struct ServerBlock {
  std::vector<Token> keys;  // site addresses (or empty for the global options block)
  std::vector<Directive> directives;
  SourceLoc loc;  // where the block starts
};

struct File {
  bool has_global_options = false;
  ServerBlock global_options;       // keys empty
  std::vector<ServerBlock> blocks;  // site blocks, in written order, snippets removed
};

// Looks up environment variables for {$VAR} and {$VAR:default}. The default reads getenv.
using EnvLookup = bool (*)(const std::string& name, std::string& value);
bool getenv_lookup(const std::string& name, std::string& value);

struct ParseOptions {
  EnvLookup env = getenv_lookup;
  // Directory that `import <file-or-glob>` paths are relative to. Empty: the directory of the
  // file being parsed, or the current directory for in-memory text.
  std::string base_dir;
  int max_import_depth = 16;
  // Upper bound on the tokens brought in by imports (the file's own tokens do not count).
  // Snippets that import another snippet twice each grow exponentially without any cycle;
  // this turns that into an error instead of exhausting memory.
  size_t max_tokens = 500'000;
};

// Parses Caddyfile text. `filename` is used in error positions. On failure, every error found
// is returned (at least one), each as "file:line:col: found 'tok', expected ...".
Result<File> parse(const std::string& text, const std::string& filename,
                   const ParseOptions& opts = {});

// An error about a token, worded like the parser's own: at the token's position, followed by
// " (imported via <innermost import>, via <next> ...)" when imported text is involved. For
// the config compiler, so that its errors explain imported text the same way.
Error error_at(const Token& token, const std::string& message);

// Reads and parses a file from disk.
Result<File> parse_file(const std::string& path, const ParseOptions& opts = {});

}  // namespace hsp::caddyfile
