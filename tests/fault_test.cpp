// connpool - tests: exception safety, with every allocation failing in turn
// SPDX-License-Identifier: MIT

// Each scenario runs once per allocation it makes: round n makes the n-th allocation of the
// test's thread throw std::bad_alloc (a replaced operator new), and then checks that the pool
// lost nothing: every open connection is idle or held, the counts are exact, and the pool still
// reaches its full size. The rounds end with the first one whose scenario made fewer than n
// allocations. Also the other exceptions that cross the pool: a Conn whose move constructor
// throws. A binary of its own: it replaces the global operator new through
// tests/support/replace_new.hpp, whose hook (defined here) fails the n-th allocation; not built
// under ThreadSanitizer, whose runtime defines operator new itself.

#include <chrono>
#include <cstddef>
#include <new>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include <connpool/async_pool.hpp>
#include <connpool/detail/awaitable.hpp>
#include <connpool/manual_clock.hpp>
#include <connpool/pool.hpp>
#include <connpool/task.hpp>

#include "catch.hpp"
#include "fake_conn.hpp"
#include "replace_new.hpp"

namespace {

// Plain thread_local scalars: no dynamic initialisation, so using them while allocating is safe.
thread_local bool armed = false;
thread_local long fail_at = 0;  // the allocation (1, 2, ...) that fails while armed
thread_local long seen = 0;     // allocations while armed

/// Makes the n-th allocation of this thread fail while alive.
class FailNth {
 public:
  explicit FailNth(long n) noexcept {
    seen = 0;
    fail_at = n;
    armed = true;
  }
  FailNth(const FailNth&) = delete;
  FailNth& operator=(const FailNth&) = delete;
  ~FailNth() { armed = false; }
  /// Whether the scenario reached the failing allocation.
  [[nodiscard]] static bool fired() noexcept { return seen >= fail_at; }
};

}  // namespace

// The replaced operator new (replace_new.hpp) asks before every allocation: while armed, the
// fail_at-th one fails.
bool connpool_test::on_allocate() noexcept {
  return !(armed && ++seen == fail_at);
}

using namespace std::chrono_literals;
using connpool::PooledHandle;
using connpool::PoolOptions;
using connpool::Task;
using connpool_test::FakeConn;
using connpool_test::FakeFactory;
using connpool_test::FakeState;

namespace {

constexpr long max_rounds = 100'000;  // a scenario that never stops allocating is a bug

/// The checks after every round: nothing lost, counts exact, and the pool reaches `max_size`.
template <class Pool>
void check_intact(Pool& pool, const FakeState& state, std::size_t max_size) {
  const connpool::PoolStats s = pool.stats();
  CHECK(s.in_use == 0);
  CHECK(s.pending == 0);
  CHECK(s.idle == static_cast<std::size_t>(state.live.load()));
  CHECK(s.created - s.closed == s.idle);
  CHECK(s.created == static_cast<std::uint64_t>(state.created.load()));
  std::vector<PooledHandle<FakeConn>> all;
  for (std::size_t i = 0; i < max_size; ++i) {
    if constexpr (requires { pool.acquire_blocking(1s); }) {
      all.push_back(pool.acquire_blocking(1s));
    } else {
      all.push_back(pool.acquire(1s));
    }
  }
  CHECK(pool.stats().in_use == max_size);
  CHECK(state.double_holds.load() == 0);
}

}  // namespace

// Issue 12, defect 4: std::bad_alloc in prune() (or a keepalive pass) after it had claimed idle
// connections left them "in use" for ever.
TEST_CASE("std::bad_alloc anywhere in prune() loses no connection", "[fault][prune]") {
  using Clock = connpool::ManualClock<struct PruneFaultTag>;
  using Pool = connpool::ConnectionPool<FakeConn, FakeFactory, Clock>;
  long n = 1;
  for (; n < max_rounds; ++n) {
    CAPTURE(n);
    FakeState state;
    PoolOptions o;
    o.min_size = 3;
    o.max_size = 4;
    o.max_idle = 0ms;
    o.max_lifetime = 1500ms;
    o.health_check_interval = 0ms;
    o.validate_on_acquire = false;
    o.keepalive_interval = 500ms;
    Pool pool(FakeFactory(state), o);
    {
      std::vector<PooledHandle<FakeConn>> four;
      for (int i = 0; i < 3; ++i) {
        four.push_back(pool.acquire(1s));
      }
      Clock::advance(1000ms);
      four.push_back(pool.acquire(1s));
    }
    // Three connections have outlived their lifetime, the fourth is due for a keepalive ping,
    // and refilling to min_size opens two.
    Clock::advance(600ms);
    bool fired = false;
    {
      const FailNth fail(n);
      try {
        (void)pool.prune();
      } catch (const std::bad_alloc&) {
      }
      fired = FailNth::fired();
    }
    check_intact(pool, state, 4);
    if (!fired) {
      break;
    }
  }
  CHECK(n > 1);  // the scenario allocates: the sweep tried something
}

