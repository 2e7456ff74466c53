// connpool - AsyncConnectionPool, the coroutine pool
// SPDX-License-Identifier: MIT
#pragma once

// AsyncConnectionPool<Conn, Factory, Clock>: `co_await pool.acquire()` on the same core as the
// synchronous ConnectionPool (detail/pool_core.hpp), so both kinds of caller share one FIFO, one
// PoolOptions, one PoolStats and one PooledHandle<Conn>. Also the Scheduler concept and
// InlineScheduler. Task<T>, for asynchronous factories, is in task.hpp; the Asio adapter in
// asio.hpp.

#include <atomic>
#include <chrono>
#include <concepts>
#include <coroutine>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <type_traits>
#include <utility>
#include <vector>

#include <connpool/concepts.hpp>
#include <connpool/detail/async_ops.hpp>
#include <connpool/detail/awaitable.hpp>
#include <connpool/detail/maintenance.hpp>
#include <connpool/detail/pool_core.hpp>
#include <connpool/errors.hpp>
#include <connpool/handle.hpp>
#include <connpool/options.hpp>
#include <connpool/pool.hpp>
#include <connpool/stats.hpp>
#include <connpool/task.hpp>

namespace connpool {

/// A coroutine's resumption, handed to a Scheduler that takes one: `std::move(r).resume()` (or
/// `r()`) resumes the coroutine, once; destroying `r` without having run it *drops* it.
///
/// For schedulers that may destroy queued work without running it, as an event loop does when it
/// shuts down (Asio's io_context destroys its queued handlers unrun). A Resumption from an
/// AsyncConnectionPool that is dropped ends the acquire without resuming its coroutine: what the
/// wait got goes back to the pool (a connection returns to it, or to the next waiter; a unit of
/// capacity to create one is given up; an error is discarded), on the thread that drops it, and
/// the coroutine that awaited the acquire stays suspended until its owner destroys it (destroying
/// it is safe). Dropping is safe on any thread, at any time, even after the pool is gone, and
/// leaks nothing.
///
/// Move-only; two pointers; allocates nothing. A moved-from (or default-constructed) Resumption is
/// empty: it must not be resumed, and destroying it does nothing.
class Resumption {
 public:
  /// What dropping does with the coroutine, instead of resuming it. Must not throw.
  using drop_function = void (*)(std::coroutine_handle<> coroutine) noexcept;

  Resumption() noexcept = default;

  /// Resumes `coroutine` when run; calls `drop(coroutine)` if destroyed without having run.
  Resumption(std::coroutine_handle<> coroutine, drop_function drop) noexcept
      : coroutine_(coroutine), drop_(drop) {}

  Resumption(Resumption&& other) noexcept
      : coroutine_(std::exchange(other.coroutine_, nullptr)), drop_(other.drop_) {}

  /// Drops the resumption this one held, if it held one, and takes `other`'s.
  Resumption& operator=(Resumption&& other) noexcept {
    if (this != &other) {
      reset();
      coroutine_ = std::exchange(other.coroutine_, nullptr);
      drop_ = other.drop_;
    }
    return *this;
  }

  Resumption(const Resumption&) = delete;
  Resumption& operator=(const Resumption&) = delete;

  /// Drops the resumption if it has not run (see the class comment).
  ~Resumption() { reset(); }

  /// Resumes the coroutine, on this thread; the Resumption is empty afterwards.
  /// Precondition: not empty.
  void resume() && { std::exchange(coroutine_, nullptr).resume(); }

  /// The same as `std::move(*this).resume()`: a Resumption is a handler of its own.
  void operator()() { std::move(*this).resume(); }

  /// Drops the resumption now if it has not run; the Resumption is empty afterwards.
  void reset() noexcept {
    if (coroutine_) {
      drop_(std::exchange(coroutine_, nullptr));
    }
  }

  /// Gives up the guarantee: returns the coroutine, which the caller must now resume exactly
  /// once; the Resumption is empty afterwards. Null if it was empty.
  [[nodiscard]] std::coroutine_handle<> release() && noexcept {
    return std::exchange(coroutine_, nullptr);
  }

  /// Whether it holds a resumption that has not run.
  explicit operator bool() const noexcept { return static_cast<bool>(coroutine_); }

