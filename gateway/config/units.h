// Go-compatible text forms of durations, as Caddy reads and prints them. parse_duration and
// parse_size are declared in config/compile.h; this header adds the printing side.
#pragma once

#include <string>

#include "config/config.h"

namespace hsp::config {

// Formats like Go's time.Duration.String(): "0s", "250ms", "1.5s", "2m0s", "1h30m0s", "-1ns".
std::string format_go_duration(Duration d);

}  // namespace hsp::config
