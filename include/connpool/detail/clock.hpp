// connpool - the clocks of a pool: reading its Clock, and the wait clock
// SPDX-License-Identifier: MIT
#pragma once

// PoolClock (what a pool needs of its Clock), clock_now() (how the pool reads it, coarsely for
// steady_clock) and WaitClock (the clock of waits and acquire timeouts, always steady_clock).
// Standard library only. Decisions never read a clock: the pool reads one here and passes `now`.

#include <chrono>
#include <concepts>
#include <type_traits>

#if defined(__linux__)
#include <time.h>
#endif

namespace connpool::detail {

/// The clock of waits, acquire timeouts, backoffs and deadlines: always steady_clock, whatever
/// the pool's Clock (DESIGN 9).
using WaitClock = std::chrono::steady_clock;

/// What a pool needs of its Clock: a static now() returning its time_point. ManualClock and
/// every std::chrono clock qualify.
template <class C>
concept PoolClock = requires {
  typename C::time_point;
  typename C::duration;
  { C::now() } -> std::same_as<typename C::time_point>;
};

/// The pool's reading of `Clock`.
///
/// Why a coarse reading for std::chrono::steady_clock: ages, idle times and the validation
/// bypass are compared with settings of hundreds of milliseconds or more, and the pool reads the
/// clock on every acquire and every release. On Linux CLOCK_MONOTONIC_COARSE is the same clock
/// as steady_clock (CLOCK_MONOTONIC) at tick resolution (1-4 ms), and costs a fifth as much.
/// Every other Clock (ManualClock, a user's) is read through its now().
template <class Clock>
typename Clock::time_point clock_now() noexcept {
#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
  if constexpr (std::is_same_v<Clock, std::chrono::steady_clock>) {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return typename Clock::time_point(std::chrono::duration_cast<typename Clock::duration>(
        std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec)));
  }
#endif
  return Clock::now();
}

}  // namespace connpool::detail
