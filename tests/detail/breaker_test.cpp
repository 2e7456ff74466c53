// connpool - tests: detail::Breaker, the circuit breaker's rules with explicit time points
// SPDX-License-Identifier: MIT

// Every timing rule of a host's circuit breaker (opening after consecutive failures, the
// cooldown, the single half-open probe, closing after a success) driven with plain time points:
// no clock, no thread, no sleep. MultiHostPool's behaviour on top of it is tested in
// multi_host_pool_test.cpp.

#include <chrono>
#include <cstddef>

#include <connpool/detail/breaker.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using connpool::HealthState;

namespace {

using TimePoint = std::chrono::steady_clock::time_point;
using Breaker = connpool::detail::Breaker<TimePoint>;
using Admit = Breaker::Admit;

/// An arbitrary origin, far from the epoch, so that "open until" is never the initial 0.
const TimePoint t0 = TimePoint{} + 1000h;

/// Opens `b` (threshold 3) at `at` with three failures.
void open_at(Breaker& b, TimePoint at) {
  CHECK_FALSE(b.failure(1, at));
  CHECK_FALSE(b.failure(1, at));
  CHECK(b.failure(1, at));
  REQUIRE(b.state() == HealthState::open);
}

}  // namespace

TEST_CASE("Breaker: a new breaker is closed and admits every acquire", "[multi_host][breaker]") {
  Breaker b(3, 10s);
  CHECK(b.state() == HealthState::closed);
  CHECK(b.closed());
  CHECK(b.healthy());
  CHECK(b.failures() == 0);
  CHECK(b.may_admit(t0));
  CHECK(b.may_admit(TimePoint{}));
  CHECK(b.admit(t0) == Admit::normal);
  CHECK(b.admit(t0) == Admit::normal);
  CHECK_FALSE(b.success());  // nothing to change
}

TEST_CASE("Breaker: the circuit opens at failure_threshold consecutive failures",
          "[multi_host][breaker]") {
  Breaker b(3, 10s);
  CHECK_FALSE(b.failure(1, t0));
  CHECK_FALSE(b.failure(1, t0 + 1s));
  CHECK(b.closed());
  CHECK_FALSE(b.healthy());
  CHECK(b.failures() == 2);
  CHECK(b.admit(t0 + 1s) == Admit::normal);  // below the threshold: still picked
  CHECK(b.failure(1, t0 + 2s));
  CHECK(b.state() == HealthState::open);
  CHECK(b.failures() == 3);
  CHECK_FALSE(b.may_admit(t0 + 2s));
  CHECK(b.admit(t0 + 2s) == Admit::no);
}

TEST_CASE("Breaker: several failures reported at once count as many", "[multi_host][breaker]") {
  Breaker b(3, 10s);
  CHECK_FALSE(b.failure(2, t0));  // e.g. two failed validation pings
  CHECK(b.failures() == 2);
  CHECK(b.failure(2, t0));
  CHECK(b.failures() == 4);
  CHECK(b.state() == HealthState::open);
}

TEST_CASE("Breaker: a success resets the count, so only consecutive failures open",
          "[multi_host][breaker]") {
  Breaker b(3, 10s);
  (void)b.failure(1, t0);
  (void)b.failure(1, t0);
  CHECK(b.success());
  CHECK(b.healthy());
  CHECK(b.failures() == 0);
  CHECK_FALSE(b.failure(1, t0));
  CHECK_FALSE(b.failure(1, t0));
  CHECK(b.closed());  // 2 + 2 failures, but never 3 in a row
}

TEST_CASE("Breaker: an open circuit admits nothing until the cooldown is over",
          "[multi_host][breaker]") {
  Breaker b(3, 10s);
  open_at(b, t0);
  CHECK_FALSE(b.may_admit(t0));
  CHECK_FALSE(b.may_admit(t0 + 9999ms));
  CHECK(b.admit(t0 + 9999ms) == Admit::no);
  CHECK(b.state() == HealthState::open);  // a refused admit changes nothing
  // The cooldown is over at exactly opened + cooldown.
  CHECK(b.may_admit(t0 + 10s));
  CHECK(b.may_admit(t0 + 1h));
  CHECK(b.state() == HealthState::open);  // may_admit() reserves nothing
}

