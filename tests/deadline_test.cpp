// connpool - tests: connect_timeout, validation_timeout and connpool::Deadline (issue 14, item 6)
// SPDX-License-Identifier: MIT

// A factory that takes a Deadline gets one per connect: PoolOptions::connect_timeout from the
// start of the connect, and a stop token the pool requests when it closes. A connect that
// returns after its deadline failed: its connection is closed and the caller gets
// ConnectTimeout. Likewise a ping that takes a Deadline (validation_timeout), and a ping that
// returns late is a failed validation.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "coro.hpp"
#include "fake_conn.hpp"
#include "sync.hpp"

using namespace std::chrono_literals;
using connpool::ConnectTimeout;
using connpool::Deadline;
using connpool::PoolOptions;
using connpool_test::eventually;
using connpool_test::FakeConn;
using connpool_test::FakeFactory;
using connpool_test::FakeState;
using connpool_test::Gate;
using connpool_test::generous_deadline;

namespace {

PoolOptions quiet(std::size_t max_size) {
  return PoolOptions{
      .max_size = max_size, .health_check_interval = 0ms, .validate_on_acquire = false};
}

/// A host that never answers: the connect waits until its deadline passes or the pool closes
/// (as a non-blocking connect polled with the Deadline would), then gives up.
struct BlackHole {
  std::mutex mutex;  // guards nothing but the wait
  std::condition_variable cv;
  Gate entered;
  std::atomic<int> attempts{0};
  std::atomic<bool> saw_stop{false};

  [[noreturn]] void connect(const Deadline& d) {
    ++attempts;
    entered.open();
    // Registered before the lock is taken: when the stop was requested already, the callback
    // runs here, at once, and takes the lock itself.
    const std::stop_callback wake(d.stop, [this] {
      const std::lock_guard l(mutex);
      cv.notify_all();
    });
    std::unique_lock lock(mutex);
    // The test's own bound: a deadline-less connect here is a defect, not a hang.
    const auto give_up_by = std::min(d.at, Deadline::clock::now() + 30s);
    cv.wait_until(lock, give_up_by, [&] { return d.stop.stop_requested(); });
    saw_stop = d.stop.stop_requested();
    throw std::runtime_error(saw_stop ? "connect abandoned: pool closing" : "connect timed out");
  }
};

/// A FakeConn whose ping takes a Deadline, and may be made slow.
class DeadlineConn : public FakeConn {
 public:
  explicit DeadlineConn(FakeState& state) : FakeConn(state) {}
  bool ping(const Deadline& d) {
    last_deadline = d;
    ++deadline_pings;
    if (slow_ping.count() > 0) {
      std::this_thread::sleep_for(slow_ping);  // returns after the deadline, whatever it says
    }
    return true;
  }
  bool ping() { return FakeConn::ping(); }  // present too: the Deadline form is preferred
  Deadline last_deadline{};
  int deadline_pings = 0;
  std::chrono::milliseconds slow_ping{0};
};

}  // namespace

// --- concepts -------------------------------------------------------------------------------

namespace {
using DeadlineFactory = decltype([](const Deadline&) { return 42; });
using PlainFactory = decltype([] { return 42; });
}  // namespace
static_assert(connpool::ConnectionFactory<DeadlineFactory, int>);
static_assert(connpool::ConnectionFactory<PlainFactory, int>);
static_assert(!connpool::ConnectionFactory<decltype([](int) { return 42; }), int>);
static_assert(connpool::DeadlinePingable<DeadlineConn>);
static_assert(connpool::Pingable<DeadlineConn>);
static_assert(!connpool::DeadlinePingable<FakeConn>);
static_assert(std::is_base_of_v<connpool::PoolError, ConnectTimeout>);

TEST_CASE("Deadline: limited, expired and remaining", "[design][deadline]") {
  const Deadline none;
  CHECK_FALSE(none.limited());
  CHECK_FALSE(none.expired());
  CHECK(none.remaining() == Deadline::clock::duration::max());
  const Deadline past{Deadline::clock::now() - 1ms, {}};
  CHECK(past.limited());
  CHECK(past.expired());
  CHECK(past.remaining() == Deadline::clock::duration::zero());
  std::stop_source source;
  const Deadline later{Deadline::clock::now() + 1h, source.get_token()};
  CHECK_FALSE(later.expired());
  CHECK(later.remaining() > 59min);
  source.request_stop();
  CHECK(later.expired());  // the pool is closing
}

// --- connect_timeout ------------------------------------------------------------------------

