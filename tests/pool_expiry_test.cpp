// connpool - tests: max_lifetime, max_idle, prune() and refill, driven by a ManualClock
// SPDX-License-Identifier: MIT

#include <chrono>
#include <vector>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "fake_conn.hpp"
#include "sync.hpp"
#include "waiter.hpp"

using namespace std::chrono_literals;
using connpool::PooledHandle;
using connpool::PoolOptions;
using connpool_test::FakeConn;
using connpool_test::FakeFactory;
using connpool_test::FakeState;
using connpool_test::generous_deadline;
using connpool_test::Outcome;

namespace {

struct ExpiryTag {};
using Clock = connpool::ManualClock<ExpiryTag>;
using Pool = connpool::ConnectionPool<FakeConn, FakeFactory, Clock>;

/// No background thread and no pings, so only the expiry rules act.
PoolOptions expiry(std::size_t min_size,
                   std::size_t max_size,
                   std::chrono::milliseconds max_idle,
                   std::chrono::milliseconds max_lifetime) {
  return PoolOptions{.min_size = min_size,
                     .max_size = max_size,
                     .max_idle = max_idle,
                     .max_lifetime = max_lifetime,
                     .health_check_interval = 0ms,
                     .validate_on_acquire = false};
}

}  // namespace

// --- max_lifetime ------------------------------------------------------------------------------

TEST_CASE("ConnectionPool: acquire never hands out a connection older than max_lifetime",
          "[pool][expiry][design-6][design-9]") {
  // DESIGN 6: "Expired connections are closed, never handed out: one older than max_lifetime".
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, expiry(0, 2, 0ms, 10min)};
  pool.acquire().release();  // connection 1, born at t = 0

  Clock::advance(9min + 59s);
  auto h = pool.acquire();
  CHECK(h->id() == 1);  // young enough
  h.release();          // recently used, but age counts from creation

  Clock::advance(2s);  // age 10 min 1 s
  h = pool.acquire();
  CHECK(h->id() == 2);
  CHECK(state.closed == 1);
  const auto s = pool.stats();
  CHECK(s.closed == 1);
  CHECK(s.created == 2);
  CHECK(s.idle == 0);
}

TEST_CASE("ConnectionPool: try_acquire never hands out an expired connection either",
          "[pool][expiry][design-6]") {
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, expiry(0, 2, 0ms, 10min)};
  pool.acquire().release();
  Clock::advance(11min);
  auto h = pool.try_acquire();
  REQUIRE(h.has_value());
  CHECK((*h)->id() == 2);
  CHECK(state.closed == 1);
}

TEST_CASE("ConnectionPool: a connection past max_lifetime is closed when it is given back",
          "[pool][expiry][design-6]") {
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, expiry(0, 2, 0ms, 10min)};
  auto h = pool.acquire();
  Clock::advance(11min);     // it aged while in use
  CHECK(state.closed == 0);  // nobody takes a connection from its holder
  h.release();
  CHECK(state.closed == 1);
  const auto s = pool.stats();
  CHECK(s.idle == 0);
  CHECK(s.in_use == 0);
  CHECK(s.released == 1);
  CHECK(s.closed == 1);
}

TEST_CASE("ConnectionPool: several expired idle connections are all skipped",
          "[pool][expiry][design-6]") {
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, expiry(0, 3, 0ms, 10min)};
  {
    auto a = pool.acquire();
    auto b = pool.acquire();
    auto c = pool.acquire();
  }
  Clock::advance(10min + 1ms);
  auto h = pool.acquire();
  CHECK(h->id() == 4);
  CHECK(state.closed == 3);
  CHECK(pool.stats().idle == 0);
}

// --- max_idle ----------------------------------------------------------------------------------

TEST_CASE("ConnectionPool: acquire closes a connection idle longer than max_idle",
          "[pool][expiry][design-6]") {
  // DESIGN 6: "... and one idle longer than max_idle while more than min_size connections are
  // open."
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, expiry(0, 2, 1min, 0ms)};
  auto h = pool.acquire();
  Clock::advance(5min);  // in use: not idle
  h.release();
  Clock::advance(59s);
  h = pool.acquire();
  CHECK(h->id() == 1);  // idle for 59 s only
  h.release();
  Clock::advance(1min + 1s);
  h = pool.acquire();
  CHECK(h->id() == 2);
  CHECK(state.closed == 1);
}

TEST_CASE("ConnectionPool: max_idle does not close connections below min_size",
          "[pool][expiry][design-6]") {
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, expiry(1, 3, 1min, 0ms)};
  Clock::advance(1h);
  auto h = pool.acquire();
  CHECK(h->id() == 1);  // the only open connection: kept despite its idleness
  CHECK(state.closed == 0);
}

