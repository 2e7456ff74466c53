// connpool - tests: role-aware MultiHostPool (HostRole, Route, role and lag probes, rechecks)
// SPDX-License-Identifier: MIT

// Fake servers by name, each with a role and a lag the test sets (as a failover or a paused
// replay would), answered by the probes through the connection. The rules alone are in
// detail/routing_test.cpp; the same behaviour on a real PostgreSQL primary and standbys is in
// integration/pg_replicas_test.cpp.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <connpool/connpool.hpp>
#include <connpool/detail/role_checker.hpp>

#include "catch.hpp"
#include "prometheus_text.hpp"
#include "role_cluster.hpp"

using namespace std::chrono_literals;
using connpool::HostRole;
using connpool::MultiHostOptions;
using connpool::NoHealthyHost;
using connpool::Route;
using connpool_test::Cluster;
using connpool_test::eventually;
using connpool_test::host_stats;
using connpool_test::lag_of;
using connpool_test::message_of;
using connpool_test::probe_lag;
using connpool_test::probe_role;
using connpool_test::role_of;
using connpool_test::role_options;
using connpool_test::RoleConn;
using connpool_test::Server;

namespace {

struct Tag {};
using Pool =
    connpool::MultiHostPool<RoleConn, Cluster::Factory, std::string, connpool::ManualClock<Tag>>;

const std::vector<std::string> abc{"a", "b", "c"};

/// The hosts that serve `n` acquires under `route`, each held while the next is taken when
/// `hold` (so a busy host makes room for the others), else given back at once.
///
/// Why a long timeout: the recheck thread's first pass may hold a connection (or a reference
/// that counts as one) for a moment while the last acquires are taken; they wait for it.
std::multiset<std::string> hosts_serving(Pool& pool, Route route, int n, bool hold = false) {
  std::multiset<std::string> out;
  std::vector<Pool::handle_type> held;
  for (int i = 0; i < n; ++i) {
    auto h = pool.acquire(route, 10s);
    out.insert(h.host());
    CHECK(h->host() == h.host());
    if (hold) {
      held.push_back(std::move(h));
    }
  }
  return out;
}

/// Waits for the recheck thread's first pass, which could otherwise hold a connection (or the
/// reference that counts as one) in the middle of a test. Precondition: options without warm-up
/// (role_options(0)), so that no role is known before that pass and a routed acquire waits for
/// it; the pass leaves one connection open on each host.
void settle(Pool& pool) {
  REQUIRE(pool.acquire(Route::primary, 10s).host() == "a");
}

}  // namespace

TEST_CASE("Roles: probed on warm-up connections, shown in stats and to_json",
          "[multi_host][roles]") {
  Cluster cluster(abc);
  cluster["b"].lag_ms = 42;
  MultiHostOptions o = role_options();
  o.lag_probe = probe_lag;
  Pool pool(abc, cluster.factory(), o);
  CHECK(role_of(pool, "a") == HostRole::primary);
  CHECK(role_of(pool, "b") == HostRole::replica);
  CHECK(role_of(pool, "c") == HostRole::replica);
  CHECK(lag_of(pool, "b") == 42ms);
  CHECK(lag_of(pool, "c") == 0ms);
  CHECK_FALSE(lag_of(pool, "a").has_value());  // the lag is read on replicas only
  CHECK(cluster["a"].lag_probes.load() == 0);
  const std::string json = pool.stats().to_json();
  CHECK(json.find(R"("host":"a","state":"closed")") != std::string::npos);
  CHECK(json.find(R"("role":"primary","replica_lag_ms":null)") != std::string::npos);
  CHECK(json.find(R"("role":"replica","replica_lag_ms":42)") != std::string::npos);
}

