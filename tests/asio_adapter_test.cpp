// connpool - tests: the Asio adapter (connpool/asio.hpp)
// SPDX-License-Identifier: MIT

// async_acquire with the completion tokens Asio users write (use_awaitable, a callback,
// use_future), its per-operation cancellation, timeouts, the work it keeps on the handler's
// executor, and ExecutorScheduler. Built only when standalone Asio is found (cmake/asio.cmake).
// Catch2's assertions are not thread-safe: what other threads observe goes into atomics or
// into fields read after the thread is joined (or after io_context::run() returned), and is
// checked on the test's thread.

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <asio.hpp>

#include <connpool/asio.hpp>
#include <connpool/async_pool.hpp>
#include <connpool/errors.hpp>
#include <connpool/task.hpp>

#include "catch.hpp"
#include "coro.hpp"
#include "fake_conn.hpp"
#include "sync.hpp"

namespace {

using namespace std::chrono_literals;
using connpool_test::FactoryError;
using connpool_test::FakeConn;
using connpool_test::FakeFactory;
using connpool_test::FakeState;
using connpool_test::Gate;
using connpool_test::OwnedRoot;
using connpool_test::run_owned;

using Pool = connpool::AsyncConnectionPool<FakeConn, FakeFactory>;
using Handle = connpool::PooledHandle<FakeConn>;

/// Options for these tests: no maintenance thread, and a wait that never times out by accident.
connpool::PoolOptions options(
    std::size_t max_size,
    std::chrono::milliseconds acquire_timeout = connpool_test::generous_deadline) {
  connpool::PoolOptions o;
  o.max_size = max_size;
  o.acquire_timeout = acquire_timeout;
  o.health_check_interval = 0ms;
  o.wait_policy = connpool::WaitPolicy::fifo;  // strict arrival order, which tests check
  return o;
}

/// Takes a connection from the test's thread; the pool must have one idle or room for one.
Handle acquire_now(Pool& pool) {
  return connpool::detail::sync_wait(pool.acquire());
}

/// Whether `e` holds an exception of type `E`.
template <class E>
bool holds(const std::exception_ptr& e) {
  if (!e) {
    return false;
  }
  try {
    std::rethrow_exception(e);
  } catch (const E&) {
    return true;
  } catch (...) {
    return false;
  }
}

/// What a completion handler saw. Written by the handler, read by the test once the handler's
/// thread has been joined or its io_context::run() has returned (`calls` excepted: it is read
/// while the handler may run).
struct Outcome {
  std::atomic<int> calls{0};
  std::exception_ptr error;
  Handle handle;
  std::thread::id thread;
  bool on_io = false;    // ran inside the io_context's run()
  bool in_call = false;  // ran while the test was inside a call (async_acquire, emit)
};

/// A completion handler (without an executor of its own) that fills `out`. `in_call` is the
/// test's "inside the call" flag, read by the handler.
auto record(Outcome& out, asio::io_context& io, const std::atomic<bool>& in_call) {
  return [&out, &io, &in_call](std::exception_ptr error, Handle handle) {
    out.error = std::move(error);
    out.handle = std::move(handle);
    out.thread = std::this_thread::get_id();
    out.on_io = io.get_executor().running_in_this_thread();
    out.in_call = in_call.load();
    out.calls.fetch_add(1);
  };
}

/// Runs `io` on `threads` threads (this one included) until it runs out of work.
void run_on(asio::io_context& io, int threads) {
  std::vector<std::thread> others;
  for (int i = 1; i < threads; ++i) {
    others.emplace_back([&io] { io.run(); });
  }
  io.run();
  for (std::thread& t : others) {
    t.join();
  }
}

// --- use_awaitable ----------------------------------------------------------------------------

/// What the borrowing coroutines count.
struct Tally {
  std::atomic<int> started{0};     // coroutines that have asked for their first connection
  std::atomic<int> borrowed{0};    // connections received
  std::atomic<int> off_thread{0};  // completions that did not run on the io_context
  std::atomic<int> finished{0};    // coroutines that ended normally
  std::atomic<int> failed{0};      // coroutines that ended with an exception
};

/// Borrows a connection `rounds` times, holding it across a timer wait each time. In the first
/// round, a coroutine that got a connection keeps it until every coroutine has asked for one, so
/// that the others certainly wait in the pool's queue.
asio::awaitable<void> borrow_loop(
    Pool& pool, asio::io_context& io, Tally& tally, int coroutines, int rounds) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (int round = 0; round < rounds; ++round) {
    if (round == 0) {
      tally.started.fetch_add(1);
    }
    Handle conn = co_await connpool::asio::async_acquire(pool, asio::use_awaitable);
    if (!io.get_executor().running_in_this_thread()) {
      tally.off_thread.fetch_add(1);
    }
    tally.borrowed.fetch_add(1);
    const FakeConn::Hold hold = conn->hold();  // counts a double hold if anyone else is inside
    do {
      timer.expires_after(1ms);
      co_await timer.async_wait(asio::use_awaitable);
    } while (round == 0 && tally.started.load() < coroutines);
  }
}

