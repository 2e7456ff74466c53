// connpool - tests: detail/connect_gate.hpp, connect permits and the backoff, with plain time
// points
// SPDX-License-Identifier: MIT

#include <chrono>
#include <exception>
#include <stdexcept>

#include <connpool/detail/connect_gate.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using connpool::detail::ConnectGate;
using connpool::detail::WaitClock;

namespace {

constexpr WaitClock::time_point at(std::chrono::milliseconds ms) {
  return WaitClock::time_point(std::chrono::duration_cast<WaitClock::duration>(ms));
}

std::exception_ptr refused() {
  return std::make_exception_ptr(std::runtime_error("refused"));
}

}  // namespace

TEST_CASE("ConnectGate: at most max_connecting permits, 0 is unlimited", "[detail][connect]") {
  ConnectGate gate(2, 5000ms);
  CHECK(gate.permitted(at(0ms)));
  gate.begin();
  gate.begin();
  CHECK_FALSE(gate.permitted(at(0ms)));
  gate.give_back();  // a permit returned unused
  CHECK(gate.permitted(at(0ms)));
  CHECK_FALSE(gate.ended(nullptr, at(1ms), 1.0));  // a success starts no backoff
  CHECK(gate.connecting() == 0);

  ConnectGate unlimited(0, 5000ms);
  for (int i = 0; i < 1000; ++i) {
    unlimited.begin();
  }
  CHECK(unlimited.permitted(at(0ms)));
}

TEST_CASE("ConnectGate: the third consecutive failure starts a 10 ms backoff, which doubles",
          "[detail][connect]") {
  ConnectGate gate(0, 5000ms);
  for (int i = 0; i < 2; ++i) {
    gate.begin();
    CHECK_FALSE(gate.ended(refused(), at(0ms), 1.0));
  }
  CHECK(gate.permitted(at(0ms)));
  gate.begin();
  REQUIRE(gate.ended(refused(), at(100ms), 1.0));
  CHECK(gate.backoff_set());
  CHECK(gate.backoff_until() == at(110ms));
  CHECK_FALSE(gate.permitted(at(109ms)));
  CHECK(gate.backing_off(at(109ms)));
  CHECK(gate.permitted(at(110ms)));  // runs out by itself; the next connect tries
  gate.begin();
  REQUIRE(gate.ended(refused(), at(200ms), 1.0));
  CHECK(gate.backoff_until() == at(220ms));
  // The jitter the caller draws scales it.
  gate.begin();
  REQUIRE(gate.ended(refused(), at(300ms), 1.25));
  CHECK(gate.backoff_until() == at(350ms));
  CHECK(gate.failures() == 5);
}

TEST_CASE("ConnectGate: the backoff is capped, and a success ends it", "[detail][connect]") {
  CHECK(ConnectGate::backoff_for(2, 5000ms) == 0ms);
  CHECK(ConnectGate::backoff_for(3, 5000ms) == 10ms);
  CHECK(ConnectGate::backoff_for(4, 5000ms) == 20ms);
  CHECK(ConnectGate::backoff_for(12, 5000ms) == 5000ms);    // 10 ms * 512 > 5 s
  CHECK(ConnectGate::backoff_for(1000, 5000ms) == 5000ms);  // no overflow
  CHECK(ConnectGate::backoff_for(10, 0ms) == 0ms);          // max_connect_backoff 0: no backoff

  ConnectGate gate(0, 5000ms);
  for (int i = 0; i < 3; ++i) {
    gate.begin();
    (void)gate.ended(refused(), at(0ms), 1.0);
  }
  REQUIRE(gate.backoff_set());
  gate.begin();
  CHECK_FALSE(gate.ended(nullptr, at(20ms), 1.0));
  CHECK_FALSE(gate.backoff_set());
  CHECK(gate.failures() == 0);

  ConnectGate no_backoff(0, 0ms);
  for (int i = 0; i < 10; ++i) {
    no_backoff.begin();
    CHECK_FALSE(no_backoff.ended(refused(), at(0ms), 1.0));
  }
  CHECK(no_backoff.permitted(at(0ms)));
}