 private:
  std::coroutine_handle<> coroutine_;
  drop_function drop_ = nullptr;
};

/// Where an AsyncConnectionPool resumes a coroutine whose wait ended: any type with
/// `schedule(connpool::Resumption)` or `schedule(std::coroutine_handle<>)` (the first when it
/// has both). Must not throw.
///
/// `schedule(std::coroutine_handle<>)` must eventually resume the handle exactly once (on any
/// thread). `schedule(connpool::Resumption)` must eventually run the Resumption or destroy it
/// unrun (on any thread); a scheduler that may destroy queued work without running it (an event
/// loop shutting down) should take a Resumption: destroying it unrun gives back what the wait got
/// and leaks nothing, where a coroutine_handle that is never resumed leaks the acquire, its
/// connection and its frame.
template <class S>
concept Scheduler = std::move_constructible<S> &&(
    requires(S& s, Resumption r) { s.schedule(std::move(r)); } ||
    requires(S & s, std::coroutine_handle<> h) { s.schedule(h); });

/// The default Scheduler: resumes the coroutine at once, on the thread that ended its wait.
///
/// That thread is the one that released the connection (inside PooledHandle's release or
/// destructor), that closed the pool, or, on a timeout, the pool's timer thread. The resumed
/// coroutine runs there until it next suspends, after the pool's lock was released and the
/// releaser's own work in the pool is done. Use a scheduler of your event loop (or the Asio
/// adapter) if coroutines must stay on their own threads. In particular, a coroutine resumed
/// on the timer thread holds it until it suspends, and the pool's other deadlines wait
/// meanwhile: coroutines that run long without suspending need a scheduler.
struct InlineScheduler {
  void schedule(std::coroutine_handle<> h) const { h.resume(); }
};

/// A factory for an AsyncConnectionPool: called with no arguments or with a `const Deadline&`
/// (as for ConnectionPool), it returns a `C` (a synchronous factory), or an awaitable whose
/// result converts to `C` (for example a Task<C>).
template <class F, class C>
concept AsyncConnectionFactory = std::convertible_to<detail::factory_result_t<F>, C> ||
    (Awaitable<detail::factory_result_t<F>>&&
         std::convertible_to<detail::await_result_t<detail::factory_result_t<F>>, C>);

namespace detail {

/// The connection type an asynchronous factory `F` makes.
template <class F>
struct async_factory_conn {
  using type = std::decay_t<factory_result_t<F>>;
};
template <class F>
requires Awaitable<factory_result_t<F>>
struct async_factory_conn<F> {
  using type = std::decay_t<await_result_t<factory_result_t<F>>>;
};
template <class F>
using async_factory_conn_t = typename async_factory_conn<F>::type;

/// Whether the Scheduler `S` takes a Resumption (else a coroutine_handle).
template <class S>
concept ResumptionScheduler = requires(S& s, Resumption r) {
  s.schedule(std::move(r));
};

/// A Scheduler behind one type. Copies share the scheduler, so that an operation completed
/// after its pool is gone still finds it.
class AnyScheduler {
 public:
  AnyScheduler() = default;

  // The first test keeps the copy constructor from being checked against Scheduler itself.
  template <class S>
  requires(!std::is_same_v<S, AnyScheduler> && Scheduler<S>) explicit AnyScheduler(S scheduler)
      : self_(std::make_shared<S>(std::move(scheduler))), schedule_(&call<S>) {}

  /// Hands `r` to the scheduler: as it is if it takes a Resumption, else its coroutine (which the
  /// scheduler then resumes, never drops).
  void schedule(Resumption&& r) const noexcept { schedule_(self_.get(), std::move(r)); }

 private:
  template <class S>
  static void call(void* self, Resumption&& r) noexcept {
    // noexcept: a scheduler that throws terminates
    if constexpr (ResumptionScheduler<S>) {
      static_cast<S*>(self)->schedule(std::move(r));
    } else {
      static_cast<S*>(self)->schedule(std::move(r).release());
    }
  }

  std::shared_ptr<void> self_;
  void (*schedule_)(void*, Resumption&&) noexcept = nullptr;
};

/// Where an acquire's driver coroutine stands, in the race between its end and the
/// destruction of the coroutine that awaits it (see AcquireDriver).
enum class DriverPhase : int {
  running,    // suspended or running; the awaiting coroutine waits for it
  finished,   // it ended: it resumes (or resumed) the awaiting coroutine
  abandoned,  // the awaiting coroutine is gone: it cleans up and frees itself when it ends
  dropped,    // its resumption was dropped: it ended, gave back what it got, and resumes nobody;
              // the awaiting coroutine's operation frees it
};

/// The coroutine behind an acquire that has to wait or to create asynchronously: started by the
/// acquire's await_suspend, it transfers to the awaiting coroutine when it ends.
///
/// Its frame holds everything the wait needs (`State`, a base of its promise), so that the wait
/// does not depend on the awaiting coroutine's frame: when that one is destroyed while suspended,
/// the driver is abandoned, and if the pool has already decided its wait (its resumption is queued
/// in a scheduler, say), it runs to its end later, gives back what it got, and frees itself
/// without resuming anyone.
///
/// Its resumption may also be dropped (a Resumption destroyed unrun, see drop()): it then runs to
/// its end at once, on the dropping thread, as if abandoned, and gives back what it got
/// (`State::discard_outcome()`), but does not resume the awaiting coroutine, which stays
/// suspended; it frees itself if it was abandoned too, else it is left to its owner (phase
/// dropped).
template <class State>
class AcquireDriver {
 public:
  struct promise_type : State {
    std::coroutine_handle<> continuation;
    std::atomic<DriverPhase> phase{DriverPhase::running};
    // Its resumption was dropped. Set before the drop resumes it, by the thread that drops it,
    // and read only by the driver's body after that: no other thread touches it.
    bool dropped = false;