TEST_CASE("Roles: each route lands on the hosts of its role only", "[multi_host][roles]") {
  Cluster cluster(abc);
  for (const auto balance : {connpool::Balance::round_robin, connpool::Balance::least_in_use,
                             connpool::Balance::random, connpool::Balance::power_of_two_choices}) {
    MultiHostOptions o = role_options(0);
    o.balance = balance;
    Pool pool(abc, cluster.factory(), o);
    settle(pool);
    CHECK(hosts_serving(pool, Route::primary, 40).count("a") == 40);
    CHECK(hosts_serving(pool, Route::replica, 40).count("a") == 0);
    CHECK(hosts_serving(pool, Route::prefer_replica, 40).count("a") == 0);
    // Held, the connections of a route fill each of its hosts (whatever the balance).
    CHECK(hosts_serving(pool, Route::primary, 4, true).count("a") == 4);
    const auto replica = hosts_serving(pool, Route::replica, 8, true);
    CHECK(replica.count("b") == 4);
    CHECK(replica.count("c") == 4);
    const auto prefer = hosts_serving(pool, Route::prefer_replica, 8, true);
    CHECK(prefer.count("b") == 4);
    CHECK(prefer.count("c") == 4);
    // Held, 12 connections fill all three hosts: Route::any spreads over every role.
    const auto any = hosts_serving(pool, Route::any, 12, true);
    CHECK(any.count("a") == 4);
    CHECK(any.count("b") == 4);
    CHECK(any.count("c") == 4);
  }
}

TEST_CASE("Roles: a route whose hosts are busy waits for them, never spills",
          "[multi_host][roles]") {
  Cluster cluster(abc);
  Pool pool(abc, cluster.factory(), role_options());
  std::vector<Pool::handle_type> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(pool.acquire(Route::primary, 1s));
  }
  // The primary is at max_size: Route::primary waits (here until its timeout) instead of taking
  // a replica, and try_acquire says busy.
  CHECK_THROWS_AS(pool.acquire(Route::primary, 50ms), connpool::AcquireTimeout);
  CHECK_FALSE(pool.try_acquire(Route::primary).has_value());
  // A waiter is served when a primary connection comes back.
  std::thread releaser([&] {
    std::this_thread::sleep_for(20ms);
    held.pop_back();
  });
  auto h = pool.acquire(Route::primary, 5s);
  releaser.join();
  CHECK(h.host() == "a");
  // prefer_replica with every replica busy waits for a replica rather than load the primary.
  std::vector<Pool::handle_type> reads;
  for (int i = 0; i < 8; ++i) {
    reads.push_back(pool.acquire(Route::prefer_replica, 1s));
    CHECK(reads.back().host() != "a");
  }
  CHECK_THROWS_AS(pool.acquire(Route::prefer_replica, 50ms), connpool::AcquireTimeout);
}

TEST_CASE("Roles: prefer_replica falls back to the primary when no replica can serve",
          "[multi_host][roles]") {
  Cluster cluster(abc);
  MultiHostOptions o = role_options(0);
  Pool pool(abc, cluster.factory(), o);
  REQUIRE(eventually([&] { return role_of(pool, "c") == HostRole::replica; }));
  // b and c stop answering: their probes fail (their roles become unknown) and they refuse
  // connects.
  for (const char* r : {"b", "c"}) {
    cluster[r].down = true;
    cluster[r].probe_throws = true;
  }
  pool.recheck_roles();
  CHECK(role_of(pool, "b") == HostRole::unknown);
  auto h = pool.acquire(Route::prefer_replica, 2s);
  CHECK(h.host() == "a");
  const std::string msg = message_of([&] { (void)pool.acquire(Route::replica, 200ms); });
  CHECK(msg.find("no healthy host for Route::replica") != std::string::npos);
  CHECK(msg.find("a: primary, closed") != std::string::npos);
  CHECK(msg.find("b: unknown, ") != std::string::npos);
}

TEST_CASE("Roles: NoHealthyHost names the route and each host's role and state",
          "[multi_host][roles]") {
  Cluster cluster(abc);
  cluster["a"].role = HostRole::replica;  // no primary anywhere
  Pool pool(abc, cluster.factory(), role_options());
  const std::string msg = message_of([&] { (void)pool.acquire(Route::primary, 100ms); });
  CHECK(msg.rfind("connpool: no healthy host for Route::primary (", 0) == 0);
  CHECK(msg.find("a: replica, closed, 0 consecutive failures") != std::string::npos);
  CHECK(msg.find("b: replica, closed") != std::string::npos);
  CHECK(msg.find("c: replica, closed") != std::string::npos);
  CHECK_THROWS_AS(pool.acquire(Route::primary, 100ms), NoHealthyHost);
  CHECK_THROWS_AS(pool.try_acquire(Route::primary), NoHealthyHost);
  // The other routes still serve.
  CHECK(pool.acquire(Route::replica, 1s));
  CHECK(pool.acquire(Route::any, 1s));
}

