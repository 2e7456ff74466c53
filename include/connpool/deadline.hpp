// connpool - Deadline, the time limit and cancellation a pool passes to a connect or a ping
// SPDX-License-Identifier: MIT
#pragma once

// A factory that can be called with a connpool::Deadline receives one on every connect; a
// connection whose ping can be called with one receives one on every ping. It carries the
// moment the call must give up by (PoolOptions::connect_timeout, validation_timeout; the far
// future when they are 0) and a std::stop_token that the pool requests when it is closed, so a
// connect stuck on a black-holed host ends when its deadline comes or the pool closes, instead
// of at the kernel's timeout. Value type; no dependency but the standard library.

#include <chrono>
#include <stop_token>

namespace connpool {

/// When a connect or a ping must give up, and the pool's close signal.
///
/// Example (a non-blocking connect polled until the deadline):
///     connpool::ConnectionPool pool{[](connpool::Deadline d) {
///       auto c = Db::start_connect(url);
///       while (!c.ready()) {
///         if (d.expired()) throw std::runtime_error("connect timed out");
///         c.poll_for(std::min(d.remaining(), 50ms));
///       }
///       return c;
///     }, connpool::PoolOptions{.connect_timeout = 2s}};
struct Deadline {
  using clock = std::chrono::steady_clock;

  /// The moment to give up by; time_point::max() when there is no limit.
  clock::time_point at = clock::time_point::max();
  /// Requested when the pool is closed: give up at once.
  std::stop_token stop{};

  /// Whether there is a time limit.
  [[nodiscard]] bool limited() const noexcept { return at != clock::time_point::max(); }

  /// Whether the time is up or the pool is closing.
  [[nodiscard]] bool expired() const noexcept {
    return stop.stop_requested() || (limited() && clock::now() >= at);
  }

  /// The time left (zero once passed); clock::duration::max() without a limit.
  [[nodiscard]] clock::duration remaining() const noexcept {
    if (!limited()) {
      return clock::duration::max();
    }
    const clock::time_point now = clock::now();
    return now >= at ? clock::duration::zero() : at - now;
  }
};

}  // namespace connpool
