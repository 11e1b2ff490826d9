#include <gtest/gtest.h>

#include <map>

#include "caddyfile/ast.h"
#include "caddyfile/dump.h"

namespace hsp::caddyfile {
namespace {

bool test_env(const std::string& name, std::string& value) {
  static const std::map<std::string, std::string> vars = {{"SITE", "example.com"},
                                                          {"PORT", "9000"}};
  auto it = vars.find(name);
  if (it == vars.end()) return false;
  value = it->second;
  return true;
}

Result<File> parsed(const std::string& text) {
  ParseOptions opts;
  opts.env = test_env;
  return parse(text, "Caddyfile", opts);
}

std::string dumped(const std::string& text) {
  auto r = parsed(text);
  if (!r.ok()) {
    std::string out = "ERROR";
    for (const Error& e : r.errors()) out += "\n" + e.str();
    return out;
  }
  return dump(r.value());
}

std::vector<std::string> errors(const std::string& text) {
  auto r = parsed(text);
  std::vector<std::string> out;
  if (r.ok()) return {"no error"};
  for (const Error& e : r.errors()) out.push_back(e.str());
  return out;
}

std::vector<std::string> keys(const ServerBlock& sb) {
  std::vector<std::string> out;
  for (const Token& t : sb.keys) out.push_back(t.text);
  return out;
}

using V = std::vector<std::string>;

TEST(Parser, SimpleSiteBlock) {
  EXPECT_EQ(dumped("example.com {\n  reverse_proxy 127.0.0.1:9000\n}\n"),
            "site @1:1 example.com@1:1\n"
            "  reverse_proxy@2:3 127.0.0.1:9000@2:17\n");
}

TEST(Parser, GlobalOptionsBlock) {
  auto r = parsed(
      "{\n  admin off\n  servers {\n    trusted_proxies static 10.0.0.0/8\n  }\n}\n"
      "a.com {\n  respond hi\n}\n");
  ASSERT_TRUE(r.ok()) << r.errors()[0].str();
  const File& f = r.value();
  ASSERT_TRUE(f.has_global_options);
  EXPECT_TRUE(f.global_options.keys.empty());
  ASSERT_EQ(f.global_options.directives.size(), 2u);
  EXPECT_EQ(f.global_options.directives[0].name.text, "admin");
  EXPECT_EQ(f.global_options.directives[1].block.size(), 1u);
  EXPECT_EQ(f.global_options.loc.str(), "Caddyfile:1:1");
  ASSERT_EQ(f.blocks.size(), 1u);
  EXPECT_EQ(keys(f.blocks[0]), V{"a.com"});
}

TEST(Parser, NoGlobalOptions) {
  auto r = parsed("a.com {\n}\n");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r.value().has_global_options);
  EXPECT_TRUE(r.value().blocks[0].directives.empty());
}

TEST(Parser, EmptyInputIsAnEmptyFile) {
  auto r = parsed("  \n# nothing\n");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r.value().blocks.empty());
}

TEST(Parser, AddressLists) {
  auto r = parsed(
      "a.com b.com {\n}\n"
      "c.com, d.com {\n}\n"
      "e.com,\n  f.com,\n  g.com {\n}\n"
      ":8080 http://x https://x:8443 *.example.com localhost {\n}\n"
      "h.com , i.com {\n}\n");
  ASSERT_TRUE(r.ok()) << r.errors()[0].str();
  const File& f = r.value();
  ASSERT_EQ(f.blocks.size(), 5u);
  EXPECT_EQ(keys(f.blocks[0]), (V{"a.com", "b.com"}));
  EXPECT_EQ(keys(f.blocks[1]), (V{"c.com", "d.com"}));
  EXPECT_EQ(keys(f.blocks[2]), (V{"e.com", "f.com", "g.com"}));
  EXPECT_EQ(f.blocks[2].keys[1].loc.str(), "Caddyfile:6:3");
  EXPECT_EQ(keys(f.blocks[3]),
            (V{":8080", "http://x", "https://x:8443", "*.example.com", "localhost"}));
  EXPECT_EQ(keys(f.blocks[4]), (V{"h.com", "i.com"}));
  EXPECT_EQ(f.blocks[4].loc.str(), "Caddyfile:11:1");
}

