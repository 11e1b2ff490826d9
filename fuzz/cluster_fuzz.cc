// libFuzzer target for the cluster's parsers (cluster/): what a peer can send to a server's
// admin or health listener and what a push carries. Build with clang:
//   cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DHSP_FUZZ=ON \
//         -DHSP_BUILD_TESTS=OFF -DHSP_BUILD_BENCH=OFF
//   ninja -C build-fuzz hsp_cluster_fuzz
//   build-fuzz/fuzz/hsp_cluster_fuzz -max_total_time=300 fuzz/corpus/cluster
//         (seeds: fuzz/corpus/cluster_make_seeds.py; reproducers: fuzz/corpus/cluster_repro/)
//
// The first input byte (mod 5) picks the parser; the rest is its input. Invariants (abort on
// violation, with a line on stderr):
//   0 parse_request_head: an accepted head is at most 16 KiB and ends with its first CRLF CRLF
//     (the server cuts there); a token method, an origin-form target without SP/CTL; field names
//     non-empty lower-case tokens, values trimmed and free of CR, LF, NUL and other CTLs but HTAB;
//     no transfer-encoding; content_length is the content-length value (digits) or 0 without one;
//     printed again, the head parses to the same head.
//   1 parse_host_port: an accepted host is non-empty, the port 1-65535 in decimal digits; printed
//     again ("[host]:port" when the host holds a colon) it parses to the same parts.
//   2 address_in_cidr: input "ip\ncidr" (no newline: ip alone, tried against cidrs made from it);
//     never crashes; false when either side holds a NUL or the prefix length is not decimal
//     digits; for IPv4 on both sides the answer is the one of 32-bit masking; a valid IPv4 x lies
//     in x/32, x/0 and 0.0.0.0/0, a valid IPv6 x in x/128 and ::/0; a match for net/n is a match
//     for net/n-1.
//   3 bundle_from_json: accepted file paths lie in certificates/ or acme/challenge_tokens/, have no
//     empty, '.', '..' or hidden component and no control byte, are at most 1024 bytes, sorted and
//     unique; one file per input entry, whose "mode" is 0600 or 0644 as written in the JSON (not
//     after narrowing); data at most 1 MiB; bundle_to_json of the result parses back to the same
//     bundle with the same digest.
//   4 PushKey::open with a fixed key: the first byte (mod 64) is the AAD length, the rest the
//     body. open never accepts the fuzzer's bytes; seal then open gives them back; opening under
//     another AAD, another key or with one byte changed fails.
#include <arpa/inet.h>

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/admin_http.h"
#include "cluster/bundle.h"
#include "cluster/seal.h"

