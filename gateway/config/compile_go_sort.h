// A stable sort that orders exactly as Go's sort.SliceStable (private to gateway/config).
//
// Caddy sorts routes and sites with sort.SliceStable, and some of its comparators are not strict
// weak orders. With such a comparator the result depends on which pairs the algorithm compares,
// so std::stable_sort orders some inputs differently from Caddy. The algorithm here is the one Go
// uses: insertion sort on runs of 20 elements, then bottom-up merging of neighbouring runs with
// SymMerge (Kim & Kutzner, "Stable minimum storage merging by symmetric comparisons", 2004).
// What must match Go is the sequence of comparisons: every bisection probes floor((lo+hi)/2).
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

namespace hsp::config::compile_detail {

namespace go_sort {

// First index in [lo, hi) at which `pred` turns true (pred is false, then true).
template <typename Pred>
size_t bisect(size_t lo, size_t hi, Pred pred) {
  while (lo < hi) {
    size_t probe = lo + (hi - lo) / 2;
    if (pred(probe))
      hi = probe;
    else
      lo = probe + 1;
  }
  return lo;
}

template <typename T, typename Less>
struct Merger {
  std::vector<T>& v;
  Less& less_fn;

  bool less(size_t i, size_t j) { return less_fn(v[i], v[j]); }
  void rotate(size_t first, size_t middle, size_t last) {
    std::rotate(v.begin() + first, v.begin() + middle, v.begin() + last);
  }

  void insertion_sort(size_t lo, size_t hi) {
    for (size_t i = lo + 1; i < hi; ++i) {
      for (size_t j = i; j > lo && less(j, j - 1); --j) std::swap(v[j], v[j - 1]);
    }
  }

  // Merges the sorted runs [lo, mid) and [mid, hi).
  void sym_merge(size_t lo, size_t mid, size_t hi) {
    if (mid - lo == 1) {  // one element on the left: insert it into the right run
      size_t to = bisect(mid, hi, [&](size_t k) { return !less(k, lo); });
      rotate(lo, lo + 1, to);
      return;
    }
    if (hi - mid == 1) {  // one element on the right: insert it into the left run
      size_t to = bisect(lo, mid, [&](size_t k) { return less(mid, k); });
      rotate(to, mid, mid + 1);
      return;
    }
    size_t half = lo + (hi - lo) / 2;
    size_t sum = half + mid;
    size_t start = mid > half ? sum - hi : lo;
    size_t limit = mid > half ? half : mid;
    size_t last = sum - 1;
    start = bisect(start, limit, [&](size_t c) { return less(last - c, c); });
    size_t end = sum - start;
    if (start < mid && mid < end) rotate(start, mid, end);
    if (lo < start && start < half) sym_merge(lo, start, half);
    if (half < end && end < hi) sym_merge(half, end, hi);
  }
};

}  // namespace go_sort

template <typename T, typename Less>
void go_stable_sort(std::vector<T>& v, Less less) {
  constexpr size_t kRun = 20;
  go_sort::Merger<T, Less> m{v, less};
  const size_t n = v.size();
  size_t lo = 0;
  for (; lo + kRun <= n; lo += kRun) m.insertion_sort(lo, lo + kRun);
  m.insertion_sort(lo, n);
  for (size_t run = kRun; run < n; run *= 2) {
    size_t a = 0;
    for (; a + 2 * run <= n; a += 2 * run) m.sym_merge(a, a + run, a + 2 * run);
    if (a + run < n) m.sym_merge(a, a + run, n);
  }
}

}  // namespace hsp::config::compile_detail
