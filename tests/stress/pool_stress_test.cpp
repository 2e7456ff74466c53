// connpool - tests: stress with fault injection, and shutdown races
// SPDX-License-Identifier: MIT

// Many threads (and coroutines) do random operations on one pool whose connections fail at
// random: the factory throws or stalls, pings fail, close() throws. Invariants are checked all
// the time: never more than max_size connections open, no connection with two holders, every
// acquire ends with a connection or a documented exception within its deadline plus a bound,
// and at the end the pool's counts add up with the connections' own. Then close() in the middle
// of a storm, and a pool destroyed with thousands of handles out, released later by other
// threads. Made for ThreadSanitizer and AddressSanitizer.
//
// The run lasts CONNPOOL_STRESS_SECONDS seconds per scenario (default 3; .ci/run uses about a
// minute under TSan); set it higher for a soak. The number of operations is printed.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "coro.hpp"
#include "sync.hpp"

using namespace std::chrono_literals;

namespace {

std::chrono::milliseconds stress_duration() {
  const char* env = std::getenv("CONNPOOL_STRESS_SECONDS");
  const double seconds = env != nullptr ? std::strtod(env, nullptr) : 3.0;
  return std::chrono::milliseconds(static_cast<long>(std::max(seconds, 0.1) * 1000));
}

/// A per-thread random source.
std::mt19937_64& rng() {
  thread_local std::mt19937_64 engine(std::random_device{}());
  return engine;
}

bool chance(double p) {
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng()) < p;
}

int uniform(int lo, int hi) {
  return std::uniform_int_distribution<int>(lo, hi)(rng());
}

struct ChaosError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// What the chaotic connections of one run share.
struct Chaos {
  // Fault rates.
  double factory_fails = 0.05;
  double factory_stalls = 0.05;  // sleeps up to 2 ms
  double ping_fails = 0.05;
  double close_throws = 0.05;
  std::size_t max_size = 0;

  // The connections' own counts.
  std::atomic<long> constructed{0};
  std::atomic<long> closes{0};      // close() calls (throwing ones too)
  std::atomic<long> pool_owned{0};  // open and not detached
  std::atomic<long> max_pool_owned{0};

  // Violations.
  std::atomic<long> over_max{0};
  std::atomic<long> double_holds{0};
  std::atomic<long> double_closes{0};
  std::atomic<long> used_after_close{0};

  void note_open() {
    constructed.fetch_add(1);
    const long now = pool_owned.fetch_add(1) + 1;
    long seen = max_pool_owned.load();
    while (seen < now && !max_pool_owned.compare_exchange_weak(seen, now)) {
    }
    if (static_cast<std::size_t>(now) > max_size) {
      over_max.fetch_add(1);
    }
  }
};

/// A connection that fails at random. Movable; the state that must survive moves is shared.
class ChaosConn {
 public:
  explicit ChaosConn(Chaos& chaos) : chaos_(&chaos), inner_(std::make_unique<Inner>()) {
    chaos.note_open();
  }
  ChaosConn(ChaosConn&&) noexcept = default;
  ChaosConn& operator=(ChaosConn&&) noexcept = default;
  ChaosConn(const ChaosConn&) = delete;
  ChaosConn& operator=(const ChaosConn&) = delete;
  ~ChaosConn() {
    if (inner_ && !inner_->closed && !inner_->left) {
      chaos_->pool_owned.fetch_sub(1);  // destroyed without close(): counted as closed
    }
  }

  bool ping() {
    check();
    return !chance(chaos_->ping_fails);
  }

  void close() {
    if (inner_->closed) {
      chaos_->double_closes.fetch_add(1);
      return;
    }
    inner_->closed = true;
    chaos_->closes.fetch_add(1);
    if (!inner_->left) {
      chaos_->pool_owned.fetch_sub(1);
    }
    if (chance(chaos_->close_throws)) {
      throw ChaosError("close failed");
    }
  }

  /// Marks the connection as held for the guard's life; a second holder is a violation.
  class Hold {
   public:
    explicit Hold(ChaosConn& c) : c_(&c) {
      c.check();
      if (c.inner_->holders.fetch_add(1) != 0) {
        c.chaos_->double_holds.fetch_add(1);
      }
    }
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;
    ~Hold() { c_->inner_->holders.fetch_sub(1); }

