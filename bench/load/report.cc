#include "report.h"

#include <cstdio>
#include <nlohmann/json.hpp>

namespace hsp::bench {

namespace {

const char* json_proto(Proto p) {
  switch (p) {
    case Proto::h1:
      return "h1";
    case Proto::h2:
    case Proto::h2c:
      return "h2";  // h2c is h2 without TLS; "tls" says which
    case Proto::h3:
      return "h3";
  }
  return "h1";
}

double us(uint64_t ns) {
  return double(ns) / 1000.0;
}

std::string human_bytes(double n) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (n >= 1000.0 && u < 4) {
    n /= 1000.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %s", n, units[u]);
  return buf;
}

std::string human_us(double v) {
  char buf[32];
  if (v >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2fs", v / 1e6);
  else if (v >= 1e3)
    std::snprintf(buf, sizeof buf, "%.2fms", v / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0fus", v);
  return buf;
}

}  // namespace

RunInfo run_info(const Options& opts, Proto proto, bool tls) {
  RunInfo info;
  info.url = opts.url_text;
  info.proto = proto;
  info.tls = tls;
  info.open_loop = opts.rate > 0;
  info.rate = opts.rate;
  info.connections = opts.connections;
  info.streams = opts.streams;
  info.threads = opts.threads;
  return info;
}

std::string json_report(const RunInfo& info, const LoadResult& r) {
  nlohmann::ordered_json j;
  j["url"] = info.url;
  j["proto"] = json_proto(info.proto);
  j["h2c"] = info.proto == Proto::h2c;
  j["tls"] = info.tls;
  j["mode"] = info.open_loop ? "open" : "closed";
  j["rate"] = info.open_loop ? nlohmann::ordered_json(info.rate) : nlohmann::ordered_json();
  j["connections"] = info.connections;
  j["streams"] = info.streams;
  j["threads"] = info.threads;
  j["duration_s"] = r.duration_s;
  j["requests"] = r.requests;
  j["rps"] = r.duration_s > 0 ? double(r.requests) / r.duration_s : 0.0;
  j["bytes_in"] = r.window_bytes_in;
  j["throughput_Bps"] = r.duration_s > 0 ? double(r.window_bytes_in) / r.duration_s : 0.0;
  j["body_bytes"] = r.body_bytes;
  nlohmann::ordered_json status = nlohmann::ordered_json::object();
  for (auto [code, n] : r.status) status[std::to_string(code)] = n;
  j["status"] = status;
  nlohmann::ordered_json errors = nlohmann::ordered_json::object();
  for (size_t k = 1; k < kErrorKinds; ++k) errors[error_name(ErrorKind(k))] = r.errors[k];
  j["errors"] = errors;
  nlohmann::ordered_json examples = nlohmann::ordered_json::object();
  for (size_t k = 1; k < kErrorKinds; ++k) {
    if (r.errors[k] > 0) examples[error_name(ErrorKind(k))] = r.error_example[k];
  }
  j["error_examples"] = examples;
  j["reconnects"] = r.reconnects;
  j["not_sent"] = r.not_sent;
  j["retried"] = r.retried;
  j["not_finished"] = r.not_finished;
  j["interrupted"] = r.interrupted;
  j["drain_s"] = r.drain_s;
  const Histogram& h = r.latency_ns;
  if (r.requests == 0) {
    // Nothing succeeded: no latency to speak of (zeros would read as "very fast").
    j["latency_us"] = {{"min", nullptr}, {"mean", nullptr}, {"p50", nullptr}, {"p90", nullptr},
                       {"p99", nullptr}, {"p999", nullptr}, {"max", nullptr}, {"stddev", nullptr}};
    return j.dump() + "\n";
  }
  j["latency_us"] = {{"min", us(h.min())},
                     {"mean", h.mean() / 1000.0},
                     {"p50", us(h.value_at_percentile(50))},
                     {"p90", us(h.value_at_percentile(90))},
                     {"p99", us(h.value_at_percentile(99))},
                     {"p999", us(h.value_at_percentile(99.9))},
                     {"max", us(h.max())},
                     {"stddev", h.stddev() / 1000.0}};
  return j.dump() + "\n";
}

std::string text_report(const RunInfo& info, const LoadResult& r) {
  std::string out;
  char line[512];
  const char* proto = info.proto == Proto::h2c ? "h2c" : json_proto(info.proto);
  std::snprintf(line, sizeof line, "%s: %s%s, %s, %u connection%s x %u stream%s, %u thread%s\n",
                info.url.c_str(), proto, info.tls ? " over TLS" : "",
                info.open_loop ? "open loop" : "closed loop", info.connections,
                info.connections == 1 ? "" : "s", info.streams, info.streams == 1 ? "" : "s",
                info.threads, info.threads == 1 ? "" : "s");
  out += line;
  if (info.open_loop) {
    std::snprintf(line, sizeof line,
                  "  rate          %.1f req/s intended; latency from the intended send time\n",
                  info.rate);
    out += line;
  }
  double rps = r.duration_s > 0 ? double(r.requests) / r.duration_s : 0.0;
  std::snprintf(line, sizeof line, "  requests      %llu in %.2f s, %.1f req/s\n",
                (unsigned long long)r.requests, r.duration_s, rps);
  out += line;
  double bps = r.duration_s > 0 ? double(r.window_bytes_in) / r.duration_s : 0.0;
  std::snprintf(line, sizeof line, "  throughput    %s/s (%s received)\n", human_bytes(bps).c_str(),
                human_bytes(double(r.window_bytes_in)).c_str());
  out += line;
  out += "  status       ";
  if (r.status.empty()) out += " none";
  for (auto [code, n] : r.status) {
    std::snprintf(line, sizeof line, " %d: %llu", code, (unsigned long long)n);
    out += line;
  }
  out += "\n  errors       ";
  bool any = false;
  for (size_t k = 1; k < kErrorKinds; ++k) {
    if (r.errors[k] == 0) continue;
    any = true;
    std::snprintf(line, sizeof line, " %s: %llu", error_name(ErrorKind(k)),
                  (unsigned long long)r.errors[k]);
    out += line;
  }
  if (!any) out += " none";
  out += "\n";
  for (size_t k = 1; k < kErrorKinds; ++k) {
    if (r.errors[k] == 0 || r.error_example[k].empty()) continue;
    std::snprintf(line, sizeof line, "                (%s: %s)\n", error_name(ErrorKind(k)),
                  r.error_example[k].c_str());
    out += line;
  }
  std::snprintf(line, sizeof line, "  reconnects    %llu\n", (unsigned long long)r.reconnects);
  out += line;
  if (r.retried > 0) {
    std::snprintf(line, sizeof line,
                  "  retried       %llu (refused unprocessed by the server, sent again)\n",
                  (unsigned long long)r.retried);
    out += line;
  }
  if (r.drain_s >= 0.01) {
    std::snprintf(line, sizeof line,
                  "  drain         %.2f s after the window, waiting for requests in flight\n",
                  r.drain_s);
    out += line;
  }
  if (r.interrupted) {
    std::snprintf(line, sizeof line, "  interrupted   %llu request%s in flight not finished\n",
                  (unsigned long long)r.not_finished, r.not_finished == 1 ? "" : "s");
    out += line;
  }
  if (r.not_sent > 0) {
    std::snprintf(line, sizeof line, "  not sent      %llu (due but still queued at the end)\n",
                  (unsigned long long)r.not_sent);
    out += line;
  }
  const Histogram& h = r.latency_ns;
  out += "  latency       min       mean      p50       p90       p99       p99.9     max\n";
  if (r.requests == 0) {
    out += "                n/a (no request succeeded)\n";
    return out;
  }
  std::snprintf(line, sizeof line, "                %-9s %-9s %-9s %-9s %-9s %-9s %s\n",
                human_us(us(h.min())).c_str(), human_us(h.mean() / 1000.0).c_str(),
                human_us(us(h.value_at_percentile(50))).c_str(),
                human_us(us(h.value_at_percentile(90))).c_str(),
                human_us(us(h.value_at_percentile(99))).c_str(),
                human_us(us(h.value_at_percentile(99.9))).c_str(), human_us(us(h.max())).c_str());
  out += line;
  return out;
}

}  // namespace hsp::bench
