// connpool - tests: wait policies (fifo, bounded_barging), the per-thread fast path and its hints
// SPDX-License-Identifier: MIT

// The pool looks for an idle connection in this order: the calling thread's hint (the slot it
// released last, claimed lock-free), the idle stack (LIFO), a scan of all slots (idle slots
// sitting in other threads' hints), then creation, then the FIFO waiter queue. These tests pin
// down what each step promises, and how WaitPolicy changes who gets a released connection while
// callers wait:
//   - fifo (and bounded_barging with starvation_bound 0): strict arrival order (DESIGN 4);
//   - bounded_barging (the default): a running caller may take a just-released connection ahead
//     of sleeping waiters (the oldest waiter is woken to compete for it), until the oldest waiter
//     has waited longer than starvation_bound; every release then goes to the waiters directly,
//     oldest first, and newcomers queue.

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

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
using connpool_test::Gate;
using connpool_test::generous_deadline;
using connpool_test::Outcome;

namespace {

using Pool = connpool::ConnectionPool<FakeConn, FakeFactory>;
using Waiter = connpool_test::Waiter<Pool>;

/// A wait policy as the options spell it, with a name for INFO().
struct PolicyCase {
  const char* name;
  WaitPolicy policy;
  std::chrono::microseconds bound;

  [[nodiscard]] PoolOptions options(std::size_t max_size) const {
    return PoolOptions{.max_size = max_size,
                       .health_check_interval = 0ms,
                       .wait_policy = policy,
                       .starvation_bound = bound};
  }
};

/// The configurations that must behave as strict FIFO (DESIGN 4).
constexpr std::array<PolicyCase, 2> fair_cases{{
    {"fifo", WaitPolicy::fifo, 1000us},
    {"bounded_barging with starvation_bound 0", WaitPolicy::bounded_barging, 0us},
}};

/// Both policies at their default bound: for properties that hold whatever the policy.
constexpr std::array<PolicyCase, 2> every_policy{{
    {"fifo", WaitPolicy::fifo, 1000us},
    {"bounded_barging, bound 1 ms", WaitPolicy::bounded_barging, 1000us},
}};

/// A starvation bound no test comes near: barging is always allowed.
constexpr std::chrono::microseconds never_starving = 10s;

PoolOptions barging(std::size_t max_size, std::chrono::microseconds bound) {
  return PolicyCase{"bounded_barging", WaitPolicy::bounded_barging, bound}.options(max_size);
}

/// Starts a waiter and returns once the pool counts it as pending, so waiters queue in the
/// order they were started.
std::unique_ptr<Waiter> start_waiter(Pool& pool,
                                     std::chrono::milliseconds timeout = generous_deadline) {
  const std::size_t before = pool.stats().pending;
  auto w = std::make_unique<Waiter>(pool, timeout);
  const bool queued = eventually([&] { return pool.stats().pending == before + 1; });
  REQUIRE(queued);
  return w;
}

/// Whether `w` is still blocked in acquire().
bool still_waiting(const Waiter& w) {
  return w.outcome() == Outcome::running;
}

/// A little work while holding a connection, so that two holders of one connection (a pool
/// bug) would overlap inside FakeConn::Hold and be counted.
void use(FakeConn& conn) {
  auto hold = conn.hold();
  for (int i = 0; i < 8; ++i) {
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
}

}  // namespace

// --- options ------------------------------------------------------------------------------------

TEST_CASE("PoolOptions: the wait policy defaults to bounded_barging with a 500 us starvation bound",
          "[options][policy]") {
  const PoolOptions o;
  CHECK(o.wait_policy == WaitPolicy::bounded_barging);
  CHECK(o.starvation_bound == 500us);
}

TEST_CASE("PoolOptions: a negative starvation_bound is rejected naming the field",
          "[options][policy]") {
  const PoolOptions bad{.wait_policy = WaitPolicy::bounded_barging, .starvation_bound = -1us};
  std::string message;
  try {
    bad.validate();
    FAIL("validate() accepted a negative starvation_bound");
  } catch (const std::invalid_argument& e) {
    message = e.what();
  }
  INFO("message: " << message);
  CHECK(message.find("starvation_bound") != std::string::npos);

  // It is checked whatever the policy, and before the factory is ever called.
  FakeState state;
  const PoolOptions bad_fifo{.min_size = 1, .starvation_bound = -5us};
  CHECK_THROWS_AS(Pool(FakeFactory{state}, bad_fifo), std::invalid_argument);
  CHECK(state.factory_calls == 0);

  // The edge of the range is accepted.
  CHECK_NOTHROW(PoolOptions{.starvation_bound = 0us}.validate());
  CHECK_NOTHROW(
      PoolOptions{.wait_policy = WaitPolicy::bounded_barging, .starvation_bound = 0us}.validate());
}

// --- fifo: DESIGN 4 unchanged -------------------------------------------------------------------

TEST_CASE(
    "ConnectionPool: under fifo the releasing thread cannot take back a connection a caller waits "
    "for",
    "[pool][policy][design-4]") {
  // DESIGN 4: "callers wait in FIFO order, and a released connection is handed straight to the
  // longest waiter (no barging)." The connection has gone round through this thread's hint, so
  // the lock-free fast path is live: it must stay shut while anyone waits.
  const PolicyCase& c = fair_cases.at(GENERATE(0u, 1u));
  INFO(c.name);
  FakeState state;
  Pool pool{FakeFactory{state}, c.options(1)};
  for (int i = 0; i < 3; ++i) {
    auto warm = pool.acquire();  // released at once, into this thread's hint
  }
  auto h = pool.acquire();
  const int id = h->id();

  auto w1 = start_waiter(pool);
  CHECK_FALSE(pool.try_acquire().has_value());
  auto w2 = start_waiter(pool);  // a newcomer's acquire() queues behind w1
  CHECK(pool.stats().pending == 2);

  h.release();
  // At once, from the releasing thread: nothing, the connection is w1's.
  CHECK_FALSE(pool.try_acquire().has_value());
  CHECK_THROWS_AS((void)pool.acquire(0ms), connpool::AcquireTimeout);
  REQUIRE(w1->wait_for_outcome(Outcome::got));
  CHECK(w1->id() == id);
  CHECK(still_waiting(*w2));

  // A newcomer that arrives while w2 waits queues behind it as well.
  auto w3 = start_waiter(pool);
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
  CHECK(s.created == 1);
  CHECK(s.timeouts == 1);  // the acquire(0ms) above
  CHECK(s.pending == 0);
  CHECK(s.idle == 1);
  CHECK(s.acquired == 7);  // 3 warm-up cycles, h, w1, w2, w3
}

TEST_CASE("ConnectionPool: under fifo a freed connection goes to the waiters in order, one each",
          "[pool][policy][design-4]") {
  // Two connections come back one right after the other: each of the two sleeping waiters gets
  // one, in queue order, and the third keeps waiting.
  const PolicyCase& c = fair_cases.at(GENERATE(0u, 1u));
  INFO(c.name);
  FakeState state;
  Pool pool{FakeFactory{state}, c.options(2)};
  auto a = pool.acquire();
  auto b = pool.acquire();
  auto w1 = start_waiter(pool);
  auto w2 = start_waiter(pool);
  auto w3 = start_waiter(pool);
  a.release();
  b.release();
  CHECK_FALSE(pool.try_acquire().has_value());
  REQUIRE(w1->wait_for_outcome(Outcome::got));
  REQUIRE(w2->wait_for_outcome(Outcome::got));
  CHECK(w1->id() != w2->id());
  CHECK(still_waiting(*w3));
  w2->let_go();
  REQUIRE(w3->wait_for_outcome(Outcome::got));
  CHECK(pool.stats().created == 2);
}

// --- bounded_barging ----------------------------------------------------------------------------

TEST_CASE(
    "ConnectionPool: under bounded_barging a running caller may take a connection ahead of a "
    "waiter",
    "[pool][policy][design-4]") {
  // Below the starvation bound the release publishes the connection idle and wakes the oldest
  // waiter to compete for it; the releasing thread, still running, re-acquires it at once.
  FakeState state;
  Pool pool{FakeFactory{state}, barging(1, never_starving)};
  auto h = pool.acquire();
  const int id = h->id();
  auto w = start_waiter(pool);

  // The woken waiter may win the race now and then (it competes too, which is allowed): it then
  // gives the connection back and a new waiter queues, and we try again.
  bool barged = false;
  int rounds = 0;
  while (!barged && rounds < 50) {
    ++rounds;
    h.release();
    auto again = pool.try_acquire();
    if (again.has_value()) {
      barged = true;
      h = std::move(*again);
      break;
    }
    REQUIRE(w->wait_for_outcome(Outcome::got));
    w->let_go();
    REQUIRE(w->wait_released());
    w.reset();
    h = pool.acquire(0ms);
    w = start_waiter(pool);
  }
  INFO("rounds: " << rounds);
  REQUIRE(barged);
  CHECK(h->id() == id);
  CHECK(still_waiting(*w));  // it was woken, lost, and sleeps again
  CHECK(pool.stats().pending == 1);

  // The holder releases and does not come back: the waiter, woken to compete, gets it.
  h.release();
  REQUIRE(w->wait_for_outcome(Outcome::got));
  CHECK(w->id() == id);
  w->let_go();
  REQUIRE(w->wait_released());
  const auto s = pool.stats();
  CHECK(s.timeouts == 0);
  CHECK(s.pending == 0);
  CHECK(s.created == 1);
}

TEST_CASE("ConnectionPool: under bounded_barging a starving waiter gets the next release directly",
          "[pool][policy][design-4]") {
  // Once the oldest waiter has waited longer than starvation_bound, releases hand off to it
  // directly (the releasing thread's immediate re-acquire finds nothing) and newcomers queue
  // until the queue is no longer starving.
  FakeState state;
  Pool pool{FakeFactory{state}, barging(1, 1ms)};
  auto h = pool.acquire();
  const int id = h->id();
  auto w1 = start_waiter(pool);
  auto w2 = start_waiter(pool);
  // The only sleep in this file: the bound must merely be exceeded, not hit precisely.
  std::this_thread::sleep_for(20ms);

  h.release();
  CHECK_FALSE(pool.try_acquire().has_value());
  REQUIRE(w1->wait_for_outcome(Outcome::got));
  CHECK(w1->id() == id);
  CHECK(still_waiting(*w2));

  // w2 starves too: a newcomer queues behind it, and w1's release goes to w2.
  auto w3 = start_waiter(pool);
  w1->let_go();
  REQUIRE(w2->wait_for_outcome(Outcome::got));
  CHECK(w2->id() == id);
  CHECK(still_waiting(*w3));

  w2->let_go();
  REQUIRE(w3->wait_for_outcome(Outcome::got));
  w3->let_go();
  REQUIRE(w3->wait_released());
  const auto s = pool.stats();
  CHECK(s.timeouts == 0);
  CHECK(s.pending == 0);
  CHECK(s.created == 1);
}

TEST_CASE(
    "ConnectionPool: under bounded_barging every connection released while waiters starve goes "
    "to them, even when the waiters granted before have not run yet",
    "[pool][policy][design-4]") {
  // DESIGN 4: "no caller is overtaken for longer than the wait policy's bound". Four waiters
  // starve and the four connections are released back to back by this thread, faster than the
  // woken waiters run: each must go to a waiter, none to this thread's immediate try_acquire().
  FakeState state;
  Pool pool{FakeFactory{state}, barging(4, 1ms)};
  std::vector<connpool::PooledHandle<FakeConn>> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(pool.acquire());
  }
  std::vector<std::unique_ptr<Waiter>> waiters;
  for (int i = 0; i < 4; ++i) {
    waiters.push_back(start_waiter(pool));
  }
  std::this_thread::sleep_for(20ms);  // the bound must merely be exceeded
  for (auto& h : held) {
    h.release();
    CHECK_FALSE(pool.try_acquire().has_value());
  }
  for (auto& w : waiters) {
    REQUIRE(w->wait_for_outcome(Outcome::got));
  }
  for (auto& w : waiters) {
    w->let_go();
    REQUIRE(w->wait_released());
  }
  const auto s = pool.stats();
  CHECK(s.waited == 4);
  CHECK(s.timeouts == 0);
  CHECK(s.pending == 0);
  CHECK(s.created == 4);
}