    AcquireDriver get_return_object() noexcept {
      return AcquireDriver(std::coroutine_handle<promise_type>::from_promise(*this));
    }
    std::suspend_always initial_suspend() noexcept { return {}; }
    auto final_suspend() noexcept {
      struct Final {
        bool await_ready() noexcept { return false; }
        std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) noexcept {
          promise_type& p = h.promise();
          if (p.dropped) {
            // Nobody takes the outcome up: a connection goes back to the pool now (perhaps to the
            // next waiter), not when the awaiting coroutine's frame is destroyed, which may be
            // never. Before the exchange: afterwards the frame may be freed by its owner.
            p.discard_outcome();
            if (p.phase.exchange(DriverPhase::dropped, std::memory_order_acq_rel) ==
                DriverPhase::abandoned) {
              h.destroy();
            }
            return std::noop_coroutine();
          }
          if (p.phase.exchange(DriverPhase::finished, std::memory_order_acq_rel) ==
              DriverPhase::abandoned) {
            h.destroy();  // nobody awaits it: the handle it may hold gives its connection back
            return std::noop_coroutine();
          }
          return p.continuation;  // symmetric transfer to the awaiting coroutine
        }
        void await_resume() noexcept {}
      };
      return Final{};
    }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }  // the body catches everything

    /// Whether it has to give up: abandoned, or its resumption dropped.
    [[nodiscard]] bool abandoned() const noexcept {
      return dropped || phase.load(std::memory_order_acquire) == DriverPhase::abandoned;
    }
  };

  /// The drop function of the driver's Resumptions: marks the driver dropped and resumes it here,
  /// so that it ends at once without resuming the awaiting coroutine (see the class comment).
  static void drop(std::coroutine_handle<> driver) noexcept {
    const auto h = std::coroutine_handle<promise_type>::from_address(driver.address());
    h.promise().dropped = true;
    h.resume();
  }

  AcquireDriver() = default;
  AcquireDriver(AcquireDriver&& other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
  AcquireDriver& operator=(AcquireDriver&& other) noexcept {
    if (this != &other) {
      destroy();
      h_ = std::exchange(other.h_, nullptr);
    }
    return *this;
  }
  AcquireDriver(const AcquireDriver&) = delete;
  AcquireDriver& operator=(const AcquireDriver&) = delete;
  ~AcquireDriver() { destroy(); }

  explicit operator bool() const noexcept { return static_cast<bool>(h_); }
  [[nodiscard]] promise_type& promise() const noexcept { return h_.promise(); }
  [[nodiscard]] std::coroutine_handle<> handle() const noexcept { return h_; }

  /// Lets go of the frame without destroying it: it frees itself (abandoned).
  void release() noexcept { h_ = nullptr; }

  /// Destroys the frame now (suspended, or finished).
  void destroy() noexcept {
    if (h_) {
      std::exchange(h_, nullptr).destroy();
    }
  }

 private:
  explicit AcquireDriver(std::coroutine_handle<promise_type> h) : h_(h) {}

  std::coroutine_handle<promise_type> h_;
};

/// `co_await ThisPromise<P>{}` in a coroutine whose promise is `P`: a reference to it, without
/// suspending.
template <class P>
struct ThisPromise {
  P* promise = nullptr;
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<P> h) noexcept {
    promise = &h.promise();
    return false;
  }
  P& await_resume() const noexcept { return *promise; }
};

}  // namespace detail

/// A connection pool for coroutines: `co_await pool.acquire()` yields a PooledHandle<Conn>.
///
/// The same pool as ConnectionPool (the same core, options, statistics and handle), with
/// waiting done by suspending instead of blocking: LIFO reuse, creation below max_size, FIFO
/// waiters under the same wait policy, validation, lifetimes, maintenance and
/// close behave as DESIGN.md describes for ConnectionPool. Coroutines and threads that call a
/// ConnectionPool-style blocking acquire can wait on one pool; a release serves the oldest
/// waiter of either kind. Timeouts of suspended coroutines are ended by one timer thread per
/// pool, within a few milliseconds of their deadline (plus the scheduler's latency): there is no
/// thread or timer per waiter.
///
/// The factory may return a Conn, or an awaitable of one (a Task<Conn>, say). An acquire awaits
/// it without blocking. Warm-up (min_size) and the maintenance thread's refill cannot suspend,
/// so they drive an awaitable factory to completion on their own thread (detail::sync_wait):
/// such a factory must not need that thread to make progress (a Task that awaits a socket of
/// an event loop run by other threads is fine; one that needs the constructing thread's own
/// loop deadlocks the constructor).
///
/// Thread safety: all member functions may be called concurrently, from coroutines and
/// threads. A PooledHandle may not be shared between threads without synchronisation.
/// Lifetime: handles may outlive the pool (releasing one then closes the connection), and so
/// may acquires in flight: close() or the destructor ends their waits with PoolClosed, through
/// the scheduler. A coroutine suspended in an acquire may be destroyed (see acquire()).
///
/// Example:
///     connpool::AsyncConnectionPool pool{[]() -> connpool::Task<Db> { co_return co_await
///                                        Db::connect_async(url); },
///                                        connpool::PoolOptions{.max_size = 8}};
///     connpool::Task<int> count_users() {
///       auto db = co_await pool.acquire(250ms);
///       co_return co_await db->query_count("users");
///     }
template <class Conn, class Factory, class Clock = std::chrono::steady_clock>
requires Connection<Conn> && AsyncConnectionFactory<Factory, Conn> && detail::PoolClock<Clock>
class AsyncConnectionPool {
  using Core = detail::PoolCore<Conn, Factory, Clock>;
  using WaitClock = std::chrono::steady_clock;
  static constexpr bool async_factory =
      !std::convertible_to<detail::factory_result_t<Factory>, Conn>;

