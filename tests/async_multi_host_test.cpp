// connpool - tests: AsyncMultiHostPool, the coroutine front of MultiHostPool
// SPDX-License-Identifier: MIT

// The behaviour MultiHostPool's tests check (routes, waits, rechecks), through co_await: what
// completes without suspending, what suspends and who resumes it (a release, the timer, a
// recheck, close(), the destructor), and coroutines destroyed while suspended, or whose
// resumption a scheduler drops. The fake servers are those of multi_host_roles_test.cpp
// (support/role_cluster.hpp). The re-entrancy rows of this front are in reentrancy_test.cpp.

#include <atomic>
#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <connpool/async_multi_host_pool.hpp>
#include <connpool/detail/clock.hpp>
#include <connpool/task.hpp>

#include "catch.hpp"
#include "coro.hpp"
#include "role_cluster.hpp"
#include "sync.hpp"

using namespace std::chrono_literals;
using connpool::HostRole;
using connpool::MultiHostOptions;
using connpool::NoHealthyHost;
using connpool::Route;
using connpool::Task;
using connpool_test::Cluster;
using connpool_test::Counted;
using connpool_test::eventually;
using connpool_test::Gate;
using connpool_test::Loop;
using connpool_test::message_of;
using connpool_test::probe_role;
using connpool_test::ResumptionQueue;
using connpool_test::role_of;
using connpool_test::role_options;
using connpool_test::RoleConn;
using connpool_test::run_owned;
using connpool_test::Spawned;

namespace {

using Pool = connpool::AsyncMultiHostPool<RoleConn, Cluster::Factory, std::string>;
using Handle = Pool::handle_type;

const std::vector<std::string> abc{"a", "b", "c"};

/// role_options() with one connection per host, so that a held handle makes its host busy; no
/// warm-up: the roles come from the recheck thread's first pass (see hold()).
MultiHostOptions one_each(std::size_t min_size = 0) {
  MultiHostOptions o = role_options(min_size);
  o.per_host.max_size = 1;
  return o;
}

/// What a spawned acquire got: its host, or the error it ended with.
struct Outcome {
  std::atomic<bool> done{false};
  std::string host;
  std::exception_ptr error;
};

/// co_awaits the operation `make()` returns, records the host in `out` and gives the connection
/// back at once. (An operation cannot be moved: a coroutine parameter cannot hold one.)
template <class Make>
Task<> record(Make make, Outcome& out) {
  try {
    Handle h = co_await make();
    out.host = h.host();
  } catch (...) {
    out.error = std::current_exception();
  }
  out.done = true;
}

/// As record(), holding the connection in `keep` instead of giving it back.
template <class Make>
Task<> record_keep(Make make, Outcome& out, std::optional<Handle>& keep) {
  try {
    keep.emplace(co_await make());
    out.host = keep->host();
  } catch (...) {
    out.error = std::current_exception();
  }
  out.done = true;
}

template <class E>
bool ended_with(const Outcome& o) {
  if (!o.error) {
    return false;
  }
  try {
    std::rethrow_exception(o.error);
  } catch (const E&) {
    return true;
  } catch (...) {
    return false;
  }
}

std::string error_text(const Outcome& o) {
  return message_of([&] {
    if (o.error) {
      std::rethrow_exception(o.error);
    }
  });
}

/// The host pools' waiting callers, summed.
std::size_t pending(const Pool& pool) {
  return pool.stats().total.pending;
}

/// The host whose pool has a caller waiting (the first, in host order); "" if none.
std::string waiting_host(const Pool& pool) {
  for (const auto& h : pool.stats().hosts) {
    if (h.pool.pending > 0) {
      return h.host;
    }
  }
  return "";
}

/// Holds one connection of each of `hosts` (each host then busy with max_size 1). With roles,
/// first waits for the recheck thread's first pass (a routed acquire waits for it when no role
/// is known yet), which opens one connection on each host: the pass cannot then run during the
/// test.
std::vector<Handle> hold(Pool& pool, const std::vector<std::string>& hosts) {
  if (pool.options().role_probe) {
    (void)pool.acquire_blocking(Route::primary, 20s);
  }
  std::vector<Handle> out;
  for (const std::string& h : hosts) {
    out.push_back(pool.acquire_blocking(h, 1s));
  }
  return out;
}

}  // namespace

