// connpool - tests: warm-up, LIFO reuse, creation outside the lock, factory failures, reset
// SPDX-License-Identifier: MIT

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "fake_conn.hpp"
#include "lock_probe.hpp"
#include "sync.hpp"

using namespace std::chrono_literals;
using connpool::PooledHandle;
using connpool::PoolOptions;
using connpool_test::eventually;
using connpool_test::FactoryError;
using connpool_test::FakeConn;
using connpool_test::FakeFactory;
using connpool_test::FakeState;
using connpool_test::Gate;
using connpool_test::generous_deadline;

namespace {

PoolOptions no_background(PoolOptions o) {
  o.health_check_interval = 0ms;
  return o;
}

}  // namespace

// --- 1. warm-up --------------------------------------------------------------------------------

TEST_CASE("ConnectionPool: the constructor opens min_size connections", "[pool][design-1]") {
  // DESIGN 1: "Warm-up: the constructor opens min_size connections."
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, no_background({.min_size = 3, .max_size = 5})};
  CHECK(state.factory_calls == 3);
  CHECK(state.live == 3);
  const auto s = pool.stats();
  CHECK(s.created == 3);
  CHECK(s.idle == 3);
  CHECK(s.in_use == 0);
  CHECK(s.acquired == 0);
  // The warm connections are used before any new one is opened.
  std::vector<PooledHandle<FakeConn>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(pool.acquire());
  }
  CHECK(state.factory_calls == 3);
  CHECK(pool.stats().reused == 3);
}

TEST_CASE("ConnectionPool: min_size 0 opens nothing until the first acquire", "[pool][design-1]") {
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, no_background({.max_size = 5})};
  CHECK(state.factory_calls == 0);
  CHECK(pool.stats().total_connections() == 0);
  auto h = pool.acquire();
  CHECK(state.factory_calls == 1);
}

TEST_CASE("ConnectionPool: min_size == max_size warms the whole pool", "[pool][design-1]") {
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, no_background({.min_size = 2, .max_size = 2})};
  auto a = pool.try_acquire();
  auto b = pool.try_acquire();
  CHECK(a.has_value());
  CHECK(b.has_value());
  CHECK_FALSE(pool.try_acquire().has_value());
  CHECK(state.factory_calls == 2);
}

TEST_CASE("ConnectionPool: with fail_fast a warm-up failure propagates from the constructor",
          "[pool][design-1]") {
  // DESIGN 1: "With fail_fast, the first factory exception propagates from the constructor."
  // Nothing leaks: the connection opened before the failure is closed.
  FakeState state;
  state.factory_error_code = 17;
  state.on_create = [&state] {
    if (state.factory_calls == 2) {
      state.factory_failures_left = 1;  // the second call fails
    }
  };
  int code = 0;
  try {
    connpool::ConnectionPool pool{FakeFactory{state},
                                  no_background({.min_size = 3, .max_size = 3, .fail_fast = true})};
    FAIL("the constructor did not throw");
  } catch (const FactoryError& e) {
    code = e.code;
  }
  CHECK(code == 17);                // the factory's own exception, unchanged
  CHECK(state.factory_calls == 2);  // the first failure stops the warm-up
  CHECK(state.created == 1);
  CHECK(state.live == 0);  // the one that was opened has been closed
  CHECK(state.closed == 1);
}

TEST_CASE("ConnectionPool: fail_fast is the default", "[pool][design-1]") {
  FakeState state;
  state.factory_fails = true;
  CHECK_THROWS_AS(
      connpool::ConnectionPool(FakeFactory{state}, no_background({.min_size = 1, .max_size = 2})),
      FactoryError);
}