TEST_CASE("Roles: a promotion is seen by the next recheck", "[multi_host][roles]") {
  Cluster cluster(abc);
  Pool pool(abc, cluster.factory(), role_options());
  CHECK(pool.acquire(Route::primary, 1s).host() == "a");
  cluster.promote("b");
  pool.recheck_roles();
  CHECK(role_of(pool, "a") == HostRole::replica);
  CHECK(role_of(pool, "b") == HostRole::primary);
  CHECK(hosts_serving(pool, Route::primary, 10).count("b") == 10);
  CHECK(hosts_serving(pool, Route::replica, 10).count("b") == 0);
}

TEST_CASE("Roles: the recheck thread probes every role_recheck_interval", "[multi_host][roles]") {
  Cluster cluster(abc);
  MultiHostOptions o = role_options();
  o.role_recheck_interval = 20ms;
  Pool pool(abc, cluster.factory(), o);
  cluster.promote("c");
  // No acquire, no call: the thread alone finds the new primary.
  CHECK(eventually([&] { return role_of(pool, "c") == HostRole::primary; }));
  CHECK(eventually([&] { return role_of(pool, "a") == HostRole::replica; }));
  CHECK(pool.acquire(Route::primary, 1s).host() == "c");
}

TEST_CASE("Roles: an acquire that finds no host of its route waits for a recheck",
          "[multi_host][roles]") {
  Cluster cluster(abc);
  MultiHostOptions o = role_options(0);  // no warm-up: the roles come from the first pass
  Pool pool(abc, cluster.factory(), o);
  // Right after construction: the acquire waits for the first pass rather than fail.
  CHECK(pool.acquire(Route::primary, 5s).host() == "a");
  SECTION("try_acquire waits for the first pass too") {
    Pool fresh(abc, cluster.factory(), o);
    auto h = fresh.try_acquire(Route::primary);
    REQUIRE(h.has_value());
    CHECK(h->host() == "a");
  }
  SECTION("after a failover, misses ask for passes until one shows the new primary") {
    // a goes down: its connection is invalidated twice (as after network errors), which opens
    // its circuit; the pass that follows finds a unreachable.
    cluster["a"].down = true;
    pool.acquire(Route::primary, 1s).invalidate();
    CHECK_THROWS_AS(pool.acquire(Route::primary, 1s), NoHealthyHost);  // its connect fails
    REQUIRE(eventually([&] { return role_of(pool, "a") == HostRole::unknown; }));
    cluster.promote("b");
    // The recheck interval is an hour: only a pass asked for by a miss (at most one a second)
    // can show b. Writers retry until one does.
    int misses = 0;
    const auto t0 = std::chrono::steady_clock::now();
    std::optional<Pool::handle_type> h;
    while (!h && std::chrono::steady_clock::now() - t0 < 10s) {
      try {
        h.emplace(pool.acquire(Route::primary, 100ms));
      } catch (const NoHealthyHost&) {
        ++misses;
      }
    }
    REQUIRE(h.has_value());
    CHECK(h->host() == "b");
    CHECK(role_of(pool, "b") == HostRole::primary);
    // Spaced passes: each miss probed b at most once, and not more than one pass a second.
    const auto secs =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - t0)
            .count();
    CHECK(cluster["b"].role_probes.load() <= secs + 4);
  }
}

TEST_CASE("Roles: a breaker that opens triggers a recheck at once", "[multi_host][roles]") {
  Cluster cluster(abc);
  MultiHostOptions o = role_options(0);
  Pool pool(abc, cluster.factory(), o);
  REQUIRE(pool.acquire(Route::primary, 5s).host() == "a");
  const int probes_before = cluster["b"].role_probes.load();
  // a fails: its handles are invalidated (as after network errors) until its circuit opens.
  cluster["a"].down = true;
  pool.acquire(Route::primary, 1s).invalidate();  // one failure; a's next connect fails: two
  CHECK_THROWS_AS(pool.acquire(Route::primary, 1s), NoHealthyHost);
  REQUIRE(pool.stats().hosts[0].state == connpool::HealthState::open);
  // The pass probes b and c, and finds a unreachable.
  CHECK(eventually([&] { return cluster["b"].role_probes.load() > probes_before; }));
  CHECK(eventually([&] { return role_of(pool, "a") == HostRole::unknown; }));
}