TEST_CASE("AsyncMultiHostPool: each route lands on its hosts, without suspending when one has room",
          "[async_multi_host]") {
  Cluster cluster(abc);
  Loop loop;
  Pool pool(abc, cluster.factory(), role_options(), loop.scheduler());
  Spawned spawned;
  std::multiset<std::string> seen;
  auto take = [&](Route route) -> Task<> {
    for (int i = 0; i < 6; ++i) {
      Handle h = co_await pool.acquire(route, 1s);
      CHECK(h->host() == h.host());
      seen.insert(h.host());
    }
  };
  SECTION("primary") {
    spawned.spawn([&] { return take(Route::primary); });
    CHECK(seen.count("a") == 6);
  }
  SECTION("replica, spread over both replicas") {
    spawned.spawn([&] { return take(Route::replica); });
    CHECK(seen.count("a") == 0);
    CHECK(seen.count("b") > 0);
    CHECK(seen.count("c") > 0);
  }
  SECTION("prefer_replica") {
    spawned.spawn([&] { return take(Route::prefer_replica); });
    CHECK(seen.count("a") == 0);
  }
  SECTION("any, and try_acquire") {
    spawned.spawn([&] { return take(Route::any); });
    spawned.spawn([&]() -> Task<> {
      std::optional<Handle> h = co_await pool.try_acquire(Route::replica);
      REQUIRE(h.has_value());
      CHECK(h->host() != "a");
      std::optional<Handle> any = co_await pool.try_acquire();
      CHECK(any.has_value());
    });
  }
  // Everything completed inside spawn(): nothing suspended, nothing went through the loop.
  CHECK(spawned.done() == spawned.started());
  CHECK(spawned.errors().empty());
  CHECK(loop.scheduled() == 0);
}

TEST_CASE("AsyncMultiHostPool: busy hosts suspend the acquire, and a release resumes it",
          "[async_multi_host]") {
  Cluster cluster(abc);
  Loop loop;
  Pool pool(abc, cluster.factory(), one_each(), loop.scheduler());
  std::vector<Handle> held = hold(pool, {"b", "c"});
  Outcome out;
  Spawned spawned;
  spawned.spawn([&] { return record([&] { return pool.acquire(Route::replica, 20s); }, out); });
  CHECK_FALSE(out.done.load());  // suspended in a replica's queue, not spilled to the primary
  REQUIRE(pending(pool) == 1);
  const std::string queued_on = waiting_host(pool);
  REQUIRE((queued_on == "b" || queued_on == "c"));
  for (Handle& h : held) {
    if (h.host() == queued_on) {
      h.release();  // handed to the waiter
    }
  }
  CHECK(loop.scheduled() == 1);  // resumed through the scheduler, not inline
  CHECK_FALSE(out.done.load());
  loop.run();
  REQUIRE(out.done.load());
  CHECK(out.host == queued_on);
  CHECK(error_text(out).empty());
  CHECK(pending(pool) == 0);
}

TEST_CASE("AsyncMultiHostPool: a suspended acquire times out through the scheduler",
          "[async_multi_host]") {
  Cluster cluster(abc);
  Loop loop;
  Pool pool(abc, cluster.factory(), one_each(), loop.scheduler());
  std::vector<Handle> held = hold(pool, {"b", "c"});
  Outcome out;
  Spawned spawned;
  // The acquire's deadline starts on the coarse clock, which lags steady_clock by up to a tick:
  // read it the same way, so that the bound below holds to the nanosecond.
  const auto t0 = connpool::detail::clock_now<std::chrono::steady_clock>();
  spawned.spawn([&] { return record([&] { return pool.acquire(Route::replica, 50ms); }, out); });
  CHECK_FALSE(out.done.load());
  REQUIRE(loop.run_until([&] { return out.done.load(); }));
  CHECK(std::chrono::steady_clock::now() - t0 >= 50ms);
  CHECK(ended_with<connpool::AcquireTimeout>(out));
  CHECK(pending(pool) == 0);
}

TEST_CASE("AsyncMultiHostPool: a stop request ends a suspended acquire", "[async_multi_host]") {
  Cluster cluster(abc);
  Loop loop;
  Pool pool(abc, cluster.factory(), one_each(), loop.scheduler());
  std::vector<Handle> held = hold(pool, {"b", "c"});
  std::stop_source stop;
  Outcome out;
  Spawned spawned;
  spawned.spawn([&] {
    return record([&] { return pool.acquire(Route::replica, 20s, stop.get_token()); }, out);
  });
  CHECK_FALSE(out.done.load());
  stop.request_stop();
  REQUIRE(loop.run_until([&] { return out.done.load(); }));
  CHECK(ended_with<connpool::AcquireCancelled>(out));
  CHECK(pending(pool) == 0);
}