TEST_CASE("ConnectionPool: without fail_fast the pool starts and refills later",
          "[pool][design-1][design-6]") {
  // DESIGN 1: "without it the pool starts and refills later."
  FakeState state;
  state.factory_fails = true;
  std::unique_ptr<connpool::ConnectionPool<FakeConn, FakeFactory>> pool;
  REQUIRE_NOTHROW(
      pool = std::make_unique<connpool::ConnectionPool<FakeConn, FakeFactory>>(
          FakeFactory{state}, no_background({.min_size = 2, .max_size = 4, .fail_fast = false})));
  auto s = pool->stats();
  CHECK(s.create_failures >= 1);
  CHECK(s.create_failures == static_cast<std::uint64_t>(state.factory_failures.load()));
  CHECK(s.idle == 0);
  CHECK(s.created == 0);

  // While the factory still fails, an acquire reports the factory's error.
  CHECK_THROWS_AS((void)pool->acquire(0ms), FactoryError);

  // Once the factory works, maintenance refills to min_size...
  state.factory_fails = false;
  CHECK(pool->prune() == 0);
  s = pool->stats();
  CHECK(s.idle == 2);
  CHECK(s.created == 2);
  // ...and acquires are served from the refilled connections.
  auto h = pool->acquire();
  CHECK(pool->stats().reused == 1);
}

// --- 2. LIFO -----------------------------------------------------------------------------------

TEST_CASE("ConnectionPool: the most recently released connection is handed out first",
          "[pool][design-2]") {
  // DESIGN 2: "Reuse order is LIFO."
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, no_background({.max_size = 4})};
  auto a = pool.acquire();
  auto b = pool.acquire();
  auto c = pool.acquire();
  const int ia = a->id();
  const int ib = b->id();
  const int ic = c->id();
  a.release();
  b.release();
  c.release();
  auto first = pool.acquire();
  auto second = pool.acquire();
  auto third = pool.acquire();
  CHECK(first->id() == ic);
  CHECK(second->id() == ib);
  CHECK(third->id() == ia);
  CHECK(state.factory_calls == 3);

  // Interleaved: the top of the stack is always the last one given back.
  third.release();  // ia on top
  first.release();  // ic on top
  auto next = pool.acquire();
  CHECK(next->id() == ic);
  second.release();  // ib on top of ia
  auto after = pool.acquire();
  CHECK(after->id() == ib);
  auto last = pool.try_acquire();
  REQUIRE(last.has_value());
  CHECK((*last)->id() == ia);
}

TEST_CASE("ConnectionPool: LIFO lets a spare connection stay unused", "[pool][design-2]") {
  // The reason for LIFO: a steady single user keeps getting the same connection, so the others
  // stay idle and can age out.
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, no_background({.min_size = 3, .max_size = 3})};
  std::vector<int> seen;
  for (int i = 0; i < 10; ++i) {
    auto h = pool.acquire();
    seen.push_back(h->id());
  }
  for (int id : seen) {
    CHECK(id == seen.front());
  }
}

// --- 3. creation outside the lock --------------------------------------------------------------

TEST_CASE("ConnectionPool: a slow connect blocks neither releases nor other acquires",
          "[pool][design-3]") {
  // DESIGN 3: "acquire creates a connection by calling the factory outside the pool's lock: a
  // slow connect never blocks other acquires or releases."
  FakeState state;
  Gate in_factory;
  Gate let_factory_finish;
  std::atomic<bool> block_next{false};
  state.on_create = [&] {
    if (block_next.exchange(false)) {
      in_factory.open();
      (void)let_factory_finish.wait();  // bounded: a failing test still ends
    }
  };
  connpool::ConnectionPool pool{FakeFactory{state}, no_background({.max_size = 3})};
  auto held = pool.acquire();  // connection 1, opened quickly
  const int held_id = held->id();

  block_next = true;
  std::atomic<int> slow_id{0};
  std::jthread slow([&] {
    try {
      slow_id = pool.acquire(generous_deadline)->id();
    } catch (...) {
      slow_id = -1;
    }
  });
  REQUIRE(in_factory.wait());

  // While the factory is stuck, another thread releases, re-acquires and reads the stats.
  auto others = std::async(std::launch::async, [&] {
    held.release();
    auto again = pool.try_acquire();
    const auto s = pool.stats();
    const int again_id = again.has_value() ? (*again)->id() : 0;
    again.reset();
    auto fresh = pool.acquire(0ms);  // idle again; must not wait for the factory either
    return std::tuple{again_id, s.in_use, s.idle, fresh->id()};
  });
  const bool others_finished = others.wait_for(generous_deadline) == std::future_status::ready;
  let_factory_finish.open();
  slow.join();

  CHECK(others_finished);
  REQUIRE(others_finished);
  const auto [again_id, in_use, idle, fresh_id] = others.get();
  CHECK(again_id == held_id);
  CHECK(in_use == 1);  // the connection being created is not counted yet
  CHECK(idle == 0);
  CHECK(fresh_id == held_id);
  CHECK(slow_id == 2);
}

