// connpool - benchmarks: the connection that costs nothing, shared by the bench programs
// SPDX-License-Identifier: MIT
#pragma once

// The benchmarks measure the pool itself, so their connection does no I/O and has none of
// close(), ping() or reset(); fixed_size() opens every connection at construction and lets none
// expire, with no maintenance thread.

#include <cstddef>

#include <connpool/options.hpp>

namespace connpool_bench {

/// A connection that costs nothing.
struct NullConnection {
  int id = 0;
};

struct NullFactory {
  NullConnection operator()() const noexcept { return {}; }
};

/// `size` connections, all opened at construction and never expiring; no maintenance thread,
/// no clock reading (use_time not recorded).
inline connpool::PoolOptions fixed_size(std::size_t size) {
  return connpool::PoolOptions{.min_size = size,
                               .max_size = size,
                               .max_idle = {},
                               .max_lifetime = {},
                               .health_check_interval = {},
                               .record_use_time = false};
}

}  // namespace connpool_bench
