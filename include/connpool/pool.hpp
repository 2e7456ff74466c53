// connpool - ConnectionPool, the synchronous pool
// SPDX-License-Identifier: MIT
#pragma once

// ConnectionPool<Conn, Factory, Clock>, a thin owner of its shared state, detail::PoolCore
// (detail/pool_core.hpp), where the algorithms are. The handle type is in handle.hpp, the options
// in options.hpp, the statistics in stats.hpp.

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <connpool/concepts.hpp>
#include <connpool/detail/maintenance.hpp>
#include <connpool/detail/pool_core.hpp>
#include <connpool/handle.hpp>
#include <connpool/options.hpp>
#include <connpool/stats.hpp>

namespace connpool {

namespace detail {

/// Converts a user's timeout to the waiting clock's duration, rejecting negative values and
/// capping absurdly long ones (so that now() + timeout cannot overflow).
template <class Rep, class Period>
std::chrono::steady_clock::duration to_wait_duration(std::chrono::duration<Rep, Period> d) {
  if (d < d.zero()) {
    throw std::invalid_argument(
        "connpool: acquire timeout must not be negative (got " +
        std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + " ms)");
  }
  constexpr std::chrono::hours cap{24 * 365 * 100};
  if (d >= cap) {
    return cap;
  }
  return std::chrono::ceil<std::chrono::steady_clock::duration>(d);
}

}  // namespace detail

/// A thread-safe pool of connections of type `Conn`, opened by `Factory`.
///
/// The model: connections live in an idle stack (LIFO) and are handed out as PooledHandle<Conn>,
/// which gives them back on destruction. Below max_size, an acquire with nothing idle calls the
/// factory outside the pool's lock, having reserved the place first, so a slow connect blocks
/// nobody else. At max_size, callers queue FIFO, each on its own condition variable. Under the
/// default WaitPolicy::bounded_barging a running caller may take a just-released connection
/// ahead of the sleeping ones until the oldest has waited starvation_bound, after which every
/// release goes straight to the oldest waiter; under WaitPolicy::fifo it always does. Idle
/// connections are pinged before use unless used within validation_bypass, and closed when older
/// than max_lifetime or idle longer than max_idle (above min_size). A background thread runs
/// prune() every health_check_interval.
///
/// `Clock` (a type with a static now(), e.g. ManualClock) drives connection ages, idle times,
/// the validation bypass window and maintenance decisions; waiting and acquire timeouts always
/// use std::chrono::steady_clock.
///
/// Thread safety: all member functions may be called concurrently, except that the destructor
/// must not run concurrently with any other member. A PooledHandle may be used by one thread
/// at a time.
/// Lifetime: handles may outlive the pool; giving one back then closes its connection. The
/// factory, close(), ping() and reset() are never called with the pool's lock held.
/// Complexity: acquire and release are O(1) and do not allocate once connections are open.
/// Example:
///     connpool::ConnectionPool pool{[] { return Db::connect(url); },
///                                   connpool::PoolOptions{.max_size = 16}};
///     auto h = pool.acquire(250ms);
///     h->query("SELECT 1");
template <class Conn, ConnectionFactory<Conn> Factory, class Clock = std::chrono::steady_clock>
requires Connection<Conn> && detail::PoolClock<Clock>
class ConnectionPool {
  using Core = detail::PoolCore<Conn, Factory, Clock>;

 public:
  using connection_type = Conn;
  using factory_type = Factory;
  using clock_type = Clock;
  using handle_type = PooledHandle<Conn>;

  /// Validates `options` and opens min_size connections (DESIGN 1).
  ///
  /// Throws: std::invalid_argument naming the bad field; with fail_fast, the factory's first
  /// exception (the connections already opened are closed).
  explicit ConnectionPool(Factory factory, PoolOptions options = {})
      : core_(make_core(std::move(factory), options)) {}

  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;
  ConnectionPool(ConnectionPool&&) = delete;
  ConnectionPool& operator=(ConnectionPool&&) = delete;

  /// close(), then lets go of the shared state (the last outstanding handle frees it).
  ~ConnectionPool() { core_->release_owner(); }

  /// Borrows a connection, waiting up to options().acquire_timeout.
  ///
  /// `site`, left to its default, is the caller's location: recorded for leak reports and
  /// in_use_report() when leak_threshold is set (the same for every acquire below).
  ///
  /// Throws: AcquireTimeout, PoolClosed, or the factory's exception (unchanged).
  [[nodiscard]] PooledHandle<Conn> acquire(call_site site = call_site::current()) {
    core_->note_site(site);
    return *core_->acquire(detail::to_wait_duration(core_->options().acquire_timeout), nullptr);
  }

  /// Borrows a connection, waiting up to `timeout` (0 = fail at once rather than wait).
  ///
  /// Throws: std::invalid_argument if `timeout` is negative; AcquireTimeout; PoolClosed; the
  /// factory's exception (unchanged).
  template <class Rep, class Period>
  [[nodiscard]] PooledHandle<Conn> acquire(std::chrono::duration<Rep, Period> timeout,
                                           call_site site = call_site::current()) {
    core_->note_site(site);
    return *core_->acquire(detail::to_wait_duration(timeout), nullptr);
  }