  template <bool Try>
  class Operation;

 public:
  using connection_type = Conn;
  using factory_type = Factory;
  using clock_type = Clock;
  using handle_type = PooledHandle<Conn>;
  /// What `acquire()` returns: co_await it once for a PooledHandle<Conn>.
  using acquire_operation = Operation<false>;
  /// What `try_acquire()` returns: co_await it once for a std::optional<PooledHandle<Conn>>.
  using try_acquire_operation = Operation<true>;

  /// Validates `options`, opens min_size connections (DESIGN 1) and starts the timer thread
  /// (and the maintenance thread when health_check_interval > 0). Coroutines resume inline
  /// (InlineScheduler).
  ///
  /// Throws: std::invalid_argument naming the bad field; with fail_fast, the factory's first
  /// exception.
  explicit AsyncConnectionPool(Factory factory, PoolOptions options = {})
      : AsyncConnectionPool(std::move(factory), options, InlineScheduler{}) {}

  /// As above; coroutines whose wait ended are resumed through `scheduler` (taken by value; to
  /// share one, pass a pointer-like wrapper or a cheap handle such as an executor). A scheduler
  /// that may destroy queued work unrun should take a Resumption (see Scheduler).
  template <Scheduler S>
  AsyncConnectionPool(Factory factory, PoolOptions options, S scheduler)
      : scheduler_(std::move(scheduler)), core_(make_core(std::move(factory), options)) {}

  AsyncConnectionPool(const AsyncConnectionPool&) = delete;
  AsyncConnectionPool& operator=(const AsyncConnectionPool&) = delete;
  AsyncConnectionPool(AsyncConnectionPool&&) = delete;
  AsyncConnectionPool& operator=(AsyncConnectionPool&&) = delete;

  /// close(), then lets go of the shared state (the last outstanding handle frees it).
  ~AsyncConnectionPool() { core_->release_owner(); }

  /// Borrows a connection, waiting up to options().acquire_timeout: `co_await pool.acquire()`.
  ///
  /// Lazy: nothing happens until the co_await. When a connection is idle (or can be created by a
  /// synchronous factory), the co_await completes without suspending. Otherwise the coroutine
  /// suspends, no thread blocks, and it is resumed through the scheduler when a connection is
  /// handed to it, when its deadline passes, or when the pool closes.
  ///
  /// Throws (at the co_await): AcquireTimeout, PoolClosed, the factory's exception
  /// (unchanged), std::logic_error if the same operation is awaited twice.
  /// Resumes on: the awaiting thread when it did not suspend; otherwise wherever the scheduler
  /// resumes it (InlineScheduler: the thread that released the connection, closed the pool, or
  /// the pool's timer thread on a timeout; with an asynchronous factory, the thread on which the
  /// factory's awaitable completed).
  /// Lifetime: a coroutine suspended here may be destroyed: its wait leaves the queue (or, if
  /// the wait already ended and the resumption is queued in the scheduler, what it was given
  /// goes back to the pool when that resumption runs or is dropped), and nothing is resumed. A
  /// scheduler that takes a Resumption may drop it (destroy it unrun, as an Asio io_context
  /// destroyed with it queued does): what the wait got goes back to the pool at once, and the
  /// coroutine is never resumed here; it may still be destroyed.
  ///
  /// `site`, left to its default, is the caller's location: recorded for leak reports and
  /// in_use_report() when leak_threshold is set (the same for every acquire below).
  [[nodiscard]] acquire_operation acquire(call_site site = call_site::current()) {
    return acquire_operation(this, detail::to_wait_duration(core_->options().acquire_timeout), {},
                             site);
  }

  /// As acquire(), waiting up to `timeout` (0 = fail at once rather than wait).
  ///
  /// Throws: std::invalid_argument (here, not at the co_await) if `timeout` is negative.
  template <class Rep, class Period>
  [[nodiscard]] acquire_operation acquire(std::chrono::duration<Rep, Period> timeout,
                                          call_site site = call_site::current()) {
    return acquire_operation(this, detail::to_wait_duration(timeout), {}, site);
  }

  /// As acquire(timeout), and a stop request on `stop` ends the wait with AcquireCancelled.
  /// A connection available without waiting is returned even if stop was already requested.
  template <class Rep, class Period>
  [[nodiscard]] acquire_operation acquire(std::chrono::duration<Rep, Period> timeout,
                                          std::stop_token stop,
                                          call_site site = call_site::current()) {
    return acquire_operation(this, detail::to_wait_duration(timeout), std::move(stop), site);
  }

  /// Borrows a connection for a caller that is not a coroutine, blocking this thread up to
  /// options().acquire_timeout; it waits in the same FIFO queue as the suspended coroutines.
  /// With an asynchronous factory, a creation is driven to completion on this thread.
  ///
  /// Throws: AcquireTimeout, PoolClosed, or the factory's exception (unchanged).
  [[nodiscard]] PooledHandle<Conn> acquire_blocking(call_site site = call_site::current()) {
    core_->note_site(site);
    return *core_->acquire(detail::to_wait_duration(core_->options().acquire_timeout), nullptr);
  }

