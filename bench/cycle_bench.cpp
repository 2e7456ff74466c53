// connpool - benchmarks of one acquire/release cycle
// SPDX-License-Identifier: MIT

// The cost of the pool itself: the connection type does no I/O and has no close(), ping() or
// reset(), so what is measured is the pool's bookkeeping (lock, idle stack, handle) and, in the
// threaded case, contention on its lock. Linked with benchmark_main. For figures, run a Release
// build with --benchmark_repetitions=10 --benchmark_report_aggregates_only=true.

#include <cstddef>
#include <memory>
#include <optional>

#include <benchmark/benchmark.h>

#include <connpool/connpool.hpp>

#include "null_connection.hpp"

namespace {

using connpool_bench::fixed_size;
using connpool_bench::NullConnection;
using connpool_bench::NullFactory;

using Pool = connpool::ConnectionPool<NullConnection, NullFactory>;

/// One thread, 8 idle connections: acquire() takes the top of the idle stack, the handle's
/// destructor puts it back.
void BM_AcquireRelease_Idle(benchmark::State& state) {
  Pool pool{NullFactory{}, fixed_size(8)};
  for (auto _ : state) {
    auto handle = pool.acquire();
    benchmark::DoNotOptimize(handle.get());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AcquireRelease_Idle);

/// As BM_AcquireRelease_Idle, through try_acquire() (no deadline, no wait set-up).
void BM_TryAcquire_Idle(benchmark::State& state) {
  Pool pool{NullFactory{}, fixed_size(8)};
  for (auto _ : state) {
    auto handle = pool.try_acquire();
    benchmark::DoNotOptimize(handle->get());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TryAcquire_Idle);

/// N threads share a pool of N connections, so no acquire ever waits for a holder: what grows
/// with N is contention on the pool's lock. Real time, since CPU time hides that contention.
void BM_AcquireRelease_Threads(benchmark::State& state) {
  // One pool for all the threads of a run. Thread 0 makes it before the loop and destroys it
  // after; the benchmark library's barriers at the start and the end of the loop keep the other
  // threads from using it at any other time.
  static std::unique_ptr<Pool> pool;
  if (state.thread_index() == 0) {
    pool = std::make_unique<Pool>(NullFactory{},
                                  fixed_size(static_cast<std::size_t>(state.threads())));
  }
  for (auto _ : state) {
    auto handle = pool->acquire();
    benchmark::DoNotOptimize(handle.get());
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    pool.reset();
  }
}
BENCHMARK(BM_AcquireRelease_Threads)->Threads(2)->Threads(4)->UseRealTime();

}  // namespace
