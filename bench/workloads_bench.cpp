// connpool - the workloads of issue 3: connpool side by side with the pools it replaces
// SPDX-License-Identifier: MIT

// Each workload is a function template over a pool adapter, registered once per pool in this
// one binary, so that every pool runs on the same machine in the same run (and, with
// --benchmark_enable_random_interleaving, in interleaved repetitions). Names are
// BM_<Workload>_<Scenario>/<pool>[/<size>], e.g. BM_W1_Cycle/connpool, BM_W4_Scale/soci/4096.
// The pools: connpool stripped down to acquire/release (connpool; connpool_fifo and
// connpool_barging where waiting happens), connpool as users run it (connpool_defaults: default
// PoolOptions, a pingable connection, acquire(timeout)), the textbook
// mutex + deque + condition-variable pool of bench/baselines/textbook_pool.hpp, and SOCI's
// soci::connection_pool when CMake found it (CONNPOOL_BENCH_HAVE_SOCI). The connection does no
// I/O, so what is measured is the pool alone. bench/run.sh runs the suite and renders the
// results; bench/README.md explains each workload and holds the figures.

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <connpool/connpool.hpp>

#include "baselines/textbook_pool.hpp"
#include <sys/resource.h>
#ifdef CONNPOOL_BENCH_HAVE_SOCI
#include "baselines/soci_pool.hpp"
#endif

namespace {

using connpool::WaitPolicy;
using SteadyClock = std::chrono::steady_clock;

/// A connection that costs nothing: no I/O, and none of close()/ping()/reset().
struct NullConnection {
  int id = 0;
};

struct NullFactory {
  NullConnection operator()() const noexcept { return {}; }
};

/// What a workload needs of a pool: built from its size (all connections open from the start),
/// and acquire() returning a lease that gives the connection back when destroyed.
template <class Pool>
concept BenchPool = std::constructible_from<Pool, std::size_t> && requires(Pool& pool) {
  pool.acquire().get();
};

/// connpool::ConnectionPool with `size` connections opened up front and nothing that expires:
/// no maintenance thread, no idle or lifetime limit, so only acquire/release is measured.
template <WaitPolicy Policy, long StarvationBoundUs = 500>  // 500: the default bound
class ConnpoolAdapter {
 public:
  explicit ConnpoolAdapter(std::size_t size) : pool_(NullFactory{}, options(size)) {}

  auto acquire() { return pool_.acquire(); }
  [[nodiscard]] connpool::PoolStats stats() const { return pool_.stats(); }

 private:
  static connpool::PoolOptions options(std::size_t size) {
    // Assigned field by field rather than with designated initializers, so that new fields in
    // PoolOptions cannot break this file.
    connpool::PoolOptions o;
    o.min_size = size;
    o.max_size = size;
    o.max_idle = std::chrono::milliseconds{0};
    o.max_lifetime = std::chrono::milliseconds{0};
    o.health_check_interval = std::chrono::milliseconds{0};
    o.record_use_time = false;  // no clock reading at all (with it: bench/README.md, W1)
    o.wait_policy = Policy;
    o.starvation_bound = std::chrono::microseconds{StarvationBoundUs};
    return o;
  }

  connpool::ConnectionPool<NullConnection, NullFactory> pool_;
};

/// A null connection that can be pinged (a no-op that succeeds), so that validate_on_acquire
/// applies as it does to a real connection.
struct PingableNullConnection {
  int id = 0;
  bool ping() const noexcept { return true; }
};

struct PingableNullFactory {
  PingableNullConnection operator()() const noexcept { return {}; }
};

/// connpool::ConnectionPool as users run it: default PoolOptions (lifetimes with jitter, the idle
/// limit, validation on acquire past validation_bypass, the maintenance thread, the default wait
/// policy) but for the size, all connections opened up front, and acquire(timeout).
class ConnpoolDefaultsAdapter {
 public:
  explicit ConnpoolDefaultsAdapter(std::size_t size)
      : pool_(PingableNullFactory{}, options(size)) {}

  auto acquire() { return pool_.acquire(std::chrono::seconds{30}); }
  [[nodiscard]] connpool::PoolStats stats() const { return pool_.stats(); }

