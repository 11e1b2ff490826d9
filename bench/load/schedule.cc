// The open-loop schedule, kept apart from the driver's I/O so that the tests run it on a
// made-up clock.
#include <algorithm>
#include <cmath>

#include "driver.h"

namespace hsp::bench {

OpenLoopSchedule::OpenLoopSchedule(int64_t t0_ns, double rate_per_s, uint32_t stride,
                                   uint32_t offset)
    : t0_(t0_ns), rate_(rate_per_s), stride_(std::max<uint32_t>(stride, 1)), offset_(offset) {}

int64_t OpenLoopSchedule::due(uint64_t i) const {
  long double k = (long double)i * stride_ + offset_;
  return t0_ + int64_t(std::llround(k * 1e9L / rate_));
}

uint64_t OpenLoopSchedule::due_count(int64_t now_ns) const {
  if (now_ns < due(0)) return 0;
  // Global index k of the last request due, then this thread's share of [0, k].
  long double k = std::floor((long double)(now_ns - t0_) * rate_ / 1e9L);
  uint64_t n = k < offset_ ? 0 : uint64_t((k - offset_) / stride_) + 1;
  // Rounding in due() may put the boundary one request either way: settle it exactly.
  while (n > 0 && due(n - 1) > now_ns) --n;
  while (due(n) <= now_ns) ++n;
  return n;
}

uint64_t OpenLoopPacer::advance(int64_t now_ns) {
  uint64_t n = std::min(schedule_.due_count(now_ns), limit_);
  if (n <= due_) return 0;
  uint64_t added = n - due_;
  due_ = n;
  return added;
}

}  // namespace hsp::bench
