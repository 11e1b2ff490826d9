// One generation cycle as CDP runs it (docs/label-dialect.md §0), without Docker: sources in
// CDP's order (base Caddyfile, swarm configs, containers, services) are translated and merged,
// printed (global options first), optionally validated block by block, and an empty result
// becomes "# Empty caddyfile". The Docker watcher supplies the sources and upstream targets.
#pragma once

#include <string>
#include <vector>

#include "labels/block.h"
#include "labels/labels.h"
#include "labels/process.h"

namespace hsp::labels {

struct Source {
  enum class Kind { caddyfile, labels };
  Kind kind = Kind::labels;
  std::string name;       // for messages: "base Caddyfile", "service web", "container 3f2a…"
  std::string caddyfile;  // Kind::caddyfile: Caddyfile text, read with CDP's parser
  LabelMap labels;        // Kind::labels: all labels of the resource; selection happens here
  std::vector<std::string> upstream_targets;  // what {{upstreams}} expands for this source
};

struct GenerateOptions {
  std::string label_prefix = "caddy";
  bool process = true;  // CDP's --process-caddyfile (default on)
  Validator validator;  // empty: compiler_validator()
  PrintOptions print;
};

struct Generated {
  std::string caddyfile;
  Blocks blocks;  // its top-level blocks (for callers that compare generations by site)
  // Sources or labels left out, each naming the source and the reason (template errors drop
  // the whole source as in CDP; malformed keys only their label).
  std::vector<std::string> problems;
  std::vector<Dropped> dropped;  // blocks removed by validation
  // For each dropped block (same index): the sources whose labels made it, e.g.
  // {"service web", "service api"} for a site both share.
  std::vector<std::vector<std::string>> dropped_sources;
};

// Merges the sources in the order given (CDP's order is the caller's job).
Generated generate(const std::vector<Source>& sources, const GenerateOptions& options = {});

}  // namespace hsp::labels