TEST_CASE("Roles: a Route::primary connection whose host was demoted is closed on return",
          "[multi_host][roles]") {
  Cluster cluster(abc);
  Pool pool(abc, cluster.factory(), role_options());
  auto write = pool.acquire(Route::primary, 1s);
  auto any = pool.acquire(Route::any, 1s);
  while (any.host() != "a") {
    any = pool.acquire(Route::any, 1s);
  }
  const int closes = cluster["a"].closes.load();
  cluster.promote("b");
  pool.recheck_roles();
  REQUIRE(role_of(pool, "a") == HostRole::replica);
  write.release();
  CHECK(cluster["a"].closes.load() == closes + 1);
  any.release();  // not routed to the primary: back to the pool
  CHECK(cluster["a"].closes.load() == closes + 1);
  // Neither counts against a's circuit.
  const auto stats = pool.stats();
  CHECK(stats.hosts[0].consecutive_failures == 0);
  CHECK(stats.hosts[0].state == connpool::HealthState::closed);
  // A Route::primary handle on a host still primary is returned, not closed.
  auto w = pool.acquire(Route::primary, 1s);
  CHECK(w.host() == "b");
  const int b_closes = cluster["b"].closes.load();
  w.release();
  CHECK(cluster["b"].closes.load() == b_closes);
}

TEST_CASE("Roles: replicas beyond max_replica_lag are skipped until they catch up",
          "[multi_host][roles]") {
  Cluster cluster(abc);
  MultiHostOptions o = role_options(0);
  o.lag_probe = probe_lag;
  o.max_replica_lag = 100ms;
  Pool pool(abc, cluster.factory(), o);
  settle(pool);
  cluster["b"].lag_ms = 500;
  pool.recheck_roles();
  CHECK(lag_of(pool, "b") == 500ms);
  CHECK(hosts_serving(pool, Route::replica, 20).count("b") == 0);
  CHECK(hosts_serving(pool, Route::prefer_replica, 20).count("b") == 0);
  CHECK(hosts_serving(pool, Route::any, 12, true).count("b") == 4);  // any ignores the lag

  SECTION("every replica lagging: prefer_replica reads from the primary") {
    cluster["c"].lag_ms = 1000;
    pool.recheck_roles();
    CHECK(hosts_serving(pool, Route::prefer_replica, 10).count("a") == 10);
    const std::string msg = message_of([&] { (void)pool.acquire(Route::replica, 100ms); });
    CHECK(msg.find("b: replica (lag 500 ms, over max_replica_lag)") != std::string::npos);
  }
  SECTION("a lag that cannot be read counts as too far behind") {
    cluster["c"].lag_throws = true;
    pool.recheck_roles();
    CHECK_FALSE(lag_of(pool, "c").has_value());
    CHECK(role_of(pool, "c") == HostRole::replica);  // not a failure of the host
    CHECK(pool.stats().hosts[2].consecutive_failures == 0);
    const std::string msg = message_of([&] { (void)pool.acquire(Route::replica, 100ms); });
    CHECK(msg.find("c: replica (lag unknown), closed") != std::string::npos);
    CHECK(hosts_serving(pool, Route::prefer_replica, 5).count("a") == 5);
  }
  SECTION("caught up, the replica serves again") {
    cluster["b"].lag_ms = 10;
    pool.recheck_roles();
    CHECK(hosts_serving(pool, Route::replica, 40).count("b") > 0);
  }
}