TEST(Parser, SingleSiteWithoutBraces) {
  auto r = parsed("localhost\n\nrespond \"hi\" 200\nreverse_proxy /api/* 127.0.0.1:{$PORT}\n");
  ASSERT_TRUE(r.ok()) << r.errors()[0].str();
  const File& f = r.value();
  ASSERT_EQ(f.blocks.size(), 1u);
  EXPECT_EQ(keys(f.blocks[0]), V{"localhost"});
  ASSERT_EQ(f.blocks[0].directives.size(), 2u);
  EXPECT_EQ(f.blocks[0].directives[1].args[1].text, "127.0.0.1:9000");
}

TEST(Parser, SingleSiteWithoutBracesAfterGlobalOptions) {
  auto r = parsed("{\n  admin off\n}\nlocalhost\nrespond hi\n");
  ASSERT_TRUE(r.ok()) << r.errors()[0].str();
  EXPECT_TRUE(r.value().has_global_options);
  ASSERT_EQ(r.value().blocks.size(), 1u);
  EXPECT_EQ(r.value().blocks[0].directives.size(), 1u);
}

TEST(Parser, AddressOnlyFile) {
  auto r = parsed("localhost\n");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r.value().blocks.size(), 1u);
  EXPECT_TRUE(r.value().blocks[0].directives.empty());
}

TEST(Parser, NestedBlocks) {
  EXPECT_EQ(dumped("a {\n"
                   "\treverse_proxy {\n"
                   "\t\tto 127.0.0.1:1\n"
                   "\t\ttransport http {\n"
                   "\t\t\tdial_timeout 2s\n"
                   "\t\t}\n"
                   "\t}\n"
                   "}\n"),
            "site @1:1 a@1:1\n"
            "  reverse_proxy@2:2 {@2:16\n"
            "    to@3:3 127.0.0.1:1@3:6\n"
            "    transport@4:3 http@4:13 {@4:18\n"
            "      dial_timeout@5:4 2s@5:17\n"
            "    }\n"
            "  }\n");
}

TEST(Parser, NamedMatchersArePlainDirectives) {
  auto r = parsed(
      "a {\n  @api {\n    path /api/*\n    method GET\n  }\n  @one path /x /y\n"
      "  reverse_proxy @api 127.0.0.1:1\n}\n");
  ASSERT_TRUE(r.ok());
  const auto& ds = r.value().blocks[0].directives;
  ASSERT_EQ(ds.size(), 3u);
  EXPECT_EQ(ds[0].name.text, "@api");
  EXPECT_TRUE(ds[0].has_block);
  EXPECT_EQ(ds[0].block_open.str(), "Caddyfile:2:8");
  EXPECT_EQ(ds[0].block.size(), 2u);
  EXPECT_EQ(ds[1].name.text, "@one");
  EXPECT_EQ(ds[1].args.size(), 3u);
  EXPECT_FALSE(ds[1].has_block);
  EXPECT_EQ(ds[2].args[0].text, "@api");
}

TEST(Parser, PlaceholdersInsideLinesAreText) {
  auto r = parsed("a {\n  header X-Host {host} {http.request.header.Y}\n  respond {\"a\":1}\n}\n");
  ASSERT_TRUE(r.ok()) << r.errors()[0].str();
  const auto& d = r.value().blocks[0].directives;
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].args[1].text, "{host}");
  EXPECT_EQ(d[0].args[2].text, "{http.request.header.Y}");
  EXPECT_FALSE(d[0].has_block);
  EXPECT_EQ(d[1].args[0].text, "{\"a\":1}");
}

