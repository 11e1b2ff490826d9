#include "labels/generate.h"

#include <map>

namespace hsp::labels {

Generated generate(const std::vector<Source>& sources, const GenerateOptions& options) {
  Generated out;
  Merger merger;
  std::map<std::string, std::vector<std::string>> sources_of;  // top-level key -> source names
  auto note_sources = [&](const Blocks& blocks, const std::string& name) {
    for (const auto& b : blocks) {
      std::string key;
      for (const auto& k : b.keys) key += (key.empty() ? "" : " ") + k;
      auto& names = sources_of[key];
      if (names.empty() || names.back() != name) names.push_back(name);
    }
  };
  for (const auto& source : sources) {
    if (source.kind == Source::Kind::caddyfile) {
      auto parsed = parse_caddyfile(source.caddyfile);
      if (!parsed.ok()) {
        out.problems.push_back(source.name + ": " + parsed.errors().front().message);
        continue;
      }
      note_sources(*parsed, source.name);
      merger.add(std::move(*parsed));
      continue;
    }
    const TemplateContext context{.cdp_functions = true,
                                  .upstream_targets = source.upstream_targets};
    auto translated = from_labels(select_labels(source.labels, options.label_prefix), context);
    if (!translated.ok()) {
      out.problems.push_back(source.name + ": " + translated.errors().front().message +
                             " (all labels of this source ignored)");
      continue;
    }
    for (const auto& e : translated->skipped)
      out.problems.push_back(source.name + ": " + e.message);
    note_sources(translated->blocks, source.name);
    merger.add(std::move(translated->blocks));
  }
  // CDP prints the global blocks, then the rest; sorting puts globals first anyway.
  Blocks all = merger.take();
  std::string text = marshal(all, options.print);
  if (options.process) {
    auto processed =
        process(text, options.validator ? options.validator : compiler_validator(), options.print);
    if (processed.invalid) out.problems.push_back("generated Caddyfile: " + *processed.invalid);
    text = std::move(processed.caddyfile);
    all = std::move(processed.blocks);
    out.dropped = std::move(processed.dropped);
    for (const auto& d : out.dropped) out.dropped_sources.push_back(sources_of[d.key]);
  }
  out.caddyfile = text.empty() ? "# Empty caddyfile" : std::move(text);
  out.blocks = std::move(all);
  return out;
}

}  // namespace hsp::labels
