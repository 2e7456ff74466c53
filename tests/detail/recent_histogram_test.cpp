// connpool - tests: detail::RecentHistogram (plain time points, no threads, no sleeps)
// SPDX-License-Identifier: MIT

#include <chrono>

#include <connpool/detail/recent_histogram.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using connpool::Histogram;
using connpool::detail::RecentHistogram;

namespace {

using TimePoint = RecentHistogram::time_point;

const TimePoint t0{std::chrono::hours(1)};

/// A cumulative histogram with `n` durations of `d` in it.
Histogram with(Histogram h, int n, std::chrono::nanoseconds d) {
  for (int i = 0; i < n; ++i) {
    h.record(d);
  }
  return h;
}

}  // namespace

TEST_CASE("RecentHistogram: the first reading answers with everything counted so far",
          "[detail][histogram]") {
  RecentHistogram recent;
  const Histogram all = with({}, 3, 5ms);
  CHECK(recent.since(t0, all) == all);
}

TEST_CASE("RecentHistogram: what was counted since a reading at least a window old",
          "[detail][histogram]") {
  RecentHistogram recent(60s, 10s);
  Histogram cumulative = with({}, 100, 50ms);  // an old burst of slow waits
  (void)recent.since(t0, cumulative);
  // A reading every 10 s; from 5 s on, only fast acquires.
  for (int i = 1; i <= 6; ++i) {
    cumulative = with(cumulative, 10, 0ns);
    (void)recent.since(t0 + i * 10s, cumulative);
  }
  // At 65 s the baseline is the reading at 0 s: the slow burst is behind it.
  cumulative = with(cumulative, 10, 0ns);
  const Histogram last_minute = recent.since(t0 + 65s, cumulative);
  CHECK(last_minute.count() == 70);
  CHECK(last_minute.quantile(0.99) == 1us);
  CHECK(cumulative.quantile(0.99) > 1ms);  // over all time, the burst still shows
}

TEST_CASE("RecentHistogram: before a window has passed, since the oldest reading",
          "[detail][histogram]") {
  RecentHistogram recent(60s, 10s);
  Histogram cumulative = with({}, 5, 2ms);
  (void)recent.since(t0, cumulative);
  cumulative = with(cumulative, 3, 8ms);
  const Histogram recent_part = recent.since(t0 + 20s, cumulative);
  CHECK(recent_part.count() == 3);
  CHECK(recent_part.quantile(0.0) == 8192us);
}

TEST_CASE("RecentHistogram: readings closer than the spacing are not kept, and old ones go",
          "[detail][histogram]") {
  RecentHistogram recent(60s, 10s);
  Histogram cumulative = with({}, 1, 1ms);
  (void)recent.since(t0, cumulative);
  cumulative = with(cumulative, 1, 1ms);
  (void)recent.since(t0 + 1s, cumulative);  // too close: not kept
  cumulative = with(cumulative, 1, 1ms);
  // The baseline is still the reading at t0 (the one at 1 s was not kept).
  CHECK(recent.since(t0 + 2s, cumulative).count() == 2);

  // Many readings, 10 s apart: only the last `kept` stay, and the baseline is a minute back.
  for (int i = 1; i <= 30; ++i) {
    cumulative = with(cumulative, 1, 1ms);
    (void)recent.since(t0 + i * 10s, cumulative);
  }
  cumulative = with(cumulative, 1, 1ms);
  // Readings at 300 s (kept), 240 s is a minute before 300 s; at 301 s the newest reading at
  // least 60 s old is the one at 240 s: 6 more durations since (250..300) and this one.
  CHECK(recent.since(t0 + 301s, cumulative).count() == 7);
}
