// CDP's own golden files, byte-exact: marshal/, merge/, caddyfile labels/, generator labels/.
#include <gtest/gtest.h>

#include "golden_util.h"
#include "labels/block.h"
#include "labels/labels.h"

namespace hsp::labels {
namespace {

using testing::golden_files;
using testing::read_file;
using testing::split;
using testing::trim;

// CDP's exact printing (bare lines for child-less blocks), as its goldens expect.
const PrintOptions kCdp{.braces_for_empty_top_level = false};

TEST(CdpGolden, MarshalRoundTrip) {
  const auto files = golden_files("caddyfile/testdata/marshal");
  EXPECT_EQ(files.size(), 1u);
  for (const auto& file : files) {
    SCOPED_TRACE(file.string());
    const auto parts = split(read_file(file), "----------\n");
    ASSERT_GE(parts.size(), 2u);
    auto blocks = parse_caddyfile(parts[0]);
    ASSERT_TRUE(blocks.ok()) << blocks.errors().front().message;
    EXPECT_EQ(marshal(*blocks, kCdp), parts[1]);
  }
}

TEST(CdpGolden, Merge) {
  const auto files = golden_files("caddyfile/testdata/merge");
  EXPECT_EQ(files.size(), 6u);
  for (const auto& file : files) {
    SCOPED_TRACE(file.string());
    const auto parts = split(read_file(file), "----------\n");
    ASSERT_GE(parts.size(), 3u);
    auto first = parse_caddyfile(parts[0]);
    auto second = parse_caddyfile(parts[1]);
    ASSERT_TRUE(first.ok());
    ASSERT_TRUE(second.ok());
    merge(*first, std::move(*second));
    EXPECT_EQ(marshal(*first, kCdp), parts[2]);
  }
}

// Format A/B of MANIFEST.md: split on the separator, trim both parts.
struct LabelCase {
  LabelMap labels;
  std::string expected;
};

LabelCase read_label_case(const std::filesystem::path& file) {
  const auto parts = split(read_file(file), "----------");
  EXPECT_GE(parts.size(), 2u);
  LabelCase c;
  auto labels = parse_label_text(trim(parts[0]));
  EXPECT_TRUE(labels.ok());
  if (labels.ok()) c.labels = *labels;
  c.expected = parts.size() > 1 ? trim(parts[1]) : "";
  return c;
}

TEST(CdpGolden, CaddyfileLabels) {
  const auto files = golden_files("caddyfile/testdata/labels");
  EXPECT_EQ(files.size(), 14u);
  // The caddyfile package's harness defines no functions at all.
  const TemplateContext context{.cdp_functions = false, .upstream_targets = {}};
  for (const auto& file : files) {
    SCOPED_TRACE(file.string());
    const auto c = read_label_case(file);
    auto result = from_labels(c.labels, context);
    if (!result.ok()) {
      EXPECT_EQ(c.expected, "") << result.errors().front().message;
      continue;
    }
    EXPECT_TRUE(result->skipped.empty());
    EXPECT_EQ(trim(marshal(result->blocks, kCdp)), c.expected);
  }
}

TEST(CdpGolden, GeneratorLabels) {
  const auto files = golden_files("generator/testdata/labels");
  EXPECT_EQ(files.size(), 9u);
  const TemplateContext context{.cdp_functions = true, .upstream_targets = {"target"}};
  for (const auto& file : files) {
    SCOPED_TRACE(file.string());
    const auto c = read_label_case(file);
    auto result = from_labels(c.labels, context);
    if (c.expected.starts_with("err: ")) {
      EXPECT_FALSE(result.ok());
      continue;
    }
    ASSERT_TRUE(result.ok()) << result.errors().front().message;
    EXPECT_EQ(trim(marshal(result->blocks, kCdp)), c.expected);
  }
}

TEST(CdpGolden, TemplateErrorNamesLabelAndFunction) {
  const TemplateContext context{.cdp_functions = true, .upstream_targets = {"target"}};
  auto result = from_labels({{"caddy", "a.com"}, {"caddy.reverse_proxy", "{{invalid}}"}}, context);
  ASSERT_FALSE(result.ok());
  const auto& message = result.errors().front().message;
  EXPECT_NE(message.find("caddy.reverse_proxy"), std::string::npos) << message;
  EXPECT_NE(message.find("\"invalid\""), std::string::npos) << message;
}

}  // namespace
}  // namespace hsp::labels
