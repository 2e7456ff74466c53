// connpool - tests: the re-entrancy matrix, user code that re-enters the pool it runs in
// SPDX-License-Identifier: MIT

// Rows: every place where user code runs inside a pool (the factory, an asynchronous factory, a
// validation ping, a keepalive ping, reset, close, the hooks of PoolOptions, on_leak, a
// Scheduler's schedule(), a Scheduler that drops the Resumption it was given, a coroutine resumed
// after its acquire, MultiHostPool's role probe on a new connection and on its recheck thread,
// and the same three Scheduler rows for an AsyncMultiHostPool acquire that waited for a role
// recheck, which the recheck thread resumes).
// Columns: what that code does to the pool it runs in (acquire, try_acquire, give back or
// invalidate a handle it holds, close(), prune(), set_max_size(), destroy the pool). Each cell is
// run for each front: ConnectionPool, AsyncConnectionPool resumed inline and through a deferring
// scheduler, MultiHostPool, and AsyncMultiHostPool resumed inline and through a deferring
// scheduler (its hosts' AsyncConnectionPools and its role rechecks resume through it).
//
// A cell re-enters exactly once (the callback acts only while armed, and disarms itself), then
// checks that the re-entering call succeeded or failed with a documented error, that nothing
// hung, and then either that the pool is consistent and still serves max_size acquires, or, when
// the cell destroyed the pool, that its shared state and every connection were freed.
//
// Each cell runs on a thread of its own (the driver), which also takes the measurements; the test
// thread only waits for it, with a bound, and asserts (Catch2 is not thread-safe). So a cell that
// deadlocks fails, naming the phase it hung in, instead of stalling the suite.
//
// Under AddressSanitizer a destroyed pool's storage (the std::optional it lived in) is poisoned,
// so that the pool's own code touching its destroyed owner object (not only the freed shared
// state) is reported.
//
// Environment:
//   CONNPOOL_REENTRANCY_CELL=<pool>/<row>/<column>   only the matching cells ("*" matches all)
//   CONNPOOL_REENTRANCY_VERBOSE=1                    print each cell's outcome on stdout

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <connpool/async_multi_host_pool.hpp>
#include <connpool/async_pool.hpp>
#include <connpool/manual_clock.hpp>
#include <connpool/multi_host_pool.hpp>
#include <connpool/pool.hpp>
#include <connpool/task.hpp>

#include "catch.hpp"
#include "coro.hpp"
#include "fake_conn.hpp"
#include "sync.hpp"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CONNPOOL_REENTRANCY_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define CONNPOOL_REENTRANCY_ASAN 1
#endif
#if defined(CONNPOOL_REENTRANCY_ASAN)
#include <sanitizer/asan_interface.h>
#endif

using namespace std::chrono_literals;
using connpool::LeakReport;
using connpool::PoolEvent;
using connpool::PoolOptions;
using connpool::Task;
using connpool_test::Counted;
using connpool_test::FakeConn;
using connpool_test::FakeFactory;
using connpool_test::FakeState;
using connpool_test::Loop;
using connpool_test::Spawned;

