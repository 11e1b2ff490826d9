// Access log lines in Caddy's JSON shape ("http.log.access", "handled request", request.*,
// duration, size, status, resp_headers) plus our own upstream, end_reason and conn_id. Asio-free.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "config/config.h"
#include "http/message.h"

namespace hsp::http1 {

struct AccessRecord {
  const http::Request* req = nullptr;  // as received (before rewrites)
  std::string uri;                     // request-target as received
  int status = 0;
  uint64_t size = 0;  // response body bytes written downstream
  std::chrono::system_clock::time_point ts;
  double duration_s = 0;
  const http::HeaderMap* resp_headers = nullptr;
  std::string upstream;  // dial address, "" when not proxied
  std::string_view end_reason = "ok";
  uint64_t bytes_read = 0;  // request body bytes read
};

// What every exchange keeps for its access-log line, whatever the protocol: the HTTP/1.1,
// HTTP/2 and HTTP/3 sessions fill one per request and end it with log_exchange().
struct ExchangeLog {
  std::string orig_uri;  // request-target as received (rewrites change the request's)
  std::chrono::steady_clock::time_point start;
  int status = 0;
  uint64_t sent = 0;        // response body bytes written downstream
  uint64_t bytes_read = 0;  // request body bytes read from the client
  std::string upstream;
  std::string_view end_reason = "ok";
  http::HeaderMap resp_headers;
  const config::AccessLog* log = nullptr;  // the route's `log`, if any
};

// Writes x's line for `r` when its route logs. `aborting`: the shutdown grace period ran out,
// which is then why the exchange ended, whatever it saw last (usually its client closing).
void log_exchange(ExchangeLog& x, const http::Request& r, bool aborting);

// Formats the record as one JSON line (no trailing newline).
std::string format_access_line(const AccessRecord& rec);

// Writes the record to the log's output. Files are opened once (O_APPEND) and kept open for the
// life of the process; "discard" writes nothing.
void write_access_log(const config::AccessLog& log, const AccessRecord& rec);

}  // namespace hsp::http1
