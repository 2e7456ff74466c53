// connpool - the pool's calls into user code: factory, ping, reset, close, hooks; stamps and ids
// SPDX-License-Identifier: MIT
#pragma once

// ConnectionOps<Conn, Factory, Clock>: every call a pool makes into user code on a connection,
// in one place (HikariCP's PoolBase): the factory, ping, reset and close (through
// connection_traits), the event hooks, and the stamps of a new connection (ages, id, lifetime
// with jitter). Lock rule: nothing here locks, and the caller never holds PoolCore::mutex_
// while calling in, since every function here may run user code, which may call back into the
// pool or destroy it (the caller holds a count on the pool's core for that). What is done with
// the outcome (closing, counting, serving waiters) is detail/pool_core.hpp's.

#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

#include <connpool/concepts.hpp>
#include <connpool/deadline.hpp>
#include <connpool/detail/awaitable.hpp>
#include <connpool/detail/clock.hpp>
#include <connpool/detail/expiry.hpp>
#include <connpool/detail/pool_slot.hpp>
#include <connpool/errors.hpp>
#include <connpool/events.hpp>
#include <connpool/options.hpp>

namespace connpool::detail {

/// The site of the acquire a front is serving on this thread, for the check-out to record
/// (leak_threshold set). Set by the front before each acquire, read by
/// ConnectionOps::handed_out() on the same thread.
///
/// Why a thread-local and not a parameter: it would have to pass through every path that hands
/// a connection out (fast, slow, create, grant); the front knows the caller, the check-out runs
/// on the caller's thread (for coroutines, the driver sets it again where it checks out).
inline source_location& pending_acquire_site() noexcept {
  thread_local source_location site;
  return site;
}

/// The calls of one pool into user code. `options` must outlive it (the pool's own copy).
template <class Conn, class Factory, class Clock>
class ConnectionOps {
 public:
  using SlotT = Slot<Conn, Clock>;
  using traits = connection_traits<Conn>;
  using Hook = std::function<void(const PoolEvent&)>;

  ConnectionOps(Factory factory, const PoolOptions& options)
      : factory_(std::make_shared<Factory>(std::move(factory))),
        options_(&options),
        observe_holds_(options.leak_threshold.count() > 0 || bool(options.on_acquire) ||
                       bool(options.on_release)),
        tracks_sites_(options.leak_threshold.count() > 0) {}

  /// Whether acquires record their caller's source_location (leak_threshold set): the
  /// fronts then pass it through pending_acquire_site().
  [[nodiscard]] bool tracks_sites() const noexcept { return tracks_sites_; }

  /// Whether check-outs record when and by whom (leak detection, on_acquire, on_release).
  [[nodiscard]] bool observes_holds() const noexcept { return observe_holds_; }

  /// The factory now; the caller's copy of the pointer keeps it alive while it connects, even
  /// if set_factory() replaces it meanwhile.
  std::shared_ptr<Factory> factory() const noexcept {
    const std::lock_guard<std::mutex> lock(factory_mutex_);
    return factory_;
  }

  /// Replaces the factory for the connects that start from now on; those running finish with
  /// the old one, which is destroyed when the last of them ends.
  ///
  /// Throws: std::bad_alloc, with nothing changed.
  void set_factory(Factory factory) {
    std::shared_ptr<Factory> next = std::make_shared<Factory>(std::move(factory));
    {
      const std::lock_guard<std::mutex> lock(factory_mutex_);
      factory_.swap(next);
    }
    // `next` holds the old factory: destroyed here, outside the lock, unless a connect runs.
  }

  /// The factory's connection, on this thread. A factory that returns an awaitable (an
  /// AsyncConnectionPool's, for warm-up and refill) is driven to completion by sync_wait.
  ///
  /// Throws: what the factory throws (DESIGN 3: it reaches the caller unchanged);
  /// ConnectTimeout if it returned after its deadline (see check_connect_time()).
  Conn make_connection() {
    const std::shared_ptr<Factory> f = factory();
    const Deadline d = connect_deadline();
    using Result = factory_result_t<Factory>;
    Conn c = [&] {
      if constexpr (Awaitable<Result> && !std::convertible_to<Result, Conn>) {
        return Conn(sync_wait(call_factory(*f, d)));
      } else {
        return Conn(call_factory(*f, d));
      }
    }();
    check_connect_time(d, c);
    return c;
  }

