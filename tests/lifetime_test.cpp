// connpool - tests: who frees the shared state, and when
// SPDX-License-Identifier: MIT

// The pool's shared state outlives its owner while anything still uses it: a handle that is out,
// a thread of the pool's own that is running, an asynchronous acquire that has not finished. These
// tests destroy or close the pool from the places where user code runs inside the pool (hooks on
// the maintenance thread, coroutines resumed inline there or later by a scheduler) and check that
// nothing is touched after it is freed (ASan) and that it is freed in the end (the factory, which
// lives in the shared state, is destroyed).

#include <atomic>
#include <chrono>
#include <optional>
#include <stop_token>
#include <thread>

#include <connpool/async_pool.hpp>
#include <connpool/manual_clock.hpp>
#include <connpool/pool.hpp>
#include <connpool/task.hpp>

#include "catch.hpp"
#include "coro.hpp"
#include "fake_conn.hpp"
#include "sync.hpp"

using namespace std::chrono_literals;
using connpool::PoolEvent;
using connpool::PoolOptions;
using connpool::Task;
using connpool_test::Counted;
using connpool_test::eventually;
using connpool_test::FactoryError;
using connpool_test::FakeConn;
using connpool_test::FakeFactory;
using connpool_test::FakeState;
using connpool_test::Gate;
using connpool_test::Loop;
using connpool_test::Spawned;

namespace {

/// A FakeFactory that counts its live copies: the pool's shared state holds one, so `live`
/// drops to 0 exactly when the shared state has been freed.
struct TrackedFactory {
  FakeFactory make;
  Counted counted;
  TrackedFactory(FakeState& state, std::atomic<int>& live) : make(state), counted(live) {}
  FakeConn operator()() const { return make(); }
};

PoolOptions quiet(std::size_t max_size) {
  PoolOptions o;
  o.max_size = max_size;
  o.health_check_interval = 0ms;
  o.validate_on_acquire = false;
  return o;
}

std::string what(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "?";
  }
}

}  // namespace

// Issue 12, defect 1(a): an on_close hook on the maintenance thread destroys the pool. The
// maintenance pass that called the hook still has work to do in the shared state.
TEST_CASE("a hook on the maintenance thread may destroy the pool", "[lifetime][maintenance]") {
  using Clock = connpool::ManualClock<struct HookDestroysTag>;
  using Pool = connpool::ConnectionPool<FakeConn, TrackedFactory, Clock>;
  FakeState state;
  std::atomic<int> factories{0};
  std::optional<Pool> pool;
  Gate destroyed;
  std::atomic<bool> first{true};
  PoolOptions o = quiet(2);
  o.max_lifetime = 1000ms;
  o.max_idle = 0ms;
  o.health_check_interval = 1ms;
  o.on_close = [&](const PoolEvent&) {
    if (first.exchange(false)) {
      pool.reset();  // on the maintenance thread, which is closing an expired connection
      destroyed.open();
    }
  };
  pool.emplace(TrackedFactory(state, factories), o);
  {
    auto a = pool->acquire(1s);
    auto b = pool->acquire(1s);
  }
  Clock::advance(2000ms);  // both idle connections expire; the next pass closes them
  REQUIRE(destroyed.wait());
  REQUIRE(eventually([&] { return factories.load() == 0; }));
  CHECK(state.live.load() == 0);
  CHECK(state.double_closes.load() == 0);
}

