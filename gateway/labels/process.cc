#include "labels/process.h"

#include "config/compile.h"

namespace hsp::labels {

Validator compiler_validator() {
  return [](const std::string& text) -> std::optional<std::string> {
    auto config = config::load_caddyfile_text(text, "Caddyfile");
    if (config.ok()) return std::nullopt;
    std::string reason;
    for (const auto& e : config.errors()) {
      if (!reason.empty()) reason += "; ";
      reason += e.str();
    }
    return reason;
  };
}

Processed process(const std::string& caddyfile, const Validator& validator,
                  const PrintOptions& options) {
  Processed out;
  if (caddyfile.empty()) return out;
  auto parsed = parse_caddyfile(caddyfile);
  if (!parsed.ok()) {
    out.invalid = parsed.errors().front().message;
    return out;
  }
  Blocks all = std::move(*parsed);
  sort_blocks(all);
  Blocks kept;
  for (auto& block : all) {
    kept.push_back(std::move(block));
    if (auto reason = validator(print_blocks(kept, options))) {
      Dropped d;
      d.text = print_block(kept.back(), options);
      d.block = d.text.substr(0, d.text.find('\n'));
      d.reason = std::move(*reason);
      out.dropped.push_back(std::move(d));
      kept.pop_back();
    }
  }
  out.caddyfile = print_blocks(kept, options);
  return out;
}

}  // namespace hsp::labels
