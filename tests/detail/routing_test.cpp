// connpool - tests: detail::serves, the route phases and RecheckSchedule, with plain time points
// SPDX-License-Identifier: MIT

// Which host each Route admits given its role and lag, the two phases of prefer_replica, and
// when MultiHostPool probes the roles again (periodic passes, a pass asked for when a circuit
// opens, passes asked for by acquires that find no host of their route, at most one a second):
// no clock, no thread, no sleep. MultiHostPool's behaviour on top of it is tested in
// multi_host_roles_test.cpp.

#include <chrono>
#include <optional>

#include <connpool/detail/routing.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using connpool::HostRole;
using connpool::Route;
using connpool::detail::fallback;
using connpool::detail::first_phase;
using connpool::detail::lag_ok;
using connpool::detail::serves;

namespace {

using TimePoint = std::chrono::steady_clock::time_point;
using Schedule = connpool::detail::RecheckSchedule<TimePoint>;

const TimePoint t0 = TimePoint{} + 1000h;
const std::optional<std::chrono::milliseconds> no_lag;

}  // namespace

TEST_CASE("routing: each route admits the hosts of its role", "[multi_host][routing]") {
  for (const HostRole role : {HostRole::unknown, HostRole::primary, HostRole::replica}) {
    CAPTURE(connpool::to_string(role));
    CHECK(serves(Route::any, role, no_lag, 0ms));
    CHECK(serves(Route::primary, role, no_lag, 0ms) == (role == HostRole::primary));
    CHECK(serves(Route::replica, role, no_lag, 0ms) == (role == HostRole::replica));
  }
  // The lag of a primary (or an unknown host) never matters.
  CHECK(serves(Route::primary, HostRole::primary, no_lag, 100ms));
  CHECK(serves(Route::any, HostRole::replica, 5000ms, 100ms));
}

TEST_CASE("routing: max_replica_lag leaves out replicas behind it or of unknown lag",
          "[multi_host][routing]") {
  CHECK(lag_ok(no_lag, 0ms));  // not checked
  CHECK(lag_ok(10'000ms, 0ms));
  CHECK(lag_ok(0ms, 100ms));
  CHECK(lag_ok(100ms, 100ms));  // at the bound: in
  CHECK_FALSE(lag_ok(101ms, 100ms));
  CHECK_FALSE(lag_ok(no_lag, 100ms));  // no reading: cannot be shown fresh
  CHECK(serves(Route::replica, HostRole::replica, 50ms, 100ms));
  CHECK_FALSE(serves(Route::replica, HostRole::replica, 150ms, 100ms));
  CHECK_FALSE(serves(Route::replica, HostRole::replica, no_lag, 100ms));
}

TEST_CASE("routing: prefer_replica runs as replica, then as primary", "[multi_host][routing]") {
  CHECK(first_phase(Route::prefer_replica) == Route::replica);
  CHECK(fallback(Route::prefer_replica, Route::replica) == Route::primary);
  CHECK_FALSE(fallback(Route::prefer_replica, Route::primary).has_value());
  for (const Route r : {Route::primary, Route::replica, Route::any}) {
    CHECK(first_phase(r) == r);
    CHECK_FALSE(fallback(r, r).has_value());
  }
}

TEST_CASE("RecheckSchedule: the first pass is due at once, then one per interval after the end",
          "[multi_host][routing]") {
  Schedule s(5s, 1s);
  CHECK(s.due(t0));
  CHECK(s.passes_done() == 0);
  s.started(t0);
  CHECK(s.running());
  CHECK_FALSE(s.due(t0 + 1h));  // never two at once
  s.finished(t0 + 2s);
  CHECK(s.passes_done() == 1);
  CHECK(s.next_due() == t0 + 7s);  // the interval counts from the end of the pass
  CHECK_FALSE(s.due(t0 + 7s - 1ms));
  CHECK(s.due(t0 + 7s));
}

TEST_CASE("RecheckSchedule: a circuit that opens asks for a pass at once",
          "[multi_host][routing]") {
  Schedule s(5s, 1s);
  s.started(t0);
  s.finished(t0);
  s.request();
  CHECK(s.due(t0));  // not spaced: an opening is news
  s.started(t0);
  CHECK_FALSE(s.due(t0));  // the request is served by this pass
  s.finished(t0 + 10ms);
  CHECK_FALSE(s.due(t0 + 10ms));
}

TEST_CASE("RecheckSchedule: misses ask for at most one pass a second", "[multi_host][routing]") {
  Schedule s(5s, 1s);
  CHECK(s.request_on_miss(t0));  // before any pass: the first one is due anyway
  s.started(t0);
  CHECK(s.request_on_miss(t0 + 10ms));  // running: the miss may wait for it
  s.finished(t0 + 20ms);
  CHECK_FALSE(s.miss_may_wait(t0 + 999ms));
  CHECK_FALSE(s.request_on_miss(t0 + 999ms));  // started under a second ago: the miss stands
  CHECK_FALSE(s.due(t0 + 999ms));
  CHECK(s.miss_may_wait(t0 + 1s));
  CHECK_FALSE(s.due(t0 + 1s));  // miss_may_wait() asks for nothing
  CHECK(s.request_on_miss(t0 + 1s));
  CHECK(s.due(t0 + 1s));
  CHECK(s.request_on_miss(t0 + 1s));  // already asked: wait for it too
  s.started(t0 + 1s);
  s.finished(t0 + 1s);
  CHECK(s.passes_done() == 2);
  CHECK(s.next_due() == t0 + 6s);
}
