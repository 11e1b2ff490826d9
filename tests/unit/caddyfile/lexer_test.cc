#include "caddyfile/lexer.h"

#include <gtest/gtest.h>

#include <map>

namespace hsp::caddyfile {
namespace {

bool test_env(const std::string& name, std::string& value) {
  static const std::map<std::string, std::string> vars = {
      {"HOST", "example.com"}, {"EMPTY", ""}, {"SPACED", "a b"}, {"BRACE", "{"}};
  auto it = vars.find(name);
  if (it == vars.end()) return false;
  value = it->second;
  return true;
}

LexOutput lexed(const std::string& text) {
  return lex(text, "Caddyfile", test_env);
}

std::vector<std::string> texts(const std::string& text) {
  LexOutput out = lexed(text);
  EXPECT_TRUE(out.errors.empty()) << (out.errors.empty() ? "" : out.errors[0].str());
  std::vector<std::string> v;
  for (const LexToken& t : out.tokens) v.push_back(t.token.text);
  return v;
}

using V = std::vector<std::string>;

TEST(Lexer, SplitsOnWhitespaceAndTracksLinesAndColumns) {
  LexOutput out = lexed("a  b\n\tc d\r\n  e");
  ASSERT_EQ(out.tokens.size(), 5u);
  EXPECT_EQ(out.tokens[0].token.loc.str(), "Caddyfile:1:1");
  EXPECT_EQ(out.tokens[1].token.loc.str(), "Caddyfile:1:4");
  EXPECT_EQ(out.tokens[2].token.loc.str(), "Caddyfile:2:2");
  EXPECT_EQ(out.tokens[3].token.loc.str(), "Caddyfile:2:4");
  EXPECT_EQ(out.tokens[4].token.loc.str(), "Caddyfile:3:3");
  EXPECT_TRUE(out.tokens[0].line_start);
  EXPECT_FALSE(out.tokens[1].line_start);
  EXPECT_TRUE(out.tokens[2].line_start);
  EXPECT_FALSE(out.tokens[3].line_start);
  EXPECT_TRUE(out.tokens[4].line_start);
}

TEST(Lexer, DoubleQuotes) {
  EXPECT_EQ(texts(R"(respond "hello world" "")"), (V{"respond", "hello world", ""}));
  EXPECT_EQ(texts(R"("say \"hi\"")"), (V{"say \"hi\""}));
  // Only \" is an escape; other backslashes stay, and \\ keeps both (Caddy does the same).
  EXPECT_EQ(texts(R"("\d+\.php" "a\\" "b")"), (V{R"(\d+\.php)", R"(a\\)", "b"}));
  // A quote in the middle of a token is literal.
  EXPECT_EQ(texts(R"(a"b"c)"), (V{R"(a"b"c)"}));
  // The closing quote ends the token.
  EXPECT_EQ(texts(R"("a"b)"), (V{"a", "b"}));
  LexOutput out = lexed("x \"multi\nline\" y");
  ASSERT_EQ(out.tokens.size(), 3u);
  EXPECT_EQ(out.tokens[1].token.text, "multi\nline");
  EXPECT_EQ(out.tokens[1].token.quote, Token::Quote::dquote);
  EXPECT_EQ(out.tokens[2].token.loc.str(), "Caddyfile:2:7");
  EXPECT_FALSE(out.tokens[2].line_start);
}

TEST(Lexer, Backticks) {
  LexOutput out = lexed(R"(`raw "quoted" \n` x)");
  ASSERT_EQ(out.tokens.size(), 2u);
  EXPECT_EQ(out.tokens[0].token.text, R"(raw "quoted" \n)");
  EXPECT_EQ(out.tokens[0].token.quote, Token::Quote::backtick);
}

TEST(Lexer, QuotedBracesAreNotStructural) {
  LexOutput out = lexed("a \"{\" `}` {\n}");
  ASSERT_EQ(out.tokens.size(), 5u);
  EXPECT_FALSE(out.tokens[1].open_brace);
  EXPECT_FALSE(out.tokens[2].close_brace);
  EXPECT_TRUE(out.tokens[3].open_brace);
  EXPECT_TRUE(out.tokens[4].close_brace);
}

