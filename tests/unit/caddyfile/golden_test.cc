// Golden tests: every tests/golden/caddyfile/<name>.caddyfile is parsed; a success must match
// <name>.out (the dump() of the AST), a failure <name>.err (one error per line). Files under
// include/ are only imported, never parsed on their own. The golden directory is replaced by
// "<golden>" in both, so the files do not depend on where the tree is checked out.
//
// To regenerate after an intended change: HSP_UPDATE_GOLDEN=1 hsp_caddyfile_tests
// --gtest_filter='Golden*', then review the diff.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "caddyfile/ast.h"
#include "caddyfile/dump.h"

namespace hsp::caddyfile {
namespace {

namespace fs = std::filesystem;

const fs::path kDir = fs::path(HSP_GOLDEN_DIR) / "caddyfile";

// Golden inputs see a fixed environment, never the real one.
bool golden_env(const std::string& name, std::string& value) {
  static const std::map<std::string, std::string> vars = {
      {"GOLDEN_SITE", "golden.example.com"},
      {"GOLDEN_UPSTREAM", "127.0.0.1:9001"},
      {"GOLDEN_EMPTY", ""},
      {"GOLDEN_SPACED", "two words"},
      {"GOLDEN_DOMAINS", "a.example.com, b.example.com"}};
  auto it = vars.find(name);
  if (it == vars.end()) return false;
  value = it->second;
  return true;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) {
    s.replace(p, from.size(), to);
  }
  return s;
}

std::vector<fs::path> inputs() {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(kDir)) {
    if (e.is_regular_file() && e.path().extension() == ".caddyfile") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(Golden, CorpusIsThere) {
  EXPECT_GE(inputs().size(), 30u);
}

TEST(Golden, EveryInputMatchesItsExpectation) {
  bool update = std::getenv("HSP_UPDATE_GOLDEN") != nullptr;
  for (const fs::path& in : inputs()) {
    std::string name = in.filename().string();
    ParseOptions opts;
    opts.env = golden_env;
    opts.base_dir = kDir.string();
    auto r = parse(slurp(in), name, opts);
    std::string got;
    fs::path want_path = in;
    if (r.ok()) {
      got = dump(r.value(), name);
      want_path.replace_extension(".out");
    } else {
      for (const Error& e : r.errors()) got += e.str() + "\n";
      want_path.replace_extension(".err");
    }
    got = replace_all(got, kDir.string(), "<golden>");
    if (update) {
      fs::path other = want_path;
      other.replace_extension(r.ok() ? ".err" : ".out");
      fs::remove(other);
      std::ofstream(want_path, std::ios::binary) << got;
      continue;
    }
    ASSERT_TRUE(fs::exists(want_path))
        << name << (r.ok() ? " parsed, but there is no .out" : " failed, but there is no .err")
        << "; got:\n"
        << got;
    EXPECT_EQ(got, slurp(want_path)) << "golden file " << want_path;
  }
}

}  // namespace
}  // namespace hsp::caddyfile
