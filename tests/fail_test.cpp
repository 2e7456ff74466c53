// connpool - tests: errors classified on give-back, broken connections, max_uses (issue 14)
// SPDX-License-Identifier: MIT

// PooledHandle::fail(error) gives a connection back with the error that happened on it, and
// PoolOptions::on_error decides: keep (returned as by release()), evict (closed; the default)
// or clear (closed, and the pool cleared). A BrokenCheckable connection is asked is_broken() on
// every give-back and closed when it says so. PoolOptions::max_uses retires a connection after
// that many check-outs. Each close is counted by its reason in PoolStats::closed_by_reason and
// reported in the on_close event.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "coro.hpp"
#include "fake_conn.hpp"
#include "sync.hpp"
#include "waiter.hpp"

using namespace std::chrono_literals;
using connpool::CloseReason;
using connpool::ErrorAction;
using connpool::PoolEvent;
using connpool::PoolOptions;
using connpool::Task;
using connpool::WaitPolicy;
using connpool_test::eventually;
using connpool_test::FakeConn;
using connpool_test::FakeFactory;
using connpool_test::FakeState;
using connpool_test::generous_deadline;
using connpool_test::Loop;
using connpool_test::Outcome;
using connpool_test::Spawned;

namespace {

/// An error a driver would throw, with a SQLSTATE-like code.
struct DbError : std::runtime_error {
  explicit DbError(std::string code) : std::runtime_error("db error " + code), code(code) {}
  std::string code;
};

std::exception_ptr db_error(const std::string& code) {
  return std::make_exception_ptr(DbError(code));
}

/// Maps a DbError's code as a PostgreSQL user would: "08..." (connection exception) evict,
/// "25006" (read-only transaction: a failover) clear, anything else keep.
ErrorAction classify(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const DbError& d) {
    if (d.code.rfind("08", 0) == 0) {
      return ErrorAction::evict;
    }
    if (d.code == "25006") {
      return ErrorAction::clear;
    }
    return ErrorAction::keep;
  } catch (...) {
    return ErrorAction::evict;
  }
}

/// Records the reason of every close event.
struct CloseLog {
  std::mutex mutex;  // guards reasons
  std::vector<std::pair<std::uint64_t, CloseReason>> reasons;
  std::function<void(const PoolEvent&)> hook() {
    return [this](const PoolEvent& e) {
      const std::lock_guard lock(mutex);
      reasons.emplace_back(e.connection_id, e.reason);
    };
  }
  std::size_t count(CloseReason r) {
    const std::lock_guard lock(mutex);
    std::size_t n = 0;
    for (const auto& [id, reason] : reasons) {
      n += reason == r ? 1 : 0;
    }
    return n;
  }
};

PoolOptions quiet(std::size_t max_size) {
  return PoolOptions{.max_size = max_size,
                     .health_check_interval = 0ms,
                     .validate_on_acquire = false,
                     .wait_policy = WaitPolicy::fifo};
}

using Pool = connpool::ConnectionPool<FakeConn, FakeFactory>;

/// A FakeConn that can say it is broken, as a driver's status flag would.
class BreakableConn : public FakeConn {
 public:
  explicit BreakableConn(FakeState& state) : FakeConn(state) {}
  [[nodiscard]] bool is_broken() const {
    if (on_check) {
      on_check();  // user code on the give-back path: may call into the pool, or destroy it
    }
    if (throws) {
      throw std::runtime_error("status unknown");
    }
    return broken;
  }
  bool broken = false;
  bool throws = false;
  std::function<void()> on_check;
};

struct BreakableFactory {
  FakeState* state;
  BreakableConn operator()() const { return BreakableConn(*state); }
};

/// A connection type that cannot be changed; its traits say whether it is broken.
struct LegacyConn {
  int status = 0;  // non-zero: the session is gone
};

}  // namespace

template <>
struct connpool::connection_traits<LegacyConn> {
  static bool is_broken(const LegacyConn& c) noexcept { return c.status != 0; }
};

static_assert(connpool::BrokenCheckable<BreakableConn>);
static_assert(connpool::BrokenCheckable<std::unique_ptr<BreakableConn>>);  // through the pointee
static_assert(connpool::BrokenCheckable<LegacyConn>);
static_assert(!connpool::BrokenCheckable<FakeConn>);
static_assert(!connpool::BrokenCheckable<int>);

// --- fail() and on_error ---------------------------------------------------------------------