TEST(Lexer, Comments) {
  EXPECT_EQ(texts("a # comment { }\nb#not-a-comment \"#\" # c"), (V{"a", "b#not-a-comment", "#"}));
  EXPECT_EQ(texts("# only a comment"), V{});
}

TEST(Lexer, PlaceholdersStayPlainTokens) {
  LexOutput out = lexed("header {host} {http.request.header.X-Y} /q{path}");
  ASSERT_EQ(out.tokens.size(), 4u);
  EXPECT_EQ(out.tokens[1].token.text, "{host}");
  EXPECT_FALSE(out.tokens[1].open_brace);
  EXPECT_EQ(out.tokens[2].token.text, "{http.request.header.X-Y}");
  EXPECT_EQ(out.tokens[3].token.text, "/q{path}");
}

TEST(Lexer, EnvironmentVariables) {
  EXPECT_EQ(texts("{$HOST} {$HOST:other} {$UNSET:fallback} x{$HOST}y"),
            (V{"example.com", "example.com", "fallback", "xexample.comy"}));
  // Set but empty wins over the default, like os.LookupEnv in Caddy; an empty unquoted value
  // leaves no token, a quoted one an empty token.
  EXPECT_EQ(texts("{$EMPTY:dflt} {$UNSET} \"{$EMPTY:dflt}\""), V{""});
  // Unquoted values split on whitespace, quoted ones stay whole (Caddy 2.6's outcome).
  EXPECT_EQ(texts("{$SPACED} \"{$SPACED}\""), (V{"a", "b", "a b"}));
  // A default may hold spaces.
  EXPECT_EQ(texts("{$UNSET:x.com, y.com} {"), (V{"x.com,", "y.com", "{"}));
  // A default may hold a colon, e.g. an address.
  EXPECT_EQ(texts("{$UNSET::8080}"), V{":8080"});
  // Substitution cannot create structure.
  LexOutput out = lexed("{$BRACE}");
  ASSERT_EQ(out.tokens.size(), 1u);
  EXPECT_EQ(out.tokens[0].token.text, "{");
  EXPECT_FALSE(out.tokens[0].open_brace);
  // Not variables: {$} and an unclosed {$X.
  EXPECT_EQ(texts("{$} {$HOST"), (V{"{$}", "{$HOST"}));
}

TEST(Lexer, EnvironmentSplittingKeepsLinesRight) {
  LexOutput out = lexed("{$UNSET} respond {$SPACED}\n{$SPACED} x");
  ASSERT_TRUE(out.errors.empty());
  ASSERT_EQ(out.tokens.size(), 6u);
  // The vanished first token leaves "respond" first on its line.
  EXPECT_EQ(out.tokens[0].token.text, "respond");
  EXPECT_TRUE(out.tokens[0].line_start);
  EXPECT_FALSE(out.tokens[1].line_start);
  EXPECT_FALSE(out.tokens[2].line_start);
  EXPECT_EQ(out.tokens[2].token.loc.str(), "Caddyfile:1:18");
  EXPECT_TRUE(out.tokens[3].line_start);
  EXPECT_FALSE(out.tokens[4].line_start);
  EXPECT_EQ(out.tokens[5].token.text, "x");
}

TEST(Lexer, SubstituteEnvDoesNotRescanValues) {
  auto env = [](const std::string& n, std::string& v) {
    if (n != "A") return false;
    v = "{$B}";
    return true;
  };
  EXPECT_EQ(substitute_env("{$A}", env), "{$B}");
}

TEST(Lexer, HeredocStripsClosingIndentation) {
  LexOutput out = lexed("respond <<HTML\n\t\t<p>\n\t\t  hi\n\n\t\t</p>\n\t\tHTML 200\nnext");
  ASSERT_TRUE(out.errors.empty()) << out.errors[0].str();
  ASSERT_EQ(out.tokens.size(), 4u);
  EXPECT_EQ(out.tokens[1].token.text, "<p>\n  hi\n\n</p>");
  EXPECT_EQ(out.tokens[1].token.quote, Token::Quote::heredoc);
  EXPECT_EQ(out.tokens[1].token.loc.str(), "Caddyfile:1:9");
  EXPECT_EQ(out.tokens[2].token.text, "200");
  EXPECT_EQ(out.tokens[2].token.loc.str(), "Caddyfile:6:8");
  EXPECT_FALSE(out.tokens[2].line_start);
  EXPECT_TRUE(out.tokens[3].line_start);
  EXPECT_EQ(out.tokens[3].token.loc.str(), "Caddyfile:7:1");
}

