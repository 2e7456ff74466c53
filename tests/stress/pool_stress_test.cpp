// connpool - tests: stress with fault injection, and shutdown races
// SPDX-License-Identifier: MIT

// Many threads (and coroutines) do random operations on one pool whose connections fail at
// random: the factory throws or stalls, pings fail, close() throws. Invariants are checked all
// the time: never more than max_size connections open, no connection with two holders, every
// acquire ends with a connection or a documented exception within its deadline plus a bound,
// and at the end the pool's counts add up with the connections' own. Then close() in the middle
// of a storm; a pool destroyed with thousands of handles out, released later by other threads;
// callbacks (hooks, the factory, ping, reset, close) that re-enter the pool, one of which
// finally destroys it while threads still hold handles; and cheap try_acquire/release cycles
// beside a storm, for the number of operations. Made for ThreadSanitizer and AddressSanitizer.
//
// The timed scenarios last CONNPOOL_STRESS_SECONDS seconds each (default 3; scripts/test-all.sh
// uses 20 under TSan); set it higher for a soak. Each scenario prints its number of operations,
// and the last test case the run's total. CONNPOOL_STRESS_MIN_OPS (default 0: none) is the
// least that total may be: the cycles scenario goes on past its time until the run reaches it
// (for at most twice its time more), and the last test case fails below it. That total is
// counted in one process, so run the test cases in one process, in declaration order, as CTest
// does (--order decl).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
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

/// The least number of operations the whole run must perform (CONNPOOL_STRESS_MIN_OPS); 0, the
/// default, sets no minimum.
long stress_min_operations() {
  const char* env = std::getenv("CONNPOOL_STRESS_MIN_OPS");
  return env != nullptr ? std::max(0L, std::strtol(env, nullptr, 10)) : 0L;
}

/// The operations of the scenarios run so far in this process (count_run()).
std::atomic<long> run_operations{0};

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

/// Where a connection, its factory or the pool's hooks call back into the test
/// (Chaos::callback).
enum class Site { factory, ping, reset, close, on_create, on_acquire, on_release, on_close };
constexpr int site_count = 8;

const char* site_name(Site s) {
  static const char* const names[site_count] = {
      "factory", "ping", "reset", "close", "on_create", "on_acquire", "on_release", "on_close"};
  return names[static_cast<int>(s)];
}

/// What the chaotic connections of one run share.
struct Chaos {
  // Fault rates.
  double factory_fails = 0.05;
  double factory_stalls = 0.05;  // sleeps up to 2 ms
  double ping_fails = 0.05;
  double close_throws = 0.05;
  double reset_throws = 0;
  std::size_t max_size = 0;
  std::size_t min_resize = 1;  // storm() resizes the pool within [min_resize, max_size]

  /// Called at the start of every factory call, ping, reset and close when set; set before the
  /// pool is made, never changed while it runs.
  std::function<void(Site)> callback;

  // The connections' own counts.
  std::atomic<long> constructed{0};
  std::atomic<long> closes{0};      // close() calls (throwing ones too)
  std::atomic<long> pool_owned{0};  // open and not detached
  std::atomic<long> max_pool_owned{0};
  std::atomic<long> left{0};  // detached (ChaosConn::leave())

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