TEST_CASE("AsyncMultiHostPool: try_acquire gives nullopt when the route's hosts are busy",
          "[async_multi_host]") {
  Cluster cluster(abc);
  Pool pool(abc, cluster.factory(), one_each());
  std::vector<Handle> held = hold(pool, {"b", "c"});
  Spawned spawned;
  bool empty = false;
  bool primary = false;
  spawned.spawn([&]() -> Task<> {
    empty = !(co_await pool.try_acquire(Route::replica)).has_value();
    std::optional<Handle> h = co_await pool.try_acquire(Route::prefer_replica);
    primary = false;  // busy replicas are waited for, not spilled: prefer_replica is busy too
    CHECK_FALSE(h.has_value());
    std::optional<Handle> p = co_await pool.try_acquire(Route::primary);
    primary = p.has_value() && p->host() == "a";
  });
  CHECK(spawned.done() == 1);
  CHECK(empty);
  CHECK(primary);
}

namespace {

/// A cluster whose first role recheck pass blocks in the probe of host a's connection until
/// the test opens `gate`; no warm-up, so the roles are unknown until that pass ends.
struct BlockedFirstPass {
  Cluster cluster{abc};
  Gate gate;
  std::atomic<bool> in_probe{false};

  MultiHostOptions options() {
    MultiHostOptions o = one_each(0);
    o.role_probe = [this](RoleConn& c) {
      if (c.host() == "a" && !gate.is_open()) {
        in_probe = true;
        (void)gate.wait();
      }
      return probe_role(c);
    };
    return o;
  }
};

}  // namespace

TEST_CASE("AsyncMultiHostPool: an acquire with no host of its route suspends for a recheck",
          "[async_multi_host]") {
  BlockedFirstPass f;
  Loop loop;
  Pool pool(abc, f.cluster.factory(), f.options(), loop.scheduler());
  REQUIRE(eventually([&] { return f.in_probe.load(); }));
  Outcome out;
  Spawned spawned;
  SECTION("the pass shows a primary: the acquire takes it") {
    spawned.spawn([&] { return record([&] { return pool.acquire(Route::primary, 20s); }, out); });
    CHECK_FALSE(out.done.load());  // no role known yet: waits for the pass
    f.gate.open();
    REQUIRE(loop.run_until([&] { return out.done.load(); }));
    CHECK(out.host == "a");
    CHECK_FALSE(out.error);
  }
  SECTION("the pass shows none: NoHealthyHost, naming the route") {
    f.cluster["a"].role = HostRole::replica;
    spawned.spawn([&] { return record([&] { return pool.acquire(Route::primary, 20s); }, out); });
    CHECK_FALSE(out.done.load());
    f.gate.open();
    REQUIRE(loop.run_until([&] { return out.done.load(); }));
    CHECK(ended_with<NoHealthyHost>(out));
    CHECK(error_text(out).find("Route::primary") != std::string::npos);
  }
  SECTION("try_acquire waits for the first pass too") {
    std::optional<Handle> keep;
    spawned.spawn([&]() -> Task<> {
      std::optional<Handle> h = co_await pool.try_acquire(Route::replica);
      if (h) {
        out.host = h->host();
      }
      out.done = true;
    });
    CHECK_FALSE(out.done.load());
    f.gate.open();
    REQUIRE(loop.run_until([&] { return out.done.load(); }));
    CHECK((out.host == "b" || out.host == "c"));
  }
  SECTION("the pass's deadline passes first: NoHealthyHost") {
    spawned.spawn([&] { return record([&] { return pool.acquire(Route::primary, 50ms); }, out); });
    CHECK_FALSE(out.done.load());
    REQUIRE(loop.run_until([&] { return out.done.load(); }));
    INFO(error_text(out));
    CHECK(ended_with<NoHealthyHost>(out));
    f.gate.open();
  }
  SECTION("close() ends the wait with PoolClosed") {
    spawned.spawn([&] { return record([&] { return pool.acquire(Route::primary, 20s); }, out); });
    CHECK_FALSE(out.done.load());
    pool.close();
    REQUIRE(loop.run_until([&] { return out.done.load(); }));
    CHECK(ended_with<connpool::PoolClosed>(out));
    f.gate.open();
  }
  CHECK(spawned.errors().empty());
}

TEST_CASE("AsyncMultiHostPool: close() ends an acquire suspended on a host with PoolClosed",
          "[async_multi_host]") {
  Cluster cluster(abc);
  Loop loop;
  Pool pool(abc, cluster.factory(), one_each(), loop.scheduler());
  std::vector<Handle> held = hold(pool, {"b", "c"});
  Outcome out;
  Spawned spawned;
  spawned.spawn([&] { return record([&] { return pool.acquire(Route::replica, 20s); }, out); });
  CHECK_FALSE(out.done.load());
  pool.close();
  REQUIRE(loop.run_until([&] { return out.done.load(); }));
  CHECK(ended_with<connpool::PoolClosed>(out));
}