TEST_CASE(
    "async_acquire: use_awaitable coroutines on 1 and 2 threads share the pool, each "
    "connection held by one at a time, completing on the io_context",
    "[asio][design-4]") {
  const int threads = GENERATE(1, 2);
  const bool asio_scheduler = GENERATE(false, true);
  CAPTURE(threads, asio_scheduler);
  constexpr int coroutines = 40;
  constexpr int rounds = 5;
  constexpr std::size_t max_size = 3;

  FakeState state;
  asio::io_context io(threads);
  std::optional<Pool> pool;  // not movable: built in place, with or without the Asio scheduler
  if (asio_scheduler) {
    pool.emplace(FakeFactory(state), options(max_size), connpool::asio::make_scheduler(io));
  } else {
    pool.emplace(FakeFactory(state), options(max_size));
  }

  Tally tally;
  for (int i = 0; i < coroutines; ++i) {
    asio::co_spawn(io, borrow_loop(*pool, io, tally, coroutines, rounds),
                   [&tally](const std::exception_ptr& e) {
                     (e ? tally.failed : tally.finished).fetch_add(1);
                   });
  }
  run_on(io, threads);

  REQUIRE(tally.failed.load() == 0);
  REQUIRE(tally.finished.load() == coroutines);
  REQUIRE(tally.borrowed.load() == coroutines * rounds);
  REQUIRE(tally.off_thread.load() == 0);
  REQUIRE(state.double_holds.load() == 0);
  REQUIRE(state.max_live.load() <= static_cast<int>(max_size));
  const connpool::PoolStats s = pool->stats();
  REQUIRE(s.acquired == coroutines * rounds);
  REQUIRE(s.waited >= coroutines - max_size);  // the first round forces the others to queue
  REQUIRE(s.timeouts == 0);
  REQUIRE(s.in_use == 0);
  REQUIRE(s.pending == 0);
}

/// What the racing coroutines saw.
struct RaceTally {
  std::atomic<int> served{0};
  std::atomic<int> timed_out{0};
  std::atomic<int> cancelled{0};
  std::atomic<int> other{0};  // any other outcome: a failure
  std::atomic<int> finished{0};
};

/// Each round, one of: a plain acquire, an acquire with a 1 ms timeout, or an acquire cancelled
/// by a timer after 0-2 ms; a served connection is held for 0-1 ms. Runs on a strand of its own,
/// on which the cancellation signal is emitted too (as Asio requires).
asio::awaitable<void> race_loop(Pool& pool, int id, int rounds, RaceTally& tally) {
  const auto executor = co_await asio::this_coro::executor;
  asio::steady_timer hold_timer(executor);
  for (int round = 0; round < rounds; ++round) {
    const int mode = (id + round) % 3;
    // Shared with the emitting timer's handler, which may run after this round.
    const auto signal = std::make_shared<asio::cancellation_signal>();
    asio::steady_timer cancel_timer(executor);
    try {
      Handle conn;
      if (mode == 0) {
        conn = co_await connpool::asio::async_acquire(pool, asio::use_awaitable);
      } else if (mode == 1) {
        conn = co_await connpool::asio::async_acquire(pool, 1ms, asio::use_awaitable);
      } else {
        cancel_timer.expires_after(std::chrono::microseconds((id * 7 + round * 13) % 2000));
        cancel_timer.async_wait([signal](const asio::error_code& ec) {
          if (!ec) {
            signal->emit(asio::cancellation_type::terminal);
          }
        });
        conn = co_await connpool::asio::async_acquire(
            pool, 20s, asio::bind_cancellation_slot(signal->slot(), asio::use_awaitable));
      }
      tally.served.fetch_add(1);
      const FakeConn::Hold hold = conn->hold();
      hold_timer.expires_after(std::chrono::microseconds((id * 11 + round * 3) % 1000));
      co_await hold_timer.async_wait(asio::use_awaitable);
    } catch (const connpool::AcquireTimeout&) {
      tally.timed_out.fetch_add(1);
    } catch (const connpool::AcquireCancelled&) {
      tally.cancelled.fetch_add(1);
    } catch (...) {
      tally.other.fetch_add(1);
    }
  }
  tally.finished.fetch_add(1);
}

TEST_CASE(
    "async_acquire: timeouts and cancellations racing with releases leave the pool consistent",
    "[asio][design-4]") {
  const int threads = GENERATE(1, 2);
  const bool asio_scheduler = GENERATE(false, true);
  CAPTURE(threads, asio_scheduler);
  constexpr int coroutines = 30;
  constexpr int rounds = 30;
  constexpr std::size_t max_size = 2;

  FakeState state;
  asio::io_context io(threads);
  std::optional<Pool> pool;
  if (asio_scheduler) {
    pool.emplace(FakeFactory(state), options(max_size), connpool::asio::make_scheduler(io));
  } else {
    pool.emplace(FakeFactory(state), options(max_size));
  }
  RaceTally tally;
  for (int id = 0; id < coroutines; ++id) {
    asio::co_spawn(asio::make_strand(io), race_loop(*pool, id, rounds, tally), asio::detached);
  }
  run_on(io, threads);

  REQUIRE(tally.finished.load() == coroutines);
  REQUIRE(tally.other.load() == 0);
  REQUIRE(tally.served.load() + tally.timed_out.load() + tally.cancelled.load() ==
          coroutines * rounds);
  REQUIRE(state.double_holds.load() == 0);
  REQUIRE(state.max_live.load() <= static_cast<int>(max_size));
  const connpool::PoolStats s = pool->stats();
  REQUIRE(s.acquired == static_cast<std::uint64_t>(tally.served.load()));
  REQUIRE(s.timeouts == static_cast<std::uint64_t>(tally.timed_out.load()));
  REQUIRE(s.in_use == 0);
  REQUIRE(s.pending == 0);
  // Every connection is still usable: the pool can hand out max_size at once.
  Handle a = acquire_now(*pool);
  Handle b = acquire_now(*pool);
  REQUIRE((a && b));
}

