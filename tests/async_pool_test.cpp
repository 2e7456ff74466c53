// connpool - tests: AsyncConnectionPool, coroutines waiting on the shared core
// SPDX-License-Identifier: MIT

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include <connpool/async_pool.hpp>
#include <connpool/task.hpp>

#include "catch.hpp"
#include "coro.hpp"
#include "fake_conn.hpp"
#include "sync.hpp"

using namespace std::chrono_literals;
using connpool::PoolOptions;
using connpool::Task;
using connpool_test::Counted;
using connpool_test::Event;
using connpool_test::eventually;
using connpool_test::FactoryError;
using connpool_test::FakeConn;
using connpool_test::FakeFactory;
using connpool_test::FakeState;
using connpool_test::generous_deadline;
using connpool_test::Loop;
using connpool_test::Spawned;

namespace {

using Pool = connpool::AsyncConnectionPool<FakeConn, FakeFactory>;

PoolOptions sized(std::size_t max_size, std::size_t min_size = 0) {
  return PoolOptions{.min_size = min_size, .max_size = max_size, .health_check_interval = 0ms};
}

/// An asynchronous factory: a Task that makes a FakeConn, after awaiting `gate` if given.
struct AsyncFactory {
  FakeState* state;
  Event* gate = nullptr;
  Task<FakeConn> operator()() const {
    if (gate != nullptr) {
      co_await gate->wait();
    }
    co_return FakeFactory{*state}();
  }
};
using AsyncPool = connpool::AsyncConnectionPool<FakeConn, AsyncFactory>;

std::string error_message(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  }
  return {};
}

}  // namespace

TEST_CASE("AsyncConnectionPool: CTAD from a factory returning Conn or Task<Conn>", "[async]") {
  FakeState state;
  connpool::AsyncConnectionPool sync_made{FakeFactory{state}, sized(2)};
  static_assert(std::is_same_v<decltype(sync_made)::connection_type, FakeConn>);
  connpool::AsyncConnectionPool async_made{AsyncFactory{&state}, sized(2)};
  static_assert(std::is_same_v<decltype(async_made)::connection_type, FakeConn>);
  static_assert(connpool::AsyncConnectionFactory<AsyncFactory, FakeConn>);
  static_assert(!connpool::AsyncConnectionFactory<AsyncFactory, int>);
  static_assert(connpool::Scheduler<connpool::InlineScheduler>);
  static_assert(connpool::Scheduler<Loop::Ref>);
}

TEST_CASE("AsyncConnectionPool: an idle connection is acquired without suspending", "[async]") {
  FakeState state;
  Loop loop;
  Pool pool{FakeFactory{state}, sized(2, 1), loop.scheduler()};
  Spawned spawned;
  int got = 0;
  spawned.spawn([&]() -> Task<void> {
    auto h = co_await pool.acquire();
    got = h->id();
  });
  // It ran to the end inside spawn(): no suspension, nothing scheduled.
  CHECK(spawned.done() == 1);
  CHECK(got == 1);
  CHECK(loop.scheduled() == 0);
  const auto s = pool.stats();
  CHECK(s.acquired == 1);
  CHECK(s.reused == 1);
  CHECK(s.waited == 0);
}

TEST_CASE("AsyncConnectionPool: a synchronous factory creates below max_size without suspending",
          "[async][design-3]") {
  FakeState state;
  Loop loop;
  Pool pool{FakeFactory{state}, sized(2), loop.scheduler()};
  Spawned spawned;
  spawned.spawn([&]() -> Task<void> {
    auto a = co_await pool.acquire();
    auto b = co_await pool.acquire();
    CHECK(a->id() != b->id());
  });
  CHECK(spawned.done() == 1);
  CHECK(spawned.errors().empty());
  CHECK(state.created == 2);
  CHECK(loop.scheduled() == 0);
}

