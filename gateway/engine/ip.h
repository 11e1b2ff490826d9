// Binary IP addresses and CIDR ranges, parsed once per snapshot so that remote_ip / client_ip
// matchers and trusted-proxy checks on the request path compare bytes instead of text.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace hsp::engine {

struct IpAddr {
  std::array<uint8_t, 16> bytes{};  // IPv4 uses the first 4 bytes
  bool v4 = false;
};

// Accepts "1.2.3.4", "::1", "[::1]", "fe80::1%eth0" (the zone is dropped). An IPv4-mapped IPv6
// address ("::ffff:1.2.3.4") is unmapped to IPv4, because a dual-stack listener reports IPv4
// peers that way while users write IPv4 ranges.
bool parse_ip(std::string_view text, IpAddr& out);

struct IpRange {
  IpAddr base;
  int bits = 0;
  bool contains(const IpAddr& ip) const;
};

// "10.0.0.0/8", "::1/128" or a single address (a full-length range). On failure returns false
// and says why in *why.
bool parse_range(std::string_view text, IpRange& out, std::string* why);

bool in_ranges(const IpAddr& ip, const std::vector<IpRange>& ranges);
// Parses ip and tests it; false when ip does not parse.
bool in_ranges(std::string_view ip, const std::vector<IpRange>& ranges);

}  // namespace hsp::engine