TEST(Parser, QuotedBracesAreArguments) {
  auto r = parsed("a {\n  respond \"{\" `}` \"{}\"\n}\n");
  ASSERT_TRUE(r.ok()) << r.errors()[0].str();
  const auto& d = r.value().blocks[0].directives[0];
  EXPECT_FALSE(d.has_block);
  ASSERT_EQ(d.args.size(), 3u);
  EXPECT_EQ(d.args[0].text, "{");
  EXPECT_TRUE(d.args[0].quoted());
}

TEST(Parser, EnvInAddresses) {
  auto r = parsed("{$SITE}, {$OTHER:b.com} {\n}\n");
  ASSERT_TRUE(r.ok()) << r.errors()[0].str();
  EXPECT_EQ(keys(r.value().blocks[0]), (V{"example.com", "b.com"}));
}

TEST(Parser, SnippetsWithArguments) {
  auto r = parsed(
      "(proxy) {\n"
      "  reverse_proxy {args[0]} {args[1:]} {\n"
      "    header_up X-Site {args.0}\n"
      "  }\n"
      "  respond {args[:]}\n"
      "  header X {args[7]}\n"
      "}\n"
      "a.com {\n"
      "  import proxy 127.0.0.1:1 127.0.0.1:2 127.0.0.1:3\n"
      "}\n");
  ASSERT_TRUE(r.ok()) << r.errors()[0].str();
  const auto& ds = r.value().blocks[0].directives;
  ASSERT_EQ(ds.size(), 3u);
  std::vector<std::string> args;
  for (const Token& t : ds[0].args) args.push_back(t.text);
  EXPECT_EQ(args, (V{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}));
  EXPECT_EQ(ds[0].block[0].args[1].text, "127.0.0.1:1");
  EXPECT_EQ(ds[1].args.size(), 3u);
  // Out of range stays as written, as in Caddy.
  EXPECT_EQ(ds[2].args[1].text, "{args[7]}");
  // Snippet tokens keep the snippet's own position and say where they were imported.
  EXPECT_EQ(ds[0].name.loc.str(), "Caddyfile:2:3");
  EXPECT_EQ(ds[0].name.imported_from,
            V{"Caddyfile:9:3 import proxy 127.0.0.1:1 127.0.0.1:2 127.0.0.1:3"});
  EXPECT_TRUE(r.value().blocks[0].keys[0].imported_from.empty());
}

TEST(Parser, VariadicArgumentsMayBeEmpty) {
  auto r = parsed("(s) {\n  {args[:]}\n  respond {args[1:]} x\n}\na {\n  import s\n}\n");
  ASSERT_TRUE(r.ok()) << r.errors()[0].str();
  const auto& ds = r.value().blocks[0].directives;
  // "{args[:]}" alone on its line vanished; "respond" still starts its own directive.
  ASSERT_EQ(ds.size(), 1u);
  EXPECT_EQ(ds[0].name.text, "respond");
  ASSERT_EQ(ds[0].args.size(), 1u);
  EXPECT_EQ(ds[0].args[0].text, "x");
}

TEST(Parser, VariadicArgumentsAtLineStart) {
  auto r = parsed("(s) {\n  {args[:]}\n}\na {\n  import s respond hi\n  log\n}\n");
  ASSERT_TRUE(r.ok()) << r.errors()[0].str();
  const auto& ds = r.value().blocks[0].directives;
  ASSERT_EQ(ds.size(), 2u);
  EXPECT_EQ(ds[0].name.text, "respond");
  EXPECT_EQ(ds[0].args.size(), 1u);
  EXPECT_EQ(ds[1].name.text, "log");
}

TEST(Parser, SnippetImportedTwiceGivesTwoDirectives) {
  auto r = parsed("(s) {\n  log\n}\na {\n  import s\n  import s\n}\n");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value().blocks[0].directives.size(), 2u);
}