TEST_CASE("AsyncConnectionPool: 10,000 coroutines on one thread share a pool of 4",
          "[async][design-4]") {
  FakeState state;
  Loop loop;
  std::atomic<int> frames{0};
  const auto main_thread = std::this_thread::get_id();
  std::atomic<int> off_thread{0};
  constexpr int coroutines = 10'000;
  {
    Pool pool{FakeFactory{state}, sized(4), loop.scheduler()};
    Spawned spawned;
    for (int i = 0; i < coroutines; ++i) {
      spawned.spawn([&, counted = Counted(frames)]() -> Task<void> {
        auto h = co_await pool.acquire(generous_deadline);
        if (std::this_thread::get_id() != main_thread) {
          off_thread.fetch_add(1);
        }
        auto hold = h->hold();
        co_await loop.yield();  // keep the connection across a suspension
      });
    }
    // Every coroutine beyond the first four is suspended now; this thread is the only one that
    // runs them, so a blocking acquire anywhere would hang here.
    CHECK(spawned.done() == 0);
    CHECK(pool.stats().pending == coroutines - 4);
    REQUIRE(loop.run_until([&] { return spawned.done() == coroutines; }));
    CHECK(spawned.errors().empty());
    const auto s = pool.stats();
    CHECK(s.acquired == coroutines);
    CHECK(s.released == coroutines);
    CHECK(s.created == 4);
    CHECK(s.waited == coroutines - 4);
    CHECK(s.pending == 0);
    CHECK(s.timeouts == 0);
  }
  CHECK(off_thread == 0);
  CHECK(state.double_holds == 0);
  CHECK(state.max_live <= 4);
  CHECK(state.live == 0);
  CHECK(frames == 0);  // every coroutine frame was destroyed
}

TEST_CASE("AsyncConnectionPool: suspended coroutines are served in FIFO order",
          "[async][design-4]") {
  FakeState state;
  Pool pool{FakeFactory{state}, sized(1)};  // InlineScheduler
  Spawned spawned;
  Event release_first;
  std::vector<int> order;
  spawned.spawn([&]() -> Task<void> {
    auto h = co_await pool.acquire();
    co_await release_first.wait();
  });
  for (int i = 1; i <= 5; ++i) {
    spawned.spawn([&, i]() -> Task<void> {
      auto h = co_await pool.acquire();
      order.push_back(i);
    });
  }
  CHECK(pool.stats().pending == 5);
  release_first.set();  // each release resumes the next waiter inline
  CHECK(order == std::vector<int>{1, 2, 3, 4, 5});
  CHECK(spawned.done() == 6);
  CHECK(pool.stats().pending == 0);
}

TEST_CASE("AsyncConnectionPool: threads and coroutines wait in one FIFO queue",
          "[async][design-4]") {
  FakeState state;
  Pool pool{FakeFactory{state}, sized(1)};  // InlineScheduler: resumed by the releaser
  Spawned spawned;
  std::mutex order_mutex;
  std::vector<std::string> order;
  auto note = [&](std::string who) {
    std::lock_guard lock(order_mutex);
    order.push_back(std::move(who));
  };

  auto held = pool.acquire_blocking();
  spawned.spawn([&]() -> Task<void> {
    auto h = co_await pool.acquire(generous_deadline);
    note("coroutine 1");
  });
  REQUIRE(pool.stats().pending == 1);
  std::thread thread([&] {
    auto h = pool.acquire_blocking(generous_deadline);
    note("thread");
  });
  REQUIRE(eventually([&] { return pool.stats().pending == 2; }));
  spawned.spawn([&]() -> Task<void> {
    auto h = co_await pool.acquire(generous_deadline);
    note("coroutine 2");
  });
  REQUIRE(pool.stats().pending == 3);

  held.release();
  thread.join();
  REQUIRE(eventually([&] { return spawned.done() == 2; }));
  CHECK(order == std::vector<std::string>{"coroutine 1", "thread", "coroutine 2"});
  CHECK(spawned.errors().empty());
  CHECK(pool.stats().waited == 3);
}