  /// The Deadline of a connect starting now: PoolOptions::connect_timeout from now (none when
  /// 0), and the pool's close signal for a factory that takes it.
  [[nodiscard]] Deadline connect_deadline() const noexcept {
    Deadline d;
    if (options_->connect_timeout.count() > 0) {
      d.at = Deadline::clock::now() + options_->connect_timeout;
    }
    if constexpr (TakesDeadline<Factory>) {
      d.stop = stop_.get_token();
    }
    return d;
  }

  /// A connect that returned after its deadline `d` failed (PoolOptions::connect_timeout): its
  /// connection `c` is closed (no hooks: the pool never had it), and ConnectTimeout thrown.
  void check_connect_time(const Deadline& d, Conn& c) const {
    if (!d.limited() || Deadline::clock::now() <= d.at) {
      return;
    }
    if constexpr (Closeable<Conn>) {
      try {
        traits::close(c);
      } catch (...) {
      }
    }
    throw ConnectTimeout("connpool: the connect took longer than connect_timeout (" +
                         std::to_string(options_->connect_timeout.count()) +
                         " ms); its connection was closed");
  }

  /// The pool is closing: every Deadline handed out, and every later one, reports it.
  /// Runs the stop callbacks that connects and pings registered (user code): never under the
  /// pool's lock.
  void request_stop() noexcept { stop_.request_stop(); }

  /// Pings the connection of the owned slot `s`: true if alive. A ping that throws failed
  /// (DESIGN 5). Not Pingable: always alive.
  ///
  /// With PoolOptions::validation_timeout, a ping that returns after it failed too; a
  /// DeadlinePingable connection is passed the Deadline (and the pool's close signal).
  bool ping(SlotT& s) noexcept {
    if constexpr (Pingable<Conn>) {
      try {
        Deadline d;
        if (options_->validation_timeout.count() > 0) {
          d.at = Deadline::clock::now() + options_->validation_timeout;
        }
        bool alive = false;
        if constexpr (DeadlinePingable<Conn>) {
          d.stop = stop_.get_token();
          alive = static_cast<bool>(traits::ping(*s.conn, d));
        } else {
          alive = static_cast<bool>(traits::ping(*s.conn));
        }
        return alive && (!d.limited() || Deadline::clock::now() <= d.at);
      } catch (...) {
        return false;
      }
    } else {
      (void)s;
      return true;
    }
  }

  /// Resets the connection of the owned slot `s` before it goes back: false if reset() threw
  /// (a connection that cannot be reset must not reach the next borrower). Not Resettable: true.
  bool reset(SlotT& s) noexcept {
    if constexpr (Resettable<Conn>) {
      try {
        traits::reset(*s.conn);
      } catch (...) {
        return false;
      }
    } else {
      (void)s;
    }
    return true;
  }

  /// Whether the connection of the owned slot `s` says it is broken (BrokenCheckable; an
  /// exception counts as broken). Not BrokenCheckable: never.
  bool broken(const SlotT& s) noexcept {
    if constexpr (BrokenCheckable<Conn>) {
      try {
        return static_cast<bool>(traits::is_broken(*s.conn));
      } catch (...) {
        return true;
      }
    } else {
      (void)s;
      return false;
    }
  }

  /// What PoolOptions::on_error makes of `error`: evict when it is empty or throws.
  ErrorAction classify(const std::exception_ptr& error) noexcept {
    if (!options_->on_error) {
      return ErrorAction::evict;
    }
    try {
      return options_->on_error(error);
    } catch (...) {
      return ErrorAction::evict;
    }
  }

  /// Closes the connection of the owned slot `s` (on_close first), and destroys it. Returns
  /// false if close() threw (DESIGN 10: swallowed, and counted by the caller).
  bool close(SlotT& s) noexcept {
    const CloseReason reason = std::exchange(s.close_reason, CloseReason::none);
    if (options_->on_close) {
      emit(options_->on_close, PoolEventKind::close, s,
           reason == CloseReason::none ? CloseReason::pool_closed : reason);
    }
    s.held_since.store(0, std::memory_order_relaxed);
    bool ok = true;
    if constexpr (Closeable<Conn>) {
      try {
        traits::close(*s.conn);
      } catch (...) {
        ok = false;
      }
    }
    s.conn.reset();
    return ok;
  }