TEST_CASE("ConnectionPool: two connections released together reach two sleeping waiters",
          "[pool][policy][design-4]") {
  // Whatever the policy, a connection released while callers sleep must reach one of them: a
  // waiter that takes one connection must not leave a second idle one behind while the next
  // waiter sleeps until its timeout.
  const PolicyCase cases[] = {
      {"fifo", WaitPolicy::fifo, 1000us},
      {"bounded_barging, bound 0", WaitPolicy::bounded_barging, 0us},
      {"bounded_barging, bound 10 s", WaitPolicy::bounded_barging, never_starving},
  };
  const PolicyCase& c = cases[GENERATE(0u, 1u, 2u)];
  INFO(c.name);
  FakeState state;
  Pool pool{FakeFactory{state}, c.options(2)};
  auto a = pool.acquire();
  auto b = pool.acquire();
  auto w1 = start_waiter(pool, 10s);
  auto w2 = start_waiter(pool, 10s);
  a.release();
  b.release();
  REQUIRE(w1->wait_for_outcome(Outcome::got));
  REQUIRE(w2->wait_for_outcome(Outcome::got));
  CHECK(w1->id() != w2->id());
  const auto s = pool.stats();
  CHECK(s.timeouts == 0);
  CHECK(s.pending == 0);
  CHECK(s.in_use == 2);
}

