// libFuzzer target for the label translator: the golden-file label format, the label key
// grammar, the Go-template subset, CDP's tokenizer and line parser, printing, merging and the
// Caddyfile re-parse of the printed text. Build as fuzz/caddyfile_fuzz.cc says, then:
//   build-fuzz/fuzz/hsp_labels_fuzz -max_total_time=120 ../shared/conformance/wild
// Checks beyond "no crash": re-reading printed text is idempotent. The first re-read may change
// the text (CDP's line parser reads a `{` token inside a value as a brace, as CDP does, and
// the generated Caddyfile is what it is), but a second re-read must not change it again, or
// processing would not be stable from one generation to the next.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "labels/block.h"
#include "labels/labels.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hsp::labels;
  std::string text(reinterpret_cast<const char*>(data), size);
  auto labels = parse_label_text(text);
  if (!labels) return 0;
  const TemplateContext context{.cdp_functions = true,
                                .upstream_targets = {"10.0.1.5", "[fd00::5]", "web"}};
  auto translated = from_labels(select_labels(*labels), context);
  if (!translated) return 0;
  Blocks merged;
  merge(merged, translated->blocks);
  merge(merged, std::move(translated->blocks));
  std::string printed = marshal(merged);
  auto reparsed = parse_caddyfile(printed);
  if (!reparsed) return 0;
  const std::string once = marshal(*reparsed);
  // A token holding a backtick as well as a newline or a quote has no spelling in CDP's
  // format (CDP prints it the same broken way); only text without backticks is checked.
  // An empty text (everything became a `#` comment) is refused by CDP's parser on purpose.
  if (once.empty() || once.find('`') != std::string::npos) return 0;
  auto again = parse_caddyfile(once);
  if (!again) std::abort();  // text we printed ourselves must parse
  if (marshal(*again) != once) std::abort();
  return 0;
}