// The slow paths of acquire: creation, validation that fails (the connection is closed and
// replaced), an expired connection, and a wait for another holder.
TEST_CASE("std::bad_alloc anywhere in acquire's slow paths loses nothing", "[fault][acquire]") {
  using Clock = connpool::ManualClock<struct AcquireFaultTag>;
  using Pool = connpool::ConnectionPool<FakeConn, FakeFactory, Clock>;
  long n = 1;
  for (; n < max_rounds; ++n) {
    CAPTURE(n);
    FakeState state;
    PoolOptions o;
    o.max_size = 3;
    o.max_lifetime = 10'000ms;
    o.health_check_interval = 0ms;
    o.validation_bypass = 0ms;
    Pool pool(FakeFactory(state), o);
    {
      auto a = pool.acquire(1s);
      auto b = pool.acquire(1s);
    }
    state.ping_failures_left = 1;  // the next reuse fails validation: closed and replaced
    bool fired = false;
    {
      const FailNth fail(n);
      try {
        std::vector<PooledHandle<FakeConn>> held;
        held.push_back(pool.acquire(1s));
        held.push_back(pool.acquire(1s));
        held.push_back(pool.acquire(1s));
        held.pop_back();
        Clock::advance(20'000ms);  // every connection has outlived its lifetime
        held.push_back(pool.acquire(1s));
        (void)pool.try_acquire();
        held.clear();
        pool.set_max_size(6);
        pool.set_max_size(3);
        (void)pool.evict_all();
      } catch (const std::bad_alloc&) {
      }
      fired = FailNth::fired();
    }
    state.ping_failures_left = 0;
    check_intact(pool, state, 3);
    if (!fired) {
      break;
    }
  }
  CHECK(n > 1);
}

namespace {

/// An asynchronous factory: a Task that makes a FakeConn.
struct AsyncFactory {
  FakeState* state;
  Task<FakeConn> operator()() const { co_return FakeFactory{*state}(); }
};

}  // namespace

// Issue 12, defect 12: std::bad_alloc allocating the frame of the coroutine that drives an
// asynchronous acquire lost the unit of capacity taken before; with max_size 1 the pool was
// unusable afterwards.
TEST_CASE("std::bad_alloc anywhere in an asynchronous acquire loses nothing", "[fault][async]") {
  using Pool = connpool::AsyncConnectionPool<FakeConn, AsyncFactory>;
  long n = 1;
  for (; n < max_rounds; ++n) {
    CAPTURE(n);
    FakeState state;
    PoolOptions o;
    o.max_size = 1;
    o.health_check_interval = 0ms;
    Pool pool(AsyncFactory{&state}, o);
    bool fired = false;
    {
      const FailNth fail(n);
      try {
        auto h = connpool::detail::sync_wait(pool.acquire(1s));
        h.invalidate();  // the next acquire creates again
        auto again = connpool::detail::sync_wait(pool.try_acquire());
      } catch (const std::bad_alloc&) {
      }
      fired = FailNth::fired();
    }
    check_intact(pool, state, 1);
    if (!fired) {
      break;
    }
  }
  CHECK(n > 1);
}

namespace {

/// A connection whose move constructor throws on the move numbered `throw_at` (counted in
/// `moves`, from 1; 0 = never).
struct MoveThrows {
  static inline int moves = 0;
  static inline int throw_at = 0;

  explicit MoveThrows(FakeState& s) : conn(s) {}
  MoveThrows(MoveThrows&& other) : conn(std::move(other.conn)) {
    if (++moves == throw_at) {
      throw std::runtime_error("move failed");
    }
  }
  MoveThrows& operator=(MoveThrows&&) = delete;
  MoveThrows(const MoveThrows&) = delete;
  MoveThrows& operator=(const MoveThrows&) = delete;
  ~MoveThrows() = default;
  void close() { conn.close(); }

  FakeConn conn;
};

struct MoveThrowsFactory {
  FakeState* state;
  Task<MoveThrows> operator()() const { co_return MoveThrows(*state); }
};

}  // namespace

// Issue 12, defect 5: a throwing move of Conn into its slot, at the end of an asynchronous
// create, lost the unit of capacity, the connect permit and the slot, and was not counted.
TEST_CASE("a Conn whose move throws at the end of an asynchronous create loses nothing",
          "[fault][async]") {
  FakeState state;
  PoolOptions o;
  o.max_size = 3;
  o.max_connecting = 2;
  o.health_check_interval = 0ms;
  connpool::AsyncConnectionPool pool(MoveThrowsFactory{&state}, o);
  // How many moves one asynchronous create makes: the last is the one into the slot.
  MoveThrows::moves = 0;
  connpool::detail::sync_wait(pool.acquire(1s)).invalidate();
  const int per_create = MoveThrows::moves;
  REQUIRE(per_create > 0);
  for (int i = 0; i < 3; ++i) {  // more failures than max_connecting
    MoveThrows::moves = 0;
    MoveThrows::throw_at = per_create;
    CHECK_THROWS_WITH(connpool::detail::sync_wait(pool.acquire(1s)), "move failed");
  }
  MoveThrows::throw_at = 0;
  CHECK(pool.stats().create_failures == 3);
  CHECK(pool.stats().in_use == 0);
  std::vector<PooledHandle<MoveThrows>> all;
  for (int i = 0; i < 3; ++i) {
    all.push_back(connpool::detail::sync_wait(pool.acquire(1s)));
  }
  CHECK(pool.stats().in_use == 3);
}