TEST_CASE("ConnectionPool: a factory that takes a Deadline gets connect_timeout from now",
          "[design][deadline][connect]") {
  FakeState state;
  std::optional<Deadline> seen;
  PoolOptions o = quiet(2);
  o.connect_timeout = 1500ms;
  connpool::ConnectionPool pool{[&](const Deadline& d) {
                                  seen = d;
                                  return FakeConn(state);
                                },
                                o};
  static_assert(std::is_same_v<decltype(pool)::connection_type, FakeConn>);  // deduced
  const auto before = Deadline::clock::now();
  auto h = pool.acquire();
  const auto after = Deadline::clock::now();
  REQUIRE(seen.has_value());
  CHECK(seen->limited());
  CHECK(seen->at >= before + 1500ms);
  CHECK(seen->at <= after + 1500ms);
  CHECK(seen->stop.stop_possible());
  CHECK_FALSE(seen->stop.stop_requested());
  pool.close();
  CHECK(seen->stop.stop_requested());  // close() requests the stop
}

TEST_CASE("ConnectionPool: without connect_timeout the Deadline has no time limit",
          "[design][deadline][connect]") {
  FakeState state;
  std::optional<Deadline> seen;
  connpool::ConnectionPool pool{[&](const Deadline& d) {
                                  seen = d;
                                  return FakeConn(state);
                                },
                                quiet(1)};
  auto h = pool.acquire();
  REQUIRE(seen.has_value());
  CHECK_FALSE(seen->limited());
}

TEST_CASE("ConnectionPool: a connect to a host that never answers ends at connect_timeout",
          "[design][deadline][connect]") {
  BlackHole host;
  PoolOptions o = quiet(1);
  o.connect_timeout = 200ms;
  connpool::ConnectionPool<FakeConn, std::function<FakeConn(const Deadline&)>> pool{
      [&](const Deadline& d) -> FakeConn { host.connect(d); }, o};
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(pool.acquire(20s), "connect timed out");  // the factory's own error
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(took >= 200ms);
  CHECK(took < 10s);  // at the connect's deadline, not the acquire's (or the kernel's)
  CHECK(pool.stats().create_failures == 1);
}

TEST_CASE("ConnectionPool: a connect that returns after its deadline fails with ConnectTimeout",
          "[design][deadline][connect]") {
  FakeState state;
  PoolOptions o = quiet(1);
  o.connect_timeout = 20ms;
  std::atomic<bool> slow{true};
  connpool::ConnectionPool pool{[&] {  // no Deadline parameter: the rule holds all the same
                                  if (slow) {
                                    std::this_thread::sleep_for(100ms);  // past the deadline
                                  }
                                  return FakeConn(state);
                                },
                                o};
  try {
    auto h = pool.acquire(generous_deadline);
    FAIL("a late connect was handed out");
  } catch (const ConnectTimeout& e) {
    CHECK(std::string(e.what()).find("connect_timeout (20 ms)") != std::string::npos);
  }
  CHECK(state.created == 1);
  CHECK(state.closed == 1);  // closed at once
  CHECK(state.live == 0);
  const auto s = pool.stats();
  CHECK(s.create_failures == 1);
  CHECK(s.created == 0);
  CHECK(s.total_connections() == 0);
  slow = false;
  auto h = pool.acquire(generous_deadline);  // the place was freed
  CHECK(h->id() == 2);
}

TEST_CASE("ConnectionPool: close() stops a connect under way through its Deadline",
          "[design][deadline][connect][close]") {
  BlackHole host;
  connpool::ConnectionPool<FakeConn, std::function<FakeConn(const Deadline&)>> pool{
      [&](const Deadline& d) -> FakeConn { host.connect(d); }, quiet(1)};  // no time limit
  std::atomic<bool> failed{false};
  std::jthread caller([&] {
    try {
      auto h = pool.acquire(60s);
    } catch (...) {
      failed = true;
    }
  });
  REQUIRE(host.entered.wait());
  const auto start = std::chrono::steady_clock::now();
  pool.close();
  caller.join();
  CHECK(std::chrono::steady_clock::now() - start < 10s);
  CHECK(failed);
  CHECK(host.saw_stop);
}