TEST_CASE("ConnectionPool: fail() without on_error closes the connection as evicted_by_error",
          "[design][lifecycle][fail]") {
  FakeState state;
  CloseLog log;
  PoolOptions o = quiet(2);
  o.on_close = log.hook();
  Pool pool{FakeFactory{state}, o};
  auto h = pool.acquire();
  REQUIRE(h->id() == 1);
  CHECK(h.fail(db_error("08006")) == ErrorAction::evict);
  CHECK_FALSE(h);
  CHECK(state.closed == 1);
  CHECK(log.count(CloseReason::evicted_by_error) == 1);
  const auto s = pool.stats();
  CHECK(s.closed == 1);
  CHECK(s.closed_for(CloseReason::evicted_by_error) == 1);
  CHECK(s.released == 1);
  CHECK(s.total_connections() == 0);
  // The next request gets a new connection.
  auto next = pool.acquire();
  CHECK(next->id() == 2);
  // fail() on an empty handle does nothing.
  CHECK(h.fail(db_error("08006")) == ErrorAction::keep);
}

TEST_CASE("ConnectionPool: on_error keep returns the connection as release() would",
          "[design][lifecycle][fail]") {
  FakeState state;
  PoolOptions o = quiet(2);
  std::atomic<int> calls{0};
  std::string seen;
  o.on_error = [&](const std::exception_ptr& e) {
    ++calls;
    try {
      std::rethrow_exception(e);
    } catch (const DbError& d) {
      seen = d.code;
    }
    return classify(e);
  };
  Pool pool{FakeFactory{state}, o};
  auto h = pool.acquire();
  CHECK(h.fail(db_error("23505")) == ErrorAction::keep);  // a unique violation: still usable
  CHECK(calls == 1);
  CHECK(seen == "23505");  // on_error receives the very error
  CHECK(state.closed == 0);
  CHECK(state.resets == 1);  // reset on the way back, as on release()
  CHECK(pool.stats().idle == 1);
  auto again = pool.acquire();
  CHECK(again->id() == 1);  // reused
}

TEST_CASE("ConnectionPool: on_error that throws, or an empty error, evicts",
          "[design][lifecycle][fail]") {
  FakeState state;
  PoolOptions o = quiet(2);
  o.on_error = [](const std::exception_ptr& e) -> ErrorAction {
    if (!e) {
      return ErrorAction::keep;  // the classifier sees the empty pointer too
    }
    throw std::logic_error("classifier bug");
  };
  Pool pool{FakeFactory{state}, o};
  auto h = pool.acquire();
  CHECK(h.fail(db_error("XX000")) == ErrorAction::evict);
  CHECK(state.closed == 1);
  auto k = pool.acquire();
  CHECK(k.fail(nullptr) == ErrorAction::keep);
  CHECK(pool.stats().idle == 1);
}

TEST_CASE("ConnectionPool: on_error clear closes the connection and clears the pool",
          "[design][lifecycle][fail][clear]") {
  FakeState state;
  CloseLog log;
  PoolOptions o = quiet(3);
  o.on_error = classify;
  o.on_close = log.hook();
  Pool pool{FakeFactory{state}, o};
  auto a = pool.acquire();
  auto b = pool.acquire();
  pool.acquire().release();  // a third connection, idle
  REQUIRE(pool.stats().idle == 1);
  CHECK(a.fail(db_error("25006")) == ErrorAction::clear);
  CHECK(log.count(CloseReason::evicted_by_error) == 1);
  CHECK(log.count(CloseReason::cleared) == 1);  // the idle one, at once
  CHECK(state.closed == 2);
  // The connection still out works, and is closed as cleared when it comes back.
  CHECK(b->id() == 2);
  b.release();
  const auto s = pool.stats();
  CHECK(s.closed == 3);
  CHECK(s.closed_for(CloseReason::evicted_by_error) == 1);
  CHECK(s.closed_for(CloseReason::cleared) == 2);
  CHECK(s.total_connections() == 0);
  // The pool goes on with new connections.
  auto fresh = pool.acquire();
  CHECK(fresh->id() == 4);
}

