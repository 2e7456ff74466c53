// connpool - tests: clear() and PoolCleared (issue 14, item 3)
// SPDX-License-Identifier: MIT

// clear() is evict_all() (idle connections closed now, those in use when they come back) plus:
// every caller waiting at that moment fails at once with PoolCleared, a PoolError meant to be
// retried. Callers that come later wait and are served as usual.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "coro.hpp"
#include "fake_conn.hpp"
#include "sync.hpp"
#include "waiter.hpp"

using namespace std::chrono_literals;
using connpool::PoolCleared;
using connpool::PoolOptions;
using connpool::Task;
using connpool::WaitPolicy;
using connpool_test::eventually;
using connpool_test::FakeConn;
using connpool_test::FakeFactory;
using connpool_test::FakeState;
using connpool_test::generous_deadline;
using connpool_test::Loop;
using connpool_test::Outcome;
using connpool_test::Spawned;

namespace {

using Pool = connpool::ConnectionPool<FakeConn, FakeFactory>;
using Waiter = connpool_test::Waiter<Pool>;

PoolOptions options(std::size_t max_size, WaitPolicy policy) {
  return PoolOptions{.max_size = max_size, .health_check_interval = 0ms, .wait_policy = policy};
}

}  // namespace

static_assert(std::is_base_of_v<connpool::PoolError, PoolCleared>);

TEST_CASE(
    "ConnectionPool: clear() fails the waiting callers with PoolCleared and closes every "
    "connection as soon as it is idle",
    "[design][pool][lifecycle][clear]") {
  const WaitPolicy policy = GENERATE(WaitPolicy::fifo, WaitPolicy::bounded_barging);
  INFO((policy == WaitPolicy::fifo ? "fifo" : "bounded_barging"));
  FakeState state;
  Pool pool{FakeFactory{state}, options(2, policy)};
  auto in_use = pool.acquire();
  auto other = pool.acquire();
  Waiter w1(pool, generous_deadline);
  REQUIRE(eventually([&] { return pool.stats().pending == 1; }));
  Waiter w2(pool, generous_deadline);
  REQUIRE(eventually([&] { return pool.stats().pending == 2; }));
  const auto start = std::chrono::steady_clock::now();
  CHECK(pool.clear() == 0);  // nothing idle
  REQUIRE(w1.wait_for_outcome(Outcome::cleared));
  REQUIRE(w2.wait_for_outcome(Outcome::cleared));
  CHECK(std::chrono::steady_clock::now() - start < 5s);  // at once, not at their deadline
  CHECK(pool.stats().pending == 0);

  // The connection in use still works, and is closed when it comes back.
  CHECK(in_use->id() == 1);
  in_use.release();
  other.release();
  CHECK(state.closed == 2);
  CHECK(pool.stats().total_connections() == 0);

  // Later callers are served as usual, by new connections.
  auto h = pool.acquire(1s);
  CHECK(h->id() == 3);
  CHECK(pool.stats().timeouts == 0);
}

TEST_CASE("ConnectionPool: clear() closes the idle connections at once",
          "[design][pool][lifecycle][clear]") {
  FakeState state;
  Pool pool{FakeFactory{state},
            PoolOptions{.min_size = 2, .max_size = 3, .health_check_interval = 0ms}};
  REQUIRE(state.created == 2);
  CHECK(pool.clear() == 2);
  CHECK(state.closed == 2);
  CHECK(state.created == 4);  // refilled to min_size, as evict_all() does
  auto h = pool.acquire(1s);
  CHECK(h->id() >= 3);
}

TEST_CASE("ConnectionPool: clear() with 100 waiting threads fails every one of them",
          "[design][pool][lifecycle][clear][race]") {
  FakeState state;
  Pool pool{FakeFactory{state}, options(2, WaitPolicy::bounded_barging)};
  auto a = pool.acquire();
  auto b = pool.acquire();
  constexpr int kWaiters = 100;
  std::atomic<int> cleared{0};
  std::atomic<int> other{0};
  {
    std::vector<std::jthread> threads;
    for (int i = 0; i < kWaiters; ++i) {
      threads.emplace_back([&] {
        try {
          auto h = pool.acquire(generous_deadline);
          ++other;
        } catch (const PoolCleared&) {
          ++cleared;
        } catch (...) {
          ++other;
        }
      });
    }
    REQUIRE(eventually([&] { return pool.stats().pending == kWaiters; }));
    pool.clear();
  }
  CHECK(cleared.load() == kWaiters);
  CHECK(other.load() == 0);
  const auto s = pool.stats();
  CHECK(s.pending == 0);
  CHECK(s.timeouts == 0);
  a.release();
  b.release();
  CHECK(state.closed == 2);
}

TEST_CASE("ConnectionPool: clear() on a closed pool does nothing",
          "[design][pool][lifecycle][clear]") {
  FakeState state;
  Pool pool{FakeFactory{state}, options(1, WaitPolicy::fifo)};
  pool.close();
  CHECK(pool.clear() == 0);
  CHECK_THROWS_AS(pool.acquire(10ms), connpool::PoolClosed);
}

TEST_CASE("AsyncConnectionPool: clear() ends suspended acquires with PoolCleared",
          "[design][async][lifecycle][clear]") {
  FakeState state;
  Loop loop;
  connpool::AsyncConnectionPool pool{FakeFactory{state},
                                     PoolOptions{.max_size = 1, .health_check_interval = 0ms},
                                     loop.scheduler()};
  Spawned spawned;
  std::optional<connpool::PooledHandle<FakeConn>> held;
  spawned.spawn([&]() -> Task<void> { held.emplace(co_await pool.acquire()); });
  REQUIRE(held.has_value());
  int cleared = 0;
  for (int i = 0; i < 3; ++i) {
    spawned.spawn([&]() -> Task<void> {
      try {
        auto h = co_await pool.acquire(10s);
      } catch (const PoolCleared&) {
        ++cleared;
      }
    });
  }
  CHECK(pool.stats().pending == 3);
  pool.clear();
  loop.run();
  CHECK(cleared == 3);
  CHECK(spawned.done() == 4);
  CHECK(spawned.errors().empty());
  held.reset();
  CHECK(state.closed == 1);
}
