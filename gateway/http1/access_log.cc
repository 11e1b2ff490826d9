#include "http1/access_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <mutex>

#include "util/log.h"

namespace hsp::http1 {
namespace {

void add_headers(std::string& out, const http::HeaderMap& headers) {
  // Caddy prints header maps as {"Name":["v1","v2"]}; fields repeated in the map are grouped
  // under the first spelling of their name.
  out += '{';
  std::vector<bool> done(headers.size(), false);
  const auto& f = headers.fields();
  bool first = true;
  for (size_t i = 0; i < f.size(); ++i) {
    if (done[i]) continue;
    if (!first) out += ',';
    first = false;
    out += '"';
    log::json_escape(out, f[i].first);
    out += "\":[";
    for (size_t j = i; j < f.size(); ++j) {
      if (done[j] || !http::iequals(f[i].first, f[j].first)) continue;
      done[j] = true;
      if (j != i) out += ',';
      out += '"';
      log::json_escape(out, f[j].second);
      out += '"';
    }
    out += ']';
  }
  out += '}';
}

void add_str(std::string& out, std::string_view key, std::string_view value) {
  out += '"';
  out += key;
  out += "\":\"";
  log::json_escape(out, value);
  out += '"';
}

int file_fd(const std::string& path) {
  // Opened lazily and never closed: a handful of paths per process, and a reload that drops a
  // log file keeps its fd (harmless; re-adding the path reuses it).
  static std::mutex mu;
  static std::map<std::string, int> fds;
  std::lock_guard<std::mutex> lock(mu);
  auto it = fds.find(path);
  if (it != fds.end()) return it->second;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) log::error("access_log_open_failed").kv("file", path);
  fds.emplace(path, fd);
  return fd;
}

}  // namespace

std::string format_access_line(const AccessRecord& rec) {
  std::string out;
  out.reserve(512);
  char num[64];
  double ts = std::chrono::duration<double>(rec.ts.time_since_epoch()).count();
  std::snprintf(num, sizeof num, "%.7f", ts);
  // Caddy 2.6 logs a request that ended with status >= 400 at error level.
  out += rec.status >= 400 ? "{\"level\":\"error\",\"ts\":" : "{\"level\":\"info\",\"ts\":";
  out += num;
  out += ",\"logger\":\"http.log.access\",\"msg\":\"handled request\",\"request\":{";
  const http::Request& r = *rec.req;
  add_str(out, "remote_ip", r.remote_ip);
  out += ',';
  add_str(out, "remote_port", std::to_string(r.remote_port));  // a string, as Caddy prints it
  out += ',';
  add_str(out, "client_ip", r.client_ip);
  out += ',';
  add_str(out, "proto", r.proto());
  out += ',';
  add_str(out, "method", r.method);
  out += ',';
  add_str(out, "host", r.authority);
  out += ',';
  add_str(out, "uri", rec.uri);
  out += ",\"headers\":";
  add_headers(out, r.headers);
  if (r.tls) {
    // Caddy 2.6's request.tls object: numbers as Go's crypto/tls constants.
    std::snprintf(num, sizeof num, ",\"tls\":{\"resumed\":%s,\"version\":%u,\"cipher_suite\":%u,",
                  r.tls_resumed ? "true" : "false", static_cast<unsigned>(r.tls_version),
                  static_cast<unsigned>(r.tls_cipher_suite));
    out += num;
    add_str(out, "proto", r.tls_proto);
    out += ',';
    add_str(out, "server_name", r.tls_server_name);
    out += '}';
  }
  out += "},";
  std::snprintf(num, sizeof num, "\"bytes_read\":%llu,",
                static_cast<unsigned long long>(rec.bytes_read));
  out += num;
  add_str(out, "user_id", "");
  std::snprintf(num, sizeof num, ",\"duration\":%.9f,\"size\":%llu,\"status\":%d,", rec.duration_s,
                static_cast<unsigned long long>(rec.size), rec.status);
  out += num;
  out += "\"resp_headers\":";
  if (rec.resp_headers) {
    add_headers(out, *rec.resp_headers);
  } else {
    out += "{}";
  }
  out += ',';
  add_str(out, "upstream", rec.upstream);
  out += ',';
  add_str(out, "end_reason", rec.end_reason);
  std::snprintf(num, sizeof num, ",\"conn_id\":%llu}", static_cast<unsigned long long>(r.conn_id));
  out += num;
  return out;
}

void log_exchange(ExchangeLog& x, const http::Request& r, bool aborting) {
  if (!x.log || !x.log->enabled) return;
  if (aborting) x.end_reason = "grace_period_expired";
  AccessRecord rec;
  rec.req = &r;
  rec.uri = x.orig_uri;
  rec.status = x.status;
  rec.size = x.sent;
  // Caddy stamps the line when it is written, as the request ends (zap's entry time).
  rec.ts = std::chrono::system_clock::now();
  rec.duration_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - x.start).count();
  rec.resp_headers = &x.resp_headers;
  rec.upstream = x.upstream;
  rec.end_reason = x.end_reason;
  rec.bytes_read = x.bytes_read;
  write_access_log(*x.log, rec);
}

void write_access_log(const config::AccessLog& log, const AccessRecord& rec) {
  if (!log.enabled || log.output == "discard") return;
  // `log { level ERROR }` (or WARN) keeps only the error-level lines.
  bool errors_only = http::iequals(log.level, "ERROR") || http::iequals(log.level, "WARN");
  if (errors_only && rec.status < 400) return;
  int fd = 1;
  if (log.output == "stderr") {
    fd = 2;
  } else if (log.output == "file") {
    fd = file_fd(log.file);
  }
  if (fd < 0) return;
  std::string line = format_access_line(rec);
  log::write_line(fd, line);
}

}  // namespace hsp::http1
