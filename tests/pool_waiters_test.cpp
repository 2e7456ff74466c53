// connpool - tests: an exhausted pool: FIFO waiters, direct hand-off, timeouts, cancellation
// SPDX-License-Identifier: MIT

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "fake_conn.hpp"
#include "sync.hpp"
#include "waiter.hpp"

using namespace std::chrono_literals;
using connpool::PoolOptions;
using connpool::WaitPolicy;
using connpool_test::eventually;
using connpool_test::FakeConn;
using connpool_test::FakeFactory;
using connpool_test::FakeState;
using connpool_test::generous_deadline;
using connpool_test::Outcome;

namespace {

using Pool = connpool::ConnectionPool<FakeConn, FakeFactory>;
using Waiter = connpool_test::Waiter<Pool>;

/// WaitPolicy::fifo throughout: this file checks strict arrival order and direct hand-off
/// (DESIGN 4), which the default bounded_barging promises only past its starvation bound.
PoolOptions one_connection() {
  return PoolOptions{.max_size = 1, .health_check_interval = 0ms, .wait_policy = WaitPolicy::fifo};
}

/// Starts a waiter and returns once the pool counts it as pending, so waiters queue in the
/// order they were started.
std::unique_ptr<Waiter> start_waiter(Pool& pool,
                                     std::chrono::milliseconds timeout = generous_deadline,
                                     std::optional<std::stop_token> token = std::nullopt) {
  const std::size_t before = pool.stats().pending;
  auto w = std::make_unique<Waiter>(pool, timeout, std::move(token));
  const bool queued = eventually([&] { return pool.stats().pending == before + 1; });
  REQUIRE(queued);
  return w;
}

/// Whether `w` is still blocked in acquire().
bool still_waiting(const Waiter& w) {
  return w.outcome() == Outcome::running;
}

}  // namespace

TEST_CASE("ConnectionPool: a released connection is handed to the longest waiter",
          "[pool][waiters][design-4]") {
  // DESIGN 4: "callers wait in FIFO order, and a released connection is handed straight to the
  // longest waiter (no barging)."
  FakeState state;
  Pool pool{FakeFactory{state}, one_connection()};
  auto h = pool.acquire();
  const int id = h->id();

  auto w1 = start_waiter(pool);
  auto w2 = start_waiter(pool);
  auto w3 = start_waiter(pool);
  CHECK(pool.stats().pending == 3);

  h.release();
  // No barging: the releasing thread cannot take the connection back, it belongs to w1.
  CHECK_FALSE(pool.try_acquire().has_value());
  REQUIRE(w1->wait_for_outcome(Outcome::got));
  CHECK(w1->id() == id);
  CHECK(still_waiting(*w2));
  CHECK(still_waiting(*w3));
  CHECK(pool.stats().pending == 2);

  w1->let_go();
  REQUIRE(w2->wait_for_outcome(Outcome::got));
  CHECK(w2->id() == id);
  CHECK(still_waiting(*w3));
  CHECK_FALSE(pool.try_acquire().has_value());

  w2->let_go();
  REQUIRE(w3->wait_for_outcome(Outcome::got));
  CHECK(w3->id() == id);
  w3->let_go();
  REQUIRE(w3->wait_released());

  const auto s = pool.stats();
  CHECK(s.pending == 0);
  CHECK(s.idle == 1);
  CHECK(s.created == 1);  // one connection went round: every hand-off reused it
  CHECK(s.acquired == 4);
  CHECK(s.reused == 3);
  CHECK(s.waited == 3);
  CHECK(s.timeouts == 0);
  CHECK(s.total_wait_time > 0ns);
  CHECK(s.max_wait_time > 0ns);
  CHECK(s.max_wait_time <= s.total_wait_time);
  CHECK(s.avg_wait_time_ms() > 0.0);
}

TEST_CASE("ConnectionPool: a newcomer does not barge ahead of the waiters",
          "[pool][waiters][design-4]") {
  FakeState state;
  Pool pool{FakeFactory{state}, one_connection()};
  auto h = pool.acquire();
  auto w1 = start_waiter(pool);
  h.release();
  // Even an acquire that would take the connection at once must not get it: it is w1's.
  CHECK_THROWS_AS((void)pool.acquire(0ms), connpool::AcquireTimeout);
  CHECK_THROWS_AS((void)pool.acquire(20ms), connpool::AcquireTimeout);
  REQUIRE(w1->wait_for_outcome(Outcome::got));
  CHECK(pool.stats().timeouts == 2);
}

