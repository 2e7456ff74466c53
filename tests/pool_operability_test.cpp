// connpool - tests: evict_all(), event hooks, leak detection, keepalive and lifetime jitter
// SPDX-License-Identifier: MIT

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "fake_conn.hpp"
#include "lock_probe.hpp"
#include "sync.hpp"

using namespace std::chrono_literals;
using connpool::CloseReason;
using connpool::PoolEvent;
using connpool::PoolEventKind;
using connpool::PoolOptions;
using connpool_test::eventually;
using connpool_test::FakeConn;
using connpool_test::FakeFactory;
using connpool_test::FakeState;
using connpool_test::Gate;
using connpool_test::LockProbe;

namespace {

struct OperabilityTag {};
using Clock = connpool::ManualClock<OperabilityTag>;
using Pool = connpool::ConnectionPool<FakeConn, FakeFactory, Clock>;

PoolOptions quiet(std::size_t max_size, std::size_t min_size = 0) {
  return PoolOptions{.min_size = min_size,
                     .max_size = max_size,
                     .max_idle = 0ms,
                     .max_lifetime = 0ms,
                     .health_check_interval = 0ms,
                     .validate_on_acquire = false};
}

/// Records the events a pool's hooks receive. Thread-safe.
class EventLog {
 public:
  void hook_into(PoolOptions& o) {
    auto record = [this](const PoolEvent& e) {
      std::lock_guard lock(mutex_);  // guards events_
      events_.push_back(e);
    };
    o.on_create = record;
    o.on_acquire = record;
    o.on_release = record;
    o.on_close = record;
  }

  [[nodiscard]] std::vector<PoolEvent> events() const {
    std::lock_guard lock(mutex_);
    return events_;
  }

  [[nodiscard]] std::vector<PoolEvent> of(PoolEventKind kind) const {
    std::vector<PoolEvent> out;
    for (const PoolEvent& e : events()) {
      if (e.kind == kind) {
        out.push_back(e);
      }
    }
    return out;
  }

 private:
  mutable std::mutex mutex_;  // guards events_
  std::vector<PoolEvent> events_;
};

}  // namespace

// --- evict_all ---------------------------------------------------------------------------------

TEST_CASE("ConnectionPool: evict_all() closes idle connections now and in-use ones on return",
          "[pool][evict]") {
  Clock::set(0s);
  FakeState state;
  EventLog log;
  PoolOptions o = quiet(3, 1);
  log.hook_into(o);
  Pool pool{FakeFactory{state}, o};  // connection 1 (warm-up)
  auto a = pool.acquire();           // 1
  auto b = pool.acquire();           // 2
  pool.acquire().release();          // 3, now idle
  REQUIRE(pool.stats().idle == 1);

  CHECK(pool.evict_all() == 1);  // 3 closed at once
  CHECK(state.closed == 1);

  // Service goes on: a new connection replaces the evicted idle one.
  auto c = pool.acquire();
  CHECK(c->id() == 4);
  a.release();  // 1 was open before evict_all(): closed, not kept
  b.release();
  CHECK(state.closed == 3);
  c.release();  // 4 is from after: kept
  CHECK(state.closed == 3);
  auto s = pool.stats();
  CHECK(s.idle == 1);
  CHECK(s.in_use == 0);
  CHECK(pool.acquire()->id() == 4);

  std::multiset<int> closed_ids;
  for (const PoolEvent& e : log.of(PoolEventKind::close)) {
    CHECK(e.reason == CloseReason::evicted);
    closed_ids.insert(static_cast<int>(e.connection_id));
  }
  CHECK(closed_ids == std::multiset<int>{1, 2, 3});
}

TEST_CASE("ConnectionPool: evict_all() refills to min_size", "[pool][evict]") {
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, quiet(4, 2)};
  CHECK(pool.evict_all() == 2);
  const auto s = pool.stats();
  CHECK(s.idle == 2);
  CHECK(s.created == 4);
  CHECK(s.closed == 2);
}

