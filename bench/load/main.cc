// hsp-bench: the load tool that ships with the gateway. See cli.cc for the options and
// driver.h for the closed- and open-loop models.
#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <thread>

#include "cli.h"
#include "driver.h"
#include "report.h"
#include "tls.h"

namespace {

using namespace hsp::bench;

Progress* g_progress = nullptr;

// The first Ctrl-C ends the run at once (the workers see it within 100 ms and do not wait for
// requests in flight) with a report of what ran; a second one kills (SIG_DFL).
void on_interrupt(int) {
  if (g_progress) g_progress->stop_requested.store(true, std::memory_order_relaxed);
  signal(SIGINT, SIG_DFL);
}

// A numeric address for the connect host: the driver never resolves names itself, so every
// connection of the run goes to the same address.
bool resolve(const std::string& host, std::string& out, std::string& error) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr) {
    // AI_ADDRCONFIG hides ::1 on hosts without a global IPv6 address: retry without it.
    hints.ai_flags = 0;
    rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  }
  if (rc != 0 || res == nullptr) {
    error = "cannot resolve '" + host + "': " + gai_strerror(rc);
    return false;
  }
  char buf[NI_MAXHOST];
  rc = getnameinfo(res->ai_addr, res->ai_addrlen, buf, sizeof buf, nullptr, 0, NI_NUMERICHOST);
  freeaddrinfo(res);
  if (rc != 0) {
    error = "cannot resolve '" + host + "': " + gai_strerror(rc);
    return false;
  }
  out = buf;
  return true;
}

void print_progress(const Progress& p, double elapsed, uint64_t& last) {
  uint64_t n = p.requests.load(std::memory_order_relaxed);
  std::fprintf(stderr, "\r[%5.0fs] %llu requests, %llu/s, %llu errors   ", elapsed,
               (unsigned long long)n, (unsigned long long)(n - last),
               (unsigned long long)p.errors.load(std::memory_order_relaxed));
  std::fflush(stderr);
  last = n;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  std::vector<std::string> args(argv + 1, argv + argc);
  CliResult cli = parse_cli(args);
  if (cli.kind == CliResult::Kind::help) {
    std::fputs(cli.message.c_str(), stdout);
    return 0;
  }
  if (cli.kind == CliResult::Kind::error) {
    std::fprintf(stderr, "hsp-bench: %s\n", cli.message.c_str());
    return 2;
  }
  const Options& opts = cli.options;

  // --histogram: find out now, not after a long run, that the file cannot be written.
  bool histogram_stdout = opts.histogram_file == "-";
  std::ofstream histogram;
  if (!opts.histogram_file.empty() && !histogram_stdout) {
    histogram.open(opts.histogram_file, std::ios::trunc);
    if (!histogram) {
      std::fprintf(stderr, "hsp-bench: --histogram: cannot write '%s': %s\n",
                   opts.histogram_file.c_str(), std::strerror(errno));
      return 2;
    }
  }

  Target target = resolve_target(opts);
  if (!opts.connect_to.empty() && !target.connect_to_matched) {
    std::fprintf(stderr,
                 "hsp-bench: warning: no --connect-to rule matches %s:%u; connecting to the "
                 "URL's host itself\n",
                 opts.url.host.c_str(), unsigned(opts.url.port));
  }
  LoadConfig cfg;
  Endpoint& ep = cfg.endpoint;
  std::string error;
  if (!resolve(target.connect_host, ep.connect_host, error)) {
    std::fprintf(stderr, "hsp-bench: %s\n", error.c_str());
    return 1;
  }
  ep.connect_port = target.connect_port;
  ep.authority = target.authority;
  ep.sni = opts.url.https ? target.sni : "";
  ep.verify_host = opts.url.https ? (opts.sni.empty() ? opts.url.host : opts.sni) : "";
  ep.tls = opts.url.https;
  ep.ca_file = opts.ca_file;
  ep.insecure = opts.insecure;
  if (ep.tls && !ep.ca_file.empty()) {
    // The CA file must load (OpenSSL's view; the h3 connections read it with GnuTLS).
    if (!client_context(ep, kAlpnAuto, error)) {
      std::fprintf(stderr, "hsp-bench: --cacert: %s\n", error.c_str());
      return 2;
    }
  }
  switch (opts.proto) {
    case ProtoChoice::automatic:
      ep.proto = Proto::h1;
      if (opts.url.https) {
        // The server picks from "h2, http/1.1", as with curl; one probe handshake learns its
        // choice, and every connection of the run then offers only that protocol.
        std::string alpn;
        ErrorKind kind = ErrorKind::none;
        if (probe_alpn(ep, kAlpnAuto, opts.timeout_s, alpn, kind, error)) {
          if (alpn == "h2") ep.proto = Proto::h2;
        } else if (!opts.quiet) {
          std::fprintf(stderr, "hsp-bench: %s (running as HTTP/1.1; errors follow)\n",
                       error.c_str());
        }
      }
      break;
    case ProtoChoice::h1:
      ep.proto = Proto::h1;
      break;
    case ProtoChoice::h2:
      ep.proto = Proto::h2;
      break;
    case ProtoChoice::h2c:
      ep.proto = Proto::h2c;
      break;
    case ProtoChoice::h3:
      ep.proto = Proto::h3;
      break;
  }
  if (ep.proto == Proto::h1 && opts.streams > 1) {
    std::fprintf(stderr, "hsp-bench: -m: the server chose HTTP/1.1, one stream per connection\n");
    return 2;
  }
  cfg.request = make_request(opts);
  cfg.connections = opts.connections;
  cfg.streams = opts.streams;
  cfg.threads = opts.threads;
  cfg.duration_s = opts.duration_s;
  cfg.requests = opts.requests;
  cfg.warmup_s = opts.warmup_s;
  cfg.timeout_s = opts.timeout_s;
  cfg.rate = opts.rate;

  Progress progress;
  g_progress = &progress;
  signal(SIGINT, on_interrupt);
  LoadResult result;
  bool done = false;
  std::thread runner([&] {
    result = run_load(cfg, &progress);
    __atomic_store_n(&done, true, __ATOMIC_RELEASE);
  });
  bool show = !opts.quiet && isatty(STDERR_FILENO);
  auto start = std::chrono::steady_clock::now();
  auto next = start + std::chrono::seconds(1);
  uint64_t last = 0;
  while (!__atomic_load_n(&done, __ATOMIC_ACQUIRE)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    auto now = std::chrono::steady_clock::now();
    if (show && now >= next) {
      print_progress(progress, std::chrono::duration<double>(now - start).count(), last);
      next += std::chrono::seconds(1);
    }
  }
  runner.join();
  if (show) std::fputs("\r\033[K", stderr);

  RunInfo info = run_info(opts, ep.proto, ep.tls);
  // `--histogram -` owns stdout; the report then goes to stderr.
  FILE* report_out = histogram_stdout ? stderr : stdout;
  std::fputs(opts.json ? json_report(info, result).c_str() : text_report(info, result).c_str(),
             report_out);
  std::fflush(report_out);
  if (histogram_stdout) {
    std::fputs(result.latency_ns.percentile_distribution(1e6).c_str(), stdout);
  } else if (!opts.histogram_file.empty()) {
    histogram << result.latency_ns.percentile_distribution(1e6);
    histogram.close();
    if (!histogram) {
      std::fprintf(stderr, "hsp-bench: --histogram: cannot write '%s'\n",
                   opts.histogram_file.c_str());
      return 1;
    }
  }
  // Nothing succeeded (no response of any status): a script must not take the run for good.
  return result.requests == 0 ? 1 : 0;
}
