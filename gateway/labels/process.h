// CDP's per-block validation (caddyfile.Process, docs/label-dialect.md §1b): parse the generated
// Caddyfile, sort it, add top-level blocks one at a time and drop each block that makes the
// accumulated file fail to load. Validation runs our own compiler, so the messages differ from
// Caddy's; the kept/dropped decisions match wherever our compiler accepts what Caddy accepts.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "labels/block.h"

namespace hsp::labels {

// Returns the reason a Caddyfile text does not load, or nothing when it loads.
using Validator = std::function<std::optional<std::string>(const std::string& caddyfile)>;

// hsp::config::load_caddyfile_text.
Validator compiler_validator();

struct Dropped {
  std::string block;   // first line of the block, e.g. "service1.example.com {"
  std::string key;     // its keys joined by spaces, e.g. "service1.example.com"; "" for globals
  std::string reason;  // the validator's message
  std::string text;    // the whole block as printed
};

struct Processed {
  std::string caddyfile;  // empty when the input was empty or could not be parsed
  Blocks blocks;          // the kept top-level blocks, as printed in caddyfile
  std::vector<Dropped> dropped;
  std::optional<std::string> invalid;  // the whole input failed CDP's parser: why
};

Processed process(const std::string& caddyfile, const Validator& validator,
                  const PrintOptions& options = {});

}  // namespace hsp::labels