// --- the fast path: hints, the idle stack, the scan
// ------------------------------------------------

TEST_CASE("ConnectionPool: one thread gets its connections back in exact LIFO order",
          "[pool][fastpath][design-2]") {
  // DESIGN 2: "Reuse order is LIFO: the most recently released idle connection is handed out
  // first." For one thread: the last release sits in its hint, the earlier ones on the stack.
  const PolicyCase& c = every_policy.at(GENERATE(0u, 1u));
  INFO(c.name);
  FakeState state;
  Pool pool{FakeFactory{state}, c.options(8)};
  auto a = pool.acquire();
  auto b = pool.acquire();
  auto cc = pool.acquire();
  auto d = pool.acquire();
  const int ia = a->id();
  const int ib = b->id();
  const int ic = cc->id();
  const int id = d->id();
  a.release();
  b.release();
  cc.release();
  d.release();
  auto first = pool.acquire();
  auto second = pool.acquire();
  auto third = pool.acquire();
  auto fourth = pool.acquire();
  CHECK(first->id() == id);
  CHECK(second->id() == ic);
  CHECK(third->id() == ib);
  CHECK(fourth->id() == ia);
  const auto s = pool.stats();
  CHECK(s.created == 4);
  CHECK(s.reused == 4);
  CHECK(s.waited == 0);
}