TEST(Parser, SnippetsImportSnippets) {
  auto r = parsed(
      "(inner) {\n  respond {args[0]}\n}\n(outer) {\n  import inner {args[0]}-x\n}\n"
      "a {\n  import outer v\n}\n");
  ASSERT_TRUE(r.ok()) << r.errors()[0].str();
  const Directive& d = r.value().blocks[0].directives[0];
  EXPECT_EQ(d.args[0].text, "v-x");
  EXPECT_EQ(d.name.imported_from,
            (V{"Caddyfile:8:3 import outer v", "Caddyfile:5:3 import inner v-x"}));
}

TEST(Parser, ImportInsideDirectiveBlock) {
  auto r = parsed(
      "(hdr) {\n  header_up X-A 1\n}\na {\n  reverse_proxy x {\n    import hdr\n"
      "    lb_policy first\n  }\n}\n");
  ASSERT_TRUE(r.ok()) << r.errors()[0].str();
  const Directive& d = r.value().blocks[0].directives[0];
  ASSERT_EQ(d.block.size(), 2u);
  EXPECT_EQ(d.block[0].name.text, "header_up");
  EXPECT_EQ(d.block[1].name.text, "lb_policy");
}

TEST(Parser, ImportOfSiteBlocksAtTopLevel) {
  auto r = parsed(
      "(sites) {\n  {args[0]} {\n    respond hi\n  }\n}\nimport sites a.com\n"
      "import sites b.com\n");
  ASSERT_TRUE(r.ok()) << r.errors()[0].str();
  ASSERT_EQ(r.value().blocks.size(), 2u);
  EXPECT_EQ(keys(r.value().blocks[1]), V{"b.com"});
}

TEST(Parser, ImportWordMidLineIsAnArgument) {
  auto r = parsed("a {\n  respond import\n}\n");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value().blocks[0].directives[0].args[0].text, "import");
}

TEST(Parser, SnippetCycleIsAnError) {
  EXPECT_EQ(errors("(a) {\n  import b\n}\n(b) {\n  import a\n}\nx {\n  import a\n}\n"),
            V{"Caddyfile:5:3: import cycle: snippet 'a' is imported again while it is being "
              "imported (imported via Caddyfile:2:3 import b, via Caddyfile:8:3 import a)"});
  EXPECT_EQ(errors("(a) {\n  import a\n}\nx {\n  import a\n}\n"),
            V{"Caddyfile:2:3: import cycle: snippet 'a' is imported again while it is being "
              "imported (imported via Caddyfile:5:3 import a)"});
}

TEST(Parser, ExponentialImportsAreCapped) {
  std::string text = "(s0) {\n  respond x\n}\n";
  for (int i = 1; i <= 24; ++i) {
    std::string prev = "s" + std::to_string(i - 1);
    text += "(s" + std::to_string(i) + ") {\n  import " + prev + "\n  import " + prev + "\n}\n";
  }
  text += "a {\n  import s24\n}\n";
  ParseOptions opts;
  opts.max_import_depth = 100;
  opts.max_tokens = 20'000;
  auto r = parse(text, "Caddyfile", opts);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.errors().back().message.find("expand to more than"), std::string::npos)
      << r.errors().back().str();
}

TEST(Parser, ImportDepthIsCapped) {
  std::string text = "(s0) {\n  respond x\n}\n";
  for (int i = 1; i <= 20; ++i) {
    text += "(s" + std::to_string(i) + ") {\n  import s" + std::to_string(i - 1) + "\n}\n";
  }
  text += "a {\n  import s20\n}\n";
  auto r = parse(text, "Caddyfile");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.errors()[0].message.find("imports nested more than 16 levels deep"),
            std::string::npos)
      << r.errors()[0].str();
  ParseOptions opts;
  opts.max_import_depth = 32;
  EXPECT_TRUE(parse(text, "Caddyfile", opts).ok());
}