TEST_CASE("ConnectionPool: a connection freed by invalidate() goes to the longest waiter",
          "[pool][waiters][design-4]") {
  FakeState state;
  Pool pool{FakeFactory{state}, one_connection()};
  auto h = pool.acquire();
  const int old_id = h->id();
  auto w1 = start_waiter(pool);
  auto w2 = start_waiter(pool);

  h.invalidate();
  CHECK_FALSE(pool.try_acquire().has_value());  // the freed place belongs to w1
  REQUIRE(w1->wait_for_outcome(Outcome::got));
  CHECK(w1->id() != old_id);  // a new connection, opened for w1
  CHECK(still_waiting(*w2));
  w1->let_go();
  REQUIRE(w2->wait_for_outcome(Outcome::got));
  CHECK(w2->id() == w1->id());
  CHECK(pool.stats().created == 2);
  CHECK(state.closed == 1);
}

TEST_CASE("ConnectionPool: a place freed by detach() goes to the longest waiter",
          "[pool][waiters][design-4]") {
  FakeState state;
  Pool pool{FakeFactory{state}, one_connection()};
  auto h = pool.acquire();
  auto w1 = start_waiter(pool);
  FakeConn mine = h.detach();
  REQUIRE(w1->wait_for_outcome(Outcome::got));
  CHECK(w1->id() != mine.id());
  CHECK(pool.stats().detached == 1);
}

TEST_CASE("ConnectionPool: a connection closed on release is replaced for the waiter",
          "[pool][waiters][design-4]") {
  // The waiter must not be left waiting when the connection it would get is closed instead.
  FakeState state;
  Pool pool{FakeFactory{state}, one_connection()};
  auto h = pool.acquire();
  auto w1 = start_waiter(pool);
  state.reset_throws = true;  // reset fails: the connection is closed instead of returned
  h.release();
  REQUIRE(w1->wait_for_outcome(Outcome::got));
  CHECK(w1->id() == 2);
  CHECK(state.closed == 1);
}

TEST_CASE("ConnectionPool: acquire(timeout) throws AcquireTimeout once the timeout has passed",
          "[pool][waiters][design-4]") {
  // DESIGN 4: "Timeout throws AcquireTimeout whose message gives the timeout and the pool's
  // counts."
  FakeState state;
  Pool pool{FakeFactory{state}, one_connection()};
  auto h = pool.acquire();
  const auto start = std::chrono::steady_clock::now();
  std::string message;
  try {
    (void)pool.acquire(50ms);
    FAIL("acquire did not time out");
  } catch (const connpool::AcquireTimeout& e) {
    message = e.what();
  }
  const auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK(elapsed >= 50ms);
  CHECK(elapsed < generous_deadline);
  INFO("message: " << message);
  CHECK(message.find("50 ms") != std::string::npos);
  CHECK(message.find("in use 1") != std::string::npos);

  auto s = pool.stats();
  CHECK(s.timeouts == 1);
  CHECK(s.waited == 1);  // it queued, then timed out
  CHECK(s.pending == 0);
  CHECK(s.acquired == 1);
  CHECK(s.total_wait_time == 0ns);  // wait times cover successful waits only
  CHECK(s.max_wait_time == 0ns);

  // The timed-out waiter left the queue: the next release goes to the idle set.
  h.release();
  s = pool.stats();
  CHECK(s.idle == 1);
  CHECK(pool.try_acquire().has_value());
}

TEST_CASE("ConnectionPool: acquire() waits for options.acquire_timeout",
          "[pool][waiters][design-4]") {
  FakeState state;
  Pool pool{FakeFactory{state}, PoolOptions{.max_size = 1,
                                            .acquire_timeout = 40ms,
                                            .health_check_interval = 0ms,
                                            .wait_policy = WaitPolicy::fifo}};
  auto h = pool.acquire();
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_AS((void)pool.acquire(), connpool::AcquireTimeout);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK(elapsed >= 40ms);
  CHECK(elapsed < generous_deadline);
  CHECK(pool.stats().timeouts == 1);
}

