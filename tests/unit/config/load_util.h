// What the config unit tests share: compile Caddyfile text, expecting success or collecting the
// errors as "file:line:col: message" lines.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "config/compile.h"

namespace hsp::config::testing {

// The compiled config; a failure is reported (with every error) and an empty Config returned.
inline Config load(const std::string& text) {
  auto r = load_caddyfile_text(text, "Caddyfile");
  if (!r.ok()) {
    std::string all;
    for (const auto& e : r.errors()) all += e.str() + "\n";
    ADD_FAILURE() << all;
    return {};
  }
  return r.value();
}

// Every error, in order; empty when the text compiles.
inline std::vector<std::string> errors(const std::string& text) {
  auto r = load_caddyfile_text(text, "Caddyfile");
  std::vector<std::string> out;
  if (!r.ok())
    for (const auto& e : r.errors()) out.push_back(e.str());
  return out;
}

}  // namespace hsp::config::testing