 private:
  static connpool::PoolOptions options(std::size_t size) {
    connpool::PoolOptions o;
    o.min_size = size;
    o.max_size = size;
    return o;
  }

  connpool::ConnectionPool<PingableNullConnection, PingableNullFactory> pool_;
};

/// The textbook pool over the same null connection.
class TextbookAdapter {
 public:
  explicit TextbookAdapter(std::size_t size) : pool_(size, NullFactory{}) {}

  auto acquire() { return pool_.acquire(); }

 private:
  connpool_bench::TextbookPool<NullConnection> pool_;
};

static_assert(BenchPool<ConnpoolAdapter<WaitPolicy::fifo>>);
static_assert(BenchPool<ConnpoolDefaultsAdapter>);
static_assert(BenchPool<TextbookAdapter>);
#ifdef CONNPOOL_BENCH_HAVE_SOCI
static_assert(BenchPool<connpool_bench::SociPool>);
#endif

// ---------------------------------------------------------------------------------------------
// W1 cycle: 1 thread, 8 idle connections, acquire then release at once. Read cpu_time: the
// cost of one cycle in ns.

template <BenchPool Pool>
void BM_W1_Cycle(benchmark::State& state) {
  Pool pool(8);
  for (auto _ : state) {
    auto lease = pool.acquire();
    benchmark::DoNotOptimize(lease.get());
  }
  state.SetItemsProcessed(state.iterations());
}

// ---------------------------------------------------------------------------------------------
// Shared state of the multi-threaded workloads (W2, W3).
//
// Throughput is reported as the counter cycles_per_s: all threads' cycles divided by the wall
// time from the first cycle of any thread to the last cycle of any thread. Why not only
// items_per_second: Google Benchmark stops each thread's timer when that thread has done its
// iterations and averages those times, so when some threads finish early (an unfair pool) it
// reports more cycles per second than the pool delivered. items_per_second is still set, for
// comparison.

constexpr int max_threads = 16;

/// One thread's record of a run, written only by that thread inside the timed loop and read by
/// thread 0 after it. Aligned to a cache line so that the threads do not share one.
struct alignas(64) ThreadRecord {
  SteadyClock::time_point first_cycle{};  // when this thread's first cycle began
  SteadyClock::time_point last_cycle{};   // when this thread's last cycle ended
  std::vector<std::uint32_t> waits_ns;    // W3: acquire latency of each cycle in the window;
                                          // sized before the loop, so the loop never allocates
  std::size_t recorded = 0;               // W3: cycles completed in the window
};

/// What the threads of one run share. One per workload and pool type (a function-local static);
/// runs never overlap.
///
/// Before the loop, each thread resets its own record and thread 0 makes the pool; the library's
/// start barrier orders all of that before any thread's first cycle, and its stop barrier orders
/// every cycle before thread 0 reads the records and destroys the pool after the loop.
template <class Pool>
struct SharedRun {
  std::unique_ptr<Pool> pool;
  std::atomic<bool> window_open{false};  // W3: true until some thread has done all its cycles
  std::array<ThreadRecord, max_threads> records;
  rusage usage_before{};  // the process's CPU time and context switches when the run began

  /// Called by every thread before the loop; returns its record.
  ThreadRecord& enter(const benchmark::State& state, std::size_t pool_size) {
    ThreadRecord& mine = records[static_cast<std::size_t>(state.thread_index())];
    mine.recorded = 0;
    if (state.thread_index() == 0) {
      pool = std::make_unique<Pool>(pool_size);
      window_open.store(true, std::memory_order_relaxed);
      getrusage(RUSAGE_SELF, &usage_before);
    }
    return mine;
  }

