// connpool - the circuit breaker of one MultiHostPool host: its states and timing rules
// SPDX-License-Identifier: MIT
#pragma once

// Breaker<TimePoint> decides: whether a host may be picked, when its circuit opens, how long it
// stays open, which acquire is the single half-open probe. It never locks, never reads a clock
// (the caller passes `now`) and runs no user code. Its state is atomics that any thread may read
// without a lock; every mutating member must be called with the owner's mutex held
// (HostHealth::mutex_, detail/host_entry.hpp, which also keeps the last error message).

#include <atomic>
#include <chrono>
#include <cstddef>

#include <connpool/multi_host_options.hpp>

namespace connpool::detail {

/// The circuit breaker of one host, on time points of type `TimePoint`.
///
/// closed --(failure_threshold consecutive failures)--> open --(cooldown over, the next
/// acquire that picks the host)--> half_open (that acquire is the single probe) --(success)-->
/// closed, or --(failure)--> open for another cooldown.
///
/// Failures: a connect error, a failed validation ping (counted when the acquire on the host
/// fails, see HostEntry::look_at_pings), an invalidated handle. Successes, which reset the
/// count and close the circuit: a handle given back with release() (the connection served its
/// user), and an acquire that got a connection while the circuit was not closed (the probe).
/// Why a successful connect alone does not reset the count: a host that accepts connections
/// but fails every request (its handles invalidated) must still trip the breaker.
///
/// Thread safety: the const members may be called from any thread without a lock (the
/// balancer's fast path reads the state that way). The others must be serialised by the caller
/// (HostHealth holds its mutex around them), so that each transition reads and writes a
/// consistent state. Memory ordering: state_ is stored with release and loaded with acquire;
/// the other fields are relaxed, written before state_ in each transition.
template <class TimePoint>
class Breaker {
 public:
  using time_point = TimePoint;
  using duration = typename TimePoint::duration;

  /// Preconditions: threshold >= 1, cooldown >= 0 (MultiHostOptions::validate() checks both).
  Breaker(std::size_t threshold, std::chrono::milliseconds cooldown) noexcept
      : threshold_(threshold), cooldown_(std::chrono::duration_cast<duration>(cooldown)) {}

  Breaker(const Breaker&) = delete;
  Breaker& operator=(const Breaker&) = delete;

  /// What admit() lets an acquire do.
  enum class Admit {
    no,      ///< skip the host: its circuit is open, or the half-open probe is out
    normal,  ///< the circuit is closed
    probe,   ///< this acquire is the single probe of a half-open circuit
  };

  [[nodiscard]] HealthState state() const noexcept {
    return state_.load(std::memory_order_acquire);
  }

  [[nodiscard]] bool closed() const noexcept { return state() == HealthState::closed; }

  /// Consecutive failures since the last success.
  [[nodiscard]] std::size_t failures() const noexcept {
    return failures_.load(std::memory_order_relaxed);
  }

  /// Whether the host may be picked at `now`, without reserving the probe: closed, or half-open
  /// with the probe not taken, or open with the cooldown over.
  [[nodiscard]] bool may_admit(TimePoint now) const noexcept {
    switch (state()) {
      case HealthState::closed:
        return true;
      case HealthState::half_open:
        return !probe_out_.load(std::memory_order_relaxed);
      case HealthState::open:
        return ticks(now) >= open_until_.load(std::memory_order_relaxed);
    }
    return false;
  }

  /// Admits one acquire at `now`: `normal` when closed; `probe` when this call takes the single
  /// probe of a half-open circuit, or of an open one whose cooldown is over (the circuit is then
  /// half-open); `no` otherwise. Serialised by the caller.
  Admit admit(TimePoint now) noexcept {
    const HealthState s = state_.load(std::memory_order_relaxed);
    if (s == HealthState::closed) {
      return Admit::normal;
    }
    if (s == HealthState::open && ticks(now) < open_until_.load(std::memory_order_relaxed)) {
      return Admit::no;
    }
    if (probe_out_.load(std::memory_order_relaxed)) {
      return Admit::no;
    }
    probe_out_.store(true, std::memory_order_relaxed);
    state_.store(HealthState::half_open, std::memory_order_release);
    return Admit::probe;
  }

  /// A success on the host: resets the count and closes the circuit, whatever its state.
  /// Returns false when there was nothing to change (closed, no failures), so that the caller
  /// may check healthy() first and skip its lock. Serialised by the caller.
  bool success() noexcept {
    if (healthy()) {
      return false;
    }
    failures_.store(0, std::memory_order_relaxed);
    probe_out_.store(false, std::memory_order_relaxed);
    state_.store(HealthState::closed, std::memory_order_release);
    return true;
  }

  /// Closed with no failure counted: success() would change nothing.
  [[nodiscard]] bool healthy() const noexcept { return closed() && failures() == 0; }

  /// `n` failures on the host at `now`. Opens the circuit, until now + cooldown, when it was
  /// closed and the count reaches the threshold, or when it was half-open (the probe, or a wait
  /// that began before the opening, failed). Failures while open count but do not extend the
  /// cooldown. Returns true when this call opened the circuit. Serialised by the caller.
  bool failure(std::size_t n, TimePoint now) noexcept {
    const std::size_t f = failures_.load(std::memory_order_relaxed) + n;
    failures_.store(f, std::memory_order_relaxed);
    const HealthState s = state_.load(std::memory_order_relaxed);
    if (s == HealthState::half_open || (s == HealthState::closed && f >= threshold_)) {
      open_until_.store(ticks(now + cooldown_), std::memory_order_relaxed);
      probe_out_.store(false, std::memory_order_relaxed);
      state_.store(HealthState::open, std::memory_order_release);
      return true;
    }
    return false;
  }

  /// The probe ended without a verdict (the host had no spare connection, the wait timed out
  /// or was cancelled): the next acquire may probe instead. No-op unless half-open. Serialised
  /// by the caller.
  void abandon_probe() noexcept {
    if (state_.load(std::memory_order_relaxed) == HealthState::half_open) {
      probe_out_.store(false, std::memory_order_relaxed);
    }
  }

 private:
  using Rep = typename duration::rep;

  static Rep ticks(TimePoint t) noexcept { return t.time_since_epoch().count(); }

  const std::size_t threshold_;  // failures that open a closed circuit; >= 1
  const duration cooldown_;      // how long an opened circuit stays open; >= 0
  std::atomic<HealthState> state_{HealthState::closed};
  std::atomic<std::size_t> failures_{0};  // consecutive failures; 0 after a success
  std::atomic<bool> probe_out_{false};    // half-open: the probe is taken; false otherwise
  std::atomic<Rep> open_until_{0};        // open: ticks since TimePoint's epoch; else stale
};

}  // namespace connpool::detail