TEST(Lexer, HeredocEdgeCases) {
  // CRLF line ends are dropped from the content.
  EXPECT_EQ(texts("x <<EOF\r\n  a\r\n  EOF"), (V{"x", "a"}));
  // Empty heredoc.
  EXPECT_EQ(texts("x <<EOF\nEOF"), (V{"x", ""}));
  // Not a heredoc: something follows on the same line.
  EXPECT_EQ(texts("x <<EOF y"), (V{"x", "<<EOF", "y"}));
  // Escaped: a literal <<.
  EXPECT_EQ(texts("x \\<<EOF\ny"), (V{"x", "<<EOF", "y"}));
  // The marker text inside a line does not close it.
  EXPECT_EQ(texts("x <<END\nnot END\nENDING\nEND"), (V{"x", "not END\nENDING"}));
}

TEST(Lexer, HeredocErrors) {
  auto first_error = [](const std::string& text) {
    LexOutput out = lexed(text);
    return out.errors.empty() ? std::string("no error") : out.errors[0].str();
  };
  EXPECT_EQ(first_error("respond <<EOF\nhello\n"),
            "Caddyfile:1:9: heredoc marker 'EOF' never closed (opened at Caddyfile:1:9)");
  EXPECT_EQ(first_error("respond <<\nx"),
            "Caddyfile:1:9: found '<<', expected a heredoc marker such as <<END");
  EXPECT_EQ(first_error("respond <<<EOF\nEOF"),
            "Caddyfile:1:9: found '<<<EOF', expected a heredoc marker after exactly two '<', "
            "e.g. <<END");
  EXPECT_EQ(first_error("respond <<E$F\nE$F"),
            "Caddyfile:1:9: heredoc marker 'E$F' may contain only letters, digits, '-' and '_'");
  EXPECT_EQ(first_error("respond <<EOF\n  a\n b\n  EOF"),
            "Caddyfile:3:1: heredoc <<EOF: this line does not start with the closing marker's "
            "indentation (2 whitespace bytes)");
}

TEST(Lexer, UnclosedQuotes) {
  LexOutput out = lexed("a {\n  respond \"abc\n}\n");
  ASSERT_EQ(out.errors.size(), 1u);
  EXPECT_EQ(out.errors[0].str(),
            "Caddyfile:2:11: unclosed quote: the '\"' opened at Caddyfile:2:11 is never closed");
  out = lexed("`abc");
  ASSERT_EQ(out.errors.size(), 1u);
  EXPECT_EQ(out.errors[0].str(),
            "Caddyfile:1:1: unclosed quote: the '`' opened at Caddyfile:1:1 is never closed");
}

TEST(Lexer, LineContinuation) {
  LexOutput out = lexed("reverse_proxy a \\\n  b\\\r\n c\nd");
  ASSERT_EQ(out.tokens.size(), 5u);
  EXPECT_FALSE(out.tokens[2].line_start);
  EXPECT_EQ(out.tokens[2].token.loc.str(), "Caddyfile:2:3");
  EXPECT_FALSE(out.tokens[3].line_start);
  EXPECT_EQ(out.tokens[3].token.text, "c");
  EXPECT_TRUE(out.tokens[4].line_start);
  // Inside a quote, backslash-newline is a newline.
  EXPECT_EQ(texts("\"a\\\nb\""), V{"a\nb"});
  // Other backslashes outside quotes are literal.
  EXPECT_EQ(texts("a\\b"), V{"a\\b"});
}

TEST(Lexer, ByteOrderMarkAndOddBytes) {
  LexOutput out = lexed("\xEF\xBB\xBFlocalhost");
  ASSERT_EQ(out.tokens.size(), 1u);
  EXPECT_EQ(out.tokens[0].token.text, "localhost");
  EXPECT_EQ(out.tokens[0].token.loc.col, 1);
  std::string nul("a\0b \xff\xfe", 6);
  EXPECT_EQ(texts(nul), (V{std::string("a\0b", 3), "\xff\xfe"}));
}

}  // namespace
}  // namespace hsp::caddyfile
