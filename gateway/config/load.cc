// parse + compile in one call. Kept apart from compile.cc so that compile() can be linked and
// tested without the Caddyfile parser.
#include "caddyfile/ast.h"
#include "config/compile.h"

namespace hsp::config {

Result<Config> load_caddyfile_text(const std::string& text, const std::string& filename) {
  auto file = caddyfile::parse(text, filename);
  if (!file.ok()) return file.errors();
  return compile(file.value());
}

Result<Config> load_caddyfile(const std::string& path) {
  auto file = caddyfile::parse_file(path);
  if (!file.ok()) return file.errors();
  return compile(file.value());
}

}  // namespace hsp::config