   private:
    ChaosConn* c_;
  };

  /// The pool is about to forget this connection (detach()).
  void leave() {
    inner_->left = true;
    chaos_->pool_owned.fetch_sub(1);
  }

 private:
  struct Inner {
    std::atomic<int> holders{0};
    bool closed = false;
    bool left = false;
  };

  void check() const {
    if (inner_->closed) {
      chaos_->used_after_close.fetch_add(1);
    }
  }

  Chaos* chaos_;
  std::unique_ptr<Inner> inner_;
};

struct ChaosFactory {
  Chaos* chaos;
  ChaosConn operator()() const {
    if (chance(chaos->factory_stalls)) {
      std::this_thread::sleep_for(std::chrono::microseconds(uniform(0, 2000)));
    }
    if (chance(chaos->factory_fails)) {
      throw ChaosError("connect failed");
    }
    return ChaosConn(*chaos);
  }
};

/// Outcomes of the acquires of a run.
struct Tally {
  std::atomic<long> operations{0};
  std::atomic<long> acquired{0};
  std::atomic<long> timeouts{0};
  std::atomic<long> cancelled{0};
  std::atomic<long> closed{0};
  std::atomic<long> factory_errors{0};
  std::atomic<long> unexpected{0};
  std::atomic<long> late{0};  // ended later than deadline + bound
  std::atomic<long> max_overrun_us{0};

  void note_overrun(std::chrono::steady_clock::duration overrun) {
    const long us =
        static_cast<long>(std::chrono::duration_cast<std::chrono::microseconds>(overrun).count());
    long seen = max_overrun_us.load();
    while (seen < us && !max_overrun_us.compare_exchange_weak(seen, us)) {
    }
  }
};

/// How much later than its deadline an acquire may end: a factory stall (2 ms), a validation
/// ping, scheduling of a loaded machine under a sanitizer.
constexpr auto late_bound = 2s;

template <class Handle>
void use(Handle& h, Chaos& /*chaos*/, Tally& tally) {
  tally.acquired.fetch_add(1);
  {
    ChaosConn::Hold hold(*h);
    if (chance(0.3)) {
      std::this_thread::sleep_for(std::chrono::microseconds(uniform(0, 200)));
    }
  }
  const int what = uniform(0, 99);
  if (what < 5) {
    h.invalidate();
  } else if (what < 8) {
    h->leave();
    ChaosConn taken = h.detach();  // destroyed at once
  } else if (what < 60) {
    h.release();
  }  // else: the destructor gives it back
}

/// Counts how an acquire failed: one of the documented exceptions, or an unexpected one.
void note_failure(const std::exception_ptr& e, Tally& tally) {
  try {
    std::rethrow_exception(e);
  } catch (const connpool::AcquireTimeout&) {
    tally.timeouts.fetch_add(1);
  } catch (const connpool::AcquireCancelled&) {
    tally.cancelled.fetch_add(1);
  } catch (const connpool::PoolClosed&) {
    tally.closed.fetch_add(1);
  } catch (const ChaosError&) {
    tally.factory_errors.fetch_add(1);
  } catch (...) {
    tally.unexpected.fetch_add(1);
  }
}

/// Checks that an acquire started at `start` with `timeout` ended within the bound.
void note_end(std::chrono::steady_clock::time_point start,
              std::chrono::milliseconds timeout,
              Tally& tally) {
  const auto overrun = std::chrono::steady_clock::now() - start - timeout;
  tally.note_overrun(overrun);
  if (overrun > late_bound) {
    tally.late.fetch_add(1);
  }
}

template <class Acquire>
void timed_acquire(Acquire&& acquire,
                   std::chrono::milliseconds timeout,
                   Chaos& chaos,
                   Tally& tally) {
  const auto start = std::chrono::steady_clock::now();
  try {
    auto h = acquire();
    use(h, chaos, tally);
  } catch (...) {
    note_failure(std::current_exception(), tally);
  }
  note_end(start, timeout, tally);
}