  void call_back(Site site) const {
    if (callback) {
      callback(site);
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
    chaos_->call_back(Site::ping);
    check();
    return !chance(chaos_->ping_fails);
  }

  void reset() {
    chaos_->call_back(Site::reset);
    check();
    if (chaos_->reset_throws > 0 && chance(chaos_->reset_throws)) {
      throw ChaosError("reset failed");
    }
  }

  void close() {
    chaos_->call_back(Site::close);
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
    chaos_->left.fetch_add(1);
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
  explicit ChaosFactory(Chaos* c, std::shared_ptr<void> token = {})
      : chaos(c), alive(std::move(token)) {}

  Chaos* chaos;
  // Shared by the factory's copies; the one in the pool's shared state goes last when that
  // state is freed, so a test can watch for that moment.
  std::shared_ptr<void> alive;

  ChaosConn operator()() const {
    chaos->call_back(Site::factory);
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

  /// Counts an unexpected outcome; the first one's description is kept for the report.
  void note_unexpected(const std::string& what) {
    unexpected.fetch_add(1);
    const std::lock_guard lock(mutex);
    if (first_unexpected.empty()) {
      first_unexpected = what;
    }
  }

  std::string first() const {
    const std::lock_guard lock(mutex);
    return first_unexpected;
  }

  mutable std::mutex mutex;      // guards first_unexpected
  std::string first_unexpected;  // empty: none yet

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
  } catch (const std::exception& x) {
    tally.note_unexpected(std::string("exception: ") + x.what());
  } catch (...) {
    tally.note_unexpected("an exception of an unknown type");
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

/// One thread's random operations on `pool` while `go()` says so.
template <class Go>
void storm(Pool& pool, Chaos& chaos, Tally& tally, Go go) {
  while (go()) {
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
      pool.set_max_size(static_cast<std::size_t>(
          uniform(static_cast<int>(chaos.min_resize), static_cast<int>(chaos.max_size))));
    } else {
      const auto s = pool.stats();
      if (s.total_connections() > chaos.max_size || s.in_use > chaos.max_size) {
        chaos.over_max.fetch_add(1);
      }
    }
  }
}

/// A storm()'s go(): until the time point `until`.
auto before(std::chrono::steady_clock::time_point until) {
  return [until] { return std::chrono::steady_clock::now() < until; };
}

/// Adds a scenario's operations to the run's total.
void count_run(const Tally& tally) {
  run_operations.fetch_add(tally.operations.load());
}

void check_end(const Chaos& chaos, const Tally& tally, const connpool::PoolStats& s) {
  INFO("operations " << tally.operations << ", acquired " << tally.acquired << ", timeouts "
                     << tally.timeouts << ", cancelled " << tally.cancelled << ", closed "
                     << tally.closed << ", factory errors " << tally.factory_errors
                     << ", max overrun " << tally.max_overrun_us << " us");
  INFO("stats " << s.to_json());
  INFO("first unexpected outcome: " << tally.first());
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
      threads.emplace_back([&] { storm(pool, chaos, tally, before(until)); });
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
  count_run(tally);
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
  count_run(tally);
  check_end(chaos, tally, end);
}

TEST_CASE("Stress: close() in the middle of an acquire/release storm", "[stress][close]") {
  long operations = 0;
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
        threads.emplace_back([&] { storm(pool, chaos, tally, before(until)); });
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(uniform(1, 50)));
      pool.close();  // while the storm goes on: later acquires throw PoolClosed
      threads.clear();
      end = pool.stats();
    }
    operations += tally.operations.load();
    count_run(tally);
    check_end(chaos, tally, end);
  }
  std::printf("stress (close in a storm): %ld operations in 20 rounds\n", operations);
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
  run_operations.fetch_add(static_cast<long>(2 * chaos.max_size));  // acquires, give-backs
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

// --- Callbacks that re-enter the pool, and a pool destroyed by one of them -------------------

namespace {

thread_local int callback_depth = 0;           // re-entrancy callbacks running on this thread
thread_local Site outer_site = Site::factory;  // the outermost of them
thread_local bool test_thread = false;         // a thread of the test's own, not of the pool's

/// Marks a callback as running on this thread for its scope.
class InCallback {
 public:
  explicit InCallback(Site site) {
    if (callback_depth++ == 0) {
      outer_site = site;
    }
  }
  InCallback(const InCallback&) = delete;
  InCallback& operator=(const InCallback&) = delete;
  ~InCallback() { --callback_depth; }
};

/// What the rounds of the re-entrancy scenario add up to.
struct ReentryTotals {
  std::atomic<long> reentries[site_count]{};     // calls into the pool, by callback site
  std::atomic<long> destroyed_in[site_count]{};  // pools destroyed, by outermost callback site
  std::atomic<long> destroyed_outside{0};        // pools destroyed outside any callback
  std::atomic<long> destroyed_internal{0};       // pools destroyed on a thread of the pool's
  std::atomic<long> closes{0};                   // close() from a callback
};

/// Sets a flag when destroyed: held (through ChaosFactory::alive) by the pool's shared state.
struct SetOnDestruction {
  explicit SetOnDestruction(std::atomic<bool>& f) : flag(&f) {}
  SetOnDestruction(const SetOnDestruction&) = delete;
  SetOnDestruction& operator=(const SetOnDestruction&) = delete;
  ~SetOnDestruction() { flag->store(true, std::memory_order_release); }
  std::atomic<bool>* flag;
};

using Handle = connpool::PooledHandle<ChaosConn>;

/// The pool of one round of the re-entrancy scenario, and the callbacks that re-enter it.
///
/// The pool lives in a shared_ptr, and every call on it goes through a reference of the
/// caller's own, taken under mutex_: so its destructor never runs beside another of its members
/// (ConnectionPool's thread-safety rule), and the last reference to go destroys it. The workers
/// stop calling the pool before a callback drops the round's reference (arm_destroy()), so the
/// destructor then runs inside a callback: the one that dropped that reference, or another that
/// held a reference of its own meanwhile.
class Reentry {
 public:
  Reentry(Tally& tally, ReentryTotals& totals, std::size_t max_size)
      : tally_(tally), totals_(totals), max_size_(max_size) {}
  Reentry(const Reentry&) = delete;
  Reentry& operator=(const Reentry&) = delete;
  ~Reentry() { drop(); }  // only when a REQUIRE ended the round early