TEST_CASE("ConnectionPool: prune() closes idle connections above min_size and returns how many",
          "[pool][expiry][design-6]") {
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, expiry(1, 3, 1min, 0ms)};
  {
    std::vector<PooledHandle<FakeConn>> all;
    for (int i = 0; i < 3; ++i) {
      all.push_back(pool.acquire());
    }
  }
  CHECK(pool.prune() == 0);  // nothing idle for long yet
  Clock::advance(2min);
  CHECK(pool.prune() == 2);  // down to min_size
  auto s = pool.stats();
  CHECK(s.idle == 1);
  CHECK(s.closed == 2);
  CHECK(state.live == 1);
  Clock::advance(1h);
  CHECK(pool.prune() == 0);  // min_size is kept whatever its idleness
  CHECK(pool.stats().idle == 1);
}

// --- prune() and refill ------------------------------------------------------------------------

TEST_CASE("ConnectionPool: prune() closes connections past max_lifetime, then refills to min_size",
          "[pool][expiry][design-6]") {
  // DESIGN 6: "prune() and the background thread close expired idle connections, then refill to
  // min_size."
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, expiry(2, 4, 0ms, 10min)};
  CHECK(pool.stats().created == 2);
  Clock::advance(10min + 1ms);
  CHECK(pool.prune() == 2);
  const auto s = pool.stats();
  CHECK(s.closed == 2);
  CHECK(s.created == 4);
  CHECK(s.idle == 2);
  CHECK(state.live == 2);
  // The new ones are young.
  CHECK(pool.prune() == 0);
  auto h = pool.acquire();
  CHECK(h->id() >= 3);
}

TEST_CASE("ConnectionPool: prune() leaves connections in use alone", "[pool][expiry][design-6]") {
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, expiry(0, 3, 0ms, 10min)};
  auto held = pool.acquire();
  pool.acquire().release();
  Clock::advance(11min);
  CHECK(pool.prune() == 1);  // only the idle one
  CHECK(state.closed == 1);
  CHECK(pool.stats().in_use == 1);
  held.release();  // expired: closed on the way back
  CHECK(state.closed == 2);
  CHECK(pool.stats().idle == 0);
}

TEST_CASE("ConnectionPool: refill counts connections in use towards min_size",
          "[pool][expiry][design-6]") {
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, expiry(2, 4, 0ms, 0ms)};
  auto a = pool.acquire();
  auto b = pool.acquire();
  CHECK(pool.prune() == 0);
  CHECK(pool.stats().created == 2);  // two open (in use): min_size is met
  b.invalidate();
  CHECK(pool.prune() == 0);
  CHECK(pool.stats().created == 3);  // one open: refilled to two
  CHECK(pool.stats().idle == 1);
}

TEST_CASE("ConnectionPool: zero max_idle and max_lifetime mean never", "[pool][expiry][design-6]") {
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, expiry(0, 2, 0ms, 0ms)};
  pool.acquire().release();
  Clock::advance(std::chrono::hours(24 * 365 * 10));
  CHECK(pool.prune() == 0);
  auto h = pool.acquire();
  CHECK(h->id() == 1);
  h.release();
  CHECK(state.closed == 0);
}

TEST_CASE("ConnectionPool: prune() on a fresh pool does nothing", "[pool][expiry][design-6]") {
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, expiry(0, 2, 1min, 10min)};
  CHECK(pool.prune() == 0);
  CHECK(state.factory_calls == 0);
}

// --- 9. which clock does what ------------------------------------------------------------------

TEST_CASE("ConnectionPool: acquire timeouts run on steady_clock even with a frozen Clock",
          "[pool][expiry][design-9]") {
  // DESIGN 9: "waiting and acquire timeouts use std::chrono::steady_clock". The manual clock
  // never moves here; the timeout must still expire in real time.
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, expiry(0, 1, 0ms, 0ms)};
  auto h = pool.acquire();
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_AS((void)pool.acquire(30ms), connpool::AcquireTimeout);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK(elapsed >= 30ms);
  CHECK(elapsed < generous_deadline);
}

TEST_CASE("ConnectionPool: moving the Clock does not time out a waiter",
          "[pool][expiry][design-9]") {
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, expiry(0, 1, 0ms, 0ms)};
  auto h = pool.acquire();
  connpool_test::Waiter<Pool> w(pool, generous_deadline);
  REQUIRE(connpool_test::eventually([&] { return pool.stats().pending == 1; }));
  Clock::advance(24h);
  h.release();
  REQUIRE(w.wait_for_outcome(Outcome::got));
  CHECK(pool.stats().timeouts == 0);
}