/// After a storm, with the faults off: the pool still reaches its full size, so no connect
/// permit or unit of capacity leaked. `acquire` takes a connection with a generous timeout.
template <class Pool, class Acquire>
void check_full_size(Pool& pool, Chaos& chaos, Tally& tally, Acquire acquire) {
  chaos.factory_fails = 0;
  chaos.ping_fails = 0;
  pool.set_max_size(chaos.max_size);
  std::vector<connpool::PooledHandle<ChaosConn>> all;
  for (std::size_t i = 0; i < chaos.max_size; ++i) {
    all.push_back(acquire());
  }
  CHECK(pool.stats().in_use == chaos.max_size);
  for (auto& h : all) {
    tally.acquired.fetch_add(1);
    h.release();
  }
}

using Pool = connpool::ConnectionPool<ChaosConn, ChaosFactory>;

connpool::PoolOptions chaos_options(std::size_t max_size, connpool::WaitPolicy policy) {
  connpool::PoolOptions o;
  o.min_size = 1;
  o.max_size = max_size;
  o.acquire_timeout = 50ms;
  o.max_idle = 20ms;
  o.max_lifetime = 200ms;
  o.health_check_interval = 5ms;
  o.validation_bypass = 1ms;
  o.keepalive_interval = 10ms;
  o.lifetime_jitter = 0.025;
  o.fail_fast = false;
  o.wait_policy = policy;
  return o;
}

/// One thread's random operations on `pool` until `until`.
void storm(Pool& pool, Chaos& chaos, Tally& tally, std::chrono::steady_clock::time_point until) {
  while (std::chrono::steady_clock::now() < until) {
    tally.operations.fetch_add(1);
    const int op = uniform(0, 99);
    if (op < 50) {
      const auto timeout = std::chrono::milliseconds(uniform(0, 20));
      timed_acquire([&] { return pool.acquire(timeout); }, timeout, chaos, tally);
    } else if (op < 60) {
      timed_acquire([&] { return pool.acquire(); }, pool.options().acquire_timeout, chaos, tally);
    } else if (op < 75) {
      try {
        if (auto h = pool.try_acquire()) {
          use(*h, chaos, tally);
        }
      } catch (const ChaosError&) {
        tally.factory_errors.fetch_add(1);
      } catch (const connpool::PoolClosed&) {
        tally.closed.fetch_add(1);
      } catch (...) {
        tally.unexpected.fetch_add(1);
      }
    } else if (op < 85) {
      // A stop request from another thread at a random moment.
      std::stop_source stop;
      std::jthread canceller([&stop] {
        std::this_thread::sleep_for(std::chrono::microseconds(uniform(0, 3000)));
        stop.request_stop();
      });
      timed_acquire([&] { return pool.acquire(20ms, stop.get_token()); }, 20ms, chaos, tally);
    } else if (op < 90) {
      try {
        pool.prune();
      } catch (...) {
        tally.unexpected.fetch_add(1);
      }
    } else if (op < 91) {
      pool.evict_all();
    } else if (op < 92) {
      // Resized at run time, never above the bound the connections check.
      pool.set_max_size(static_cast<std::size_t>(uniform(1, static_cast<int>(chaos.max_size))));
    } else {
      const auto s = pool.stats();
      if (s.total_connections() > chaos.max_size || s.in_use > chaos.max_size) {
        chaos.over_max.fetch_add(1);
      }
    }
  }
}

void check_end(const Chaos& chaos, const Tally& tally, const connpool::PoolStats& s) {
  INFO("operations " << tally.operations << ", acquired " << tally.acquired << ", timeouts "
                     << tally.timeouts << ", cancelled " << tally.cancelled << ", closed "
                     << tally.closed << ", factory errors " << tally.factory_errors
                     << ", max overrun " << tally.max_overrun_us << " us");
  INFO("stats " << s.to_json());
  CHECK(tally.unexpected == 0);
  CHECK(tally.late == 0);
  CHECK(chaos.over_max == 0);
  CHECK(chaos.double_holds == 0);
  CHECK(chaos.double_closes == 0);
  CHECK(chaos.used_after_close == 0);
  CHECK(chaos.max_pool_owned <= static_cast<long>(chaos.max_size));
  // At the end, after close(): every connection the factory made was closed or detached, and
  // the pool's counts agree with the connections' own.
  CHECK(chaos.pool_owned == 0);
  CHECK(static_cast<long>(s.created) == chaos.constructed);
  CHECK(static_cast<long>(s.closed) == chaos.closes);
  CHECK(s.created == s.closed + s.detached);
  CHECK(s.total_connections() == 0);
  CHECK(s.pending == 0);
  CHECK(s.acquired == s.released + s.detached);
  CHECK(static_cast<long>(s.acquired) == tally.acquired);
  CHECK(static_cast<long>(s.create_failures) >= tally.factory_errors);
  CHECK(tally.acquired > 0);
}

}  // namespace

