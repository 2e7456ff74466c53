// connpool - tests: ODR, translation unit A
// SPDX-License-Identifier: MIT

#include <connpool/connpool.hpp>

#include "odr_types.hpp"

namespace odr {

Report use_pool_in_a() {
  Pool pool{Factory{}, connpool::PoolOptions{.min_size = 1, .max_size = 2}};
  Report r;
  {
    connpool::PooledHandle<Conn> h = pool.acquire();
    r.conn_id = h->id;
    auto t = pool.try_acquire();
    (void)t;
  }
  (void)pool.prune();
  const connpool::PoolStats s = pool.stats();
  r.acquired = s.acquired;
  r.idle = s.idle;
  r.json = s.to_json();
  connpool::PoolOptions{}.validate();
  return r;
}

}  // namespace odr
