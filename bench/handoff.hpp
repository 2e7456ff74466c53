// connpool - benchmarks: two coroutines taking turns on one connection, for the async pools
// SPDX-License-Identifier: MIT
#pragma once

// The hand-off benchmark of the asynchronous pools (async_bench's BM_Async_Handoff,
// multi_host_bench's BM_AsyncMultiHost_Handoff): a scheduler whose queue the benchmark's own
// loop runs, on its thread, and two coroutines that take turns on the pool's one connection, so
// that every acquire suspends and every release hands the connection over.

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <utility>

#include <benchmark/benchmark.h>

#include <connpool/task.hpp>

namespace connpool_bench {

/// A scheduler that queues resumptions for the benchmark's own loop, on this thread.
struct ReadyQueue {
  std::deque<std::coroutine_handle<>> ready;

  struct Ref {
    ReadyQueue* q;
    void schedule(std::coroutine_handle<> h) const { q->ready.push_back(h); }
  };
  [[nodiscard]] Ref scheduler() noexcept { return Ref{this}; }

  /// Resumes queued coroutines until none is left.
  void run() {
    while (!ready.empty()) {
      const std::coroutine_handle<> h = ready.front();
      ready.pop_front();
      h.resume();
    }
  }
};

/// `rounds` times: co_await the operation `acquire()` returns, let the other coroutine queue
/// behind this one, then release (on scope exit).
template <class Acquire>
connpool::Task<void> take_turns(Acquire acquire, ReadyQueue& queue, std::size_t rounds) {
  for (std::size_t i = 0; i < rounds; ++i) {
    auto handle = co_await acquire();
    benchmark::DoNotOptimize(handle.get());
    struct Yield {
      ReadyQueue* q;
      bool await_ready() noexcept { return false; }
      void await_suspend(std::coroutine_handle<> h) { q->ready.push_back(h); }
      void await_resume() noexcept {}
    };
    co_await Yield{&queue};
  }
}

/// A coroutine started at once and destroyed when it ends, to run a Task from plain code.
struct Detached {
  struct promise_type {
    Detached get_return_object() noexcept { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }
  };
};

inline Detached run_detached(connpool::Task<void> task) {
  co_await std::move(task);
}

/// The benchmark loop: two coroutines take turns, 1000 rounds each per iteration, on a pool
/// whose scheduler is `queue`; items are hand-offs.
template <class Acquire>
void handoffs(benchmark::State& state, ReadyQueue& queue, Acquire acquire) {
  constexpr std::size_t rounds = 1000;
  for (auto _ : state) {
    run_detached(take_turns(acquire, queue, rounds));  // runs until it first suspends
    run_detached(take_turns(acquire, queue, rounds));
    queue.run();
  }
  state.SetItemsProcessed(state.iterations() * 2 * static_cast<std::int64_t>(rounds));
}

}  // namespace connpool_bench