TEST_CASE("Stress: threads do random operations on a pool with random faults", "[stress]") {
  const auto policy = GENERATE(connpool::WaitPolicy::fifo, connpool::WaitPolicy::bounded_barging);
  Chaos chaos;
  chaos.max_size = 4;
  Tally tally;
  connpool::PoolStats end;
  {
    Pool pool{ChaosFactory{&chaos}, chaos_options(chaos.max_size, policy)};
    const auto until = std::chrono::steady_clock::now() + stress_duration();
    std::vector<std::jthread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] { storm(pool, chaos, tally, until); });
    }
    threads.clear();
    check_full_size(pool, chaos, tally,
                    [&] { return pool.acquire(connpool_test::generous_deadline); });
    pool.close();
    end = pool.stats();
  }
  std::printf(
      "stress (%s): %ld operations, %ld acquired, %ld timeouts, %ld cancelled, %ld "
      "factory errors, max overrun %ld us\n",
      policy == connpool::WaitPolicy::fifo ? "fifo" : "bounded_barging", tally.operations.load(),
      tally.acquired.load(), tally.timeouts.load(), tally.cancelled.load(),
      tally.factory_errors.load(), tally.max_overrun_us.load());
  check_end(chaos, tally, end);
}

/// A Scheduler that resumes coroutines on its own worker threads, FIFO.
class Workers {
 public:
  struct Ref {
    Workers* w;
    void schedule(std::coroutine_handle<> h) const { w->schedule(h); }
  };

  explicit Workers(int n) {
    for (int i = 0; i < n; ++i) {
      threads_.emplace_back([this](std::stop_token stop) { run(stop); });
    }
  }
  Workers(const Workers&) = delete;
  Workers& operator=(const Workers&) = delete;
  ~Workers() {
    for (auto& t : threads_) {
      t.request_stop();
    }
    cv_.notify_all();
    threads_.clear();
  }

  void schedule(std::coroutine_handle<> h) {
    {
      std::lock_guard lock(mutex_);  // guards queue_
      queue_.push_back(h);
    }
    cv_.notify_one();
  }

  /// Moves the awaiting coroutine to the back of the queue.
  auto yield() {
    struct Awaiter {
      Workers* w;
      bool await_ready() noexcept { return false; }
      void await_suspend(std::coroutine_handle<> h) { w->schedule(h); }
      void await_resume() noexcept {}
    };
    return Awaiter{this};
  }

 private:
  void run(const std::stop_token& stop) {
    for (;;) {
      std::coroutine_handle<> h;
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return !queue_.empty() || stop.stop_requested(); });
        if (queue_.empty()) {
          return;
        }
        h = queue_.front();
        queue_.pop_front();
      }
      h.resume();
    }
  }

  std::mutex mutex_;  // guards queue_
  std::condition_variable cv_;
  std::deque<std::coroutine_handle<>> queue_;
  std::vector<std::jthread> threads_;
};

