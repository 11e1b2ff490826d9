// libFuzzer target for the Caddyfile lexer and parser. Build with clang:
//   cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DHSP_FUZZ=ON \
//         -DHSP_BUILD_TESTS=OFF -DHSP_BUILD_BENCH=OFF
//   ninja -C build-fuzz hsp_caddyfile_fuzz
//   build-fuzz/fuzz/hsp_caddyfile_fuzz -max_total_time=120 tests/golden/caddyfile
// Imports are resolved against a directory that does not exist, so the fuzzer never reads
// real files; the environment is fixed so runs are reproducible.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "caddyfile/ast.h"
#include "caddyfile/dump.h"
#include "caddyfile/lexer.h"

namespace {

bool fuzz_env(const std::string& name, std::string& value) {
  if (name != "X") return false;
  value = "{args[0]} {";
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hsp::caddyfile;
  std::string text(reinterpret_cast<const char*>(data), size);
  ParseOptions opts;
  opts.env = fuzz_env;
  opts.base_dir = "/nonexistent-hsp-fuzz-dir";
  opts.max_tokens = 100'000;
  auto r = parse(text, "fuzz", opts);
  if (r.ok()) {
    (void)dump(r.value());
  } else {
    // The contract: at least one error, each with a position.
    if (r.errors().empty()) std::abort();
    for (const hsp::Error& e : r.errors()) {
      if (e.loc.line < 1 || e.loc.col < 1 || e.message.empty()) std::abort();
    }
  }
  return 0;
}
