// connpool - what a growing histogram counted over about the last minute
// SPDX-License-Identifier: MIT
#pragma once

// RecentHistogram: readings of a cumulative Histogram (PoolStats::wait_time), kept at most one
// per spacing, so that health() can tell what was counted over about the last window. A decision
// component: it never locks, never reads a clock (the caller passes `now`) and never runs user
// code; the caller serializes the calls (PoolCore::health_mutex_). Tests:
// tests/detail/recent_histogram_test.cpp.

#include <array>
#include <chrono>
#include <cstddef>

#include <connpool/histogram.hpp>

namespace connpool::detail {

class RecentHistogram {
 public:
  using time_point = std::chrono::steady_clock::time_point;

  /// Readings kept: with one per spacing, they reach back (kept - 1) spacings.
  static constexpr std::size_t kept = 8;

  /// `window`: how far back since() looks; `spacing`: the least time between two readings kept.
  /// Precondition: window <= (kept - 2) * spacing, so that a reading a window old is still kept
  /// when readings come at least once per spacing.
  explicit RecentHistogram(std::chrono::nanoseconds window = std::chrono::seconds(60),
                           std::chrono::nanoseconds spacing = std::chrono::seconds(10)) noexcept
      : window_(window), spacing_(spacing) {}

  /// What `cumulative` (read at `now`) counted since the baseline: the newest reading kept that
  /// is at least a window old; failing that (readings began less than a window ago), the oldest
  /// kept, or, before the first, nothing (all of `cumulative`). Then keeps `cumulative` as a
  /// reading, unless the newest kept is younger than the spacing.
  ///
  /// Why readings taken by the caller rather than a ring of per-interval histograms recorded
  /// into: the pool records waits per slot, without a lock and without reading a clock when no
  /// wait happened; a per-interval ring would need the time of every acquire.
  Histogram since(time_point now, const Histogram& cumulative) {
    const Reading* base = nullptr;
    for (std::size_t i = 0; i < count_; ++i) {
      const Reading& r = at(i);  // oldest first
      if (now - r.at >= window_) {
        base = &r;  // the newest so far that is old enough
      }
    }
    if (base == nullptr && count_ != 0) {
      base = &at(0);
    }
    Histogram recent = cumulative;
    if (base != nullptr) {
      recent -= base->value;
    }
    if (count_ == 0 || now - at(count_ - 1).at >= spacing_) {
      push({now, cumulative});
    }
    return recent;
  }

 private:
  struct Reading {
    time_point at;
    Histogram value;
  };

  /// The i-th kept reading, oldest first.
  [[nodiscard]] const Reading& at(std::size_t i) const noexcept {
    return ring_[(first_ + i) % kept];
  }

  void push(const Reading& r) noexcept {
    if (count_ == kept) {
      first_ = (first_ + 1) % kept;  // the oldest goes
      --count_;
    }
    ring_[(first_ + count_) % kept] = r;
    ++count_;
  }

  std::chrono::nanoseconds window_;
  std::chrono::nanoseconds spacing_;
  std::array<Reading, kept> ring_{};
  std::size_t first_ = 0;  // the oldest reading's index in ring_
  std::size_t count_ = 0;  // readings kept
};

}  // namespace connpool::detail
