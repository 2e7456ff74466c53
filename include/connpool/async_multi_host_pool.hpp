// connpool - AsyncMultiHostPool, the coroutine front of MultiHostPool
// SPDX-License-Identifier: MIT
#pragma once

// AsyncMultiHostPool<Conn, Factory, Host, Clock>: `co_await pool.acquire(route, timeout)` over
// one AsyncConnectionPool per host, with MultiHostPool's balancing, breakers, roles, routes and
// failover (it is a MultiHostPool of host pools of kind detail::AsyncHosts, and runs the same
// rounds: MultiHostPool::next_round()). Here: that kind, the front, its acquire operation and the
// driver coroutine that waits on a host's pool or for a role recheck. Lock rule: Life::mutex
// guards the driver's liveness handshake with the destructor only; no lock is held while user
// code runs or a coroutine resumes.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstddef>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <connpool/async_pool.hpp>
#include <connpool/concepts.hpp>
#include <connpool/detail/awaitable.hpp>
#include <connpool/detail/clock.hpp>
#include <connpool/detail/role_checker.hpp>
#include <connpool/detail/routing.hpp>
#include <connpool/detail/thread_annotations.hpp>
#include <connpool/errors.hpp>
#include <connpool/multi_host_handle.hpp>
#include <connpool/multi_host_options.hpp>
#include <connpool/multi_host_pool.hpp>

namespace connpool {

namespace detail {

/// The kind of host pool of an AsyncMultiHostPool (see SyncHosts): an AsyncConnectionPool per
/// host, resuming coroutines through the front's scheduler. The synchronous calls MultiHostPool
/// makes on a host pool (its rounds' phase 1, the role rechecks, the blocking forms) use the
/// pool's synchronous paths: MultiHostPool factories are synchronous, so a try_acquire never
/// suspends.
struct AsyncHosts {
  AnyScheduler scheduler;

  template <class Conn, class F, class Clock>
  struct pool : AsyncConnectionPool<Conn, F, Clock> {
    static_assert(std::convertible_to<factory_result_t<F>, Conn>,
                  "connpool: a MultiHostPool host factory is synchronous");

    pool(F factory, const PoolOptions& options, const AsyncHosts& kind)
        : AsyncConnectionPool<Conn, F, Clock>(std::move(factory), options, kind.scheduler) {}

    std::optional<PooledHandle<Conn>> try_now(const call_site& site) {
      auto op = this->try_acquire(site);
      (void)op.await_ready();  // always ready: with a synchronous factory nothing suspends
      return op.await_resume();
    }
    PooledHandle<Conn> wait_for(std::chrono::steady_clock::duration wait,
                                const std::stop_token* stop,
                                const call_site& site) {
      return stop != nullptr ? this->acquire_blocking(wait, *stop, site)
                             : this->acquire_blocking(wait, site);
    }
    bool drain_now(std::chrono::milliseconds timeout) { return sync_wait(this->drain(timeout)); }
  };
};

}  // namespace detail

/// A MultiHostPool for coroutines: `co_await pool.acquire(Route::primary, 250ms)` yields a
/// MultiHostHandle<Conn, Host>.
///
/// The same pool as MultiHostPool (options, balancing, circuit breakers, roles and routes,
/// failover between hosts, statistics, handles), with waiting done by suspending: each host has
/// an AsyncConnectionPool, and an acquire whose hosts are all busy suspends in the queue of the
/// least busy one, and one that finds no host of its route suspends until the next role recheck
/// (within its deadline), where MultiHostPool blocks. The factory is synchronous, called as
/// factory(host) or factory(host, deadline), as for MultiHostPool: an acquire that connects does
/// so on the awaiting thread, as AsyncConnectionPool does with a synchronous factory, and so do
/// the role and lag probes of a new connection.
///
/// Resumes on: the awaiting thread when nothing had to wait; otherwise wherever the scheduler
/// resumes it (InlineScheduler: the thread that released the connection, closed the pool, the
/// host pool's timer thread on a timeout, or the role recheck thread after a recheck).
/// Thread safety: all members may be called concurrently, except the destructor.
/// Lifetime: handles may outlive the pool, and so may acquires in flight: close() or the
/// destructor ends them with PoolClosed. A coroutine suspended in an acquire may be destroyed:
/// its wait leaves the host's queue (or the recheck's), and nothing is resumed or leaked. The
/// destructor waits for acquires that run pool code on other threads (a connect, say) to leave it.
/// Threads: one timer thread per host pool (its asynchronous deadlines), and the recheck thread
/// with role_probe set.
///
/// Example:
///     connpool::AsyncMultiHostPool pool{std::vector<std::string>{"db1", "db2"}, connect,
///         connpool::MultiHostOptions{.role_probe = [](Db& d) { return d.role(); }}};
///     connpool::Task<> write() {
///       auto h = co_await pool.acquire(connpool::Route::primary, 250ms);
///       h->exec("INSERT ...");
///     }
template <class Conn,
          class Factory,
          class Host = std::string,
          class Clock = std::chrono::steady_clock>
requires Connection<Conn> && detail::PoolClock<Clock> && HostName<Host>
class AsyncMultiHostPool : private MultiHostPool<Conn, Factory, Host, Clock, detail::AsyncHosts> {
  using Base = MultiHostPool<Conn, Factory, Host, Clock, detail::AsyncHosts>;
  using Entry = typename Base::Entry;
  using Search = typename Base::Search;
  using Round = typename Base::Round;
  using WaitOn = typename Base::WaitOn;
  using Attempt = typename Base::Attempt;
  using WaitClock = std::chrono::steady_clock;
  using HostPool = std::remove_cvref_t<decltype(std::declval<Entry&>().pool)>;
  using HostOp = typename HostPool::acquire_operation;

