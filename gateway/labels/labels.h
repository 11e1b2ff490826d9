// Labels -> CDP block tree (docs/label-dialect.md §1a.1-1a.5): key grammar (`caddy`, `caddy_N`,
// `N_` order prefixes, `_N` isolating suffixes, `\.`), keyless roots as global options, values
// expanded as templates then tokenized. Print the result with block.h's marshal().
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "labels/block.h"
#include "labels/template.h"
#include "util/error.h"

namespace hsp::labels {

using LabelMap = std::map<std::string, std::string>;

struct Translation {
  Blocks blocks;
  // Labels skipped on their own (malformed keys such as `caddy.` or `caddy..x`, where CDP
  // crashes); each error names the label in its message. The other labels are translated.
  Errors skipped;
};

// Translates one source's labels (already selected, root renamed to `caddy`). A template error
// fails the whole source, as in CDP; the error names the label and the function.
Result<Translation> from_labels(const LabelMap& labels, const TemplateContext& context);

// CDP's selection: keys matching ^<prefix>(_<digits>)?(\.|$), with the first occurrence of the
// prefix replaced by `caddy`.
LabelMap select_labels(const LabelMap& labels, std::string_view prefix = "caddy");

// The golden-file label format: `key=value` lines trimmed, `NEW_LINE` -> newline, `#` comment
// lines and blank lines skipped, the last duplicate wins. An empty key or a line without `=` is
// an error naming the line.
Result<LabelMap> parse_label_text(std::string_view text);

}  // namespace hsp::labels