  /// Called by thread 0 after the loop: sets cycles_per_s, and where the time went per 1,000
  /// cycles (the process's user+sys CPU in microseconds, and its context switches, voluntary
  /// and involuntary, from getrusage), then destroys the pool.
  void leave(benchmark::State& state) {
    rusage after{};
    getrusage(RUSAGE_SELF, &after);
    const double kcycles = static_cast<double>(state.iterations()) * state.threads() / 1000.0;
    if (kcycles > 0) {
      const auto us = [](const timeval& t) {
        return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_usec);
      };
      const double cpu = us(after.ru_utime) - us(usage_before.ru_utime) + us(after.ru_stime) -
                         us(usage_before.ru_stime);
      state.counters["cpu_us_per_kcycle"] = cpu / kcycles;
      state.counters["vcsw_per_kcycle"] =
          static_cast<double>(after.ru_nvcsw - usage_before.ru_nvcsw) / kcycles;
      state.counters["ivcsw_per_kcycle"] =
          static_cast<double>(after.ru_nivcsw - usage_before.ru_nivcsw) / kcycles;
    }
    auto first = SteadyClock::time_point::max();
    auto last = SteadyClock::time_point::min();
    for (int t = 0; t < state.threads(); ++t) {
      first = std::min(first, records[static_cast<std::size_t>(t)].first_cycle);
      last = std::max(last, records[static_cast<std::size_t>(t)].last_cycle);
    }
    const std::chrono::duration<double> wall = last - first;
    if (wall.count() > 0) {
      state.counters["cycles_per_s"] =
          static_cast<double>(state.iterations()) * state.threads() / wall.count();
    }
    pool.reset();
  }
};

// ---------------------------------------------------------------------------------------------
// W2 no-wait: T threads share a pool of T connections, so no acquire waits for a holder; what
// grows with T is the cost of sharing the pool (its lock, its cache lines). Real time, since CPU
// time hides contention.

template <BenchPool Pool>
void BM_W2_NoWait(benchmark::State& state) {
  static SharedRun<Pool> run;
  ThreadRecord& mine = run.enter(state, static_cast<std::size_t>(state.threads()));
  bool first = true;
  benchmark::IterationCount cycles = 0;
  for (auto _ : state) {
    if (first) {
      mine.first_cycle = SteadyClock::now();
      first = false;
    }
    {
      auto lease = run.pool->acquire();  // made by thread 0; read only after the start barrier
      benchmark::DoNotOptimize(lease.get());
    }
    if (++cycles == state.max_iterations) {
      mine.last_cycle = SteadyClock::now();
    }
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    run.leave(state);
  }
}

// ---------------------------------------------------------------------------------------------
// W3 contended: 16 threads, 4 connections. Each cycle acquires, works about 1 us holding the
// connection, releases and works about 1 us more. With more threads than cores, this is where
// the waiting policy shows: throughput (cycles_per_s), the time spent in acquire()
// (wait_p50_us, wait_p99_us, wait_p999_us, wait_max_us, over all threads' cycles) and fairness
// (cycles_min_max: the fewest cycles a thread completed divided by the most, in the window in
// which no thread had finished yet).