  /// As acquire_blocking(), waiting up to `timeout`.
  template <class Rep, class Period>
  [[nodiscard]] PooledHandle<Conn> acquire_blocking(std::chrono::duration<Rep, Period> timeout,
                                                    call_site site = call_site::current()) {
    core_->note_site(site);
    return *core_->acquire(detail::to_wait_duration(timeout), nullptr);
  }

  /// As acquire_blocking(timeout); a stop request on `stop` ends the wait with AcquireCancelled.
  template <class Rep, class Period>
  [[nodiscard]] PooledHandle<Conn> acquire_blocking(std::chrono::duration<Rep, Period> timeout,
                                                    std::stop_token stop,
                                                    call_site site = call_site::current()) {
    core_->note_site(site);
    return *core_->acquire(detail::to_wait_duration(timeout), &stop);
  }

  /// Borrows an idle connection, or creates one below max_size; never waits for another
  /// holder: `co_await pool.try_acquire()` yields nullopt when the pool is exhausted. Suspends
  /// only to await an asynchronous factory.
  ///
  /// Throws (at the co_await): PoolClosed; the factory's exception (unchanged).
  [[nodiscard]] try_acquire_operation try_acquire(call_site site = call_site::current()) {
    return try_acquire_operation(this, std::nullopt, {}, site);
  }

  /// A snapshot of the counters and gauges; `pending` counts waiting threads and coroutines.
  [[nodiscard]] PoolStats stats() const { return core_->stats(); }

  /// As ConnectionPool::in_use_report().
  [[nodiscard]] std::vector<InUseConnection> in_use_report() const {
    return core_->in_use_report();
  }

  /// As ConnectionPool::health(), blocking this thread up to `timeout` for its acquire (as
  /// acquire_blocking()): for a probe served by a thread of its own.
  ///
  /// Throws: std::invalid_argument if `timeout` is negative.
  template <class Rep, class Period>
  [[nodiscard]] HealthReport health(std::chrono::duration<Rep, Period> timeout) {
    const auto wait = detail::to_wait_duration(timeout);
    return core_->health_report(detail::health_probe([&] { (void)core_->acquire(wait, nullptr); }));
  }

  /// One maintenance pass now: closes expired idle connections and refills to min_size (an
  /// asynchronous factory is driven to completion on this thread). Returns how many it closed.
  std::size_t prune() { return core_->prune(); }

  /// Changes max_size without a restart: growing serves waiters at once; shrinking closes
  /// surplus idle connections now and surplus in-use ones as they come back. stats().max_size
  /// reports the bound in force (options() keeps the constructor's values).
  ///
  /// Throws: std::invalid_argument if `n` is 0 or below the min_size in force.
  void set_max_size(std::size_t n) { core_->set_max_size(n); }

  /// Changes min_size without a restart; raising it opens connections now, on this thread.
  ///
  /// Throws: std::invalid_argument if `n` exceeds the max_size in force.
  void set_min_size(std::size_t n) { core_->set_min_size(n); }

  /// Closes every connection open now as soon as it is idle (the idle ones at once, those in
  /// use when they come back), without stopping service, then refills to min_size: after a
  /// credentials rotation or a failover. Returns how many it closed at once.
  std::size_t evict_all() { return core_->evict_all(); }

  /// Replaces the factory for every connect that starts from now on, as
  /// ConnectionPool::set_factory(); a connect suspended in the old one finishes with it.
  ///
  /// Throws: std::bad_alloc, with nothing changed.
  void set_factory(Factory factory) { core_->set_factory(std::move(factory)); }

  /// For a failover, as ConnectionPool::clear(): suspended acquires end with PoolCleared.
  std::size_t clear() { return core_->clear(); }

  /// Stops handing out connections until resume(), as ConnectionPool::pause(): acquires stay
  /// suspended (within their timeout, then AcquireTimeout saying the pool is paused).
  void pause() noexcept { core_->pause(); }

  /// Ends pause(): the suspended acquires are served at once, oldest first (their coroutines are
  /// resumed through the scheduler). Idempotent.
  void resume() noexcept { core_->resume(); }

  /// As ConnectionPool::drain(), without blocking a thread: `co_await pool.drain(timeout)`.
  /// Pauses the pool and closes its idle connections at once; the coroutine is then resumed
  /// through the scheduler with true when no connection is open any more (each in use is
  /// closed as it comes back), or with false when `timeout` passes first or the pool is closed
  /// meanwhile. The pool stays paused until resume().
  ///
  /// Lazy: nothing happens until the co_await. Resumes on: the awaiting thread when nothing was
  /// in use; otherwise through the scheduler (InlineScheduler: the thread that gave back the
  /// last connection, the timer thread at the deadline, or the thread that closed the pool).
  /// Lifetime: the returned Task keeps the pool's shared state alive; the coroutine may be
  /// destroyed while it waits (its drain is withdrawn, the pool stays paused).
  [[nodiscard]] Task<bool> drain(std::chrono::milliseconds timeout) {
    return drain_task(typename Core::CoreRef(core_), scheduler_, timeout);
  }