TEST_CASE("Roles: a probe that throws on a new connection fails that connect",
          "[multi_host][roles]") {
  Cluster cluster(abc);
  MultiHostOptions o = role_options(0);
  o.per_host.fail_fast = false;
  Pool pool(abc, cluster.factory(), o);
  REQUIRE(pool.acquire(Route::replica, 5s));
  cluster["a"].probe_throws = true;
  pool.recheck_roles();  // on a's idle connection: a's role becomes unknown, a failure counted
  CHECK(role_of(pool, "a") == HostRole::unknown);
  const auto st = pool.stats().hosts[0];
  CHECK(st.consecutive_failures == 1);
  CHECK(st.last_error == "role probe failed: probe: server gone away");
  // A new connection to a is probed as it connects; the failure closes it and the acquire fails
  // over to b.
  const int closes = cluster["a"].closes.load();
  const int connects = cluster["a"].connects.load();
  auto h = pool.acquire(Route::any, 1s);
  while (cluster["a"].connects.load() == connects) {
    h = pool.acquire(Route::any, 1s);
  }
  CHECK(h.host() != "a");
  CHECK(cluster["a"].closes.load() >= closes + 1);
  CHECK(pool.stats().hosts[0].state == connpool::HealthState::open);
  // Every connection to a was closed: the failed probes' (the opening's recheck may have made
  // one more) and the first one's.
  CHECK(eventually([&] { return cluster["a"].closes.load() == cluster["a"].connects.load(); }));
}

TEST_CASE("Roles: bad role options are refused, naming the field", "[multi_host][roles]") {
  Cluster cluster(abc);
  auto message = [&](MultiHostOptions o) {
    return message_of([&] { Pool p(abc, cluster.factory(), o); });
  };
  MultiHostOptions o = role_options();
  o.role_recheck_interval = 0ms;
  CHECK(message(o).find("role_recheck_interval must be positive") != std::string::npos);
  o = role_options();
  o.max_replica_lag = -1ms;
  CHECK(message(o).find("max_replica_lag must not be negative") != std::string::npos);
  o = role_options();
  o.max_replica_lag = 100ms;
  CHECK(message(o).find("max_replica_lag needs a lag_probe") != std::string::npos);
  o = MultiHostOptions{};
  o.lag_probe = probe_lag;
  CHECK(message(o).find("lag_probe needs a role_probe") != std::string::npos);
  o = role_options();
  o.role_probe = [](int&) { return HostRole::primary; };
  CHECK(message(o).find("role_probe must take the pool's connection type") != std::string::npos);
  o = role_options();
  o.lag_probe = [](const std::string&) { return 0ms; };
  CHECK(message(o).find("lag_probe must take the pool's connection type") != std::string::npos);
  // A const reference to the connection type is the same type.
  o = role_options();
  o.role_probe = [](const RoleConn& c) { return c.server().role.load(); };
  CHECK(message(o).empty());
  // A route without roles.
  MultiHostOptions plain;
  plain.per_host.health_check_interval = 0ms;
  Pool pool(abc, cluster.factory(), plain);
  CHECK(message_of([&] {
          (void)pool.acquire(Route::primary, 10ms);
        }).find("Route::primary needs MultiHostOptions::role_probe") != std::string::npos);
  CHECK_THROWS_AS(pool.try_acquire(Route::replica), std::invalid_argument);
  CHECK(pool.acquire(Route::any, 1s));  // any needs no roles
  CHECK(pool.stats().hosts[0].role == HostRole::unknown);
  pool.recheck_roles();  // no-op
}

TEST_CASE("Roles: ConnProbe takes functions, lambdas and std::function", "[multi_host][roles]") {
  connpool::ConnProbe<HostRole> empty;
  CHECK_FALSE(empty);
  connpool::ConnProbe<HostRole> fn = probe_role;
  connpool::ConnProbe<HostRole> stdfn = std::function<HostRole(RoleConn&)>(probe_role);
  int calls = 0;
  connpool::ConnProbe<HostRole> lambda = [&calls](RoleConn&) mutable {
    ++calls;
    return HostRole::replica;
  };
  connpool::ConnProbe<std::chrono::milliseconds> seconds = [](RoleConn&) { return 2s; };
  for (auto* p : {&fn, &stdfn, &lambda}) {
    CHECK(*p);
    CHECK(p->takes<RoleConn>());
    CHECK_FALSE(p->takes<int>());
  }
  Server s;
  s.role = HostRole::primary;
  RoleConn c("x", &s);
  CHECK(fn(c) == HostRole::primary);
  CHECK(stdfn(c) == HostRole::primary);
  CHECK(lambda(c) == HostRole::replica);
  CHECK(calls == 1);
  CHECK(seconds(c) == 2000ms);
}

