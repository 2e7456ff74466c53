// connpool - tests: close(), the destructor, the background thread, close() failures
// SPDX-License-Identifier: MIT

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <stop_token>
#include <thread>
#include <type_traits>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "fake_conn.hpp"
#include "lock_probe.hpp"
#include "sync.hpp"
#include "waiter.hpp"

using namespace std::chrono_literals;
using connpool::PoolOptions;
using connpool_test::eventually;
using connpool_test::FakeConn;
using connpool_test::FakeFactory;
using connpool_test::FakeState;
using connpool_test::Gate;
using connpool_test::generous_deadline;
using connpool_test::Outcome;

namespace {

using Pool = connpool::ConnectionPool<FakeConn, FakeFactory>;
using Waiter = connpool_test::Waiter<Pool>;

struct CloseTag {};
using Clock = connpool::ManualClock<CloseTag>;
using ManualPool = connpool::ConnectionPool<FakeConn, FakeFactory, Clock>;

PoolOptions quiet(std::size_t min_size, std::size_t max_size) {
  return PoolOptions{.min_size = min_size, .max_size = max_size, .health_check_interval = 0ms};
}

/// The invariant of a quiet pool: every connection ever created is accounted for.
template <class P>
bool created_accounted_for(const P& pool) {
  const auto s = pool.stats();
  return s.created == s.closed + s.detached + s.idle + s.in_use;
}

}  // namespace

// DESIGN 10: "Nothing throws from a destructor".
static_assert(std::is_nothrow_destructible_v<Pool>);
static_assert(std::is_nothrow_destructible_v<ManualPool>);
static_assert(std::is_nothrow_destructible_v<connpool::PooledHandle<FakeConn>>);
static_assert(noexcept(std::declval<Pool&>().close()));

// --- 7. close() --------------------------------------------------------------------------------

TEST_CASE("ConnectionPool: close() closes the idle connections", "[pool][close][design-7]") {
  FakeState state;
  Pool pool{FakeFactory{state}, quiet(3, 5)};
  REQUIRE(state.live == 3);
  pool.close();
  CHECK(state.closed == 3);
  CHECK(state.live == 0);
  const auto s = pool.stats();
  CHECK(s.closed == 3);
  CHECK(s.idle == 0);
  CHECK(s.total_connections() == 0);
}

TEST_CASE("ConnectionPool: close() wakes every waiter with PoolClosed", "[pool][close][design-7]") {
  // DESIGN 7: "wakes every waiter with PoolClosed".
  FakeState state;
  Pool pool{FakeFactory{state}, quiet(0, 1)};
  auto h = pool.acquire();
  std::stop_source never;
  Waiter w1(pool, generous_deadline);
  REQUIRE(eventually([&] { return pool.stats().pending == 1; }));
  Waiter w2(pool, generous_deadline, never.get_token());
  REQUIRE(eventually([&] { return pool.stats().pending == 2; }));

  pool.close();
  REQUIRE(w1.wait_finished());
  REQUIRE(w2.wait_finished());
  INFO("w1: " << connpool_test::to_string(w1.outcome()));
  INFO("w2: " << connpool_test::to_string(w2.outcome()));
  CHECK(w1.outcome() == Outcome::closed);
  CHECK(w2.outcome() == Outcome::closed);
  CHECK(w1.elapsed() < generous_deadline);
  CHECK(pool.stats().pending == 0);
  CHECK(pool.stats().timeouts == 0);
}

TEST_CASE("ConnectionPool: every acquire after close() throws PoolClosed",
          "[pool][close][design-7]") {
  // DESIGN 7: "makes later acquires throw PoolClosed", even with idle connections around before.
  FakeState state;
  Pool pool{FakeFactory{state}, quiet(2, 3)};
  pool.close();
  std::stop_source source;
  CHECK_THROWS_AS((void)pool.acquire(), connpool::PoolClosed);
  CHECK_THROWS_AS((void)pool.acquire(0ms), connpool::PoolClosed);
  CHECK_THROWS_AS((void)pool.acquire(1s), connpool::PoolClosed);
  CHECK_THROWS_AS((void)pool.acquire(1s, source.get_token()), connpool::PoolClosed);
  CHECK_THROWS_AS((void)pool.try_acquire(), connpool::PoolClosed);
  CHECK(state.factory_calls == 2);  // nothing new was opened
  CHECK(pool.stats().acquired == 0);
}