  template <bool Try>
  class Operation;

 public:
  using connection_type = Conn;
  using host_type = Host;
  using handle_type = MultiHostHandle<Conn, Host>;
  using stats_type = MultiHostStats<Host>;
  /// What acquire() returns: co_await it once for a handle_type.
  using acquire_operation = Operation<false>;
  /// What try_acquire() returns: co_await it once for a std::optional<handle_type>.
  using try_acquire_operation = Operation<true>;

  /// As MultiHostPool's constructor; coroutines resume inline (InlineScheduler).
  ///
  /// Throws: as MultiHostPool's constructor.
  AsyncMultiHostPool(std::vector<Host> hosts, Factory factory, MultiHostOptions options = {})
      : AsyncMultiHostPool(
            std::move(hosts), std::move(factory), std::move(options), InlineScheduler{}) {}

  /// As above; coroutines whose wait ended are resumed through `scheduler` (see Scheduler).
  template <Scheduler S>
  AsyncMultiHostPool(std::vector<Host> hosts,
                     Factory factory,
                     MultiHostOptions options,
                     S scheduler)
      : Base(std::move(hosts),
             std::move(factory),
             std::move(options),
             detail::AsyncHosts{detail::AnyScheduler(std::move(scheduler))}) {}

  AsyncMultiHostPool(const AsyncMultiHostPool&) = delete;
  AsyncMultiHostPool& operator=(const AsyncMultiHostPool&) = delete;
  AsyncMultiHostPool(AsyncMultiHostPool&&) = delete;
  AsyncMultiHostPool& operator=(AsyncMultiHostPool&&) = delete;

  /// Waits until no acquire runs pool code on another thread, then closes as MultiHostPool's
  /// destructor does: acquires still waiting end with PoolClosed.
  ~AsyncMultiHostPool() { life_->end(); }

  /// Borrows a connection from a host picked by the balancer: `co_await pool.acquire()`,
  /// waiting up to options().per_host.acquire_timeout. Lazy: nothing happens until the co_await;
  /// when a host has a connection to spare (or connects), the co_await completes without
  /// suspending.
  ///
  /// Throws (at the co_await): NoHealthyHost; AcquireTimeout; PoolClosed; PoolOverloaded; the
  /// factory's exception, unchanged; std::logic_error if the operation is awaited twice.
  [[nodiscard]] acquire_operation acquire(call_site site = call_site::current()) {
    return acquire_operation(this, Route::any, default_wait(), {}, site);
  }

  /// As acquire(), waiting up to `timeout`.
  ///
  /// Throws: std::invalid_argument (here, not at the co_await) if `timeout` is negative.
  template <class Rep, class Period>
  [[nodiscard]] acquire_operation acquire(std::chrono::duration<Rep, Period> timeout,
                                          call_site site = call_site::current()) {
    return acquire_operation(this, Route::any, detail::to_wait_duration(timeout), {}, site);
  }