TEST_CASE("Roles: close() wakes an acquire waiting for a recheck", "[multi_host][roles]") {
  Cluster cluster(abc);
  std::atomic<bool> block{false};
  std::atomic<bool> in_probe{false};
  MultiHostOptions o = role_options(0);
  o.role_recheck_interval = 20ms;
  o.role_probe = [&](RoleConn& c) {
    if (block.load()) {
      in_probe = true;
      while (block.load()) {
        std::this_thread::sleep_for(1ms);
      }
    }
    return probe_role(c);
  };
  cluster["a"].role = HostRole::replica;  // no primary: Route::primary misses
  Pool pool(abc, cluster.factory(), o);
  REQUIRE(eventually([&] { return role_of(pool, "c") == HostRole::replica; }));
  block = true;  // the next pass hangs in a probe
  REQUIRE(eventually([&] { return in_probe.load(); }));
  std::thread closer([&] {
    std::this_thread::sleep_for(50ms);
    pool.close();
    block = false;
  });
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(pool.acquire(Route::primary, 30s), connpool::PoolClosed);
  CHECK(std::chrono::steady_clock::now() - t0 < 10s);
  closer.join();
}

TEST_CASE("Roles: user code in a probe may call into the pool", "[multi_host][roles]") {
  Cluster cluster(abc);
  std::optional<Pool> pool;
  std::atomic<Pool*> live{nullptr};  // set once the pool is built
  std::atomic<int> reentered{0};
  MultiHostOptions o = role_options(0);
  o.role_recheck_interval = 10ms;
  o.role_probe = [&](RoleConn& c) {
    // stats(), an acquire and a recheck from inside a probe, on the recheck thread and on
    // connecting threads alike: no lock of the pool is held here.
    if (Pool* p = live.load()) {
      (void)p->stats();
      if (auto h = p->try_acquire(Route::any)) {
        reentered.fetch_add(1);
      }
      if (reentered.load() == 2) {
        p->recheck_roles();
      }
    }
    return probe_role(c);
  };
  pool.emplace(abc, cluster.factory(), o);
  live = &*pool;
  CHECK(pool->acquire(Route::primary, 5s).host() == "a");
  CHECK(eventually([&] { return reentered.load() > 3; }));
  live = nullptr;
  pool.reset();
}

TEST_CASE("Roles: a probe that destroys the pool, on the recheck thread", "[multi_host][roles]") {
  Cluster cluster(abc);
  std::optional<Pool> pool;
  std::atomic<bool> destroy{false};
  std::atomic<bool> destroyed{false};
  std::thread::id destroyer;
  MultiHostOptions o = role_options(0);
  o.role_recheck_interval = 10ms;
  o.role_probe = [&](RoleConn& c) {
    if (destroy.exchange(false)) {
      destroyer = std::this_thread::get_id();
      pool.reset();  // the pool's own thread runs its destructor: it must not join itself
      destroyed = true;
    }
    return probe_role(c);
  };
  pool.emplace(abc, cluster.factory(), o);
  REQUIRE(pool->acquire(Route::primary, 5s));
  destroy = true;
  REQUIRE(eventually([&] { return destroyed.load(); }));
  CHECK(destroyer != std::this_thread::get_id());
  // Every connection was closed, the one being probed included, once each.
  CHECK(eventually([&] {
    int opened = 0;
    int closed = 0;
    for (const auto& h : abc) {
      opened += cluster[h].connects.load();
      closed += cluster[h].closes.load();
    }
    return opened == closed;
  }));
}

TEST_CASE("Roles: a probe that destroys the pool inside an acquire's connect",
          "[multi_host][roles]") {
  Cluster cluster(abc);
  std::optional<Pool> pool;
  std::atomic<bool> destroy{false};
  MultiHostOptions o = role_options(0);
  o.role_probe = [&](RoleConn& c) {
    if (destroy.exchange(false)) {
      pool.reset();
    }
    return probe_role(c);
  };
  pool.emplace(abc, cluster.factory(), o);
  REQUIRE(pool->acquire(Route::primary, 5s));  // the first pass has run: roles known
  // Hold a's idle connection, so that the next primary acquire connects (and probes).
  auto held = pool->acquire(Route::primary, 1s);
  destroy = true;
  CHECK_THROWS_AS(pool->acquire(Route::primary, 1s), connpool::PoolClosed);
  CHECK_FALSE(pool.has_value());
  held.release();  // outlives the pool: closed on return
  int opened = 0;
  int closed = 0;
  for (const auto& h : abc) {
    opened += cluster[h].connects.load();
    closed += cluster[h].closes.load();
  }
  CHECK(opened == closed);
}