TEST_CASE("ConnectionPool: a zero timeout fails at once when nothing is free",
          "[pool][waiters][design-4]") {
  // options.h: "0 means do not wait: fail with AcquireTimeout at once when none is free".
  FakeState state;
  Pool pool{FakeFactory{state}, PoolOptions{.max_size = 1,
                                            .acquire_timeout = 0ms,
                                            .health_check_interval = 0ms,
                                            .wait_policy = WaitPolicy::fifo}};
  auto h = pool.acquire();  // a free place: succeeds without waiting
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_AS((void)pool.acquire(), connpool::AcquireTimeout);
  CHECK_THROWS_AS((void)pool.acquire(0ms), connpool::AcquireTimeout);
  CHECK(std::chrono::steady_clock::now() - start < generous_deadline);
  CHECK(pool.stats().timeouts == 2);
  CHECK(pool.stats().pending == 0);
}

TEST_CASE("ConnectionPool: a negative timeout is rejected with std::invalid_argument",
          "[pool][waiters][design-4]") {
  FakeState state;
  Pool pool{FakeFactory{state}, one_connection()};
  std::stop_source source;
  CHECK_THROWS_AS((void)pool.acquire(-1ms), std::invalid_argument);
  CHECK_THROWS_AS((void)pool.acquire(-1ms, source.get_token()), std::invalid_argument);
  CHECK_THROWS_AS((void)pool.acquire(std::chrono::duration<double>(-0.5)), std::invalid_argument);
  CHECK(pool.stats().acquired == 0);
  // DESIGN (rules): "Bad input gets a clear exception that names the problem".
  std::string message;
  try {
    (void)pool.acquire(-5ms);
  } catch (const std::invalid_argument& e) {
    message = e.what();
  }
  INFO("message: " << message);
  CHECK(message.find("timeout") != std::string::npos);
}

TEST_CASE("ConnectionPool: acquire accepts any duration type", "[pool][waiters][design-4]") {
  FakeState state;
  Pool pool{
      FakeFactory{state},
      PoolOptions{.max_size = 2, .health_check_interval = 0ms, .wait_policy = WaitPolicy::fifo}};
  auto a = pool.acquire(std::chrono::duration<double>(0.25));
  auto b = pool.acquire(std::chrono::hours(1));
  CHECK_THROWS_AS((void)pool.acquire(std::chrono::microseconds(10)), connpool::AcquireTimeout);
  // A huge timeout must not overflow into an immediate failure.
  auto w = start_waiter(pool, std::chrono::milliseconds::max());
  a.release();
  REQUIRE(w->wait_for_outcome(Outcome::got));
}

TEST_CASE("ConnectionPool: a waiter that times out leaves the queue without disturbing it",
          "[pool][waiters][design-4]") {
  FakeState state;
  Pool pool{FakeFactory{state}, one_connection()};
  auto h = pool.acquire();
  auto w1 = start_waiter(pool);
  auto w2 = start_waiter(pool, 100ms);
  auto w3 = start_waiter(pool);
  REQUIRE(w2->wait_for_outcome(Outcome::timed_out));
  CHECK(w2->elapsed() >= 100ms);
  CHECK(pool.stats().pending == 2);

  h.release();
  REQUIRE(w1->wait_for_outcome(Outcome::got));
  CHECK(still_waiting(*w3));
  w1->let_go();
  REQUIRE(w3->wait_for_outcome(Outcome::got));
  CHECK(pool.stats().timeouts == 1);
}

TEST_CASE("ConnectionPool: a stop request ends a wait with AcquireCancelled",
          "[pool][waiters][design-4]") {
  // DESIGN 4: "A stop request throws AcquireCancelled."
  FakeState state;
  Pool pool{FakeFactory{state}, one_connection()};
  auto h = pool.acquire();
  std::stop_source source;
  auto w = start_waiter(pool, generous_deadline, source.get_token());
  CHECK(still_waiting(*w));
  source.request_stop();
  REQUIRE(w->wait_for_outcome(Outcome::cancelled));
  CHECK(w->elapsed() < generous_deadline);
  auto s = pool.stats();
  CHECK(s.pending == 0);
  CHECK(s.timeouts == 0);
  // The cancelled waiter is gone: the connection goes back to the idle set.
  h.release();
  s = pool.stats();
  CHECK(s.idle == 1);
  CHECK(s.in_use == 0);
}

