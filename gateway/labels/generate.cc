#include "labels/generate.h"

namespace hsp::labels {

Generated generate(const std::vector<Source>& sources, const GenerateOptions& options) {
  Generated out;
  Merger merger;
  for (const auto& source : sources) {
    if (source.kind == Source::Kind::caddyfile) {
      auto parsed = parse_caddyfile(source.caddyfile);
      if (!parsed.ok()) {
        out.problems.push_back(source.name + ": " + parsed.errors().front().message);
        continue;
      }
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
    out.dropped = std::move(processed.dropped);
  }
  out.caddyfile = text.empty() ? "# Empty caddyfile" : std::move(text);
  return out;
}

}  // namespace hsp::labels