TEST_CASE("Roles: a host whose connections are all in use is probed on one of its own",
          "[multi_host][roles]") {
  Cluster cluster(abc);
  Pool pool(abc, cluster.factory(), role_options(0));
  // Waits for the recheck thread's first pass (no role is known before it), so that it cannot
  // probe b during the test, on a connection of its own.
  REQUIRE(pool.acquire(Route::primary, 5s).host() == "a");
  std::vector<Pool::handle_type> readers;  // b full of readers, as in a failover
  for (int i = 0; i < 4; ++i) {
    readers.push_back(pool.acquire(std::string("b"), 1s));
  }
  const int connects = cluster["b"].connects.load();
  const int closes = cluster["b"].closes.load();
  cluster.promote("b");
  pool.recheck_roles();
  CHECK(role_of(pool, "b") == HostRole::primary);
  CHECK(cluster["b"].connects.load() == connects + 1);  // the probe's connection...
  CHECK(cluster["b"].closes.load() == closes + 1);      // ...closed after it
  const auto st = pool.stats().hosts[1].pool;
  CHECK(st.in_use == 4);
  CHECK(st.idle == 0);
  CHECK(st.total_connections() == 4);  // never the pool's
  readers.clear();
  CHECK(pool.acquire(Route::primary, 1s).host() == "b");
  SECTION("a paused host keeps its role") {
    pool.pause_host("c");
    cluster.promote("c");
    pool.recheck_roles();
    CHECK(role_of(pool, "c") == HostRole::replica);
    CHECK(role_of(pool, "b") == HostRole::replica);
  }
}

TEST_CASE("Roles: a route shares round_robin's turns evenly among its hosts",
          "[multi_host][roles]") {
  // The primary listed first: a turn that fell on it must not pass to the replica after it.
  Cluster cluster({"a", "b", "c", "d"});
  Pool pool({"a", "b", "c", "d"}, cluster.factory(), role_options());
  const auto replica = hosts_serving(pool, Route::replica, 300);
  CHECK(replica.count("b") == 100);
  CHECK(replica.count("c") == 100);
  CHECK(replica.count("d") == 100);
  CHECK(hosts_serving(pool, Route::primary, 30).count("a") == 30);
}

TEST_CASE("Roles: to_prometheus() writes each host's role, circuit and lag",
          "[multi_host][roles][metrics]") {
  Cluster cluster(abc);
  cluster["b"].lag_ms = 1500;
  MultiHostOptions o = role_options();
  o.lag_probe = probe_lag;
  o.per_host.name = "orders";
  Pool pool(abc, cluster.factory(), o);
  connpool::PrometheusOptions po;
  po.labels = {{"zone", "eu"}};
  const std::string text = pool.stats().to_prometheus(po);
  INFO(text);
  const auto samples = connpool_test::prometheus_samples(text);
  auto at = [&](const std::string& name, const std::string& host, const std::string& extra) {
    std::string key = name + R"({db_client_connection_pool_name="orders",host=")" + host +
                      R"(",zone="eu")" + (extra.empty() ? "" : "," + extra) + "}";
    INFO(key);
    REQUIRE(samples.count(key) == 1);
    return samples.at(key);
  };
  CHECK(at("connpool_host_role", "a", R"(role="primary")") == "1");
  CHECK(at("connpool_host_role", "a", R"(role="replica")") == "0");
  CHECK(at("connpool_host_role", "a", R"(role="unknown")") == "0");
  CHECK(at("connpool_host_role", "b", R"(role="replica")") == "1");
  CHECK(at("connpool_host_role", "c", R"(role="primary")") == "0");
  CHECK(at("connpool_host_circuit_state", "a", R"(state="closed")") == "1");
  CHECK(at("connpool_host_circuit_state", "a", R"(state="open")") == "0");
  CHECK(at("connpool_host_consecutive_failures", "c", "") == "0");
  CHECK(at("connpool_host_replica_lag_seconds", "b", "") == "1.5");
  CHECK(at("connpool_host_replica_lag_seconds", "c", "") == "0");
  CHECK(
      samples.count(
          R"(connpool_host_replica_lag_seconds{db_client_connection_pool_name="orders",host="a",zone="eu"})") ==
      0);  // the primary has no lag reading
  for (const char* family :
       {"connpool_host_role", "connpool_host_circuit_state", "connpool_host_consecutive_failures",
        "connpool_host_replica_lag_seconds"}) {
    CHECK(text.find(std::string("# TYPE ") + family + " gauge\n") != std::string::npos);
  }
  // "role" is the text's own label.
  po.labels = {{"role", "x"}};
  CHECK_THROWS_AS(pool.stats().to_prometheus(po), std::invalid_argument);
}

