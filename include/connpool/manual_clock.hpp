// connpool - ManualClock, a clock that moves only when told to
// SPDX-License-Identifier: MIT
#pragma once

// A Clock for ConnectionPool's third template parameter. Connection ages, idle times, the
// validation_bypass window and maintenance then follow the test's script instead of the wall
// clock. Waiting (acquire timeouts) always uses std::chrono::steady_clock.

#include <atomic>
#include <chrono>
#include <cstdint>

namespace connpool {

/// A steady clock whose time is set by the program: ages and idle times become deterministic.
///
/// The time is process-wide (now() is static, as the Clock requirements demand); give each
/// independent test its own `Tag` to keep their clocks apart. It starts at zero.
/// Thread safety: all functions may be called concurrently.
/// Example:
///     using Clock = connpool::ManualClock<>;
///     connpool::ConnectionPool<Conn, Factory, Clock> pool{factory, opts};
///     Clock::advance(std::chrono::minutes(31));   // every connection is now past max_lifetime
template <class Tag = void>
class ManualClock {
 public:
  using rep = std::int64_t;
  using period = std::nano;
  using duration = std::chrono::duration<rep, period>;
  using time_point = std::chrono::time_point<ManualClock, duration>;
  static constexpr bool is_steady = true;

  static time_point now() noexcept {
    return time_point(duration(ticks_.load(std::memory_order_acquire)));
  }

  /// Moves the clock forward by `d` (which must not be negative).
  template <class Rep, class Period>
  static void advance(std::chrono::duration<Rep, Period> d) noexcept {
    ticks_.fetch_add(std::chrono::duration_cast<duration>(d).count(), std::memory_order_acq_rel);
  }

  /// Sets the clock to `t` since its epoch; for tests that restart their script.
  template <class Rep, class Period>
  static void set(std::chrono::duration<Rep, Period> since_epoch) noexcept {
    ticks_.store(std::chrono::duration_cast<duration>(since_epoch).count(),
                 std::memory_order_release);
  }

 private:
  static inline std::atomic<rep> ticks_{0};
};

}  // namespace connpool