namespace {

using namespace hsp::cluster;

[[noreturn]] void fail(const char* what, std::string_view input) {
  std::fprintf(stderr, "hsp_cluster_fuzz: invariant violated: %s (input %zu bytes)\n", what,
               input.size());
  std::abort();
}
#define EXPECT(cond, input)          \
  do {                               \
    if (!(cond)) fail(#cond, input); \
  } while (0)

bool is_tchar(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}
bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}
bool is_ctl(char c) {
  return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
}

void request_head(std::string_view in) {
  auto r = parse_request_head(in);
  if (!r) {
    EXPECT(!r.errors().empty() && !r.errors().front().message.empty(), in);
    return;
  }
  const RequestHead& h = *r;
  EXPECT(in.size() <= 16 * 1024, in);
  EXPECT(in.size() >= 4 && in.find("\r\n\r\n") == in.size() - 4, in);
  EXPECT(!h.method.empty(), in);
  for (char c : h.method) EXPECT(is_tchar(c), in);
  EXPECT(!h.target.empty() && h.target.front() == '/', in);
  for (char c : h.target) EXPECT(!is_ctl(c) && c != ' ', in);
  for (const auto& [name, value] : h.headers) {
    EXPECT(!name.empty(), in);
    for (char c : name) EXPECT(is_tchar(c) && !(c >= 'A' && c <= 'Z'), in);
    EXPECT(name != "transfer-encoding", in);
    for (char c : value) EXPECT(!is_ctl(c) || c == '\t', in);
    if (!value.empty()) {
      EXPECT(value.front() != ' ' && value.front() != '\t', in);
      EXPECT(value.back() != ' ' && value.back() != '\t', in);
    }
  }
  auto cl = h.headers.find("content-length");
  if (cl == h.headers.end()) {
    EXPECT(h.content_length == 0, in);
  } else {
    EXPECT(all_digits(cl->second), in);
    size_t n = 0;
    auto [p, ec] = std::from_chars(cl->second.data(), cl->second.data() + cl->second.size(), n);
    EXPECT(ec == std::errc() && n == h.content_length, in);
  }

  std::string again = h.method + " " + h.target + " HTTP/1.1\r\n";
  for (const auto& [name, value] : h.headers) again += name + ": " + value + "\r\n";
  again += "\r\n";
  if (again.size() > 16 * 1024) return;  // "name:value" printed as "name: value" grew past it
  auto r2 = parse_request_head(again);
  EXPECT(r2.ok(), in);
  EXPECT(r2->method == h.method && r2->target == h.target && r2->headers == h.headers &&
             r2->content_length == h.content_length,
         in);
}

void host_port(std::string_view in) {
  auto r = parse_host_port(in);
  if (!r) return;
  EXPECT(!r->host.empty(), in);
  EXPECT(all_digits(r->port), in);
  unsigned long port = std::strtoul(r->port.c_str(), nullptr, 10);
  EXPECT(port >= 1 && port <= 65535, in);
  std::string again = r->host.find(':') == std::string::npos ? r->host + ":" + r->port
                                                             : "[" + r->host + "]:" + r->port;
  auto r2 = parse_host_port(again);
  EXPECT(r2.ok() && r2->host == r->host && r2->port == r->port, in);
}

bool ipv4(const std::string& text, uint32_t& out) {
  in_addr a{};
  if (text.find('\0') != std::string::npos || inet_pton(AF_INET, text.c_str(), &a) != 1)
    return false;
  out = ntohl(a.s_addr);
  return true;
}
bool ipv6(const std::string& text) {
  in6_addr a{};
  return text.find('\0') == std::string::npos && inet_pton(AF_INET6, text.c_str(), &a) == 1;
}

void cidr_match(std::string_view in) {
  size_t nl = in.find('\n');
  std::string ip(in.substr(0, nl));
  uint32_t x = 0;
  if (nl == std::string_view::npos) {
    (void)address_in_cidr(ip, ip);
    (void)address_in_cidr(ip, ip + "/");
    if (ipv4(ip, x)) {
      EXPECT(address_in_cidr(ip, ip + "/32"), in);
      EXPECT(address_in_cidr(ip, ip + "/0"), in);
      EXPECT(address_in_cidr(ip, "0.0.0.0/0"), in);
      EXPECT(!address_in_cidr(ip, ip + "/33"), in);
    } else if (ipv6(ip)) {
      EXPECT(address_in_cidr(ip, ip + "/128"), in);
      EXPECT(address_in_cidr(ip, "::/0"), in);
      EXPECT(!address_in_cidr(ip, ip + "/129"), in);
    }
    return;
  }
  std::string cidr(in.substr(nl + 1));
  bool got = address_in_cidr(ip, cidr);
  size_t slash = cidr.find('/');
  std::string net = slash == std::string::npos ? cidr : cidr.substr(0, slash);
  std::string tail = slash == std::string::npos ? "" : cidr.substr(slash + 1);
  if (ip.find('\0') != std::string::npos || cidr.find('\0') != std::string::npos) EXPECT(!got, in);
  int bits = 0;
  auto [p, ec] = std::from_chars(tail.data(), tail.data() + tail.size(), bits);
  if (!all_digits(tail) || ec != std::errc()) {
    EXPECT(!got, in);
    return;
  }
  uint32_t y = 0;
  if (ipv4(ip, x) && ipv4(net, y)) {
    uint32_t mask = bits == 0 ? 0 : bits >= 32 ? ~uint32_t{0} : ~uint32_t{0} << (32 - bits);
    EXPECT(got == (bits <= 32 && (x & mask) == (y & mask)), in);
  }
  if (got && bits > 0) EXPECT(address_in_cidr(ip, net + "/" + std::to_string(bits - 1)), in);
}

// Our own reading of the path rules, written apart from bundle.cc's.
bool path_ok(const std::string& path) {
  std::string_view rest;
  if (path.rfind("certificates/", 0) == 0) {
    rest = std::string_view(path).substr(13);
  } else if (path.rfind("acme/challenge_tokens/", 0) == 0) {
    rest = std::string_view(path).substr(22);
  } else {
    return false;
  }
  if (path.size() > 1024) return false;
  for (;;) {
    size_t slash = rest.find('/');
    std::string_view part = rest.substr(0, slash);
    if (part.empty() || part.front() == '.' || part == "..") return false;
    for (char c : part)
      if (is_ctl(c)) return false;
    if (slash == std::string_view::npos) return true;
    rest.remove_prefix(slash + 1);
  }
}

void bundle(std::string_view in) {
  auto r = bundle_from_json(in);
  if (!r) return;
  const Bundle& b = *r;
  auto j = nlohmann::json::parse(in, nullptr, false);
  EXPECT(j.is_object() && j.contains("files") && j["files"].is_array(), in);
  EXPECT(j["files"].size() == b.files.size(), in);
  for (const auto& f : j["files"]) {
    EXPECT(f.is_object() && f.contains("mode") && f["mode"].is_number_unsigned(), in);
    uint64_t mode = f["mode"].get<uint64_t>();
    EXPECT(mode == 0600 || mode == 0644, in);
  }
  for (size_t i = 0; i < b.files.size(); ++i) {
    const BundleFile& f = b.files[i];
    EXPECT(path_ok(f.path), in);
    EXPECT(f.mode == 0600 || f.mode == 0644, in);
    EXPECT(f.data.size() <= (size_t{1} << 20), in);
    if (i > 0) EXPECT(b.files[i - 1].path < f.path, in);
  }
  auto r2 = bundle_from_json(bundle_to_json(b));
  EXPECT(r2.ok(), in);
  EXPECT(r2->version == b.version && r2->controller == b.controller &&
             r2->caddyfile == b.caddyfile && r2->files == b.files,
         in);
  EXPECT(bundle_digest(*r2) == bundle_digest(b), in);
}

const PushKey& key(int which) {
  static const PushKey k0 = *PushKey::from_secret("hsp cluster fuzz secret, first");
  static const PushKey k1 = *PushKey::from_secret("hsp cluster fuzz secret, second");
  return which == 0 ? k0 : k1;
}

void sealed(std::string_view in) {
  if (in.empty()) return;
  size_t aad_len = std::min<size_t>(static_cast<unsigned char>(in[0]) % 64, in.size() - 1);
  std::string_view aad = in.substr(1, aad_len), body = in.substr(1 + aad_len);
  EXPECT(!key(0).open(aad, body).ok(), in);

  std::string s = key(0).seal(aad, body);
  EXPECT(s.size() == 4 + 12 + body.size() + 16 && s.rfind("HSP1", 0) == 0, in);
  auto back = key(0).open(aad, s);
  EXPECT(back.ok() && *back == body, in);
  EXPECT(!key(1).open(aad, s).ok(), in);
  EXPECT(!key(0).open(std::string(aad) + "/", s).ok(), in);
  std::string t = s;
  size_t at = (aad_len * 131 + body.size()) % t.size();
  t[at] = static_cast<char>(t[at] ^ (1 + static_cast<unsigned char>(in[0]) % 255));
  EXPECT(!key(0).open(aad, t).ok(), in);
  EXPECT(!key(0).open(aad, std::string_view(s).substr(0, s.size() - 1)).ok(), in);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 5) {
    case 0:
      request_head(in);
      break;
    case 1:
      host_port(in);
      break;
    case 2:
      cidr_match(in);
      break;
    case 3:
      bundle(in);
      break;
    default:
      sealed(in);
      break;
  }
  return 0;
}
