// Config -> deterministic JSON, for `hsp-gateway adapt` and the golden tests. Key order is
// fixed, defaults are printed, durations are strings like "2m0s" in Go's format.
#pragma once

#include <string>

#include "config/config.h"

namespace hsp::config {

std::string to_json(const Config& cfg, int indent = 2);

}  // namespace hsp::config
