// connpool - tests: ODR, translation unit B
// SPDX-License-Identifier: MIT

#include <chrono>

#include <connpool/connpool.hpp>

#include "odr_types.hpp"

namespace odr {

Report use_pool_in_b() {
  Report r;
  {
    // The same specialisation as odr_a.cpp, plus one with a ManualClock.
    Pool pool{Factory{}, connpool::PoolOptions{.min_size = 1, .max_size = 2}};
    connpool::PooledHandle<Conn> h = pool.acquire(std::chrono::milliseconds(100));
    r.conn_id = h->id;
    h.release();
    const connpool::PoolStats s = pool.stats();
    r.acquired = s.acquired;
    r.idle = s.idle;
    r.json = s.to_json();
  }
  ManualPool manual{Factory{}, connpool::PoolOptions{.max_size = 1, .health_check_interval = {}}};
  Clock::advance(std::chrono::seconds(1));
  (void)manual.acquire();
  return r;
}

}  // namespace odr
