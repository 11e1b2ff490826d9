// Caddyfile server blocks -> typed Config. Directive semantics, Caddy's directive order, matcher
// resolution and address parsing live here. Every unsupported directive, sub-directive or option
// is an error naming it and its position; nothing is silently ignored.
#pragma once

#include <string>

#include "caddyfile/ast.h"
#include "config/config.h"

namespace hsp::config {

// Compiles a parsed Caddyfile. Collects every error it can find rather than stopping at the
// first one.
Result<Config> compile(const caddyfile::File& file);

// parse + compile in one step, for the CLI and tests.
Result<Config> load_caddyfile_text(const std::string& text, const std::string& filename);
Result<Config> load_caddyfile(const std::string& path);

// Parses Caddy durations: "250ms", "1.5s", "2m", "1h30m", "1d" as Caddy does
// (caddy.ParseDuration: Go's time.ParseDuration plus `d` for days). Like Caddy, a bare number
// other than "0" is an error (Go requires a unit). Returns false on bad input.
bool parse_duration(const std::string& text, Duration& out);
// Parses sizes: "10MB", "1GiB", "512KB", "1024" (bytes) as Caddy's humanize-based parsing.
bool parse_size(const std::string& text, int64_t& out);

}  // namespace hsp::config
