// connpool - the counters of a pool's slow paths, and the statistics they fill
// SPDX-License-Identifier: MIT
#pragma once

// Counters: what the slow paths count under the pool's lock (the fast-path counters live in the
// slots, detail/pool_slot.hpp). No member locks; the caller holds PoolCore::mutex_.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include <connpool/events.hpp>
#include <connpool/stats.hpp>

namespace connpool::detail {

/// The counters of the slow paths; guarded by the pool's mutex. The fast-path counters
/// (acquired, reused, released) live in the slots.
struct Counters {
  std::uint64_t created = 0;
  std::uint64_t closed = 0;
  std::uint64_t waited = 0;
  std::uint64_t timeouts = 0;
  std::uint64_t rejected = 0;
  std::uint64_t validation_failures = 0;
  std::uint64_t create_failures = 0;
  std::uint64_t close_failures = 0;
  std::uint64_t detached = 0;
  std::chrono::nanoseconds total_wait_time{0};
  std::chrono::nanoseconds max_wait_time{0};
  std::array<std::uint64_t, close_reason_count> closed_by_reason{};
  Histogram create_time;  // every successful connect

  /// Closes counted outside the lock, to be added under it.
  struct CloseTally {
    std::array<std::uint64_t, close_reason_count> by_reason{};
    std::uint64_t failures = 0;
    /// One connection closed, for `reason` (none: the pool's close); `failed` if close() threw.
    void add(CloseReason reason, bool failed) noexcept {
      ++by_reason[index(reason)];
      failures += failed ? 1 : 0;
    }
  };

  void count_closes(const CloseTally& t) noexcept {
    for (std::size_t i = 0; i < close_reason_count; ++i) {
      closed += t.by_reason[i];
      closed_by_reason[i] += t.by_reason[i];
    }
    close_failures += t.failures;
  }

  /// One connection closed, for `reason` (none: the pool's close); `failed` if close() threw.
  void count_close(CloseReason reason, bool failed) noexcept {
    ++closed;
    ++closed_by_reason[index(reason)];
    close_failures += failed ? 1 : 0;
  }

  static constexpr std::size_t index(CloseReason r) noexcept {
    return static_cast<std::size_t>(r == CloseReason::none ? CloseReason::pool_closed : r);
  }

  /// Copies the counters into `s` (the slot counters and the gauges are the caller's).
  void fill(PoolStats& s) const noexcept {
    s.created = created;
    s.closed = closed;
    s.waited = waited;
    s.timeouts = timeouts;
    s.rejected = rejected;
    s.validation_failures = validation_failures;
    s.create_failures = create_failures;
    s.close_failures = close_failures;
    s.detached = detached;
    s.total_wait_time = total_wait_time;
    s.max_wait_time = max_wait_time;
    s.closed_by_reason = closed_by_reason;
    s.create_time = create_time;
  }
};

}  // namespace connpool::detail
