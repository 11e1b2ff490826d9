// Durations and sizes in the forms Caddy accepts: Go's time.ParseDuration plus Caddy's `d` for
// days, and go-humanize's ParseBytes for sizes. Written from the documented behaviour of those
// functions so that the same Caddyfile values are accepted and rejected.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "config/compile.h"
#include "config/units.h"

namespace hsp::config {
namespace {

// Go's time.ParseDuration on text without the `d` extension.
bool parse_go_duration(const std::string& s, int64_t& out) {
  size_t i = 0;
  bool neg = false;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) {
    neg = s[i] == '-';
    ++i;
  }
  if (s.substr(i) == "0") {
    out = 0;
    return true;
  }
  if (i == s.size()) return false;
  unsigned __int128 total = 0;
  const unsigned __int128 limit = static_cast<unsigned __int128>(1) << 63;
  while (i < s.size()) {
    if (!(s[i] == '.' || (s[i] >= '0' && s[i] <= '9'))) return false;
    // Integer part.
    unsigned __int128 v = 0;
    size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      v = v * 10 + static_cast<unsigned>(s[i] - '0');
      if (v > limit) return false;
      ++i;
    }
    bool pre = i > start;
    // Fraction.
    unsigned __int128 f = 0;
    unsigned __int128 scale = 1;
    bool post = false;
    if (i < s.size() && s[i] == '.') {
      ++i;
      size_t fstart = i;
      bool overflow = false;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
        if (!overflow) {
          if (f > (std::numeric_limits<uint64_t>::max() - 9) / 10) {
            overflow = true;  // further digits cannot change the result meaningfully
          } else {
            f = f * 10 + static_cast<unsigned>(s[i] - '0');
            scale *= 10;
          }
        }
        ++i;
      }
      post = i > fstart;
    }
    if (!pre && !post) return false;
    // Unit.
    size_t ustart = i;
    while (i < s.size() && s[i] != '.' && !(s[i] >= '0' && s[i] <= '9')) ++i;
    std::string unit = s.substr(ustart, i - ustart);
    uint64_t mult = 0;
    if (unit == "ns")
      mult = 1;
    else if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs")
      mult = 1000;
    else if (unit == "ms")
      mult = 1000000;
    else if (unit == "s")
      mult = 1000000000ULL;
    else if (unit == "m")
      mult = 60ULL * 1000000000ULL;
    else if (unit == "h")
      mult = 3600ULL * 1000000000ULL;
    else
      return false;  // missing or unknown unit
    if (v > limit / mult) return false;
    v *= mult;
    if (f > 0) {
      // Go: v += uint64(float64(f) * (float64(unit) / scale)).
      long double frac =
          static_cast<long double>(static_cast<uint64_t>(f)) *
          (static_cast<long double>(mult) / static_cast<long double>(static_cast<uint64_t>(scale)));
      v += static_cast<unsigned __int128>(static_cast<uint64_t>(frac));
      if (v > limit) return false;
    }
    total += v;
    if (total > limit) return false;
  }
  if (!neg && total == limit) return false;
  out = neg ? -static_cast<int64_t>(total - 1) - 1 : static_cast<int64_t>(total);
  return true;
}

void fmt_frac(std::string& tail, uint64_t& v, int prec) {
  // Writes ".ddd" for the low `prec` digits of v, without trailing zeros, in front of tail.
  std::string digits;
  bool print = false;
  for (int i = 0; i < prec; ++i) {
    int digit = static_cast<int>(v % 10);
    print = print || digit != 0;
    if (print) digits.insert(digits.begin(), static_cast<char>('0' + digit));
    v /= 10;
  }
  if (print) tail = "." + digits + tail;
}

}  // namespace

