// connpool - ConnectionPool, the synchronous pool
// SPDX-License-Identifier: MIT
#pragma once

// ConnectionPool<Conn, Factory, Clock> and its shared state, detail::PoolCore. The handle type
// is in handle.hpp, the options in options.hpp, the statistics in stats.hpp.

#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

#include <connpool/concepts.hpp>
#include <connpool/detail/intrusive_list.hpp>
#include <connpool/detail/slot.hpp>
#include <connpool/detail/thread_annotations.hpp>
#include <connpool/errors.hpp>
#include <connpool/handle.hpp>
#include <connpool/options.hpp>
#include <connpool/stats.hpp>

namespace connpool {

namespace detail {

/// What a pool needs of its Clock: a static now() returning its time_point. ManualClock and
/// every std::chrono clock qualify.
template <class C>
concept PoolClock = requires {
  typename C::time_point;
  typename C::duration;
  { C::now() } -> std::same_as<typename C::time_point>;
};

/// A pooled connection with the ages the pool tracks, linked into the idle list while idle.
template <class Conn, class Clock>
struct Slot : SlotBase<Conn>, ListHook<Slot<Conn, Clock>> {
  using SlotBase<Conn>::SlotBase;
  typename Clock::time_point created_at{};  // when the factory returned it
  typename Clock::time_point last_used{};   // when it was last given back (or created)
};

/// A caller blocked in acquire(), on its own stack. Every field is guarded by the pool's mutex.
///
/// Why one condition variable per waiter: a release wakes exactly the waiter it serves, so no
/// herd of threads wakes to find nothing (the model of Boost.MySQL's pool and of Go's
/// database/sql connRequests channels).
template <class Conn, class Clock>
struct Waiter : ListHook<Waiter<Conn, Clock>> {
  std::condition_variable cv;
  Slot<Conn, Clock>* slot = nullptr;  // a connection handed over by a releasing thread
  bool fresh = false;                 // `slot` was just created, not reused
  bool may_create = false;            // a unit of capacity handed over: create a connection
  bool closed = false;                // the pool closed while waiting
  bool cancelled = false;             // the caller's stop_token was triggered

  [[nodiscard]] bool granted() const noexcept { return slot != nullptr || may_create; }
};

/// The counters of PoolStats that the pool maintains; guarded by the pool's mutex.
struct Counters {
  std::uint64_t created = 0;
  std::uint64_t closed = 0;
  std::uint64_t acquired = 0;
  std::uint64_t reused = 0;
  std::uint64_t released = 0;
  std::uint64_t waited = 0;
  std::uint64_t timeouts = 0;
  std::uint64_t validation_failures = 0;
  std::uint64_t create_failures = 0;
  std::uint64_t close_failures = 0;
  std::uint64_t detached = 0;
  std::chrono::nanoseconds total_wait_time{0};
  std::chrono::nanoseconds max_wait_time{0};
};

/// Why an acquire did not get a connection (the exception is built after the lock is released).
enum class Failure { none, timeout, closed, cancelled };

/// The shared state of a ConnectionPool: everything but the owning wrapper.
///
/// Heap-allocated, and deleted by whichever comes last of the ConnectionPool's destructor and
/// the give-back of the last outstanding handle: that is what lets handles outlive the pool.
///
/// Invariants (with mutex_ held):
///   open_ = connections that exist (idle, handed out, being validated or closed by an
///           acquirer) + creations in flight; open_ <= max_size.
///   waiters_ is non-empty only while idle_ is empty and open_ == max_size: a connection or a
///   unit of capacity that becomes free goes to the oldest waiter before anyone else.
template <class Conn, class Factory, class Clock>
class PoolCore final : public HandleOwner<Conn> {
 public:
  using SlotT = Slot<Conn, Clock>;
  using WaiterT = Waiter<Conn, Clock>;
  using Handle = PooledHandle<Conn>;
  using WaitClock = std::chrono::steady_clock;
  using traits = connection_traits<Conn>;

  PoolCore(Factory factory, const PoolOptions& options)
      : factory_(std::move(factory)), options_(options) {}

