#include "labels/block.h"

#include <algorithm>
#include <memory>

namespace hsp::labels {

namespace {

const std::string kEmpty;

// Go reads the input rune by rune; an invalid byte is one U+FFFD rune. Returns the length.
size_t decode_rune(std::string_view s, size_t i, char32_t& out) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  auto cont = [&](size_t k) {
    return i + k < s.size() && (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
  };
  if (b0 < 0x80) {
    out = b0;
    return 1;
  }
  if (b0 >= 0xC2 && b0 <= 0xDF && cont(1)) {
    out = ((b0 & 0x1F) << 6) | (s[i + 1] & 0x3F);
    return 2;
  }
  if (b0 >= 0xE0 && b0 <= 0xEF && cont(1) && cont(2)) {
    char32_t c = ((b0 & 0x0F) << 12) | ((s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F);
    if (c >= 0x800 && (c < 0xD800 || c > 0xDFFF)) {
      out = c;
      return 3;
    }
  }
  if (b0 >= 0xF0 && b0 <= 0xF4 && cont(1) && cont(2) && cont(3)) {
    char32_t c = ((b0 & 0x07) << 18) | ((s[i + 1] & 0x3F) << 12) | ((s[i + 2] & 0x3F) << 6) |
                 (s[i + 3] & 0x3F);
    if (c >= 0x10000 && c <= 0x10FFFF) {
      out = c;
      return 4;
    }
  }
  out = 0xFFFD;
  return 1;
}

void append_rune(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

// Go's unicode.IsSpace.
bool is_space(char32_t c) {
  switch (c) {
    case '\t':
    case '\n':
    case '\v':
    case '\f':
    case '\r':
    case ' ':
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

bool is_matcher_token(const std::string& value) {
  return value == "*" || value.starts_with('/') || value.starts_with('@');
}

const std::string& matcher_of(const Block& block) {
  static const std::string star = "*";
  if (block.keys.size() <= 1 || !is_matcher_token(block.keys[1])) return star;
  return block.keys[1];
}

void write_key(std::string& out, const std::string& key) {
  if (key.find_first_of("\n\"") != std::string::npos) {
    out += '`';
    for (char c : key) {
      if (c == '`') out += '\\';
      out += c;
    }
    out += '`';
  } else if (key.find(' ') != std::string::npos) {
    // No `"` can be inside here (caught above), so there is nothing to escape.
    out += '"';
    out += key;
    out += '"';
  } else {
    out += key;
  }
}

void write_block(std::string& out, const Block& block, int level, const PrintOptions& options) {
  out.append(static_cast<size_t>(level), '\t');
  bool need_space = false;
  for (const auto& key : block.keys) {
    if (need_space) out += ' ';
    write_key(out, key);
    need_space = true;
  }
  const bool braces = !block.children.empty() ||
                      (level == 0 && options.braces_for_empty_top_level && !block.keys.empty());
  if (braces) {
    if (need_space) out += ' ';
    out += "{\n";
    for (const auto& child : block.children) write_block(out, child, level + 1, options);
    out.append(static_cast<size_t>(level), '\t');
    out += '}';
  }
  out += '\n';
}

}  // namespace

bool Block::is_snippet() const {
  return keys.size() == 1 && keys[0].starts_with('(') && keys[0].ends_with(')');
}

bool Block::is_matcher() const {
  return !keys.empty() && keys[0].starts_with('@');
}

const std::string& Block::first_key() const {
  return keys.empty() ? kEmpty : keys[0];
}

std::vector<Token> tokenize(std::string_view text) {
  std::vector<Token> tokens;
  size_t pos = 0;
  if (text.empty()) return tokens;
  {
    char32_t first = 0;
    size_t n = decode_rune(text, 0, first);
    if (first == 0xFEFF) pos = n;
  }
  int line = 1;
  int skipped_lines = 0;
  // One call of CDP's lexer.next() per iteration of the outer loop.
  while (true) {
    std::string val;
    bool has_val = false;  // Go's len(val) > 0, counted in runes
    bool comment = false, quoted = false, bt_quoted = false, escaped = false;
    int token_line = line;
    bool produced = false;
    while (true) {
      if (pos >= text.size()) {
        if (has_val) produced = true;
        break;
      }
      char32_t ch = 0;
      pos += decode_rune(text, pos, ch);
      if (!escaped && !bt_quoted && ch == '\\') {
        escaped = true;
        continue;
      }
      if (quoted || bt_quoted) {
        if (quoted && escaped) {
          if (ch != '"') val += '\\';
          escaped = false;
        } else {
          if ((quoted && ch == '"') || (bt_quoted && ch == '`')) {
            produced = true;
            break;
          }
        }
        if (ch == '\n') {
          line += 1 + skipped_lines;
          skipped_lines = 0;
        }
        append_rune(val, ch);
        has_val = true;
        continue;
      }
      if (is_space(ch)) {
        if (ch == '\r') continue;
        if (ch == '\n') {
          if (escaped) {
            ++skipped_lines;
            escaped = false;
          } else {
            line += 1 + skipped_lines;
            skipped_lines = 0;
          }
          comment = false;
        }
        if (has_val) {
          produced = true;
          break;
        }
        continue;
      }
      if (ch == '#' && !has_val) comment = true;
      if (comment) continue;
      if (!has_val) {
        token_line = line;
        if (ch == '"') {
          quoted = true;
          continue;
        }
        if (ch == '`') {
          bt_quoted = true;
          continue;
        }
      }
      if (escaped) {
        val += '\\';
        escaped = false;
      }
      append_rune(val, ch);
      has_val = true;
    }
    if (!produced) break;
    tokens.push_back(Token{std::move(val), token_line});
  }
  return tokens;
}

namespace {

// Pointer-stable tree for parsing: CDP keeps a pointer to the current block even after its
// container was closed on the same line (`a { b } c` puts b and c on a's key list), and that
// must keep working while siblings are appended.
struct Node {
  std::vector<std::string> keys;
  int64_t order = kDefaultOrder;
  std::vector<std::unique_ptr<Node>> children;
};

Blocks to_blocks(std::vector<std::unique_ptr<Node>>& nodes) {
  Blocks out;
  out.reserve(nodes.size());
  for (auto& node : nodes) {
    Block block;
    block.keys = std::move(node->keys);
    block.order = node->order;
    block.children = to_blocks(node->children);
    out.push_back(std::move(block));
  }
  return out;
}

}  // namespace

Result<Blocks> parse_caddyfile(std::string_view text) {
  if (text.empty()) return Error{{}, "empty Caddyfile"};
  const auto tokens = tokenize(text);
  std::vector<std::unique_ptr<Node>> root;
  std::vector<std::vector<std::unique_ptr<Node>>*> stack{&root};
  bool new_block = true;
  int token_line = -1;
  Node* current = nullptr;
  for (const auto& token : tokens) {
    if (token.line != token_line) {
      if (token_line != -1) new_block = true;
      token_line = token.line;
    }
    if (token.text == "}") {
      if (stack.size() == 1) {
        return Error{{}, "Unexpected token '}' at line " + std::to_string(token.line)};
      }
      stack.pop_back();
      continue;
    }
    if (new_block) {
      auto* parent = stack.back();
      auto node = std::make_unique<Node>();
      node->order = static_cast<int64_t>(parent->size());
      current = node.get();
      parent->push_back(std::move(node));
      new_block = false;
    }
    if (token.text == "{") {
      stack.push_back(&current->children);
    } else {
      current->keys.push_back(token.text);
      token_line += static_cast<int>(std::count(token.text.begin(), token.text.end(), '\n'));
    }
  }
  return to_blocks(root);
}

int compare_blocks(const Block& a, const Block& b) {
  if (a.is_global() != b.is_global()) return a.is_global() ? -1 : 1;
  if (a.is_snippet() != b.is_snippet()) return a.is_snippet() ? -1 : 1;
  if (a.is_matcher() != b.is_matcher()) return a.is_matcher() ? -1 : 1;
  if (a.order != b.order) return a.order < b.order ? -1 : 1;
  const size_t common = std::min(a.keys.size(), b.keys.size());
  for (size_t i = 0; i < common; ++i) {
    if (a.keys[i] != b.keys[i]) return a.keys[i] < b.keys[i] ? -1 : 1;
  }
  if (a.keys.size() != b.keys.size()) return a.keys.size() < b.keys.size() ? -1 : 1;
  const size_t common_children = std::min(a.children.size(), b.children.size());
  for (size_t i = 0; i < common_children; ++i) {
    const int c = compare_blocks(a.children[i], b.children[i]);
    if (c != 0) return c;
  }
  if (a.children.size() != b.children.size()) {
    return a.children.size() < b.children.size() ? -1 : 1;
  }
  return 0;
}

void sort_blocks(Blocks& blocks) {
  for (auto& block : blocks) sort_blocks(block.children);
  std::stable_sort(blocks.begin(), blocks.end(),
                   [](const Block& a, const Block& b) { return compare_blocks(a, b) < 0; });
}

std::string print_blocks(const Blocks& blocks, const PrintOptions& options) {
  std::string out;
  for (const auto& block : blocks) write_block(out, block, 0, options);
  return out;
}

std::string print_block(const Block& block, const PrintOptions& options) {
  std::string out;
  write_block(out, block, 0, options);
  return out;
}

std::string marshal(Blocks& blocks, const PrintOptions& options) {
  sort_blocks(blocks);
  return print_blocks(blocks, options);
}

namespace {

// Merges b into a when CDP would: true when it did.
bool merge_into(Block& a, Block& b) {
  const std::string& first = b.first_key();
  if (a.first_key() != first) return false;
  if ((first == "reverse_proxy" || first == "php_fastcgi") && matcher_of(a) == matcher_of(b)) {
    for (size_t k = 1; k < b.keys.size(); ++k) {
      if (k > 1 || !is_matcher_token(b.keys[k])) a.keys.push_back(b.keys[k]);
    }
    merge(a.children, std::move(b.children));
    return true;
  }
  if (a.keys == b.keys) {
    merge(a.children, std::move(b.children));
    return true;
  }
  return false;
}

}  // namespace

void merge(Blocks& into, Blocks from) {
  for (auto& b : from) {
    bool merged = false;
    for (size_t i = 0; i < into.size() && !merged; ++i) merged = merge_into(into[i], b);
    if (!merged) into.push_back(std::move(b));
  }
}

void Merger::add(Blocks from) {
  for (auto& b : from) {
    auto& same_first = index_[b.first_key()];
    bool merged = false;
    for (size_t i = 0; i < same_first.size() && !merged; ++i) {
      merged = merge_into(blocks_[same_first[i]], b);
    }
    if (!merged) {
      same_first.push_back(blocks_.size());
      blocks_.push_back(std::move(b));
    }
  }
}

}  // namespace hsp::labels