TEST_CASE("ConnectionPool: connections in use at close() are closed when they come back",
          "[pool][close][design-7]") {
  // DESIGN 7: "closes in-use connections when they come back".
  FakeState state;
  Pool pool{FakeFactory{state}, quiet(0, 4)};
  auto released = pool.acquire();
  auto destroyed = std::make_optional(pool.acquire());
  auto invalidated = pool.acquire();
  auto detached = pool.acquire();
  pool.close();
  CHECK(state.closed == 0);  // all in use: nobody takes them from their holders
  CHECK(pool.stats().in_use == 4);

  released.release();
  CHECK(state.closed == 1);
  destroyed.reset();
  CHECK(state.closed == 2);
  invalidated.invalidate();
  CHECK(state.closed == 3);
  FakeConn mine = detached.detach();  // detach still hands the connection over
  CHECK_FALSE(mine.is_closed());
  CHECK(state.closed == 3);

  const auto s = pool.stats();
  CHECK(s.in_use == 0);
  CHECK(s.idle == 0);
  CHECK(s.closed == 3);
  CHECK(s.detached == 1);
  CHECK(created_accounted_for(pool));
}

TEST_CASE("ConnectionPool: close() is idempotent", "[pool][close][design-7]") {
  FakeState state;
  Pool pool{FakeFactory{state}, quiet(2, 2)};
  pool.close();
  const auto first = pool.stats();
  pool.close();
  pool.close();
  CHECK(state.closed == 2);
  CHECK(state.double_closes == 0);
  CHECK(pool.stats().closed == first.closed);
}

TEST_CASE("ConnectionPool: prune() after close() opens nothing", "[pool][close][design-7]") {
  FakeState state;
  Pool pool{FakeFactory{state}, quiet(2, 2)};
  pool.close();
  CHECK(pool.prune() == 0);
  CHECK(state.factory_calls == 2);
  CHECK(state.live == 0);
}

TEST_CASE("ConnectionPool: the destructor closes the pool", "[pool][close][design-7]") {
  // DESIGN: "close(); // idempotent; the destructor calls it".
  FakeState state;
  {
    Pool pool{FakeFactory{state}, quiet(2, 4)};
    auto h = pool.acquire();
    auto k = pool.acquire();
    auto l = pool.acquire();
    k.release();
  }
  CHECK(state.created == 3);
  CHECK(state.closed == 3);
  CHECK(state.live == 0);
  CHECK(state.double_closes == 0);
}

TEST_CASE("ConnectionPool: a connect in flight at close() does not leak",
          "[pool][close][design-7]") {
  // The factory is still running when close() is called; the connection it returns must end up
  // closed, whether its caller gets PoolClosed or a handle that is closed on release.
  FakeState state;
  Gate in_factory;
  Gate let_factory_finish;
  std::atomic<bool> block{false};
  state.on_create = [&] {
    if (block.exchange(false)) {
      in_factory.open();
      (void)let_factory_finish.wait();
    }
  };
  Pool pool{FakeFactory{state}, quiet(0, 2)};
  block = true;
  std::atomic<int> result{0};  // 1 = got a handle (and dropped it), 2 = PoolClosed, -1 = other
  std::jthread caller([&] {
    try {
      auto h = pool.acquire(generous_deadline);
      result = 1;
    } catch (const connpool::PoolClosed&) {
      result = 2;
    } catch (...) {
      result = -1;
    }
  });
  REQUIRE(in_factory.wait());
  auto closing = std::async(std::launch::async, [&] { pool.close(); });
  // close() must not wait for the factory: the factory is waiting for us.
  const bool close_returned = closing.wait_for(generous_deadline) == std::future_status::ready;
  let_factory_finish.open();
  caller.join();
  closing.get();
  CHECK(close_returned);
  CHECK((result == 1 || result == 2));
  CHECK(state.created == 1);
  CHECK(state.live == 0);
  CHECK(state.closed == 1);
  CHECK(created_accounted_for(pool));
}

// --- 8. the background thread ------------------------------------------------------------------

TEST_CASE("ConnectionPool: close() stops the background thread promptly",
          "[pool][close][design-8]") {
  // DESIGN 8: "The background thread (when health_check_interval > 0) stops promptly on close."
  // With a one-hour interval, a close() that waited for the next tick would take an hour.
  FakeState state;
  Pool pool{FakeFactory{state},
            PoolOptions{.min_size = 1, .max_size = 2, .health_check_interval = 1h}};
  const auto start = std::chrono::steady_clock::now();
  pool.close();
  CHECK(std::chrono::steady_clock::now() - start < 2s);
}

TEST_CASE("ConnectionPool: the destructor stops the background thread promptly",
          "[pool][close][design-8]") {
  FakeState state;
  std::unique_ptr<Pool> pool;
  pool = std::make_unique<Pool>(
      FakeFactory{state}, PoolOptions{.min_size = 1, .max_size = 2, .health_check_interval = 1h});
  pool->acquire().release();
  const auto start = std::chrono::steady_clock::now();
  pool.reset();
  CHECK(std::chrono::steady_clock::now() - start < 2s);
  CHECK(state.live == 0);
}