  /// As acquire(timeout), and a stop request on `stop` ends the wait with AcquireCancelled.
  template <class Rep, class Period>
  [[nodiscard]] acquire_operation acquire(std::chrono::duration<Rep, Period> timeout,
                                          std::stop_token stop,
                                          call_site site = call_site::current()) {
    return acquire_operation(this, Route::any, detail::to_wait_duration(timeout), std::move(stop),
                             site);
  }

  /// Borrows a connection from a host of `route` (see Route and MultiHostPool::acquire(Route)),
  /// waiting up to options().per_host.acquire_timeout: `co_await pool.acquire(Route::primary)`.
  /// When no host of the route can serve, the coroutine suspends until one role recheck has run
  /// (within its deadline), then looks again.
  ///
  /// Throws (at the co_await): std::invalid_argument for a route other than Route::any without
  /// MultiHostOptions::role_probe; NoHealthyHost naming the route and each host's role and
  /// state; AcquireTimeout; PoolClosed.
  [[nodiscard]] acquire_operation acquire(Route route, call_site site = call_site::current()) {
    return acquire_operation(this, route, default_wait(), {}, site);
  }

  /// As acquire(route), waiting up to `timeout`.
  template <class Rep, class Period>
  [[nodiscard]] acquire_operation acquire(Route route,
                                          std::chrono::duration<Rep, Period> timeout,
                                          call_site site = call_site::current()) {
    return acquire_operation(this, route, detail::to_wait_duration(timeout), {}, site);
  }

  /// As acquire(route, timeout), and a stop request on `stop` ends the wait with
  /// AcquireCancelled.
  template <class Rep, class Period>
  [[nodiscard]] acquire_operation acquire(Route route,
                                          std::chrono::duration<Rep, Period> timeout,
                                          std::stop_token stop,
                                          call_site site = call_site::current()) {
    return acquire_operation(this, route, detail::to_wait_duration(timeout), std::move(stop), site);
  }

  /// As MultiHostPool::try_acquire(): nullopt when every healthy host is at max_size.
  [[nodiscard]] try_acquire_operation try_acquire(call_site site = call_site::current()) {
    return try_acquire_operation(this, Route::any, std::nullopt, {}, site);
  }

  /// As MultiHostPool::try_acquire(route): right after construction it suspends (up to
  /// per_host.acquire_timeout) for the first role recheck if no host of the route is known yet.
  [[nodiscard]] try_acquire_operation try_acquire(Route route,
                                                  call_site site = call_site::current()) {
    return try_acquire_operation(this, route, std::nullopt, {}, site);
  }

  /// MultiHostPool::acquire(route, timeout), blocking the calling thread (not a coroutine).
  template <class Rep, class Period>
  [[nodiscard]] handle_type acquire_blocking(Route route,
                                             std::chrono::duration<Rep, Period> timeout,
                                             call_site site = call_site::current()) {
    return Base::acquire(route, timeout, site);
  }

  /// MultiHostPool::acquire(host, timeout), blocking the calling thread.
  template <class Rep, class Period>
  [[nodiscard]] handle_type acquire_blocking(const Host& host,
                                             std::chrono::duration<Rep, Period> timeout,
                                             call_site site = call_site::current()) {
    return Base::acquire(host, timeout, site);
  }

  // The rest is MultiHostPool's, unchanged. health() and drain_host() block the calling thread.
  using Base::add_host;
  using Base::close;
  using Base::drain_host;
  using Base::health;
  using Base::hosts;
  using Base::options;
  using Base::pause_host;
  using Base::recheck_roles;
  using Base::remove_host;
  using Base::resume_host;
  using Base::stats;

 private:
  /// The pool's side of a driver's work on other threads: the destructor waits for the stretches
  /// of pool code that drivers run (between their suspensions), and after it has begun no
  /// stretch starts (the driver ends with PoolClosed instead).
  ///
  /// Why: a driver is resumed wherever a host pool's completion runs (a release, a timer, the
  /// recheck thread, a scheduler), not in a call of the user's that the destructor could be
  /// ordered after. Shared by the pool and every driver, so a driver resumed after the pool is
  /// gone still finds it.
  struct Life {
    detail::Mutex mutex;                                // guards dead and active
    std::condition_variable cv;                         // with mutex: a stretch ended
    bool dead CONNPOOL_GUARDED_BY(mutex) = false;       // the destructor has begun
    std::size_t active CONNPOOL_GUARDED_BY(mutex) = 0;  // stretches running now