TEST_CASE("AsyncConnectionPool: threads and coroutines share a busy pool and all finish",
          "[async][stress]") {
  FakeState state;
  Loop loop;
  constexpr int threads = 4;
  constexpr int coroutines = 64;
  constexpr int cycles = 300;
  Pool pool{FakeFactory{state}, sized(2), loop.scheduler()};
  Spawned spawned;
  std::atomic<int> thread_cycles{0};
  std::atomic<int> coroutine_cycles{0};
  for (int i = 0; i < coroutines; ++i) {
    spawned.spawn([&]() -> Task<void> {
      for (int c = 0; c < cycles / 10; ++c) {
        auto h = co_await pool.acquire(generous_deadline);
        auto hold = h->hold();
        coroutine_cycles.fetch_add(1);
        co_await loop.yield();
      }
    });
  }
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      for (int c = 0; c < cycles; ++c) {
        auto h = pool.acquire_blocking(generous_deadline);
        auto hold = h->hold();
        thread_cycles.fetch_add(1);
      }
    });
  }
  REQUIRE(loop.run_until([&] { return spawned.done() == coroutines; }));
  for (auto& w : workers) {
    w.join();
  }
  CHECK(spawned.errors().empty());
  CHECK(thread_cycles == threads * cycles);
  CHECK(coroutine_cycles == coroutines * (cycles / 10));
  CHECK(state.double_holds == 0);
  CHECK(state.max_live <= 2);
  const auto s = pool.stats();
  CHECK(s.acquired == static_cast<std::uint64_t>(threads * cycles + coroutines * (cycles / 10)));
  CHECK(s.pending == 0);
}

TEST_CASE("AsyncConnectionPool: a suspended acquire times out with AcquireTimeout",
          "[async][design-4]") {
  FakeState state;
  Loop loop;
  std::atomic<int> frames{0};
  {
    Pool pool{FakeFactory{state}, sized(1), loop.scheduler()};
    Spawned spawned;
    auto held = pool.acquire_blocking();
    const auto start = std::chrono::steady_clock::now();
    std::chrono::steady_clock::duration elapsed{};
    spawned.spawn([&, counted = Counted(frames)]() -> Task<void> {
      try {
        auto h = co_await pool.acquire(50ms);
      } catch (...) {
        elapsed = std::chrono::steady_clock::now() - start;
        throw;
      }
    });
    CHECK(pool.stats().pending == 1);
    // The pool's timer thread ends the wait; the loop (this thread) resumes the coroutine.
    REQUIRE(loop.run_until([&] { return spawned.done() == 1; }));
    const auto errors = spawned.errors();
    REQUIRE(errors.size() == 1);
    CHECK_THROWS_AS(std::rethrow_exception(errors[0]), connpool::AcquireTimeout);
    const std::string what = error_message(errors[0]);
    CHECK(what.find("timed out after 50 ms") != std::string::npos);
    CHECK(what.find("in use 1") != std::string::npos);
    CHECK(elapsed >= 50ms);
    CHECK(elapsed < generous_deadline);
    const auto s = pool.stats();
    CHECK(s.timeouts == 1);
    CHECK(s.pending == 0);
    CHECK(s.waited == 1);
  }
  CHECK(frames == 0);
}

TEST_CASE("AsyncConnectionPool: a zero timeout fails at once when the pool is exhausted",
          "[async]") {
  FakeState state;
  Pool pool{FakeFactory{state}, sized(1)};
  Spawned spawned;
  auto held = pool.acquire_blocking();
  spawned.spawn([&]() -> Task<void> { auto h = co_await pool.acquire(0ms); });
  REQUIRE(spawned.done() == 1);
  const auto errors = spawned.errors();
  REQUIRE(errors.size() == 1);
  CHECK_THROWS_AS(std::rethrow_exception(errors[0]), connpool::AcquireTimeout);
  CHECK(pool.stats().timeouts == 1);
  CHECK(pool.stats().pending == 0);
}

TEST_CASE("AsyncConnectionPool: close() wakes suspended coroutines with PoolClosed",
          "[async][design-7]") {
  FakeState state;
  std::atomic<int> frames{0};
  {
    Pool pool{FakeFactory{state}, sized(1)};
    Spawned spawned;
    auto held = pool.acquire_blocking();
    for (int i = 0; i < 3; ++i) {
      spawned.spawn([&, counted = Counted(frames)]() -> Task<void> {
        auto h = co_await pool.acquire(generous_deadline);
      });
    }
    CHECK(pool.stats().pending == 3);
    CHECK(frames == 3);
    pool.close();  // InlineScheduler: resumed inside close(), on this thread
    CHECK(spawned.done() == 3);
    const auto errors = spawned.errors();
    REQUIRE(errors.size() == 3);
    for (const auto& e : errors) {
      CHECK_THROWS_AS(std::rethrow_exception(e), connpool::PoolClosed);
    }
    CHECK(frames == 0);
    // Later acquires fail too, without suspending.
    spawned.spawn([&]() -> Task<void> { auto h = co_await pool.acquire(); });
    CHECK(spawned.done() == 4);
    REQUIRE(spawned.errors().size() == 4);
    CHECK_THROWS_AS(std::rethrow_exception(spawned.errors()[3]), connpool::PoolClosed);
  }
  CHECK(state.live == 0);
}

