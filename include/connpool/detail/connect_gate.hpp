// connpool - connect permits, consecutive connect failures and the backoff after them
// SPDX-License-Identifier: MIT
#pragma once

// ConnectGate: how many connects (factory calls) may run at once (PoolOptions::max_connecting),
// and when connects back off after consecutive failures (max_connect_backoff). A decision
// component: it never locks, never reads a clock (the caller passes `now` and the random jitter)
// and never runs user code. No member locks; the caller holds PoolCore::mutex_. Tests:
// tests/detail/connect_gate_test.cpp. The waiters it concerns are served by detail/pool_core.hpp.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <utility>

#include <connpool/detail/clock.hpp>
#include <connpool/detail/waiter.hpp>

namespace connpool::detail {

/// Connect permits and backoff, as a state that the caller changes under its lock.
///
/// A connect takes a permit (begin()) when permitted() and returns it with ended() (with the
/// outcome) or give_back() (unused). After `failures_before_backoff` consecutive failures,
/// connects back off: 10 ms, then 20, 40, ... up to the maximum, each scaled by the caller's
/// jitter; the first success ends the backoff.
///
/// Why three failures: one or two are noise (a connection reset, a restart in progress), a run of
/// them is an outage, in which every caller connecting at once is what keeps a recovering
/// database down.
///
/// Slow start (porsager/postgres, TCP's congestion window): once a backoff started, connects
/// are admitted one at a time when it ends (a probe), and each success doubles how many may
/// run at once, up to max_connecting (or without bound when that is 0, after
/// slow_start_ceiling), so that a server coming back is not met by a full pool reconnecting at
/// once. A backoff starting again begins it over.
class ConnectGate {
 public:
  static constexpr std::size_t failures_before_backoff = 3;
  static constexpr std::chrono::milliseconds first_backoff{10};
  /// With max_connecting 0 (unlimited), slow start ends once this many connects are admitted.
  static constexpr std::size_t slow_start_ceiling = 1024;

  /// `max_connecting`: permits (0 = unlimited); `max_backoff`: the longest backoff (0 = none).
  ConnectGate(std::size_t max_connecting, std::chrono::milliseconds max_backoff) noexcept
      : max_connecting_(max_connecting), max_backoff_(max_backoff) {}

  /// Whether a connect may start now: a permit is free (within the slow start's limit while one
  /// runs), and no backoff runs.
  [[nodiscard]] bool permitted(WaitClock::time_point now) const noexcept {
    if (now < backoff_until_) {
      return false;
    }
    if (slow_start_ != 0) {
      return connecting_ < slow_start_;
    }
    return max_connecting_ == 0 || connecting_ < max_connecting_;
  }

  /// Connects admitted at once during the slow start after a backoff; 0 when none runs.
  [[nodiscard]] std::size_t slow_start_limit() const noexcept { return slow_start_; }

  /// Takes a permit (the caller checked permitted()).
  void begin() noexcept { ++connecting_; }

  /// Returns a permit that was not used.
  void give_back() noexcept { --connecting_; }

  /// The backoff that `failures` consecutive failures start, before jitter (zero below the
  /// threshold or without a maximum).
  [[nodiscard]] static std::chrono::milliseconds backoff_for(
      std::size_t failures, std::chrono::milliseconds max_backoff) noexcept {
    if (failures < failures_before_backoff || max_backoff.count() <= 0) {
      return std::chrono::milliseconds::zero();
    }
    const std::size_t doublings = std::min<std::size_t>(failures - failures_before_backoff, 20);
    return std::min<std::chrono::milliseconds>(first_backoff * (std::int64_t{1} << doublings),
                                               max_backoff);
  }

  /// A connect ended and returns its permit: `error` is null on success. `jitter` scales a
  /// backoff that starts now (the caller draws it from [0.75, 1.25]). Returns true if a backoff
  /// started: whoever waits must be woken when it ends. `what`: the error's text
  /// (describe_error()).
  bool ended(std::exception_ptr error,
             WaitClock::time_point now,
             double jitter,
             std::shared_ptr<const std::string> what = nullptr) noexcept {
    --connecting_;
    if (!error) {
      failures_ = 0;
      backoff_until_ = {};
      if (slow_start_ != 0) {
        const std::size_t ceiling = max_connecting_ != 0 ? max_connecting_ : slow_start_ceiling;
        slow_start_ = slow_start_ * 2 >= ceiling ? 0 : slow_start_ * 2;
      }
      return false;
    }
    ++failures_;
    last_error_ = std::move(error);
    last_what_ = std::move(what);
    const std::chrono::milliseconds base = backoff_for(failures_, max_backoff_);
    if (base.count() == 0) {
      return false;
    }
    backoff_until_ = now + std::chrono::duration_cast<WaitClock::duration>(base * jitter);
    slow_start_ = 1;  // when it ends: one probe first
    return true;
  }

  /// Whether connects wait for a backoff to end at `now`.
  [[nodiscard]] bool backing_off(WaitClock::time_point now) const noexcept {
    return now < backoff_until_;
  }

  /// Whether a backoff was started and no connect has succeeded since (it may have run out).
  [[nodiscard]] bool backoff_set() const noexcept {
    return backoff_until_ != WaitClock::time_point{};
  }

  /// When connects may start again (meaningful while backoff_set()).
  [[nodiscard]] WaitClock::time_point backoff_until() const noexcept { return backoff_until_; }

  /// Whether a caller with `deadline` would time out before connects resume, while nothing is
  /// open but connects (`open` counts every connection open or being opened): no release can
  /// bring it a connection, so it fails early (Unavailable).
  [[nodiscard]] bool cannot_wait_out(WaitClock::time_point now,
                                     WaitClock::time_point deadline,
                                     std::size_t open) const noexcept {
    return now < backoff_until_ && deadline < backoff_until_ && open == connecting_;
  }

  /// Why an acquire fails early, at `now`.
  [[nodiscard]] Unavailable unavailable(WaitClock::time_point now) const {
    return Unavailable{failures_,
                       std::chrono::ceil<std::chrono::milliseconds>(backoff_until_ - now),
                       last_error_, last_what_};
  }

  [[nodiscard]] std::size_t connecting() const noexcept { return connecting_; }
  [[nodiscard]] std::size_t failures() const noexcept { return failures_; }
  /// The text of the last connect error while connects fail (failures() > 0); null otherwise.
  [[nodiscard]] const std::shared_ptr<const std::string>& failing_with() const noexcept {
    static const std::shared_ptr<const std::string> none;
    return failures_ != 0 ? last_what_ : none;
  }

 private:
  const std::size_t max_connecting_;             // permits; 0 = unlimited
  const std::chrono::milliseconds max_backoff_;  // longest backoff; 0 = none
  std::size_t connecting_ = 0;                   // connects in flight (permits taken)
  std::size_t failures_ = 0;                     // consecutive failed connects
  // Connects admitted at once during the slow start after a backoff (1, 2, 4, ...); 0 = none
  // runs (max_connecting_ applies).
  std::size_t slow_start_ = 0;
  WaitClock::time_point backoff_until_{};         // no connect before; {} = no backoff
  std::exception_ptr last_error_;                 // the last factory exception; null = none yet
  std::shared_ptr<const std::string> last_what_;  // its text (describe_error())
};

}  // namespace connpool::detail