TEST_CASE("ConnectionPool: a connection being created counts towards max_size",
          "[pool][design-3]") {
  // options.hpp: max_size is the "hard bound on open connections, counting those being
  // created". While one caller is inside the factory, the pool is full.
  FakeState state;
  Gate in_factory;
  Gate let_factory_finish;
  std::atomic<bool> block_next{false};
  state.on_create = [&] {
    if (block_next.exchange(false)) {
      in_factory.open();
      (void)let_factory_finish.wait();
    }
  };
  connpool::ConnectionPool pool{FakeFactory{state}, no_background({.max_size = 2})};
  auto held = pool.acquire();
  block_next = true;
  std::atomic<bool> slow_ok{false};
  std::jthread slow([&] {
    try {
      auto h = pool.acquire(generous_deadline);
      slow_ok = true;
    } catch (...) {
    }
  });
  const bool entered = in_factory.wait();
  const bool try_got = entered && pool.try_acquire().has_value();
  bool timed_out = false;
  if (entered) {
    try {
      (void)pool.acquire(0ms);
    } catch (const connpool::AcquireTimeout&) {
      timed_out = true;
    }
  }
  let_factory_finish.open();
  slow.join();
  REQUIRE(entered);
  CHECK_FALSE(try_got);
  CHECK(timed_out);
  CHECK(slow_ok);
  CHECK(state.factory_calls == 2);
  CHECK(state.max_live <= 2);
}

TEST_CASE("ConnectionPool: two connects run at the same time", "[pool][design-3]") {
  // If the factory ran under the lock, the second caller could not enter it while the first is
  // inside: each call waits (with a deadline) until both are in.
  FakeState state;
  std::atomic<int> inside{0};
  std::atomic<int> saw_both{0};
  state.on_create = [&] {
    inside.fetch_add(1);
    if (eventually([&] { return inside.load() >= 2; })) {
      saw_both.fetch_add(1);
    }
  };
  connpool::ConnectionPool pool{FakeFactory{state}, no_background({.max_size = 2})};
  std::atomic<int> ok{0};
  {
    std::vector<std::jthread> threads;
    for (int i = 0; i < 2; ++i) {
      threads.emplace_back([&] {
        auto h = pool.acquire(generous_deadline * 3);
        ok.fetch_add(1);
      });
    }
  }
  CHECK(saw_both == 2);
  CHECK(ok == 2);
  CHECK(pool.stats().created == 2);
}

TEST_CASE("ConnectionPool: a factory exception reaches the caller unchanged", "[pool][design-3]") {
  // DESIGN 3: "A factory exception reaches that caller unchanged and frees the reserved slot."
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, no_background({.max_size = 1})};
  state.factory_error_code = 1234;
  state.factory_failures_left = 1;

  int code = 0;
  std::string what;
  try {
    (void)pool.acquire();
  } catch (const FactoryError& e) {  // the concrete type, not a PoolError wrapper
    code = e.code;
    what = e.what();
  }
  CHECK(code == 1234);
  CHECK(what == "fake factory: connect refused");

  auto s = pool.stats();
  CHECK(s.create_failures == 1);
  CHECK(s.created == 0);
  CHECK(s.in_use == 0);
  CHECK(s.acquired == 0);
  // The slot is free again: on a pool of one, an acquire that may not wait succeeds.
  auto h = pool.acquire(0ms);
  CHECK(h);
  s = pool.stats();
  CHECK(s.created == 1);
  CHECK(s.in_use == 1);
}

TEST_CASE("ConnectionPool: a factory exception from try_acquire propagates and frees the slot",
          "[pool][design-3]") {
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, no_background({.max_size = 1})};
  state.factory_failures_left = 1;
  CHECK_THROWS_AS((void)pool.try_acquire(), FactoryError);
  auto h = pool.try_acquire();
  CHECK(h.has_value());
  CHECK(pool.stats().create_failures == 1);
}