  /// Whether the pool is paused.
  [[nodiscard]] bool paused() const noexcept { return core_->paused(); }

  /// Closes the pool (DESIGN 7): suspended acquires end with PoolClosed, through the
  /// scheduler. Idempotent; the destructor calls it.
  void close() noexcept { core_->close(); }

  [[nodiscard]] const PoolOptions& options() const noexcept { return core_->options(); }

 private:
  using WaiterT = typename Core::WaiterT;
  using SlotT = typename Core::SlotT;
  using CoreRef = typename Core::CoreRef;
  using Reservation = typename Core::Reservation;

  /// What an acquire that suspends keeps in its driver's frame (see detail::AcquireDriver).
  struct DriveState {
    /// The pool's waiter, with the way back to this state.
    struct Waiter : WaiterT {
      DriveState* state = nullptr;
    };

    CoreRef core;  // the pool's shared state, kept alive while the acquire is in flight
    detail::AnyScheduler scheduler;  // the pool's: resumes the driver when its wait ends
    std::optional<WaitClock::duration> timeout;  // nullopt: try_acquire
    std::optional<WaitClock::time_point> deadline;
    std::stop_token stop;
    call_site site;         // the caller's (leak_threshold): noted again where it checks out
    Reservation capacity;   // a unit of capacity with a connect permit: must create
    bool try_only = false;  // try_acquire: never queues
    std::optional<PooledHandle<Conn>> result;
    std::exception_ptr error;
    std::coroutine_handle<> self;  // the driver, for the completion
    Waiter waiter;

    /// The driver's resumption was dropped: nobody takes the outcome up. The connection goes
    /// back to the pool.
    void discard_outcome() noexcept {
      result.reset();
      error = nullptr;
    }
  };
  using Driver = detail::AcquireDriver<DriveState>;
  using DrivePromise = typename Driver::promise_type;

  /// Ends a wait: resumes the driver through the scheduler, which may also drop the resumption
  /// (Driver::drop). Runs outside the pool's lock.
  static void on_complete(detail::Resumable* r) noexcept {
    DriveState* st = static_cast<typename DriveState::Waiter*>(static_cast<WaiterT*>(r))->state;
    // Copied: once resumed (or dropped), the driver (and the state in its frame) may be gone at
    // any moment.
    const detail::AnyScheduler scheduler = st->scheduler;
    scheduler.schedule(Resumption(st->self, &Driver::drop));
  }