TEST_CASE(
    "ConnectionPool: the destructor stops a refill stuck in a connect on the maintenance "
    "thread",
    "[design][deadline][connect][maintenance]") {
  FakeState state;
  BlackHole host;
  std::atomic<bool> black_holed{false};
  PoolOptions o = quiet(2);
  o.min_size = 1;
  o.health_check_interval = 10ms;
  std::optional<connpool::ConnectionPool<FakeConn, std::function<FakeConn(const Deadline&)>>> pool;
  pool.emplace(
      [&](const Deadline& d) -> FakeConn {
        if (black_holed) {
          host.connect(d);
        }
        return FakeConn(state);
      },
      o);
  black_holed = true;
  pool->acquire().invalidate();  // below min_size: the maintenance thread refills
  REQUIRE(host.entered.wait());
  const auto start = std::chrono::steady_clock::now();
  pool.reset();
  CHECK(std::chrono::steady_clock::now() - start < 10s);
  CHECK(host.saw_stop);
  CHECK(state.live == 0);
}

TEST_CASE("PoolOptions: a negative connect_timeout or validation_timeout is refused by name",
          "[design][deadline][options]") {
  FakeState state;
  PoolOptions o = quiet(1);
  o.connect_timeout = -1ms;
  CHECK_THROWS_WITH(connpool::ConnectionPool(FakeFactory{state}, o),
                    Catch::Contains("connect_timeout"));
  o = quiet(1);
  o.validation_timeout = -5ms;
  CHECK_THROWS_WITH(connpool::ConnectionPool(FakeFactory{state}, o),
                    Catch::Contains("validation_timeout"));
}

// --- validation_timeout ---------------------------------------------------------------------

TEST_CASE("ConnectionPool: a ping that takes a Deadline gets validation_timeout",
          "[design][deadline][validation]") {
  FakeState state;
  PoolOptions o = quiet(1);
  o.validate_on_acquire = true;
  o.validation_bypass = 0ms;
  o.validation_timeout = 750ms;
  connpool::ConnectionPool pool{[&] { return DeadlineConn(state); }, o};
  pool.acquire().release();
  const auto before = Deadline::clock::now();
  auto h = pool.acquire();
  REQUIRE(h->deadline_pings == 1);
  CHECK(state.pings == 0);  // the Deadline form was used
  CHECK(h->last_deadline.limited());
  CHECK(h->last_deadline.at >= before + 750ms);
  CHECK(h->last_deadline.stop.stop_possible());
}

TEST_CASE("ConnectionPool: a ping that returns after validation_timeout fails the validation",
          "[design][deadline][validation]") {
  FakeState state;
  PoolOptions o = quiet(1);
  o.validate_on_acquire = true;
  o.validation_bypass = 0ms;
  o.validation_timeout = 10ms;
  connpool::ConnectionPool pool{[&] { return DeadlineConn(state); }, o};
  {
    auto h = pool.acquire();
    h->slow_ping = 60ms;  // its next ping answers late
  }
  auto h = pool.acquire(generous_deadline);
  CHECK(h->id() == 2);  // the late one was closed, and the acquire went on
  CHECK(state.closed == 1);
  CHECK(pool.stats().validation_failures == 1);
  CHECK(pool.stats().closed_for(connpool::CloseReason::validation_failed) == 1);
}

// --- AsyncConnectionPool --------------------------------------------------------------------

TEST_CASE("AsyncConnectionPool: an asynchronous factory gets the Deadline, a late one fails",
          "[design][async][deadline][connect]") {
  using connpool::Task;
  FakeState state;
  connpool_test::Loop loop;
  struct AsyncDeadlineFactory {
    FakeState* state;
    std::optional<Deadline>* seen;
    std::chrono::milliseconds delay;
    CONNPOOL_CORO_NO_SANITIZE_FUNCTION Task<FakeConn> operator()(const Deadline& d) const {
      *seen = d;
      if (delay.count() > 0) {
        std::this_thread::sleep_for(delay);  // a connect slower than its deadline
      }
      co_return FakeConn(*state);
    }
  };
  std::optional<Deadline> seen;
  PoolOptions o = quiet(1);
  o.connect_timeout = 20ms;
  connpool::AsyncConnectionPool pool{AsyncDeadlineFactory{&state, &seen, 100ms}, o,
                                     loop.scheduler()};
  connpool_test::Spawned spawned;
  bool timed_out = false;
  spawned.spawn([&]() -> Task<void> {
    try {
      auto h = co_await pool.acquire(generous_deadline);
    } catch (const ConnectTimeout&) {
      timed_out = true;
    }
  });
  loop.run();
  REQUIRE(seen.has_value());
  CHECK(seen->limited());
  CHECK(timed_out);
  CHECK(state.closed == 1);
  CHECK(pool.stats().create_failures == 1);
  CHECK(pool.stats().total_connections() == 0);
}
