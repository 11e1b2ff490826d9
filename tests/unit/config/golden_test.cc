// Golden tests: tests/golden/adapt/<name>.caddyfile -> <name>.json (the `adapt` output), and
// tests/golden/compile-errors/<name>.caddyfile -> <name>.errors (one error per line).
// HSP_UPDATE_GOLDEN=1 rewrites the expected files from the current output; review the diff.
// The adapt goldens run in tests/golden/adapt, so that files they name (CA certificates the
// compiler checks) are given relative to it (testdata/).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "config/adapt_json.h"
#include "config/compile.h"

namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary);
  out << s;
}

bool updating() {
  const char* v = std::getenv("HSP_UPDATE_GOLDEN");
  return v && std::string(v) == "1";
}

std::vector<fs::path> inputs(const std::string& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(fs::path(HSP_GOLDEN_DIR) / dir))
    if (e.path().extension() == ".caddyfile") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// Switches the working directory for the scope of a test.
class ScopedCwd {
 public:
  explicit ScopedCwd(const fs::path& dir) : old_(fs::current_path()) { fs::current_path(dir); }
  ~ScopedCwd() { fs::current_path(old_); }
  ScopedCwd(const ScopedCwd&) = delete;
  ScopedCwd& operator=(const ScopedCwd&) = delete;

 private:
  fs::path old_;
};

TEST(GoldenAdapt, EveryCaseMatches) {
  ScopedCwd cwd(fs::path(HSP_GOLDEN_DIR) / "adapt");
  auto files = inputs("adapt");
  EXPECT_GE(files.size(), 25u) << "the adapt goldens must cover every directive";
  for (const auto& in : files) {
    SCOPED_TRACE(in.filename().string());
    auto cfg = hsp::config::load_caddyfile_text(read_file(in), "Caddyfile");
    std::string got;
    if (cfg.ok()) {
      got = hsp::config::to_json(cfg.value());
    } else {
      for (const auto& e : cfg.errors()) got += "ERROR " + e.str() + "\n";
    }
    fs::path want_path = in;
    want_path.replace_extension(".json");
    if (updating()) write_file(want_path, got);
    EXPECT_TRUE(cfg.ok()) << got;
    EXPECT_EQ(read_file(want_path), got);
  }
}

TEST(GoldenCompileErrors, EveryCaseMatches) {
  auto files = inputs("compile-errors");
  EXPECT_GE(files.size(), 15u);
  for (const auto& in : files) {
    SCOPED_TRACE(in.filename().string());
    auto cfg = hsp::config::load_caddyfile_text(read_file(in), "Caddyfile");
    std::string got;
    if (!cfg.ok())
      for (const auto& e : cfg.errors()) got += e.str() + "\n";
    fs::path want_path = in;
    want_path.replace_extension(".errors");
    if (updating()) write_file(want_path, got);
    EXPECT_FALSE(cfg.ok()) << "expected a load error";
    EXPECT_EQ(read_file(want_path), got);
  }
}

}  // namespace