TEST_CASE("Stress: coroutines and threads share a faulty pool", "[stress][async]") {
  Chaos chaos;
  chaos.max_size = 3;
  Tally tally;
  connpool::PoolStats end;
  Workers workers(2);
  {
    connpool::AsyncConnectionPool<ChaosConn, ChaosFactory> pool{
        ChaosFactory{&chaos}, chaos_options(chaos.max_size, connpool::WaitPolicy::fifo),
        Workers::Ref{&workers}};
    const auto until = std::chrono::steady_clock::now() + stress_duration();
    connpool_test::Spawned spawned;
    // 100 coroutines on the two workers, each yielding after every operation so that they
    // share the workers; three blocking threads in the same queue.
    for (int c = 0; c < 100; ++c) {
      spawned.spawn([&]() -> connpool::Task<void> {
        co_await workers.yield();  // onto a worker
        while (std::chrono::steady_clock::now() < until) {
          tally.operations.fetch_add(1);
          const auto timeout = std::chrono::milliseconds(uniform(0, 20));
          const auto start = std::chrono::steady_clock::now();
          try {
            auto h = co_await pool.acquire(timeout);
            use(h, chaos, tally);
          } catch (...) {
            note_failure(std::current_exception(), tally);
          }
          note_end(start, timeout, tally);
          co_await workers.yield();
        }
      });
    }
    std::vector<std::jthread> threads;
    for (int t = 0; t < 3; ++t) {
      threads.emplace_back([&] {
        while (std::chrono::steady_clock::now() < until) {
          tally.operations.fetch_add(1);
          const auto timeout = std::chrono::milliseconds(uniform(0, 20));
          timed_acquire([&] { return pool.acquire_blocking(timeout); }, timeout, chaos, tally);
        }
      });
    }
    threads.clear();
    REQUIRE(connpool_test::eventually([&] { return spawned.done() == spawned.started(); }));
    CHECK(spawned.errors().empty());
    check_full_size(pool, chaos, tally,
                    [&] { return pool.acquire_blocking(connpool_test::generous_deadline); });
    pool.close();
    end = pool.stats();
  }
  std::printf("stress (async): %ld operations, %ld acquired, %ld timeouts, max overrun %ld us\n",
              tally.operations.load(), tally.acquired.load(), tally.timeouts.load(),
              tally.max_overrun_us.load());
  check_end(chaos, tally, end);
}

TEST_CASE("Stress: close() in the middle of an acquire/release storm", "[stress][close]") {
  for (int round = 0; round < 20; ++round) {
    Chaos chaos;
    chaos.max_size = 3;
    Tally tally;
    connpool::PoolStats end;
    {
      Pool pool{ChaosFactory{&chaos}, chaos_options(chaos.max_size, connpool::WaitPolicy::fifo)};
      const auto until = std::chrono::steady_clock::now() + 200ms;
      std::vector<std::jthread> threads;
      for (int t = 0; t < 6; ++t) {
        threads.emplace_back([&] { storm(pool, chaos, tally, until); });
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(uniform(1, 50)));
      pool.close();  // while the storm goes on: later acquires throw PoolClosed
      threads.clear();
      end = pool.stats();
    }
    check_end(chaos, tally, end);
  }
}

TEST_CASE("Stress: a pool destroyed with thousands of handles out", "[stress][close]") {
  Chaos chaos;
  chaos.max_size = 4000;
  chaos.factory_fails = 0;
  chaos.factory_stalls = 0;
  std::vector<connpool::PooledHandle<ChaosConn>> handles;
  connpool::PoolStats before;
  {
    connpool::PoolOptions o;
    o.max_size = chaos.max_size;
    o.health_check_interval = 0ms;
    Pool pool{ChaosFactory{&chaos}, o};
    handles.reserve(chaos.max_size);
    for (std::size_t i = 0; i < chaos.max_size; ++i) {
      handles.push_back(pool.acquire());
    }
    before = pool.stats();
  }  // the pool is gone; its shared state lives on with the handles
  CHECK(before.in_use == chaos.max_size);
  CHECK(chaos.pool_owned == static_cast<long>(chaos.max_size));
  // Released from 8 threads at once, in random order.
  std::shuffle(handles.begin(), handles.end(), rng());
  std::vector<std::jthread> threads;
  const std::size_t per = handles.size() / 8;
  for (std::size_t t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (std::size_t i = t * per; i < (t + 1) * per; ++i) {
        if (i % 3 == 0) {
          handles[i].invalidate();
        } else {
          handles[i].release();
        }
      }
    });
  }
  threads.clear();
  CHECK(chaos.pool_owned == 0);  // every connection was closed on its way back
  CHECK(chaos.closes == static_cast<long>(chaos.max_size));
  CHECK(chaos.double_closes == 0);
}