  PoolCore(const PoolCore&) = delete;
  PoolCore& operator=(const PoolCore&) = delete;

  ~PoolCore() {
    // Reached when no handle is out and the owner is gone, or when construction failed.
    close();
    if (thread_.joinable()) {
      // close() was called from the maintenance thread itself (by a factory, say), which
      // therefore could not join itself; it is finishing its last pass.
      if (thread_.get_id() == std::this_thread::get_id()) {
        thread_.detach();
      } else {
        thread_.join();
      }
    }
  }

  const PoolOptions& options() const noexcept { return options_; }

  /// Opens min_size connections (DESIGN 1). With fail_fast, the first factory exception
  /// propagates; without, warm-up stops at the first failure and maintenance refills later.
  void warm_up() {
    for (std::size_t i = 0; i < options_.min_size; ++i) {
      {
        UniqueLock lk(mutex_);
        ++open_;
      }
      SlotT* s = nullptr;
      try {
        s = create_slot();
      } catch (...) {
        UniqueLock lk(mutex_);
        --open_;
        ++counters_.create_failures;
        if (options_.fail_fast) {
          throw;
        }
        return;
      }
      UniqueLock lk(mutex_);
      ++counters_.created;
      idle_.push_front(s);
    }
  }

  /// Starts the maintenance thread when health_check_interval > 0 (DESIGN 8).
  void start_maintenance() {
    if (options_.health_check_interval.count() > 0) {
      thread_ = std::thread([this] { maintenance_loop(); });
    }
  }

  /// The acquire algorithm behind acquire() and try_acquire().
  ///
  /// `timeout` is nullopt for try_acquire (never wait for another holder); only then is the
  /// result nullopt.
  std::optional<Handle> acquire(std::optional<WaitClock::duration> timeout,
                                const std::stop_token* stop) CONNPOOL_EXCLUDES(mutex_) {
    // Why the waiter, the deadline and the stop callback live out here: the callback must be
    // registered without holding mutex_ (it runs inline when stop was already requested, and it
    // locks mutex_), and destroyed after mutex_ is released (its destructor waits for a
    // callback running in another thread, which needs mutex_).
    WaiterT waiter;
    std::optional<WaitClock::time_point> deadline;
    std::optional<std::stop_callback<CancelWaiter>> cancel;
    bool have_capacity = false;  // this caller holds one unit of open_ and no connection

    for (;;) {
      const auto now = Clock::now();  // read outside the lock: a Clock may be user code
      SlotT* slot = nullptr;
      bool handed_over = false;
      bool fresh = false;
      Verdict verdict = Verdict::ok;
      Failure failure = Failure::none;
      Snapshot snap;
      {
        UniqueLock lk(mutex_);
        if (closed_) {
          if (have_capacity) {
            --open_;
          }
          failure = Failure::closed;
        } else if (!idle_.empty() && (have_capacity || waiters_.empty())) {
          // Reuse, LIFO (DESIGN 2). Why LIFO: the working set stays small and warm, and idle
          // connections beyond it age out (HikariCP, Go's database/sql).
          if (have_capacity) {
            have_capacity = false;
            free_capacity_locked();
          }
          slot = idle_.pop_front();
          ++in_use_;
          verdict = judge(*slot, now, open_ > options_.min_size);
          if (verdict == Verdict::ok) {
            ++counters_.acquired;
            ++counters_.reused;
            return HandleAccess::make<Conn>(this, slot);
          }
        } else if (!have_capacity) {
          if (waiters_.empty() && open_ < options_.max_size) {
            ++open_;  // reserve the place; the factory runs outside the lock (DESIGN 3)
            have_capacity = true;
          } else if (!timeout) {
            return std::nullopt;  // try_acquire never waits for another holder
          } else if (stop != nullptr && stop->stop_possible() && !cancel) {
            // Register the stop callback unlocked, then look again: the state may change.
            lk.unlock();
            cancel.emplace(*stop, CancelWaiter{this, &waiter});
            continue;
          } else {
            if (!deadline) {
              deadline = WaitClock::now() + *timeout;
            }
            failure = wait_locked(lk, waiter, *deadline, *timeout);
            if (failure == Failure::none) {
              slot = std::exchange(waiter.slot, nullptr);
              fresh = std::exchange(waiter.fresh, false);
              have_capacity = std::exchange(waiter.may_create, false);
              handed_over = slot != nullptr;
            } else if (failure == Failure::timeout) {
              snap = {in_use_, idle_.size(), waiters_.size()};
            }
          }
        }
      }
      if (failure != Failure::none) {
        throw_failure(failure, timeout.value_or(WaitClock::duration::zero()), snap);
      }
      if (slot != nullptr) {
        if (handed_over) {
          // Handed over by a releasing thread: judged here, outside the lock, like an idle one.
          verdict = judge(*slot, Clock::now(), false);
        }
        if (check_out(slot, verdict, !fresh)) {
          return HandleAccess::make<Conn>(this, slot);
        }
        have_capacity = true;  // it was closed; its place is ours to fill
        continue;
      }
      if (have_capacity) {
        // Below max_size with nothing idle: create, outside the lock (DESIGN 3).
        return create_for_caller();
      }
    }
  }