TEST(Parser, DeepNestingIsCapped) {
  std::string text = "a {\n";
  for (int i = 0; i < 100; ++i) text += "d {\n";
  for (int i = 0; i < 100; ++i) text += "}\n";
  text += "}\n";
  auto r = parsed(text);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.errors()[0].str(), "Caddyfile:65:3: blocks nested more than 64 levels deep");
  std::string ok = "a {\n";
  for (int i = 0; i < 60; ++i) ok += "d {\n";
  for (int i = 0; i < 60; ++i) ok += "}\n";
  ok += "}\n";
  EXPECT_TRUE(parsed(ok).ok());
}

TEST(Parser, ErrorPositionsAndTexts) {
  struct Case {
    const char* text;
    V want;
  };
  const Case cases[] = {
      {"a {\n  respond hi\n",
       {"Caddyfile:3:1: unexpected end of file, expected '}' to close the "
        "block opened at Caddyfile:1:3"}},
      {"a {\n  respond hi }\n}\n",
       {"Caddyfile:2:14: found '}', expected end of line ('}' closes a block only on its own line)",
        "Caddyfile:3:1: found '}', expected a site address or snippet (no block is open here)"}},
      {"a { respond hi }\n",
       {"Caddyfile:1:5: found 'respond', expected end of line after '{' (a block's contents "
        "start on the next line)"}},
      {"a {\n  handle {\n    respond x\n  } respond y\n}\n",
       {"Caddyfile:4:5: found 'respond', expected end of line after '}'"}},
      {"a {\n  handle\n  {\n    respond x\n  }\n}\n",
       {"Caddyfile:3:3: found '{' at the start of a line, expected a directive (a block's '{' "
        "goes at the end of the line that names it)"}},
      {"}\n",
       {"Caddyfile:1:1: found '}', expected a site address or snippet (no block is open "
        "here)"}},
      {"a.com{\n}\n",
       {"Caddyfile:1:1: found 'a.com{', expected a site address (put a space "
        "between the address and '{')"}},
      {"@api path /x\na {\n}\n",
       {"Caddyfile:1:1: found '@api', expected a site address (named matchers are defined inside "
        "a site block)"}},
      {"a, {\n}\n", {"Caddyfile:1:4: found '{', expected another site address after ','"}},
      {"a,\n", {"Caddyfile:2:1: unexpected end of file, expected another site address after ','"}},
      {"a {\n}\nb\nrespond hi\n",
       {"Caddyfile:3:1: found end of line after 'b', expected '{' (only a Caddyfile with a single "
        "site block may leave out the braces)"}},
      {"a {\n}\n{\n  admin off\n}\n",
       {"Caddyfile:3:1: found '{', expected a site address (a block without addresses is the "
        "global options block, which must come first and only once)"}},
      {"a {\n  import\n}\n",
       {"Caddyfile:2:3: found end of line, expected a snippet name or file path after 'import'"}},
      {"a {\n  import nope\n}\n",
       {"Caddyfile:2:3: import: no snippet or file named 'nope' (no snippet of that name is "
        "defined above this line, and /nonexistent-hsp-dir/nope does not exist)"}},
      {"(s) {\n  log\n}\n(s) {\n  log\n}\n",
       {"Caddyfile:4:1: snippet 's' is already defined at Caddyfile:1:1"}},
      {"a {\n  file_server {}\n}\n",
       {"Caddyfile:2:15: found '{}', expected end of line (to open a block put '{' here and '}' "
        "on a later line; quote \"{}\" to mean the text)"}},
      {"(s) {\n  respond x }\n}\na {\n  import s\n}\n",
       // The `}` is taken as closing the snippet, as its writer meant; the next one is stray.
       {"Caddyfile:2:13: found '}', expected end of line ('}' closes a block only on its own "
        "line)",
        "Caddyfile:3:1: found '}', expected a site address or snippet (no block is open here)"}},
      {"(s) {\n  handle {\n    x }\n  }\n}\na {\n  import s\n}\n",
       // Errors come in the order they are found: the snippet's text is checked where it is
       // imported, after the stray `}` that follows its definition.
       {"Caddyfile:5:1: found '}', expected a site address or snippet (no block is open here)",
        "Caddyfile:3:7: found '}', expected end of line ('}' closes a block only on its own "
        "line) (imported via Caddyfile:7:3 import s)"}},
      {"a {\n  respond \"oops\n}\n",
       {"Caddyfile:2:11: unclosed quote: the '\"' opened at Caddyfile:2:11 is never closed"}},
      {"a {\n  respond <<EOF\n  hi\n}\n",
       {"Caddyfile:2:11: heredoc marker 'EOF' never closed (opened at Caddyfile:2:11)"}},
      {"(s) {\n  log\n",
       {"Caddyfile:3:1: unexpected end of file, expected '}' to close snippet "
        "'s' opened at Caddyfile:1:5"}},
      {"a {\n  import s {\n  }\n}\n",
       {"Caddyfile:2:12: found '{', expected end of line (import takes no block)"}},
  };
  for (const Case& c : cases) {
    ParseOptions opts;
    opts.env = test_env;
    opts.base_dir = "/nonexistent-hsp-dir";
    auto r = parse(c.text, "Caddyfile", opts);
    V got;
    if (r.ok()) {
      got.push_back("no error");
    } else {
      for (const Error& e : r.errors()) got.push_back(e.str());
    }
    EXPECT_EQ(got, c.want) << "input:\n" << c.text;
  }
}

