// The end-of-run report: text for people (wrk/h2load-like), or one JSON object for machines.
// The JSON key names are an interface (the peers harness reads them): only add keys.
// - "proto" is the protocol family: "h1", "h2" (over TLS or h2c) or "h3". h2c stays "h2" (with
//   "tls": false) so that readers comparing families keep working; "h2c": true says it was
//   cleartext HTTP/2 with prior knowledge.
// - "error_examples": one message per error kind that occurred (the first seen).
// - "latency_us" has every key, all null when no request succeeded (no figure to give).
// - "retried": requests the server refused unprocessed and that were sent again (not errors);
//   "not_finished": in flight when an interrupt (SIGINT) ended the run; "drain_s": how long the
//   run waited after the window for requests in flight (not part of "duration_s").
#pragma once

#include <string>

#include "cli.h"
#include "driver.h"

namespace hsp::bench {

struct RunInfo {
  std::string url;
  Proto proto = Proto::h1;  // negotiated
  bool tls = false;
  bool open_loop = false;
  double rate = 0.0;
  uint32_t connections = 0;
  uint32_t streams = 0;
  uint32_t threads = 0;
};

RunInfo run_info(const Options& opts, Proto proto, bool tls);

std::string text_report(const RunInfo& info, const LoadResult& r);
std::string json_report(const RunInfo& info, const LoadResult& r);

}  // namespace hsp::bench
