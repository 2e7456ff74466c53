// connpool - consumer test (pkg-config): the package builds, links and works for a user.
// SPDX-License-Identifier: MIT

#include <connpool/connpool.hpp>

namespace {

struct Conn {
  int id = 0;
};

}  // namespace

int main() {
  connpool::ConnectionPool pool{[] { return Conn{}; }, connpool::PoolOptions{.max_size = 2}};
  auto handle = pool.acquire();
  return (handle && pool.stats().in_use == 1) ? 0 : 1;
}