TEST_CASE("ConnectionPool: the background thread closes expired connections and refills",
          "[pool][close][design-8][design-6][design-9]") {
  // DESIGN 6: "prune() and the background thread close expired idle connections, then refill to
  // min_size." DESIGN 9: "Clock drives ... maintenance".
  Clock::set(0s);
  FakeState state;
  ManualPool pool{FakeFactory{state}, PoolOptions{.min_size = 1,
                                                  .max_size = 3,
                                                  .max_lifetime = 1min,
                                                  .health_check_interval = 10ms,
                                                  .validate_on_acquire = false}};
  REQUIRE(pool.stats().created == 1);
  Clock::advance(2min);  // the warm connection is now past max_lifetime
  const bool maintained = eventually([&] {
    const auto s = pool.stats();
    return s.closed >= 1 && s.created >= 2 && s.idle == 1;
  });
  CHECK(maintained);
  CHECK(state.closed >= 1);
  CHECK(state.live == 1);
}

TEST_CASE("ConnectionPool: the background thread refills after a failed warm-up",
          "[pool][close][design-8][design-1]") {
  FakeState state;
  state.factory_fails = true;
  Pool pool{
      FakeFactory{state},
      PoolOptions{.min_size = 2, .max_size = 3, .health_check_interval = 10ms, .fail_fast = false}};
  CHECK(pool.stats().idle == 0);
  state.factory_fails = false;
  CHECK(eventually([&] { return pool.stats().idle == 2; }));
}

// --- 10. close() failures ----------------------------------------------------------------------

TEST_CASE("ConnectionPool: exceptions from a connection's close() are swallowed and counted",
          "[pool][close][design-10]") {
  // DESIGN 10: "Nothing throws from a destructor; exceptions from close() are swallowed and
  // counted."
  FakeState state;
  Pool pool{FakeFactory{state}, quiet(2, 4)};
  auto in_use = pool.acquire();
  auto invalidated = pool.acquire();
  auto extra = pool.acquire();
  state.close_throws = true;

  REQUIRE_NOTHROW(invalidated.invalidate());
  CHECK(pool.stats().close_failures == 1);

  REQUIRE_NOTHROW(pool.close());  // closes the idle... none; `extra` and `in_use` are out
  REQUIRE_NOTHROW(extra.release());
  REQUIRE_NOTHROW([&] { auto dropped = std::move(in_use); }());

  const auto s = pool.stats();
  CHECK(s.close_failures == 3);
  CHECK(s.closed == 3);  // a failed close still ends the connection
  CHECK(state.closed == 3);
  CHECK(state.live == 0);
  CHECK(created_accounted_for(pool));
}

TEST_CASE(
    "ConnectionPool: close() failures during close(), prune() and the destructor are "
    "swallowed",
    "[pool][close][design-10]") {
  Clock::set(0s);
  FakeState state;
  {
    ManualPool pool{FakeFactory{state}, PoolOptions{.min_size = 2,
                                                    .max_size = 4,
                                                    .max_lifetime = 1min,
                                                    .health_check_interval = 0ms,
                                                    .validate_on_acquire = false}};
    state.close_throws = true;
    Clock::advance(2min);
    std::size_t pruned = 0;
    REQUIRE_NOTHROW(pruned = pool.prune());
    CHECK(pruned == 2);
    CHECK(pool.stats().close_failures == 2);
    CHECK(pool.stats().idle == 2);  // refilled
    auto h = pool.acquire();
    REQUIRE_NOTHROW(pool.close());
    CHECK(pool.stats().close_failures == 3);
    // `h` is destroyed first, then the pool: both close with a throwing close().
  }
  CHECK(state.closed == 4);
  CHECK(state.live == 0);
}

TEST_CASE("ConnectionPool: close runs outside the pool's lock", "[pool][close]") {
  // DESIGN: "No user callback ... ever runs while the pool's lock is held."
  FakeState state;
  connpool_test::LockProbe probe;
  std::unique_ptr<Pool> pool;
  state.on_close = [&] { probe.check(*pool); };
  pool = std::make_unique<Pool>(FakeFactory{state}, quiet(1, 2));
  auto h = pool->acquire();
  h.invalidate();  // close on give-back
  pool->acquire().release();
  pool->close();  // close of an idle connection
  CHECK(probe.free_count() == 2);
  CHECK(probe.blocked_count() == 0);
}