TEST_CASE("AsyncConnectionPool: a stop request cancels a suspended acquire", "[async]") {
  FakeState state;
  Pool pool{FakeFactory{state}, sized(1)};
  Spawned spawned;
  auto held = pool.acquire_blocking();
  std::stop_source stop;
  spawned.spawn(
      [&]() -> Task<void> { auto h = co_await pool.acquire(generous_deadline, stop.get_token()); });
  REQUIRE(pool.stats().pending == 1);
  stop.request_stop();  // resumed inline, inside request_stop()
  REQUIRE(spawned.done() == 1);
  REQUIRE(spawned.errors().size() == 1);
  CHECK_THROWS_AS(std::rethrow_exception(spawned.errors()[0]), connpool::AcquireCancelled);
  CHECK(pool.stats().pending == 0);

  SECTION("a stop requested before the co_await cancels only a wait") {
    std::stop_source stopped;
    stopped.request_stop();
    spawned.spawn([&]() -> Task<void> {
      auto h = co_await pool.acquire(generous_deadline, stopped.get_token());
    });
    REQUIRE(spawned.done() == 2);
    REQUIRE(spawned.errors().size() == 2);
    CHECK_THROWS_AS(std::rethrow_exception(spawned.errors()[1]), connpool::AcquireCancelled);
    held.release();
    spawned.spawn([&]() -> Task<void> {
      auto h = co_await pool.acquire(generous_deadline, stopped.get_token());
      CHECK(h);
    });
    CHECK(spawned.done() == 3);
    CHECK(spawned.errors().size() == 2);
  }
}

TEST_CASE("AsyncConnectionPool: try_acquire never waits", "[async]") {
  FakeState state;
  Pool pool{FakeFactory{state}, sized(1)};
  Spawned spawned;
  std::optional<connpool::PooledHandle<FakeConn>> first;
  std::optional<connpool::PooledHandle<FakeConn>> second;
  spawned.spawn([&]() -> Task<void> {
    first = co_await pool.try_acquire();
    second = co_await pool.try_acquire();
  });
  REQUIRE(spawned.done() == 1);
  CHECK(first.has_value());
  CHECK(!second.has_value());
  CHECK(pool.stats().waited == 0);
  pool.close();
  spawned.spawn([&]() -> Task<void> { auto h = co_await pool.try_acquire(); });
  REQUIRE(spawned.errors().size() == 1);
  CHECK_THROWS_AS(std::rethrow_exception(spawned.errors()[0]), connpool::PoolClosed);
}

TEST_CASE("AsyncConnectionPool: an operation awaited twice throws logic_error", "[async]") {
  FakeState state;
  Pool pool{FakeFactory{state}, sized(1)};
  Spawned spawned;
  spawned.spawn([&]() -> Task<void> {
    auto op = pool.acquire();
    auto h = co_await op;
    CHECK_THROWS_AS(co_await op, std::logic_error);
  });
  CHECK(spawned.done() == 1);
  CHECK(spawned.errors().empty());
}

TEST_CASE("AsyncConnectionPool: an asynchronous factory is awaited without blocking",
          "[async][design-3]") {
  FakeState state;
  Event connected;
  AsyncPool pool{AsyncFactory{&state, &connected}, sized(1)};
  Spawned spawned;
  int id = 0;
  spawned.spawn([&]() -> Task<void> {
    auto h = co_await pool.acquire();
    id = h->id();
  });
  // Suspended in the factory, holding the pool's only place.
  CHECK(spawned.done() == 0);
  CHECK(pool.stats().pending == 0);
  std::optional<connpool::PooledHandle<FakeConn>> other;
  spawned.spawn([&]() -> Task<void> { other = co_await pool.try_acquire(); });
  CHECK(spawned.done() == 1);
  CHECK(!other.has_value());  // no room: the place is taken by the creation in flight
  connected.set();
  CHECK(spawned.done() == 2);
  CHECK(id == 1);
  CHECK(spawned.errors().empty());
  CHECK(pool.stats().created == 1);
}