  PoolStats stats() const CONNPOOL_EXCLUDES(mutex_) {
    PoolStats s;
    UniqueLock lk(mutex_);
    s.created = counters_.created;
    s.closed = counters_.closed;
    s.acquired = counters_.acquired;
    s.reused = counters_.reused;
    s.released = counters_.released;
    s.waited = counters_.waited;
    s.timeouts = counters_.timeouts;
    s.validation_failures = counters_.validation_failures;
    s.create_failures = counters_.create_failures;
    s.close_failures = counters_.close_failures;
    s.detached = counters_.detached;
    s.total_wait_time = counters_.total_wait_time;
    s.max_wait_time = counters_.max_wait_time;
    s.idle = idle_.size();
    s.in_use = in_use_;
    s.pending = waiters_.size();
    s.max_size = options_.max_size;
    return s;
  }

  /// One maintenance pass (DESIGN 6): closes expired idle connections, then refills to
  /// min_size. Returns how many connections it closed.
  std::size_t prune() CONNPOOL_EXCLUDES(mutex_) {
    const auto now = Clock::now();
    IntrusiveList<SlotT> expired;
    {
      UniqueLock lk(mutex_);
      if (closed_) {
        return 0;
      }
      // Walk from the least recently used end, so that when idle expiry may close only some
      // connections (to keep min_size open) it closes the stalest.
      std::size_t open_after = open_;
      SlotT* s = idle_.back();
      while (s != nullptr) {
        SlotT* prev = s->prev_node;
        if (judge_expiry(*s, now, open_after > options_.min_size)) {
          idle_.remove(s);
          expired.push_back(s);
          --open_after;
        }
        s = prev;
      }
    }
    const std::size_t n = expired.size();
    close_all(expired);
    refill();
    return n;
  }

  /// DESIGN 7: idempotent. Closes idle connections now, wakes waiters with PoolClosed, and
  /// joins the maintenance thread; in-use connections are closed when they come back.
  void close() noexcept CONNPOOL_EXCLUDES(mutex_) {
    IntrusiveList<SlotT> idle;
    {
      UniqueLock lk(mutex_);
      if (closed_) {
        return;
      }
      closed_ = true;
      while (!idle_.empty()) {
        idle.push_back(idle_.pop_front());
      }
      while (!waiters_.empty()) {
        WaiterT* w = waiters_.pop_front();
        w->closed = true;
        w->cv.notify_one();  // under the lock: the waiter's node lives on its stack
      }
      maintenance_cv_.notify_all();
    }
    if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) {
      thread_.join();
    }
    close_all(idle);
  }

  /// The owning ConnectionPool is being destroyed, after close(): deletes this object now, or
  /// leaves that to the give-back of the last outstanding handle.
  void owner_gone() noexcept CONNPOOL_EXCLUDES(mutex_) {
    bool last = false;
    {
      UniqueLock lk(mutex_);
      owner_gone_ = true;
      last = in_use_ == 0;
    }
    if (last) {
      delete this;
    }
  }