  void install(std::shared_ptr<Pool> pool) {
    const std::lock_guard lock(mutex_);
    pool_ = std::move(pool);
  }

  std::shared_ptr<Pool> get() {
    const std::lock_guard lock(mutex_);
    return pool_;
  }

  /// A worker's reference for one call; empty once the workers are stopped.
  class WorkerRef {
   public:
    explicit WorkerRef(Reentry& r) : r_(&r) {
      const std::lock_guard lock(r.mutex_);
      if (!r.stopped_) {
        pool_ = r.pool_;
        r.workers_in_.fetch_add(1);
      }
    }
    WorkerRef(const WorkerRef&) = delete;
    WorkerRef& operator=(const WorkerRef&) = delete;
    ~WorkerRef() {
      if (pool_) {
        pool_.reset();
        r_->workers_in_.fetch_sub(1);
      }
    }
    [[nodiscard]] Pool* get() const { return pool_.get(); }

   private:
    Reentry* r_;
    std::shared_ptr<Pool> pool_;
  };

  /// Workers make no more calls on the pool (they keep their handles); true once none holds a
  /// reference any more.
  bool stop_workers() {
    {
      const std::lock_guard lock(mutex_);
      stopped_ = true;
    }
    return connpool_test::eventually([&] { return workers_in_.load() == 0; });
  }

  /// The next callback that calls into the pool calls close() instead.
  void arm_close() { close_armed_.store(true); }

  /// The next callback drops the round's reference to the pool: only a callback on one of the
  /// pool's own threads if `internal_only`, only one at `site` if set. Then the workers give
  /// back the handles they still hold.
  void arm_destroy(bool internal_only, std::optional<Site> site) {
    internal_only_.store(internal_only);
    destroy_site_.store(site ? static_cast<int>(*site) : -1);
    destroy_armed_.store(true);
    handles_gate_.open();
  }

  /// Any callback may destroy the pool now.
  void allow_any_destroyer() {
    internal_only_.store(false);
    destroy_site_.store(-1);
  }

  /// For a stopped worker: waits until the pool may be destroyed by a callback.
  void wait_until_armed() { handles_gate_.wait(); }

  /// A worker has given back all its handles and ends.
  void worker_finished() { workers_finished_.fetch_add(1); }
  [[nodiscard]] int workers_finished() const { return workers_finished_.load(); }

  [[nodiscard]] bool gone() const { return gone_.load(std::memory_order_acquire); }

