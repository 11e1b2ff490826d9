// The open-loop schedule and queue on a made-up clock (nanoseconds).
#include <gtest/gtest.h>

#include "driver.h"

namespace hsp::bench {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kS = 1'000'000'000;

TEST(OpenLoopSchedule, RequestIIsDueAtT0PlusIOverR) {
  OpenLoopSchedule s(5 * kS, 1000.0);
  EXPECT_EQ(s.due(0), 5 * kS);
  EXPECT_EQ(s.due(1), 5 * kS + kMs);
  EXPECT_EQ(s.due(1000), 6 * kS);
  EXPECT_EQ(s.due_count(5 * kS - 1), 0u);
  EXPECT_EQ(s.due_count(5 * kS), 1u);
  EXPECT_EQ(s.due_count(5 * kS + kMs - 1), 1u);
  EXPECT_EQ(s.due_count(5 * kS + kMs), 2u);
  EXPECT_EQ(s.due_count(6 * kS), 1001u);
}

TEST(OpenLoopSchedule, ThreadsInterleaveOneScheduleAtTheTotalRate) {
  // 3 threads at 300/s in total: thread 1 takes global requests 1, 4, 7, ...
  OpenLoopSchedule t1(0, 300.0, 3, 1);
  EXPECT_EQ(t1.due(0), kS / 300);
  EXPECT_EQ(t1.due(1), 4 * kS / 300);  // 13.333.. ms, rounded to the nearest ns
  EXPECT_EQ(t1.due_count(kS / 300 - 1), 0u);
  EXPECT_EQ(t1.due_count(kS), 100u);  // global 1, 4, ..., 298: 100 of the 301 due by 1 s
  OpenLoopSchedule t0(0, 300.0, 3, 0), t2(0, 300.0, 3, 2);
  EXPECT_EQ(t0.due_count(kS) + t1.due_count(kS) + t2.due_count(kS), 301u);
}

TEST(OpenLoopSchedule, FractionalRates) {
  OpenLoopSchedule s(0, 3.0);
  EXPECT_EQ(s.due(1), 333'333'333);
  EXPECT_EQ(s.due(2), 666'666'667);
  EXPECT_EQ(s.due_count(666'666'666), 2u);
  EXPECT_EQ(s.due_count(666'666'667), 3u);
  for (int64_t t = 0; t < 3 * kS; t += 7 * kMs + 13) {
    uint64_t n = s.due_count(t);
    EXPECT_LE(s.due(n - 1), t);
    EXPECT_GT(s.due(n), t);
  }
}

TEST(OpenLoopPacer, RequestsWaitForSlotsAndKeepTheirIntendedTime) {
  // 1000/s; the server stalls: nothing leaves the queue for one second.
  OpenLoopPacer p(OpenLoopSchedule(0, 1000.0));
  EXPECT_EQ(p.advance(0), 1u);
  EXPECT_EQ(p.take(), 0);  // sent on time
  EXPECT_EQ(p.backlog(), 0u);
  EXPECT_EQ(p.next_due(), kMs);
  EXPECT_EQ(p.advance(kS), 1000u);
  EXPECT_EQ(p.backlog(), 1000u);
  // A slot frees at 1 s: the oldest request leaves first, and its latency counts from when it
  // was due (1 ms), not from when it was sent, so the stall is in the figures.
  int64_t now = kS + 200'000;  // its response comes 200 us after sending
  int64_t intended = p.take();
  EXPECT_EQ(intended, kMs);
  EXPECT_EQ(now - intended, kS - kMs + 200'000);
  EXPECT_EQ(p.backlog(), 999u);
  // Later requests were due later: their latency shrinks as the queue drains.
  while (p.backlog() > 1) p.take();
  EXPECT_EQ(p.take(), kS);
  EXPECT_EQ(p.sent(), 1001u);
}

TEST(OpenLoopPacer, StopsAtTheLimit) {
  OpenLoopPacer p(OpenLoopSchedule(0, 100.0), 5);
  EXPECT_EQ(p.advance(10 * kS), 5u);
  EXPECT_EQ(p.next_due(), INT64_MAX);
  EXPECT_EQ(p.advance(20 * kS), 0u);
}

TEST(OpenLoopPacer, AdvanceIsMonotonic) {
  OpenLoopPacer p(OpenLoopSchedule(kS, 10.0));
  EXPECT_EQ(p.advance(0), 0u);  // before t0
  EXPECT_EQ(p.advance(kS + 250 * kMs), 3u);
  EXPECT_EQ(p.advance(kS), 0u);  // a clock read that lags changes nothing
  EXPECT_EQ(p.backlog(), 3u);
}

}  // namespace
}  // namespace hsp::bench