    /// The destructor: no stretch starts any more; waits for those running on other threads
    /// (user code in a stretch on this thread may be what destroys the pool).
    void end() CONNPOOL_EXCLUDES(mutex) {
      detail::UniqueLock lk(mutex);
      dead = true;
      const std::size_t mine = Stretch::on_this_thread(this);
      while (active > mine) {
        cv.wait(lk.native());
      }
    }
  };

  /// One stretch of a driver in the pool's code, on one thread, never across a suspension.
  class Stretch {
   public:
    explicit Stretch(Life& life) CONNPOOL_EXCLUDES(life.mutex) : life_(&life) {
      detail::UniqueLock lk(life.mutex);
      if (life.dead) {
        life_ = nullptr;
        return;
      }
      ++life.active;
      outer_ = std::exchange(top(), this);
    }
    Stretch(const Stretch&) = delete;
    Stretch& operator=(const Stretch&) = delete;
    ~Stretch() {
      if (life_ != nullptr) {
        top() = outer_;
        {
          detail::UniqueLock lk(life_->mutex);
          --life_->active;
        }
        life_->cv.notify_all();
      }
    }

    /// False when the pool's destructor has begun: touch nothing of it.
    explicit operator bool() const noexcept { return life_ != nullptr; }

    static std::size_t on_this_thread(const Life* life) noexcept {
      std::size_t n = 0;
      for (const Stretch* s = top(); s != nullptr; s = s->outer_) {
        n += s->life_ == life ? 1 : 0;
      }
      return n;
    }

   private:
    static Stretch*& top() noexcept {
      thread_local Stretch* innermost = nullptr;
      return innermost;
    }
    Life* life_;
    Stretch* outer_ = nullptr;
  };

  /// What an acquire waits for next.
  enum class Need { wait, recheck };

  /// The state of one acquire that outlives a suspension: kept by the operation until it
  /// suspends, then by its driver.
  struct Flow {
    std::optional<Search> search;
    WaitOn to;                                   // Need::wait: the host to wait on
    Need need = Need::wait;                      // valid once a round did not end the acquire
    std::optional<WaitClock::duration> timeout;  // nullopt: try_acquire
    WaitClock::time_point deadline{};
    WaitClock::time_point pass_deadline{};  // Need::recheck: how long to wait for the pass
    std::stop_token stop;
    std::optional<handle_type> result;
  };

  /// A round of `f` (MultiHostPool::next_round) on this pool. Returns true when the acquire must
  /// wait (f.need says for what), false when it ended (f.result, empty for a busy try_acquire).
  ///
  /// Throws: what next_round throws; NoHealthyHost when no host of the route can serve and no
  /// recheck is to be awaited (one was already, none may start yet, or the route is Route::any).
  ///
  /// `spare_tried`: as for next_round().
  bool advance(Flow& f, const detail::MultiHostCall& call, bool spare_tried = false) {
    Search& s = *f.search;
    const bool waits = f.timeout.has_value();
    switch (this->next_round(s, call, waits, f.timeout.value_or(WaitClock::duration::zero()),
                             f.deadline, f.result, f.to, spare_tried)) {
      case Round::got:
      case Round::busy:
        return false;
      case Round::wait:
        f.need = Need::wait;
        return true;
      case Round::miss:
        break;
    }
    if (s.route == Route::any || s.rechecked ||
        !this->roles_->checker->may_await_pass(!waits, s.passes_seen)) {
      this->throw_no_healthy_host(*s.snap, s.route);
    }
    s.rechecked = true;
    f.need = Need::recheck;
    // As MultiHostPool::await_recheck: within the deadline; try_acquire only for the first pass.
    f.pass_deadline = waits ? f.deadline : WaitClock::now() + default_wait();
    return true;
  }

  WaitClock::duration default_wait() const {
    return detail::to_wait_duration(this->options_.per_host.acquire_timeout);
  }

  /// Where a driver is suspended, for abandon(): see DriveState::parked.
  enum Parked : int {
    running = 0,     // not suspended in a wait (or resumed from it)
    on_host = 1,     // in a host pool's acquire (DriveState::host_abandon)
    on_recheck = 2,  // in the recheck thread's queue (DriveState::pass)
    abandoning = 3,  // abandon() is at work: the driver, resumed, waits for it (unpark())
  };