TEST_CASE("ConnectionPool: a cancelled waiter leaves the queue without disturbing it",
          "[pool][waiters][design-4]") {
  FakeState state;
  Pool pool{FakeFactory{state}, one_connection()};
  auto h = pool.acquire();
  std::stop_source source;
  auto w1 = start_waiter(pool);
  auto w2 = start_waiter(pool, generous_deadline, source.get_token());
  auto w3 = start_waiter(pool);
  source.request_stop();
  REQUIRE(w2->wait_for_outcome(Outcome::cancelled));
  h.release();
  REQUIRE(w1->wait_for_outcome(Outcome::got));
  CHECK(still_waiting(*w3));
  w1->let_go();
  REQUIRE(w3->wait_for_outcome(Outcome::got));
}

TEST_CASE("ConnectionPool: a stop already requested fails a wait at once, not at the timeout",
          "[pool][waiters][design-4]") {
  FakeState state;
  Pool pool{FakeFactory{state}, one_connection()};
  auto h = pool.acquire();
  std::stop_source source;
  source.request_stop();
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_AS((void)pool.acquire(generous_deadline, source.get_token()),
                  connpool::AcquireCancelled);
  CHECK(std::chrono::steady_clock::now() - start < generous_deadline);
  CHECK(pool.stats().pending == 0);
}

TEST_CASE("ConnectionPool: a stop request does not matter when no wait is needed",
          "[pool][waiters][design-4]") {
  // The token cancels waiting; a connection that is available at once is still handed out.
  FakeState state;
  Pool pool{
      FakeFactory{state},
      PoolOptions{.max_size = 2, .health_check_interval = 0ms, .wait_policy = WaitPolicy::fifo}};
  std::stop_source source;
  source.request_stop();
  auto created = pool.acquire(1s, source.get_token());  // below max_size: opens one
  CHECK(created);
  auto second = pool.acquire(1s, source.get_token());
  const int id = second->id();
  second.release();
  auto reused = pool.acquire(1s, source.get_token());  // idle
  REQUIRE(reused);
  CHECK(reused->id() == id);
}

TEST_CASE("ConnectionPool: a stop token that never fires behaves like a plain timeout",
          "[pool][waiters][design-4]") {
  FakeState state;
  Pool pool{FakeFactory{state}, one_connection()};
  auto h = pool.acquire();
  std::stop_source source;
  CHECK_THROWS_AS((void)pool.acquire(30ms, source.get_token()), connpool::AcquireTimeout);
  CHECK_THROWS_AS((void)pool.acquire(30ms, std::stop_token{}), connpool::AcquireTimeout);
  std::stop_source later;
  auto w = start_waiter(pool, generous_deadline, later.get_token());
  h.release();
  REQUIRE(w->wait_for_outcome(Outcome::got));
}

TEST_CASE("ConnectionPool: try_acquire never waits", "[pool][waiters][design-4]") {
  // DESIGN: "try_acquire() never waits for another holder".
  FakeState state;
  Pool pool{FakeFactory{state}, PoolOptions{.max_size = 1,
                                            .acquire_timeout = 30'000ms,
                                            .health_check_interval = 0ms,
                                            .wait_policy = WaitPolicy::fifo}};
  auto first = pool.try_acquire();  // below max_size: opens one
  REQUIRE(first.has_value());
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) {
    CHECK_FALSE(pool.try_acquire().has_value());
  }
  CHECK(std::chrono::steady_clock::now() - start < generous_deadline);
  const auto s = pool.stats();
  CHECK(s.waited == 0);
  CHECK(s.timeouts == 0);
  CHECK(s.pending == 0);
  CHECK(s.acquired == 1);
}

TEST_CASE("ConnectionPool: try_acquire does not jump the queue", "[pool][waiters][design-4]") {
  // With callers waiting, even a pool below max_size keeps its free place for them.
  FakeState state;
  Pool pool{FakeFactory{state}, one_connection()};
  auto h = pool.acquire();
  auto w = start_waiter(pool);
  CHECK_FALSE(pool.try_acquire().has_value());
  h.invalidate();  // frees the place: it is w's
  CHECK_FALSE(pool.try_acquire().has_value());
  REQUIRE(w->wait_for_outcome(Outcome::got));
}
