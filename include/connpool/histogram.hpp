// connpool - Histogram, a distribution of durations in fixed log2 buckets
// SPDX-License-Identifier: MIT
#pragma once

// connpool::Histogram is a plain value (PoolStats carries three: wait_time, use_time,
// create_time). detail::AtomicHistogram is what a pool records into without its lock, one per
// slot, each written by the slot's owner only. No locks here.

#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace connpool {

/// Durations counted in fixed buckets whose bounds double: bucket 0 holds durations up to 1 µs,
/// bucket i (1 to 27) those above 2^(i-1) µs and up to 2^i µs, and the last bucket (28) those
/// above 2^27 µs (about 134 s, a little over 2 minutes).
///
/// Why fixed log2 buckets: a pool records into them without a lock and without allocating (an
/// index from the bit width of the duration in µs, one add), two histograms add bucket by bucket
/// (the shards of one pool, the hosts of a MultiHostPool), and the bounds are the same for every
/// pool, so that Prometheus can aggregate the buckets of many processes. The price is
/// resolution: a quantile is known to within a factor of two, as with HdrHistogram at one
/// significant bit, or Prometheus' exponential buckets.
class Histogram {
 public:
  /// Buckets, the last one unbounded.
  static constexpr std::size_t bucket_count = 29;

  /// The upper bound of bucket `i` (inclusive): 2^i µs; for the last bucket,
  /// std::chrono::microseconds::max().
  [[nodiscard]] static constexpr std::chrono::microseconds upper_bound(std::size_t i) noexcept {
    return i + 1 >= bucket_count ? std::chrono::microseconds::max()
                                 : std::chrono::microseconds(std::int64_t{1} << i);
  }

  /// The bucket that counts `d`. Negative durations count as 0.
  [[nodiscard]] static constexpr std::size_t bucket_for(std::chrono::nanoseconds d) noexcept {
    if (d.count() <= 1000) {
      return 0;
    }
    // ceil(d in µs), then the smallest i with 2^i >= it: bit_width(us - 1).
    const auto us = static_cast<std::uint64_t>((d.count() + 999) / 1000);
    const auto i = static_cast<std::size_t>(std::bit_width(us - 1));
    return i < bucket_count - 1 ? i : bucket_count - 1;
  }

  /// Counts one duration.
  void record(std::chrono::nanoseconds d) noexcept {
    ++buckets_[bucket_for(d)];
    sum_ += d.count() > 0 ? d : std::chrono::nanoseconds(0);
  }

  /// Counts `n` durations in bucket `i` whose sum is `sum` (a shard's, merged).
  void add(std::size_t i, std::uint64_t n, std::chrono::nanoseconds sum = {}) noexcept {
    buckets_[i < bucket_count ? i : bucket_count - 1] += n;
    sum_ += sum;
  }

  /// Adds every bucket and the sum of `other`.
  Histogram& operator+=(const Histogram& other) noexcept {
    for (std::size_t i = 0; i < bucket_count; ++i) {
      buckets_[i] += other.buckets_[i];
    }
    sum_ += other.sum_;
    return *this;
  }

  /// Takes away what `earlier` counted: for two readings of one growing histogram, what was
  /// counted between them. A bucket (or the sum) smaller in `*this` than in `earlier` becomes 0.
  Histogram& operator-=(const Histogram& earlier) noexcept {
    for (std::size_t i = 0; i < bucket_count; ++i) {
      buckets_[i] = buckets_[i] > earlier.buckets_[i] ? buckets_[i] - earlier.buckets_[i] : 0;
    }
    sum_ = sum_ > earlier.sum_ ? sum_ - earlier.sum_ : std::chrono::nanoseconds(0);
    return *this;
  }

  /// The durations counted.
  [[nodiscard]] std::uint64_t count() const noexcept {
    std::uint64_t n = 0;
    for (const std::uint64_t b : buckets_) {
      n += b;
    }
    return n;
  }

  /// Their sum. A pool counts an acquire served at once, without waiting, as 0 (see
  /// PoolStats::wait_time).
  [[nodiscard]] std::chrono::nanoseconds sum() const noexcept { return sum_; }

  /// The counts, bucket by bucket (not cumulative); bounds from upper_bound().
  [[nodiscard]] const std::array<std::uint64_t, bucket_count>& buckets() const noexcept {
    return buckets_;
  }

  /// The upper bound of the bucket that holds the q-quantile: the smallest bound that at least
  /// ceil(q * count()) of the durations (and at least one) do not exceed. 0 when nothing was
  /// counted. When that bucket is the last, unbounded one, its lower bound (2^27 µs), as
  /// Prometheus' histogram_quantile() answers for its +Inf bucket.
  /// Throws std::invalid_argument, naming q, unless 0 <= q <= 1.
  [[nodiscard]] std::chrono::microseconds quantile(double q) const {
    if (!(q >= 0.0 && q <= 1.0)) {
      throw std::invalid_argument("connpool: Histogram::quantile: q must be in [0, 1] (got " +
                                  std::to_string(q) + ")");
    }
    const std::uint64_t n = count();
    if (n == 0) {
      return std::chrono::microseconds(0);
    }
    auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(n)));
    rank = rank == 0 ? 1 : (rank > n ? n : rank);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i + 1 < bucket_count; ++i) {
      seen += buckets_[i];
      if (seen >= rank) {
        return upper_bound(i);
      }
    }
    return upper_bound(bucket_count - 2);
  }

  friend bool operator==(const Histogram&, const Histogram&) = default;

 private:
  std::array<std::uint64_t, bucket_count> buckets_{};
  std::chrono::nanoseconds sum_{0};
};

namespace detail {

/// A Histogram recorded without a lock by one writer at a time (the owner of a slot: whoever
/// holds it in use), read by anyone: relaxed loads and stores instead of read-modify-writes, as
/// OwnerCounter, since ownership already orders the writers. A reader that runs while a writer
/// records may see the count before the sum; once the pool is quiet the figures are exact.
class AtomicHistogram {
 public:
  void record(std::chrono::nanoseconds d) noexcept {
    bump(buckets_[Histogram::bucket_for(d)], 1);
    bump(sum_ns_, static_cast<std::uint64_t>(d.count() > 0 ? d.count() : 0));
  }

  /// Adds what was recorded to `h`.
  void add_to(Histogram& h) const noexcept {
    for (std::size_t i = 0; i < Histogram::bucket_count; ++i) {
      if (const std::uint64_t n = buckets_[i].load(std::memory_order_relaxed); n != 0) {
        h.add(i, n);
      }
    }
    h.add(0, 0,
          std::chrono::nanoseconds(
              static_cast<std::int64_t>(sum_ns_.load(std::memory_order_relaxed))));
  }

 private:
  static void bump(std::atomic<std::uint64_t>& v, std::uint64_t by) noexcept {
    v.store(v.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
  }

  std::array<std::atomic<std::uint64_t>, Histogram::bucket_count> buckets_{};
  std::atomic<std::uint64_t> sum_ns_{0};
};

}  // namespace detail

}  // namespace connpool