  struct DriveState;
  using Driver = detail::AcquireDriver<DriveState>;
  using DrivePromise = typename Driver::promise_type;

  /// A driver's wait for a role recheck, with what its completion needs.
  struct PassNode : detail::RoleChecker::PassWaiter {
    std::coroutine_handle<> driver;
    detail::AnyScheduler scheduler;

    static void on_complete(detail::RoleChecker::PassWaiter* w) noexcept {
      auto* n = static_cast<PassNode*>(w);
      // Copied: once resumed (or dropped), the driver and this node may be gone at any moment.
      const detail::AnyScheduler scheduler = n->scheduler;
      scheduler.schedule(Resumption(n->driver, &Driver::drop));
    }
  };

  struct DriveState : Flow {
    AsyncMultiHostPool* pool = nullptr;  // touched only inside a Stretch
    std::shared_ptr<Life> life;
    std::shared_ptr<detail::RoleChecker> checker;  // null without role_probe
    bool try_only = false;
    std::exception_ptr error;
    // Where the driver is suspended (Parked), so that abandon() can withdraw its wait. The
    // driver sets it once its wait is queued (on_recheck: before, see PassWait) and takes it
    // back when resumed; abandon() moves it to `abandoning` and the resumed driver then waits
    // for abandoner_done before it touches anything.
    std::atomic<int> parked{running};
    std::atomic<bool> abandoner_done{false};
    void* host_op = nullptr;                         // on_host: the host pool's operation
    bool (*host_abandon)(void*) noexcept = nullptr;  // its abandon()
    PassNode pass;

    /// The driver's resumption was dropped: nobody takes the outcome up.
    void discard_outcome() noexcept {
      this->result.reset();
      error = nullptr;
    }
  };

  /// The driver, resumed from a wait: takes its parking back, and if abandon() is at work on it,
  /// waits for it to end (a few loads: abandon() withdraws nothing once the wait has ended).
  static void unpark(DriveState& st) noexcept {
    if (st.parked.exchange(running, std::memory_order_acq_rel) == abandoning) {
      while (!st.abandoner_done.load(std::memory_order_acquire)) {
        std::this_thread::yield();
      }
    }
  }

  /// co_await HostWait{st}: the wait on host st.to.entry's pool, started inside a Stretch
  /// (the host's record and pool are the pool's until it is destroyed).
  struct HostWait {
    struct Op {
      HostOp op;
      Op(HostPool& p, WaitClock::duration wait, const std::stop_token& stop, call_site site)
          : op(p.acquire(wait, stop, site)) {}
    };
    explicit HostWait(DriveState& state) noexcept : st(state) {}

    DriveState& st;
    std::optional<Op> host;
    std::optional<Stretch> stretch;
    bool dead = false;

    bool await_ready() {
      stretch.emplace(*st.life);
      if (!*stretch) {
        dead = true;
        stretch.reset();
        return true;
      }
      host.emplace(st.to.entry->pool, Base::remaining(st.deadline), st.stop, st.search->site);
      if (host->op.await_ready()) {
        stretch.reset();
        return true;
      }
      return false;
    }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> driver) {
      std::coroutine_handle<> next;
      try {
        next = host->op.await_suspend(driver);  // the host's driver, not started yet
      } catch (...) {
        stretch.reset();
        throw;
      }
      stretch.reset();
      st.host_op = &host->op;
      st.host_abandon = [](void* op) noexcept { return static_cast<HostOp*>(op)->abandon(); };
      st.parked.store(on_host, std::memory_order_release);
      return next;
    }
    PooledHandle<Conn> await_resume() {
      unpark(st);
      if (dead) {
        throw PoolClosed();
      }
      return host->op.await_resume();
    }
  };