// --- Callbacks --------------------------------------------------------------------------------

TEST_CASE(
    "async_acquire: a callback bound to an io_context runs there, never inside async_acquire, "
    "even when a connection is idle",
    "[asio]") {
  FakeState state;
  asio::io_context io;
  Pool pool{FakeFactory(state), options(2)};
  Outcome out;
  std::atomic<bool> in_call{false};

  SECTION("called from a thread that is not running the io_context") {
    in_call = true;
    connpool::asio::async_acquire(pool, asio::bind_executor(io, record(out, io, in_call)));
    in_call = false;
    REQUIRE(out.calls.load() == 0);  // posted: nothing runs the io_context yet
  }
  SECTION("called from a handler running on the io_context, where dispatch would run it inline") {
    asio::post(io, [&] {
      in_call = true;
      connpool::asio::async_acquire(pool, asio::bind_executor(io, record(out, io, in_call)));
      in_call = false;
    });
  }
  io.run();

  REQUIRE(out.calls.load() == 1);
  REQUIRE_FALSE(out.in_call);
  REQUIRE(out.on_io);
  REQUIRE_FALSE(out.error);
  REQUIRE(out.handle);
  REQUIRE(pool.stats().in_use == 1);
}

TEST_CASE(
    "async_acquire: a callback without an executor runs on the releasing thread, or on Asio's "
    "system executor when the result is known at once",
    "[asio]") {
  FakeState state;
  asio::io_context io;  // only to label the handler's thread; never run
  Pool pool{FakeFactory(state), options(1)};
  Outcome out;
  const std::atomic<bool> in_call{false};

  SECTION("a connection is idle: the handler is posted to the system executor") {
    Gate ran;
    connpool::asio::async_acquire(pool, [&](std::exception_ptr e, Handle h) {
      record(out, io, in_call)(std::move(e), std::move(h));
      ran.open();
    });
    REQUIRE(ran.wait());
    REQUIRE(out.thread != std::this_thread::get_id());
    REQUIRE(out.handle);
  }
  SECTION("the pool is exhausted: the handler runs inside the release that serves it") {
    Handle held = acquire_now(pool);
    connpool::asio::async_acquire(pool, record(out, io, in_call));
    REQUIRE(pool.stats().pending == 1);
    REQUIRE(out.calls.load() == 0);
    held.release();  // the pool resumes the operation here (InlineScheduler), which dispatches
    REQUIRE(out.calls.load() == 1);
    REQUIRE(out.thread == std::this_thread::get_id());
    REQUIRE(out.handle);
  }
  REQUIRE(out.calls.load() == 1);
  REQUIRE_FALSE(out.error);
  REQUIRE_FALSE(out.on_io);
}

// --- use_future -------------------------------------------------------------------------------

TEST_CASE(
    "async_acquire: use_future from a thread that does not run the io_context yields the handle "
    "or throws the error",
    "[asio][design-4][design-7]") {
  FakeState state;
  asio::io_context io;
  Pool pool{FakeFactory(state), options(1), connpool::asio::make_scheduler(io)};
  auto work = asio::make_work_guard(io);
  std::thread runner([&io] { io.run(); });

  {
    std::future<Handle> idle = connpool::asio::async_acquire(pool, asio::use_future);
    Handle h = idle.get();
    REQUIRE(h);

    // Exhausted: the future is not ready while the connection is held (nothing else can
    // complete it), and becomes ready once it is released.
    std::future<Handle> waiting = connpool::asio::async_acquire(pool, asio::use_future);
    REQUIRE(pool.stats().pending == 1);
    REQUIRE(waiting.wait_for(0s) == std::future_status::timeout);

    std::future<Handle> no_wait = connpool::asio::async_acquire(pool, 0ms, asio::use_future);
    REQUIRE_THROWS_AS(no_wait.get(), connpool::AcquireTimeout);

    h.release();
    Handle served = waiting.get();
    REQUIRE(served);
    REQUIRE(pool.stats().in_use == 1);
  }

  pool.close();
  std::future<Handle> closed = connpool::asio::async_acquire(pool, asio::use_future);
  REQUIRE_THROWS_AS(closed.get(), connpool::PoolClosed);

  work.reset();
  runner.join();
}

