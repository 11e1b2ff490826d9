// The load driver: threads, each with its own io_context and share of the connections, keeping
// requests in flight (closed loop) or releasing them on a fixed schedule (open loop, --rate) and
// recording their latencies.
//
// Closed loop: every free stream slot gets a new request at once; latency runs from the moment
// the request is handed to its connection.
// Open loop (wrk2's model): request i is due at t0 + i/R. It is sent when due if a slot is free,
// else it waits for the next free slot, and its latency runs from the due time, so a server
// stall shows in full in the percentiles (coordinated omission corrected) instead of silently
// lowering the request rate.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "connection.h"
#include "histogram.h"

namespace hsp::bench {

// Request i of one thread (of `stride` threads, this one `offset`) is due at
// t0 + (i * stride + offset) / rate: the threads interleave one schedule at the total rate.
// Times in nanoseconds on any clock.
class OpenLoopSchedule {
 public:
  OpenLoopSchedule(int64_t t0_ns, double rate_per_s, uint32_t stride = 1, uint32_t offset = 0);
  int64_t due(uint64_t i) const;
  // How many requests are due at `now` (those with due(i) <= now).
  uint64_t due_count(int64_t now_ns) const;

 private:
  int64_t t0_;
  double rate_;
  uint32_t stride_;
  uint32_t offset_;
};

// The open-loop queue of one thread: requests become due with the clock and leave when a slot
// takes them; each keeps its due time as the start of its latency. No storage per request: the
// queue is the index range [sent, due).
class OpenLoopPacer {
 public:
  explicit OpenLoopPacer(OpenLoopSchedule schedule, uint64_t limit = UINT64_MAX)
      : schedule_(schedule), limit_(limit) {}
  // Moves the due boundary to `now`; returns how many requests became due.
  uint64_t advance(int64_t now_ns);
  uint64_t backlog() const { return due_ - sent_; }
  // The intended start of the oldest waiting request, which leaves the queue. backlog() > 0.
  int64_t take() { return schedule_.due(sent_++); }
  // When the next request not yet due becomes due; INT64_MAX when the limit is reached.
  int64_t next_due() const { return due_ < limit_ ? schedule_.due(due_) : INT64_MAX; }
  uint64_t sent() const { return sent_; }
  const OpenLoopSchedule& schedule() const { return schedule_; }

 private:
  OpenLoopSchedule schedule_;
  uint64_t limit_;
  uint64_t due_ = 0;
  uint64_t sent_ = 0;
};

struct LoadConfig {
  Endpoint endpoint;  // proto decided (see resolve_proto), connect_host numeric
  RequestTemplate request;
  uint32_t connections = 10;
  uint32_t streams = 1;
  uint32_t threads = 1;
  double duration_s = 10.0;
  uint64_t requests = 0;  // > 0: exactly this many, duration ignored
  double warmup_s = 0.0;
  double timeout_s = 10.0;
  double rate = 0.0;  // > 0: open loop
};

constexpr size_t kErrorKinds = 6;  // ErrorKind values, none included

struct LoadResult {
  Histogram latency_ns;
  std::map<int, uint64_t> status;
  std::array<uint64_t, kErrorKinds> errors{};
  std::array<std::string, kErrorKinds> error_example;  // first detail seen per kind
  uint64_t requests = 0;  // responses (any status) in the measured window
  uint64_t reconnects = 0;
  uint64_t bytes_in = 0;  // whole run, warm-up included
  uint64_t bytes_out = 0;
  uint64_t window_bytes_in = 0;  // received during the measured window (approximately: the
                                 // bytes of the connections, sampled at the window's start)
  uint64_t body_bytes = 0;       // response body bytes in the window
  uint64_t not_sent = 0;         // open loop: due requests still queued when the run ended,
                                 // and refused requests not resent before it ended
  // Requests the server refused unprocessed (h2 GOAWAY / REFUSED_STREAM, h3 GOAWAY) and the
  // driver sent again on another connection: not errors (RFC 9113 §8.7).
  uint64_t retried = 0;
  // Interrupted (SIGINT): requests still in flight when the run ended at once, neither
  // responses nor errors.
  uint64_t not_finished = 0;
  bool interrupted = false;
  double duration_s = 0.0;  // the measured window
  // How long the run waited after the window for the requests in flight (at most --timeout
  // plus a sweep period; about 0 when interrupted, which does not wait, and cut short by an
  // interrupt during the drain). The window's figures do not include it.
  double drain_s = 0.0;
};

// Live figures for the progress line, updated by the workers.
struct Progress {
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> errors{0};
  // Set from outside (SIGINT): the workers end the run within their sweep period (at most
  // 100 ms) without waiting for the requests in flight (they count as not finished), and the
  // report covers what ran.
  std::atomic<bool> stop_requested{false};
};

// Runs the load; blocks until it is over. `progress` may be null.
LoadResult run_load(const LoadConfig& config, Progress* progress);

const char* proto_name(Proto proto);  // "h1", "h2", "h2c", "h3"

}  // namespace hsp::bench