TEST_CASE(
    "ConnectionPool: a thread that cycles acquire/release gets the same connection every time",
    "[pool][fastpath][design-2]") {
  const PolicyCase& c = every_policy.at(GENERATE(0u, 1u));
  INFO(c.name);
  FakeState state;
  Pool pool{FakeFactory{state}, c.options(4)};
  {
    // Three idle connections around, released in this order: the last one is the hint.
    auto x = pool.acquire();
    auto y = pool.acquire();
    auto z = pool.acquire();
    x.release();
    y.release();
    z.release();
  }
  int last = 0;
  int changes = 0;
  for (int i = 0; i < 100; ++i) {
    auto h = pool.acquire();
    if (i > 0 && h->id() != last) {
      ++changes;
    }
    last = h->id();
  }
  CHECK(last == 3);  // the most recently released of the three
  CHECK(changes == 0);
  const auto s = pool.stats();
  CHECK(s.created == 3);
  CHECK(s.idle == 3);
  CHECK(s.reused == 100);
}

TEST_CASE(
    "ConnectionPool: a connection idle in another live thread's hint is found without waiting",
    "[pool][fastpath][design-2]") {
  // Thread A releases a connection (it sits in A's hint, not on the idle stack) and stays alive.
  // This thread, on a pool at max_size, must find it through the scan: no creation, no wait.
  const PolicyCase& c = every_policy.at(GENERATE(0u, 1u));
  const bool use_try = GENERATE(false, true);
  INFO(c.name << (use_try ? ", try_acquire()" : ", acquire(0ms)"));
  FakeState state;
  Pool pool{FakeFactory{state}, c.options(2)};
  auto mine = pool.acquire();  // one of the two places
  Gate released;
  Gate finish;
  std::atomic<int> a_id{0};
  std::jthread a([&] {
    {
      auto h = pool.acquire();  // creates the second connection
      a_id = h->id();
    }  // released into A's hint
    released.open();
    (void)finish.wait();
  });
  REQUIRE(released.wait());
  const auto before = pool.stats();
  CHECK(before.created == 2);
  CHECK(before.idle == 1);
  CHECK(before.in_use == 1);

  std::optional<connpool::PooledHandle<FakeConn>> h;
  if (use_try) {
    h = pool.try_acquire();
  } else {
    h = pool.acquire(0ms);
  }
  REQUIRE(h.has_value());
  CHECK((*h)->id() == a_id.load());
  const auto after = pool.stats();
  CHECK(after.created == 2);
  CHECK(after.waited == before.waited);
  CHECK(after.timeouts == 0);
  CHECK(after.reused == before.reused + 1);
  CHECK(after.in_use == 2);
  finish.open();
}