TEST_CASE("ConnectionPool: on_error clear fails the waiting callers with PoolCleared",
          "[design][lifecycle][fail][clear]") {
  const WaitPolicy policy = GENERATE(WaitPolicy::fifo, WaitPolicy::bounded_barging);
  INFO((policy == WaitPolicy::fifo ? "fifo" : "bounded_barging"));
  FakeState state;
  PoolOptions o = quiet(1);
  o.wait_policy = policy;
  o.on_error = classify;
  Pool pool{FakeFactory{state}, o};
  auto a = pool.acquire();
  connpool_test::Waiter<Pool> w1(pool, generous_deadline);
  connpool_test::Waiter<Pool> w2(pool, generous_deadline);
  REQUIRE(eventually([&] { return pool.stats().pending == 2; }));
  const auto start = std::chrono::steady_clock::now();
  CHECK(a.fail(db_error("25006")) == ErrorAction::clear);
  REQUIRE(w1.wait_for_outcome(Outcome::cleared));
  REQUIRE(w2.wait_for_outcome(Outcome::cleared));
  CHECK(std::chrono::steady_clock::now() - start < 5s);  // at once, not at their deadline
  CHECK(pool.stats().pending == 0);
  // evict does not touch the waiters: one that waits is served.
  auto b = pool.acquire();
  connpool_test::Waiter<Pool> w3(pool, generous_deadline);
  REQUIRE(eventually([&] { return pool.stats().pending == 1; }));
  CHECK(b.fail(db_error("08006")) == ErrorAction::evict);
  REQUIRE(w3.wait_for_outcome(Outcome::got));
  CHECK(w3.id() == 3);
}

TEST_CASE("ConnectionPool: on_error may destroy the pool, the failed connection is still closed",
          "[design][lifecycle][fail][reentrancy]") {
  FakeState state;
  std::optional<Pool> pool;
  PoolOptions o = quiet(2);
  o.on_error = [&](const std::exception_ptr&) {
    auto other = pool->try_acquire();  // calls back into the pool
    CHECK(other.has_value());
    other.reset();
    pool.reset();  // and destroys it: the handle being failed keeps the shared state
    return ErrorAction::clear;
  };
  pool.emplace(FakeFactory{state}, o);
  auto h = pool->acquire();
  CHECK(h.fail(db_error("25006")) == ErrorAction::clear);
  CHECK_FALSE(pool.has_value());
  CHECK(state.live == 0);
  CHECK(state.double_closes == 0);
  CHECK(state.closed == 2);
}

TEST_CASE("AsyncConnectionPool: fail() with clear ends suspended acquires with PoolCleared",
          "[design][async][lifecycle][fail]") {
  FakeState state;
  Loop loop;
  PoolOptions o{.max_size = 1, .health_check_interval = 0ms};
  o.on_error = classify;
  connpool::AsyncConnectionPool pool{FakeFactory{state}, o, loop.scheduler()};
  Spawned spawned;
  std::optional<connpool::PooledHandle<FakeConn>> held;
  spawned.spawn([&]() -> Task<void> { held.emplace(co_await pool.acquire()); });
  REQUIRE(held.has_value());
  int cleared = 0;
  for (int i = 0; i < 3; ++i) {
    spawned.spawn([&]() -> Task<void> {
      try {
        auto h = co_await pool.acquire(10s);
      } catch (const connpool::PoolCleared&) {
        ++cleared;
      }
    });
  }
  REQUIRE(pool.stats().pending == 3);
  CHECK(held->fail(db_error("25006")) == ErrorAction::clear);
  loop.run();
  CHECK(cleared == 3);
  CHECK(spawned.errors().empty());
  CHECK(state.closed == 1);
  CHECK(pool.stats().closed_for(CloseReason::evicted_by_error) == 1);
}

// --- is_broken() -----------------------------------------------------------------------------

TEST_CASE("ConnectionPool: a connection that says it is broken is closed, never pooled",
          "[design][lifecycle][broken]") {
  using BPool = connpool::ConnectionPool<BreakableConn, BreakableFactory>;
  FakeState state;
  CloseLog log;
  PoolOptions o = quiet(2);
  o.on_close = log.hook();
  BPool pool{BreakableFactory{&state}, o};
  {
    auto h = pool.acquire();
    h->broken = true;
  }  // the destructor gives it back
  CHECK(state.closed == 1);
  CHECK(state.resets == 0);  // not reset: a broken connection is closed first
  CHECK(log.count(CloseReason::broken) == 1);
  {
    auto h = pool.acquire();
    CHECK(h->id() == 2);
    h->throws = true;  // a check that throws counts as broken
  }
  CHECK(state.closed == 2);
  {
    auto h = pool.acquire();
    CHECK(h->id() == 3);
  }  // healthy: pooled
  CHECK(pool.stats().idle == 1);
  {
    // on_error keep does not save a broken connection.
    auto h = pool.acquire();
    h->broken = true;
    CHECK(h.fail(nullptr) == ErrorAction::evict);
  }
  const auto s = pool.stats();
  CHECK(s.closed_for(CloseReason::broken) == 2);
  CHECK(s.closed_for(CloseReason::evicted_by_error) == 1);
}