  /// As acquire(timeout), and a stop request on `stop` ends the wait with AcquireCancelled.
  /// A connection available without waiting is returned even if stop was already requested.
  template <class Rep, class Period>
  [[nodiscard]] PooledHandle<Conn> acquire(std::chrono::duration<Rep, Period> timeout,
                                           std::stop_token stop,
                                           call_site site = call_site::current()) {
    core_->note_site(site);
    return *core_->acquire(detail::to_wait_duration(timeout), &stop);
  }

  /// Borrows an idle connection, or creates one below max_size; never waits for another
  /// holder. Returns nullopt when the pool is exhausted.
  ///
  /// Throws: PoolClosed; the factory's exception (unchanged).
  [[nodiscard]] std::optional<PooledHandle<Conn>> try_acquire(
      call_site site = call_site::current()) {
    core_->note_site(site);
    return core_->acquire(std::nullopt, nullptr);
  }

  /// Every connection out of the pool now (InUseConnection): its id, and, while holds are
  /// observed (leak_threshold, on_acquire or on_release set), how long it has been out, its
  /// holder thread and (leak_threshold set) where it was acquired. For a debugging endpoint:
  /// O(connections), allocates the list, takes no lock.
  [[nodiscard]] std::vector<InUseConnection> in_use_report() const {
    return core_->in_use_report();
  }

  /// A snapshot of the counters and gauges.
  [[nodiscard]] PoolStats stats() const { return core_->stats(); }

  /// For a readiness probe: acquires a connection within `timeout` (validated as any acquire)
  /// and gives it back at once, then reads the p99 wait over about the last minute (see
  /// HealthReport). ok when both the acquire worked and the p99 is at most
  /// PoolOptions::health_p99_wait (when that is not 0); otherwise `reason` says which failed,
  /// with the acquire's error. The check's own acquire counts in stats() like any other.
  ///
  /// "The last minute": since the newest of health()'s own earlier readings that is at least a
  /// minute old (it keeps one per 10 s); before it has one, since the first health() call, or
  /// for the first call, since the pool started. So call it regularly (probes do).
  ///
  /// Throws: std::invalid_argument if `timeout` is negative. Never throws for an unhealthy pool.
  template <class Rep, class Period>
  [[nodiscard]] HealthReport health(std::chrono::duration<Rep, Period> timeout) {
    const auto wait = detail::to_wait_duration(timeout);
    return core_->health_report(detail::health_probe([&] { (void)core_->acquire(wait, nullptr); }));
  }

  /// One maintenance pass now: closes expired idle connections and refills to min_size.
  /// Returns the number of connections closed.
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

  /// Replaces the factory for every connect that starts from now on; connects already running
  /// finish with the old one. For a credentials rotation, follow it with evict_all(), so that
  /// the connections opened with the old credentials are replaced as they come back:
  ///     pool.set_factory(make_factory(new_password));
  ///     pool.evict_all();
  /// Safe to call from any thread, while the pool serves.
  ///
  /// Throws: std::bad_alloc, with nothing changed.
  void set_factory(Factory factory) { core_->set_factory(std::move(factory)); }

  /// For a failover: evict_all(), and every caller waiting now fails at once with PoolCleared
  /// (a PoolError, meant to be retried: whatever it would have got comes from the old server).
  /// Returns how many idle connections it closed at once.
  std::size_t clear() { return core_->clear(); }

  /// Stops handing out connections until resume(), for maintenance or a credentials rotation:
  /// acquire() waits (within its timeout, then AcquireTimeout saying the pool is paused),
  /// try_acquire() returns nullopt, maintenance neither refills nor opens. Handles already out
  /// work and come back normally. Idempotent; close() while paused works.
  void pause() noexcept { core_->pause(); }

  /// Ends pause(): the callers waiting are served at once, oldest first. Idempotent.
  void resume() noexcept { core_->resume(); }

  /// Whether the pool is paused.
  [[nodiscard]] bool paused() const noexcept { return core_->paused(); }

  /// Pauses the pool, closes its idle connections, and waits until none is in use (each is
  /// closed as it comes back): true; false if `timeout` passes first. The pool stays paused
  /// until resume(). For maintenance of the server: after a drain that returned true, no
  /// connection of this pool is open.
  bool drain(std::chrono::milliseconds timeout) { return core_->drain(timeout); }

  /// Closes the pool (DESIGN 7). Idempotent; the destructor calls it.
  void close() noexcept { core_->close(); }

  [[nodiscard]] const PoolOptions& options() const noexcept { return core_->options(); }

 private:
  static Core* make_core(Factory factory, const PoolOptions& options) {
    options.validate();
    Core* core = new Core(std::move(factory), options);
    try {
      core->warm_up();
      core->start_maintenance();
    } catch (...) {
      core->release_owner();  // closes what warm-up opened; frees the core
      throw;
    }
    return core;
  }

  Core* core_;  // owned; shared with outstanding handles (see detail::PoolCore)
};

template <class F>
ConnectionPool(F, PoolOptions) -> ConnectionPool<std::decay_t<detail::factory_result_t<F>>, F>;

template <class F>
ConnectionPool(F) -> ConnectionPool<std::decay_t<detail::factory_result_t<F>>, F>;

}  // namespace connpool