  void give_back(SlotBase<Conn>* base, bool close) noexcept override CONNPOOL_EXCLUDES(mutex_) {
    auto* s = static_cast<SlotT*>(base);
    bool keep = !close;
    if constexpr (Resettable<Conn>) {
      if (keep) {
        try {
          traits::reset(s->conn);
        } catch (...) {
          keep = false;  // a connection that cannot be reset must not reach the next borrower
        }
      }
    }
    if (keep) {
      const auto now = Clock::now();
      if (options_.max_lifetime.count() > 0 && now - s->created_at >= options_.max_lifetime) {
        keep = false;  // DESIGN 6: an expired connection is closed, not kept
      } else {
        s->last_used = now;
        UniqueLock lk(mutex_);
        if (!closed_) {
          ++counters_.released;
          if (!waiters_.empty()) {
            // Direct hand-off to the oldest waiter (DESIGN 4): no barging. in_use_ stays as it
            // is: the connection goes from one holder to the next.
            WaiterT* w = waiters_.pop_front();
            w->slot = s;
            w->cv.notify_one();  // under the lock: the waiter's node lives on its stack
          } else {
            idle_.push_front(s);
            --in_use_;
          }
          return;
        }
      }
    }
    // Closed instead of returned: invalidated, reset failed, expired, or the pool is closed.
    const bool close_failed = !destroy_slot(s);
    bool last = false;
    {
      UniqueLock lk(mutex_);
      ++counters_.released;
      ++counters_.closed;
      counters_.close_failures += close_failed ? 1 : 0;
      --in_use_;
      free_capacity_locked();
      last = owner_gone_ && in_use_ == 0;
    }
    if (last) {
      delete this;
    }
  }

  void forget(SlotBase<Conn>* base) noexcept override CONNPOOL_EXCLUDES(mutex_) {
    delete static_cast<SlotT*>(base);  // destroys the moved-from Conn, outside the lock
    bool last = false;
    {
      UniqueLock lk(mutex_);
      ++counters_.detached;
      --in_use_;
      free_capacity_locked();
      last = owner_gone_ && in_use_ == 0;
    }
    if (last) {
      delete this;
    }
  }

 private:
  enum class Verdict { ok, needs_ping, expired };

  /// The pool's counts when an acquire timed out, for the exception's message.
  struct Snapshot {
    std::size_t in_use = 0;
    std::size_t idle = 0;
    std::size_t waiting = 0;
  };

  /// Marks a waiter cancelled and wakes it; run by std::stop_callback in the requesting thread.
  struct CancelWaiter {
    PoolCore* core;
    WaiterT* waiter;
    void operator()() const noexcept { core->cancel_waiter(*waiter); }
  };

  void cancel_waiter(WaiterT& w) noexcept CONNPOOL_EXCLUDES(mutex_) {
    UniqueLock lk(mutex_);
    w.cancelled = true;
    w.cv.notify_one();  // under the lock: the waiter's node lives on its stack
  }

  /// Whether `s` has outlived max_lifetime, or max_idle while the pool may shrink (DESIGN 6).
  bool judge_expiry(const SlotT& s,
                    typename Clock::time_point now,
                    bool may_idle_expire) const noexcept {
    if (options_.max_lifetime.count() > 0 && now - s.created_at >= options_.max_lifetime) {
      return true;
    }
    return may_idle_expire && options_.max_idle.count() > 0 &&
           now - s.last_used >= options_.max_idle;
  }

  /// What an acquirer must do with connection `s` before handing it out (DESIGN 5, 6).
  Verdict judge(const SlotT& s,
                typename Clock::time_point now,
                bool may_idle_expire) const noexcept {
    if (judge_expiry(s, now, may_idle_expire)) {
      return Verdict::expired;
    }
    if constexpr (Pingable<Conn>) {
      // Why the bypass: a connection used a moment ago is almost surely alive, and a ping is a
      // network round trip (HikariCP's aliveBypassWindowMs, 500 ms by default there too).
      if (options_.validate_on_acquire && now - s.last_used >= options_.validation_bypass) {
        return Verdict::needs_ping;
      }
    }
    return Verdict::ok;
  }