TEST_CASE("ConnectionPool: a connection being opened during evict_all() is evicted too",
          "[pool][evict]") {
  Clock::set(0s);
  FakeState state;
  Gate entered;
  Gate go_on;
  state.on_create = [&] {
    entered.open();
    (void)go_on.wait();  // in a pool thread: no Catch2 assertion here
  };
  Pool pool{FakeFactory{state}, quiet(2)};
  std::thread creator([&] { pool.acquire().release(); });
  REQUIRE(entered.wait());
  pool.evict_all();  // the connect started before: its connection is from before the eviction
  go_on.open();
  creator.join();
  CHECK(state.created == 1);
  CHECK(state.closed == 1);  // closed when it came back
  CHECK(pool.stats().idle == 0);
}

// --- Hooks -------------------------------------------------------------------------------------

TEST_CASE("ConnectionPool: hooks see create, acquire, release and close, outside the lock",
          "[pool][hooks]") {
  Clock::set(0s);
  FakeState state;
  LockProbe probe;
  std::mutex mutex;
  std::vector<PoolEvent> events;
  PoolOptions o = quiet(2);
  Pool* pool_ptr = nullptr;
  auto record = [&](const PoolEvent& e) {
    probe.check(*pool_ptr);
    std::lock_guard lock(mutex);
    events.push_back(e);
  };
  o.on_create = record;
  o.on_acquire = record;
  o.on_release = record;
  o.on_close = record;
  Pool pool{FakeFactory{state}, o};
  pool_ptr = &pool;

  auto h = pool.acquire();
  std::this_thread::sleep_for(20ms);  // a hold of at least 20 ms, for held_for
  h.invalidate();
  pool.close();

  std::lock_guard lock(mutex);
  REQUIRE(events.size() == 4);
  CHECK(events[0].kind == PoolEventKind::create);
  CHECK(events[1].kind == PoolEventKind::acquire);
  CHECK(events[2].kind == PoolEventKind::release);
  CHECK(events[2].held_for >= 20ms);
  CHECK(events[3].kind == PoolEventKind::close);
  CHECK(events[3].reason == CloseReason::invalidated);
  for (const PoolEvent& e : events) {
    CHECK(e.connection_id == 1);
    CHECK(e.thread == std::this_thread::get_id());
  }
  CHECK(probe.free_count() == 4);
  CHECK(probe.blocked_count() == 0);
}

TEST_CASE("ConnectionPool: close reasons", "[pool][hooks]") {
  Clock::set(0s);
  FakeState state;
  EventLog log;
  PoolOptions o = quiet(4);
  o.max_lifetime = 10min;
  o.validate_on_acquire = true;
  o.validation_bypass = 0ms;
  log.hook_into(o);
  Pool pool{FakeFactory{state}, o};

  pool.acquire().release();  // 1
  state.ping_failures_left = 1;
  pool.acquire().release();  // 1 fails its ping and is closed; 2 is created
  Clock::advance(11min);
  CHECK(pool.prune() == 1);  // 2 expired
  state.reset_throws = true;
  pool.acquire().release();  // 3: reset throws
  state.reset_throws = false;
  auto h = pool.acquire();  // 4
  pool.close();             // nothing idle now
  h.release();              // 4 comes back to a closed pool

  std::vector<CloseReason> reasons;
  for (const PoolEvent& e : log.of(PoolEventKind::close)) {
    reasons.push_back(e.reason);
  }
  CHECK(reasons == std::vector<CloseReason>{CloseReason::validation_failed, CloseReason::expired,
                                            CloseReason::reset_failed, CloseReason::pool_closed});
}

TEST_CASE("ConnectionPool: a hook that throws does not break the pool", "[pool][hooks]") {
  Clock::set(0s);
  FakeState state;
  PoolOptions o = quiet(2);
  o.on_acquire = [](const PoolEvent&) { throw std::runtime_error("hook"); };
  o.on_release = [](const PoolEvent&) { throw std::runtime_error("hook"); };
  Pool pool{FakeFactory{state}, o};
  for (int i = 0; i < 3; ++i) {
    auto h = pool.acquire();
    CHECK(h->id() == 1);
  }
  CHECK(pool.stats().acquired == 3);
  CHECK(pool.stats().released == 3);
}

