// Hop-by-hop header removal as Caddy 2.6 does it (see hop_by_hop.h).
#include "http/hop_by_hop.h"

#include <algorithm>
#include <array>
#include <vector>

namespace hsp::http {

namespace {

constexpr std::array<std::string_view, 10> kHopFields = {
    "Alt-Svc",
    "Connection",
    "Proxy-Connection",
    "Keep-Alive",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Te",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
};

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

template <typename F>
void for_each_element(std::string_view value, F&& f) {
  while (true) {
    size_t comma = value.find(',');
    std::string_view el = trim(value.substr(0, comma));
    if (!el.empty()) f(el);
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
}

}  // namespace

bool has_token(const HeaderMap& headers, std::string_view field, std::string_view token) {
  bool found = false;
  for (const auto& f : headers) {
    if (!iequals(f.first, field)) continue;
    for_each_element(f.second, [&](std::string_view el) {
      if (iequals(el, token)) found = true;
    });
    if (found) return true;
  }
  return false;
}

std::string upgrade_type(const HeaderMap& headers) {
  if (!has_token(headers, "Connection", "upgrade")) return {};
  const std::string* up = headers.get("Upgrade");
  if (up == nullptr) return {};
  std::string out = *up;
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  }
  return out;
}

namespace {

void remove_connection_named(HeaderMap& headers) {
  // Collect first: removing while walking the Connection values would invalidate them.
  std::vector<std::string> named;
  for (const auto& f : headers) {
    if (!iequals(f.first, "Connection")) continue;
    for_each_element(f.second, [&](std::string_view el) { named.emplace_back(el); });
  }
  for (const auto& n : named) headers.remove(n);
}

// One pass over the fields instead of one per hop-by-hop name (this runs on every response).
void remove_hop_fields(HeaderMap& headers) {
  std::erase_if(headers.fields(), [](const HeaderMap::Field& f) {
    return std::any_of(kHopFields.begin(), kHopFields.end(),
                       [&](std::string_view n) { return iequals(f.first, n); });
  });
}

}  // namespace

void remove_hop_by_hop(HeaderMap& headers) {
  remove_connection_named(headers);
  remove_hop_fields(headers);
}

void strip_request_hop_by_hop(HeaderMap& headers) {
  // Same order as Caddy: the upgrade is read before anything is removed, TE after the fields
  // named by Connection are gone (so "Connection: te" drops TE entirely).
  std::string up = upgrade_type(headers);
  remove_connection_named(headers);
  bool te_trailers = has_token(headers, "Te", "trailers");
  remove_hop_fields(headers);
  // Tells upstream applications that we pass trailers through (golang/go#21096), only when the
  // client said it cares.
  if (te_trailers) headers.set("Te", "trailers");
  if (!up.empty()) {
    headers.set("Connection", "Upgrade");
    headers.set("Upgrade", up);
  }
}

}  // namespace hsp::http