TEST_CASE("ConnectionPool: a connection released by a thread that has exited is handed out at once",
          "[pool][fastpath][design-2]") {
  const PolicyCase& c = every_policy.at(GENERATE(0u, 1u));
  INFO(c.name);
  FakeState state;
  Pool pool{FakeFactory{state}, c.options(1)};
  int released_id = 0;
  std::thread([&] {
    auto h = pool.acquire();
    released_id = h->id();
  }).join();
  auto h = pool.acquire(0ms);
  CHECK(h->id() == released_id);
  const auto s = pool.stats();
  CHECK(s.created == 1);
  CHECK(s.reused == 1);
  CHECK(s.waited == 0);
}

TEST_CASE("ConnectionPool: one thread alternating among 5 pools gets each pool's own connections",
          "[pool][fastpath][design-2]") {
  // The per-thread hint has 4 entries: with 5 pools at least two share one and evict each
  // other's hint. Each pool must still serve its own connection, without creating another.
  constexpr std::size_t pools = 5;
  constexpr int rounds = 20;
  std::array<FakeState, pools> states;
  std::vector<std::unique_ptr<Pool>> pool;
  for (auto& state : states) {
    pool.push_back(std::make_unique<Pool>(FakeFactory{state}, every_policy[0].options(1)));
  }
  int foreign = 0;
  int other_id = 0;
  for (int r = 0; r < rounds; ++r) {
    for (std::size_t i = 0; i < pools; ++i) {
      auto h = pool[i]->acquire(0ms);  // max_size 1: a stranded connection would time out here
      foreign += &h->state() == &states[i] ? 0 : 1;
      other_id += h->id() == 1 ? 0 : 1;
    }
  }
  CHECK(foreign == 0);
  CHECK(other_id == 0);
  for (std::size_t i = 0; i < pools; ++i) {
    INFO("pool " << i);
    const auto s = pool[i]->stats();
    CHECK(s.created == 1);
    CHECK(s.acquired == rounds);
    CHECK(s.reused == rounds - 1);
    CHECK(s.idle == 1);
    CHECK(states[i].created == 1);
  }
}

TEST_CASE("ConnectionPool: one thread alternating among 5 pools still gets LIFO order from each",
          "[pool][fastpath][design-2]") {
  // DESIGN 2 holds per pool even when another pool evicts this pool's entry of the hint: the
  // most recently released connection of a pool is the first that pool hands out again.
  constexpr std::size_t pools = 5;
  std::array<FakeState, pools> states;
  std::vector<std::unique_ptr<Pool>> pool;
  for (auto& state : states) {
    pool.push_back(std::make_unique<Pool>(FakeFactory{state}, every_policy[0].options(2)));
  }
  std::array<int, pools> last_released{};
  for (std::size_t i = 0; i < pools; ++i) {
    auto a = pool[i]->acquire(0ms);
    auto b = pool[i]->acquire(0ms);
    last_released[i] = b->id();
    a.release();
    b.release();  // b is pool i's most recently released connection
  }
  std::vector<connpool::PooledHandle<FakeConn>> held;  // kept out: no release moves a hint
  for (std::size_t i = 0; i < pools; ++i) {
    INFO("pool " << i);
    held.push_back(pool[i]->acquire(0ms));
    CHECK(&held.back()->state() == &states[i]);
    CHECK(held.back()->id() == last_released[i]);
    CHECK(pool[i]->stats().created == 2);
  }
}