namespace {

using Clock = connpool::ManualClock<struct ReentrancyTag>;

constexpr auto kShort = 50ms;        // the re-entering acquire's timeout
constexpr auto kLong = 5s;           // the test's own acquires, which should not have to wait
constexpr std::size_t kMax = 3;      // max_size of a single pool
constexpr std::size_t kHostMax = 2;  // max_size of each of the multi-host pool's two hosts
constexpr std::size_t kShrunk = 2;   // what the set_max_size column sets
constexpr auto kKeepalive = 1000ms;  // keepalive_interval of the keepalive rows (ManualClock)
constexpr auto kDriverBound = 90s;   // a cell's driver that has not finished by then hangs

// --- The matrix -------------------------------------------------------------------------------

enum class Kind { sync, async_inline, async_loop, multi, async_multi_inline, async_multi_loop };

enum class Row {
  factory,           // the factory (synchronous), on a creation for an acquire
  async_factory,     // an AsyncConnectionPool's Task-returning factory, awaited by an acquire
  ping_validate,     // Conn::ping, validating an idle connection on acquire
  keepalive_prune,   // Conn::ping, a keepalive ping in prune() called by the test
  keepalive_maint,   // Conn::ping, a keepalive ping on the maintenance thread
  reset,             // Conn::reset, on release
  close,             // Conn::close, on invalidate
  on_create,         // PoolOptions::on_create
  on_acquire,        // PoolOptions::on_acquire
  on_release,        // PoolOptions::on_release
  on_close,          // PoolOptions::on_close
  on_leak,           // PoolOptions::on_leak, on the maintenance thread
  schedule,          // the Scheduler's schedule(), for a waiter a release served
  schedule_timer,    // the Scheduler's schedule(), called by the timer thread on a timeout
  dropped,           // schedule(Resumption) for a waiter a release served, which drops it unrun
  dropped_timer,     // the same, called by the timer thread on a timeout
  resumed,           // a coroutine resumed after its acquire was served by a release
  resumed_timer,     // a coroutine resumed by the timer thread after its acquire timed out
  role_connect,      // MultiHostOptions::role_probe, on the new connection of an acquire
  role_recheck,      // MultiHostOptions::role_probe, on MultiHostPool's role recheck thread
  schedule_recheck,  // schedule(), on the recheck thread, for an acquire that awaited a recheck
  dropped_recheck,   // the same, which drops the Resumption unrun
  resumed_recheck,   // a coroutine resumed after its acquire awaited a role recheck
};

enum class Col {
  acquire,       // acquire(kShort): acquire_blocking from plain callbacks of an async pool
  try_acquire,   // try_acquire()
  release,       // release a handle the test acquired earlier and handed to the callback
  invalidate,    // invalidate that handle
  close,         // close()
  prune,         // prune()
  set_max_size,  // set_max_size(kShrunk)
  destroy,       // destroy the pool (reset the std::optional it lives in)
};

/// How a call ended.
enum class Outcome {
  none,              // not called (yet)
  ok,                // returned (acquire: with a handle)
  empty,             // try_acquire: nullopt
  timeout,           // AcquireTimeout
  closed,            // PoolClosed
  cancelled,         // AcquireCancelled
  no_healthy_host,   // NoHealthyHost
  invalid_argument,  // std::invalid_argument
  other,             // any other exception: undocumented
};

const char* name(Kind k) {
  switch (k) {
    case Kind::sync:
      return "sync";
    case Kind::async_inline:
      return "async_inline";
    case Kind::async_loop:
      return "async_loop";
    case Kind::multi:
      return "multi";
    case Kind::async_multi_inline:
      return "async_multi_inline";
    case Kind::async_multi_loop:
      return "async_multi_loop";
  }
  return "?";
}

const char* name(Row r) {
  switch (r) {
    case Row::factory:
      return "factory";
    case Row::async_factory:
      return "async_factory";
    case Row::ping_validate:
      return "ping_validate";
    case Row::keepalive_prune:
      return "keepalive_prune";
    case Row::keepalive_maint:
      return "keepalive_maint";
    case Row::reset:
      return "reset";
    case Row::close:
      return "close";
    case Row::on_create:
      return "on_create";
    case Row::on_acquire:
      return "on_acquire";
    case Row::on_release:
      return "on_release";
    case Row::on_close:
      return "on_close";
    case Row::on_leak:
      return "on_leak";
    case Row::schedule:
      return "schedule";
    case Row::schedule_timer:
      return "schedule_timer";
    case Row::dropped:
      return "dropped";
    case Row::dropped_timer:
      return "dropped_timer";
    case Row::resumed:
      return "resumed";
    case Row::resumed_timer:
      return "resumed_timer";
    case Row::role_connect:
      return "role_connect";
    case Row::role_recheck:
      return "role_recheck";
    case Row::schedule_recheck:
      return "schedule_recheck";
    case Row::dropped_recheck:
      return "dropped_recheck";
    case Row::resumed_recheck:
      return "resumed_recheck";
  }
  return "?";
}

const char* name(Col c) {
  switch (c) {
    case Col::acquire:
      return "acquire";
    case Col::try_acquire:
      return "try_acquire";
    case Col::release:
      return "release";
    case Col::invalidate:
      return "invalidate";
    case Col::close:
      return "close";
    case Col::prune:
      return "prune";
    case Col::set_max_size:
      return "set_max_size";
    case Col::destroy:
      return "destroy";
  }
  return "?";
}

const char* name(Outcome o) {
  switch (o) {
    case Outcome::none:
      return "none";
    case Outcome::ok:
      return "ok";
    case Outcome::empty:
      return "empty";
    case Outcome::timeout:
      return "AcquireTimeout";
    case Outcome::closed:
      return "PoolClosed";
    case Outcome::cancelled:
      return "AcquireCancelled";
    case Outcome::no_healthy_host:
      return "NoHealthyHost";
    case Outcome::invalid_argument:
      return "invalid_argument";
    case Outcome::other:
      return "other";
  }
  return "?";
}

/// The fronts that resume coroutines (through a Scheduler).
bool async_kind(Kind k) {
  return k == Kind::async_inline || k == Kind::async_loop || k == Kind::async_multi_inline ||
         k == Kind::async_multi_loop;
}

/// The fronts over several hosts (MultiHostPool's rounds, roles, no prune() nor set_max_size()).
bool multi_kind(Kind k) {
  return k == Kind::multi || k == Kind::async_multi_inline || k == Kind::async_multi_loop;
}

/// The fronts whose Scheduler defers: the driver runs its queue (wait_for()).
bool deferring_kind(Kind k) {
  return k == Kind::async_loop || k == Kind::async_multi_loop;
}

/// The rows whose Scheduler drops the Resumption it is given.
bool dropping(Row r) {
  return r == Row::dropped || r == Row::dropped_timer || r == Row::dropped_recheck;
}

/// The rows whose waiting coroutine's wait is for a role recheck (AsyncMultiHostPool's), ended by
/// the recheck thread.
bool recheck_wait_row(Row r) {
  return r == Row::schedule_recheck || r == Row::dropped_recheck || r == Row::resumed_recheck;
}

/// The rows whose waiting coroutine's wait is ended by the timer thread.
bool timer_row(Row r) {
  return r == Row::schedule_timer || r == Row::resumed_timer || r == Row::dropped_timer;
}

/// Why a cell does not apply, or nullptr when it does.
const char* not_applicable(Kind k, Row r, Col c) {
  const bool async = async_kind(k);
  const bool multi = multi_kind(k);
  if (r == Row::async_factory && (!async || multi)) {
    return multi ? "a multi-host pool's factory(host) is synchronous"
                 : "only AsyncConnectionPool takes a Task-returning factory";
  }
  if ((r == Row::schedule || r == Row::schedule_timer || dropping(r)) && !async) {
    return "only the asynchronous fronts have a Scheduler";
  }
  if ((r == Row::resumed || r == Row::resumed_timer) && !async) {
    return "only the asynchronous fronts resume coroutines";
  }
  if ((r == Row::role_connect || r == Row::role_recheck) && !multi) {
    return "only the multi-host fronts probe host roles";
  }
  if (recheck_wait_row(r) && !(async && multi)) {
    return "only AsyncMultiHostPool suspends an acquire until a role recheck (MultiHostPool "
           "blocks in it, an AsyncConnectionPool has no roles)";
  }
  if (multi && r == Row::keepalive_prune) {
    return "a multi-host pool has no prune(): its keepalive pings run on the hosts' maintenance "
           "threads only (row keepalive_maint)";
  }
  if (multi && (c == Col::prune || c == Col::set_max_size)) {
    return "a multi-host pool has neither prune() nor set_max_size()";
  }
  return nullptr;
}

bool env_flag(const char* var) {
  const char* v = std::getenv(var);
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

/// Whether CONNPOOL_REENTRANCY_CELL (pool/row/column, "*" for any part) selects this cell.
bool selected(Kind k, Row r, Col c) {
  const char* v = std::getenv("CONNPOOL_REENTRANCY_CELL");
  if (v == nullptr || *v == '\0') {
    return true;
  }
  const std::string spec(v);
  const std::string parts[3] = {name(k), name(r), name(c)};
  std::size_t start = 0;
  for (const std::string& part : parts) {
    const std::size_t end = spec.find('/', start);
    const std::string want =
        spec.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (want != "*" && want != part) {
      return false;
    }
    if (end == std::string::npos) {
      return true;  // the parts left out match anything
    }
    start = end + 1;
  }
  return true;
}

/// Names an exception and the Outcome it stands for.
Outcome classify(const std::exception_ptr& e, std::string& what) {
  try {
    std::rethrow_exception(e);
  } catch (const connpool::AcquireTimeout& ex) {
    what = ex.what();
    return Outcome::timeout;
  } catch (const connpool::PoolClosed& ex) {
    what = ex.what();
    return Outcome::closed;
  } catch (const connpool::AcquireCancelled& ex) {
    what = ex.what();
    return Outcome::cancelled;
  } catch (const connpool::NoHealthyHost& ex) {
    what = ex.what();
    return Outcome::no_healthy_host;
  } catch (const std::invalid_argument& ex) {
    what = ex.what();
    return Outcome::invalid_argument;
  } catch (const std::exception& ex) {
    what = ex.what();
  } catch (...) {
    what = "an exception not derived from std::exception";
  }
  return Outcome::other;
}

// --- Factories that count their copies (the pool's shared state holds one) -------------------

struct TrackedFactory {
  FakeFactory make;
  Counted counted;
  TrackedFactory(FakeState& state, std::atomic<int>& live) : make(state), counted(live) {}
  FakeConn operator()() const { return make(); }
};

/// A Task-returning factory; `before` runs in the task before it connects.
struct TrackedAsyncFactory {
  FakeFactory make;
  Counted counted;
  const std::function<Task<void>()>* before;
  TrackedAsyncFactory(FakeState& state,
                      std::atomic<int>& live,
                      const std::function<Task<void>()>* hook)
      : make(state), counted(live), before(hook) {}
  CONNPOOL_CORO_NO_SANITIZE_FUNCTION Task<FakeConn> operator()() const {
    if (*before) {
      co_await (*before)();
    }
    co_return make();
  }
};

/// MultiHostPool's factory(host): every host's connections report into one FakeState.
struct TrackedHostFactory {
  FakeFactory make;
  Counted counted;
  TrackedHostFactory(FakeState& state, std::atomic<int>& live) : make(state), counted(live) {}
  FakeConn operator()(const std::string& /*host*/) const { return make(); }
};

/// A Scheduler that runs a hook in schedule(), then resumes inline or queues in a Loop.
struct HookScheduler {
  const std::function<void()>* hook;
  Loop* loop;  // null: resume inline
  void schedule(std::coroutine_handle<> h) const {
    (*hook)();
    if (loop != nullptr) {
      loop->schedule(h);
    } else {
      h.resume();
    }
  }
};

/// The Resumptions a DroppingScheduler took to drop later, and how many it dropped.
struct Drops {
  std::mutex mutex;  // guards queued
  std::vector<connpool::Resumption> queued;
  std::atomic<int> dropped{0};

  /// Drops the queued Resumptions, on this thread (an event loop destroyed with work queued).
  void drop_queued() {
    std::vector<connpool::Resumption> batch;
    {
      const std::lock_guard lock(mutex);
      batch.swap(queued);
    }
    const auto n = static_cast<int>(batch.size());
    batch.clear();
    dropped.fetch_add(n);
  }
};

/// A Scheduler that takes Resumptions: runs a hook in schedule(), then drops the Resumption
/// unrun, at once (on the thread that called schedule()) or later (Drops::drop_queued()).
struct DroppingScheduler {
  const std::function<void()>* hook;
  Drops* drops;
  bool defer;
  void schedule(connpool::Resumption r) const {
    (*hook)();
    if (defer) {
      const std::lock_guard lock(drops->mutex);
      drops->queued.push_back(std::move(r));
      return;
    }
    r.reset();
    drops->dropped.fetch_add(1);
  }
};

using SyncPool = connpool::ConnectionPool<FakeConn, TrackedFactory, Clock>;
using AsyncPool = connpool::AsyncConnectionPool<FakeConn, TrackedFactory, Clock>;
using AsyncTaskPool = connpool::AsyncConnectionPool<FakeConn, TrackedAsyncFactory, Clock>;
using MultiPool = connpool::MultiHostPool<FakeConn, TrackedHostFactory, std::string, Clock>;
using AsyncMultiPool =
    connpool::AsyncMultiHostPool<FakeConn, TrackedHostFactory, std::string, Clock>;

/// The fronts that resume coroutines: acquire() is awaited, acquire_blocking() blocks.
template <class P>
inline constexpr bool is_async_v =
    std::is_same_v<P, AsyncPool> || std::is_same_v<P, AsyncTaskPool> ||
    std::is_same_v<P, AsyncMultiPool>;
/// The fronts over several hosts: stats().total, no prune() nor set_max_size().
template <class P>
inline constexpr bool is_multi_v =
    std::is_same_v<P, MultiPool> || std::is_same_v<P, AsyncMultiPool>;

struct Gauges {
  std::size_t in_use = 0;
  std::size_t idle = 0;
  std::size_t pending = 0;
  std::size_t max_size = 0;
};

template <class P>
Gauges gauges(const P& p) {
  if constexpr (is_multi_v<P>) {
    const connpool::PoolStats s = p.stats().total;
    return {s.in_use, s.idle, s.pending, s.max_size};
  } else {
    const connpool::PoolStats s = p.stats();
    return {s.in_use, s.idle, s.pending, s.max_size};
  }
}

template <class P, class Rep, class Period>
typename P::handle_type acquire_blocking(P& p, std::chrono::duration<Rep, Period> timeout) {
  if constexpr (is_async_v<P> && is_multi_v<P>) {
    // AsyncMultiHostPool blocks for (Route, timeout) or (host, timeout) only.
    return p.acquire_blocking(connpool::Route::any, timeout);
  } else if constexpr (is_async_v<P>) {
    return p.acquire_blocking(timeout);
  } else {
    return p.acquire(timeout);
  }
}

/// What the driver measured after the cell, for the test thread to assert on.
struct After {
  bool quiet = false;  // pending 0, in_use == handles held, live == idle + in_use
  Gauges gauges;
  int live = 0;
  std::size_t held = 0;                    // handles the test still held
  Outcome acquire_closed = Outcome::none;  // a closed pool: what an acquire did
  std::size_t to_serve = 0;                // max_size in force
  std::size_t served = 0;                  // of which the pool served at once
  std::size_t distinct = 0;                // distinct connections among them
  std::string serve_error;                 // why it served fewer
  bool freed = false;                      // factories == 0 and live == 0 in the end
  int factories_left = 0;
  int live_left = 0;
};

// --- One cell ---------------------------------------------------------------------------------

template <class Pool>
struct Cell {
  using HandleT = typename Pool::handle_type;
  static constexpr bool async = is_async_v<Pool>;
  static constexpr bool multi = is_multi_v<Pool>;

  Cell(Kind k, Row r, Col c) : kind(k), row(r), col(c) {}
  Cell(const Cell&) = delete;
  Cell& operator=(const Cell&) = delete;
  ~Cell() {
    unpoison();
    if (owned) {
      owned.destroy();
    }
  }

  const Kind kind;
  const Row row;
  const Col col;

  // Declared first: outlives the pool and every handle.
  FakeState state;
  std::atomic<int> factories{0};  // live copies of the factory
  Loop loop;
  Spawned spawned;
  std::function<Task<void>()> before_connect;  // the async factory's hook
  std::function<void()> on_schedule;           // HookScheduler's and DroppingScheduler's hook
  Drops drops;                                 // DroppingScheduler's
  std::coroutine_handle<> owned;               // the dropped rows' waiting coroutine
  alignas(64) std::optional<Pool> pool;
  std::optional<HandleT> held;  // acquired by the test; the callback may release or invalidate it

  std::atomic<bool> armed{false};
  std::atomic<int> fired{0};  // times the callback acted (at most once: it disarms)
  std::atomic<bool> acted{false};
  std::atomic<Outcome> action{Outcome::none};
  std::atomic<Outcome> trigger{Outcome::none};
  std::atomic<bool> destroyed{false};
  std::atomic<bool> closed{false};
  std::atomic<bool> driver_done{false};
  // The thread that runs the scenario: the role rows tell the acquire's probes (on it) from the
  // recheck thread's.
  std::atomic<std::thread::id> driver_id{};
  std::atomic<int> recheck_probes{0};  // role probes run off the driver (the recheck thread's)
  // The recheck-wait rows: the first role recheck's probe waits for pass_gate (pass_held set).
  std::atomic<bool> pass_held{false};
  connpool_test::Gate pass_gate;
  std::atomic<const char*> phase{"not started"};
  After after;  // written by the driver before driver_done

  mutable std::mutex mutex;  // guards the three strings below
  std::string action_what;
  std::string trigger_what;
  std::string problem;

  void arm() { armed.store(true, std::memory_order_release); }
  bool take_arm() { return armed.exchange(false, std::memory_order_acq_rel); }

  void record_action(Outcome o, const std::string& what) {
    {
      const std::lock_guard lock(mutex);
      action_what = what;
    }
    action.store(o);
  }
  void record_trigger(Outcome o, const std::string& what = {}) {
    {
      const std::lock_guard lock(mutex);
      trigger_what = what;
    }
    trigger.store(o);
  }
  void note(const std::string& what) {
    const std::lock_guard lock(mutex);
    problem += (problem.empty() ? "" : "; ") + what;
  }
  std::string text(const std::string& s) const {
    const std::lock_guard lock(mutex);
    return s;
  }

  /// The callback of the plain-function rows.
  void callback();

  /// Destroys the pool from inside it, then poisons its storage (under ASan) so that any later
  /// access to the destroyed owner object is reported.
  void destroy_pool() {
    pool.reset();
    destroyed.store(true);
#if defined(CONNPOOL_REENTRANCY_ASAN)
    ASAN_POISON_MEMORY_REGION(&pool, sizeof(pool));
#endif
  }
  void unpoison() {
#if defined(CONNPOOL_REENTRANCY_ASAN)
    ASAN_UNPOISON_MEMORY_REGION(&pool, sizeof(pool));
#endif
  }

  PoolOptions options() const {
    PoolOptions o;
    o.min_size = 0;
    o.max_size = kMax;
    o.acquire_timeout = kLong;
    o.max_idle = 0ms;
    o.max_lifetime = 0ms;
    o.health_check_interval = 0ms;
    o.validate_on_acquire = false;
    switch (row) {
      case Row::ping_validate:
        o.validate_on_acquire = true;
        o.validation_bypass = 0ms;  // every reuse pings
        break;
      case Row::keepalive_prune:
        o.keepalive_interval = kKeepalive;
        break;
      case Row::keepalive_maint:
        o.keepalive_interval = kKeepalive;
        o.health_check_interval = 5ms;
        break;
      case Row::on_leak:
        o.leak_threshold = 50ms;  // the maintenance thread scans every 25 ms
        break;
      default:
        break;
    }
    return o;
  }

  /// Builds the pool with the row's callback wired in. Only the row's own hook is set: a hook
  /// that is set changes the pool's paths (on_acquire, on_release observe holds).
  void build();

  /// Builds an asynchronous front from `args` (all its constructor's arguments but the last)
  /// and the row's Scheduler: HookScheduler, DroppingScheduler, the Loop, or InlineScheduler;
  /// each deferring (through the Loop, or dropping later) for the deferring kinds.
  template <class... Args>
  void emplace_async(Args&&... args) {
    Loop* deferring = deferring_kind(kind) ? &loop : nullptr;
    if (row == Row::schedule || row == Row::schedule_timer || row == Row::schedule_recheck) {
      pool.emplace(std::forward<Args>(args)..., HookScheduler{&on_schedule, deferring});
    } else if (dropping(row)) {
      pool.emplace(std::forward<Args>(args)...,
                   DroppingScheduler{&on_schedule, &drops, deferring != nullptr});
    } else if (deferring != nullptr) {
      pool.emplace(std::forward<Args>(args)..., loop.scheduler());
    } else {
      pool.emplace(std::forward<Args>(args)..., connpool::InlineScheduler{});
    }
  }
};

template <class C>
void act_other(C& c) {
  switch (c.col) {
    case Col::release:
    case Col::invalidate:
      if (!c.held || !*c.held) {
        throw std::logic_error("test: the callback holds no handle");
      }
      if (c.col == Col::release) {
        c.held->release();
      } else {
        c.held->invalidate();
      }
      break;
    case Col::close:
      c.pool->close();
      c.closed.store(true);
      break;
    case Col::prune:
      if constexpr (!C::multi) {
        (void)c.pool->prune();
      }
      break;
    case Col::set_max_size:
      if constexpr (!C::multi) {
        c.pool->set_max_size(kShrunk);
      }
      break;
    case Col::destroy:
      c.destroy_pool();
      break;
    case Col::acquire:
    case Col::try_acquire:
      throw std::logic_error("test: act_other called for an acquire");
  }
}

template <class C>
CONNPOOL_CORO_NO_SANITIZE_FUNCTION Task<void> try_acquire_co(C* c) {
  Outcome o = Outcome::ok;
  std::string what;
  try {
    auto h = co_await c->pool->try_acquire();
    if (!h) {
      o = Outcome::empty;
    }
  } catch (...) {
    o = classify(std::current_exception(), what);
  }
  c->record_action(o, what);
}

/// The column's action from a plain function (a hook, the factory, a ping...).
template <class C>
void act_plain(C& c) {
  Outcome o = Outcome::ok;
  std::string what;
  try {
    switch (c.col) {
      case Col::acquire: {
        auto h = acquire_blocking(*c.pool, kShort);
        break;
      }
      case Col::try_acquire:
        if constexpr (C::async) {
          // A plain function cannot co_await: a coroutine of its own, which ends at once (a
          // try_acquire never waits, and this pool's factory is synchronous); it records.
          c.spawned.spawn([&c] { return try_acquire_co(&c); });
          return;
        } else {
          if (!c.pool->try_acquire()) {
            o = Outcome::empty;
          }
        }
        break;
      default:
        act_other(c);
        break;
    }
  } catch (...) {
    o = classify(std::current_exception(), what);
  }
  c.record_action(o, what);
}

/// The column's action from a coroutine (the async factory's task, a resumed coroutine).
template <class C>
CONNPOOL_CORO_NO_SANITIZE_FUNCTION Task<void> act_co(C& c) {
  Outcome o = Outcome::ok;
  std::string what;
  try {
    switch (c.col) {
      case Col::acquire: {
        auto h = co_await c.pool->acquire(kShort);
        break;
      }
      case Col::try_acquire: {
        auto h = co_await c.pool->try_acquire();
        if (!h) {
          o = Outcome::empty;
        }
        break;
      }
      default:
        act_other(c);
        break;
    }
  } catch (...) {
    o = classify(std::current_exception(), what);
  }
  c.record_action(o, what);
}

template <class Pool>
void Cell<Pool>::callback() {
  if (!take_arm()) {
    return;
  }
  fired.fetch_add(1);
  act_plain(*this);
  acted.store(true);
}

template <class C>
CONNPOOL_CORO_NO_SANITIZE_FUNCTION Task<void> before_connect_co(C* c) {
  if (c->take_arm()) {
    c->fired.fetch_add(1);
    if (deferring_kind(c->kind)) {
      // A connect that really suspends: the rest of the factory runs when the test runs the loop.
      co_await c->loop.yield();
    }
    co_await act_co(*c);
    c->acted.store(true);
  }
}

/// The test's acquire in an async pool, as a coroutine, waiting up to `timeout` (a multi-host
/// pool: under `route`). `act_after`: the coroutine is the row's callback itself, and acts once
/// its acquire has completed (holding what it got).
template <class C>
CONNPOOL_CORO_NO_SANITIZE_FUNCTION Task<void> trigger_co(
    C* c,
    bool act_after,
    std::chrono::milliseconds timeout,
    connpool::Route route = connpool::Route::any) {
  std::optional<typename C::HandleT> h;
  try {
    if constexpr (C::multi) {
      h.emplace(co_await c->pool->acquire(route, timeout));
    } else {
      (void)route;
      h.emplace(co_await c->pool->acquire(timeout));
    }
    c->record_trigger(Outcome::ok);
  } catch (...) {
    std::string what;
    const Outcome o = classify(std::current_exception(), what);
    c->record_trigger(o, what);
  }
  if (act_after && c->take_arm()) {
    c->fired.fetch_add(1);
    co_await act_co(*c);
    c->acted.store(true);
  }
}

template <class Pool>
void Cell<Pool>::build() {
  PoolOptions o = options();
  const auto cb = [this] { callback(); };
  switch (row) {
    case Row::factory:
      state.on_create = cb;
      break;
    case Row::async_factory:
      if constexpr (async) {
        before_connect = [this] { return before_connect_co(this); };
      }
      break;
    case Row::ping_validate:
    case Row::keepalive_prune:
    case Row::keepalive_maint:
      state.on_ping = cb;
      break;
    case Row::reset:
      state.on_reset = cb;
      break;
    case Row::close:
      state.on_close = cb;
      break;
    case Row::on_create:
      o.on_create = [this](const PoolEvent&) { callback(); };
      break;
    case Row::on_acquire:
      o.on_acquire = [this](const PoolEvent&) { callback(); };
      break;
    case Row::on_release:
      o.on_release = [this](const PoolEvent&) { callback(); };
      break;
    case Row::on_close:
      o.on_close = [this](const PoolEvent&) { callback(); };
      break;
    case Row::on_leak:
      o.on_leak = [this](const LeakReport&) { callback(); };
      break;
    case Row::schedule:
    case Row::schedule_timer:
    case Row::dropped:
    case Row::dropped_timer:
    case Row::schedule_recheck:
    case Row::dropped_recheck:
      on_schedule = cb;
      break;
    case Row::resumed:
    case Row::resumed_timer:
    case Row::resumed_recheck:
      break;  // the coroutine itself (trigger_co)
    case Row::role_connect:
    case Row::role_recheck:
      break;  // the role probe (multi below)
  }
  if constexpr (multi) {
    connpool::MultiHostOptions m;
    o.max_size = kHostMax;
    m.per_host = o;
    if (row == Row::role_connect || row == Row::role_recheck) {
      // Every host a primary. The probe runs on each new connection (the driver's acquires) and
      // on the recheck thread; only the row's own side runs the callback.
      m.role_probe = [this](FakeConn&) {
        const bool on_driver = std::this_thread::get_id() == driver_id.load();
        if (!on_driver) {
          recheck_probes.fetch_add(1);
        }
        if (on_driver == (row == Row::role_connect)) {
          callback();
        }
        return connpool::HostRole::primary;
      };
      m.role_recheck_interval = row == Row::role_recheck ? 5ms : 1h;
    } else if (recheck_wait_row(row)) {
      // No primary until pass_gate opens, every host a primary after. The first recheck waits in
      // its first probe for pass_gate, which the test opens once an acquire waits for the pass;
      // the test's own connects (on the driver) meanwhile find replicas.
      m.role_probe = [this](FakeConn&) {
        if (std::this_thread::get_id() != driver_id.load()) {
          recheck_probes.fetch_add(1);
          pass_held.store(true);
          if (!pass_gate.wait()) {
            note("the role recheck was held for 20 s");
          }
        }
        return pass_gate.is_open() ? connpool::HostRole::primary : connpool::HostRole::replica;
      };
      m.role_recheck_interval = 1h;
    }
    // Deterministic picks: the host with fewer connections in use, ties to "a".
    m.balance = connpool::Balance::least_in_use;
    if constexpr (async) {
      emplace_async(std::vector<std::string>{"a", "b"}, TrackedHostFactory(state, factories), m);
    } else {
      pool.emplace(std::vector<std::string>{"a", "b"}, TrackedHostFactory(state, factories), m);
    }
  } else if constexpr (async) {
    using F = typename Pool::factory_type;
    auto factory = [&] {
      if constexpr (std::is_same_v<F, TrackedAsyncFactory>) {
        return F(state, factories, &before_connect);
      } else {
        return F(state, factories);
      }
    };
    emplace_async(factory(), o);
  } else {
    pool.emplace(TrackedFactory(state, factories), o);
  }
}

// --- The driver: the cell's scenario, on a thread of its own ----------------------------------

/// Waits for `pred`, running the deferring scheduler's queue meanwhile.
template <class C, class Pred>
bool wait_for(C& c,
              Pred pred,
              std::chrono::milliseconds within = connpool_test::generous_deadline) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  for (;;) {
    if (deferring_kind(c.kind)) {
      c.loop.run();
      c.drops.drop_queued();
    }
    if (pred()) {
      return true;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(1ms);
  }
}

/// Waits until every coroutine the cell started has ended.
template <class C>
void settle(C& c) {
  c.phase = "settle";
  if (!wait_for(c, [&c] { return c.spawned.done() == c.spawned.started(); })) {
    c.note("a coroutine did not finish within 20 s");
  }
}

/// The test's acquire that runs the row's callback (then gives the handle back at once).
template <class C>
void trigger_acquire(C& c) {
  if constexpr (C::async) {
    c.spawned.spawn([&c] { return trigger_co(&c, false, kLong); });
  } else {
    try {
      auto h = c.pool->acquire(kLong);
      c.record_trigger(Outcome::ok);
    } catch (...) {
      std::string what;
      const Outcome o = classify(std::current_exception(), what);
      c.record_trigger(o, what);
    }
  }
}

/// One idle connection besides `held` (the multi-host pool: on host "b").
template <class C>
void make_idle(C& c) {
  auto h = acquire_blocking(*c.pool, kLong);
}

/// The filler whose release serves the coroutine waiting in the pool: for a multi-host pool, one
/// of the host whose pool it waits in (only that host's releases serve it).
template <class C>
typename C::HandleT& serving_filler(C& c, std::vector<typename C::HandleT>& fillers) {
  if constexpr (C::multi) {
    for (const auto& host : c.pool->stats().hosts) {
      if (host.pool.pending == 0) {
        continue;
      }
      for (typename C::HandleT& f : fillers) {
        if (f && f.host() == host.host) {
          return f;
        }
      }
    }
    c.note("no filler holds a connection of the host the coroutine waits on");
  }
  return fillers.front();
}

template <class C>
void wait_acted(C& c) {
  if (!wait_for(c, [&c] { return c.acted.load(); })) {
    c.note("the callback did not run within 20 s");
  }
}

template <class C>
void run_scenario(C& c) {
  if (c.row == Row::role_connect) {
    // The recheck thread's first pass (the only one: the next is an hour away) connects to
    // each host. It has ended, its connections given back, before the setup's acquires.
    c.phase = "waiting for the first role recheck";
    if (!wait_for(c, [&c] {
          const Gauges g = gauges(*c.pool);
          return c.recheck_probes.load() >= 2 && g.in_use == 0 && g.idle == 2;
        })) {
      c.note("the first role recheck did not end within 20 s");
    }
  }
  c.phase = "setup";
  c.held.emplace(acquire_blocking(*c.pool, kLong));
  switch (c.row) {
    case Row::factory:
    case Row::async_factory:
    case Row::on_create:
      c.phase = "trigger: an acquire that creates";
      c.arm();
      trigger_acquire(c);
      break;
    case Row::ping_validate:
    case Row::on_acquire:
      make_idle(c);
      c.phase = "trigger: an acquire that reuses";
      c.arm();
      trigger_acquire(c);
      break;
    case Row::keepalive_prune:
      if constexpr (!C::multi) {
        make_idle(c);
        Clock::advance(2 * kKeepalive);
        c.phase = "trigger: prune()";
        c.arm();
        try {
          (void)c.pool->prune();
          c.record_trigger(Outcome::ok);
        } catch (...) {
          std::string what;
          const Outcome o = classify(std::current_exception(), what);
          c.record_trigger(o, what);
        }
      }
      break;
    case Row::keepalive_maint:
      make_idle(c);
      c.phase = "trigger: a keepalive ping on the maintenance thread";
      c.arm();
      Clock::advance(2 * kKeepalive);
      wait_acted(c);
      break;
    case Row::reset:
    case Row::on_release: {
      auto h = acquire_blocking(*c.pool, kLong);
      c.phase = "trigger: release";
      c.arm();
      h.release();
      c.record_trigger(Outcome::ok);
      break;
    }
    case Row::close:
    case Row::on_close: {
      auto h = acquire_blocking(*c.pool, kLong);
      c.phase = "trigger: invalidate";
      c.arm();
      h.invalidate();
      c.record_trigger(Outcome::ok);
      break;
    }
    case Row::role_connect:
      if constexpr (C::multi) {
        // The recheck thread's first pass left an idle connection on each host: with every
        // idle one taken, the trigger's acquire connects.
        std::vector<typename C::HandleT> others;
        while (gauges(*c.pool).idle > 0) {
          others.push_back(acquire_blocking(*c.pool, kLong));
        }
        c.phase = "trigger: an acquire that creates (and probes)";
        c.arm();
        trigger_acquire(c);
      }
      break;
    case Row::schedule_recheck:
    case Row::dropped_recheck:
    case Row::resumed_recheck:
      if constexpr (C::async && C::multi) {
        // No host's role is known while the first recheck is held in its probe: an acquire of
        // Route::primary finds no host of its route and suspends until that pass ends; the
        // recheck thread then resumes it through the scheduler.
        c.phase = "waiting for the first role recheck to be held";
        if (!wait_for(c, [&c] { return c.pass_held.load(); })) {
          c.note("the first role recheck did not start within 20 s");
        }
        const bool act_after = c.row == Row::resumed_recheck;
        if (dropping(c.row)) {
          c.owned = connpool_test::run_owned(trigger_co(&c, false, kLong, connpool::Route::primary))
                        .release();
        } else {
          c.spawned.spawn([&c, act_after] {
            return trigger_co(&c, act_after, kLong, connpool::Route::primary);
          });
        }
        if (c.trigger.load() != Outcome::none) {
          c.note("the acquire of Route::primary did not wait for the role recheck");
        }
        c.phase = "trigger: the role recheck ends and resumes the waiting acquire";
        c.arm();
        c.pass_gate.open();
        if (dropping(c.row)) {
          c.phase = "waiting for the Resumption to be dropped";
          if (!wait_for(c, [&c] { return c.drops.dropped.load() == 1; })) {
            c.note("the Resumption was not dropped within 20 s");
          } else {
            std::exchange(c.owned, nullptr).destroy();
          }
        }
        settle(c);
      }
      break;
    case Row::role_recheck:
      c.phase = "trigger: a role probe on the recheck thread";
      c.arm();
      wait_acted(c);
      break;
    case Row::on_leak: {
      c.phase = "trigger: a leak report on the maintenance thread";
      c.arm();
      auto h = acquire_blocking(*c.pool, kLong);  // reported, if `held` was not already
      wait_acted(c);
      break;
    }
    case Row::schedule:
    case Row::schedule_timer:
    case Row::dropped:
    case Row::dropped_timer:
    case Row::resumed:
    case Row::resumed_timer:
      if constexpr (C::async) {
        // The pool exhausted (a multi-host pool: every host), one coroutine waits (on one
        // host's pool); a release serves it, or the timer thread ends its wait.
        std::vector<typename C::HandleT> fillers;
        const std::size_t capacity = gauges(*c.pool).max_size;
        while (gauges(*c.pool).in_use < capacity) {
          fillers.push_back(acquire_blocking(*c.pool, kLong));
        }
        const bool timer = timer_row(c.row);
        const bool act_after = c.row == Row::resumed || c.row == Row::resumed_timer;
        const std::chrono::milliseconds timeout = timer ? std::chrono::milliseconds(kShort) : kLong;
        if (timer) {
          // Armed first: nothing else schedules or resumes the coroutine before its deadline.
          c.phase = "trigger: a timeout ended by the timer thread";
          c.arm();
        }
        if (dropping(c.row)) {
          // Never resumed: the cell owns it, and destroys it once its Resumption was dropped.
          c.owned = connpool_test::run_owned(trigger_co(&c, false, timeout)).release();
        } else {
          c.spawned.spawn([&c, act_after, timeout] { return trigger_co(&c, act_after, timeout); });
        }
        if (!timer) {
          if (!wait_for(c, [&c] { return gauges(*c.pool).pending == 1; })) {
            c.note("the coroutine did not queue");
          }
          c.phase = "trigger: a release that serves a waiting coroutine";
          typename C::HandleT& serving = serving_filler(c, fillers);
          c.arm();
          serving.release();
        }
        if (dropping(c.row)) {
          c.phase = "waiting for the Resumption to be dropped";
          if (!wait_for(c, [&c] { return c.drops.dropped.load() == 1; })) {
            c.note("the Resumption was not dropped within 20 s");
          } else {
            std::exchange(c.owned, nullptr).destroy();
          }
        }
        settle(c);
        fillers.clear();
      }
      break;
  }
  settle(c);
  if (c.fired.load() == 0) {
    wait_acted(c);  // a callback on another thread, still to come
  }
}

/// After the scenario: measures consistency and service, then destroys the pool (unless the cell
/// did) and waits for everything to be freed.
template <class C>
void measure(C& c) {
  After& a = c.after;
  if (!c.destroyed.load()) {
    c.phase = "checks: consistency";
    a.held = c.held && *c.held ? 1 : 0;
    a.quiet = wait_for(c, [&] {
      a.gauges = gauges(*c.pool);
      a.live = c.state.live.load();
      return a.gauges.pending == 0 && a.gauges.in_use == a.held &&
             a.live == static_cast<int>(a.gauges.idle + a.gauges.in_use);
    });
    c.held.reset();
    if (c.closed.load()) {
      c.phase = "checks: an acquire on the closed pool";
      try {
        auto h = acquire_blocking(*c.pool, kShort);
        a.acquire_closed = Outcome::ok;
      } catch (...) {
        std::string what;
        a.acquire_closed = classify(std::current_exception(), what);
      }
    } else {
      c.phase = "checks: max_size acquires";
      a.to_serve = gauges(*c.pool).max_size;
      std::vector<typename C::HandleT> hs;
      try {
        while (hs.size() < a.to_serve) {
          hs.push_back(acquire_blocking(*c.pool, kLong));
        }
      } catch (...) {
        classify(std::current_exception(), a.serve_error);
      }
      a.served = hs.size();
      std::set<int> ids;
      for (const auto& h : hs) {
        ids.insert(h->id());
      }
      a.distinct = ids.size();
    }
    c.phase = "destroying the pool";
    c.pool.reset();
  } else {
    c.held.reset();
  }
  c.phase = "waiting for the pool to be freed";
  a.freed = wait_for(c, [&c] { return c.factories.load() == 0 && c.state.live.load() == 0; });
  a.factories_left = c.factories.load();
  a.live_left = c.state.live.load();
  c.phase = "done";
}

template <class C>
void drive(C& c) {
  try {
    run_scenario(c);
  } catch (...) {
    std::string what;
    classify(std::current_exception(), what);
    c.note(std::string("the scenario threw: ") + what);
  }
  try {
    measure(c);
  } catch (...) {
    std::string what;
    classify(std::current_exception(), what);
    c.note(std::string("the checks threw: ") + what);
  }
}

// --- The test thread's side -------------------------------------------------------------------

bool action_documented(Col col, Outcome o, bool multi) {
  switch (col) {
    case Col::acquire:
      return o == Outcome::ok || o == Outcome::timeout || o == Outcome::closed ||
             o == Outcome::cancelled || (multi && o == Outcome::no_healthy_host);
    case Col::try_acquire:
      return o == Outcome::ok || o == Outcome::empty || o == Outcome::closed ||
             (multi && o == Outcome::no_healthy_host);
    default:
      return o == Outcome::ok;
  }
}

/// The test's own call that ran the callback: it succeeds, or finds the pool the callback
/// closed or destroyed closed.
bool trigger_documented(Kind kind, Row row, Col col, Outcome o) {
  if (row == Row::keepalive_maint || row == Row::on_leak || row == Row::role_recheck) {
    return o == Outcome::none;  // the maintenance (or recheck) thread runs the callback
  }
  if (dropping(row)) {
    return o == Outcome::none;  // a dropped Resumption never resumes the coroutine
  }
  if (row == Row::schedule_timer || row == Row::resumed_timer) {
    // The wait that the timer thread ended. AsyncMultiHostPool's own acquire outlives its host's
    // wait: when schedule() destroyed the pool before resuming it, it ends with PoolClosed, as
    // every acquire in flight when the destructor runs does.
    return o == Outcome::timeout ||
           (async_kind(kind) && multi_kind(kind) && col == Col::destroy && o == Outcome::closed);
  }
  return o == Outcome::ok || ((col == Col::close || col == Col::destroy) && o == Outcome::closed);
}

template <class Pool>
void run_cell(Kind kind, Row row, Col col) {
  using C = Cell<Pool>;
  auto cell = std::make_shared<C>(kind, row, col);
  cell->build();
  std::thread driver([cell] {
    cell->driver_id.store(std::this_thread::get_id());
    drive(*cell);
    cell->driver_done.store(true);
  });
  if (!connpool_test::eventually([&] { return cell->driver_done.load(); }, kDriverBound)) {
    // A deadlock: the driver (which keeps the cell alive) is stuck in the pool for good.
    driver.detach();
    const std::string where = cell->phase.load();
    INFO("hung in phase: " << where << "; notes: " << cell->text(cell->problem));
    FAIL("deadlock: the cell did not finish within 90 s");
    return;
  }
  driver.join();
  C& c = *cell;
  const After& a = c.after;
  const Outcome action = c.action.load();
  const Outcome trigger = c.trigger.load();
  const std::string action_what = c.text(c.action_what);
  const std::string trigger_what = c.text(c.trigger_what);
  const std::string problem = c.text(c.problem);
  if (env_flag("CONNPOOL_REENTRANCY_VERBOSE")) {
    std::printf("%-18s %-16s %-12s trigger=%-14s action=%-14s%s%s%s\n", name(kind), name(row),
                name(col), name(trigger), name(action), action_what.empty() ? "" : " (",
                action_what.c_str(), action_what.empty() ? "" : ")");
    std::fflush(stdout);
  }
  INFO("action: " << name(action) << " " << action_what);
  INFO("trigger: " << name(trigger) << " " << trigger_what);
  INFO("notes: " << problem);
  CHECK(problem.empty());
  CHECK(c.fired.load() == 1);
  CHECK(action_documented(col, action, C::multi));
  CHECK(trigger_documented(kind, row, col, trigger));
  CHECK(c.spawned.errors().empty());
  CHECK(c.state.double_holds.load() == 0);
  CHECK(c.state.double_closes.load() == 0);
  CHECK(c.state.used_closed.load() == 0);
  if (!c.destroyed.load()) {
    INFO("in_use " << a.gauges.in_use << ", idle " << a.gauges.idle << ", pending "
                   << a.gauges.pending << ", live " << a.live << ", held by the test " << a.held);
    CHECK(a.quiet);
    if (c.closed.load()) {
      CHECK(a.acquire_closed == Outcome::closed);
    } else {
      INFO("serving max_size " << a.to_serve << ": " << a.serve_error);
      CHECK(a.served == a.to_serve);
      CHECK(a.distinct == a.served);
    }
  }
  INFO("factory copies left " << a.factories_left << ", connections open " << a.live_left);
  CHECK(a.freed);
}

template <class Pool>
void matrix_cell(Kind kind, Row row, Col col) {
  const char* pool_name = name(kind);
  const char* row_name = name(row);
  const char* col_name = name(col);
  CAPTURE(pool_name, row_name, col_name);
  if (!selected(kind, row, col)) {
    return;
  }
  if (const char* why = not_applicable(kind, row, col)) {
    SUCCEED(std::string("not applicable: ") + why);
    return;
  }
  if (row == Row::async_factory) {
    if constexpr (is_async_v<Pool> && !is_multi_v<Pool>) {
      run_cell<AsyncTaskPool>(kind, row, col);
    }
  } else {
    run_cell<Pool>(kind, row, col);
  }
}

#define CONNPOOL_REENTRANCY_ROWS                                                             \
  Row::factory, Row::async_factory, Row::ping_validate, Row::keepalive_prune,                \
      Row::keepalive_maint, Row::reset, Row::close, Row::on_create, Row::on_acquire,         \
      Row::on_release, Row::on_close, Row::on_leak, Row::schedule, Row::schedule_timer,      \
      Row::dropped, Row::dropped_timer, Row::resumed, Row::resumed_timer, Row::role_connect, \
      Row::role_recheck, Row::schedule_recheck, Row::dropped_recheck, Row::resumed_recheck
#define CONNPOOL_REENTRANCY_COLS                                                         \
  Col::acquire, Col::try_acquire, Col::release, Col::invalidate, Col::close, Col::prune, \
      Col::set_max_size, Col::destroy

}  // namespace

TEST_CASE("ConnectionPool: user code inside the pool may re-enter it", "[reentrancy][lifetime]") {
  const Row row = GENERATE(CONNPOOL_REENTRANCY_ROWS);
  const Col col = GENERATE(CONNPOOL_REENTRANCY_COLS);
  matrix_cell<SyncPool>(Kind::sync, row, col);
}

TEST_CASE("AsyncConnectionPool (inline scheduler): user code inside the pool may re-enter it",
          "[reentrancy][lifetime][async]") {
  const Row row = GENERATE(CONNPOOL_REENTRANCY_ROWS);
  const Col col = GENERATE(CONNPOOL_REENTRANCY_COLS);
  matrix_cell<AsyncPool>(Kind::async_inline, row, col);
}

TEST_CASE("AsyncConnectionPool (deferring scheduler): user code inside the pool may re-enter it",
          "[reentrancy][lifetime][async]") {
  const Row row = GENERATE(CONNPOOL_REENTRANCY_ROWS);
  const Col col = GENERATE(CONNPOOL_REENTRANCY_COLS);
  matrix_cell<AsyncPool>(Kind::async_loop, row, col);
}

TEST_CASE("MultiHostPool: user code inside a host's pool may re-enter the multi-host pool",
          "[reentrancy][lifetime][multi-host]") {
  const Row row = GENERATE(CONNPOOL_REENTRANCY_ROWS);
  const Col col = GENERATE(CONNPOOL_REENTRANCY_COLS);
  matrix_cell<MultiPool>(Kind::multi, row, col);
}

TEST_CASE("AsyncMultiHostPool (inline scheduler): user code inside the pool may re-enter it",
          "[reentrancy][lifetime][async][multi-host]") {
  const Row row = GENERATE(CONNPOOL_REENTRANCY_ROWS);
  const Col col = GENERATE(CONNPOOL_REENTRANCY_COLS);
  matrix_cell<AsyncMultiPool>(Kind::async_multi_inline, row, col);
}

TEST_CASE("AsyncMultiHostPool (deferring scheduler): user code inside the pool may re-enter it",
          "[reentrancy][lifetime][async][multi-host]") {
  const Row row = GENERATE(CONNPOOL_REENTRANCY_ROWS);
  const Col col = GENERATE(CONNPOOL_REENTRANCY_COLS);
  matrix_cell<AsyncMultiPool>(Kind::async_multi_loop, row, col);
}
