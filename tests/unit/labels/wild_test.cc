// conformance/wild/: 61 label sets from public compose/stack files. Every file must translate
// (no template error, no skipped label) into a Caddyfile that CDP's parser reads back; then each
// top-level block goes through our compiler. Blocks it rejects are listed on stdout, and every
// reason must be one of the known kinds below: a feature the compatibility table lists as not
// supported yet (TLS for host-name sites, `encode`, `tls`, most global options, ...), a snippet
// that lives outside the label set (in the user's base Caddyfile), an unexpanded compose
// variable in a site address, or a mistake in the labels that Caddy rejects too.
#include <gtest/gtest.h>

#include <filesystem>
#include <iostream>

#include "golden_util.h"
#include "labels/labels.h"
#include "labels/process.h"

namespace hsp::labels {
namespace {

using testing::read_file;
using testing::split;

std::filesystem::path wild_dir() {
  return std::filesystem::path(HSP_SHARED_DIR) / "conformance" / "wild";
}

// One label set per `# service:` line.
std::vector<std::string> services(const std::string& text) {
  std::vector<std::string> out{""};
  for (const auto& line : split(text, "\n")) {
    if (line.starts_with("# service:")) {
      if (!out.back().empty()) out.emplace_back();
      continue;
    }
    out.back() += line + "\n";
  }
  return out;
}

bool known_reason(const std::string& reason) {
  static const char* kKinds[] = {
      "not supported yet",                 // compatibility table: not yet
      "hsp-gateway has no admin API",      // `admin` other than off (table: partial)
      "import: no snippet or file named",  // snippet defined in a base Caddyfile, not in labels
      "bad site address '",                // compose `${VAR:-x}` left unexpanded in the address
      "${",                                // same, in another position
      "unexpected argument",               // label mistakes Caddy rejects as well
      "expected end of line",
      "wrong argument count",           // `rewrite /ping`: the path is taken as a matcher
      "Not a supported redir code",     // `${DOMAIN:?Missing domain}` split into two tokens
      "is not a registered directive",  // plugin directive (e.g. sablier) not in Caddy's build
      "Caddy 2.6 has no such",          // plugin or misspelt directive/matcher: Caddy rejects it
  };
  for (const char* kind : kKinds) {
    if (reason.find(kind) != std::string::npos) return true;
  }
  return false;
}

TEST(Wild, EveryLabelSetTranslatesAndEachRejectionIsKnown) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(wild_dir(), ec)) {
    if (e.path().extension() == ".labels") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  ASSERT_EQ(files.size(), 61u) << "wild corpus missing in " << wild_dir();
  const TemplateContext context{.cdp_functions = true, .upstream_targets = {"10.0.1.5"}};
  size_t kept = 0, dropped = 0;
  for (const auto& file : files) {
    SCOPED_TRACE(file.filename().string());
    Blocks all;
    for (const auto& text : services(read_file(file))) {
      auto labels = parse_label_text(text);
      ASSERT_TRUE(labels.ok()) << labels.errors().front().str();
      auto translated = from_labels(select_labels(*labels), context);
      ASSERT_TRUE(translated.ok()) << translated.errors().front().message;
      EXPECT_TRUE(translated->skipped.empty()) << translated->skipped.front().message;
      merge(all, std::move(translated->blocks));
    }
    const std::string caddyfile = marshal(all);
    ASSERT_FALSE(caddyfile.empty());
    const auto processed = process(caddyfile, compiler_validator());
    ASSERT_FALSE(processed.invalid) << *processed.invalid;
    for (const auto& d : processed.dropped) {
      std::cout << file.filename().string() << ": dropped `" << d.block << "`: " << d.reason
                << "\n";
      // One validator message joins several errors; each must be of a known kind.
      for (const auto& part : split(d.reason, "; Caddyfile:")) {
        EXPECT_TRUE(known_reason(part)) << d.block << ": " << part;
      }
    }
    dropped += processed.dropped.size();
    kept += all.size() - processed.dropped.size();
  }
  std::cout << "wild: " << kept << " top-level blocks kept, " << dropped << " dropped\n";
}

}  // namespace
}  // namespace hsp::labels
