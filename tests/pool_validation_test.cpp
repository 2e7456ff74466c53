// connpool - tests: validation on acquire (ping, the validation_bypass window, failures)
// SPDX-License-Identifier: MIT

#include <chrono>
#include <memory>
#include <optional>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "fake_conn.hpp"
#include "lock_probe.hpp"

using namespace std::chrono_literals;
using connpool::PoolOptions;
using connpool_test::FakeConn;
using connpool_test::FakeFactory;
using connpool_test::FakeState;
using connpool_test::PingResult;

namespace {

struct ValidationTag {};
using Clock = connpool::ManualClock<ValidationTag>;
using Pool = connpool::ConnectionPool<FakeConn, FakeFactory, Clock>;

/// Ages and idle times come from Clock; nothing expires; no background thread.
PoolOptions options(std::chrono::milliseconds bypass = 500ms, bool validate = true) {
  return PoolOptions{.max_size = 3,
                     .max_idle = 0ms,
                     .max_lifetime = 0ms,
                     .health_check_interval = 0ms,
                     .validate_on_acquire = validate,
                     .validation_bypass = bypass};
}

}  // namespace

TEST_CASE("ConnectionPool: an idle connection used within validation_bypass is not pinged",
          "[pool][validation][design-5][design-9]") {
  // DESIGN 5: "an idle connection unused for longer than validation_bypass is pinged first".
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, options(500ms)};
  pool.acquire().release();  // connection 1, last used at t = 0
  const int pings = state.pings;

  Clock::advance(499ms);
  auto h = pool.acquire();
  CHECK(state.pings == pings);  // used 499 ms ago: inside the window
  CHECK(h->id() == 1);
  h.release();  // last used now at t = 499 ms

  Clock::advance(499ms);
  h = pool.acquire();
  CHECK(state.pings == pings);  // the window restarts at each release
  h.release();

  Clock::advance(501ms);
  h = pool.acquire();
  CHECK(state.pings == pings + 1);  // unused for longer than the window: pinged
  CHECK(h->id() == 1);
  CHECK(pool.stats().validation_failures == 0);
}

TEST_CASE("ConnectionPool: the bypass window counts from the release, not from the acquire",
          "[pool][validation][design-5][design-9]") {
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, options(500ms)};
  auto h = pool.acquire();
  Clock::advance(10min);  // held for a long time...
  h.release();            // ...but just given back
  const int pings = state.pings;
  h = pool.acquire();
  CHECK(state.pings == pings);
}

TEST_CASE("ConnectionPool: validation_bypass 0 pings on every acquire from the idle set",
          "[pool][validation][design-5]") {
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, options(0ms)};
  pool.acquire().release();
  const int pings = state.pings;
  for (int i = 1; i <= 3; ++i) {
    auto h = pool.acquire();  // the clock does not move at all
    CHECK(state.pings == pings + i);
  }
}

TEST_CASE(
    "ConnectionPool: a ping that returns false closes the connection and the acquire goes "
    "on",
    "[pool][validation][design-5]") {
  // DESIGN 5: "a failed ping (false or exception) closes it, counts a validation failure, and the
  // acquire goes on within the same deadline."
  const PingResult how = GENERATE(PingResult::fail, PingResult::throws);
  INFO("ping " << (how == PingResult::fail ? "returns false" : "throws"));
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, options(500ms)};
  auto a = pool.acquire();
  auto b = pool.acquire();
  const int a_id = a->id();
  const int b_id = b->id();
  a->ping_result = how;
  b.release();
  a.release();  // a is on top of the LIFO stack
  Clock::advance(1s);

  auto h = pool.acquire();
  CHECK(h->id() == b_id);  // a failed its ping; b was next
  CHECK(h->id() != a_id);
  CHECK(state.closed == 1);
  CHECK(state.live == 1);
  const auto s = pool.stats();
  CHECK(s.validation_failures == 1);
  CHECK(s.closed == 1);
  CHECK(s.created == 2);  // no new connection was needed
  CHECK(s.idle == 0);
  CHECK(s.in_use == 1);
  CHECK(s.reused == 1);
  CHECK(s.acquired == 3);
}

TEST_CASE("ConnectionPool: when every idle connection fails its ping a new one is opened",
          "[pool][validation][design-5]") {
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, options(500ms)};
  {
    auto a = pool.acquire();
    auto b = pool.acquire();
    a->ping_result = PingResult::fail;
    b->ping_result = PingResult::throws;
  }
  Clock::advance(1s);
  auto h = pool.acquire();
  CHECK(h->id() == 3);
  const auto s = pool.stats();
  CHECK(s.validation_failures == 2);
  CHECK(s.closed == 2);
  CHECK(s.created == 3);
  CHECK(state.live == 1);
}

TEST_CASE("ConnectionPool: a failed ping does not use up a zero timeout",
          "[pool][validation][design-5]") {
  // "within the same deadline": on a pool of one whose only connection is dead, acquire(0ms)
  // closes it and opens a new one without waiting.
  Clock::set(0s);
  FakeState state;
  PoolOptions o = options(0ms);
  o.max_size = 1;
  Pool pool{FakeFactory{state}, o};
  {
    auto h = pool.acquire();
    h->ping_result = PingResult::fail;
  }
  auto h = pool.acquire(0ms);
  REQUIRE(h);
  CHECK(h->id() == 2);
  CHECK(pool.stats().validation_failures == 1);
  CHECK(pool.stats().timeouts == 0);
}

TEST_CASE("ConnectionPool: try_acquire validates idle connections too",
          "[pool][validation][design-5]") {
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, options(500ms)};
  {
    auto h = pool.acquire();
    h->ping_result = PingResult::fail;
  }
  Clock::advance(1s);
  auto h = pool.try_acquire();
  REQUIRE(h.has_value());
  CHECK((*h)->id() == 2);
  CHECK(pool.stats().validation_failures == 1);
}

TEST_CASE("ConnectionPool: validate_on_acquire false never pings", "[pool][validation][design-5]") {
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, options(0ms, false)};
  {
    auto h = pool.acquire();
    h->ping_result = PingResult::fail;  // would fail, if it were asked
  }
  Clock::advance(24h);
  auto h = pool.acquire();
  CHECK(h->id() == 1);  // handed out unchecked
  CHECK(state.pings == 0);
  CHECK(pool.stats().validation_failures == 0);
}

TEST_CASE("ConnectionPool: the ping runs outside the pool's lock", "[pool][validation][design-5]") {
  // DESIGN: "No user callback (factory, close, ping, reset, hooks) ever runs while the pool's
  // lock is held."
  Clock::set(0s);
  FakeState state;
  connpool_test::LockProbe probe;
  std::unique_ptr<Pool> pool;
  state.on_ping = [&] { probe.check(*pool); };
  pool = std::make_unique<Pool>(FakeFactory{state}, options(0ms));
  pool->acquire().release();
  auto h = pool->acquire();
  CHECK(state.pings == 1);
  CHECK(probe.free_count() == 1);
  CHECK(probe.blocked_count() == 0);
}
