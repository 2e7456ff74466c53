// connpool - tests: detail/expiry.hpp, the expiry rules, with plain time points
// SPDX-License-Identifier: MIT

#include <chrono>
#include <cstdint>

#include <connpool/detail/expiry.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using connpool::detail::idle_over;
using connpool::detail::keepalive_due;
using connpool::detail::leak_due;
using connpool::detail::lifetime_over;
using connpool::detail::staler;
using connpool::detail::validation_due;

namespace {

using Clock = std::chrono::steady_clock;
using TP = Clock::time_point;

constexpr TP at(std::chrono::milliseconds ms) {
  return TP(std::chrono::duration_cast<Clock::duration>(ms));
}

}  // namespace

// DESIGN 6: "one older than max_lifetime ... is closed, never handed out".
TEST_CASE("lifetime_over: from the lifetime on, not before, 0 is unlimited", "[detail][expiry]") {
  const Clock::duration lifetime = 1000ms;
  CHECK_FALSE(lifetime_over(at(0ms), lifetime, at(999ms)));
  CHECK(lifetime_over(at(0ms), lifetime, at(1000ms)));
  CHECK(lifetime_over(at(0ms), lifetime, at(5000ms)));
  CHECK_FALSE(lifetime_over(at(0ms), Clock::duration::zero(), at(100'000'000ms)));
  static_assert(lifetime_over(at(0ms), Clock::duration(1), at(1ms)));
}

// DESIGN 6: "one idle longer than max_idle while more than min_size connections are open".
TEST_CASE("idle_over: idle for max_idle or longer, 0 never", "[detail][expiry]") {
  CHECK_FALSE(idle_over(at(100ms), 500ms, at(599ms)));
  CHECK(idle_over(at(100ms), 500ms, at(600ms)));
  CHECK_FALSE(idle_over(at(0ms), 0ms, at(100'000'000ms)));
}

// DESIGN 5: "an idle connection unused for longer than validation_bypass is pinged first".
TEST_CASE("validation_due: counted from the later of the last use and the last check",
          "[detail][expiry]") {
  CHECK_FALSE(validation_due(at(1000ms), at(0ms), 500ms, at(1499ms)));
  CHECK(validation_due(at(1000ms), at(0ms), 500ms, at(1500ms)));
  // A keepalive ping at 1400 ms counts as a check: no validation before 1900 ms.
  CHECK_FALSE(validation_due(at(1000ms), at(1400ms), 500ms, at(1899ms)));
  CHECK(validation_due(at(1000ms), at(1400ms), 500ms, at(1900ms)));
  // A bypass of 0: every acquire pings.
  CHECK(validation_due(at(1000ms), at(1000ms), 0ms, at(1000ms)));
}

TEST_CASE("keepalive_due: unused and unpinged for the interval, 0 is off", "[detail][expiry]") {
  CHECK_FALSE(keepalive_due(at(0ms), at(0ms), 0ms, at(100'000ms)));
  CHECK_FALSE(keepalive_due(at(0ms), at(0ms), 60'000ms, at(59'999ms)));
  CHECK(keepalive_due(at(0ms), at(0ms), 60'000ms, at(60'000ms)));
  CHECK_FALSE(keepalive_due(at(0ms), at(30'000ms), 60'000ms, at(60'000ms)));
}

TEST_CASE("staler: the least recently used first, then the oldest connection", "[detail][expiry]") {
  CHECK(staler(at(1ms), 9, at(2ms), 1));
  CHECK_FALSE(staler(at(2ms), 1, at(1ms), 9));
  CHECK(staler(at(1ms), 1, at(1ms), 2));
  CHECK_FALSE(staler(at(1ms), 2, at(1ms), 1));
  CHECK_FALSE(staler(at(1ms), 1, at(1ms), 1));  // irreflexive: a strict weak order
}

// Issue 12, defect 7: the scan read the start of an earlier check-out (without the lock) and
// marked the connection reported, which hid the leak of the check-out that followed.
TEST_CASE("leak_due: once per check-out, and a stale read does not hide the next one",
          "[detail][expiry][leak]") {
  const std::int64_t threshold = 1000;
  CHECK_FALSE(leak_due(0, 5000, threshold, 0));      // not held
  CHECK_FALSE(leak_due(100, 1099, threshold, 0));    // held for less than the threshold
  CHECK(leak_due(100, 1100, threshold, 0));          // held for the threshold: report
  CHECK_FALSE(leak_due(100, 9000, threshold, 100));  // that check-out was reported already
  // The scan read the start of the earlier check-out (100) after it had ended, and recorded it
  // as reported; the check-out that started at 2000 is still reported when it becomes a leak.
  CHECK_FALSE(leak_due(2000, 2500, threshold, 100));
  CHECK(leak_due(2000, 3000, threshold, 100));
}
