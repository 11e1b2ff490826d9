// IP address and CIDR parsing for matchers and trusted-proxy checks (see ip.h).
#include "engine/ip.h"

#include <arpa/inet.h>

#include <cstring>

#include "engine/engine.h"

namespace hsp::engine {

bool parse_ip(std::string_view text, IpAddr& out) {
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
  }
  size_t zone = text.find('%');
  if (zone != std::string_view::npos) text = text.substr(0, zone);
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return false;

  char buf[INET6_ADDRSTRLEN];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';

  out = IpAddr{};
  if (text.find(':') == std::string_view::npos) {
    // inet_pton(AF_INET) takes only the dotted-quad form, like Go's netip.
    if (inet_pton(AF_INET, buf, out.bytes.data()) != 1) return false;
    out.v4 = true;
    return true;
  }
  if (inet_pton(AF_INET6, buf, out.bytes.data()) != 1) return false;
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(out.bytes.data(), kMapped, 12) == 0) {
    std::memmove(out.bytes.data(), out.bytes.data() + 12, 4);
    std::memset(out.bytes.data() + 4, 0, 12);
    out.v4 = true;
  }
  return true;
}

bool IpRange::contains(const IpAddr& ip) const {
  if (ip.v4 != base.v4) return false;
  int full = bits / 8;
  if (std::memcmp(ip.bytes.data(), base.bytes.data(), static_cast<size_t>(full)) != 0) {
    return false;
  }
  int rest = bits % 8;
  if (rest == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (ip.bytes[static_cast<size_t>(full)] & mask) ==
         (base.bytes[static_cast<size_t>(full)] & mask);
}

bool parse_range(std::string_view text, IpRange& out, std::string* why) {
  size_t slash = text.find('/');
  std::string_view addr = text.substr(0, slash);
  if (!parse_ip(addr, out.base)) {
    if (why) *why = "invalid IP address '" + std::string(addr) + "'";
    return false;
  }
  int max_bits = out.base.v4 ? 32 : 128;
  if (slash == std::string_view::npos) {
    out.bits = max_bits;
    return true;
  }
  std::string_view len = text.substr(slash + 1);
  int bits = 0;
  if (len.empty() || len.size() > 3) bits = -1;
  for (char c : len) {
    if (c < '0' || c > '9') {
      bits = -1;
      break;
    }
    bits = bits * 10 + (c - '0');
  }
  // "::ffff:10.0.0.0/104" was unmapped to IPv4 above; its prefix length counts IPv6 bits.
  bool was_mapped = out.base.v4 && addr.find(':') != std::string_view::npos;
  if (was_mapped && bits >= 96) bits -= 96;
  if (bits < 0 || bits > max_bits) {
    if (why) *why = "invalid prefix length in CIDR '" + std::string(text) + "'";
    return false;
  }
  out.bits = bits;
  return true;
}

bool in_ranges(const IpAddr& ip, const std::vector<IpRange>& ranges) {
  for (const auto& r : ranges) {
    if (r.contains(ip)) return true;
  }
  return false;
}

bool in_ranges(std::string_view ip, const std::vector<IpRange>& ranges) {
  IpAddr a;
  return parse_ip(ip, a) && in_ranges(a, ranges);
}

bool ip_in_ranges(std::string_view ip, const std::vector<std::string>& cidrs) {
  IpAddr a;
  if (!parse_ip(ip, a)) return false;
  for (const auto& c : cidrs) {
    IpRange r;
    if (parse_range(c, r, nullptr) && r.contains(a)) return true;
  }
  return false;
}

}  // namespace hsp::engine
