// connpool - tests: connpool::Histogram and detail::AtomicHistogram
// SPDX-License-Identifier: MIT

#include <chrono>
#include <cstdint>
#include <stdexcept>

#include <connpool/histogram.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using connpool::Histogram;

TEST_CASE("Histogram: log2 buckets from 1 us to 2^27 us, then one unbounded", "[histogram]") {
  STATIC_REQUIRE(Histogram::bucket_count == 29);
  CHECK(Histogram::upper_bound(0) == 1us);
  CHECK(Histogram::upper_bound(1) == 2us);
  CHECK(Histogram::upper_bound(10) == 1024us);
  CHECK(Histogram::upper_bound(27) == std::chrono::microseconds(std::int64_t{1} << 27));
  CHECK(Histogram::upper_bound(27) > 2min);
  CHECK(Histogram::upper_bound(28) == std::chrono::microseconds::max());

  // A duration goes to the first bucket whose (inclusive) upper bound holds it.
  CHECK(Histogram::bucket_for(0ns) == 0);
  CHECK(Histogram::bucket_for(-5ms) == 0);
  CHECK(Histogram::bucket_for(1000ns) == 0);
  CHECK(Histogram::bucket_for(1001ns) == 1);
  CHECK(Histogram::bucket_for(2us) == 1);
  CHECK(Histogram::bucket_for(2001ns) == 2);
  CHECK(Histogram::bucket_for(3us) == 2);
  CHECK(Histogram::bucket_for(4us) == 2);
  CHECK(Histogram::bucket_for(1ms) == 10);  // 1000 us <= 1024 us
  CHECK(Histogram::bucket_for(1025us) == 11);
  CHECK(Histogram::bucket_for(std::chrono::microseconds(std::int64_t{1} << 27)) == 27);
  CHECK(Histogram::bucket_for(std::chrono::microseconds((std::int64_t{1} << 27) + 1)) == 28);
  CHECK(Histogram::bucket_for(std::chrono::hours(24 * 365)) == 28);
  for (std::size_t i = 0; i + 1 < Histogram::bucket_count; ++i) {
    INFO("bucket " << i);
    CHECK(Histogram::bucket_for(Histogram::upper_bound(i)) == i);
    CHECK(Histogram::bucket_for(Histogram::upper_bound(i) + 1ns) == i + 1);
  }
}

TEST_CASE("Histogram: count, sum and quantiles as bucket bounds", "[histogram]") {
  Histogram h;
  CHECK(h.count() == 0);
  CHECK(h.sum() == 0ns);
  CHECK(h.quantile(0.5) == 0us);
  CHECK(h.quantile(1.0) == 0us);

  // 90 short durations (<= 1 us), 9 of 3 ms, 1 of 100 ms.
  for (int i = 0; i < 90; ++i) {
    h.record(500ns);
  }
  for (int i = 0; i < 9; ++i) {
    h.record(3ms);
  }
  h.record(100ms);
  CHECK(h.count() == 100);
  CHECK(h.sum() == 90 * 500ns + 9 * 3ms + 100ms);
  CHECK(h.buckets()[0] == 90);
  CHECK(h.buckets()[Histogram::bucket_for(3ms)] == 9);
  CHECK(h.buckets()[Histogram::bucket_for(100ms)] == 1);

  CHECK(h.quantile(0.0) == 1us);         // the smallest bound holding the first duration
  CHECK(h.quantile(0.5) == 1us);         // rank 50
  CHECK(h.quantile(0.9) == 1us);         // rank 90: still the first bucket
  CHECK(h.quantile(0.91) == 4096us);     // rank 91: 3 ms is in (2048, 4096] us
  CHECK(h.quantile(0.99) == 4096us);     // rank 99
  CHECK(h.quantile(0.995) == 131072us);  // rank 100: 100 ms is in (65536, 131072] us
  CHECK(h.quantile(1.0) == 131072us);

  CHECK_THROWS_AS(h.quantile(-0.1), std::invalid_argument);
  CHECK_THROWS_AS(h.quantile(1.5), std::invalid_argument);
  CHECK_THROWS_WITH(h.quantile(2.0),
                    Catch::Matchers::Contains("Histogram::quantile: q must be in [0, 1]"));
}

TEST_CASE("Histogram: the unbounded bucket answers with its lower bound, as Prometheus does",
          "[histogram]") {
  Histogram h;
  h.record(10min);
  CHECK(h.buckets()[Histogram::bucket_count - 1] == 1);
  CHECK(h.quantile(0.5) == Histogram::upper_bound(Histogram::bucket_count - 2));
}

TEST_CASE("Histogram: += adds bucket by bucket, add() merges a shard", "[histogram]") {
  Histogram a;
  Histogram b;
  a.record(1ms);
  b.record(1ms);
  b.record(5s);
  a += b;
  CHECK(a.count() == 3);
  CHECK(a.sum() == 2ms + 5s);
  CHECK(a.buckets()[Histogram::bucket_for(1ms)] == 2);
  CHECK(a.buckets()[Histogram::bucket_for(5s)] == 1);

  Histogram c;
  c.add(3, 7, 20us);
  CHECK(c.count() == 7);
  CHECK(c.sum() == 20us);
  CHECK(c.buckets()[3] == 7);
  c.add(1000, 1);  // out of range: the last bucket
  CHECK(c.buckets()[Histogram::bucket_count - 1] == 1);
  CHECK(c == c);
  CHECK_FALSE(c == a);
}

TEST_CASE("detail::AtomicHistogram: what one owner records, added to a Histogram", "[histogram]") {
  connpool::detail::AtomicHistogram shard;
  shard.record(2us);
  shard.record(2us);
  shard.record(-1us);  // counts as 0
  shard.record(1s);
  Histogram h;
  h.record(2us);
  shard.add_to(h);
  CHECK(h.count() == 5);
  CHECK(h.buckets()[1] == 3);
  CHECK(h.buckets()[0] == 1);
  CHECK(h.sum() == 6us + 1s);
}