TEST_CASE("ConnectionPool: is_broken() may destroy the pool it is asked for",
          "[design][lifecycle][broken][reentrancy]") {
  using BPool = connpool::ConnectionPool<BreakableConn, BreakableFactory>;
  const bool broken = GENERATE(false, true);
  INFO("broken: " << broken);
  FakeState state;
  std::optional<BPool> pool;
  pool.emplace(BreakableFactory{&state}, quiet(2));
  auto other = pool->acquire();  // out while the pool goes: closed when it comes back
  auto h = pool->acquire();
  h->broken = broken;
  h->on_check = [&] {
    CHECK(pool->stats().in_use == 2);  // calls into the pool first
    pool.reset();
  };
  h.release();
  CHECK_FALSE(pool.has_value());
  other.release();
  CHECK(state.live == 0);
  CHECK(state.closed == 2);
  CHECK(state.double_closes == 0);
}

TEST_CASE("ConnectionPool: on_error keep still asks is_broken()", "[design][lifecycle][broken]") {
  using BPool = connpool::ConnectionPool<BreakableConn, BreakableFactory>;
  FakeState state;
  PoolOptions o = quiet(1);
  o.on_error = [](const std::exception_ptr&) { return ErrorAction::keep; };
  BPool pool{BreakableFactory{&state}, o};
  auto h = pool.acquire();
  h->broken = true;
  CHECK(h.fail(db_error("40001")) == ErrorAction::keep);
  CHECK(state.closed == 1);
  CHECK(pool.stats().closed_for(CloseReason::broken) == 1);
}

TEST_CASE("ConnectionPool: is_broken() through connection_traits and through a pointer",
          "[design][lifecycle][broken][traits]") {
  SECTION("a specialisation for a type that cannot be changed") {
    connpool::ConnectionPool pool{[] { return LegacyConn{}; }, quiet(1)};
    {
      auto h = pool.acquire();
      h->status = 1;
    }
    CHECK(pool.stats().closed_for(CloseReason::broken) == 1);
    CHECK(pool.stats().total_connections() == 0);
  }
  SECTION("std::unique_ptr: the pointee's member") {
    FakeState state;
    connpool::ConnectionPool pool{[&] { return std::make_unique<BreakableConn>(state); }, quiet(1)};
    {
      auto h = pool.acquire();
      h->broken = true;
    }
    CHECK(state.closed == 1);
    CHECK(pool.stats().closed_for(CloseReason::broken) == 1);
  }
}

// --- max_uses ----------------------------------------------------------------------------------

TEST_CASE("ConnectionPool: max_uses retires a connection after that many check-outs",
          "[design][lifecycle][max_uses]") {
  FakeState state;
  CloseLog log;
  PoolOptions o = quiet(2);
  o.max_uses = 3;
  o.on_close = log.hook();
  Pool pool{FakeFactory{state}, o};
  std::vector<int> ids;
  for (int i = 0; i < 7; ++i) {
    auto h = pool.acquire();
    ids.push_back(h->id());
  }
  CHECK(ids == std::vector<int>{1, 1, 1, 2, 2, 2, 3});
  CHECK(state.closed == 2);
  CHECK(log.count(CloseReason::max_uses) == 2);
  CHECK(pool.stats().closed_for(CloseReason::max_uses) == 2);
  // try_acquire counts as a use too.
  {
    auto h = pool.try_acquire();
    REQUIRE(h.has_value());
    CHECK((*h)->id() == 3);
  }
  auto h = pool.acquire();
  CHECK(h->id() == 3);  // its third use
  h.release();
  CHECK(state.closed == 3);
}

TEST_CASE("ConnectionPool: max_uses 1 gives every check-out a new connection",
          "[design][lifecycle][max_uses]") {
  FakeState state;
  PoolOptions o = quiet(2);
  o.max_uses = 1;
  Pool pool{FakeFactory{state}, o};
  for (int i = 1; i <= 4; ++i) {
    auto h = pool.acquire();
    CHECK(h->id() == i);
  }
  CHECK(pool.stats().closed_for(CloseReason::max_uses) == 4);
}