TEST_CASE("AsyncMultiHostPool: a host removed under a waiter: it waits on another",
          "[async_multi_host]") {
  Cluster cluster(abc);
  Loop loop;
  Pool pool(abc, cluster.factory(), one_each(), loop.scheduler());
  std::vector<Handle> held = hold(pool, {"b", "c"});
  Outcome out;
  Spawned spawned;
  spawned.spawn([&] { return record([&] { return pool.acquire(Route::replica, 20s); }, out); });
  REQUIRE(pending(pool) == 1);
  const std::string waited_on = waiting_host(pool);
  REQUIRE((waited_on == "b" || waited_on == "c"));
  const std::string other = waited_on == "b" ? "c" : "b";
  pool.remove_host(waited_on);
  loop.run();  // the removed host's PoolClosed: the driver goes on, to the other replica
  CHECK_FALSE(out.done.load());
  REQUIRE(eventually([&] { return pending(pool) == 1; }));
  for (Handle& h : held) {
    if (h.host() == other) {
      h.release();
    }
  }
  REQUIRE(loop.run_until([&] { return out.done.load(); }));
  CHECK(out.host == other);
  CHECK_FALSE(out.error);
}

TEST_CASE("AsyncMultiHostPool: a coroutine destroyed while suspended leaves the queue",
          "[async_multi_host]") {
  Cluster cluster(abc);
  Loop loop;
  Pool pool(abc, cluster.factory(), one_each(), loop.scheduler());
  std::atomic<int> live{0};
  std::atomic<bool> resumed{false};
  auto waiter = [&](Route route) -> Task<> {
    const Counted alive(live);
    Handle h = co_await pool.acquire(route, 20s);
    resumed = true;
  };
  SECTION("on a host's queue") {
    std::vector<Handle> held = hold(pool, {"b", "c"});
    {
      auto root = run_owned(waiter(Route::replica));
      CHECK(live.load() == 1);
      CHECK(pending(pool) == 1);
    }  // destroyed while suspended
    CHECK(live.load() == 0);
    CHECK(pending(pool) == 0);  // withdrawn at once, not left to time out
    held.clear();               // the connections come back idle: nobody to resume
    loop.run();
    CHECK_FALSE(resumed.load());
    CHECK(pool.stats().total.idle == 3);  // a, b and c
  }
  SECTION("waiting for a recheck") {
    BlockedFirstPass f;
    Pool blocked(abc, f.cluster.factory(), f.options(), loop.scheduler());
    REQUIRE(eventually([&] { return f.in_probe.load(); }));
    auto in_blocked = [&]() -> Task<> {
      const Counted alive(live);
      Handle h = co_await blocked.acquire(Route::primary, 20s);
      resumed = true;
    };
    {
      auto root = run_owned(in_blocked());
      CHECK(live.load() == 1);
    }
    CHECK(live.load() == 0);
    f.gate.open();
    REQUIRE(eventually([&] { return role_of(blocked, "c") != HostRole::unknown; }));
    loop.run();
    CHECK_FALSE(resumed.load());
    CHECK(loop.scheduled() == 0);  // withdrawn: the pass's end resumed nothing
  }
  SECTION("after its wait ended, with its resumption queued in the scheduler") {
    std::vector<Handle> held = hold(pool, {"b", "c"});
    auto root = run_owned(waiter(Route::replica));
    held.clear();  // one connection is handed to the waiter; its resumption is queued
    REQUIRE(loop.scheduled() >= 1);
    root.destroy();
    CHECK(live.load() == 0);
    loop.run();  // the driver runs, finds itself abandoned and gives the connection back
    CHECK_FALSE(resumed.load());
    CHECK(pool.stats().total.in_use == 0);
    CHECK(pool.stats().total.idle == 3);  // a, b and c
  }
}

TEST_CASE("AsyncMultiHostPool: a resumption the scheduler drops gives the connection back",
          "[async_multi_host]") {
  Cluster cluster(abc);
  ResumptionQueue queue;
  Pool pool(abc, cluster.factory(), one_each(), queue.scheduler());
  std::vector<Handle> held = hold(pool, {"b", "c"});
  std::atomic<int> live{0};
  std::atomic<bool> resumed{false};
  auto root = run_owned([&]() -> Task<> {
    const Counted alive(live);
    Handle h = co_await pool.acquire(Route::replica, 20s);
    resumed = true;
  }());
  held.clear();
  REQUIRE(queue.queued() >= 1);
  queue.drop_all();  // as an event loop that shuts down: its queued work destroyed unrun
  CHECK_FALSE(resumed.load());
  CHECK(pool.stats().total.in_use == 0);  // the connection handed to the waiter came back
  CHECK(pool.stats().total.idle == 3);    // a, b and c
  CHECK(live.load() == 1);  // the coroutine stays suspended until its owner destroys it
  root.destroy();
  CHECK(live.load() == 0);
}

