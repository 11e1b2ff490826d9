// File imports: globs, paths relative to the importing file, cycles, errors inside imported
// files. Each test writes its files into a fresh temporary directory.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "caddyfile/ast.h"
#include "caddyfile/dump.h"

namespace hsp::caddyfile {
namespace {

namespace fs = std::filesystem;

class ImportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "hsp-caddyfile-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void write(const std::string& rel, const std::string& text) {
    fs::path p = fs::path(dir_) / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
  }

  Result<File> parse_main(const std::string& text) {
    write("Caddyfile", text);
    return parse_file(dir_ + "/Caddyfile");
  }

  std::vector<std::string> errors(const Result<File>& r) {
    std::vector<std::string> out;
    if (r.ok()) return {"no error"};
    for (const Error& e : r.errors()) out.push_back(e.str());
    return out;
  }

  std::string dir_;
};

TEST_F(ImportTest, ImportsDirectivesFromAFile) {
  write("common.caddy", "encode gzip\nheader X-A {args[0]}\n");
  auto r = parse_main("a.com {\n  import common.caddy one\n  respond hi\n}\n");
  ASSERT_TRUE(r.ok()) << errors(r)[0];
  const auto& ds = r.value().blocks[0].directives;
  ASSERT_EQ(ds.size(), 3u);
  EXPECT_EQ(ds[0].name.text, "encode");
  EXPECT_EQ(ds[0].name.loc.str(), dir_ + "/common.caddy:1:1");
  EXPECT_EQ(ds[0].name.imported_from,
            std::vector<std::string>{dir_ + "/Caddyfile:2:3 import common.caddy one"});
  EXPECT_EQ(ds[1].args[1].text, "one");
  EXPECT_EQ(ds[2].name.text, "respond");
}

TEST_F(ImportTest, GlobImportsSiteBlocksInNameOrder) {
  write("sites/b.caddy", "b.com {\n  respond b\n}\n");
  write("sites/a.caddy", "a.com {\n  respond a\n}\n");
  write("sites/notes.txt", "this is not imported\n");
  fs::create_directories(fs::path(dir_) / "sites/sub.caddy");  // directories are skipped
  auto r = parse_main("{\n  admin off\n}\nimport sites/*.caddy\nc.com {\n}\n");
  ASSERT_TRUE(r.ok()) << errors(r)[0];
  const File& f = r.value();
  ASSERT_EQ(f.blocks.size(), 3u);
  EXPECT_EQ(f.blocks[0].keys[0].text, "a.com");
  EXPECT_EQ(f.blocks[1].keys[0].text, "b.com");
  EXPECT_EQ(f.blocks[2].keys[0].text, "c.com");
}

TEST_F(ImportTest, GlobWithoutMatchesImportsNothing) {
  auto r = parse_main("import conf.d/*\na.com {\n}\n");
  ASSERT_TRUE(r.ok()) << errors(r)[0];
  EXPECT_EQ(r.value().blocks.size(), 1u);
}

TEST_F(ImportTest, NestedImportsAreRelativeToTheImportingFile) {
  write("conf/site.caddy", "a.com {\n  import parts/proxy.caddy\n}\n");
  write("conf/parts/proxy.caddy", "reverse_proxy 127.0.0.1:9000\n");
  auto r = parse_main("import conf/site.caddy\n");
  ASSERT_TRUE(r.ok()) << errors(r)[0];
  const Directive& d = r.value().blocks[0].directives[0];
  EXPECT_EQ(d.name.text, "reverse_proxy");
  EXPECT_EQ(d.name.imported_from.size(), 2u);
}

TEST_F(ImportTest, SnippetsDefinedInAnImportedFile) {
  // The snippet's {args} belong to its own import, not to the file's import.
  write("snippets.caddy", "(proxy) {\n  reverse_proxy {args[0]}\n}\n");
  auto r = parse_main("import snippets.caddy unused\na.com {\n  import proxy 127.0.0.1:1\n}\n");
  ASSERT_TRUE(r.ok()) << errors(r)[0];
  const Directive& d = r.value().blocks[0].directives[0];
  EXPECT_EQ(d.args[0].text, "127.0.0.1:1");
  EXPECT_EQ(d.name.loc.str(), dir_ + "/snippets.caddy:2:3");
}

TEST_F(ImportTest, AbsolutePathsAndBaseDirForInMemoryText) {
  write("x/part.caddy", "respond x\n");
  ParseOptions opts;
  opts.base_dir = dir_ + "/x";
  auto r = parse("a {\n  import part.caddy\n}\n", "Caddyfile", opts);
  ASSERT_TRUE(r.ok()) << errors(r)[0];
  EXPECT_EQ(r.value().blocks[0].directives[0].name.text, "respond");
  auto abs = parse("a {\n  import " + dir_ + "/x/part.caddy\n}\n", "Caddyfile");
  ASSERT_TRUE(abs.ok()) << errors(abs)[0];
}