TEST_CASE("AsyncConnectionPool: an asynchronous factory's exception reaches the coroutine",
          "[async][design-3]") {
  FakeState state;
  AsyncPool pool{AsyncFactory{&state}, sized(1)};
  Spawned spawned;
  state.factory_failures_left = 1;
  state.factory_error_code = 7;
  spawned.spawn([&]() -> Task<void> { auto h = co_await pool.acquire(); });
  REQUIRE(spawned.done() == 1);
  REQUIRE(spawned.errors().size() == 1);
  try {
    std::rethrow_exception(spawned.errors()[0]);
  } catch (const FactoryError& e) {
    CHECK(e.code == 7);  // unchanged
  }
  auto s = pool.stats();
  CHECK(s.create_failures == 1);
  CHECK(s.total_connections() == 0);
  // The place was freed: the next acquire creates.
  spawned.spawn([&]() -> Task<void> {
    auto h = co_await pool.acquire();
    CHECK(h->id() == 1);
  });
  CHECK(spawned.done() == 2);
  CHECK(spawned.errors().size() == 1);
  CHECK(pool.stats().created == 1);
}

TEST_CASE("AsyncConnectionPool: warm-up drives an asynchronous factory to completion",
          "[async][design-1]") {
  FakeState state;
  AsyncPool pool{AsyncFactory{&state}, sized(4, 2)};
  CHECK(pool.stats().created == 2);
  CHECK(pool.stats().idle == 2);
  SECTION("and with fail_fast its exception leaves the constructor") {
    FakeState failing;
    failing.factory_fails = true;
    PoolOptions o = sized(4, 2);
    CHECK_THROWS_AS(AsyncPool(AsyncFactory{&failing}, o), FactoryError);
  }
}

TEST_CASE("AsyncConnectionPool: a scheduler decides where waiters resume", "[async]") {
  FakeState state;
  Loop loop;
  Pool pool{FakeFactory{state}, sized(1), loop.scheduler()};
  Spawned spawned;
  auto held = pool.acquire_blocking();
  spawned.spawn([&]() -> Task<void> { auto h = co_await pool.acquire(generous_deadline); });
  held.release();
  // Handed over, but not resumed until the loop runs.
  CHECK(spawned.done() == 0);
  CHECK(loop.scheduled() == 1);
  CHECK(pool.stats().pending == 0);
  loop.run();
  CHECK(spawned.done() == 1);
  CHECK(spawned.errors().empty());
}

TEST_CASE("AsyncConnectionPool: a coroutine resumed by the timer may destroy the pool",
          "[async][lifetime]") {
  FakeState state;
  auto pool = std::make_unique<Pool>(FakeFactory{state}, sized(1));  // InlineScheduler
  Spawned spawned;
  auto held = std::make_unique<connpool::PooledHandle<FakeConn>>(pool->acquire_blocking());
  spawned.spawn([&]() -> Task<void> {
    try {
      auto h = co_await pool->acquire(20ms);
    } catch (const connpool::AcquireTimeout&) {
      // On the pool's timer thread: give the connection back, then destroy the pool, whose
      // shared state is then freed on this very thread, once the timer has unwound.
      held.reset();
      pool.reset();
    }
  });
  REQUIRE(eventually([&] { return spawned.done() == 1; }));
  CHECK(spawned.errors().empty());
  CHECK(eventually([&] { return state.live == 0; }));
}

TEST_CASE("AsyncConnectionPool: bounded_barging serves suspended coroutines", "[async]") {
  FakeState state;
  Loop loop;
  PoolOptions o = sized(2);
  o.wait_policy = connpool::WaitPolicy::bounded_barging;
  Pool pool{FakeFactory{state}, o, loop.scheduler()};
  Spawned spawned;
  constexpr int coroutines = 200;
  for (int i = 0; i < coroutines; ++i) {
    spawned.spawn([&]() -> Task<void> {
      auto h = co_await pool.acquire(generous_deadline);
      auto hold = h->hold();
      co_await loop.yield();
    });
  }
  REQUIRE(loop.run_until([&] { return spawned.done() == coroutines; }));
  CHECK(spawned.errors().empty());
  CHECK(state.double_holds == 0);
  CHECK(pool.stats().pending == 0);
}