// --- Leak detection ----------------------------------------------------------------------------

TEST_CASE("ConnectionPool: a handle held past leak_threshold is reported once", "[pool][leak]") {
  FakeState state;
  std::mutex mutex;
  std::vector<connpool::LeakReport> reports;
  PoolOptions o = quiet(2);
  o.leak_threshold = 50ms;  // the maintenance thread scans every 25 ms
  o.on_leak = [&](const connpool::LeakReport& r) {
    std::lock_guard lock(mutex);
    reports.push_back(r);
  };
  connpool::ConnectionPool pool{FakeFactory{state}, o};
  auto count = [&] {
    std::lock_guard lock(mutex);
    return reports.size();
  };

  auto quick = pool.acquire();
  quick.release();  // given back at once: never a leak
  const auto start = std::chrono::steady_clock::now();
  auto h = pool.acquire();
  REQUIRE(eventually([&] { return count() == 1; }));
  {
    std::lock_guard lock(mutex);
    CHECK(reports[0].connection_id == 1);
    CHECK(reports[0].holder == std::this_thread::get_id());
    CHECK(reports[0].held_for >= 50ms);
    CHECK(reports[0].held_for <= std::chrono::steady_clock::now() - start);
  }
  CHECK(pool.stats().leaks == 1);
  // Once per check-out: the scans of the next 200 ms (8 of them) report nothing new.
  std::this_thread::sleep_for(200ms);
  CHECK(count() == 1);
  h.release();
  auto again = pool.acquire();  // a new check-out, held too long again
  REQUIRE(eventually([&] { return count() == 2; }));
  CHECK(pool.stats().leaks == 2);
}

// --- Keepalive ---------------------------------------------------------------------------------

TEST_CASE("ConnectionPool: keepalive pings idle connections out of the idle set",
          "[pool][keepalive]") {
  Clock::set(0s);
  FakeState state;
  PoolOptions o = quiet(3, 2);
  o.keepalive_interval = 1min;
  Pool* pool_ptr = nullptr;
  std::vector<std::size_t> idle_during_ping;
  state.on_ping = [&] { idle_during_ping.push_back(pool_ptr->stats().idle); };
  Pool pool{FakeFactory{state}, o};
  pool_ptr = &pool;
  REQUIRE(pool.stats().idle == 2);

  Clock::advance(30s);
  CHECK(pool.prune() == 0);
  CHECK(state.pings == 0);  // not due yet

  Clock::advance(31s);
  CHECK(pool.prune() == 0);
  CHECK(state.pings == 2);
  CHECK(idle_during_ping == std::vector<std::size_t>{0, 0});  // both out while pinged
  CHECK(pool.stats().idle == 2);

  Clock::advance(30s);
  CHECK(pool.prune() == 0);
  CHECK(state.pings == 2);  // pinged 30 s ago: not due

  // A connection used recently is not pinged; a dead one is closed and replaced.
  Clock::advance(31s);
  pool.acquire().release();  // one of them is used now
  state.ping_failures_left = 1;
  CHECK(pool.prune() == 1);
  CHECK(state.pings == 3);
  const auto s = pool.stats();
  CHECK(s.validation_failures == 1);
  CHECK(s.idle == 2);  // refilled to min_size
  CHECK(s.created == 3);
}

// --- Lifetime jitter ---------------------------------------------------------------------------

TEST_CASE("ConnectionPool: lifetime_jitter spreads the expiry of connections opened together",
          "[pool][expiry][jitter]") {
  Clock::set(0s);
  FakeState state;
  PoolOptions o = quiet(20, 20);
  o.max_lifetime = 1000s;
  o.lifetime_jitter = 0.025;  // lifetimes between 975 s and 1000 s
  Pool pool{FakeFactory{state}, o};
  REQUIRE(pool.stats().idle == 20);

  Clock::set(974s);
  CHECK(pool.prune() == 0);
  Clock::set(987500ms);
  // Uniform lifetimes: all 20 on one side of the middle has a probability of 2 in a million.
  const std::size_t early = pool.prune();
  CHECK(early > 0);
  CHECK(early < 20);
  Clock::set(1000s);
  // The refilled ones are young; every original is gone.
  CHECK(pool.prune() == 20 - early);
  CHECK(state.closed == 20);
}