  /// Finishes the check-out of `s` (already counted in in_use_), outside the lock: pings it if
  /// `verdict` says so. Returns true when it may be handed out; otherwise closes it, keeping its
  /// unit of open_ for the caller, and returns false. `reused`: an existing connection (not one
  /// created for this caller by maintenance).
  bool check_out(SlotT* s, Verdict verdict, bool reused) noexcept CONNPOOL_EXCLUDES(mutex_) {
    bool failed_validation = false;
    if constexpr (Pingable<Conn>) {
      if (verdict == Verdict::needs_ping) {
        bool alive = false;
        try {
          alive = static_cast<bool>(traits::ping(s->conn));
        } catch (...) {
          alive = false;  // DESIGN 5: an exception is a failed ping
        }
        verdict = alive ? Verdict::ok : Verdict::expired;
        failed_validation = !alive;
      }
    }
    if (verdict == Verdict::ok) {
      UniqueLock lk(mutex_);
      if (!closed_) {
        ++counters_.acquired;
        counters_.reused += reused ? 1 : 0;
        return true;
      }
    }
    const bool close_failed = !destroy_slot(s);
    UniqueLock lk(mutex_);
    ++counters_.closed;
    counters_.close_failures += close_failed ? 1 : 0;
    counters_.validation_failures += failed_validation ? 1 : 0;
    --in_use_;
    return false;
  }

  /// Creates a connection for an acquirer that holds a unit of open_.
  Handle create_for_caller() CONNPOOL_EXCLUDES(mutex_) {
    SlotT* s = nullptr;
    try {
      s = create_slot();
    } catch (...) {
      // DESIGN 3: the exception reaches the caller unchanged, and the place is freed.
      UniqueLock lk(mutex_);
      ++counters_.create_failures;
      free_capacity_locked();
      throw;
    }
    {
      UniqueLock lk(mutex_);
      ++counters_.created;
      if (!closed_) {
        ++counters_.acquired;
        ++in_use_;
        return HandleAccess::make<Conn>(this, s);
      }
    }
    // The pool closed while the factory ran.
    const bool close_failed = !destroy_slot(s);
    {
      UniqueLock lk(mutex_);
      ++counters_.closed;
      counters_.close_failures += close_failed ? 1 : 0;
      --open_;
    }
    throw PoolClosed();
  }

  /// Calls the factory and wraps its connection. Never called with the lock held.
  SlotT* create_slot() {
    auto* s = new SlotT(std::invoke(factory_));
    s->created_at = Clock::now();
    s->last_used = s->created_at;
    return s;
  }

  /// Closes and frees `s`. Never called with the lock held. Returns false if close() threw
  /// (DESIGN 10: swallowed, and counted by the caller).
  static bool destroy_slot(SlotT* s) noexcept {
    bool ok = true;
    if constexpr (Closeable<Conn>) {
      try {
        traits::close(s->conn);
      } catch (...) {
        ok = false;
      }
    }
    delete s;
    return ok;
  }

  /// Closes every connection in `slots` (taken out of idle_ by the caller) and frees their
  /// places.
  void close_all(IntrusiveList<SlotT>& slots) noexcept CONNPOOL_EXCLUDES(mutex_) {
    if (slots.empty()) {
      return;
    }
    std::uint64_t n = 0;
    std::uint64_t failures = 0;
    while (!slots.empty()) {
      ++n;
      failures += destroy_slot(slots.pop_front()) ? 0 : 1;
    }
    UniqueLock lk(mutex_);
    counters_.closed += n;
    counters_.close_failures += failures;
    for (std::uint64_t i = 0; i < n; ++i) {
      free_capacity_locked();
    }
  }

  /// A unit of open_ is free: it goes to the oldest waiter, which then creates a connection;
  /// with nobody waiting, open_ shrinks.
  void free_capacity_locked() CONNPOOL_REQUIRES(mutex_) {
    if (!waiters_.empty()) {
      WaiterT* w = waiters_.pop_front();
      w->may_create = true;
      w->cv.notify_one();  // under the lock: the waiter's node lives on its stack
    } else {
      --open_;
    }
  }