TEST_CASE("ConnectionPool: a hint left by a destroyed pool is never followed",
          "[pool][fastpath][design-2]") {
  // Each pool dies with a connection idle in this thread's hint, and now and then with another
  // one still out through a handle that is given back after the pool is gone. The next pool may
  // get the same hint entry, the same stack address, even the same heap addresses. It must serve
  // its own connections and never touch the dead pool's (ASan would see a use after free).
  constexpr std::size_t generations = 9;  // more than twice the 4 hint entries
  std::array<FakeState, generations> states;
  for (std::size_t g = 0; g < generations; ++g) {
    INFO("generation " << g);
    connpool::PooledHandle<FakeConn> survivor;
    {
      Pool pool{FakeFactory{states[g]}, every_policy[g % 2].options(2)};
      auto a = pool.acquire(0ms);
      auto b = pool.acquire(0ms);
      CHECK(&a->state() == &states[g]);
      CHECK(&b->state() == &states[g]);
      a.release();  // idle, in this thread's hint
      for (int i = 0; i < 3; ++i) {
        auto h = pool.acquire(0ms);
        CHECK(&h->state() == &states[g]);
        CHECK(h->id() == 1);
      }
      CHECK(pool.stats().created == 2);
      if (g % 3 == 0) {
        survivor = std::move(b);  // outlives the pool
      }
    }
    if (survivor) {
      CHECK(states[g].live == 1);
      survivor.release();  // closes it, and frees what is left of the pool
    }
  }
  for (std::size_t g = 0; g < generations; ++g) {
    INFO("generation " << g);
    CHECK(states[g].created == 2);
    CHECK(states[g].live == 0);  // closed with its pool, or when the survivor came back
    CHECK(states[g].closed == 2);
    CHECK(states[g].used_closed == 0);
    CHECK(states[g].double_closes == 0);
  }
}

// --- many threads -------------------------------------------------------------------------------

TEST_CASE("ConnectionPool: under either policy every waiter is served, on 1 or 2 connections",
          "[pool][policy][concurrency][design-4]") {
  // The waiter wake-up race: many threads, few connections, short holds. A release that races
  // with a caller going to sleep must never strand a connection: every acquire, given a
  // generous timeout, succeeds.
  const PolicyCase& c = every_policy.at(GENERATE(0u, 1u));
  const std::size_t max_size = GENERATE(1u, 2u);
  INFO(c.name << ", max_size " << max_size);
  constexpr int threads = 8;
  constexpr int cycles = 4000;
  FakeState state;
  Pool pool{FakeFactory{state}, c.options(max_size)};
  std::atomic<int> timeouts{0};
  std::atomic<int> errors{0};
  std::atomic<int> doubles{0};
  Gate go;
  {
    std::vector<std::jthread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        (void)go.wait();
        for (int i = 0; i < cycles; ++i) {
          try {
            auto h = pool.acquire(10s);
            use(*h);
            if (max_size > 1 && (i + t) % 16 == 0) {
              // Now and then two connections come back one right after the other.
              if (auto second = pool.try_acquire()) {
                use(**second);
                h.release();
                doubles.fetch_add(1);
              }
            }
          } catch (const connpool::AcquireTimeout&) {
            timeouts.fetch_add(1);
          } catch (...) {
            errors.fetch_add(1);
          }
          if (i % 8 == t % 8) {
            std::this_thread::yield();  // load, not synchronisation
          }
        }
      });
    }
    go.open();
  }
  INFO("double releases: " << doubles.load());
  CHECK(timeouts == 0);
  CHECK(errors == 0);
  CHECK(state.double_holds == 0);
  CHECK(state.used_closed == 0);
  CHECK(state.max_live <= static_cast<int>(max_size));
  const auto s = pool.stats();
  const auto acquires = static_cast<std::uint64_t>(threads) * cycles + doubles.load();
  CHECK(s.acquired == acquires);
  CHECK(s.released == acquires);
  CHECK(s.timeouts == 0);
  CHECK(s.pending == 0);
  CHECK(s.in_use == 0);
  CHECK(s.created <= max_size);
  CHECK(s.created - s.closed == s.idle);
}