TEST_CASE("ConnectGate: who fails early during a backoff", "[detail][connect]") {
  ConnectGate gate(0, 5000ms);
  for (int i = 0; i < 3; ++i) {
    gate.begin();
    (void)gate.ended(refused(), at(0ms), 1.0);
  }
  REQUIRE(gate.backoff_until() == at(10ms));
  // Nothing open: a deadline before the end of the backoff cannot be met.
  CHECK(gate.cannot_wait_out(at(0ms), at(9ms), 0));
  CHECK_FALSE(gate.cannot_wait_out(at(0ms), at(10ms), 0));  // it can connect at 10 ms
  // A connection open (beyond connects in flight) may come back: it waits.
  CHECK_FALSE(gate.cannot_wait_out(at(0ms), at(9ms), 1));
  gate.begin();  // a connect in flight counts as open, but cannot come back
  CHECK(gate.cannot_wait_out(at(0ms), at(9ms), 1));
  CHECK_FALSE(gate.cannot_wait_out(at(10ms), at(11ms), 1));  // the backoff is over
  const auto why = gate.unavailable(at(4ms));
  CHECK(why.failures == 3);
  CHECK(why.retry_in == 6ms);
  CHECK(why.last_error != nullptr);
}

TEST_CASE("ConnectGate: after a backoff, one probe first, then twice as many per success",
          "[detail][connect][slow_start]") {
  ConnectGate gate(8, 5000ms);
  for (int i = 0; i < 3; ++i) {
    gate.begin();
    (void)gate.ended(refused(), at(0ms), 1.0);
  }
  REQUIRE(gate.backing_off(at(5ms)));  // 10 ms
  CHECK(gate.slow_start_limit() == 1);
  CHECK_FALSE(gate.permitted(at(5ms)));
  // The backoff ends: one probe.
  CHECK(gate.permitted(at(10ms)));
  gate.begin();
  CHECK_FALSE(gate.permitted(at(10ms)));
  CHECK_FALSE(gate.ended(nullptr, at(11ms), 1.0));  // it succeeded: two at once
  CHECK(gate.slow_start_limit() == 2);
  gate.begin();
  gate.begin();
  CHECK_FALSE(gate.permitted(at(12ms)));
  CHECK_FALSE(gate.ended(nullptr, at(13ms), 1.0));  // four
  CHECK(gate.slow_start_limit() == 4);
  gate.begin();
  gate.begin();
  gate.begin();
  CHECK(gate.connecting() == 4);
  CHECK_FALSE(gate.permitted(at(14ms)));
  CHECK_FALSE(gate.ended(nullptr, at(15ms), 1.0));  // eight = max_connecting: slow start over
  CHECK(gate.slow_start_limit() == 0);
  for (int i = 0; i < 5; ++i) {
    CHECK(gate.permitted(at(16ms)));
    gate.begin();
  }
  CHECK(gate.connecting() == 8);
  CHECK_FALSE(gate.permitted(at(16ms)));
}

TEST_CASE("ConnectGate: a failed probe keeps the limit, a new backoff starts slow start over",
          "[detail][connect][slow_start]") {
  ConnectGate gate(4, 5000ms);
  for (int i = 0; i < 3; ++i) {
    gate.begin();
    (void)gate.ended(refused(), at(0ms), 1.0);
  }
  gate.begin();
  CHECK_FALSE(gate.ended(nullptr, at(20ms), 1.0));
  CHECK(gate.slow_start_limit() == 2);
  gate.begin();
  // One failure after a success: below the threshold, no backoff, the limit stays.
  CHECK_FALSE(gate.ended(refused(), at(21ms), 1.0));
  CHECK(gate.slow_start_limit() == 2);
  gate.begin();
  (void)gate.ended(refused(), at(22ms), 1.0);
  gate.begin();
  CHECK(gate.ended(refused(), at(23ms), 1.0));  // the third in a row: a backoff again
  CHECK(gate.slow_start_limit() == 1);
  CHECK_FALSE(gate.permitted(at(24ms)));
  CHECK(gate.permitted(at(60ms)));
}

TEST_CASE("ConnectGate: with max_connecting 0, slow start doubles up to its ceiling",
          "[detail][connect][slow_start]") {
  ConnectGate gate(0, 5000ms);
  for (int i = 0; i < 3; ++i) {
    gate.begin();
    (void)gate.ended(refused(), at(0ms), 1.0);
  }
  std::size_t expected = 1;
  while (gate.slow_start_limit() != 0) {
    CHECK(gate.slow_start_limit() == expected);
    gate.begin();
    (void)gate.ended(nullptr, at(100ms), 1.0);
    expected *= 2;
  }
  CHECK(expected == ConnectGate::slow_start_ceiling);
  for (std::size_t i = 0; i < 2 * ConnectGate::slow_start_ceiling; ++i) {
    gate.begin();
  }
  CHECK(gate.permitted(at(100ms)));  // unlimited again
}
