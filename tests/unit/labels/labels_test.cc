// Key grammar, tokenizer, template and merge corners that the CDP goldens do not pin.
#include <gtest/gtest.h>

#include "labels/block.h"
#include "labels/labels.h"
#include "labels/template.h"

namespace hsp::labels {
namespace {

const PrintOptions kCdp{.braces_for_empty_top_level = false};
const TemplateContext kNoTargets{.cdp_functions = true, .upstream_targets = {}};

std::string translate(const LabelMap& labels, const TemplateContext& context = kNoTargets) {
  auto result = from_labels(labels, context);
  EXPECT_TRUE(result.ok()) << result.errors().front().message;
  if (!result.ok()) return "<error>";
  EXPECT_TRUE(result->skipped.empty());
  return marshal(result->blocks);
}

std::vector<std::string> texts(std::string_view input) {
  std::vector<std::string> out;
  for (auto& t : tokenize(input)) out.push_back(t.text);
  return out;
}

TEST(Tokenize, CdpLexerCorners) {
  using V = std::vector<std::string>;
  EXPECT_EQ(texts("a b\tc\nd"), (V{"a", "b", "c", "d"}));
  EXPECT_EQ(texts("\"a b\" `c \"d\"`"), (V{"a b", "c \"d\""}));
  EXPECT_EQ(texts("\"a\\\"b\" \"a\\b\""), (V{"a\"b", "a\\b"}));  // only \" is an escape
  EXPECT_EQ(texts("\"a"), (V{"a"}));                             // unterminated runs to the end
  EXPECT_EQ(texts("a\""), (V{"a\""}));                           // quote inside a token
  EXPECT_EQ(texts("x #y z\nw"), (V{"x", "w"}));                  // comment to end of line
  EXPECT_EQ(texts("a#b"), (V{"a#b"}));                           // # inside a token is literal
  EXPECT_EQ(texts("\xEF\xBB\xBF"
                  "a"),
            (V{"a"}));                       // BOM dropped
  EXPECT_EQ(texts("\"\" a"), (V{"", "a"}));  // an empty quoted token
  EXPECT_EQ(texts("a\r\nb"), (V{"a", "b"}));
}

TEST(Marshal, QuotingRules) {
  Blocks blocks{Block{{"k", "a b", "a\nb", "q\"`", "\t", ""}, kDefaultOrder, {}}};
  // Newline or quote: backticks (a backtick escaped); space: double quotes; an empty token
  // prints as nothing (CDP's behaviour, kept for byte equality).
  EXPECT_EQ(print_blocks(blocks, kCdp), "k \"a b\" `a\nb` `q\"\\`` \t \n");
}

TEST(Parse, LineBasedBlocksAndPositionOrder) {
  auto blocks = parse_caddyfile("b.com {\n\tz 1\n\ta 2\n}\na.com {\n}\n");
  ASSERT_TRUE(blocks.ok());
  ASSERT_EQ(blocks->size(), 2u);
  EXPECT_EQ((*blocks)[0].order, 0);
  EXPECT_EQ((*blocks)[1].order, 1);
  // File order survives the sort because order = position.
  EXPECT_EQ(marshal(*blocks, kCdp), "b.com {\n\tz 1\n\ta 2\n}\na.com\n");
  // CDP's parser is line-based: a block continues until the line ends, even across braces.
  auto one_line = parse_caddyfile("a { b } c\n");
  ASSERT_TRUE(one_line.ok());
  EXPECT_EQ(marshal(*one_line, kCdp), "a b c\n");
  auto bad = parse_caddyfile("a {\n}\n}\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.errors().front().message, "Unexpected token '}' at line 3");
}

TEST(KeyGrammar, OrderPrefixesSuffixesAndMangling) {
  const auto out = translate({{"caddy", "http://x.localhost"},
                              {"caddy.10_b", "ten"},
                              {"caddy.2_a", "two"},
                              {"caddy.header.X_Foo_2", "v"},
                              {"caddy.tls.1", ""},
                              {"caddy.0_reverse_proxy_1", "u"}});
  EXPECT_EQ(out,
            "http://x.localhost {\n\treverse_proxy u\n\ta two\n\tb ten\n\theader {\n\t\tX_Foo v\n"
            "\t}\n\ttls {\n\t\t1\n\t}\n}\n");
}

// Names as CDP's regex ^(?:(.+)\.)?(?:(\d+)_)?([^.]+?)(?:_(\d+))?$ cuts them (checked with an
// equivalent Python pattern): a suffix needs a non-empty name before it, a prefix a non-empty
// rest after it.
TEST(KeyGrammar, RegexCorners) {
  EXPECT_EQ(translate({{"caddy.__1", ""},
                       {"caddy.1__2", ""},
                       {"caddy.x__1", ""},
                       {"caddy.10_", ""},
                       {"caddy._5", ""},
                       {"caddy.1_2_3", ""}}),
            "{\n\t2\n\t_2\n\t10_\n\t_\n\t_5\n\tx_\n}\n");
}

TEST(KeyGrammar, MalformedKeysAreSkippedAloneWithTheirName) {
  auto result = from_labels({{"caddy", "http://x.localhost"},
                             {"caddy.", "a"},
                             {"caddy..x", "b"},
                             {"caddy.respond", "ok"}},
                            kNoTargets);
  ASSERT_TRUE(result.ok());
  ASSERT_EQ(result->skipped.size(), 2u);
  EXPECT_NE(result->skipped[0].message.find("label caddy."), std::string::npos);
  EXPECT_NE(result->skipped[1].message.find("label caddy..x"), std::string::npos);
  EXPECT_EQ(marshal(result->blocks), "http://x.localhost {\n\trespond ok\n}\n");
}

TEST(KeyGrammar, ImplicitParentsAndEscapedDots) {
  EXPECT_EQ(translate({{"caddy.a\\.b.c", "v"}}), "{\n\ta.b {\n\t\tc v\n\t}\n}\n");
}

TEST(SelectLabels, PrefixRule) {
  const LabelMap in{
      {"caddy", "a"},    {"caddy_7.x", "b"}, {"caddy_version", "c"},        {"caddyversion", "d"},
      {"caddy_.v", "e"}, {"Caddy.x", "f"},   {"caddy_ingress_network", "g"}};
  EXPECT_EQ(select_labels(in), (LabelMap{{"caddy", "a"}, {"caddy_7.x", "b"}}));
  EXPECT_EQ(select_labels({{"web", "a"}, {"web_1.x", "b"}, {"webx", "c"}}, "web"),
            (LabelMap{{"caddy", "a"}, {"caddy_1.x", "b"}}));
}

TEST(LabelText, GoldenFormat) {
  auto labels = parse_label_text("# c\n a = b \nx=NEW_LINEaNEW_LINEb\n\nk=v=w\n");
  ASSERT_TRUE(labels.ok());
  EXPECT_EQ(
      *labels,
      (LabelMap{{"a", "b"}, {"x", "a\nb"}, {"k", "v=w"}}));  // values are trimmed after NEW_LINE
  EXPECT_FALSE(parse_label_text("novalue\n").ok());
  EXPECT_FALSE(parse_label_text(" = v\n").ok());
}

Result<std::string> render(std::string_view text, std::vector<std::string> targets = {}) {
  return render_template(
      text, TemplateContext{.cdp_functions = true, .upstream_targets = std::move(targets)});
}

TEST(Template, Upstreams) {
  const std::vector<std::string> t{"10.0.0.9", "10.0.0.10"};
  EXPECT_EQ(*render("{{upstreams}}", t), "10.0.0.10 10.0.0.9");
  EXPECT_EQ(*render("{{ upstreams 80 }}", t), "10.0.0.10:80 10.0.0.9:80");
  EXPECT_EQ(*render("{{upstreams https 8443}}", t), "https://10.0.0.10:8443 https://10.0.0.9:8443");
  EXPECT_EQ(*render("{{upstreams 8443 \"h2c\"}}", t), "h2c://10.0.0.10:8443 h2c://10.0.0.9:8443");
  EXPECT_EQ(*render("x {{upstreams http}} y", {}), "x  y");
  EXPECT_EQ(*render("{{http | upstreams}}", {"a"}), "http://a");
  EXPECT_EQ(*render("{{h2c}}-{{https}}", {}), "h2c-https");
}

TEST(Template, LiteralsTrimAndComments) {
  EXPECT_EQ(*render("{{\"\"}}"), "");
  EXPECT_EQ(*render("a {{- \"b\" -}} c"), "abc");
  EXPECT_EQ(*render("a{{/* note */}}b"), "ab");
  EXPECT_EQ(*render("{{`raw`}} {{42}}"), "raw 42");
  EXPECT_EQ(*render("{{\"}}\"}}|{{`}}`}}"), "}}|}}");
  EXPECT_EQ(*render("{{print \"a\" 1 2}}|{{printf \"%s:%d\" \"h\" 80}}"), "a1 2|h:80");
  EXPECT_EQ(*render("{path} {host}"), "{path} {host}");  // Caddy placeholders are plain text
}

TEST(Template, UnsupportedIsAnErrorNamingIt) {
  auto expect_error = [](std::string_view text, std::string_view needle) {
    auto r = render(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_NE(r.errors().front().message.find(needle), std::string::npos)
        << r.errors().front().message;
  };
  expect_error("{{invalid}}", "function \"invalid\" not defined");
  expect_error("{{lower \"A\"}}", "function \"lower\"");
  expect_error("{{len \"A\"}}", "function \"len\" is not supported yet");
  expect_error("{{.Spec.Name}}", "template data");
  expect_error("{{if 1}}x{{end}}", "\"if\"");
  expect_error("{{upstreams", "unclosed action");
  expect_error("{{nil}}", "nil is not a command");
  // Without CDP's functions (the caddyfile package's harness) upstreams is unknown too.
  auto r = render_template("{{upstreams}}",
                           TemplateContext{.cdp_functions = false, .upstream_targets = {}});
  EXPECT_FALSE(r.ok());
}

TEST(Merge, SourcesSharingASite) {
  auto a = from_labels(
      {{"caddy", "a.com"}, {"caddy.reverse_proxy", "{{upstreams 80}}"}, {"caddy.tls", "internal"}},
      TemplateContext{.cdp_functions = true, .upstream_targets = {"10.0.0.1"}});
  auto b = from_labels({{"caddy", "a.com"},
                        {"caddy.2_reverse_proxy", "{{upstreams 80}}"},
                        {"caddy.tls", "internal"},
                        {"caddy.email", "x"}},
                       TemplateContext{.cdp_functions = true, .upstream_targets = {"10.0.0.2"}});
  auto g = from_labels({{"caddy.email", "me@example.com"}}, kNoTargets);
  ASSERT_TRUE(a.ok() && b.ok() && g.ok());
  Blocks all;
  merge(all, std::move(a->blocks));
  merge(all, std::move(b->blocks));
  merge(all, std::move(g->blocks));
  // Order prefixes are not compared when merging upstreams; identical `tls` lines collapse.
  EXPECT_EQ(marshal(all, kCdp),
            "{\n\temail me@example.com\n}\na.com {\n\temail x\n\treverse_proxy 10.0.0.1:80 "
            "10.0.0.2:80\n\ttls internal\n}\n");
}

}  // namespace
}  // namespace hsp::labels