TEST_F(ImportTest, FileCycleIsAnError) {
  write("a.caddy", "import b.caddy\n");
  write("b.caddy", "import a.caddy\n");
  auto r = parse_main("x {\n  import a.caddy\n}\n");
  EXPECT_EQ(errors(r),
            std::vector<std::string>{dir_ + "/b.caddy:1:1: import cycle: file '" + dir_ +
                                     "/a.caddy' is imported again while it is being imported "
                                     "(imported via " +
                                     dir_ + "/a.caddy:1:1 import b.caddy, via " + dir_ +
                                     "/Caddyfile:2:3 import a.caddy)"});
}

TEST_F(ImportTest, ImportingTheMainFileIsACycle) {
  auto r = parse_main("x {\n}\nimport Caddyfile\n");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(errors(r)[0].find("import cycle: file '" + dir_ + "/Caddyfile'"), std::string::npos)
      << errors(r)[0];
}

TEST_F(ImportTest, ErrorsInImportedFilesSayWhereTheyWereImported) {
  write("bad.caddy", "respond \"unclosed\n");
  auto r = parse_main("a {\n  import bad.caddy\n}\n");
  EXPECT_EQ(errors(r),
            std::vector<std::string>{dir_ + "/bad.caddy:1:9: unclosed quote: the '\"' opened at " +
                                     dir_ + "/bad.caddy:1:9 is never closed (imported via " + dir_ +
                                     "/Caddyfile:2:3 import bad.caddy)"});
  write("open.caddy", "handle {\n  respond x\n");
  r = parse_main("a {\n  import open.caddy\n}\n");
  EXPECT_EQ(errors(r), std::vector<std::string>{
                           dir_ +
                           "/open.caddy:3:1: unexpected end of file, expected '}' to close "
                           "the block opened at " +
                           dir_ + "/open.caddy:1:8 (imported via " + dir_ +
                           "/Caddyfile:2:3 import open.caddy)"});
  write("extra.caddy", "respond x\n}\n");
  r = parse_main("a {\n  import extra.caddy\n}\n");
  EXPECT_EQ(errors(r),
            std::vector<std::string>{dir_ +
                                     "/extra.caddy:2:1: found '}', expected a directive (no block "
                                     "is open here) (imported via " +
                                     dir_ + "/Caddyfile:2:3 import extra.caddy)"});
  write("mid.caddy", "respond x {\n  y }\n");
  r = parse_main("a {\n  import mid.caddy\n}\n");
  EXPECT_EQ(errors(r),
            std::vector<std::string>{dir_ +
                                     "/mid.caddy:2:5: found '}', expected end of line ('}' closes "
                                     "a block only on its own line) (imported via " +
                                     dir_ + "/Caddyfile:2:3 import mid.caddy)"});
}

TEST_F(ImportTest, MissingFileAndDirectory) {
  fs::create_directories(fs::path(dir_) / "adir");
  auto r = parse_main("a {\n  import nope.caddy\n  import adir\n}\n");
  EXPECT_EQ(errors(r), (std::vector<std::string>{
                           dir_ +
                               "/Caddyfile:2:3: import: no snippet or file named 'nope.caddy' "
                               "(no snippet of that name is defined above this line, and " +
                               dir_ + "/nope.caddy does not exist)",
                           dir_ + "/Caddyfile:3:3: import: '" + dir_ +
                               "/adir' is a directory (use a glob such as dir/*)"}));
}

TEST_F(ImportTest, ParseFileReportsAMissingFile) {
  auto r = parse_file(dir_ + "/missing");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.errors()[0].str(),
            dir_ + "/missing: cannot read the Caddyfile: No such file or directory");
}

TEST_F(ImportTest, SnippetUsedFromAnotherFileGetsThatFilesChain) {
  write("site.caddy", "a.com {\n  import logging\n}\n");
  auto r = parse_main("(logging) {\n  log\n}\nimport site.caddy\n");
  ASSERT_TRUE(r.ok()) << errors(r)[0];
  const Directive& d = r.value().blocks[0].directives[0];
  EXPECT_EQ(d.name.loc.str(), dir_ + "/Caddyfile:2:3");
  EXPECT_EQ(d.name.imported_from,
            (std::vector<std::string>{dir_ + "/Caddyfile:4:1 import site.caddy",
                                      dir_ + "/site.caddy:2:3 import logging"}));
}

}  // namespace
}  // namespace hsp::caddyfile