TEST_CASE("AsyncMultiHostPool: destroying the pool ends suspended acquires with PoolClosed",
          "[async_multi_host]") {
  Cluster cluster(abc);
  Outcome out;
  Spawned spawned;
  SECTION("resumed inline, inside the destructor") {
    std::optional<Pool> pool(std::in_place, abc, cluster.factory(), one_each());
    std::vector<Handle> held = hold(*pool, {"b", "c"});
    spawned.spawn([&] { return record([&] { return pool->acquire(Route::replica, 20s); }, out); });
    CHECK_FALSE(out.done.load());
    pool.reset();
    CHECK(out.done.load());
    CHECK(ended_with<connpool::PoolClosed>(out));
  }
  SECTION("resumed by the scheduler after the pool is gone") {
    Loop loop;
    std::optional<Pool> pool(std::in_place, abc, cluster.factory(), one_each(), loop.scheduler());
    std::vector<Handle> held = hold(*pool, {"b", "c"});
    spawned.spawn([&] { return record([&] { return pool->acquire(Route::replica, 20s); }, out); });
    pool.reset();
    CHECK_FALSE(out.done.load());  // queued in the loop
    loop.run();                    // the driver must not touch the destroyed pool
    CHECK(out.done.load());
    CHECK(ended_with<connpool::PoolClosed>(out));
  }
  SECTION("handles outlive it") {
    std::optional<Pool> pool(std::in_place, abc, cluster.factory(), one_each());
    std::optional<Handle> keep;
    spawned.spawn(
        [&] { return record_keep([&] { return pool->acquire(Route::primary, 5s); }, out, keep); });
    // The roles come from the first pass: the acquire may wait for it, and be resumed on the
    // recheck thread.
    REQUIRE(eventually([&] { return out.done.load(); }));
    REQUIRE(keep.has_value());
    pool.reset();
    keep.reset();  // closes the connection
    CHECK(cluster["a"].closes.load() >= 1);
  }
}

TEST_CASE("AsyncMultiHostPool: the destructor waits for a driver running pool code elsewhere",
          "[async_multi_host]") {
  // A waiter on b goes on after b is removed: to c, added meanwhile, whose connect blocks on the
  // loop's thread. The pool is destroyed from the test thread during that connect: the
  // destructor must wait for it to leave the pool's code; the acquire then ends with c's
  // connection, which outlives the pool.
  Cluster cluster(abc);
  Loop loop;
  Gate connect_gate;
  MultiHostOptions o;
  o.per_host.max_size = 1;
  o.per_host.health_check_interval = 0ms;
  o.per_host.validate_on_acquire = false;
  Outcome out;
  std::optional<Handle> keep;
  std::optional<Pool> pool(std::in_place, std::vector<std::string>{"b"}, cluster.factory(), o,
                           loop.scheduler());
  std::vector<Handle> held = hold(*pool, {"b"});
  Spawned spawned;
  spawned.spawn(
      [&] { return record_keep([&] { return pool->acquire(Route::any, 20s); }, out, keep); });
  REQUIRE(pending(*pool) == 1);
  cluster["c"].connect_gate = &connect_gate;
  pool->add_host("c");     // no warm-up: nothing connects yet
  pool->remove_host("b");  // the waiter's PoolClosed is queued in the loop
  std::thread runner([&] { (void)loop.run_until([&] { return out.done.load(); }); });
  REQUIRE(eventually([&] { return cluster["c"].in_connect.load(); }));  // on the loop's thread
  std::atomic<long> destroying{0};
  std::atomic<bool> opened{false};
  std::thread opener([&] {
    // Opens the gate once the test thread sleeps in the destructor, waiting for the connect.
    (void)connpool_test::blocked_eventually(destroying);
    opened = true;
    connect_gate.open();
  });
  destroying = connpool_test::this_thread_tid();
  pool.reset();
  CHECK(opened.load());  // it did not return while the connect was still running
  opener.join();
  runner.join();
  REQUIRE(out.done.load());
  CHECK(out.host == "c");
  CHECK(error_text(out).empty());
  REQUIRE(keep.has_value());
  keep.reset();  // the pool is gone: the connection is closed
  CHECK(cluster["c"].closes.load() == 1);
}
