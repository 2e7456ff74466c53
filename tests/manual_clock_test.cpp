// connpool - tests: ManualClock
// SPDX-License-Identifier: MIT

#include <chrono>
#include <thread>
#include <type_traits>
#include <vector>

#include <connpool/manual_clock.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;

namespace {

struct StartTag {};
struct AdvanceTag {};
struct SetTag {};
struct OtherTag {};
struct ThreadsTag {};

}  // namespace

// A ManualClock is a Clock in the standard's sense, so the pool (and std::chrono) accept it.
static_assert(std::chrono::is_clock_v<connpool::ManualClock<>>);
static_assert(std::chrono::is_clock_v<connpool::ManualClock<StartTag>>);
static_assert(connpool::ManualClock<StartTag>::is_steady);
static_assert(std::is_same_v<connpool::ManualClock<StartTag>::duration, std::chrono::nanoseconds>);
static_assert(std::is_same_v<decltype(connpool::ManualClock<StartTag>::now()),
                             connpool::ManualClock<StartTag>::time_point>);
static_assert(noexcept(connpool::ManualClock<StartTag>::now()));
// Each tag is its own clock.
static_assert(!std::is_same_v<connpool::ManualClock<StartTag>, connpool::ManualClock<OtherTag>>);

TEST_CASE("ManualClock: starts at zero and does not move by itself", "[manual_clock]") {
  using Clock = connpool::ManualClock<StartTag>;
  CHECK(Clock::now().time_since_epoch() == 0ns);
  std::this_thread::yield();
  CHECK(Clock::now().time_since_epoch() == 0ns);
}

TEST_CASE("ManualClock: advance() moves it forward by exactly the given duration",
          "[manual_clock]") {
  using Clock = connpool::ManualClock<AdvanceTag>;
  Clock::set(0s);
  const auto t0 = Clock::now();
  Clock::advance(1500ms);
  CHECK(Clock::now() - t0 == 1500ms);
  Clock::advance(1ns);
  CHECK(Clock::now() - t0 == 1500ms + 1ns);
  Clock::advance(std::chrono::hours(24 * 365));
  CHECK(Clock::now() - t0 == std::chrono::hours(24 * 365) + 1500ms + 1ns);
  Clock::advance(0s);
  CHECK(Clock::now() - t0 == std::chrono::hours(24 * 365) + 1500ms + 1ns);
}

TEST_CASE("ManualClock: set() places it at a given time since its epoch", "[manual_clock]") {
  using Clock = connpool::ManualClock<SetTag>;
  Clock::set(90min);
  CHECK(Clock::now().time_since_epoch() == 90min);
  Clock::set(5s);  // back in time: for tests that restart their script
  CHECK(Clock::now().time_since_epoch() == 5s);
  Clock::set(0s);
  CHECK(Clock::now().time_since_epoch() == 0ns);
}

TEST_CASE("ManualClock: clocks with different tags are independent", "[manual_clock]") {
  using A = connpool::ManualClock<SetTag>;
  using B = connpool::ManualClock<OtherTag>;
  A::set(0s);
  B::set(0s);
  A::advance(10s);
  CHECK(A::now().time_since_epoch() == 10s);
  CHECK(B::now().time_since_epoch() == 0s);
  B::advance(3s);
  CHECK(A::now().time_since_epoch() == 10s);
  CHECK(B::now().time_since_epoch() == 3s);
}

TEST_CASE("ManualClock: concurrent advances all count", "[manual_clock][concurrency]") {
  // "Thread safety: all functions may be called concurrently." No advance is lost.
  using Clock = connpool::ManualClock<ThreadsTag>;
  Clock::set(0s);
  constexpr int threads = 4;
  constexpr int steps = 10'000;
  {
    std::vector<std::jthread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([] {
        for (int i = 0; i < steps; ++i) {
          Clock::advance(1us);
          (void)Clock::now();
        }
      });
    }
  }
  CHECK(Clock::now().time_since_epoch() == std::chrono::microseconds(threads * steps));
}
