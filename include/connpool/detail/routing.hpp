// connpool - the rules of MultiHostPool's routes and of its role rechecks
// SPDX-License-Identifier: MIT
#pragma once

// Decisions only: which host a Route admits given its role and lag (serves(), the phases of
// Route::prefer_replica), and when the roles are probed again (RecheckSchedule, on time points
// the caller passes). No locks, no clock read, no user code: the probes and the thread that
// runs them are in role_checker.hpp and multi_host_pool.hpp. RecheckSchedule is guarded by its
// owner's mutex (RoleChecker::mutex_).

#include <chrono>
#include <cstdint>
#include <optional>

#include <connpool/multi_host_options.hpp>

namespace connpool::detail {

/// Whether a replica whose last lag reading is `lag` (empty: not read, or its probe failed) is
/// fresh enough under `max_lag` (0: not checked).
[[nodiscard]] constexpr bool lag_ok(std::optional<std::chrono::milliseconds> lag,
                                    std::chrono::milliseconds max_lag) noexcept {
  return max_lag.count() == 0 || (lag && *lag <= max_lag);
}

/// Whether a host with `role` and `lag` may serve an acquire in phase `phase` of its route:
/// any admits every host, primary the primaries, replica the fresh replicas. A prefer_replica
/// acquire runs as replica, then as primary (see first_phase() and fallback()).
[[nodiscard]] constexpr bool serves(Route phase,
                                    HostRole role,
                                    std::optional<std::chrono::milliseconds> lag,
                                    std::chrono::milliseconds max_lag) noexcept {
  switch (phase) {
    case Route::any:
      return true;
    case Route::primary:
      return role == HostRole::primary;
    case Route::replica:
    case Route::prefer_replica:
      return role == HostRole::replica && lag_ok(lag, max_lag);
  }
  return false;
}

/// The phase an acquire under `route` starts in.
[[nodiscard]] constexpr Route first_phase(Route route) noexcept {
  return route == Route::prefer_replica ? Route::replica : route;
}

/// The phase that follows `phase` of an acquire under `route` when no host of `phase` can
/// serve; empty when there is none.
[[nodiscard]] constexpr std::optional<Route> fallback(Route route, Route phase) noexcept {
  if (route == Route::prefer_replica && phase == Route::replica) {
    return Route::primary;
  }
  return std::nullopt;
}

/// When MultiHostPool probes its hosts' roles again.
///
/// A pass runs every `interval` after the last one ended; at once when requested (a host's
/// circuit opened: request()); and when an acquire finds no host of its route (request_on_miss())
/// unless a pass started less than `miss_spacing` ago. Why the spacing: during a failover every
/// write finds no primary, and a pass per write would flood the hosts with probes; one pass a
/// second finds the promoted host within a second.
///
/// Not thread-safe: its owner serialises every call (RoleChecker holds its mutex).
template <class TimePoint>
class RecheckSchedule {
 public:
  using duration = typename TimePoint::duration;

  /// The first pass is due at once (the roles are unknown until it ends).
  RecheckSchedule(duration interval, duration miss_spacing) noexcept
      : interval_(interval), miss_spacing_(miss_spacing) {}

  /// Asks for a pass now (a circuit opened).
  void request() noexcept { requested_ = true; }

  /// An acquire found no host of its route at `now`. Returns true when a pass is running or
  /// is now requested, so that the acquire may wait for it (passes_done() grows when it ends);
  /// false when one started less than miss_spacing ago and the miss must stand.
  [[nodiscard]] bool request_on_miss(TimePoint now) noexcept {
    if (running_ || requested_) {
      return true;
    }
    if (started_ && now - last_start_ < miss_spacing_) {
      return false;
    }
    requested_ = true;
    return true;
  }

  /// Whether request_on_miss(now) would return true, without asking for anything.
  [[nodiscard]] bool miss_may_wait(TimePoint now) const noexcept {
    return running_ || requested_ || !started_ || now - last_start_ >= miss_spacing_;
  }

  /// Whether a pass should start at `now`.
  [[nodiscard]] bool due(TimePoint now) const noexcept {
    return !running_ && (requested_ || !started_ || now >= next_due_);
  }

  /// When the next periodic pass is due (the waiting thread's deadline when nothing is asked).
  [[nodiscard]] TimePoint next_due() const noexcept { return next_due_; }

  /// A pass starts at `now`: requests up to here are served by it.
  void started(TimePoint now) noexcept {
    requested_ = false;
    running_ = true;
    started_ = true;
    last_start_ = now;
  }

  /// The pass ended at `now`: the next periodic one is due an interval later.
  void finished(TimePoint now) noexcept {
    running_ = false;
    next_due_ = now + interval_;
    ++passes_done_;
  }

  [[nodiscard]] bool running() const noexcept { return running_; }

  /// Passes ended so far; a waiter for a pass waits for this to grow.
  [[nodiscard]] std::uint64_t passes_done() const noexcept { return passes_done_; }

 private:
  const duration interval_;      // between the end of a pass and the next periodic one; > 0
  const duration miss_spacing_;  // the least time between pass starts asked by misses
  TimePoint next_due_{};         // the next periodic pass; stale while running_
  TimePoint last_start_{};       // valid when started_
  std::uint64_t passes_done_ = 0;
  bool requested_ = false;  // a pass is asked for and has not started
  bool running_ = false;    // a pass is in progress
  bool started_ = false;    // a pass has ever started
};

}  // namespace connpool::detail