// --- Cancellation -----------------------------------------------------------------------------

TEST_CASE(
    "async_acquire: a cancellation signal ends a waiting operation with AcquireCancelled and "
    "leaves no waiter in the pool",
    "[asio][design-4]") {
  const asio::cancellation_type type =
      GENERATE(asio::cancellation_type::terminal, asio::cancellation_type::partial,
               asio::cancellation_type::total);
  const bool asio_scheduler = GENERATE(false, true);
  CAPTURE(static_cast<unsigned>(type), asio_scheduler);

  FakeState state;
  asio::io_context io;
  std::optional<Pool> pool;
  if (asio_scheduler) {
    pool.emplace(FakeFactory(state), options(1), connpool::asio::make_scheduler(io));
  } else {
    pool.emplace(FakeFactory(state), options(1));
  }
  Handle held = acquire_now(*pool);
  asio::cancellation_signal signal;
  Outcome out;
  std::atomic<bool> emitting{false};

  connpool::asio::async_acquire(
      *pool, 20s,
      asio::bind_cancellation_slot(signal.slot(),
                                   asio::bind_executor(io, record(out, io, emitting))));
  REQUIRE(pool->stats().pending == 1);
  REQUIRE(signal.slot().has_handler());

  asio::post(io, [&] {
    emitting = true;
    signal.emit(type);
    emitting = false;
  });
  io.run();

  REQUIRE(out.calls.load() == 1);
  REQUIRE(holds<connpool::AcquireCancelled>(out.error));
  REQUIRE_FALSE(out.handle);
  REQUIRE(out.on_io);
  REQUIRE_FALSE(out.in_call);  // not inside emit(): posted from there
  REQUIRE_FALSE(signal.slot().has_handler());
  REQUIRE(pool->stats().pending == 0);

  // The pool is intact: the connection still goes to the next caller.
  held.release();
  REQUIRE(acquire_now(*pool));
}

TEST_CASE(
    "async_acquire: cancelling a use_awaitable coroutine through co_spawn's slot throws "
    "AcquireCancelled at its co_await",
    "[asio][design-4]") {
  FakeState state;
  asio::io_context io;
  Pool pool{FakeFactory(state), options(1)};
  Handle held = acquire_now(pool);
  asio::cancellation_signal signal;
  std::exception_ptr ended;
  bool cancelled = false;

  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        try {
          co_await connpool::asio::async_acquire(pool, asio::use_awaitable);
        } catch (const connpool::AcquireCancelled&) {
          cancelled = true;
        }
      },
      asio::bind_cancellation_slot(signal.slot(),
                                   [&ended](const std::exception_ptr& e) { ended = e; }));
  // Once the coroutine waits in the pool (it runs at the first run_one()), cancel it.
  asio::post(io, [&] { signal.emit(asio::cancellation_type::terminal); });
  io.run();

  REQUIRE(cancelled);
  REQUIRE_FALSE(ended);
  REQUIRE(pool.stats().pending == 0);
}

TEST_CASE("async_acquire: a signal emitted after the completion is ignored", "[asio]") {
  FakeState state;
  asio::io_context io;
  Pool pool{FakeFactory(state), options(1)};
  asio::cancellation_signal signal;
  Outcome out;
  const std::atomic<bool> in_call{false};

  connpool::asio::async_acquire(
      pool, asio::bind_cancellation_slot(signal.slot(),
                                         asio::bind_executor(io, record(out, io, in_call))));
  io.run();
  REQUIRE(out.calls.load() == 1);
  REQUIRE(out.handle);
  REQUIRE_FALSE(signal.slot().has_handler());  // cleared before the handler ran
  signal.emit(asio::cancellation_type::terminal);
  REQUIRE(out.handle);
  REQUIRE(pool.stats().in_use == 1);
}

// --- Timeouts, close, errors ------------------------------------------------------------------