  /// The pool's deleter: records where it runs, then destroys the pool.
  void destroy(Pool* pool) {
    if (callback_depth > 0) {
      totals_.destroyed_in[static_cast<int>(outer_site)].fetch_add(1);
    } else {
      totals_.destroyed_outside.fetch_add(1);
    }
    if (!test_thread) {
      totals_.destroyed_internal.fetch_add(1);
    }
    delete pool;
    gone_.store(true, std::memory_order_release);
  }

  /// Every callback of the round: the factory, ping, reset, close and the four hooks.
  void callback(Site site) {
    if (callback_depth >= 2) {
      return;  // the calls of a callback call back once more, no deeper
    }
    const InCallback in(site);
    const int destroy_site = destroy_site_.load();
    if (destroy_armed_.load() && (!test_thread || !internal_only_.load()) &&
        (destroy_site < 0 || destroy_site == static_cast<int>(site)) &&
        destroy_armed_.exchange(false)) {
      drop();  // the pool's destructor runs here, unless another callback holds it a moment more
      return;
    }
    if (!chance(0.25)) {
      return;
    }
    const std::shared_ptr<Pool> pool = get();  // the last reference, if destroy() was armed since
    if (!pool) {
      return;
    }
    tally_.operations.fetch_add(1);
    totals_.reentries[static_cast<int>(site)].fetch_add(1);
    try {
      if (close_armed_.load() && close_armed_.exchange(false)) {
        totals_.closes.fetch_add(1);
        pool->close();
        return;
      }
      const int op = uniform(0, 99);
      if (op < 40) {
        if (auto h = pool->try_acquire()) {
          tally_.acquired.fetch_add(1);
          { const ChaosConn::Hold hold(**h); }
          if (op < 5) {
            h->invalidate();
          } else {
            h->release();
          }
        }
      } else if (op < 65) {
        pool->prune();
      } else if (op < 80) {
        pool->set_max_size(static_cast<std::size_t>(uniform(1, static_cast<int>(max_size_))));
      } else if (op < 85) {
        pool->evict_all();
      } else {
        const auto s = pool->stats();
        if (s.total_connections() > max_size_ || s.in_use > max_size_) {
          tally_.note_unexpected("stats above max_size: " + s.to_json());
        }
      }
    } catch (...) {
      note_failure(std::current_exception(), tally_);
    }
  }

 private:
  void drop() {
    std::shared_ptr<Pool> owner;
    {
      const std::lock_guard lock(mutex_);
      owner = std::move(pool_);
    }
    owner.reset();  // outside the lock: the destructor runs callbacks, which take it
  }

