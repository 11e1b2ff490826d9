#include "util/log.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace hsp::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::info)};
std::atomic<int> g_fd{2};

const char* level_name(Level l) {
  switch (l) {
    case Level::debug:
      return "debug";
    case Level::info:
      return "info";
    case Level::warn:
      return "warn";
    case Level::error:
      return "error";
  }
  return "info";
}

}  // namespace

void set_level(Level level) {
  g_level.store(static_cast<int>(level), std::memory_order_relaxed);
}
Level level() {
  return static_cast<Level>(g_level.load(std::memory_order_relaxed));
}
void set_fd(int fd) {
  g_fd.store(fd, std::memory_order_relaxed);
}

bool parse_level(std::string_view t, Level& out) {
  if (t == "debug" || t == "DEBUG")
    out = Level::debug;
  else if (t == "info" || t == "INFO")
    out = Level::info;
  else if (t == "warn" || t == "WARN")
    out = Level::warn;
  else if (t == "error" || t == "ERROR")
    out = Level::error;
  else
    return false;
  return true;
}

void json_escape(std::string& out, std::string_view s) {
  static const char* hex = "0123456789abcdef";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
}

void write_line(int fd, std::string& line) {
  line += '\n';
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // a log sink that fails must never take the gateway down
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

Line::Line(Level l, std::string_view msg)
    : enabled_(static_cast<int>(l) >= g_level.load(std::memory_order_relaxed)) {
  if (!enabled_) return;
  auto now = std::chrono::system_clock::now().time_since_epoch();
  double ts = std::chrono::duration<double>(now).count();
  char tsbuf[32];
  std::snprintf(tsbuf, sizeof tsbuf, "%.6f", ts);
  buf_.reserve(192);
  buf_ += "{\"level\":\"";
  buf_ += level_name(l);
  buf_ += "\",\"ts\":";
  buf_ += tsbuf;
  buf_ += ",\"msg\":\"";
  json_escape(buf_, msg);
  buf_ += '"';
}

Line::~Line() {
  if (!enabled_) return;
  buf_ += '}';
  write_line(g_fd.load(std::memory_order_relaxed), buf_);
}

// Starts the member `"key":`; false when the line is filtered out by level.
bool Line::begin_member(std::string_view key) {
  if (!enabled_) return false;
  buf_ += ",\"";
  buf_ += key;
  buf_ += "\":";
  return true;
}

Line& Line::kv(std::string_view key, std::string_view value) {
  if (!begin_member(key)) return *this;
  buf_ += '"';
  json_escape(buf_, value);
  buf_ += '"';
  return *this;
}

Line& Line::kv(std::string_view key, int64_t value) {
  if (begin_member(key)) buf_ += std::to_string(value);
  return *this;
}

Line& Line::kv(std::string_view key, uint64_t value) {
  if (begin_member(key)) buf_ += std::to_string(value);
  return *this;
}

Line& Line::kv(std::string_view key, double value) {
  if (!begin_member(key)) return *this;
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", value);
  buf_ += b;
  return *this;
}

Line& Line::kv(std::string_view key, bool value) {
  if (begin_member(key)) buf_ += value ? "true" : "false";
  return *this;
}

Line& Line::kv(std::string_view key, const std::vector<std::string>& values) {
  if (!begin_member(key)) return *this;
  buf_ += '[';
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) buf_ += ',';
    buf_ += '"';
    json_escape(buf_, values[i]);
    buf_ += '"';
  }
  buf_ += ']';
  return *this;
}

}  // namespace hsp::log