  /// Opens connections until min_size are open. Failures are counted and end the pass.
  void refill() noexcept CONNPOOL_EXCLUDES(mutex_) {
    for (;;) {
      {
        UniqueLock lk(mutex_);
        if (closed_ || open_ >= options_.min_size) {
          return;
        }
        ++open_;
      }
      SlotT* s = nullptr;
      try {
        s = create_slot();
      } catch (...) {
        UniqueLock lk(mutex_);
        ++counters_.create_failures;
        free_capacity_locked();
        return;
      }
      UniqueLock lk(mutex_);
      ++counters_.created;
      if (closed_) {
        lk.unlock();
        const bool close_failed = !destroy_slot(s);
        UniqueLock relock(mutex_);
        ++counters_.closed;
        counters_.close_failures += close_failed ? 1 : 0;
        --open_;
        return;
      }
      if (!waiters_.empty()) {
        WaiterT* w = waiters_.pop_front();
        w->slot = s;
        w->fresh = true;
        ++in_use_;
        w->cv.notify_one();  // under the lock: the waiter's node lives on its stack
      } else {
        idle_.push_front(s);
      }
    }
  }

  /// Blocks until `w` is granted a connection or capacity, or fails. Called with the lock held
  /// and `w` unlinked; returns with the lock held and `w` unlinked.
  Failure wait_locked(UniqueLock& lk,
                      WaiterT& w,
                      WaitClock::time_point deadline,
                      WaitClock::duration timeout) CONNPOOL_REQUIRES(mutex_) {
    if (w.cancelled) {
      return Failure::cancelled;
    }
    waiters_.push_back(&w);
    ++counters_.waited;
    for (;;) {
      if (w.granted()) {
        // Counted now, whatever the check-out then finds: this is how long the caller waited.
        const auto waited = std::chrono::duration_cast<std::chrono::nanoseconds>(
            WaitClock::now() - (deadline - timeout));
        counters_.total_wait_time += waited;
        if (waited > counters_.max_wait_time) {
          counters_.max_wait_time = waited;
        }
        return Failure::none;
      }
      if (w.closed) {
        return Failure::closed;  // close() unlinked it
      }
      if (w.cancelled) {
        waiters_.remove(&w);
        return Failure::cancelled;
      }
      if (w.cv.wait_until(lk.native(), deadline) == std::cv_status::timeout && !w.granted() &&
          !w.closed && !w.cancelled) {
        waiters_.remove(&w);
        ++counters_.timeouts;
        return Failure::timeout;
      }
    }
  }

  [[noreturn]] void throw_failure(Failure f,
                                  WaitClock::duration timeout,
                                  const Snapshot& snap) const {
    switch (f) {
      case Failure::closed:
        throw PoolClosed();
      case Failure::cancelled:
        throw AcquireCancelled("connpool: acquire cancelled through its stop_token");
      case Failure::timeout:
      case Failure::none:
        break;
    }
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(timeout).count();
    throw AcquireTimeout(
        "connpool: acquire timed out after " + std::to_string(ms) + " ms (in use " +
        std::to_string(snap.in_use) + ", idle " + std::to_string(snap.idle) + ", max_size " +
        std::to_string(options_.max_size) + ", waiting " + std::to_string(snap.waiting) + ")");
  }

  /// The maintenance thread (DESIGN 8): a pass every health_check_interval until close().
  void maintenance_loop() noexcept CONNPOOL_EXCLUDES(mutex_) {
    UniqueLock lk(mutex_);
    while (!closed_) {
      const auto next = WaitClock::now() + options_.health_check_interval;
      while (!closed_ &&
             maintenance_cv_.wait_until(lk.native(), next) == std::cv_status::no_timeout) {
      }
      if (closed_) {
        break;
      }
      lk.unlock();
      prune();
      lk.lock();
    }
  }

  Factory factory_;            // called outside the lock, possibly from several threads at once
  const PoolOptions options_;  // immutable after construction

