#include "labels/labels.h"

#include <cctype>
#include <memory>
#include <optional>

namespace hsp::labels {

namespace {

// Stands in for `\.` while a key is split; CDP uses the same byte.
constexpr char kEscapedDot = '\0';

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

struct ParsedPath {
  std::string parent;  // raw (with `\.` restored); empty for a root
  int64_t order = kDefaultOrder;
  std::string name;  // with `\.` turned into `.`
};

// CDP's ^(?:(.+)\.)?(?:(\d+)_)?([^.]+?)(?:_(\d+))?$ applied to the key with `\.` replaced.
// Where CDP's regex fails to match (and CDP panics) this returns nothing.
std::optional<ParsedPath> parse_path(const std::string& raw) {
  std::string path;
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\\' && i + 1 < raw.size() && raw[i + 1] == '.') {
      path += kEscapedDot;
      ++i;
    } else {
      path += raw[i];
    }
  }
  ParsedPath out;
  std::string segment = path;
  const size_t dot = path.rfind('.');
  if (dot != std::string::npos) {
    // (.+) needs at least one character and, being Go's `.`, no newline.
    if (dot == 0 || path.substr(0, dot).find('\n') != std::string::npos) return std::nullopt;
    out.parent = path.substr(0, dot);
    segment = path.substr(dot + 1);
  }
  if (segment.empty()) return std::nullopt;
  std::string_view rest = segment;
  const size_t underscore = rest.find('_');
  if (underscore != std::string_view::npos && underscore + 1 < rest.size() &&
      all_digits(rest.substr(0, underscore))) {
    // Go's strconv.Atoi saturates on overflow.
    const std::string digits(rest.substr(0, underscore));
    try {
      out.order = std::stoll(digits);
    } catch (...) {
      out.order = INT64_MAX;
    }
    rest.remove_prefix(underscore + 1);
  }
  const size_t last = rest.rfind('_');
  if (last != std::string_view::npos && last > 0 && all_digits(rest.substr(last + 1))) {
    rest = rest.substr(0, last);
  }
  out.name = std::string(rest);
  for (auto& c : out.name) {
    if (c == kEscapedDot) c = '.';
  }
  std::string parent;
  for (char c : out.parent) {
    if (c == kEscapedDot) {
      parent += "\\.";
    } else {
      parent += c;
    }
  }
  out.parent = std::move(parent);
  return out;
}

struct Node {
  std::vector<std::string> keys;
  int64_t order = kDefaultOrder;
  std::vector<Node*> children;  // creation order
};

Blocks to_blocks(const std::vector<Node*>& nodes) {
  Blocks out;
  for (const Node* node : nodes) {
    Block block;
    block.keys = node->keys;
    block.order = node->order;
    block.children = to_blocks(node->children);
    out.push_back(std::move(block));
  }
  return out;
}

class TreeBuilder {
 public:
  // Creates the block for `path` and its missing parents. nullptr: malformed somewhere.
  Node* get_or_create(const std::string& path) {
    if (auto it = by_path_.find(path); it != by_path_.end()) return it->second;
    auto parsed = parse_path(path);
    if (!parsed) return nullptr;
    Node* parent = nullptr;
    if (!parsed->parent.empty()) {
      parent = get_or_create(parsed->parent);
      if (!parent) return nullptr;
    }
    nodes_.push_back(std::make_unique<Node>());
    Node* node = nodes_.back().get();
    node->order = parsed->order;
    if (parent) {
      node->keys.push_back(parsed->name);
      parent->children.push_back(node);
    } else {
      roots_.push_back(node);
    }
    by_path_[path] = node;
    return node;
  }

  Blocks blocks() const { return to_blocks(roots_); }

 private:
  std::vector<std::unique_ptr<Node>> nodes_;
  std::map<std::string, Node*> by_path_;
  std::vector<Node*> roots_;
};

// A malformed key must not create its parents as a side effect: check the whole chain first.
bool key_is_well_formed(const std::string& key) {
  std::string path = key;
  while (true) {
    auto parsed = parse_path(path);
    if (!parsed) return false;
    if (parsed->parent.empty()) return true;
    path = parsed->parent;
  }
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

}  // namespace

Result<Translation> from_labels(const LabelMap& labels, const TemplateContext& context) {
  // Templates first: one failing value drops the whole source (CDP's rule), and nothing else
  // should be half-built when it does.
  std::map<std::string, std::vector<std::string>> args;
  for (const auto& [key, value] : labels) {
    auto text = render_template(value, context);
    if (!text.ok()) {
      Error e = text.errors().front();
      e.message = "label " + key + ": " + e.message;
      return e;
    }
    std::vector<std::string> tokens;
    for (auto& token : tokenize(*text)) tokens.push_back(std::move(token.text));
    args[key] = std::move(tokens);
  }
  Translation out;
  TreeBuilder builder;
  for (const auto& [key, value] : labels) {
    if (!key_is_well_formed(key)) {
      out.skipped.push_back(
          Error{{}, "label " + key + ": malformed key (empty segment or trailing dot); skipped"});
      continue;
    }
    Node* node = builder.get_or_create(key);
    auto& a = args[key];
    node->keys.insert(node->keys.end(), a.begin(), a.end());
  }
  out.blocks = builder.blocks();
  return out;
}

LabelMap select_labels(const LabelMap& labels, std::string_view prefix) {
  LabelMap out;
  for (const auto& [key, value] : labels) {
    if (!key.starts_with(prefix)) continue;
    std::string_view rest = std::string_view(key).substr(prefix.size());
    if (rest.starts_with('_')) {
      size_t i = 1;
      while (i < rest.size() && rest[i] >= '0' && rest[i] <= '9') ++i;
      if (i == 1) continue;
      rest.remove_prefix(i);
    }
    if (!rest.empty() && rest.front() != '.') continue;
    // The prefix matched at position 0, which is its first occurrence.
    out[std::string("caddy") + key.substr(prefix.size())] = value;
  }
  return out;
}

Result<LabelMap> parse_label_text(std::string_view text) {
  LabelMap out;
  int line_number = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string line(trim(text.substr(pos, end - pos)));
    pos = end + 1;
    ++line_number;
    for (size_t at = line.find("NEW_LINE"); at != std::string::npos;
         at = line.find("NEW_LINE", at + 1)) {
      line.replace(at, 8, "\n");
    }
    if (line.empty() || line.starts_with('#')) continue;
    const size_t eq = line.find('=');
    if (eq == std::string::npos) {
      return Error{{"", line_number, 0}, "line should be in KEY = VALUE format"};
    }
    const std::string key(trim(std::string_view(line).substr(0, eq)));
    const std::string value(trim(std::string_view(line).substr(eq + 1)));
    if (key.empty()) return Error{{"", line_number, 0}, "missing or empty key"};
    out[key] = value;
  }
  return out;
}

}  // namespace hsp::labels
