// Operational logs: one JSON object per line, snake_case keys, written with a single write(2) so
// lines from different threads never interleave. Access logs use the same writer (see
// engine/access_log.h) but go to their own sink.
//
//   log::info("upstream_connect_failed").kv("conn_id", id).kv("upstream", addr).kv("error", msg);
//
// The line is emitted when the temporary returned by info()/warn()/... is destroyed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace hsp::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };

// Where operational logs go (default: stderr) and the minimum level (default: info).
void set_level(Level level);
Level level();
bool parse_level(std::string_view text, Level& out);
void set_fd(int fd);

// Appends s to out as the inside of a JSON string (no surrounding quotes).
void json_escape(std::string& out, std::string_view s);

class Line {
 public:
  Line(Level level, std::string_view msg);
  Line(const Line&) = delete;
  Line& operator=(const Line&) = delete;
  ~Line();

  Line& kv(std::string_view key, std::string_view value);
  Line& kv(std::string_view key, const char* value) { return kv(key, std::string_view(value)); }
  Line& kv(std::string_view key, const std::string& value) {
    return kv(key, std::string_view(value));
  }
  Line& kv(std::string_view key, int64_t value);
  Line& kv(std::string_view key, uint64_t value);
  Line& kv(std::string_view key, int value) { return kv(key, static_cast<int64_t>(value)); }
  Line& kv(std::string_view key, unsigned value) { return kv(key, static_cast<uint64_t>(value)); }
  Line& kv(std::string_view key, double value);
  Line& kv(std::string_view key, bool value);
  Line& kv(std::string_view key, const std::vector<std::string>& values);  // a JSON array

 private:
  bool begin_member(std::string_view key);

  bool enabled_;
  std::string buf_;
};

inline Line debug(std::string_view msg) {
  return Line(Level::debug, msg);
}
inline Line info(std::string_view msg) {
  return Line(Level::info, msg);
}
inline Line warn(std::string_view msg) {
  return Line(Level::warn, msg);
}
inline Line error(std::string_view msg) {
  return Line(Level::error, msg);
}

// Writes one complete line (a newline is appended) to fd with a single write(2).
void write_line(int fd, std::string& line);

}  // namespace hsp::log
