// The latency histogram against exact order statistics of the same samples.
#include "histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <sstream>
#include <vector>

namespace hsp::bench {
namespace {

// The sample of rank ceil(p/100 * n), 1-based: the definition value_at_percentile follows.
uint64_t exact_percentile(std::vector<uint64_t> sorted, double p) {
  size_t rank = size_t(std::ceil(p / 100.0 * double(sorted.size()) - 1e-9));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

// 3 significant digits: the reported value is in the same bucket as the exact one, at most
// one bucket width (value/1024) above it and never below it.
void expect_within_precision(uint64_t reported, uint64_t exact) {
  EXPECT_GE(reported, exact);
  EXPECT_LE(double(reported - exact), double(exact) / 1024.0 + 1.0)
      << "reported " << reported << " exact " << exact;
}

TEST(Histogram, EmptyReportsZeros) {
  Histogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.value_at_percentile(50), 0u);
  EXPECT_EQ(h.min(), 0u);
  EXPECT_EQ(h.max(), 0u);
  EXPECT_EQ(h.mean(), 0.0);
}

TEST(Histogram, SmallValuesAreExact) {
  Histogram h;
  for (uint64_t v = 0; v < 2048; ++v) h.record(v);
  EXPECT_EQ(h.value_at_percentile(50), 1023u);
  EXPECT_EQ(h.value_at_percentile(100), 2047u);
  EXPECT_EQ(h.min(), 0u);
  EXPECT_EQ(h.max(), 2047u);
}

TEST(Histogram, PercentilesMatchSortedSamplesWithinPrecision) {
  std::mt19937_64 rng(42);
  // Latency-like: log-normal around 100 us in nanoseconds, with a tail to seconds.
  std::lognormal_distribution<double> dist(std::log(100'000.0), 1.5);
  std::vector<uint64_t> samples;
  Histogram h;
  for (int i = 0; i < 200'000; ++i) {
    uint64_t v = uint64_t(dist(rng)) + 1;
    samples.push_back(v);
    h.record(v);
  }
  std::sort(samples.begin(), samples.end());
  for (double p : {0.0, 1.0, 10.0, 50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 100.0}) {
    SCOPED_TRACE(p);
    expect_within_precision(h.value_at_percentile(p), exact_percentile(samples, p));
  }
  EXPECT_EQ(h.min(), samples.front());
  EXPECT_EQ(h.max(), samples.back());
  double sum = 0;
  for (uint64_t v : samples) sum += double(v);
  EXPECT_NEAR(h.mean(), sum / double(samples.size()), 1e-6 * h.mean());
}

TEST(Histogram, BucketsKeepThreeSignificantDigitsUpToAnHour) {
  Histogram h;
  for (uint64_t v :
       {1ull, 999ull, 1000ull, 123'456ull, 1'000'000ull, 987'654'321ull, 3'599'999'999'999ull}) {
    SCOPED_TRACE(v);
    EXPECT_LE(h.lowest_equivalent(v), v);
    EXPECT_GE(h.highest_equivalent(v), v);
    EXPECT_LE(double(h.highest_equivalent(v) - h.lowest_equivalent(v)), double(v) / 1000.0 + 1);
  }
}

TEST(Histogram, ValuesAboveTheRangeSaturate) {
  Histogram h(1'000'000);
  h.record(5'000'000);
  EXPECT_EQ(h.saturated(), 1u);
  EXPECT_EQ(h.max(), 1'000'000u);
}

TEST(Histogram, MergeEqualsRecordingEverythingInOne) {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<uint64_t> dist(1, 50'000'000);
  Histogram a, b, all;
  for (int i = 0; i < 50'000; ++i) {
    uint64_t v = dist(rng);
    (i % 3 == 0 ? a : b).record(v);
    all.record(v);
  }
  a.merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.min(), all.min());
  EXPECT_EQ(a.max(), all.max());
  EXPECT_DOUBLE_EQ(a.mean(), all.mean());
  for (double p : {50.0, 90.0, 99.0, 99.9})
    EXPECT_EQ(a.value_at_percentile(p), all.value_at_percentile(p));
}

TEST(Histogram, MergeIntoEmptyKeepsMinimum) {
  Histogram a, b;
  b.record(500);
  b.record(700);
  a.merge(b);
  EXPECT_EQ(a.min(), 500u);
  EXPECT_EQ(a.max(), 700u);
}

TEST(Histogram, PercentileDistributionIsMonotonicAndEndsAtOne) {
  std::mt19937_64 rng(3);
  std::exponential_distribution<double> dist(1.0 / 200'000.0);
  Histogram h;
  for (int i = 0; i < 10'000; ++i) h.record(uint64_t(dist(rng)) + 1000);
  std::string text = h.percentile_distribution(1e6);
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);
  EXPECT_NE(line.find("Value"), std::string::npos);
  EXPECT_NE(line.find("Percentile"), std::string::npos);
  EXPECT_NE(line.find("TotalCount"), std::string::npos);
  EXPECT_NE(line.find("1/(1-Percentile)"), std::string::npos);
  double last_value = -1, last_pct = -1;
  uint64_t last_count = 0;
  int rows = 0;
  bool saw_max = false, saw_total = false;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line[0] == '#') {
      saw_max |= line.find("Max") != std::string::npos;
      saw_total |= line.find("Total count    =        10000") != std::string::npos;
      continue;
    }
    std::istringstream row(line);
    double value, pct;
    uint64_t count;
    ASSERT_TRUE(row >> value >> pct >> count) << line;
    EXPECT_GE(value, last_value);
    EXPECT_GE(pct, last_pct);
    EXPECT_GE(count, last_count);
    last_value = value;
    last_pct = pct;
    last_count = count;
    ++rows;
  }
  EXPECT_GT(rows, 20);
  EXPECT_DOUBLE_EQ(last_pct, 1.0);
  EXPECT_EQ(last_count, 10'000u);
  EXPECT_NEAR(last_value, double(h.max()) / 1e6, 0.001);
  EXPECT_TRUE(saw_max);
  EXPECT_TRUE(saw_total);
}

}  // namespace
}  // namespace hsp::bench
