// connpool - the counters of a pool's slow paths, and the statistics they fill
// SPDX-License-Identifier: MIT
#pragma once

// Counters: what the slow paths count under the pool's lock (the fast-path counters live in the
// slots, detail/pool_slot.hpp). No member locks; the caller holds PoolCore::mutex_.

#include <chrono>
#include <cstdint>

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
  }
};

}  // namespace connpool::detail
