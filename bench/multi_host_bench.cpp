// connpool - benchmarks of MultiHostPool's overhead over a single ConnectionPool
// SPDX-License-Identifier: MIT

// Connections idle and never expiring, a connection type that does no I/O: what is
// measured is the bookkeeping. BM_Single_* is one ConnectionPool; BM_MultiHost/<strategy> is a
// MultiHostPool of 3 hosts picking by that strategy; the difference is the balancer, the breaker
// check and the in-use count, on one thread; BM_MultiHost_Route adds host roles and picks within
// a Route; BM_AsyncMultiHost_* are the same through AsyncMultiHostPool (co_await, and a hand-off
// between two coroutines that suspend); BM_Threads_* share one pool among 2 and 4 threads.
// BM_HostPool_Stats is the price of one ConnectionPool::stats(), which
// is why MultiHostPool does not read it on every acquire (see HostEntry::look_at_pings). For
// figures, run a Release build with --benchmark_repetitions=5
// --benchmark_report_aggregates_only=true.

#include <chrono>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>

#include <connpool/connpool.hpp>

#include "handoff.hpp"
#include "null_connection.hpp"

namespace {

using connpool_bench::fixed_size;
using connpool_bench::NullConnection;
using connpool_bench::NullFactory;

struct NullHostFactory {
  NullConnection operator()(const std::string& /*host*/) const noexcept { return {}; }
};

using Single = connpool::ConnectionPool<NullConnection, NullFactory>;
using Multi = connpool::MultiHostPool<NullConnection, NullHostFactory>;

void BM_Single_AcquireRelease(benchmark::State& state) {
  Single pool{NullFactory{}, fixed_size(8)};
  for (auto _ : state) {
    auto handle = pool.acquire();
    benchmark::DoNotOptimize(handle.get());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Single_AcquireRelease);

void BM_Single_TryAcquire(benchmark::State& state) {
  Single pool{NullFactory{}, fixed_size(8)};
  for (auto _ : state) {
    auto handle = pool.try_acquire();
    benchmark::DoNotOptimize(handle->get());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Single_TryAcquire);

/// 3 hosts of 8 idle connections each; state.range(0) is the Balance.
void BM_MultiHost_AcquireRelease(benchmark::State& state) {
  const auto balance = static_cast<connpool::Balance>(state.range(0));
  Multi pool{{"h1", "h2", "h3"},
             NullHostFactory{},
             connpool::MultiHostOptions{.per_host = fixed_size(8), .balance = balance}};
  for (auto _ : state) {
    auto handle = pool.acquire();
    benchmark::DoNotOptimize(handle.get());
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(balance == connpool::Balance::round_robin    ? "round_robin"
                 : balance == connpool::Balance::least_in_use ? "least_in_use"
                 : balance == connpool::Balance::random       ? "random"
                                                              : "power_of_two_choices");
}
BENCHMARK(BM_MultiHost_AcquireRelease)
    ->Arg(static_cast<int>(connpool::Balance::round_robin))
    ->Arg(static_cast<int>(connpool::Balance::least_in_use))
    ->Arg(static_cast<int>(connpool::Balance::random))
    ->Arg(static_cast<int>(connpool::Balance::power_of_two_choices));

/// acquire(host): no balancing, a linear lookup of the host among 3.
void BM_MultiHost_AcquireHost(benchmark::State& state) {
  Multi pool{
      {"h1", "h2", "h3"}, NullHostFactory{}, connpool::MultiHostOptions{.per_host = fixed_size(8)}};
  const std::string host = "h2";
  for (auto _ : state) {
    auto handle = pool.acquire(host);
    benchmark::DoNotOptimize(handle.get());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MultiHost_AcquireHost);

/// A connection that knows its host's role ("h1" is the primary), for the routed acquires.
struct RoleConnection {
  connpool::HostRole role = connpool::HostRole::unknown;
};
struct RoleHostFactory {
  RoleConnection operator()(const std::string& host) const noexcept {
    return {host == "h1" ? connpool::HostRole::primary : connpool::HostRole::replica};
  }
};

/// acquire(route, 30 s) over 3 hosts (h1 the primary, h2 and h3 replicas) with a role probe,
/// round_robin; state.range(0) is the Route. Route::any is acquire() with roles known.
void BM_MultiHost_Route(benchmark::State& state) {
  const auto route = static_cast<connpool::Route>(state.range(0));
  connpool::MultiHostOptions o{.per_host = fixed_size(8)};
  o.role_probe = [](RoleConnection& c) { return c.role; };
  connpool::MultiHostPool<RoleConnection, RoleHostFactory> pool{
      {"h1", "h2", "h3"}, RoleHostFactory{}, o};
  for (auto _ : state) {
    auto handle = pool.acquire(route, std::chrono::seconds(30));
    benchmark::DoNotOptimize(handle.get());
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(connpool::to_string(route));
}
BENCHMARK(BM_MultiHost_Route)
    ->Arg(static_cast<int>(connpool::Route::any))
    ->Arg(static_cast<int>(connpool::Route::primary))
    ->Arg(static_cast<int>(connpool::Route::replica))
    ->Arg(static_cast<int>(connpool::Route::prefer_replica));

// --- AsyncMultiHostPool --------------------------------------------------------------------

using AsyncRoles = connpool::AsyncMultiHostPool<RoleConnection, RoleHostFactory>;

connpool::Task<void> routed_cycles(AsyncRoles& pool,
                                   connpool::Route route,
                                   benchmark::State& state) {
  for (auto _ : state) {
    auto handle = co_await pool.acquire(route, std::chrono::seconds(30));
    benchmark::DoNotOptimize(handle.get());
  }
}

/// BM_MultiHost_Route through AsyncMultiHostPool: `co_await pool.acquire(route, 30 s)` in one
/// coroutine, with a connection idle, so the co_await completes without suspending.
void BM_AsyncMultiHost_Route(benchmark::State& state) {
  const auto route = static_cast<connpool::Route>(state.range(0));
  connpool::MultiHostOptions o{.per_host = fixed_size(8)};
  o.role_probe = [](RoleConnection& c) { return c.role; };
  AsyncRoles pool{{"h1", "h2", "h3"}, RoleHostFactory{}, o};
  connpool::detail::sync_wait(routed_cycles(pool, route, state));
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(connpool::to_string(route));
}
BENCHMARK(BM_AsyncMultiHost_Route)
    ->Arg(static_cast<int>(connpool::Route::any))
    ->Arg(static_cast<int>(connpool::Route::primary))
    ->Arg(static_cast<int>(connpool::Route::replica))
    ->Arg(static_cast<int>(connpool::Route::prefer_replica));

/// Two coroutines take turns on the primary's one connection: every acquire suspends in the
/// primary's queue (with a driver coroutine), and every release hands the connection to the
/// other, resumed through the scheduler. Items are hand-offs. async_bench's BM_Async_Handoff is
/// the same over one AsyncConnectionPool.
void BM_AsyncMultiHost_Handoff(benchmark::State& state) {
  connpool_bench::ReadyQueue queue;
  connpool::MultiHostOptions o{.per_host = fixed_size(1)};
  o.role_probe = [](RoleConnection& c) { return c.role; };
  AsyncRoles pool{{"h1", "h2", "h3"}, RoleHostFactory{}, o, queue.scheduler()};
  connpool_bench::handoffs(state, queue, [&pool] {
    return pool.acquire(connpool::Route::primary, std::chrono::seconds(30));
  });
}
BENCHMARK(BM_AsyncMultiHost_Handoff);

// --- Several threads ---------------------------------------------------------------------
// T threads share one pool: a ConnectionPool of 24 connections against a MultiHostPool of 3
// hosts x 8, so both have a connection for every thread and the difference is the shared state
// MultiHostPool adds (round_robin's turn, the per-host in-use counts). Thread 0 builds the pool
// before the loop; Google Benchmark starts every thread's loop together.

Single* shared_single = nullptr;
Multi* shared_multi = nullptr;

void BM_Threads_Single(benchmark::State& state) {
  if (state.thread_index() == 0) {
    shared_single = new Single{NullFactory{}, fixed_size(24)};
  }
  for (auto _ : state) {
    auto handle = shared_single->acquire();
    benchmark::DoNotOptimize(handle.get());
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    delete std::exchange(shared_single, nullptr);
  }
}
BENCHMARK(BM_Threads_Single)->ThreadRange(2, 4)->UseRealTime();

void BM_Threads_MultiHost(benchmark::State& state) {
  const auto balance = static_cast<connpool::Balance>(state.range(0));
  if (state.thread_index() == 0) {
    shared_multi =
        new Multi{{"h1", "h2", "h3"},
                  NullHostFactory{},
                  connpool::MultiHostOptions{.per_host = fixed_size(8), .balance = balance}};
  }
  for (auto _ : state) {
    auto handle = shared_multi->acquire();
    benchmark::DoNotOptimize(handle.get());
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    delete std::exchange(shared_multi, nullptr);
    state.SetLabel(balance == connpool::Balance::round_robin    ? "round_robin"
                   : balance == connpool::Balance::least_in_use ? "least_in_use"
                   : balance == connpool::Balance::random       ? "random"
                                                                : "power_of_two_choices");
  }
}
BENCHMARK(BM_Threads_MultiHost)
    ->ArgsProduct({{static_cast<int>(connpool::Balance::round_robin),
                    static_cast<int>(connpool::Balance::least_in_use),
                    static_cast<int>(connpool::Balance::random),
                    static_cast<int>(connpool::Balance::power_of_two_choices)}})
    ->ThreadRange(2, 4)
    ->UseRealTime();

/// One stats() of a pool of 8 connections: a lock and a walk of the slots.
void BM_HostPool_Stats(benchmark::State& state) {
  Single pool{NullFactory{}, fixed_size(8)};
  for (auto _ : state) {
    benchmark::DoNotOptimize(pool.stats().validation_failures);
  }
}
BENCHMARK(BM_HostPool_Stats);

}  // namespace
