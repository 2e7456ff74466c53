// connpool - tests: AsyncConnectionPool, coroutines waiting on the shared core
// SPDX-License-Identifier: MIT

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
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
using connpool_test::OwnedRoot;
using connpool_test::ResumptionQueue;
using connpool_test::run_owned;
using connpool_test::Spawned;

namespace {

using Pool = connpool::AsyncConnectionPool<FakeConn, FakeFactory>;

/// WaitPolicy::fifo: several tests check strict arrival order, which the default
/// bounded_barging promises only past its starvation bound.
PoolOptions sized(std::size_t max_size, std::size_t min_size = 0) {
  return PoolOptions{.min_size = min_size,
                     .max_size = max_size,
                     .health_check_interval = 0ms,
                     .wait_policy = connpool::WaitPolicy::fifo};
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

TEST_CASE(
    "AsyncConnectionPool: a coroutine resumed inline by resume() or clear() may destroy "
    "the pool",
    "[async][lifetime][lifecycle]") {
  const bool by_clear = GENERATE(false, true);
  const auto policy = GENERATE(connpool::WaitPolicy::fifo, connpool::WaitPolicy::bounded_barging);
  INFO((by_clear ? "clear()" : "resume()"));
  INFO((policy == connpool::WaitPolicy::fifo ? "fifo" : "bounded_barging"));
  FakeState state;
  PoolOptions o = sized(1);
  o.wait_policy = policy;
  auto pool = std::make_unique<Pool>(FakeFactory{state}, o);  // InlineScheduler
  {
    auto warm = pool->acquire_blocking();  // one idle connection
  }
  pool->pause();
  Spawned spawned;
  bool resumed = false;
  spawned.spawn([&]() -> Task<void> {
    try {
      auto h = co_await pool->acquire(generous_deadline);  // suspends: paused
    } catch (const connpool::PoolCleared&) {
    }
    // Resumed inside resume() or clear(), on this thread: destroy the pool from there.
    resumed = true;
    pool.reset();
  });
  REQUIRE(pool->stats().pending == 1);
  Pool* const raw = pool.get();
  if (by_clear) {
    raw->clear();
  } else {
    raw->resume();
  }
  CHECK(resumed);
  CHECK(pool == nullptr);
  CHECK(spawned.done() == 1);
  CHECK(spawned.errors().empty());
  CHECK(state.live == 0);
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

// --- Schedulers that take a Resumption ----------------------------------------------------------

namespace {

static_assert(connpool::Scheduler<ResumptionQueue::Ref>);
static_assert(connpool::detail::ResumptionScheduler<ResumptionQueue::Ref>);
static_assert(!connpool::detail::ResumptionScheduler<Loop::Ref>);
static_assert(!connpool::detail::ResumptionScheduler<connpool::InlineScheduler>);
static_assert(!connpool::Scheduler<int>);
static_assert(!std::is_copy_constructible_v<connpool::Resumption>);
static_assert(std::is_nothrow_move_constructible_v<connpool::Resumption>);
static_assert(sizeof(connpool::Resumption) == 2 * sizeof(void*));

/// Waits in acquire(timeout); counts its resumption (with a connection or an error) in
/// `resumed`, and itself in `frames` while it lives.
Task<void> wait_in_acquire(Pool& pool,
                           std::chrono::milliseconds timeout,
                           std::atomic<int>& resumed,
                           std::atomic<int>& frames) {
  const Counted alive(frames);
  try {
    auto h = co_await pool.acquire(timeout);
    resumed.fetch_add(1);
  } catch (...) {
    resumed.fetch_add(1);
  }
}

/// Where a drop function saw its coroutine, for the Resumption tests.
std::atomic<int> drops{0};
void count_drop(std::coroutine_handle<>) noexcept {
  drops.fetch_add(1);
}

}  // namespace

TEST_CASE("Resumption: runs once or is dropped once when destroyed unrun", "[async]") {
  drops = 0;
  {
    connpool::Resumption r(std::noop_coroutine(), &count_drop);
    CHECK(static_cast<bool>(r));
    connpool::Resumption moved(std::move(r));
    CHECK_FALSE(static_cast<bool>(r));  // NOLINT(bugprone-use-after-move): moved-from is empty
    CHECK(static_cast<bool>(moved));
  }
  CHECK(drops == 1);
  {
    connpool::Resumption r(std::noop_coroutine(), &count_drop);
    std::move(r).resume();
    CHECK_FALSE(static_cast<bool>(r));  // NOLINT(bugprone-use-after-move)
  }
  CHECK(drops == 1);
  {
    connpool::Resumption r(std::noop_coroutine(), &count_drop);
    r();
  }
  CHECK(drops == 1);
  {
    connpool::Resumption r(std::noop_coroutine(), &count_drop);
    const std::coroutine_handle<> h = std::move(r).release();
    CHECK(h == std::noop_coroutine());
  }
  CHECK(drops == 1);
  {
    connpool::Resumption a(std::noop_coroutine(), &count_drop);
    connpool::Resumption b(std::noop_coroutine(), &count_drop);
    a = std::move(b);  // a's own resumption is dropped
    CHECK(drops == 2);
    a.reset();
    CHECK(drops == 3);
    CHECK_FALSE(static_cast<bool>(a));
  }
  CHECK(drops == 3);
}

TEST_CASE("AsyncConnectionPool: a scheduler taking Resumptions runs them", "[async]") {
  FakeState state;
  ResumptionQueue queue;
  std::atomic<int> resumed{0};
  std::atomic<int> frames{0};
  {
    Pool pool{FakeFactory{state}, sized(1), queue.scheduler()};
    auto held = pool.acquire_blocking();
    OwnedRoot waiting = run_owned(wait_in_acquire(pool, generous_deadline, resumed, frames));
    held.release();
    CHECK(queue.queued() == 1);
    CHECK(resumed == 0);
    queue.run();
    CHECK(resumed == 1);
    CHECK(frames == 0);  // it ran to its end (its root stays, suspended at its end)
    CHECK(pool.stats().idle == 1);
  }
  CHECK(state.live == 0);
}

// A scheduler that destroys its queued resumptions unrun (an event loop shutting down): whatever
// each wait got goes back to the pool (a connection, which the next waiter gets, and whose
// resumption is dropped in turn; a unit of capacity, given up without calling the factory; an
// error, discarded), and no coroutine is resumed. They stay suspended, and may be destroyed.
TEST_CASE("AsyncConnectionPool: a scheduler may destroy Resumptions unrun", "[async][lifetime]") {
  enum class Outcome { connection, capacity, timeout, closed };
  const Outcome outcome =
      GENERATE(Outcome::connection, Outcome::capacity, Outcome::timeout, Outcome::closed);
  CAPTURE(static_cast<int>(outcome));
  constexpr int waiters = 3;
  FakeState state;
  ResumptionQueue queue;
  std::atomic<int> resumed{0};
  std::atomic<int> frames{0};
  {
    Pool pool{FakeFactory{state}, sized(1), queue.scheduler()};
    auto held = pool.acquire_blocking();
    const std::chrono::milliseconds timeout =
        outcome == Outcome::timeout ? std::chrono::milliseconds(20) : generous_deadline;
    std::vector<OwnedRoot> waiting;
    waiting.reserve(waiters);
    for (int i = 0; i < waiters; ++i) {
      waiting.push_back(run_owned(wait_in_acquire(pool, timeout, resumed, frames)));
    }
    REQUIRE(pool.stats().pending == waiters);
    switch (outcome) {
      case Outcome::connection:
        held.release();  // to the first waiter
        break;
      case Outcome::capacity:
        held.invalidate();  // closed: its place goes to the first waiter, to create
        break;
      case Outcome::timeout:
        REQUIRE(eventually([&] { return queue.queued() == waiters; }));
        break;
      case Outcome::closed:
        pool.close();
        break;
    }
    REQUIRE(queue.queued() >= 1);
    queue.drop_all();
    CHECK(resumed == 0);
    CHECK(frames == waiters);
    const connpool::PoolStats s = pool.stats();
    CHECK(s.pending == 0);
    switch (outcome) {
      case Outcome::connection:
        CHECK(s.in_use == 0);
        CHECK(s.idle == 1);
        CHECK(s.acquired == 1 + waiters);
        break;
      case Outcome::capacity:
        CHECK(s.in_use == 0);
        CHECK(s.idle == 0);
        CHECK(state.factory_calls == 1);  // nobody created with the place
        break;
      case Outcome::timeout:
        CHECK(s.timeouts == waiters);
        CHECK(s.in_use == 1);
        break;
      case Outcome::closed:
        CHECK(s.in_use == 1);
        break;
    }
    waiting.clear();
    CHECK(frames == 0);
    CHECK(resumed == 0);
    if (outcome != Outcome::closed) {
      held.release();
      auto again = pool.acquire_blocking(1s);  // the place is free again
      CHECK(again);
    }
    CHECK(queue.queued() == 0);
  }
  CHECK(state.live == 0);
}

// The coroutine is destroyed (its wait abandoned) while its resumption is queued, and the
// resumption is dropped afterwards, or at the same time on another thread: exactly one of them
// frees the acquire, and the connection goes back.
TEST_CASE("AsyncConnectionPool: a coroutine destroyed with its Resumption queued and then dropped",
          "[async][lifetime]") {
  const bool concurrent = GENERATE(false, true);
  CAPTURE(concurrent);
  const int rounds = concurrent ? 200 : 1;
  FakeState state;
  ResumptionQueue queue;
  std::atomic<int> resumed{0};
  std::atomic<int> frames{0};
  {
    Pool pool{FakeFactory{state}, sized(1), queue.scheduler()};
    for (int i = 0; i < rounds; ++i) {
      auto held = pool.acquire_blocking(1s);
      OwnedRoot waiting = run_owned(wait_in_acquire(pool, generous_deadline, resumed, frames));
      held.release();
      REQUIRE(queue.queued() == 1);
      if (concurrent) {
        std::thread dropper([&queue] { queue.drop_all(); });
        waiting.destroy();
        dropper.join();
      } else {
        waiting.destroy();
        CHECK(pool.stats().in_use == 1);  // the grant waits for its resumption
        queue.drop_all();
      }
      REQUIRE(frames == 0);
      REQUIRE(pool.stats().in_use == 0);
      REQUIRE(pool.stats().idle == 1);
    }
    CHECK(resumed == 0);
  }
  CHECK(state.live == 0);
}

// The pool is destroyed while a waiter it granted a connection to has its resumption queued, and
// the resumption is dropped afterwards: the connection is closed (its pool is gone), and nothing
// leaks.
TEST_CASE("AsyncConnectionPool: a Resumption dropped after its pool is destroyed",
          "[async][lifetime]") {
  FakeState state;
  ResumptionQueue queue;
  std::atomic<int> resumed{0};
  std::atomic<int> frames{0};
  std::optional<OwnedRoot> waiting;
  {
    Pool pool{FakeFactory{state}, sized(1), queue.scheduler()};
    auto held = pool.acquire_blocking();
    waiting.emplace(run_owned(wait_in_acquire(pool, generous_deadline, resumed, frames)));
    held.release();
    REQUIRE(queue.queued() == 1);
  }
  CHECK(state.live == 1);  // handed to the waiter, whose resumption is queued
  queue.drop_all();
  CHECK(state.live == 0);
  CHECK(resumed == 0);
  CHECK(frames == 1);
  waiting.reset();
  CHECK(frames == 0);
}
