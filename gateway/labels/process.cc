#include "labels/process.h"

#include "config/compile.h"

namespace hsp::labels {

Validator compiler_validator() {
  return [](const std::string& text) -> std::optional<std::string> {
    auto config = config::load_caddyfile_text(text, "Caddyfile");
    if (config.ok()) return std::nullopt;
    // The positions point into the text being validated (the block plus the globals and
    // snippets before it), which is no file anyone sees: the message alone is clearer.
    std::string reason;
    for (const auto& e : config.errors()) {
      if (!reason.empty()) reason += "; ";
      reason += e.message;
    }
    return reason;
  };
}

namespace {

Dropped dropped_block(const Block& block, std::string reason, const PrintOptions& options) {
  Dropped d;
  d.text = print_block(block, options);
  d.block = d.text.substr(0, d.text.find('\n'));
  for (const auto& k : block.keys) d.key += (d.key.empty() ? "" : " ") + k;
  d.reason = std::move(reason);
  return d;
}

// CDP's loop: add the blocks one at a time, drop each one whose addition fails. One compile
// of the accumulated file per block: quadratic in the number of sites.
Blocks incremental(Blocks all, const Validator& validator, const PrintOptions& options,
                   std::vector<Dropped>& dropped) {
  Blocks kept;
  for (auto& block : all) {
    kept.push_back(std::move(block));
    if (auto reason = validator(print_blocks(kept, options))) {
      dropped.push_back(dropped_block(kept.back(), std::move(*reason), options));
      kept.pop_back();
    }
  }
  return kept;
}

}  // namespace

// The same decisions as CDP's loop, without its quadratic cost on large Swarms. It rests on one
// property of the Caddyfile: a top-level block can depend only on global options and snippets,
// which sort before every site, so a file that loads has only prefixes that load, and a site
// that fails next to the globals and snippets alone fails next to any other sites too.
//  1. Everything at once: one compile, and in the common case nothing is dropped.
//  2. Otherwise globals and snippets go through CDP's loop, and each site is tried with just the
//     kept globals and snippets; the sites that fail there are dropped.
//  3. The survivors at once; only if they conflict with each other (the same address in two
//     blocks, say) does CDP's loop run over them.
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
  std::string text = print_blocks(all, options);
  if (!validator(text)) {
    out.caddyfile = std::move(text);
    out.blocks = std::move(all);
    return out;
  }
  Blocks context;                                   // kept globals and snippets
  Blocks sites;                                     // sites that load next to them
  std::vector<std::pair<size_t, Dropped>> dropped;  // by position, to report in CDP's order
  for (size_t i = 0; i < all.size(); ++i) {
    Block& block = all[i];
    const bool site = !block.is_global() && !block.is_snippet();
    context.push_back(std::move(block));
    auto reason = validator(print_blocks(context, options));
    if (site) {
      Block moved = std::move(context.back());
      context.pop_back();
      if (reason) {
        dropped.emplace_back(i, dropped_block(moved, std::move(*reason), options));
      } else {
        sites.push_back(std::move(moved));
      }
    } else if (reason) {
      dropped.emplace_back(i, dropped_block(context.back(), std::move(*reason), options));
      context.pop_back();
    }
  }
  Blocks kept = std::move(context);
  for (auto& s : sites) kept.push_back(std::move(s));
  std::string kept_text = print_blocks(kept, options);
  if (validator(kept_text)) {
    std::vector<Dropped> more;
    kept = incremental(std::move(kept), validator, options, more);
    for (auto& d : more) dropped.emplace_back(all.size(), std::move(d));
    kept_text = print_blocks(kept, options);
  }
  std::stable_sort(dropped.begin(), dropped.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [pos, d] : dropped) out.dropped.push_back(std::move(d));
  out.caddyfile = std::move(kept_text);
  out.blocks = std::move(kept);
  return out;
}

}  // namespace hsp::labels