TEST(Parser, OneLineSnippetGivesOneError) {
  EXPECT_EQ(errors("(s) { log }\na.com {\n}\n"),
            V{"Caddyfile:1:7: found 'log', expected end of line after '{' (a block's contents "
              "start on the next line)"});
}

TEST(Parser, CloseMidLineInUnbracedSiteGivesOneError) {
  EXPECT_EQ(errors("localhost\nrespond hi }\nlog\n"),
            V{"Caddyfile:2:12: found '}', expected end of line ('}' closes a block only on its "
              "own line)"});
}

TEST(Parser, ErrorAtExplainsImports) {
  auto r = parsed(
      "(inner) {\n  respond x\n}\n(outer) {\n  import inner\n}\na {\n"
      "  import outer\n}\n");
  ASSERT_TRUE(r.ok());
  const Token& name = r.value().blocks[0].directives[0].name;
  EXPECT_EQ(error_at(name, "unknown directive 'respond'").str(),
            "Caddyfile:2:3: unknown directive 'respond' (imported via Caddyfile:5:3 import "
            "inner, via Caddyfile:8:3 import outer)");
  const Token& key = r.value().blocks[0].keys[0];
  EXPECT_EQ(error_at(key, "bad address").str(), "Caddyfile:7:1: bad address");
}

TEST(Parser, CollectsSeveralErrors) {
  auto errs = errors("a {\n  x {}\n}\nb {\n  y {}\n}\n}\n");
  ASSERT_EQ(errs.size(), 3u);
  EXPECT_EQ(errs[0].substr(0, 16), "Caddyfile:2:5: f");
  EXPECT_EQ(errs[1].substr(0, 16), "Caddyfile:5:5: f");
  EXPECT_EQ(errs[2].substr(0, 16), "Caddyfile:7:1: f");
}

TEST(Parser, ErrorCountIsBounded) {
  std::string text;
  for (int i = 0; i < 500; ++i) text += "}\n";
  auto r = parsed(text);
  ASSERT_FALSE(r.ok());
  EXPECT_LE(r.errors().size(), 50u);
  EXPECT_EQ(r.errors().back().message, "too many errors; stopping here");
}

TEST(Parser, DumpEscapesOddTokens) {
  EXPECT_EQ(dumped("a {\n  respond \"x y\\\"\" `b\\c` <<E\n  l1\n  E\n}\n"),
            "site @1:1 a@1:1\n"
            "  respond@2:3 \"x y\\\"\"@2:11 `b\\\\c`@2:19 <<\"l1\"@2:25\n");
}

}  // namespace
}  // namespace hsp::caddyfile
