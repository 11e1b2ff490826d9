// Pieces of the adapt JSON that the compiler also needs: Caddy merges adjacent routes whose
// matchers encode to the same JSON, so compile.cc compares matcher sets through this encoding.
#pragma once

#include <nlohmann/json.hpp>

#include "config/config.h"

namespace hsp::config {

using Json = nlohmann::ordered_json;

// A matcher set in Caddy's JSON shape ({"host": [...], "path": [...], "not": [...]}); the
// name and source position are not part of it.
Json matcher_to_json(const MatcherSet& ms);
Json handler_to_json(const Handler& h);
Json route_to_json(const Route& r);

}  // namespace hsp::config