constexpr int contended_threads = 16;
constexpr std::size_t contended_pool_size = 4;
constexpr std::chrono::nanoseconds contended_hold{1'000};     // work while holding
constexpr std::chrono::nanoseconds contended_outside{1'000};  // work between cycles

/// Burns CPU for `rounds` steps of a loop the compiler cannot remove.
void spin(std::uint64_t rounds) {
  for (std::uint64_t i = 0; i < rounds; ++i) {
    benchmark::DoNotOptimize(i);
  }
}

/// How many spin() rounds take `d` on this machine, measured once with steady_clock.
///
/// Why a calibrated loop and not "spin until now() >= deadline": W3 is meant to model CPU work.
/// A deadline spin that is preempted finishes as soon as its thread runs again, so work would
/// shrink exactly when the CPUs are oversubscribed. The fastest of several trials is kept, as the
/// one least disturbed by other load.
std::uint64_t spin_rounds(std::chrono::nanoseconds d) {
  static const double rounds_per_ns = [] {
    constexpr std::uint64_t trial_rounds = 200'000;
    auto best = std::chrono::nanoseconds::max();
    for (int trial = 0; trial < 25; ++trial) {
      const auto start = SteadyClock::now();
      spin(trial_rounds);
      best = std::min(
          best, std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now() - start));
    }
    return static_cast<double>(trial_rounds) /
           static_cast<double>(std::max<std::int64_t>(best.count(), 1));
  }();
  return static_cast<std::uint64_t>(rounds_per_ns * static_cast<double>(d.count())) + 1;
}

/// Nearest-rank percentile of sorted `v` (not empty), in microseconds.
double percentile_us(const std::vector<std::uint32_t>& v, double p) {
  const auto rank = static_cast<std::size_t>(p * static_cast<double>(v.size()));
  return static_cast<double>(v[std::min(rank, v.size() - 1)]) / 1000.0;
}

template <BenchPool Pool>
void BM_W3_Contended(benchmark::State& state) {
  static SharedRun<Pool> run;
  if (state.threads() > max_threads) {
    state.SkipWithError("the records hold at most 16 threads");
    return;
  }
  const auto hold = spin_rounds(contended_hold);
  const auto outside = spin_rounds(contended_outside);
  ThreadRecord& mine = run.enter(state, contended_pool_size);
  mine.waits_ns.assign(static_cast<std::size_t>(state.max_iterations), 0);

  benchmark::IterationCount cycles = 0;
  for (auto _ : state) {
    {
      const auto start = SteadyClock::now();
      if (cycles == 0) {
        mine.first_cycle = start;
      }
      auto lease = run.pool->acquire();  // made by thread 0; read only after the start barrier
      const auto waited = SteadyClock::now() - start;
      benchmark::DoNotOptimize(lease.get());
      if (run.window_open.load(std::memory_order_relaxed)) {
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(waited).count();
        mine.waits_ns[mine.recorded++] = static_cast<std::uint32_t>(
            std::min<std::int64_t>(ns, std::numeric_limits<std::uint32_t>::max()));
      }
      spin(hold);
    }
    spin(outside);
    if (++cycles == state.max_iterations) {
      mine.last_cycle = SteadyClock::now();
      run.window_open.store(false, std::memory_order_relaxed);  // this thread is done
    }
  }
  state.SetItemsProcessed(state.iterations());

  // Thread 0 merges the records. The other threads set no counter, and the library sums
  // counters over threads, so thread 0's values are reported as they are.
  if (state.thread_index() == 0) {
    std::vector<std::uint32_t> all;
    std::size_t fewest = std::numeric_limits<std::size_t>::max();
    std::size_t most = 0;
    for (int t = 0; t < state.threads(); ++t) {
      const ThreadRecord& r = run.records[static_cast<std::size_t>(t)];
      all.insert(all.end(), r.waits_ns.begin(),
                 r.waits_ns.begin() + static_cast<std::ptrdiff_t>(r.recorded));
      fewest = std::min(fewest, r.recorded);
      most = std::max(most, r.recorded);
    }
    if (!all.empty()) {
      std::sort(all.begin(), all.end());
      state.counters["wait_p50_us"] = percentile_us(all, 0.50);
      state.counters["wait_p99_us"] = percentile_us(all, 0.99);
      state.counters["wait_p999_us"] = percentile_us(all, 0.999);
      state.counters["wait_max_us"] = static_cast<double>(all.back()) / 1000.0;
      state.counters["cycles_min_max"] =
          static_cast<double>(fewest) / static_cast<double>(std::max<std::size_t>(most, 1));
    }
    // connpool's own record of the run's waits (PoolStats::wait_time, every cycle of every
    // thread): wait_hist_NN = acquires that waited at most 2^NN us (bucket NN alone, not
    // cumulative), for bench/run.sh's chart of the wait distribution.
    if constexpr (requires(const Pool& p) { p.stats(); }) {
      const connpool::Histogram h = run.pool->stats().wait_time;
      for (std::size_t i = 0; i < connpool::Histogram::bucket_count; ++i) {
        char name[16];
        std::snprintf(name, sizeof name, "wait_hist_%02zu", i);
        state.counters[name] = static_cast<double>(h.buckets()[i]);
      }
    }
    run.leave(state);
  }
}

// ---------------------------------------------------------------------------------------------
// W4 scale: 1 thread cycling with range(0) idle connections; the figure should not depend on
// the size. W4b: the same pool with all but one connection held by the benchmark, so the one
// free connection has to be found among many busy ones (a linear search shows here).

template <BenchPool Pool>
void BM_W4_Scale(benchmark::State& state) {
  Pool pool(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    auto lease = pool.acquire();
    benchmark::DoNotOptimize(lease.get());
  }
  state.SetItemsProcessed(state.iterations());
}

template <BenchPool Pool>
void BM_W4b_ScaleHeld(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  Pool pool(size);
  std::vector<decltype(pool.acquire())> held;  // destroyed before the pool
  held.reserve(size - 1);
  for (std::size_t i = 0; i + 1 < size; ++i) {
    held.push_back(pool.acquire());
  }
  for (auto _ : state) {
    auto lease = pool.acquire();
    benchmark::DoNotOptimize(lease.get());
  }
  state.SetItemsProcessed(state.iterations());
}

// ---------------------------------------------------------------------------------------------
// Registration: BM_<Workload>_<Scenario>/<pool>.

template <BenchPool Pool>
void register_uncontended(const std::string& pool) {
  benchmark::RegisterBenchmark(("BM_W1_Cycle/" + pool).c_str(), BM_W1_Cycle<Pool>);
  benchmark::RegisterBenchmark(("BM_W2_NoWait/" + pool).c_str(), BM_W2_NoWait<Pool>)
      ->Threads(2)
      ->Threads(4)
      ->Threads(8)
      ->UseRealTime();
  benchmark::RegisterBenchmark(("BM_W4_Scale/" + pool).c_str(), BM_W4_Scale<Pool>)
      ->Arg(1)
      ->Arg(64)
      ->Arg(4096);
  benchmark::RegisterBenchmark(("BM_W4b_ScaleHeld/" + pool).c_str(), BM_W4b_ScaleHeld<Pool>)
      ->Arg(1)
      ->Arg(64)
      ->Arg(4096);
}

/// W3's minimum time per repetition in seconds, from CONNPOOL_BENCH_W3_MIN_TIME (bench/run.sh
/// sets it), else 0: --benchmark_min_time applies.
///
/// Why W3 runs longer than the others: its fairness figure compares per-thread cycle counts,
/// and with 16 threads on 2 cores each thread runs in scheduler time slices of a few ms, so a
/// short window mostly measures which threads the scheduler happened to favour.
double contended_min_time() {
  const char* env = std::getenv("CONNPOOL_BENCH_W3_MIN_TIME");
  if (env == nullptr || *env == '\0') {
    return 0.0;
  }
  char* end = nullptr;
  const double seconds = std::strtod(env, &end);
  if (*end != '\0' || !(seconds > 0.0)) {
    std::fprintf(stderr, "CONNPOOL_BENCH_W3_MIN_TIME=%s is not a positive number of seconds\n",
                 env);
    std::exit(2);
  }
  return seconds;
}

template <BenchPool Pool>
void register_contended(const std::string& pool) {
  // The worst repetition too, beside the mean/median/stddev/cv: wait_max_us is a tail figure.
  auto* b = benchmark::RegisterBenchmark(("BM_W3_Contended/" + pool).c_str(), BM_W3_Contended<Pool>)
                ->Threads(contended_threads)
                ->UseRealTime()
                ->ComputeStatistics("max", [](const std::vector<double>& v) {
                  return *std::max_element(v.begin(), v.end());
                });
  if (const double seconds = contended_min_time(); seconds > 0.0) {
    b->MinTime(seconds);
  }
}

[[maybe_unused]] const bool registered = [] {
  register_uncontended<ConnpoolAdapter<WaitPolicy::fifo>>("connpool");
  register_uncontended<ConnpoolDefaultsAdapter>("connpool_defaults");
  register_uncontended<TextbookAdapter>("textbook");
#ifdef CONNPOOL_BENCH_HAVE_SOCI
  register_uncontended<connpool_bench::SociPool>("soci");
#endif
  register_contended<ConnpoolDefaultsAdapter>("connpool_defaults");
  register_contended<ConnpoolAdapter<WaitPolicy::fifo>>("connpool_fifo");
  register_contended<ConnpoolAdapter<WaitPolicy::bounded_barging>>("connpool_barging");
  // The same with 1, 2 and 10 ms bounds: the trade between throughput and the longest wait.
  register_contended<ConnpoolAdapter<WaitPolicy::bounded_barging, 1'000>>("connpool_barging_1ms");
  register_contended<ConnpoolAdapter<WaitPolicy::bounded_barging, 2'000>>("connpool_barging_2ms");
  register_contended<ConnpoolAdapter<WaitPolicy::bounded_barging, 10'000>>("connpool_barging_10ms");
  register_contended<TextbookAdapter>("textbook");
#ifdef CONNPOOL_BENCH_HAVE_SOCI
  register_contended<connpool_bench::SociPool>("soci");
#endif
  return true;
}();

}  // namespace
