// Mutation smoke test: thousands of damaged Caddyfiles derived from the golden corpus, with a
// fixed seed so every run feeds the same inputs. Each must give a result or at least one error
// with a position, never a crash or a hang. (fuzz/caddyfile_fuzz.cc explores further with
// libFuzzer when built with clang and -DHSP_FUZZ=ON.)
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "caddyfile/ast.h"
#include "caddyfile/dump.h"
#include "caddyfile/lexer.h"

namespace hsp::caddyfile {
namespace {

namespace fs = std::filesystem;

bool no_env(const std::string&, std::string&) {
  return false;
}

std::vector<std::string> corpus() {
  std::vector<fs::path> paths;
  for (const auto& e : fs::directory_iterator(fs::path(HSP_GOLDEN_DIR) / "caddyfile")) {
    if (e.path().extension() == ".caddyfile") paths.push_back(e.path());
  }
  std::sort(paths.begin(), paths.end());
  std::vector<std::string> out;
  for (const fs::path& p : paths) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    out.push_back(ss.str());
  }
  return out;
}

// Parses and checks the contract: ok with a dumpable AST, or errors that each have a position.
void check(const std::string& text) {
  ParseOptions opts;
  opts.env = no_env;
  opts.base_dir = (fs::path(HSP_GOLDEN_DIR) / "caddyfile").string();
  auto r = parse(text, "Caddyfile", opts);
  if (r.ok()) {
    (void)dump(r.value());
    return;
  }
  ASSERT_FALSE(r.errors().empty());
  for (const Error& e : r.errors()) {
    ASSERT_GE(e.loc.line, 1) << e.str() << "\ninput:\n" << text;
    ASSERT_GE(e.loc.col, 1) << e.str();
    ASSERT_FALSE(e.message.empty());
  }
}

class Mutator {
 public:
  explicit Mutator(uint32_t seed) : rng_(seed) {}

  // Below n; mt19937's output is fixed by the standard, unlike the distributions.
  size_t below(size_t n) { return n == 0 ? 0 : rng_() % n; }

  std::string mutate(std::string s) {
    static const std::string kBytes =
        std::string("{}\"`\\\n#<$(),@ \t\r:*", 19) + std::string("\0\xff\xc3", 3);
    static const char* kWords[] = {"{",    "}",         "import ",   "<<EOF\n", "EOF\n",
                                   "{$X}", "{args[0]}", "{args[:]}", "(s) {\n", "\"",
                                   "`",    "\\\n",      "@m ",       "{}\n"};
    int rounds = 1 + static_cast<int>(below(4));
    for (int i = 0; i < rounds; ++i) {
      size_t pos = below(s.size() + 1);
      switch (below(7)) {
        case 0:  // truncate
          s.resize(pos);
          break;
        case 1:  // delete a range
          s.erase(pos, below(16) + 1);
          break;
        case 2:  // insert a special byte
          s.insert(pos, 1, kBytes[below(kBytes.size())]);
          break;
        case 3:  // insert a structural word
          s.insert(pos, kWords[below(sizeof(kWords) / sizeof(kWords[0]))]);
          break;
        case 4: {  // duplicate a chunk
          size_t len = std::min<size_t>(below(64) + 1, s.size() - std::min(pos, s.size()));
          s.insert(pos, s.substr(pos, len));
          break;
        }
        case 5:  // flip a byte
          if (!s.empty()) s[below(s.size())] ^= static_cast<char>(1 << below(8));
          break;
        default: {  // move a line elsewhere
          size_t nl = s.find('\n', pos);
          if (nl == std::string::npos) break;
          size_t end = s.find('\n', nl + 1);
          if (end == std::string::npos) end = s.size();
          std::string line = s.substr(nl, end - nl);
          s.erase(nl, end - nl);
          s.insert(below(s.size() + 1), line);
        }
      }
    }
    return s;
  }

 private:
  std::mt19937 rng_;
};

TEST(Mutation, DamagedGoldenInputsNeverCrash) {
  std::vector<std::string> seeds = corpus();
  ASSERT_FALSE(seeds.empty());
  Mutator m(20261204);
  size_t runs = 0;
  for (int round = 0; round < 80; ++round) {
    for (const std::string& seed : seeds) {
      check(m.mutate(seed));
      ++runs;
      if (HasFatalFailure()) return;
    }
  }
  EXPECT_GE(runs, 4000u);
}

TEST(Mutation, EveryPrefixOfEveryGoldenInput) {
  for (const std::string& seed : corpus()) {
    for (size_t n = 0; n <= seed.size(); n += 3) {
      check(seed.substr(0, n));
      if (HasFatalFailure()) return;
    }
  }
}

TEST(Mutation, HostileInputs) {
  check(std::string(1 << 20, 'a'));  // one huge token
  check("a {\n  respond " + std::string(1 << 20, 'x') + "\n}\n");
  check(std::string(100000, '{'));  // deep nesting without newlines
  std::string deep;
  for (int i = 0; i < 20000; ++i) deep += "d {\n";
  check(deep);  // deep nesting, one per line
  check(std::string(100000, '}') + "\n");
  std::string closes;
  for (int i = 0; i < 10000; ++i) closes += "}\n";
  check(closes);
  check(std::string("a {\n\0\0\0 {\n}\n}\n", 14));  // NUL bytes
  check("\xff\xfe\xfd {\n\xc3\x28 \xe2\x82\n}\n");  // malformed UTF-8
  check(std::string(50000, '"'));
  check(std::string(50000, '`'));
  check(std::string(50000, '\\'));
  check(std::string(50000, '<'));
  check("<<A\n" + std::string(100000, '\n'));
  std::string random;
  Mutator m(7);
  for (int i = 0; i < 200000; ++i) random += static_cast<char>(m.below(256));
  check(random);
}

TEST(Mutation, LexerAloneOnRandomBytes) {
  Mutator m(42);
  for (int i = 0; i < 2000; ++i) {
    std::string s;
    size_t len = m.below(200);
    for (size_t k = 0; k < len; ++k) s += "{}\"`\\\n#<$ aE:"[m.below(14)];
    LexOutput out = lex(s, "x", no_env);
    for (const LexToken& t : out.tokens) ASSERT_GE(t.token.loc.line, 1);
  }
}

}  // namespace
}  // namespace hsp::caddyfile