TEST_CASE("ConnectionPool: lifetime jitter defaults to 2.5 % on real clocks for long lifetimes",
          "[pool][expiry][jitter]") {
  using connpool::detail::default_lifetime_jitter;
  CHECK_FALSE(PoolOptions{}.lifetime_jitter.has_value());
  CHECK(default_lifetime_jitter<std::chrono::steady_clock>(PoolOptions{}.max_lifetime) == 0.025);
  CHECK(default_lifetime_jitter<std::chrono::system_clock>(11s) == 0.025);
  // HikariCP's threshold: 10 s or less stays exact.
  CHECK(default_lifetime_jitter<std::chrono::steady_clock>(10s) == 0.0);
  // A manual clock is a deterministic test: exact lifetimes unless asked.
  CHECK(default_lifetime_jitter<Clock>(PoolOptions{}.max_lifetime) == 0.0);
}

TEST_CASE("ConnectionPool: on a manual clock the default keeps lifetimes exact (DESIGN 6)",
          "[pool][expiry][jitter][design-6]") {
  Clock::set(0s);
  FakeState state;
  PoolOptions o = quiet(20, 20);
  o.max_lifetime = PoolOptions{}.max_lifetime;  // 30 min; lifetime_jitter unset
  Pool pool{FakeFactory{state}, o};
  Clock::set(30min - 1ms);
  CHECK(pool.prune() == 0);
  Clock::set(30min + 1ms);
  CHECK(pool.prune() == 20);
}

TEST_CASE("ConnectionPool: an explicit lifetime_jitter applies to short lifetimes too",
          "[pool][expiry][jitter]") {
  Clock::set(0s);
  FakeState state;
  PoolOptions o = quiet(20, 20);
  o.max_lifetime = 1s;
  o.lifetime_jitter = 0.5;  // lifetimes between 500 ms and 1 s
  Pool pool{FakeFactory{state}, o};
  Clock::set(500ms - 1ms);
  CHECK(pool.prune() == 0);
  Clock::set(750ms);
  const std::size_t early = pool.prune();  // all 20 on one side: p = 2e-6
  CHECK(early > 0);
  CHECK(early < 20);
  Clock::set(1s + 1ms);
  CHECK(pool.prune() == 20 - early);
}

// --- Runtime resize ----------------------------------------------------------------------------

TEST_CASE("ConnectionPool: set_max_size() growing serves a waiter at once", "[pool][resize]") {
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, quiet(1)};
  auto held = pool.acquire();
  std::atomic<int> got{0};
  std::thread waiter([&] {
    auto h = pool.acquire(connpool_test::generous_deadline);
    got = h->id();
  });
  REQUIRE(eventually([&] { return pool.stats().pending == 1; }));
  pool.set_max_size(2);
  waiter.join();
  CHECK(got == 2);
  CHECK(pool.stats().max_size == 2);
  CHECK(pool.options().max_size == 1);  // options() keeps the constructor's values
}

TEST_CASE("ConnectionPool: set_max_size() shrinking closes the surplus as it comes back",
          "[pool][resize]") {
  Clock::set(0s);
  FakeState state;
  EventLog log;
  PoolOptions o = quiet(3);
  log.hook_into(o);
  Pool pool{FakeFactory{state}, o};
  auto a = pool.acquire();
  auto b = pool.acquire();
  pool.acquire().release();  // 3 idle
  pool.set_max_size(1);
  CHECK(state.closed == 1);  // the idle one, at once
  a.release();               // 2 open > 1: closed
  CHECK(state.closed == 2);
  CHECK_THROWS_AS(pool.acquire(0ms), connpool::AcquireTimeout);  // b fills the pool
  b.release();                                                   // now within the bound: kept
  CHECK(state.closed == 2);
  const auto s = pool.stats();
  CHECK(s.idle == 1);
  CHECK(s.max_size == 1);
  CHECK(pool.acquire()->id() == 2);
  for (const PoolEvent& e : log.of(PoolEventKind::close)) {
    CHECK(e.reason == CloseReason::shrunk);
  }
}