TEST_CASE("ConnectionPool: a failed connect lets a waiter have the freed slot",
          "[pool][design-3][design-4]") {
  // The slot reserved by the failing caller must go to the waiter behind it, which then opens
  // its own connection instead of timing out.
  FakeState state;
  Gate in_factory;
  Gate let_factory_fail;
  std::atomic<bool> first{true};
  state.on_create = [&] {
    if (first.exchange(false)) {
      state.factory_failures_left = 1;
      in_factory.open();
      (void)let_factory_fail.wait();
    }
  };
  connpool::ConnectionPool pool{FakeFactory{state}, no_background({.max_size = 1})};
  std::atomic<int> failing_result{0};  // 1 = FactoryError
  std::atomic<int> waiter_id{0};       // > 0 = got a connection; -1 = anything else
  std::jthread failing([&] {
    try {
      (void)pool.acquire(generous_deadline);
    } catch (const FactoryError&) {
      failing_result = 1;
    } catch (...) {
      failing_result = -1;
    }
  });
  REQUIRE(in_factory.wait());
  std::jthread waiter([&] {
    try {
      waiter_id = pool.acquire(generous_deadline)->id();
    } catch (...) {
      waiter_id = -1;
    }
  });
  const bool queued = eventually([&] { return pool.stats().pending == 1; });
  let_factory_fail.open();
  failing.join();
  waiter.join();
  CHECK(queued);
  CHECK(failing_result == 1);
  CHECK(waiter_id > 0);
  const auto s = pool.stats();
  CHECK(s.create_failures == 1);
  CHECK(s.timeouts == 0);
}

// --- reset on release --------------------------------------------------------------------------

TEST_CASE("ConnectionPool: a Resettable connection is reset on every release", "[pool][reset]") {
  // DESIGN: "Not Resettable -> nothing runs on release"; a Resettable one is reset each time.
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, no_background({.max_size = 1})};
  for (int i = 1; i <= 3; ++i) {
    auto h = pool.acquire();
    CHECK(h->reset_count == i - 1);
  }
  CHECK(state.resets == 3);
  pool.acquire().invalidate();  // closed, not returned: no reset
  CHECK(state.resets == 3);
}

TEST_CASE("ConnectionPool: a connection whose reset throws is closed instead of returned",
          "[pool][reset][design-10]") {
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, no_background({.max_size = 1})};
  auto h = pool.acquire();
  const int id = h->id();
  state.reset_throws = true;
  REQUIRE_NOTHROW(h.release());
  CHECK(state.resets == 1);
  CHECK(state.closed == 1);
  CHECK(state.live == 0);
  auto s = pool.stats();
  CHECK(s.idle == 0);
  CHECK(s.in_use == 0);
  CHECK(s.closed == 1);
  CHECK(s.released == 1);
  // The slot is free: the next acquire opens a new connection at once.
  state.reset_throws = false;
  auto next = pool.acquire(0ms);
  CHECK(next->id() != id);
  // The handle destructor path swallows it too.
  state.reset_throws = true;
  REQUIRE_NOTHROW([&] { auto dropped = std::move(next); }());
  CHECK(state.closed == 2);
}

TEST_CASE("ConnectionPool: reset runs outside the pool's lock", "[pool][reset]") {
  FakeState state;
  connpool_test::LockProbe probe;
  std::unique_ptr<connpool::ConnectionPool<FakeConn, FakeFactory>> pool;
  state.on_reset = [&] { probe.check(*pool); };
  pool = std::make_unique<connpool::ConnectionPool<FakeConn, FakeFactory>>(
      FakeFactory{state}, no_background({.max_size = 1}));
  pool->acquire().release();
  CHECK(probe.free_count() == 1);
  CHECK(probe.blocked_count() == 0);
}

TEST_CASE("ConnectionPool: the factory runs outside the pool's lock", "[pool][design-3]") {
  FakeState state;
  connpool_test::LockProbe probe;
  std::unique_ptr<connpool::ConnectionPool<FakeConn, FakeFactory>> pool;
  std::atomic<bool> armed{false};
  state.on_create = [&] {
    if (armed) {
      probe.check(*pool);
    }
  };
  pool = std::make_unique<connpool::ConnectionPool<FakeConn, FakeFactory>>(
      FakeFactory{state}, no_background({.max_size = 1}));
  armed = true;
  auto h = pool->acquire();
  CHECK(probe.free_count() == 1);
  CHECK(probe.blocked_count() == 0);
}