TEST_CASE("ConnectionPool: stats add up exactly after a multi-threaded run under either policy",
          "[pool][policy][concurrency][stats]") {
  // DESIGN (PoolStats): "once the pool is quiet every figure is exact", though the fast-path
  // counters live in the slots. The run mixes hint reuse, scans, waits, creation, invalidation
  // and detach; a handle is still out when the figures are read.
  const PolicyCase& c = every_policy.at(GENERATE(0u, 1u));
  INFO(c.name);
  constexpr int threads = 4;
  constexpr int ops = 4000;
  FakeState state;
  PoolOptions options = c.options(2);
  options.validation_bypass = 0ms;  // every reuse pings: the fast path's check-out too
  Pool pool{FakeFactory{state}, options};
  std::atomic<std::uint64_t> got{0};
  std::atomic<std::uint64_t> empty_tries{0};
  std::atomic<std::uint64_t> invalidated{0};
  std::atomic<std::uint64_t> detached{0};
  std::atomic<int> errors{0};
  Gate go;
  {
    std::vector<std::jthread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        (void)go.wait();
        for (int i = 0; i < ops; ++i) {
          const int dice = (i * 7 + t * 13) % 100;
          try {
            connpool::PooledHandle<FakeConn> h;
            if (dice < 25) {
              auto maybe = pool.try_acquire();
              if (!maybe) {
                empty_tries.fetch_add(1);
                continue;
              }
              h = std::move(*maybe);
            } else {
              h = pool.acquire(10s);
            }
            got.fetch_add(1);
            use(*h);
            if (dice % 20 == 3) {
              h.invalidate();
              invalidated.fetch_add(1);
            } else if (dice % 33 == 5) {
              FakeConn mine = h.detach();  // destroyed here, unclosed: ours to drop
              detached.fetch_add(1);
            }
          } catch (...) {
            errors.fetch_add(1);
          }
        }
      });
    }
    go.open();
  }
  CHECK(errors == 0);
  CHECK(state.double_holds == 0);

  auto held = pool.acquire(0ms);  // the pool is quiet, one connection out
  const auto s = pool.stats();
  INFO("acquired " << s.acquired << ", reused " << s.reused << ", created " << s.created
                   << ", closed " << s.closed << ", detached " << s.detached << ", idle " << s.idle
                   << ", in_use " << s.in_use);
  CHECK(s.acquired == got.load() + 1);
  CHECK(s.detached == detached.load());
  CHECK(s.in_use == 1);
  CHECK(s.pending == 0);
  CHECK(s.timeouts == 0);
  CHECK(s.acquired == s.released + s.in_use + s.detached);
  CHECK(s.created - s.closed == s.idle + s.in_use + s.detached);
  CHECK(s.closed == invalidated.load());  // nothing else closes connections here
  CHECK(s.closed == static_cast<std::uint64_t>(state.closed.load()));
  CHECK(s.created == static_cast<std::uint64_t>(state.created.load()));
  CHECK(state.live == static_cast<int>(s.idle + s.in_use));
  // Every acquire got a connection the factory opened for it, or reused one.
  CHECK(s.reused + s.created == s.acquired);
  CHECK(s.reuse_ratio() ==
        connpool_test::Approx(static_cast<double>(s.reused) / static_cast<double>(s.acquired)));
  CHECK(s.reuse_ratio() > 0.0);
  CHECK(s.reuse_ratio() <= 1.0);
  CHECK(s.max_wait_time <= s.total_wait_time);
  CHECK(s.total_connections() <= s.max_size);

  held.release();
  const auto after = pool.stats();
  CHECK(after.in_use == 0);
  CHECK(after.released == s.released + 1);
  CHECK(after.acquired == after.released + after.detached);
  CHECK(after.created - after.closed == after.idle + after.detached);
}

// A woken waiter that is then granted something else (here the place of an invalidated
// connection) must pass its wake-up on: otherwise the next waiter sleeps past idle connections
// until its deadline.
TEST_CASE(
    "ConnectionPool: under bounded_barging a woken waiter that is granted a place passes the "
    "wake-up on",
    "[pool][policy][design-4]") {
  FakeState state;
  Pool pool{FakeFactory{state}, PoolOptions{.max_size = 3,
                                            .health_check_interval = 0ms,
                                            .wait_policy = WaitPolicy::bounded_barging,
                                            .starvation_bound = 10s}};
  auto h1 = pool.acquire();
  auto h2 = pool.acquire();
  auto h3 = pool.acquire();
  Waiter w1{pool, 30s};
  REQUIRE(eventually([&] { return pool.stats().pending == 1; }));
  Waiter w2{pool, 30s};
  REQUIRE(eventually([&] { return pool.stats().pending == 2; }));
  h1.release();     // wakes w1 to compete for it
  h2.release();     // w1 is already woken: nobody new is woken
  h3.invalidate();  // w1 may be handed the freed place instead
  REQUIRE(w1.wait_for_outcome(Outcome::got));
  REQUIRE(w2.wait_for_outcome(Outcome::got));
  // Two connections were idle after the releases: w2 must not have waited for its deadline.
  CHECK(w2.elapsed() < 10s);
}