  /// co_await PassWait{st, first_only}: the wait for a role recheck (RoleChecker's queue).
  struct PassWait {
    DriveState& st;
    bool first_only;

    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> driver) {
      st.pass.driver = driver;
      st.pass.deadline = st.pass_deadline;
      // Before the enqueue: once queued, the completion may resume the driver at once.
      st.parked.store(on_recheck, std::memory_order_release);
      try {
        // Nothing of the frame is touched after a true: the driver may be running already.
        return st.checker->enqueue_pass_waiter(st.pass, first_only, st.search->passes_seen);
      } catch (...) {
        unpark(st);
        throw;
      }
    }
    void await_resume() const noexcept { unpark(st); }
  };

  /// The body of the driver: waits (on a host, or for a recheck), then goes on with the rounds,
  /// until it has a result or an error. Abandoned (or dropped), it gives back what it holds and
  /// ends.
  CONNPOOL_CORO_NO_SANITIZE_FUNCTION static Driver drive() {
    DrivePromise& st = co_await detail::ThisPromise<DrivePromise>{};
    try {
      for (;;) {
        if (st.need == Need::wait) {
          std::optional<PooledHandle<Conn>> h;
          std::exception_ptr failure;
          try {
            h.emplace(co_await HostWait(st));
          } catch (...) {
            failure = std::current_exception();
          }
          if (st.abandoned()) {
            co_return;  // `h` goes back to its host's pool
          }
          const Stretch stretch(*st.life);
          if (!stretch) {
            throw PoolClosed();  // being destroyed: nothing of it is touched
          }
          AsyncMultiHostPool& pool = *st.pool;
          const detail::MultiHostCall call(static_cast<const Base*>(&pool));
          Attempt a = Attempt::failed;
          if (failure) {
            try {
              std::rethrow_exception(failure);
            } catch (...) {
              a = pool.threw(*st.to.entry, st.to.admit, call);
            }
          } else {
            // As MultiHostPool after a wait served by a connection given back (no connect on
            // this thread): failed pings are not looked at (a stats() call each) until a
            // failure.
            a = pool.took(*st.to.entry, st.to.admit, h, false, call, st.result,
                          st.search->route == Route::primary);
          }
          if (a == Attempt::got) {
            co_return;
          }
          pool.after_wait(*st.search, st.to.index, a);
          if (!pool.advance(st, call)) {
            co_return;
          }
        } else {
          co_await PassWait{st, !st.timeout.has_value()};
          if (st.abandoned()) {
            co_return;
          }
          const Stretch stretch(*st.life);
          if (!stretch) {
            throw PoolClosed();
          }
          AsyncMultiHostPool& pool = *st.pool;
          if (pool.closed_.load(std::memory_order_acquire)) {
            throw PoolClosed();
          }
          Search& s = *st.search;
          if (!st.pass.ran) {
            pool.throw_no_healthy_host(*s.snap, s.route);
          }
          s.phase = detail::first_phase(s.route);
          const detail::MultiHostCall call(static_cast<const Base*>(&pool));
          if (!pool.advance(st, call)) {
            co_return;
          }
        }
      }
    } catch (...) {
      st.error = std::current_exception();
    }
  }

  /// The awaitable of acquire() (Try = false) and try_acquire() (Try = true).
  template <bool Try>
  class [[nodiscard]] Operation {
   public:
    Operation(const Operation&) = delete;
    Operation& operator=(const Operation&) = delete;
    Operation(Operation&&) = delete;
    Operation& operator=(Operation&&) = delete;

    /// Destroyed while its coroutine is suspended in it, abandons the wait (abandon()).
    ~Operation() { (void)abandon(); }

    /// The first round, which needs no waiting: a host with a connection to spare, or a
    /// connect. Allocates nothing when a connection is idle.
    bool await_ready() {
      if (std::exchange(awaited_, true)) {
        throw std::logic_error("connpool: an acquire operation can be awaited once");
      }
      try {
        flow_.search.emplace(pool_->begin_search(route_, site_));
        // Why the coarse clock: as in MultiHostPool::acquire_any.
        flow_.deadline =
            detail::clock_now<WaitClock>() + flow_.timeout.value_or(WaitClock::duration::zero());
        const detail::MultiHostCall call(static_cast<const Base*>(pool_));
        bool spare_tried = false;
        if (pool_->first_spare(*flow_.search, call,
                               flow_.timeout.value_or(WaitClock::duration::zero()), flow_.deadline,
                               flow_.result, spare_tried)) [[likely]] {
          return true;
        }
        return !pool_->advance(flow_, call, spare_tried);
      } catch (...) {
        error_ = std::current_exception();
        return true;
      }
    }

    /// Starts the driver, which waits and transfers back to `caller` when it has a result.
    ///
    /// Throws: std::bad_alloc (allocating the driver's frame), at the co_await.
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> caller) {
      driver_ = drive();
      DrivePromise& st = driver_.promise();
      static_cast<Flow&>(st) = std::move(flow_);
      st.pool = pool_;
      st.life = pool_->life_;
      if (pool_->roles_) {
        st.checker = pool_->roles_->checker;
      }
      st.try_only = Try;
      st.pass.complete = &PassNode::on_complete;
      st.pass.scheduler = pool_->kind_.scheduler;
      st.continuation = caller;
      return driver_.handle();
    }

    auto await_resume() {
      if (driver_) {
        DrivePromise& st = driver_.promise();
        error_ = std::exchange(st.error, nullptr);
        flow_.result = std::move(st.result);
      }
      if (error_) {
        std::rethrow_exception(error_);
      }
      if constexpr (Try) {
        return std::move(flow_.result);
      } else {
        return std::move(*flow_.result);
      }
    }

    /// Abandons a wait that has not ended, because the coroutine awaiting this operation is
    /// being destroyed while suspended in it: the wait leaves the host pool's queue (or the
    /// recheck's), or, if it has ended already, the driver gives back what it got and frees
    /// itself. Returns true if nothing will resume the awaiting coroutine.
    ///
    /// Thread safety: may race with the end of the wait on another thread (see Parked).
    bool abandon() noexcept {
      if (!driver_) {
        return false;
      }
      DrivePromise& st = driver_.promise();
      const detail::DriverPhase phase = st.phase.load(std::memory_order_acquire);
      if (phase != detail::DriverPhase::running) {
        return phase == detail::DriverPhase::dropped;  // freed with this object
      }
      int where = st.parked.load(std::memory_order_acquire);
      if (where != running &&
          st.parked.compare_exchange_strong(where, abandoning, std::memory_order_acq_rel)) {
        const bool withdrawn = where == on_host ? st.host_abandon(st.host_op)
                                                : st.checker->withdraw_pass_waiter(st.pass);
        if (withdrawn) {
          // Nothing will resume the driver: it ends here, with what its frame holds.
          st.phase.store(detail::DriverPhase::abandoned, std::memory_order_relaxed);
          driver_.destroy();
          return true;
        }
        // The wait has ended: the driver is (or will be) resumed, and waits in unpark() for
        // this to end before it goes on. It finds itself abandoned and frees itself.
        st.phase.store(detail::DriverPhase::abandoned, std::memory_order_release);
        driver_.release();
        st.abandoner_done.store(true, std::memory_order_release);  // the frame may go now
        return true;
      }
      detail::DriverPhase expected = detail::DriverPhase::running;
      if (!st.phase.compare_exchange_strong(expected, detail::DriverPhase::abandoned,
                                            std::memory_order_acq_rel)) {
        return expected == detail::DriverPhase::dropped;
      }
      driver_.release();  // it frees itself when it ends
      return true;
    }

   private:
    friend class AsyncMultiHostPool;

    Operation(AsyncMultiHostPool* pool,
              Route route,
              std::optional<WaitClock::duration> timeout,
              std::stop_token stop,
              call_site site)
        : pool_(pool), route_(route), site_(site) {
      flow_.timeout = timeout;
      flow_.stop = std::move(stop);
    }

    AsyncMultiHostPool* pool_;  // used until the driver starts; the driver's Stretch after
    Route route_;
    call_site site_;  // the caller's, for leak reports
    bool awaited_ = false;
    Flow flow_;
    std::exception_ptr error_;
    Driver driver_;  // owned until abandon() lets it free itself
  };

  // Shared with every driver (see Life).
  const std::shared_ptr<Life> life_ = std::make_shared<Life>();
};

/// Deduces Conn from what factory(host) returns.
template <class Host, class F>
AsyncMultiHostPool(std::vector<Host>, F, MultiHostOptions)
    -> AsyncMultiHostPool<std::decay_t<detail::host_factory_result_t<F, Host>>, F, Host>;

template <class Host, class F>
AsyncMultiHostPool(std::vector<Host>, F)
    -> AsyncMultiHostPool<std::decay_t<detail::host_factory_result_t<F, Host>>, F, Host>;

template <class Host, class F, class S>
AsyncMultiHostPool(std::vector<Host>, F, MultiHostOptions, S)
    -> AsyncMultiHostPool<std::decay_t<detail::host_factory_result_t<F, Host>>, F, Host>;

}  // namespace connpool
