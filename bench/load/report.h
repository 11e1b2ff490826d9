// The end-of-run report: text for people (wrk/h2load-like), or one JSON object for machines.
// The JSON key names are an interface (the peers harness reads them): only add keys.
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