TEST_CASE("ConnectionPool: set_min_size() refills at once, bad sizes are rejected",
          "[pool][resize]") {
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, quiet(3)};
  pool.set_min_size(2);
  CHECK(pool.stats().idle == 2);
  CHECK_THROWS_WITH(pool.set_min_size(4),
                    "connpool: set_min_size: min_size (4) must not exceed max_size (3)");
  CHECK_THROWS_WITH(pool.set_max_size(1),
                    "connpool: set_max_size: max_size (1) must not be below min_size (2)");
  CHECK_THROWS_AS(pool.set_max_size(0), std::invalid_argument);
  CHECK(pool.stats().max_size == 3);
}

TEST_CASE("ConnectionPool: growing past the initial max_size while other threads read stats",
          "[pool][resize]") {
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, quiet(2)};
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    while (!stop) {
      const auto s = pool.stats();
      CHECK(s.total_connections() <= 64);
    }
  });
  std::vector<connpool::PooledHandle<FakeConn>> held;
  for (std::size_t n = 4; n <= 64; n *= 2) {
    pool.set_max_size(n);
    while (held.size() < n) {
      held.push_back(pool.acquire(0ms));
    }
  }
  stop = true;
  reader.join();
  std::set<int> ids;
  for (auto& h : held) {
    ids.insert(h->id());
  }
  CHECK(ids.size() == 64);
  CHECK(pool.stats().in_use == 64);
  CHECK(state.double_holds == 0);
}

// --- Connect-storm control ---------------------------------------------------------------------

TEST_CASE("ConnectionPool: at most max_connecting connects run at once", "[pool][connect]") {
  const std::size_t limit = GENERATE(std::size_t{1}, std::size_t{2});
  FakeState state;
  Gate go_on;
  std::atomic<int> in_factory{0};
  std::atomic<int> most_in_factory{0};
  state.on_create = [&] {
    const int now = in_factory.fetch_add(1) + 1;
    int seen = most_in_factory.load();
    while (seen < now && !most_in_factory.compare_exchange_weak(seen, now)) {
    }
    (void)go_on.wait();  // in a pool thread: no Catch2 assertion here
    in_factory.fetch_sub(1);
  };
  PoolOptions o = quiet(4);
  o.max_connecting = limit;
  connpool::ConnectionPool pool{FakeFactory{state}, o};
  std::vector<std::thread> callers;
  for (int i = 0; i < 4; ++i) {
    callers.emplace_back([&] { pool.acquire(connpool_test::generous_deadline).release(); });
  }
  // `limit` callers connect; the others wait in the queue for a permit.
  REQUIRE(eventually(
      [&] { return in_factory == static_cast<int>(limit) && pool.stats().pending == 4 - limit; }));
  go_on.open();
  for (auto& t : callers) {
    t.join();
  }
  CHECK(most_in_factory == static_cast<int>(limit));
  CHECK(pool.stats().pending == 0);
}

TEST_CASE("ConnectionPool: max_connecting = 0 lets every caller connect at once",
          "[pool][connect]") {
  FakeState state;
  Gate go_on;
  std::atomic<int> in_factory{0};
  state.on_create = [&] {
    in_factory.fetch_add(1);
    (void)go_on.wait();  // in a pool thread: no Catch2 assertion here
  };
  PoolOptions o = quiet(4);
  o.max_connecting = 0;
  connpool::ConnectionPool pool{FakeFactory{state}, o};
  std::vector<std::thread> callers;
  for (int i = 0; i < 4; ++i) {
    callers.emplace_back([&] { pool.acquire(connpool_test::generous_deadline).release(); });
  }
  CHECK(eventually([&] { return in_factory == 4; }));
  go_on.open();
  for (auto& t : callers) {
    t.join();
  }
}