TEST_CASE("MultiHostPool health(): an acquire within the timeout, per route",
          "[multi_host][roles][health]") {
  Cluster cluster(abc);
  MultiHostOptions o = role_options(0);
  Pool pool(abc, cluster.factory(), o);
  // Waits for the recheck thread's first pass (the roles): its connections, and no other, are
  // then the pool's, so that a's one connection invalidated below leaves a none.
  REQUIRE(pool.acquire(Route::primary, 5s).host() == "a");
  connpool::HealthReport r = pool.health(1s);
  CHECK(r.ok);
  CHECK(r.reason.empty());
  CHECK(r.max_size == 12);
  CHECK(r.in_use == 0);
  CHECK(r.last_error.empty());
  CHECK(pool.health(Route::primary, 1s).ok);
  // No primary: writes cannot be served, reads can.
  cluster["a"].down = true;
  pool.acquire(Route::primary, 1s).invalidate();
  CHECK_THROWS_AS(pool.acquire(Route::primary, 1s), NoHealthyHost);  // a's circuit opens
  r = pool.health(Route::primary, 200ms);
  CHECK_FALSE(r.ok);
  CHECK(r.reason.find("could not acquire") != std::string::npos);
  CHECK(r.reason.find("no healthy host for Route::primary") != std::string::npos);
  CHECK(r.last_error.find("a: connection refused: a") != std::string::npos);
  CHECK(pool.health(Route::replica, 1s).ok);
  CHECK(pool.health(1s).ok);
  CHECK_THROWS_AS(pool.health(-1ms), std::invalid_argument);
  // A route needs the role probe.
  MultiHostOptions plain;
  plain.per_host.health_check_interval = 0ms;
  Pool no_roles(abc, cluster.factory(), plain);
  CHECK_THROWS_AS(no_roles.health(Route::primary, 1s), std::invalid_argument);
}

TEST_CASE("RoleChecker: a miss that follows a pass it did not see looks again at once",
          "[multi_host][roles]") {
  // An acquire reads passes_done(), looks at stale roles, and misses; meanwhile a pass ended.
  // Within miss_spacing of that pass no new one may start, yet the roles it left may serve the
  // route: the miss must look again rather than stand.
  auto checker = std::make_shared<connpool::detail::RoleChecker>(1h);
  std::atomic<int> passes{0};
  connpool::detail::RoleChecker::start(checker, [&] {
    passes.fetch_add(1);
    return true;
  });
  const std::uint64_t seen = 0;  // read before the first pass ended
  REQUIRE(eventually([&] { return checker->passes_done() == 1; }));
  const auto soon = std::chrono::steady_clock::now() + 10s;
  CHECK(checker->may_await_pass(false, seen));
  CHECK(checker->await_pass(soon, false, seen));  // at once: no second pass is asked for
  connpool::detail::RoleChecker::PassWaiter w;
  w.deadline = soon;
  w.complete = [](connpool::detail::RoleChecker::PassWaiter*) noexcept {};
  CHECK_FALSE(checker->enqueue_pass_waiter(w, false, seen));  // not queued...
  CHECK(w.ran);                                               // ...and the pass counts as run
  CHECK(passes.load() == 1);
  checker->stop_and_join();
}
