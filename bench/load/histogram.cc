#include "histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>

namespace hsp::bench {

Histogram::Histogram(uint64_t max_value) : max_value_(std::max<uint64_t>(max_value, 2)) {
  // Bucket b covers [1024 << b, 2048 << b) at a step of 1 << b; bucket 0 also holds [0, 1024).
  uint64_t smallest_untrackable = kSubBucketCount;
  bucket_count_ = 1;
  while (smallest_untrackable <= max_value_) {
    smallest_untrackable <<= 1;
    ++bucket_count_;
  }
  counts_.assign(size_t(bucket_count_ + 1) * kSubBucketHalf, 0);
}

int Histogram::bucket_index(uint64_t value) const {
  return 63 - std::countl_zero(value | kSubBucketMask) - kSubBucketHalfMagnitude;
}

size_t Histogram::counts_index(uint64_t value) const {
  int bucket = bucket_index(value);
  uint64_t sub = value >> bucket;  // in [1024, 2048) except in bucket 0
  return (size_t(bucket + 1) << kSubBucketHalfMagnitude) + sub - kSubBucketHalf;
}

uint64_t Histogram::value_from_index(size_t index) const {
  int bucket = int(index >> kSubBucketHalfMagnitude) - 1;
  uint64_t sub = (index & (kSubBucketHalf - 1)) + kSubBucketHalf;
  if (bucket < 0) {
    sub -= kSubBucketHalf;
    bucket = 0;
  }
  return sub << bucket;
}

uint64_t Histogram::lowest_equivalent(uint64_t value) const {
  int bucket = bucket_index(value);
  return (value >> bucket) << bucket;
}

uint64_t Histogram::highest_equivalent(uint64_t value) const {
  return lowest_equivalent(value) + (uint64_t(1) << bucket_index(value)) - 1;
}

void Histogram::record(uint64_t value) {
  if (value > max_value_) {
    value = max_value_;
    ++saturated_;
  }
  ++counts_[counts_index(value)];
  ++total_;
  sum_ += value;
  sum_sq_ += (long double)value * (long double)value;
  min_ = std::min(min_, value);
  max_ = std::max(max_, value);
}

void Histogram::merge(const Histogram& other) {
  size_t n = std::min(counts_.size(), other.counts_.size());
  for (size_t i = 0; i < n; ++i) counts_[i] += other.counts_[i];
  total_ += other.total_;
  sum_ += other.sum_;
  sum_sq_ += other.sum_sq_;
  saturated_ += other.saturated_;
  if (other.total_) {
    min_ = std::min(min_, other.min_);
    max_ = std::max(max_, other.max_);
  }
}

void Histogram::reset() {
  std::fill(counts_.begin(), counts_.end(), 0);
  total_ = sum_ = saturated_ = 0;
  sum_sq_ = 0;
  min_ = UINT64_MAX;
  max_ = 0;
}

double Histogram::stddev() const {
  if (total_ < 2) return 0.0;
  long double m = (long double)sum_ / total_;
  long double var = sum_sq_ / total_ - m * m;
  return var > 0 ? double(std::sqrt(var)) : 0.0;
}

uint64_t Histogram::value_at_percentile(double percentile) const {
  if (total_ == 0) return 0;
  percentile = std::clamp(percentile, 0.0, 100.0);
  // Rank of the sample, 1-based; the small epsilon keeps 99.9 % of 1000 at rank 999, not 1000,
  // when the product comes out a hair above an integer.
  double exact = percentile / 100.0 * double(total_);
  uint64_t rank = uint64_t(std::ceil(exact - 1e-9));
  rank = std::clamp<uint64_t>(rank, 1, total_);
  uint64_t seen = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    seen += counts_[i];
    if (seen >= rank) return std::min(highest_equivalent(value_from_index(i)), max_);
  }
  return max_;
}

std::string Histogram::percentile_distribution(double unit_divisor) const {
  std::string out;
  char line[160];
  std::snprintf(line, sizeof line, "%12s %14s %10s %14s\n\n", "Value", "Percentile", "TotalCount",
                "1/(1-Percentile)");
  out += line;
  if (total_ > 0) {
    // HdrHistogram's percentile iterator: after reaching `target`, the next target is one tick
    // further, with 5 ticks per halving of the distance to 100 %.
    constexpr int kTicksPerHalfDistance = 5;
    double target = 0.0;
    uint64_t seen = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
      if (counts_[i] == 0) continue;
      seen += counts_[i];
      double value = double(std::min(highest_equivalent(value_from_index(i)), max_));
      double reached = 100.0 * double(seen) / double(total_);
      // As HdrHistogram's iterator: the last bucket gives at most one row for the current
      // target, then the 100 % row ends the table.
      bool last = seen == total_;
      while (target <= reached) {
        std::snprintf(line, sizeof line, "%12.3f %2.12f %10llu %14.2f\n", value / unit_divisor,
                      target / 100.0, (unsigned long long)seen, 1.0 / (1.0 - target / 100.0));
        out += line;
        double ticks = kTicksPerHalfDistance *
                       std::pow(2.0, std::floor(std::log2(100.0 / (100.0 - target))) + 1);
        target += 100.0 / ticks;
        if (last) break;
      }
      if (last) {
        std::snprintf(line, sizeof line, "%12.3f %2.12f %10llu\n", value / unit_divisor, 1.0,
                      (unsigned long long)seen);
        out += line;
        break;
      }
    }
  }
  std::snprintf(line, sizeof line, "#[Mean    = %12.3f, StdDeviation   = %12.3f]\n",
                mean() / unit_divisor, stddev() / unit_divisor);
  out += line;
  std::snprintf(line, sizeof line, "#[Max     = %12.3f, Total count    = %12llu]\n",
                double(max_) / unit_divisor, (unsigned long long)total_);
  out += line;
  std::snprintf(line, sizeof line, "#[Buckets = %12d, SubBuckets     = %12llu]\n", bucket_count_,
                (unsigned long long)kSubBucketCount);
  out += line;
  return out;
}

}  // namespace hsp::bench