TEST_CASE("ConnectionPool: connects back off after three failures, callers fail early",
          "[pool][connect]") {
  FakeState state;
  state.factory_fails = true;
  state.factory_error_code = 503;
  connpool::ConnectionPool pool{FakeFactory{state}, quiet(2)};
  // Three failures reach their callers unchanged (DESIGN 3).
  for (int i = 0; i < 3; ++i) {
    CHECK_THROWS_AS(pool.acquire(1s), connpool_test::FactoryError);
  }
  // Now connects wait 7.5-12.5 ms: a caller whose deadline comes first fails at once, with the
  // last connect error nested in its AcquireTimeout.
  const int calls = state.factory_calls;
  bool nested = false;
  try {
    auto h = pool.acquire(1ms);
    FAIL("acquire should have failed");
  } catch (const connpool::AcquireTimeout& e) {
    const std::string what = e.what();
    CHECK(what.find("failed early") != std::string::npos);
    CHECK(what.find("after 3 consecutive failures") != std::string::npos);
    CHECK(what.find("last connect error") != std::string::npos);
    try {
      std::rethrow_if_nested(e);
    } catch (const connpool_test::FactoryError& inner) {
      nested = inner.code == 503;
    }
  }
  CHECK(nested);
  CHECK(state.factory_calls == calls);  // no connect was attempted
  // A caller who can wait waits out the backoff, then connects.
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(pool.acquire(5s), connpool_test::FactoryError);
  CHECK(std::chrono::steady_clock::now() - start >= 7ms);
  // The backend is back: the next connect (after the next backoff) succeeds, and the count of
  // consecutive failures starts again.
  state.factory_fails = false;
  auto h = pool.acquire(5s);
  CHECK(h);
  state.factory_fails = true;
  CHECK_THROWS_AS(pool.acquire(0ms), connpool_test::FactoryError);  // no backoff after one
}

namespace {

/// A factory that fails its first `failures` calls, then records how many of its calls run at
/// once, against the slow start's limit at that moment.
struct SlowStartProbe {
  FakeState* state;
  std::mutex* mutex;          // guards the fields below
  int* failures_left;         // calls still to fail
  int* active;                // successful-phase calls running now
  int* succeeded;             // successful calls returned
  std::vector<int>* actives;  // `active` at each start, in order
  int* over_limit;            // starts beyond min(max_connecting, 2^succeeded)
  int max_connecting;
  FakeConn operator()() const {
    {
      const std::lock_guard lock(*mutex);
      if (*failures_left > 0) {
        --*failures_left;
        throw connpool_test::FactoryError(503);
      }
      ++*active;
      actives->push_back(*active);
      // The gate counts a success when the factory has returned, so its limit is never above
      // this one (counted on return, before the pool learns of it).
      const int limit = std::min(max_connecting, 1 << std::min(*succeeded, 16));
      *over_limit += *active > limit ? 1 : 0;
    }
    std::this_thread::sleep_for(5ms);  // room for other connects to start meanwhile
    FakeConn c = FakeFactory{*state}();
    const std::lock_guard lock(*mutex);
    --*active;
    ++*succeeded;
    return c;
  }
};

}  // namespace

TEST_CASE("ConnectionPool: after a backoff, connects start one at a time and then double",
          "[design][pool][connect][slow_start]") {
  FakeState state;
  std::mutex mutex;
  int failures_left = 3;
  int active = 0;
  int succeeded = 0;
  std::vector<int> actives;
  int over_limit = 0;
  PoolOptions o = quiet(8);
  o.max_connecting = 4;
  connpool::ConnectionPool pool{
      SlowStartProbe{&state, &mutex, &failures_left, &active, &succeeded, &actives, &over_limit, 4},
      o};
  for (int i = 0; i < 3; ++i) {
    CHECK_THROWS_AS(pool.acquire(1s), connpool_test::FactoryError);
  }
  // A backoff runs. Eight callers arrive, each needing a connection of its own.
  std::vector<connpool::PooledHandle<FakeConn>> held(8);
  {
    std::vector<std::jthread> callers;
    for (int t = 0; t < 8; ++t) {
      callers.emplace_back([&, t] { held[t] = pool.acquire(connpool_test::generous_deadline); });
    }
  }
  const std::lock_guard lock(mutex);
  CHECK(succeeded == 8);
  REQUIRE(actives.size() == 8);
  CHECK(actives.front() == 1);  // the probe ran alone
  CHECK(over_limit == 0);       // then 2, 4: never more than the slow start admitted
  CHECK(*std::max_element(actives.begin(), actives.end()) <= 4);
}