// Issue 12, defect 1(a), as reported: the hook only closes the pool, and its owner destroys it on
// another thread meanwhile. The destructor must wait for the maintenance thread.
TEST_CASE("the destructor waits for a maintenance thread that closed the pool",
          "[lifetime][maintenance]") {
  using Clock = connpool::ManualClock<struct HookClosesTag>;
  using Pool = connpool::ConnectionPool<FakeConn, TrackedFactory, Clock>;
  FakeState state;
  std::atomic<int> factories{0};
  std::optional<Pool> pool;
  Gate closed_in_hook;
  Gate destroyed;
  std::atomic<bool> first{true};
  PoolOptions o = quiet(2);
  o.max_lifetime = 1000ms;
  o.max_idle = 0ms;
  o.health_check_interval = 1ms;
  o.on_close = [&](const PoolEvent&) {
    if (first.exchange(false)) {
      pool->close();
      closed_in_hook.open();
      // Give the owner time to run its destructor now, while this pass is not finished. A correct
      // destructor waits for this thread, so the wait ends by its bound instead.
      (void)destroyed.wait(300ms);
    }
  };
  pool.emplace(TrackedFactory(state, factories), o);
  {
    auto a = pool->acquire(1s);
    auto b = pool->acquire(1s);
  }
  Clock::advance(2000ms);
  REQUIRE(closed_in_hook.wait());
  pool.reset();
  destroyed.open();
  CHECK(factories.load() == 0);  // the destructor waited for the pass, which freed nothing early
  CHECK(state.live.load() == 0);
}

namespace publish_race {
// The seam's state: the seam is a plain function pointer, called on any thread that takes the
// slow path of a release, and acts only on the thread that marks itself.
thread_local bool releaser = false;
Gate published;                           // the releaser is between publishing and its lock
std::atomic<bool> saw_last_count{false};  // the count reached zero while it was held there

void hold_until_freeing(const std::atomic<std::size_t>& refs) {
  if (!releaser) {
    return;
  }
  published.open();
  // The owner's thread closes the connection just published and lets go of the pool meanwhile;
  // the count then reaches zero, and that thread waits for this publication to end.
  saw_last_count = eventually([&] { return refs.load() == 0; });
}
}  // namespace publish_race

// A releaser publishes its connection while the pool is paused (so it takes the slow path), and
// before it takes the lock the owner destroys the pool on another thread: close() claims the
// connection just published, closes it and drops the last count. The releaser, which holds only
// its publication, must not take a count on the core being freed (it would free it again).
TEST_CASE("a release that races the pool's destruction does not free the pool twice",
          "[lifetime][close]") {
  using Pool = connpool::ConnectionPool<FakeConn, TrackedFactory>;
  FakeState state;
  std::atomic<int> factories{0};
  std::optional<Pool> pool;
  pool.emplace(TrackedFactory(state, factories), quiet(1));
  std::optional<connpool::PooledHandle<FakeConn>> h = pool->acquire(1s);
  pool->pause();  // every publication takes the slow path
  connpool::detail::after_publish_seam = &publish_race::hold_until_freeing;
  std::jthread releaser([&] {
    publish_race::releaser = true;
    h->release();
  });
  REQUIRE(publish_race::published.wait());
  pool.reset();  // returns once the releaser's publication has ended
  releaser.join();
  connpool::detail::after_publish_seam = nullptr;
  CHECK(publish_race::saw_last_count.load());
  CHECK(factories.load() == 0);  // the shared state was freed
  CHECK(state.live.load() == 0);
  CHECK(state.closed.load() == 1);
  CHECK(state.double_closes.load() == 0);
}

// Issue 12, defect 1(b): with the inline scheduler, a keepalive ping on the maintenance thread
// hands the connection to a waiting coroutine, which resumes there, gives the connection back
// and destroys the pool ("the last task shuts down").
TEST_CASE("a coroutine resumed on the maintenance thread may destroy the async pool",
          "[lifetime][maintenance][async]") {
  using Clock = connpool::ManualClock<struct KeepaliveDestroysTag>;
  using Pool = connpool::AsyncConnectionPool<FakeConn, TrackedFactory, Clock>;
  FakeState state;
  std::atomic<int> factories{0};
  std::optional<Pool> pool;
  Spawned spawned;
  std::atomic<bool> first{true};
  state.on_ping = [&] {
    if (first.exchange(false)) {
      // The only connection is out of the idle set while it is pinged: this acquire queues.
      spawned.spawn([&]() -> Task<void> {
        auto h = co_await pool->acquire(10s);
        h.release();
        pool.reset();
      });
    }
  };
  PoolOptions o = quiet(1);
  o.max_lifetime = 0ms;
  o.max_idle = 0ms;
  o.health_check_interval = 1ms;
  o.keepalive_interval = 1000ms;
  pool.emplace(TrackedFactory(state, factories), o);
  { auto h = pool->acquire_blocking(1s); }
  Clock::advance(2000ms);  // the idle connection is due for a keepalive ping
  REQUIRE(eventually([&] { return spawned.done() == 1; }));
  CHECK(spawned.errors().empty());
  REQUIRE(eventually([&] { return factories.load() == 0; }));
  CHECK(state.live.load() == 0);
}