TEST_CASE("ConnectionPool: max_uses 0 (the default) never retires a connection",
          "[design][lifecycle][max_uses]") {
  FakeState state;
  Pool pool{FakeFactory{state}, quiet(1)};
  CHECK(PoolOptions{}.max_uses == 0);
  for (int i = 0; i < 100; ++i) {
    auto h = pool.acquire();
    CHECK(h->id() == 1);
  }
  CHECK(state.closed == 0);
}

// --- MultiHostPool ---------------------------------------------------------------------------

TEST_CASE("MultiHostPool: on_error clear clears the failing host's pool only",
          "[design][multi_host][lifecycle][fail]") {
  std::map<std::string, std::unique_ptr<FakeState>> states;
  for (const char* h : {"a", "b"}) {
    states.emplace(h, std::make_unique<FakeState>());
  }
  connpool::MultiHostOptions o;
  o.per_host = quiet(2);
  o.per_host.on_error = classify;
  o.balance = connpool::Balance::round_robin;
  connpool::MultiHostPool pool{std::vector<std::string>{"a", "b"},
                               [&](const std::string& host) { return FakeConn(*states[host]); }, o};
  {
    auto x = pool.acquire();
    auto y = pool.acquire();
  }  // one idle connection on each host
  auto h = pool.acquire();
  const std::string failing = h.host();
  const std::string other = failing == "a" ? "b" : "a";
  CHECK(h.fail(db_error("25006")) == ErrorAction::clear);
  CHECK(states[failing]->closed == 1);  // the failed one; the host had no other open
  CHECK(states[other]->closed == 0);    // the other host keeps its connection
  const auto s = pool.stats();
  for (const auto& hs : s.hosts) {
    if (hs.host == failing) {
      CHECK(hs.pool.closed_for(CloseReason::evicted_by_error) == 1);
    } else {
      CHECK(hs.pool.closed == 0);
      CHECK(hs.pool.idle == 1);
    }
  }
  // evict: the keep path is not a failure; fail() with evict is one, as invalidate() is.
  auto k = pool.acquire();
  CHECK(k.fail(db_error("40001")) == ErrorAction::keep);
}

// --- races (under TSan in .ci/run) -------------------------------------------------------------

TEST_CASE("ConnectionPool: fail() from 8 threads with every decision, while others acquire",
          "[design][lifecycle][fail][race]") {
  FakeState state;
  PoolOptions o = quiet(4);
  o.wait_policy = GENERATE(WaitPolicy::fifo, WaitPolicy::bounded_barging);
  o.max_uses = 5;
  o.on_error = [](const std::exception_ptr& e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::out_of_range&) {
      return ErrorAction::clear;
    } catch (const std::length_error&) {
      return ErrorAction::keep;
    } catch (...) {
      return ErrorAction::evict;
    }
  };
  Pool pool{FakeFactory{state}, o};
  std::atomic<int> served{0};
  std::atomic<int> cleared{0};
  std::atomic<int> other{0};
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 300; ++i) {
          try {
            auto h = pool.acquire(generous_deadline);
            ++served;
            { const auto hold = h->hold(); }
            switch ((i + t) % 7) {
              case 0:
                h.fail(std::make_exception_ptr(std::out_of_range("failover")));
                break;
              case 1:
                h.fail(std::make_exception_ptr(std::length_error("keep")));
                break;
              case 2:
                h.fail(std::make_exception_ptr(std::runtime_error("dead")));
                break;
              default:
                break;  // released by the destructor
            }
          } catch (const connpool::PoolCleared&) {
            ++cleared;
          } catch (...) {
            ++other;
          }
        }
      });
    }
  }
  CHECK(other == 0);
  CHECK(served + cleared == 8 * 300);
  CHECK(state.double_holds == 0);
  CHECK(state.double_closes == 0);
  CHECK(state.used_closed == 0);
  const auto s = pool.stats();
  CHECK(s.in_use == 0);
  CHECK(s.pending == 0);
  CHECK(static_cast<int>(s.created) == state.created.load());
  CHECK(s.closed + s.idle == s.created);
  std::uint64_t by_reason = 0;
  for (const auto n : s.closed_by_reason) {
    by_reason += n;
  }
  CHECK(by_reason == s.closed);
}