TEST_CASE(
    "ConnectionPool: a caller that failed early keeps the connect error's text after the "
    "pool replaced the error",
    "[pool][connect]") {
  // The message of a caller that fails early quotes the last connect error; the next failure
  // replaces (and frees) that error on another thread. Under ThreadSanitizer this checks that
  // the message is not read from the freed error: the flag below is relaxed on purpose, so
  // nothing else orders the two threads.
  FakeState state;
  state.factory_fails = true;
  connpool::ConnectionPool pool{FakeFactory{state}, quiet(1)};
  for (int i = 0; i < 3; ++i) {
    CHECK_THROWS_AS(pool.acquire(1s), connpool_test::FactoryError);
  }
  std::atomic<bool> reported{false};
  std::string message;
  std::thread early([&] {
    try {
      auto h = pool.acquire(1ms);
    } catch (const connpool::AcquireTimeout& e) {
      message = e.what();
    }
    reported.store(true, std::memory_order_relaxed);
  });
  while (!reported.load(std::memory_order_relaxed)) {
    std::this_thread::yield();
  }
  // Waits out the backoff; the fourth failure replaces the error the early caller quoted.
  CHECK_THROWS_AS(pool.acquire(5s), connpool_test::FactoryError);
  early.join();
  CHECK(message.find("failed early") != std::string::npos);
  CHECK(message.find("last connect error: fake factory: connect refused") != std::string::npos);
}

TEST_CASE("ConnectionPool: queued waiters that cannot outlast a backoff fail early",
          "[pool][connect]") {
  FakeState state;
  state.factory_fails = true;
  PoolOptions o = quiet(1);
  o.max_connecting = 1;
  connpool::ConnectionPool pool{FakeFactory{state}, o};
  // Eight failures: the next backoff is 320 ms (240-400 ms with jitter).
  for (int i = 0; i < 8; ++i) {
    CHECK_THROWS_AS(pool.acquire(5s), connpool_test::FactoryError);
  }
  Gate entered;
  Gate go_on;
  state.on_create = [&] {
    entered.open();
    (void)go_on.wait();  // in a pool thread: no Catch2 assertion here
  };
  std::atomic<bool> first_failed{false};
  std::thread first([&] {
    try {
      auto h = pool.acquire(5s);
    } catch (const connpool_test::FactoryError&) {
      first_failed = true;
    }
  });
  REQUIRE(entered.wait());  // the ninth connect is running (the only permit)
  std::string failure;
  std::thread second([&] {
    try {
      auto h = pool.acquire(100ms);
    } catch (const connpool::AcquireTimeout& e) {
      failure = e.what();
    }
  });
  REQUIRE(eventually([&] { return pool.stats().pending == 1; }));
  go_on.open();  // the connect fails: a 640 ms backoff (480-800 ms) outlasts the waiter
  first.join();
  second.join();
  CHECK(first_failed);
  CHECK(failure.find("failed early") != std::string::npos);
}

TEST_CASE("ConnectionPool: the pool recovers on its own when the backend returns",
          "[pool][connect]") {
  FakeState state;
  state.factory_fails = true;
  PoolOptions o = quiet(2, 1);
  o.health_check_interval = 10ms;
  o.fail_fast = false;
  connpool::ConnectionPool pool{FakeFactory{state}, o};
  REQUIRE(eventually([&] { return state.factory_failures >= 4; }));  // refill keeps trying
  state.factory_fails = false;
  CHECK(eventually([&] { return pool.stats().idle == 1; }));
}
