// process/ goldens: CDP's per-block validation, run with our compiler as the validator.
#include <gtest/gtest.h>

#include "golden_util.h"
#include "labels/process.h"

namespace hsp::labels {
namespace {

using testing::cdp_dir;
using testing::read_file;
using testing::split;

const PrintOptions kCdp{.braces_for_empty_top_level = false};

struct ProcessCase {
  std::string input, expected, logs;
};

ProcessCase read_case(const std::string& name) {
  const auto parts =
      split(read_file(cdp_dir() / "caddyfile/testdata/process" / name), "----------\n");
  EXPECT_GE(parts.size(), 2u);
  ProcessCase c;
  c.input = parts[0];
  c.expected = parts.size() > 1 ? parts[1] : "";
  c.logs = parts.size() > 2 ? parts[2] : "";
  return c;
}

TEST(CdpProcess, EmptyAndBlankInputsGiveEmptyOutput) {
  for (const char* name : {"empty.txt", "blank.txt"}) {
    SCOPED_TRACE(name);
    const auto c = read_case(name);
    const auto p = process(c.input, compiler_validator(), kCdp);
    EXPECT_EQ(p.caddyfile, c.expected);
    EXPECT_TRUE(p.dropped.empty());
    EXPECT_FALSE(p.invalid);
    EXPECT_EQ(c.logs, "");
  }
}

TEST(CdpProcess, UnparsableFileGivesEmptyOutputAndReason) {
  const auto c = read_case("invalid_file.txt");
  const auto p = process(c.input, compiler_validator(), kCdp);
  EXPECT_EQ(p.caddyfile, c.expected);
  ASSERT_TRUE(p.invalid);
  // CDP's own parser message, which the golden log shows.
  EXPECT_NE(c.logs.find(*p.invalid), std::string::npos) << *p.invalid;
}

// The golden keeps the global block, the snippet and two sites and drops service1 (unknown
// reverse_proxy sub-directive). Our compiler drops that block for the same reason, but also the
// other two sites, for features it does not support yet (TLS for host-name sites, `encode`,
// `basicauth`, a non-numeric `respond` status): each such drop must say "not supported yet".
TEST(CdpProcess, InvalidBlockDropsTheGoldensBlockAndOnlyUnsupportedOthers) {
  const auto c = read_case("invalid_block.txt");
  const auto p = process(c.input, compiler_validator(), kCdp);
  ASSERT_FALSE(p.invalid);
  bool saw_service1 = false;
  for (const auto& d : p.dropped) {
    SCOPED_TRACE(d.block + " :: " + d.reason);
    if (d.block == "service1.example.com {") {
      saw_service1 = true;
      EXPECT_NE(d.reason.find("'invalid'"), std::string::npos);
      EXPECT_NE(c.logs.find(d.text), std::string::npos);  // the block as the golden prints it
    } else {
      EXPECT_NE(d.reason.find("not supported yet"), std::string::npos);
      EXPECT_NE(c.expected.find(d.text), std::string::npos);
    }
  }
  EXPECT_TRUE(saw_service1);
  // What we keep is the golden's output minus the blocks dropped as unsupported.
  std::string expected = c.expected;
  for (const auto& d : p.dropped) {
    if (const size_t at = expected.find(d.text); at != std::string::npos) {
      expected.erase(at, d.text.size());
    }
  }
  EXPECT_EQ(p.caddyfile, expected);
  EXPECT_NE(p.caddyfile.find("(mysnippet) {"), std::string::npos);
}

TEST(Process, DropsOnlyTheFailingBlockAndKeepsLaterOnes) {
  const std::string text =
      "http://a.localhost {\n\trespond ok 200\n}\n"
      "http://b.localhost {\n\tno_such_directive\n}\n"
      "http://c.localhost {\n\trespond ok 200\n}\n";
  const auto p = process(text, compiler_validator());
  ASSERT_EQ(p.dropped.size(), 1u);
  EXPECT_EQ(p.dropped[0].block, "http://b.localhost {");
  EXPECT_NE(p.dropped[0].reason.find("no_such_directive"), std::string::npos);
  EXPECT_EQ(
      p.caddyfile,
      "http://a.localhost {\n\trespond ok 200\n}\nhttp://c.localhost {\n\trespond ok 200\n}\n");
}

// CDP prints a directive-less site as a bare line, which makes Caddy read every later site as
// its directives (issue #682). With our default printing the later sites survive.
TEST(Process, SiteWithoutDirectivesDoesNotSwallowLaterSites) {
  Blocks blocks;
  blocks.push_back(Block{{"http://a.localhost"}, kDefaultOrder, {}});
  blocks.push_back(
      Block{{"http://b.localhost"}, kDefaultOrder, {Block{{"respond", "ok"}, kDefaultOrder, {}}}});
  const std::string text = marshal(blocks);
  EXPECT_EQ(text, "http://a.localhost {\n}\nhttp://b.localhost {\n\trespond ok\n}\n");
  const auto p = process(text, compiler_validator());
  EXPECT_TRUE(p.dropped.empty()) << p.dropped.front().reason;
  EXPECT_EQ(p.caddyfile, text);
  // CDP's printing would have produced the bare line.
  EXPECT_EQ(print_blocks(blocks, kCdp),
            "http://a.localhost\nhttp://b.localhost {\n\trespond ok\n}\n");
}

// Sites that load on their own but not together (the same address twice) are decided exactly as
// CDP's one-at-a-time loop decides: the first one stays.
TEST(Process, SitesThatConflictWithEachOtherKeepTheFirst) {
  const std::string text =
      "http://a.localhost {\n\trespond a\n}\n"
      "http://a.localhost, http://b.localhost {\n\trespond b\n}\n"
      "http://c.localhost {\n\trespond c\n}\n";
  const auto p = process(text, compiler_validator());
  ASSERT_EQ(p.dropped.size(), 1u);
  EXPECT_EQ(p.dropped[0].block, "http://a.localhost, http://b.localhost {");
  EXPECT_NE(p.dropped[0].reason.find("ambiguous site definition"), std::string::npos);
  EXPECT_EQ(p.caddyfile,
            "http://a.localhost {\n\trespond a\n}\nhttp://c.localhost {\n\trespond c\n}\n");
}

// A snippet that fails is dropped; the site importing it fails next and is dropped too.
TEST(Process, SiteImportingADroppedSnippetIsDropped) {
  const std::string text =
      "(bad) {\n\tno_such_directive\n}\n"
      "http://a.localhost {\n\timport bad\n}\n"
      "http://b.localhost {\n\trespond b\n}\n";
  const auto p = process(text, compiler_validator());
  ASSERT_EQ(p.dropped.size(), 1u);
  EXPECT_EQ(p.dropped[0].block, "http://a.localhost {");
  EXPECT_EQ(p.caddyfile, "(bad) {\n\tno_such_directive\n}\nhttp://b.localhost {\n\trespond b\n}\n");
}

// One broken site among many costs one compile per site, not one per site per site: CDP's loop
// would compile the growing file 2 000 times here.
TEST(Process, OneBrokenSiteAmongManyIsNotQuadratic) {
  std::string text;
  for (int i = 0; i < 2000; ++i) {
    text += "http://s" + std::to_string(i) + ".localhost {\n\t" +
            (i == 1234 ? "no_such_directive" : "respond ok") + "\n}\n";
  }
  size_t calls = 0, bytes = 0;
  const Validator counting = [&](const std::string& t) {
    ++calls;
    bytes += t.size();
    return compiler_validator()(t);
  };
  const auto p = process(text, counting);
  ASSERT_EQ(p.dropped.size(), 1u);
  EXPECT_EQ(p.dropped[0].block, "http://s1234.localhost {");
  EXPECT_LE(calls, 2000u + 2u);
  EXPECT_LE(bytes, 4 * text.size());
}

}  // namespace
}  // namespace hsp::labels