  /// The owned slot `s` has its new connection: stamps its ages, id, lifetime and incarnation,
  /// and marks it in use. The pool lists it, then calls created().
  void stamp_new(SlotT& s) {
    s.created_at = clock_now<Clock>();
    s.last_used = s.created_at;
    s.last_checked = s.created_at;
    s.checked_out = s.created_at;  // a connection made for a caller is held from now
    s.lifetime = jittered_lifetime();
    s.id = next_id_.fetch_add(1, std::memory_order_relaxed);
    s.id_snapshot.store(s.id, std::memory_order_relaxed);
    s.acquired_before = s.acquired.get();
    s.held_since.store(0, std::memory_order_relaxed);
    s.incarnation.store(s.incarnation.load(std::memory_order_relaxed) + 1,
                        std::memory_order_relaxed);  // only the owner writes it
    s.state.store(kInUse, std::memory_order_relaxed);
  }

  /// on_create, for the owned slot `s`.
  void created(const SlotT& s) noexcept {
    if (options_->on_create) {
      emit(options_->on_create, PoolEventKind::create, s);
    }
  }

  /// The owned slot `s` is being handed out: records the check-out for leak detection and
  /// on_release, and calls on_acquire.
  void handed_out(SlotT& s) noexcept {
    if (observe_holds_) {
      s.held_since.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                         std::memory_order_relaxed);
      s.holder.store(std::this_thread::get_id(), std::memory_order_relaxed);
      if (tracks_sites_) {
        s.site.store(pending_acquire_site());
      }
      if (options_->on_acquire) {
        emit(options_->on_acquire, PoolEventKind::acquire, s);
      }
    }
  }

  /// The owned slot `s` is being given back: on_release; and on_leak_end if it was reported
  /// as leaked during this check-out.
  void released(const SlotT& s) noexcept {
    if (options_->on_release) {
      emit(options_->on_release, PoolEventKind::release, s);
    }
    if (tracks_sites_ && options_->on_leak_end) {
      const std::int64_t since = s.held_since.load(std::memory_order_relaxed);
      if (since != 0 && s.leak_reported_since.load(std::memory_order_relaxed) == since) {
        emit(options_->on_leak_end, PoolEventKind::leak_ended, s);
      }
    }
  }

  /// The owned slot `s` goes back to the idle set: no longer held, so not a leak.
  void unheld(SlotT& s) noexcept {
    if (observe_holds_) {
      s.held_since.store(0, std::memory_order_relaxed);
    }
  }

  /// Calls `hook` (set) with an event about the slot `s`; exceptions are swallowed (hooks never
  /// break the pool).
  static void emit(const Hook& hook,
                   PoolEventKind kind,
                   const SlotT& s,
                   CloseReason reason = CloseReason::none) noexcept {
    PoolEvent e;
    e.kind = kind;
    e.connection_id = s.id;
    e.reason = reason;
    e.thread = std::this_thread::get_id();
    if (kind != PoolEventKind::acquire && kind != PoolEventKind::create) {
      const std::int64_t since = s.held_since.load(std::memory_order_relaxed);
      if (since != 0 && s.state.load(std::memory_order_relaxed) == kInUse) {
        e.held_for = std::chrono::steady_clock::now().time_since_epoch() -
                     std::chrono::steady_clock::duration(since);
      }
    }
    try {
      hook(e);
    } catch (...) {
    }
  }

 private:
  /// The max_lifetime of a new connection, less a random jitter (PoolOptions::lifetime_jitter;
  /// see shortened_lifetime()).
  typename Clock::duration jittered_lifetime() const {
    const auto full = std::chrono::duration_cast<typename Clock::duration>(options_->max_lifetime);
    const double jitter =
        options_->lifetime_jitter.value_or(default_lifetime_jitter<Clock>(options_->max_lifetime));
    if (full.count() <= 0 || jitter <= 0.0) {
      return full;
    }
    thread_local std::minstd_rand rng(static_cast<std::uint_fast32_t>(
        std::hash<std::thread::id>{}(std::this_thread::get_id()) ^
        static_cast<std::size_t>(std::chrono::steady_clock::now().time_since_epoch().count())));
    return shortened_lifetime(full, std::uniform_real_distribution<double>(0.0, jitter)(rng));
  }

  // Guards the pointer factory_ (not the calls: the factory runs outside every lock, possibly
  // from several threads at once). Taken once per connect, to copy the pointer.
  // Requested when the pool closes (request_stop()); its tokens go out in Deadlines.
  std::stop_source stop_;
  mutable std::mutex factory_mutex_;
  std::shared_ptr<Factory> factory_;  // never null; replaced by set_factory()
  const PoolOptions* options_;        // the pool's; immutable
  const bool observe_holds_;
  const bool tracks_sites_;  // leak_threshold set: check-outs record pending_acquire_site()
  std::atomic<std::uint64_t> next_id_{1};  // PoolEvent::connection_id of the next connection
};

}  // namespace connpool::detail