TEST_CASE("async_acquire: a wait that reaches its timeout completes with AcquireTimeout, no sooner",
          "[asio][design-4]") {
  const bool explicit_timeout = GENERATE(true, false);
  CAPTURE(explicit_timeout);
  FakeState state;
  asio::io_context io;
  // Without an explicit timeout, the pool's acquire_timeout (50 ms) applies.
  Pool pool{FakeFactory(state), options(1, explicit_timeout ? 20'000ms : 50ms)};
  Handle held = acquire_now(pool);
  Outcome out;
  const std::atomic<bool> in_call{false};

  const auto start = std::chrono::steady_clock::now();
  if (explicit_timeout) {
    connpool::asio::async_acquire(pool, 50ms, asio::bind_executor(io, record(out, io, in_call)));
  } else {
    connpool::asio::async_acquire(pool, asio::bind_executor(io, record(out, io, in_call)));
  }
  io.run();  // returns once the handler has run: the pending operation is work
  const auto elapsed = std::chrono::steady_clock::now() - start;

  REQUIRE(out.calls.load() == 1);
  REQUIRE(holds<connpool::AcquireTimeout>(out.error));
  REQUIRE_FALSE(out.handle);
  REQUIRE(out.on_io);
  REQUIRE(elapsed >= 50ms);
  REQUIRE(elapsed < 5s);
  try {
    std::rethrow_exception(out.error);
  } catch (const connpool::AcquireTimeout& e) {
    REQUIRE(std::string(e.what()).find("50 ms") != std::string::npos);
  }
  const connpool::PoolStats s = pool.stats();
  REQUIRE(s.timeouts == 1);
  REQUIRE(s.pending == 0);
}

TEST_CASE("async_acquire: close() ends a waiting operation with PoolClosed, and later ones too",
          "[asio][design-7]") {
  FakeState state;
  asio::io_context io;
  Pool pool{FakeFactory(state), options(1)};
  Handle held = acquire_now(pool);
  Outcome waiting;
  Outcome later;
  const std::atomic<bool> in_call{false};

  connpool::asio::async_acquire(pool, asio::bind_executor(io, record(waiting, io, in_call)));
  REQUIRE(pool.stats().pending == 1);
  pool.close();
  connpool::asio::async_acquire(pool, asio::bind_executor(io, record(later, io, in_call)));
  io.run();

  REQUIRE(waiting.calls.load() == 1);
  REQUIRE(holds<connpool::PoolClosed>(waiting.error));
  REQUIRE_FALSE(waiting.handle);
  REQUIRE(later.calls.load() == 1);
  REQUIRE(holds<connpool::PoolClosed>(later.error));
  REQUIRE(waiting.on_io);
  REQUIRE(later.on_io);
}

TEST_CASE(
    "async_acquire: with max_waiters operations waiting, the next completes with PoolOverloaded "
    "at once",
    "[asio][admission]") {
  FakeState state;
  asio::io_context io;
  connpool::PoolOptions o = options(1);
  o.max_waiters = 1;
  Pool pool{FakeFactory(state), o};
  Handle held = acquire_now(pool);
  Outcome waiting;
  Outcome refused;
  std::atomic<bool> in_call{false};

  connpool::asio::async_acquire(pool, asio::bind_executor(io, record(waiting, io, in_call)));
  REQUIRE(pool.stats().pending == 1);
  in_call = true;
  connpool::asio::async_acquire(pool, asio::bind_executor(io, record(refused, io, in_call)));
  in_call = false;
  // Refused without queueing; the completion still runs on the handler's executor, not inline.
  CHECK(pool.stats().pending == 1);
  CHECK(pool.stats().rejected == 1);
  CHECK(refused.calls.load() == 0);
  io.poll();
  REQUIRE(refused.calls.load() == 1);
  REQUIRE(holds<connpool::PoolOverloaded>(refused.error));
  REQUIRE_FALSE(refused.handle);
  REQUIRE(refused.on_io);
  REQUIRE_FALSE(refused.in_call);
  CHECK(waiting.calls.load() == 0);  // the caller that waited first still waits

  held.release();  // served to the waiting operation
  io.run();
  REQUIRE(waiting.calls.load() == 1);
  REQUIRE_FALSE(waiting.error);
  REQUIRE(waiting.handle);
  CHECK(pool.stats().rejected == 1);
}

TEST_CASE(
    "async_acquire: a pool destroyed while an operation waits ends it with PoolClosed through "
    "the ExecutorScheduler",
    "[asio][design-7]") {
  FakeState state;
  asio::io_context io;
  std::optional<Pool> pool;
  pool.emplace(FakeFactory(state), options(1), connpool::asio::make_scheduler(io));
  Handle held = acquire_now(*pool);  // outlives the pool
  Outcome out;
  const std::atomic<bool> in_call{false};

  connpool::asio::async_acquire(*pool, asio::bind_executor(io, record(out, io, in_call)));
  pool.reset();  // closes: the resumption is posted to io, which runs it after the pool is gone
  io.run();

  REQUIRE(out.calls.load() == 1);
  REQUIRE(holds<connpool::PoolClosed>(out.error));
  held.release();  // to a destroyed pool: closes the connection
  REQUIRE(state.live.load() == 0);
}

TEST_CASE("async_acquire: the factory's exception reaches the handler unchanged",
          "[asio][design-3]") {
  FakeState state;
  state.factory_fails = true;
  state.factory_error_code = 7;
  asio::io_context io;
  Pool pool{FakeFactory(state), options(1)};
  Outcome out;
  const std::atomic<bool> in_call{false};

  connpool::asio::async_acquire(pool, asio::bind_executor(io, record(out, io, in_call)));
  io.run();

  REQUIRE(out.calls.load() == 1);
  REQUIRE_FALSE(out.handle);
  try {
    std::rethrow_exception(out.error);
  } catch (const FactoryError& e) {
    REQUIRE(e.code == 7);
  }
  REQUIRE(holds<FactoryError>(out.error));
  REQUIRE(pool.stats().create_failures == 1);
}

TEST_CASE("async_acquire: a negative timeout throws std::invalid_argument from the call",
          "[asio]") {
  FakeState state;
  asio::io_context io;
  Pool pool{FakeFactory(state), options(1)};
  Outcome out;
  const std::atomic<bool> in_call{false};

  REQUIRE_THROWS_AS(
      connpool::asio::async_acquire(pool, -1ms, asio::bind_executor(io, record(out, io, in_call))),
      std::invalid_argument);
  io.run();
  REQUIRE(out.calls.load() == 0);
  REQUIRE(pool.stats().acquired == 0);
}

// --- Work -------------------------------------------------------------------------------------

TEST_CASE("async_acquire: io_context::run() does not return while an operation waits in the pool",
          "[asio]") {
  FakeState state;
  asio::io_context io;
  Pool pool{FakeFactory(state), options(1)};
  Handle held = acquire_now(pool);
  Outcome out;
  const std::atomic<bool> in_call{false};

  connpool::asio::async_acquire(pool, asio::bind_executor(io, record(out, io, in_call)));
  REQUIRE(pool.stats().pending == 1);

  std::atomic<bool> run_returned{false};
  std::thread runner([&] {
    io.run();
    run_returned = true;
  });
  const std::thread::id runner_id = runner.get_id();
  // Gives run() the time to return, were the waiting operation not counted as work. Correct
  // behaviour does not depend on it: run() must not return before the release below.
  std::this_thread::sleep_for(50ms);
  REQUIRE_FALSE(run_returned.load());
  REQUIRE(out.calls.load() == 0);

  held.release();  // from this thread: serves the operation, whose handler is posted to io
  runner.join();   // run() returns once the handler has run

  REQUIRE(run_returned.load());
  REQUIRE(out.calls.load() == 1);
  REQUIRE(out.thread == runner_id);
  REQUIRE(out.handle);
}

TEST_CASE(
    "async_acquire: an io_context destroyed before it ran the completion gives the connection "
    "back",
    "[asio]") {
  FakeState state;
  Pool pool{FakeFactory(state), options(1)};
  Outcome out;
  const std::atomic<bool> in_call{false};
  {
    asio::io_context io;
    connpool::asio::async_acquire(pool, asio::bind_executor(io, record(out, io, in_call)));
    REQUIRE(pool.stats().in_use == 1);  // served at once; its completion is posted to io
  }  // never run: destroying io destroys the completion, and the handle in it
  REQUIRE(out.calls.load() == 0);
  REQUIRE(pool.stats().in_use == 0);
  REQUIRE(acquire_now(pool));
}

// --- ExecutorScheduler -----------------------------------------------------------------------

/// A fire-and-forget coroutine: starts at once and frees itself at the end.
struct Detached {
  struct promise_type {
    Detached get_return_object() noexcept { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }
  };
};

/// Where a connpool coroutine found itself after `co_await pool.acquire()`.
struct Resumption {
  std::thread::id thread;
  bool on_io = false;
  bool got = false;
};

connpool::Task<> borrow_once(Pool& pool, asio::io_context& io, Resumption& r) {
  Handle h = co_await pool.acquire();
  r.thread = std::this_thread::get_id();
  r.on_io = io.get_executor().running_in_this_thread();
  r.got = static_cast<bool>(h);
}

Detached run_detached(connpool::Task<> task, Gate& done) {
  co_await std::move(task);
  done.open();
}

TEST_CASE(
    "ExecutorScheduler: a connpool coroutine released from another thread resumes on the "
    "io_context's thread",
    "[asio][design-4]") {
  FakeState state;
  asio::io_context io;
  Pool pool{FakeFactory(state), options(1), connpool::asio::make_scheduler(io.get_executor())};
  // The scheduler keeps no work of its own: with nothing posted, run() returns at once.
  REQUIRE(io.run() == 0);
  io.restart();

  Handle held = acquire_now(pool);
  auto work = asio::make_work_guard(io);
  std::thread runner([&io] { io.run(); });
  const std::thread::id runner_id = runner.get_id();

  Resumption r;
  Gate done;
  asio::post(io, [&] { run_detached(borrow_once(pool, io, r), done); });
  REQUIRE(connpool_test::eventually([&] { return pool.stats().pending == 1; }));
  held.release();  // on this thread: the pool hands over here and posts the resumption to io
  REQUIRE(done.wait());
  work.reset();
  runner.join();

  REQUIRE(r.got);
  REQUIRE(r.on_io);
  REQUIRE(r.thread == runner_id);
  REQUIRE(pool.stats().in_use == 0);
}

using IoScheduler = connpool::asio::ExecutorScheduler<asio::io_context::executor_type>;
static_assert(connpool::Scheduler<IoScheduler>);
static_assert(connpool::Scheduler<connpool::asio::ExecutorScheduler<asio::any_io_executor>>);
static_assert(
    std::is_same_v<decltype(connpool::asio::make_scheduler(std::declval<asio::io_context&>())),
                   IoScheduler>);
static_assert(std::is_same_v<decltype(connpool::asio::make_scheduler(
                                 std::declval<asio::io_context::executor_type>())),
                             IoScheduler>);

TEST_CASE("ExecutorScheduler: make_scheduler of an execution context uses its executor", "[asio]") {
  asio::io_context io;
  REQUIRE(connpool::asio::make_scheduler(io).get_executor() == io.get_executor());
}

// --- Shutting an io_context down with operations waiting ---------------------------------------

/// Counts live instances, to check that a handler (or a coroutine frame) was destroyed.
struct LiveCount {
  explicit LiveCount(std::atomic<int>& n) : live(&n) { live->fetch_add(1); }
  LiveCount(const LiveCount& other) : live(other.live) { live->fetch_add(1); }
  LiveCount& operator=(const LiveCount&) = delete;
  ~LiveCount() { live->fetch_sub(1); }
  std::atomic<int>* live;
};

// Issue 12, defect 2: a server stops and destroys its io_context while a coroutine (or a callback
// operation) waits in async_acquire. The operation leaves the pool's queue and goes with the
// context, its handler destroyed unrun, as Asio's own operations go; when the held connection
// comes back later, nothing completes on the dead context.
TEST_CASE("async_acquire: an io_context stopped and destroyed while an operation waits",
          "[asio][lifetime]") {
  const bool awaitable = GENERATE(true, false);
  const bool inline_scheduler = GENERATE(true, false);
  CAPTURE(awaitable, inline_scheduler);
  FakeState state;
  std::atomic<int> live{0};
  std::atomic<int> completed{0};
  std::optional<asio::io_context> io(std::in_place);
  std::optional<Pool> pool;
  if (inline_scheduler) {
    pool.emplace(FakeFactory(state), options(1));
  } else {
    pool.emplace(FakeFactory(state), options(1), connpool::asio::make_scheduler(*io));
  }
  Handle held = acquire_now(*pool);
  if (awaitable) {
    asio::co_spawn(
        *io,
        [&]() -> asio::awaitable<void> {
          const LiveCount alive(live);
          Handle h = co_await connpool::asio::async_acquire(*pool, asio::use_awaitable);
          completed.fetch_add(1);
        },
        asio::detached);
  } else {
    connpool::asio::async_acquire(
        *pool,
        asio::bind_executor(*io, [&completed, alive = LiveCount(live)](std::exception_ptr, Handle) {
          completed.fetch_add(1);
        }));
  }
  io->poll();  // runs the coroutine until it waits in the pool
  REQUIRE(pool->stats().pending == 1);
  REQUIRE(live.load() == 1);
  io->stop();
  io.reset();  // destroyed with the operation waiting
  CHECK(live.load() == 0);
  CHECK(pool->stats().pending == 0);
  held.release();  // nobody waits: the connection goes back to the idle set
  CHECK(completed.load() == 0);
  CHECK(pool->stats().idle == 1);
  CHECK(pool->stats().in_use == 0);
  pool.reset();
  CHECK(state.live.load() == 0);
}

// The same when the pool has already handed the connection over and the operation's completion
// is on its way to the context: the context waits for it to be posted, then destroys it unrun, and
// the connection goes back.
TEST_CASE(
    "async_acquire: an io_context destroyed with a completion queued gives the connection "
    "back",
    "[asio][lifetime]") {
  FakeState state;
  std::atomic<int> live{0};
  std::atomic<int> completed{0};
  std::optional<asio::io_context> io(std::in_place);
  Pool pool(FakeFactory(state), options(1));
  Handle held = acquire_now(pool);
  connpool::asio::async_acquire(
      pool, asio::bind_executor(*io, [&completed, alive = LiveCount(live)](
                                         std::exception_ptr, Handle) { completed.fetch_add(1); }));
  REQUIRE(pool.stats().pending == 1);
  held.release();  // granted: the completion is posted to io, which nobody runs
  REQUIRE(pool.stats().in_use == 1);
  io.reset();
  CHECK(completed.load() == 0);
  CHECK(live.load() == 0);
  CHECK(pool.stats().in_use == 0);
  CHECK(pool.stats().idle == 1);
}

// --- Destroying an io_context with connpool resumptions queued -------------------------------

/// A plain connpool coroutine that waits for a connection; `frames` counts it while it lives.
connpool::Task<> wait_in_acquire(Pool& pool, std::atomic<int>& resumed, std::atomic<int>& frames) {
  const LiveCount alive(frames);
  Handle h = co_await pool.acquire();
  resumed.fetch_add(1);
}

// The pool hands a connection to a coroutine whose ExecutorScheduler posts its resumption to an
// io_context, which is then destroyed without running it. The resumption is dropped: the
// connection goes back to the pool at once, the coroutine is never resumed, and destroying it
// afterwards is safe. AddressSanitizer checks that no frame and no connection leaks.
TEST_CASE(
    "ExecutorScheduler: an io_context destroyed with a coroutine's resumption queued gives the "
    "connection back",
    "[asio][lifetime]") {
  FakeState state;
  std::atomic<int> resumed{0};
  std::atomic<int> frames{0};
  {
    std::optional<asio::io_context> io(std::in_place);
    Pool pool(FakeFactory(state), options(1), connpool::asio::make_scheduler(*io));
    Handle held = acquire_now(pool);
    OwnedRoot waiting = run_owned(wait_in_acquire(pool, resumed, frames));
    REQUIRE(pool.stats().pending == 1);
    held.release();  // granted on this thread: the resumption is posted to io, which never runs
    REQUIRE(pool.stats().in_use == 1);
    io.reset();
    CHECK(resumed.load() == 0);
    const connpool::PoolStats s = pool.stats();
    REQUIRE(s.in_use == 0);
    REQUIRE(s.idle == 1);
    CHECK(s.pending == 0);
    CHECK(frames.load() == 1);  // still suspended in its acquire
    waiting.destroy();
    CHECK(frames.load() == 0);
    CHECK(resumed.load() == 0);
    Handle again = acquire_now(pool);
    CHECK(again->id() == 1);
  }
  CHECK(state.created.load() == 1);
  CHECK(state.live.load() == 0);
}

// The same with several coroutines waiting: dropping the first one's resumption gives the
// connection back to the next waiter, whose resumption is posted to the io_context being destroyed
// and dropped in turn, and so on down the queue.
TEST_CASE(
    "ExecutorScheduler: an io_context destroyed with resumptions queued hands the connection down "
    "the queue and drops each",
    "[asio][lifetime]") {
  constexpr int waiters = 4;
  FakeState state;
  std::atomic<int> resumed{0};
  std::atomic<int> frames{0};
  {
    std::optional<asio::io_context> io(std::in_place);
    Pool pool(FakeFactory(state), options(1), connpool::asio::make_scheduler(*io));
    Handle held = acquire_now(pool);
    std::vector<OwnedRoot> waiting;
    waiting.reserve(waiters);
    for (int i = 0; i < waiters; ++i) {
      waiting.push_back(run_owned(wait_in_acquire(pool, resumed, frames)));
    }
    REQUIRE(pool.stats().pending == waiters);
    held.release();
    REQUIRE(pool.stats().pending == waiters - 1);
    io.reset();
    CHECK(resumed.load() == 0);
    const connpool::PoolStats s = pool.stats();
    CHECK(s.pending == 0);
    CHECK(s.in_use == 0);
    CHECK(s.idle == 1);
    CHECK(s.acquired == 1 + waiters);  // each was handed the connection, and gave it back
    CHECK(s.released == 1 + waiters);
    CHECK(frames.load() == waiters);
    waiting.clear();
    CHECK(frames.load() == 0);
  }
  CHECK(state.created.load() == 1);
  CHECK(state.live.load() == 0);
}

// The coroutine is destroyed first (its wait is abandoned while its resumption is queued), then
// the io_context: the dropped resumption finds the wait abandoned, gives the connection back and
// frees what is left of the acquire.
TEST_CASE(
    "ExecutorScheduler: a coroutine destroyed with its resumption queued and then its io_context",
    "[asio][lifetime]") {
  FakeState state;
  std::atomic<int> resumed{0};
  std::atomic<int> frames{0};
  {
    std::optional<asio::io_context> io(std::in_place);
    Pool pool(FakeFactory(state), options(1), connpool::asio::make_scheduler(*io));
    Handle held = acquire_now(pool);
    OwnedRoot waiting = run_owned(wait_in_acquire(pool, resumed, frames));
    held.release();
    REQUIRE(pool.stats().in_use == 1);
    waiting.destroy();
    CHECK(frames.load() == 0);
    CHECK(pool.stats().in_use == 1);  // the grant waits for its resumption
    io.reset();
    CHECK(resumed.load() == 0);
    CHECK(pool.stats().in_use == 0);
    CHECK(pool.stats().idle == 1);
  }
  CHECK(state.live.load() == 0);
}

// async_acquire on a pool whose own scheduler posts to the io_context: the pool has handed the
// operation its connection and the resumption is queued when the context is destroyed. The
// context's shutdown destroys the operation, and the dropped resumption gives the connection back.
// With the pool's scheduler on another io_context, destroyed first, the operation is destroyed
// with its own context later.
TEST_CASE(
    "async_acquire: an io_context destroyed with the pool's resumption of the operation queued",
    "[asio][lifetime]") {
  const bool same_context = GENERATE(true, false);
  CAPTURE(same_context);
  FakeState state;
  std::atomic<int> live{0};
  std::atomic<int> completed{0};
  {
    std::optional<asio::io_context> io(std::in_place);
    std::optional<asio::io_context> pool_io;
    if (!same_context) {
      pool_io.emplace();
    }
    Pool pool(FakeFactory(state), options(1),
              connpool::asio::make_scheduler(same_context ? *io : *pool_io));
    Handle held = acquire_now(pool);
    connpool::asio::async_acquire(
        pool,
        asio::bind_executor(*io, [&completed, alive = LiveCount(live)](std::exception_ptr, Handle) {
          completed.fetch_add(1);
        }));
    REQUIRE(pool.stats().pending == 1);
    held.release();  // granted: the pool's resumption of the operation is posted
    REQUIRE(pool.stats().in_use == 1);
    pool_io.reset();
    io.reset();
    CHECK(completed.load() == 0);
    CHECK(live.load() == 0);
    CHECK(pool.stats().in_use == 0);
    CHECK(pool.stats().idle == 1);
  }
  CHECK(state.live.load() == 0);
}

}  // namespace