// Issue 12, defect 8: the pool is destroyed while a waiter it granted a connection to has its
// resumption queued in a scheduler that runs later. The resumed acquire finds the pool closed.
TEST_CASE("an async pool destroyed with a granted resumption still queued", "[lifetime][async]") {
  using Pool = connpool::AsyncConnectionPool<FakeConn, TrackedFactory>;
  FakeState state;
  std::atomic<int> factories{0};
  Loop loop;
  Spawned spawned;
  std::exception_ptr error;
  {
    Pool pool(TrackedFactory(state, factories), quiet(1), loop.scheduler());
    auto held = pool.acquire_blocking(1s);
    spawned.spawn([&]() -> Task<void> {
      try {
        auto h = co_await pool.acquire(10s);
      } catch (...) {
        error = std::current_exception();
      }
    });
    REQUIRE(pool.stats().pending == 1);
    held.release();  // granted to the coroutine; its resumption waits in the loop
    REQUIRE(loop.scheduled() == 1);
  }
  loop.run();
  REQUIRE(spawned.done() == 1);
  REQUIRE(error != nullptr);
  CHECK_THROWS_AS(std::rethrow_exception(error), connpool::PoolClosed);
  CHECK(factories.load() == 0);
  CHECK(state.live.load() == 0);
}

namespace {

/// A coroutine the test owns: started at once, destroyed by the test wherever it is suspended.
struct Owned {
  struct promise_type {
    Owned get_return_object() noexcept {
      return Owned{std::coroutine_handle<promise_type>::from_promise(*this)};
    }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }
  };
  std::coroutine_handle<promise_type> h;
};

template <class Pool>
CONNPOOL_CORO_NO_SANITIZE_FUNCTION Owned acquire_and_hold(Pool& pool, bool& got) {
  auto h = co_await pool.acquire(10s);
  got = true;
}

}  // namespace

// Issue 12, defect 2 (second part): a coroutine frame destroyed while suspended in
// `co_await pool.acquire()` leaves the queue; nothing is resumed or leaked.
TEST_CASE("a coroutine destroyed while it waits in acquire leaves the queue", "[lifetime][async]") {
  using Pool = connpool::AsyncConnectionPool<FakeConn, TrackedFactory>;
  FakeState state;
  std::atomic<int> factories{0};
  {
    Pool pool(TrackedFactory(state, factories), quiet(1));
    auto held = pool.acquire_blocking(1s);
    bool got = false;
    Owned waiting = acquire_and_hold(pool, got);
    REQUIRE(pool.stats().pending == 1);
    waiting.h.destroy();
    CHECK(pool.stats().pending == 0);
    held.release();  // nobody waits: the connection goes back to the idle set
    CHECK_FALSE(got);
    CHECK(pool.stats().idle == 1);
    auto again = pool.acquire_blocking(1s);
    CHECK(again);
  }
  CHECK(factories.load() == 0);
  CHECK(state.live.load() == 0);
}

// The same with a scheduler that resumes later: the coroutine was granted a connection, and is
// destroyed before its resumption ran. The connection goes back to the pool.
TEST_CASE("a coroutine destroyed after its grant and before it resumed gives the grant back",
          "[lifetime][async]") {
  using Pool = connpool::AsyncConnectionPool<FakeConn, TrackedFactory>;
  FakeState state;
  std::atomic<int> factories{0};
  {
    Loop loop;
    Pool pool(TrackedFactory(state, factories), quiet(1), loop.scheduler());
    auto held = pool.acquire_blocking(1s);
    bool got = false;
    Owned waiting = acquire_and_hold(pool, got);
    REQUIRE(pool.stats().pending == 1);
    held.release();
    REQUIRE(loop.scheduled() == 1);
    waiting.h.destroy();
    loop.run();  // the queued resumption must not touch the destroyed frame
    CHECK_FALSE(got);
    CHECK(pool.stats().in_use == 0);
    auto again = pool.acquire_blocking(1s);
    CHECK(again);
  }
  CHECK(factories.load() == 0);
  CHECK(state.live.load() == 0);
}