  mutable Mutex mutex_;  // guards idle_, waiters_, open_, in_use_, closed_, owner_gone_, counters_
                         // and the fields of every queued Waiter
  IntrusiveList<SlotT> idle_ CONNPOOL_GUARDED_BY(mutex_);       // LIFO: front = most recent
  IntrusiveList<WaiterT> waiters_ CONNPOOL_GUARDED_BY(mutex_);  // FIFO: front = oldest
  std::size_t open_ CONNPOOL_GUARDED_BY(mutex_) = 0;
  std::size_t in_use_ CONNPOOL_GUARDED_BY(mutex_) = 0;
  bool closed_ CONNPOOL_GUARDED_BY(mutex_) = false;
  bool owner_gone_ CONNPOOL_GUARDED_BY(mutex_) = false;
  Counters counters_ CONNPOOL_GUARDED_BY(mutex_);
  std::condition_variable maintenance_cv_;  // waited on with mutex_; notified by close()
  std::thread thread_;                      // maintenance; started after warm-up, joined by close()
};

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
/// nobody else. At max_size, callers queue FIFO, each on its own condition variable, and a
/// released connection is handed straight to the oldest waiter (no barging). Idle connections
/// are pinged before use unless used within validation_bypass, and closed when older than
/// max_lifetime or idle longer than max_idle (above min_size). A background thread runs
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
  ~ConnectionPool() {
    core_->close();
    core_->owner_gone();
  }

  /// Borrows a connection, waiting up to options().acquire_timeout.
  ///
  /// Throws: AcquireTimeout, PoolClosed, or the factory's exception (unchanged).
  [[nodiscard]] PooledHandle<Conn> acquire() {
    return *core_->acquire(detail::to_wait_duration(core_->options().acquire_timeout), nullptr);
  }

  /// Borrows a connection, waiting up to `timeout` (0 = fail at once rather than wait).
  ///
  /// Throws: std::invalid_argument if `timeout` is negative; AcquireTimeout; PoolClosed; the
  /// factory's exception (unchanged).
  template <class Rep, class Period>
  [[nodiscard]] PooledHandle<Conn> acquire(std::chrono::duration<Rep, Period> timeout) {
    return *core_->acquire(detail::to_wait_duration(timeout), nullptr);
  }

  /// As acquire(timeout), and a stop request on `stop` ends the wait with AcquireCancelled.
  /// A connection available without waiting is returned even if stop was already requested.
  template <class Rep, class Period>
  [[nodiscard]] PooledHandle<Conn> acquire(std::chrono::duration<Rep, Period> timeout,
                                           std::stop_token stop) {
    return *core_->acquire(detail::to_wait_duration(timeout), &stop);
  }

  /// Borrows an idle connection, or creates one below max_size; never waits for another
  /// holder. Returns nullopt when the pool is exhausted.
  ///
  /// Throws: PoolClosed; the factory's exception (unchanged).
  [[nodiscard]] std::optional<PooledHandle<Conn>> try_acquire() {
    return core_->acquire(std::nullopt, nullptr);
  }

  /// A snapshot of the counters and gauges.
  [[nodiscard]] PoolStats stats() const { return core_->stats(); }

  /// One maintenance pass now: closes expired idle connections and refills to min_size.
  /// Returns the number of connections closed.
  std::size_t prune() { return core_->prune(); }

  /// Closes the pool (DESIGN 7). Idempotent; the destructor calls it.
  void close() noexcept { core_->close(); }

  [[nodiscard]] const PoolOptions& options() const noexcept { return core_->options(); }

 private:
  static Core* make_core(Factory factory, const PoolOptions& options) {
    options.validate();
    std::unique_ptr<Core> core(new Core(std::move(factory), options));
    core->warm_up();
    core->start_maintenance();
    return core.release();
  }

  Core* core_;  // owned; shared with outstanding handles (see detail::PoolCore)
};

template <class F>
ConnectionPool(F, PoolOptions) -> ConnectionPool<std::decay_t<std::invoke_result_t<F&>>, F>;

template <class F>
ConnectionPool(F) -> ConnectionPool<std::decay_t<std::invoke_result_t<F&>>, F>;

}  // namespace connpool