bool parse_duration(const std::string& text, Duration& out) {
  if (text.size() > 1024 || text.empty()) return false;
  // Caddy rewrites every "<number>d" into hours before handing the text to Go.
  std::string s = text;
  bool in_number = false;
  size_t num_start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char ch = s[i];
    if (ch == 'd') {
      std::string days = s.substr(num_start, i - num_start);
      if (days.empty()) return false;
      char* end = nullptr;
      double d = std::strtod(days.c_str(), &end);
      if (end != days.c_str() + days.size() || !std::isfinite(d)) return false;
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.17g", d * 24.0);
      std::string hours = buf;
      s = s.substr(0, num_start) + hours + "h" + s.substr(i + 1);
      i = num_start + hours.size();  // continue after the inserted 'h'
      in_number = false;
      continue;
    }
    if (!in_number) num_start = i;
    in_number = (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '+';
  }
  int64_t ns = 0;
  if (!parse_go_duration(s, ns)) return false;
  out = Duration(ns);
  return true;
}

bool parse_size(const std::string& text, int64_t& out) {
  size_t last_digit = 0;
  std::string num;
  while (last_digit < text.size()) {
    char c = text[last_digit];
    if (!((c >= '0' && c <= '9') || c == '.' || c == ',')) break;
    if (c != ',') num += c;
    ++last_digit;
  }
  if (num.empty()) return false;
  char* end = nullptr;
  double f = std::strtod(num.c_str(), &end);
  if (end != num.c_str() + num.size()) return false;
  std::string extra = text.substr(last_digit);
  size_t b = extra.find_first_not_of(" \t\r\n");
  size_t e = extra.find_last_not_of(" \t\r\n");
  extra = b == std::string::npos ? "" : extra.substr(b, e - b + 1);
  for (auto& c : extra) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  struct Unit {
    const char* name;
    double mult;
  };
  static const Unit units[] = {
      {"", 1},
      {"b", 1},
      {"k", 1e3},
      {"kb", 1e3},
      {"ki", 1024.0},
      {"kib", 1024.0},
      {"m", 1e6},
      {"mb", 1e6},
      {"mi", 1048576.0},
      {"mib", 1048576.0},
      {"g", 1e9},
      {"gb", 1e9},
      {"gi", 1073741824.0},
      {"gib", 1073741824.0},
      {"t", 1e12},
      {"tb", 1e12},
      {"ti", 1099511627776.0},
      {"tib", 1099511627776.0},
      {"p", 1e15},
      {"pb", 1e15},
      {"pi", 1125899906842624.0},
      {"pib", 1125899906842624.0},
      {"e", 1e18},
      {"eb", 1e18},
      {"ei", 1152921504606846976.0},
      {"eib", 1152921504606846976.0},
  };
  for (const auto& u : units) {
    if (extra == u.name) {
      double v = f * u.mult;
      if (!(v < 9223372036854775807.0)) return false;
      out = static_cast<int64_t>(v);
      return true;
    }
  }
  return false;
}

std::string format_go_duration(Duration d) {
  int64_t n = d.count();
  bool neg = n < 0;
  uint64_t u = neg ? static_cast<uint64_t>(0) - static_cast<uint64_t>(n) : static_cast<uint64_t>(n);
  std::string out;
  if (u < 1000000000ULL) {
    if (u == 0) return "0s";
    int prec;
    std::string tail;
    if (u < 1000ULL) {
      prec = 0;
      tail = "ns";
    } else if (u < 1000000ULL) {
      prec = 3;
      tail = "\xC2\xB5s";
    } else {
      prec = 6;
      tail = "ms";
    }
    fmt_frac(tail, u, prec);
    out = std::to_string(u) + tail;
  } else {
    std::string tail = "s";
    fmt_frac(tail, u, 9);
    out = std::to_string(u % 60) + tail;
    u /= 60;
    if (u > 0) {
      out = std::to_string(u % 60) + "m" + out;
      u /= 60;
      if (u > 0) out = std::to_string(u) + "h" + out;
    }
  }
  return neg ? "-" + out : out;
}

}  // namespace hsp::config