TEST_CASE("Breaker: failures while open count but do not extend the cooldown",
          "[multi_host][breaker]") {
  Breaker b(3, 10s);
  open_at(b, t0);
  CHECK_FALSE(b.failure(1, t0 + 5s));  // e.g. a handle from before the opening, invalidated
  CHECK(b.failures() == 4);
  CHECK(b.state() == HealthState::open);
  CHECK(b.may_admit(t0 + 10s));
}

TEST_CASE("Breaker: after the cooldown one acquire is the half-open probe, and only one",
          "[multi_host][breaker]") {
  Breaker b(3, 10s);
  open_at(b, t0);
  CHECK(b.admit(t0 + 10s) == Admit::probe);
  CHECK(b.state() == HealthState::half_open);
  // The probe is out: nobody else is admitted, however late.
  CHECK_FALSE(b.may_admit(t0 + 10s));
  CHECK_FALSE(b.may_admit(t0 + 1h));
  CHECK(b.admit(t0 + 11s) == Admit::no);
  CHECK(b.admit(t0 + 1h) == Admit::no);
  CHECK(b.state() == HealthState::half_open);
}

TEST_CASE("Breaker: a successful probe closes the circuit and resets the count",
          "[multi_host][breaker]") {
  Breaker b(3, 10s);
  open_at(b, t0);
  REQUIRE(b.admit(t0 + 10s) == Admit::probe);
  CHECK(b.success());
  CHECK(b.state() == HealthState::closed);
  CHECK(b.healthy());
  CHECK(b.admit(t0 + 10s) == Admit::normal);
  // The count starts again from 0: the threshold applies in full.
  CHECK_FALSE(b.failure(1, t0 + 11s));
  CHECK_FALSE(b.failure(1, t0 + 11s));
  CHECK(b.closed());
}

TEST_CASE("Breaker: a failed probe reopens the circuit for a cooldown from that failure",
          "[multi_host][breaker]") {
  Breaker b(3, 10s);
  open_at(b, t0);
  REQUIRE(b.admit(t0 + 12s) == Admit::probe);
  CHECK(b.failure(1, t0 + 13s));  // a single failure is enough when half-open
  CHECK(b.state() == HealthState::open);
  CHECK(b.failures() == 4);
  CHECK_FALSE(b.may_admit(t0 + 22999ms));
  CHECK(b.admit(t0 + 22999ms) == Admit::no);
  CHECK(b.may_admit(t0 + 23s));
  CHECK(b.admit(t0 + 23s) == Admit::probe);  // the probe of the new half-open period
}

TEST_CASE("Breaker: an abandoned probe lets the next acquire probe instead",
          "[multi_host][breaker]") {
  Breaker b(3, 10s);
  open_at(b, t0);
  REQUIRE(b.admit(t0 + 10s) == Admit::probe);
  b.abandon_probe();  // no verdict: the host was busy, or the wait ended
  CHECK(b.state() == HealthState::half_open);
  CHECK(b.may_admit(t0 + 10s));
  CHECK(b.admit(t0 + 10s) == Admit::probe);
  CHECK(b.admit(t0 + 10s) == Admit::no);
}

TEST_CASE("Breaker: abandon_probe() changes nothing unless half-open", "[multi_host][breaker]") {
  Breaker closed(3, 10s);
  closed.abandon_probe();
  CHECK(closed.healthy());
  Breaker open(3, 10s);
  open_at(open, t0);
  open.abandon_probe();
  CHECK(open.state() == HealthState::open);
  CHECK_FALSE(open.may_admit(t0 + 1s));
}

TEST_CASE("Breaker: a success closes even an open circuit", "[multi_host][breaker]") {
  // A connection given back with release() served its user: the host answers.
  Breaker b(3, 10s);
  open_at(b, t0);
  CHECK(b.success());
  CHECK(b.state() == HealthState::closed);
  CHECK(b.admit(t0 + 1s) == Admit::normal);
}

TEST_CASE("Breaker: with cooldown 0 the next acquire probes at once", "[multi_host][breaker]") {
  Breaker b(1, 0ms);
  CHECK(b.failure(1, t0));  // threshold 1: one failure opens
  CHECK(b.state() == HealthState::open);
  CHECK(b.may_admit(t0));
  CHECK(b.admit(t0) == Admit::probe);
  CHECK(b.admit(t0) == Admit::no);
}
