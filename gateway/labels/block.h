// caddy-docker-proxy's (CDP) Caddyfile block model: the tree that labels are translated into,
// printed, merged across sources and validated block by block. Everything here mirrors CDP's
// caddyfile package byte for byte (tokenizer, line-based parser, sort order, printing, merge),
// because users compare our generated Caddyfile with CDP's; see docs/label-dialect.md §1a.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "util/error.h"

namespace hsp::labels {

// The order of a block without an `N_` prefix: CDP uses Go's math.MaxInt32.
inline constexpr int64_t kDefaultOrder = 2147483647;

// A global options block (no keys), a snippet (`(name)`), a site, a matcher, a directive or a
// sub-directive. Printed as `keys... {` children `}`, or as a bare line without children.
struct Block {
  std::vector<std::string> keys;
  int64_t order = kDefaultOrder;
  std::vector<Block> children;

  bool is_global() const { return keys.empty(); }
  bool is_snippet() const;
  bool is_matcher() const;
  const std::string& first_key() const;
};

using Blocks = std::vector<Block>;

// One token of CDP's lexer (a copy of Caddy's pre-2.7 lexer: no heredocs, `#` comments, `"…"`
// with only `\"` as escape, backtick raw strings). line is 1-based.
struct Token {
  std::string text;
  int line = 0;
};

// Tokenizes like CDP's lexer, including its odd corners (unterminated quotes run to the end,
// a quote inside a token is literal, a leading BOM is dropped).
std::vector<Token> tokenize(std::string_view text);

// CDP's line-based Caddyfile parser (caddyfile.Unmarshal): every new source line starts a block,
// `{` opens its children, `}` closes; a block's order is its position among its siblings.
// Errors: "Unexpected token '}' at line N" (CDP's text), and an empty input (CDP's lexer
// refuses to load nothing).
Result<Blocks> parse_caddyfile(std::string_view text);

// CDP's recursive stable sort: global blocks, snippets, matchers first; then order; then keys
// as byte strings; then fewer keys; then children pairwise; then fewer children.
void sort_blocks(Blocks& blocks);
int compare_blocks(const Block& a, const Block& b);

struct PrintOptions {
  // CDP prints a top-level block without children as a bare line (`example.com`), which Caddy
  // reads as a site running to the end of the file: every later site becomes its directives.
  // With this on (our default) such a block is printed `example.com {` `}` instead. Off gives
  // CDP's exact bytes.
  bool braces_for_empty_top_level = true;
};

// Prints without sorting. Tokens with a newline or `"` are wrapped in backticks, tokens with a
// space in double quotes, others raw; one tab per level.
std::string print_blocks(const Blocks& blocks, const PrintOptions& options = {});
std::string print_block(const Block& block, const PrintOptions& options = {});

// Sorts, then prints (CDP's Marshal).
std::string marshal(Blocks& blocks, const PrintOptions& options = {});

// Merges `from` into `into` as CDP merges sources that share a site: equal key lists merge
// recursively; `reverse_proxy`/`php_fastcgi` with the same matcher concatenate their upstream
// lists; everything else is appended.
void merge(Blocks& into, Blocks from);

// merge() for many sources: the same result, with the top-level blocks indexed by first key so
// that merging N services costs N lookups instead of N² comparisons.
class Merger {
 public:
  void add(Blocks from);
  Blocks take() { return std::move(blocks_); }

 private:
  Blocks blocks_;
  std::unordered_map<std::string, std::vector<size_t>> index_;
};

}  // namespace hsp::labels