  /// Suspends the driver in the pool's queue, unless enqueue_async() serves it at once.
  struct Wait {
    DriveState* st;
    bool await_ready() noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> driver) noexcept {
      st->self = driver;
      // Once queued, another thread may resume the driver before this returns: nothing of the
      // state is touched after the call.
      return st->core->enqueue_async(st->waiter, &AsyncConnectionPool::on_complete, st->deadline);
    }
    void await_resume() noexcept {}
  };

  struct Cancel {
    Core* core;
    WaiterT* waiter;
    void operator()() const noexcept { core->cancel_async(*waiter); }
  };

  /// The body of the driver: queues (or awaits an asynchronous factory) until it has a result
  /// or an error, in its promise. Abandoned (or dropped), it gives back what it holds and ends:
  /// a unit of capacity is given up, never used to create; a connection handed over is checked
  /// out as usual, and given back at the end (AcquireDriver's final suspension).
  CONNPOOL_CORO_NO_SANITIZE_FUNCTION static Driver drive() {
    DrivePromise& st = co_await detail::ThisPromise<DrivePromise>{};
    Core& core = *st.core.get();
    try {
      if (st.timeout) {
        st.deadline = WaitClock::now() + *st.timeout;
      }
      std::optional<std::stop_callback<Cancel>> cancel;
      for (bool first = true;; first = false) {
        if (st.abandoned()) {
          st.capacity.reset();
          co_return;
        }
        if (st.capacity.capacity()) {
          // Below max_size: create, outside the lock (DESIGN 3). A failure frees the place.
          core.note_site(st.site);  // this thread may not be the caller's
          if constexpr (!async_factory) {
            st.result = core.create_for_caller(std::move(st.capacity), st.waiter.waited);
          } else {
            SlotT* slot = nullptr;
            std::optional<Conn> conn;
            try {
              slot = core.begin_create();
              // The frame keeps the factory alive across the suspension, even if set_factory()
              // replaces it meanwhile.
              const std::shared_ptr<Factory> factory = core.factory();
              const Deadline deadline = core.connect_deadline();
              conn.emplace(co_await detail::call_factory(*factory, deadline));
              core.check_connect_time(deadline, *conn);
            } catch (...) {
              core.abort_create(slot, st.capacity);
              throw;
            }
            core.note_site(st.site);  // the factory may have resumed on another thread
            st.result = core.finish_create(slot, std::move(*conn), std::move(st.capacity),
                                           st.waiter.waited);
          }
          co_return;
        }
        if (st.try_only) {
          co_return;  // nothing idle, no room: nullopt
        }
        if (!first && st.stop.stop_requested()) {
          // Queueing again (its connection failed its check-out): a stop requested meanwhile.
          throw AcquireCancelled("connpool: acquire cancelled through its stop_token");
        }
        if (!cancel && st.stop.stop_possible()) {
          // Before queueing: a stop already requested marks the waiter cancelled at once.
          cancel.emplace(st.stop, Cancel{&core, &st.waiter});
        }
        st.waiter.state = &st;
        co_await Wait{&st};
        if (SlotT* slot = std::exchange(st.waiter.slot, nullptr)) {
          core.note_site(st.site);  // resumed wherever the scheduler runs it
          st.result = core.check_out_granted(slot, std::exchange(st.waiter.fresh, false),
                                             st.capacity, st.waiter.waited);
          if (st.result) {
            co_return;
          }
          // It failed validation: its place is ours, to connect when a permit is free.
          (void)core.permit_for(st.capacity);
        } else if (std::exchange(st.waiter.may_create, false)) {
          core.adopt_grant(st.capacity);
        } else {
          throw_outcome(st);
        }
      }
    } catch (...) {
      st.error = std::current_exception();
    }
  }

  [[noreturn]] static void throw_outcome(const DriveState& st) {
    const WaiterT& w = st.waiter;
    if (w.closed) {
      throw PoolClosed();
    }
    if (w.cleared) {
      throw PoolCleared();
    }
    if (w.cancelled) {
      throw AcquireCancelled("connpool: acquire cancelled through its stop_token");
    }
    if (w.overloaded) {
      detail::throw_failure(detail::Failure::overloaded, WaitClock::duration::zero(), w.snapshot);
    }
    if (w.unavailable) {
      detail::throw_unavailable(w.why_unavailable,
                                st.timeout.value_or(WaitClock::duration::zero()));
    }
    detail::throw_timeout(st.timeout.value_or(WaitClock::duration::zero()), w.snapshot);
  }

  /// The awaitable of acquire() (Try = false) and try_acquire() (Try = true).
  template <bool Try>
  class [[nodiscard]] Operation {
   public:
    Operation(const Operation&) = delete;
    Operation& operator=(const Operation&) = delete;
    Operation(Operation&&) = delete;
    Operation& operator=(Operation&&) = delete;

    /// After the await, frees the driver. Destroyed while its coroutine is suspended in it (the
    /// coroutine's frame was destroyed), abandons the wait (abandon()).
    ~Operation() { (void)abandon(); }

    /// Everything that needs no waiting: the fast path, an idle connection, or creation by a
    /// synchronous factory. Allocates nothing when a connection is idle.
    bool await_ready() {
      if (std::exchange(awaited_, true)) {
        throw std::logic_error("connpool: an acquire operation can be awaited once");
      }
      try {
        Reservation capacity;
        pool_->core_->note_site(site_);
        result_ = pool_->core_->acquire_nowait(capacity);
        if (result_) {
          return true;
        }
        if (capacity.capacity()) {
          if constexpr (!async_factory) {
            result_ = pool_->core_->create_for_caller(std::move(capacity));
            return true;
          } else {
            capacity_ = std::move(capacity);
            return false;  // the driver awaits the factory
          }
        }
        return Try;  // try_acquire: nothing idle and no room; acquire: queue
      } catch (...) {
        error_ = std::current_exception();
        return true;
      }
    }

    /// Starts the driver coroutine, which queues (or awaits an asynchronous factory) and
    /// transfers back to `caller` when it has a result.
    ///
    /// Throws: std::bad_alloc (allocating the driver's frame), at the co_await; a unit of
    /// capacity taken in await_ready() is given back first.
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> caller) {
      Core* core = pool_->core_;
      try {
        driver_ = drive();
      } catch (...) {
        capacity_.reset();
        throw;
      }
      DrivePromise& st = driver_.promise();
      st.core = CoreRef(core);
      st.scheduler = pool_->scheduler_;
      st.timeout = timeout_;
      st.stop = std::move(stop_);
      st.site = site_;
      st.capacity = std::move(capacity_);
      st.try_only = Try;
      st.continuation = caller;
      return driver_.handle();
    }

    auto await_resume() {
      if (driver_) {
        DrivePromise& st = driver_.promise();
        error_ = std::exchange(st.error, nullptr);
        result_ = std::move(st.result);
      }
      if (error_) {
        std::rethrow_exception(error_);
      }
      if constexpr (Try) {
        return std::move(result_);
      } else {
        return std::move(*result_);
      }
    }

    /// Abandons a wait that has not ended, because the coroutine awaiting this operation is
    /// being destroyed while suspended in it: the wait leaves the pool's queue, or, if the pool
    /// already decided it (its resumption queued in a scheduler, or an asynchronous factory at
    /// work), its driver gives back what it gets and frees itself. Either way nothing resumes
    /// the awaiting coroutine. Returns true if so, and also if the wait ended with its
    /// resumption dropped (nothing resumes the awaiting coroutine either; the driver is freed
    /// with this object); false if the wait had already ended otherwise (the awaiting coroutine
    /// is resumed, or is being resumed), or was never suspended.
    ///
    /// Thread safety: may race with the end of the wait on another thread; exactly one of them
    /// wins (an atomic exchange of the driver's phase).
    bool abandon() noexcept {
      if (!driver_) {
        return false;
      }
      DrivePromise& st = driver_.promise();
      const detail::DriverPhase phase = st.phase.load(std::memory_order_acquire);
      if (phase != detail::DriverPhase::running) {
        // Finished (the await completed) or dropped: the driver is freed with this object.
        return phase == detail::DriverPhase::dropped;
      }
      if (st.core->withdraw_async(st.waiter)) {
        // It waited in the queue: nothing will resume it, and it holds nothing to give back.
        st.phase.store(detail::DriverPhase::abandoned, std::memory_order_relaxed);
        driver_.destroy();
        return true;
      }
      detail::DriverPhase expected = detail::DriverPhase::running;
      if (!st.phase.compare_exchange_strong(expected, detail::DriverPhase::abandoned,
                                            std::memory_order_acq_rel)) {
        return expected == detail::DriverPhase::dropped;  // as above
      }
      driver_.release();  // it frees itself when it ends
      return true;
    }

   private:
    friend class AsyncConnectionPool;

    Operation(AsyncConnectionPool* pool,
              std::optional<WaitClock::duration> timeout,
              std::stop_token stop,
              call_site site)
        : pool_(pool), timeout_(timeout), stop_(std::move(stop)), site_(site) {}

    AsyncConnectionPool* pool_;                   // used until the driver starts, never after
    std::optional<WaitClock::duration> timeout_;  // nullopt: try_acquire
    std::stop_token stop_;
    call_site site_;  // the caller's, for leak reports
    bool awaited_ = false;
    // A unit of capacity (and a connect permit) await_ready() took: the driver must create.
    Reservation capacity_;
    std::optional<PooledHandle<Conn>> result_;
    std::exception_ptr error_;
    Driver driver_;  // owned until abandon() lets it free itself
  };

  static Core* make_core(Factory factory, const PoolOptions& options) {
    options.validate();
    Core* core = new Core(std::move(factory), options);
    try {
      core->warm_up();
      core->start_maintenance();
      core->start_timer();
    } catch (...) {
      core->release_owner();  // closes what warm-up opened; frees the core
      throw;
    }
    return core;
  }

  detail::AnyScheduler scheduler_;

  /// The node of an asynchronous drain, with what its completion needs: the coroutine and the
  /// scheduler to resume it through.
  struct DrainNode final : detail::DrainWaiter {
    std::coroutine_handle<> coroutine;
    detail::AnyScheduler scheduler;

    /// Run by the pool (Resumable::complete) once it has decided, outside its lock.
    static void run(detail::Resumable* self) noexcept {
      auto* n = static_cast<DrainNode*>(self);
      if (!n->abandoned.load(std::memory_order_acquire)) {
        // Nothing to give back if a scheduler drops it: the coroutine simply never resumes.
        n->scheduler.schedule(Resumption(n->coroutine, [](std::coroutine_handle<>) noexcept {}));
      }
      n->unref();  // the pool's share
    }
  };

  /// What drain() awaits: registers the node when it suspends, withdraws it if destroyed.
  struct DrainAwaiter {
    Core* core;
    detail::AnyScheduler scheduler;
    std::chrono::steady_clock::time_point until;
    DrainNode* node = nullptr;

    DrainAwaiter(Core* c, detail::AnyScheduler s, std::chrono::steady_clock::time_point u)
        : core(c), scheduler(std::move(s)), until(u) {}
    DrainAwaiter(const DrainAwaiter&) = delete;
    DrainAwaiter& operator=(const DrainAwaiter&) = delete;
    ~DrainAwaiter() {
      if (node != nullptr) {
        (void)core->cancel_async_drain(node);  // still waiting: withdrawn
        node->abandoned.store(true, std::memory_order_release);
        node->unref();  // this awaiter's share
      }
    }

    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) {
      node = new DrainNode();
      node->coroutine = h;
      node->scheduler = scheduler;
      node->until = until;
      node->complete = &DrainNode::run;
      return core->begin_async_drain(node);  // false: decided at once, go on without suspending
    }
    bool await_resume() noexcept {
      const bool result = node->result;
      node->unref();  // this awaiter's share
      node = nullptr;
      return result;
    }
  };

  CONNPOOL_CORO_NO_SANITIZE_FUNCTION static Task<bool> drain_task(
      typename Core::CoreRef core,
      detail::AnyScheduler scheduler,
      std::chrono::milliseconds timeout) {
    // The deadline counts from the co_await (Task is lazy), as the wait starts there.
    co_return co_await DrainAwaiter(core.get(), std::move(scheduler),
                                    std::chrono::steady_clock::now() + timeout);
  }
  Core* core_;  // owned; shared with outstanding handles (see detail::PoolCore)
};

template <class F>
AsyncConnectionPool(F) -> AsyncConnectionPool<detail::async_factory_conn_t<F>, F>;

template <class F>
AsyncConnectionPool(F, PoolOptions) -> AsyncConnectionPool<detail::async_factory_conn_t<F>, F>;

template <class F, class S>
AsyncConnectionPool(F, PoolOptions, S) -> AsyncConnectionPool<detail::async_factory_conn_t<F>, F>;

}  // namespace connpool