  Tally& tally_;
  ReentryTotals& totals_;
  const std::size_t max_size_;
  std::mutex mutex_;                // guards pool_ and stopped_
  std::shared_ptr<Pool> pool_;      // the round's reference; empty once a callback dropped it
  bool stopped_ = false;            // workers make no more calls
  std::atomic<int> workers_in_{0};  // workers holding a reference now
  std::atomic<bool> close_armed_{false};
  std::atomic<bool> destroy_armed_{false};
  std::atomic<bool> internal_only_{false};
  std::atomic<int> destroy_site_{-1};  // the Site that may destroy the pool; -1: any
  connpool_test::Gate handles_gate_;   // opened by arm_destroy()
  std::atomic<int> workers_finished_{0};
  std::atomic<bool> gone_{false};  // the pool's destructor has returned
};

/// Uses a handle, then gives it back: mostly release(), now and then invalidate() or detach().
void use_and_give_back(Handle h) {
  {
    const ChaosConn::Hold hold(*h);
    if (chance(0.2)) {
      std::this_thread::sleep_for(std::chrono::microseconds(uniform(0, 100)));
    }
  }
  const int what = uniform(0, 99);
  if (what < 10) {
    h.invalidate();
  } else if (what < 15) {
    h->leave();
    const ChaosConn taken = h.detach();
  } else if (what < 60) {
    h.release();
  }  // else: the destructor gives it back
}

/// A worker of the re-entrancy scenario: random calls on the pool, with up to three handles
/// out between them. Once the workers are stopped it gives back, one at a time, the handles it
/// still holds, while the pool is being destroyed or after.
void reentry_worker(Reentry& r, Tally& tally, std::size_t max_size) {
  test_thread = true;
  std::vector<Handle> held;
  auto give_back_one = [&] {
    const auto k = static_cast<std::ptrdiff_t>(uniform(0, static_cast<int>(held.size()) - 1));
    Handle h = std::move(held[static_cast<std::size_t>(k)]);
    held.erase(held.begin() + k);
    use_and_give_back(std::move(h));
  };
  auto keep = [&](Handle h) {
    tally.acquired.fetch_add(1);
    held.push_back(std::move(h));
  };
  for (;;) {
    {
      const Reentry::WorkerRef ref(r);
      Pool* pool = ref.get();
      if (pool == nullptr) {
        break;
      }
      tally.operations.fetch_add(1);
      const int op = uniform(0, 99);
      if (op < 45) {
        const auto timeout = std::chrono::milliseconds(uniform(0, 10));
        const auto start = std::chrono::steady_clock::now();
        try {
          keep(pool->acquire(timeout));
        } catch (...) {
          note_failure(std::current_exception(), tally);
        }
        note_end(start, timeout, tally);
      } else {
        try {
          if (op < 75) {
            if (auto h = pool->try_acquire()) {
              keep(std::move(*h));
            }
          } else if (op < 85) {
            pool->prune();
          } else if (op < 90) {
            pool->set_max_size(static_cast<std::size_t>(uniform(1, static_cast<int>(max_size))));
          } else {
            const auto s = pool->stats();
            if (s.total_connections() > max_size || s.in_use > max_size) {
              tally.note_unexpected("stats above max_size: " + s.to_json());
            }
          }
        } catch (...) {
          note_failure(std::current_exception(), tally);
        }
      }
    }
    while (held.size() > 3 || (!held.empty() && chance(0.3))) {
      give_back_one();
    }
  }
  r.wait_until_armed();
  while (!held.empty()) {
    give_back_one();
  }
  r.worker_finished();
}

/// One round of the re-entrancy scenario: a pool whose every callback may call into it, four
/// workers, and now and then a close() from a callback. Then the workers stop calling the pool,
/// and a callback destroys it while they give back the handles they still hold: one on the
/// maintenance thread if `by_maintenance` and one comes within 300 ms, else one at a site picked
/// at random (or any) if one comes while they give them back; failing that, the on_release of
/// a handle the round kept for this.
void reentry_round(ReentryTotals& totals, bool by_maintenance) {
  constexpr int workers_count = 4;
  test_thread = true;
  Chaos chaos;
  chaos.max_size = 4;
  chaos.reset_throws = 0.02;
  Tally tally;
  Reentry r(tally, totals, chaos.max_size);
  chaos.callback = [&r](Site site) { r.callback(site); };
  std::atomic<bool> core_freed{false};
  {
    connpool::PoolOptions o =
        chaos_options(chaos.max_size, chance(0.5) ? connpool::WaitPolicy::fifo
                                                  : connpool::WaitPolicy::bounded_barging);
    o.on_create = [&r](const connpool::PoolEvent&) { r.callback(Site::on_create); };
    o.on_acquire = [&r](const connpool::PoolEvent&) { r.callback(Site::on_acquire); };
    o.on_release = [&r](const connpool::PoolEvent&) { r.callback(Site::on_release); };
    o.on_close = [&r](const connpool::PoolEvent&) { r.callback(Site::on_close); };
    r.install(std::shared_ptr<Pool>(
        new Pool(ChaosFactory(&chaos, std::make_shared<SetOnDestruction>(core_freed)), o),
        [&r](Pool* p) { r.destroy(p); }));
  }
  std::optional<Handle> reserve;  // its on_release destroys the pool if nothing else did
  for (int attempt = 0; attempt < 100 && !reserve; ++attempt) {
    const std::shared_ptr<Pool> pool = r.get();
    try {
      reserve = pool->acquire(connpool_test::generous_deadline);
      tally.acquired.fetch_add(1);
    } catch (...) {
      note_failure(std::current_exception(), tally);
    }
  }
  REQUIRE(reserve.has_value());
  const bool close_round = !by_maintenance && chance(0.3);
  std::vector<std::jthread> workers;
  for (int t = 0; t < workers_count; ++t) {
    workers.emplace_back([&] { reentry_worker(r, tally, chaos.max_size); });
  }
  const int run_ms = uniform(10, 60);
  std::this_thread::sleep_for(std::chrono::milliseconds(run_ms / 2));
  if (close_round) {
    r.arm_close();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(run_ms - run_ms / 2));
  REQUIRE(r.stop_workers());
  if (by_maintenance) {
    // Work for the maintenance thread, so that it calls back: a connection idle beside the
    // reserved one, to ping (keepalive) or expire.
    const std::shared_ptr<Pool> pool = r.get();
    pool->set_max_size(chaos.max_size);
    for (int attempt = 0; attempt < 10; ++attempt) {
      try {
        if (pool->try_acquire()) {
          tally.acquired.fetch_add(1);
          break;
        }
      } catch (...) {
        note_failure(std::current_exception(), tally);
      }
    }
  }
  // The site that must destroy the pool, if one: those that giving back the workers' handles
  // reaches (on_release, then reset when kept; on_close and close when closed).
  const int pick = uniform(0, 4);
  constexpr Site sites[] = {Site::on_release, Site::reset, Site::on_close, Site::close};
  std::optional<Site> site;
  if (!by_maintenance && pick < 4) {
    site = sites[pick];
  }
  r.arm_destroy(by_maintenance, site);
  if (by_maintenance) {
    connpool_test::eventually([&] { return r.gone(); }, 300ms);
  } else {
    connpool_test::eventually([&] { return r.gone() || r.workers_finished() == workers_count; });
  }
  r.allow_any_destroyer();
  reserve->release();  // on_release: the pool is destroyed there, unless a callback already did
  reserve.reset();
  CHECK(connpool_test::eventually([&] { return r.gone(); }));
  workers.clear();  // they gave back every handle
  // The pool and every handle are gone: the shared state must be freed, every connection closed
  // (or detached) exactly once.
  REQUIRE(connpool_test::eventually([&] { return core_freed.load(std::memory_order_acquire); }));
  INFO("operations " << tally.operations << ", acquired " << tally.acquired << ", timeouts "
                     << tally.timeouts << ", closed " << tally.closed << ", factory errors "
                     << tally.factory_errors << ", created " << chaos.constructed << ", closes "
                     << chaos.closes << ", detached " << chaos.left);
  INFO("first unexpected outcome: " << tally.first());
  CHECK(tally.unexpected == 0);
  CHECK(tally.late == 0);
  CHECK(chaos.over_max == 0);
  CHECK(chaos.max_pool_owned <= static_cast<long>(chaos.max_size));
  CHECK(chaos.double_holds == 0);
  CHECK(chaos.double_closes == 0);
  CHECK(chaos.used_after_close == 0);
  CHECK(chaos.pool_owned == 0);
  CHECK(chaos.closes + chaos.left == chaos.constructed);
  count_run(tally);
}

}  // namespace

TEST_CASE("Stress: callbacks re-enter the pool, and one destroys it while handles are out",
          "[stress][reentrancy]") {
  // DESIGN: "No user callback (factory, close, ping, reset, hooks) ever runs while the pool's
  // lock is held", so each may call the pool; "A handle may outlive its pool: releasing it then
  // closes the connection"; close() "makes later acquires throw PoolClosed".
  ReentryTotals totals;
  const long before_run = run_operations.load();
  const auto until = std::chrono::steady_clock::now() + stress_duration();
  long rounds = 0;
  do {
    reentry_round(totals, rounds % 2 == 1);
    ++rounds;
  } while (std::chrono::steady_clock::now() < until);
  long in_callbacks = 0;
  std::string reentries;
  std::string destroyed;
  for (int i = 0; i < site_count; ++i) {
    in_callbacks += totals.destroyed_in[i].load();
    reentries += std::string(" ") + site_name(static_cast<Site>(i)) + " " +
                 std::to_string(totals.reentries[i].load());
    destroyed += std::string(" ") + site_name(static_cast<Site>(i)) + " " +
                 std::to_string(totals.destroyed_in[i].load());
  }
  std::printf(
      "stress (re-entrant callbacks): %ld operations in %ld rounds; calls from callbacks:%s; "
      "%ld close() from callbacks; pools destroyed in callbacks:%s (%ld on the maintenance "
      "thread)\n",
      run_operations.load() - before_run, rounds, reentries.c_str(), totals.closes.load(),
      destroyed.c_str(), totals.destroyed_internal.load());
  CHECK(totals.destroyed_outside == 0);
  CHECK(in_callbacks == rounds);
  if (rounds >= 8) {
    CHECK(totals.destroyed_internal > 0);  // half the rounds wait for the maintenance thread
  }
}

// --- Cheap operations, many of them ----------------------------------------------------------

namespace {

/// try_acquire, a hold and a give-back, over and over until `stop`: the pool's fast path, one
/// operation per cycle.
void cycles(Pool& pool, Tally& tally, const std::atomic<bool>& stop) {
  long operations = 0;
  long acquired = 0;
  auto flush = [&] {
    tally.operations.fetch_add(std::exchange(operations, 0));
    tally.acquired.fetch_add(std::exchange(acquired, 0));
  };
  while (!stop.load(std::memory_order_relaxed)) {
    ++operations;
    try {
      if (auto h = pool.try_acquire()) {
        ++acquired;
        { const ChaosConn::Hold hold(**h); }
        if ((operations & 63) == 0) {
          h->invalidate();
        } else {
          h->release();
        }
      }
    } catch (...) {
      note_failure(std::current_exception(), tally);
    }
    if ((operations & 255) == 0) {
      flush();
    }
  }
  flush();
}

}  // namespace

TEST_CASE("Stress: cheap try_acquire/release cycles beside a fault-injecting storm",
          "[stress][cycles]") {
  Chaos chaos;
  chaos.max_size = 8;
  chaos.min_resize = 5;  // room for the four cycling threads, and one for the storm
  Tally tally;
  connpool::PoolStats end;
  const long min_operations = stress_min_operations();
  {
    Pool pool{ChaosFactory(&chaos),
              chaos_options(chaos.max_size, connpool::WaitPolicy::bounded_barging)};
    const auto start = std::chrono::steady_clock::now();
    const auto duration = stress_duration();
    std::atomic<bool> stop{false};
    std::vector<std::jthread> threads;
    for (int t = 0; t < 2; ++t) {
      threads.emplace_back([&] {
        storm(pool, chaos, tally, [&] { return !stop.load(std::memory_order_relaxed); });
      });
    }
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] { cycles(pool, tally, stop); });
    }
    std::this_thread::sleep_until(start + duration);
    // With a minimum for the run, on until the run reaches it, for at most twice as long again.
    while (run_operations.load() + tally.operations.load() < min_operations &&
           std::chrono::steady_clock::now() < start + 3 * duration) {
      std::this_thread::sleep_for(10ms);
    }
    stop.store(true);
    threads.clear();
    check_full_size(pool, chaos, tally,
                    [&] { return pool.acquire(connpool_test::generous_deadline); });
    pool.close();
    end = pool.stats();
  }
  std::printf(
      "stress (cycles): %ld operations, %ld acquired, %ld timeouts, %ld factory errors, max "
      "overrun %ld us\n",
      tally.operations.load(), tally.acquired.load(), tally.timeouts.load(),
      tally.factory_errors.load(), tally.max_overrun_us.load());
  count_run(tally);
  check_end(chaos, tally, end);
}

// Last: the run's total over every scenario above (CTest runs them in one process, in order).
TEST_CASE("Stress: the run performs at least CONNPOOL_STRESS_MIN_OPS operations",
          "[stress][total]") {
  const long total = run_operations.load();
  const long minimum = stress_min_operations();
  std::printf("stress: %ld operations in all (CONNPOOL_STRESS_MIN_OPS %ld)\n", total, minimum);
  CHECK(total >= minimum);
}