// Issue 12, defect 11: a stop request that arrives after the timer ended the wait with a timeout
// (the resumption still queued) does not turn the timeout into a cancellation.
TEST_CASE("a stop request after a timeout was decided leaves the timeout", "[async][cancel]") {
  using Pool = connpool::AsyncConnectionPool<FakeConn, TrackedFactory>;
  FakeState state;
  std::atomic<int> factories{0};
  Loop loop;
  Spawned spawned;
  std::exception_ptr error;
  Pool pool(TrackedFactory(state, factories), quiet(1), loop.scheduler());
  auto held = pool.acquire_blocking(1s);
  std::stop_source stop;
  spawned.spawn([&]() -> Task<void> {
    try {
      auto h = co_await pool.acquire(5ms, stop.get_token());
    } catch (...) {
      error = std::current_exception();
    }
  });
  REQUIRE(eventually([&] { return loop.scheduled() == 1; }));  // the timer decided: timeout
  stop.request_stop();
  loop.run();
  REQUIRE(spawned.done() == 1);
  REQUIRE(error != nullptr);
  CHECK_THROWS_AS(std::rethrow_exception(error), connpool::AcquireTimeout);
  CHECK(pool.stats().timeouts == 1);
  INFO(what(error));
}

// Issue 12, defect 3: a caller queued for a connect permit before the failure that started the
// connect backoff is woken when the backoff ends, and connects.
TEST_CASE("a waiter queued before a backoff started connects when it ends", "[connect][backoff]") {
  FakeState state;
  Gate third_call;
  Gate third_may_fail;
  std::atomic<int> calls{0};
  state.on_create = [&] {
    if (calls.fetch_add(1) == 2) {
      third_call.open();
      (void)third_may_fail.wait();
    }
  };
  state.factory_failures_left = 3;
  PoolOptions o = quiet(4);
  o.max_connecting = 1;
  o.fail_fast = false;
  connpool::ConnectionPool pool(FakeFactory(state), o);
  REQUIRE_THROWS_AS(pool.acquire(1s), FactoryError);
  REQUIRE_THROWS_AS(pool.acquire(1s), FactoryError);
  std::exception_ptr connect_error;
  std::thread connecting([&] {
    try {
      (void)pool.acquire(10s);
    } catch (...) {
      connect_error = std::current_exception();
    }
  });
  REQUIRE(third_call.wait());
  std::optional<connpool::PooledHandle<FakeConn>> got;
  std::exception_ptr error;
  const auto start = std::chrono::steady_clock::now();
  std::atomic<long> waiting_tid{0};
  std::thread waiting([&] {
    waiting_tid = connpool_test::this_thread_tid();
    try {
      got.emplace(pool.acquire(8s));
    } catch (...) {
      error = std::current_exception();
    }
  });
  REQUIRE(eventually([&] { return pool.stats().pending == 1; }));
  // Asleep until its deadline, not still spinning (a spinning waiter would see the backoff).
  REQUIRE(connpool_test::blocked_eventually(waiting_tid));
  third_may_fail.open();  // the third consecutive failure: a backoff of about 10 ms starts
  connecting.join();
  waiting.join();
  REQUIRE(connect_error != nullptr);
  CHECK_THROWS_AS(std::rethrow_exception(connect_error), FactoryError);
  INFO((error ? what(error) : std::string("no error")));
  REQUIRE(got.has_value());
  // The backoff is about 10 ms; the caller's deadline, 8 s, must not be what ended its wait.
  CHECK(std::chrono::steady_clock::now() - start < 6s);
  CHECK(pool.stats().create_failures == 3);
}
