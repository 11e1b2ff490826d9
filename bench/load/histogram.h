// Latency histogram in the HdrHistogram layout: log-linear buckets with 2048 sub-buckets each, so
// every recorded value is kept to 3 significant decimal digits (relative error below 1/1024),
// from 1 ns up to one hour. One per driver thread, merged at the end; recording is an index
// computation and an increment, no allocation.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hsp::bench {

class Histogram {
 public:
  // Values above max_value are recorded as max_value (and counted in saturated()).
  explicit Histogram(uint64_t max_value = 3'600'000'000'000ULL);

  void record(uint64_t value);
  void merge(const Histogram& other);  // both must have the same max_value
  void reset();

  uint64_t count() const { return total_; }
  uint64_t min() const { return total_ ? min_ : 0; }
  uint64_t max() const { return max_; }
  double mean() const { return total_ ? double(sum_) / double(total_) : 0.0; }
  double stddev() const;
  uint64_t saturated() const { return saturated_; }

  // The value at or below which `percentile` % of the recorded values fall: the recorded
  // sample of rank ceil(percentile/100 * count) (1-based), reported as the highest value of its
  // bucket (HdrHistogram's convention), capped at max(). 0 when empty.
  uint64_t value_at_percentile(double percentile) const;

  // The bucket arithmetic, public for the tests: every value in [lowest_equivalent(v),
  // highest_equivalent(v)] lands in the same counter.
  uint64_t lowest_equivalent(uint64_t value) const;
  uint64_t highest_equivalent(uint64_t value) const;

  // HdrHistogram's percentile distribution text (the .hgrm layout that wrk2 prints and the
  // HdrHistogram plotters read): Value, Percentile, TotalCount, 1/(1-Percentile), five steps
  // per halving of the remaining distance to 100 %, then the Mean/Max/Buckets footer. Values
  // are divided by `unit_divisor` (1e6: nanoseconds shown in milliseconds, as wrk2 does).
  std::string percentile_distribution(double unit_divisor) const;

 private:
  static constexpr int kSubBucketHalfMagnitude = 10;  // 1024: 3 significant digits need 2000
  static constexpr uint64_t kSubBucketCount = 2048;
  static constexpr uint64_t kSubBucketHalf = 1024;
  static constexpr uint64_t kSubBucketMask = kSubBucketCount - 1;

  int bucket_index(uint64_t value) const;
  size_t counts_index(uint64_t value) const;
  uint64_t value_from_index(size_t index) const;

  uint64_t max_value_;
  int bucket_count_ = 0;
  std::vector<uint64_t> counts_;
  uint64_t total_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
  uint64_t sum_ = 0;
  long double sum_sq_ = 0;
  uint64_t saturated_ = 0;
};

}  // namespace hsp::bench
