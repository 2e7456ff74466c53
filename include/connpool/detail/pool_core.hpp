// connpool - the shared state and algorithms of a pool
// SPDX-License-Identifier: MIT
#pragma once

// detail::PoolCore<Conn, Factory, Clock>: slots, the per-thread hint, the idle stack, the waiter
// queue, capacity accounting, maintenance and close. ConnectionPool (pool.hpp) is a thin owner
// of one PoolCore; handles reach it through detail::HandleOwner (slot.hpp).

#include <algorithm>
#include <atomic>
#include <cassert>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <connpool/concepts.hpp>
#include <connpool/detail/awaitable.hpp>
#include <connpool/detail/clock.hpp>
#include <connpool/detail/connect_gate.hpp>
#include <connpool/detail/connection_ops.hpp>
#include <connpool/detail/counters.hpp>
#include <connpool/detail/expiry.hpp>
#include <connpool/detail/failure.hpp>
#include <connpool/detail/intrusive_list.hpp>
#include <connpool/detail/pool_slot.hpp>
#include <connpool/detail/recent_histogram.hpp>
#include <connpool/detail/resume_queue.hpp>
#include <connpool/detail/slot.hpp>
#include <connpool/detail/slot_directory.hpp>
#include <connpool/detail/thread_annotations.hpp>
#include <connpool/detail/thread_hint.hpp>
#include <connpool/detail/waiter.hpp>
#include <connpool/detail/waiter_queue.hpp>
#include <connpool/errors.hpp>
#include <connpool/events.hpp>
#include <connpool/handle.hpp>
#include <connpool/options.hpp>
#include <connpool/stats.hpp>

namespace connpool::detail {

/// How many times a caller about to sleep in acquire() yields its processor first, watching for
/// a hand-off, before it parks on its condition variable.
///
/// Why: when threads outnumber cores, a strict FIFO hand-off to a parked thread costs a futex
/// wake-up and a context switch per connection, and throughput falls to an eighth of a barging
/// pool's; a waiter that is still spinning when its turn comes takes the connection at once.
/// Yielding rather than busy-spinning lets the holder run on the same core (the idea of
/// adaptive mutexes and of Go's sync.Mutex spinning). Measured on the W3 benchmark (16 threads,
/// 4 connections, 2 cores): 0.1 M cycles/s without, 0.55 M with 4 to 64 yields.
inline constexpr int wait_spin_yields = 16;

/// Under WaitPolicy::fifo, a caller about to sleep spins first (wait_spin_yields) only while the
/// recent mean wait is below this (WaiterQueue::should_spin() says why). Measured on PostgreSQL
/// with a pool of 4 (bench/README.md): mean waits of about 0.5 ms (16 threads) gain from the
/// spin, waits of about 3 ms (64 threads) lose by it; 200 us made the 16-thread case lose
/// throughput, 1 ms kept it and the 64-thread gain. W3 (waits of microseconds) always spins.
inline constexpr std::chrono::microseconds wait_spin_limit{1'000};

/// For tests only: when set, called by a releaser on entering PoolCore::after_publish_slow(),
/// with the core's count, so that a test can hold it in the window between publishing a
/// connection and taking the lock, while other threads close and free the pool. Read with one
/// relaxed load on that slow path; null (nothing called) unless a test sets it.
inline std::atomic<void (*)(const std::atomic<std::size_t>& refs)> after_publish_seam{nullptr};

/// The shared state of a ConnectionPool.
///
/// Where an idle connection can be found, fastest first:
///   1. the releasing thread's hint (ThreadHint): a compare-exchange on the slot's state, no
///      lock, no shared write but that one cache line;
///   2. the idle stack idle_ (LIFO, under mutex_): slots a thread released while its hint was
///      taken, in release order. Entries may be stale (claimed through a hint or a scan since);
///      a pop skips those;
///   3. a scan of all slots, for an idle slot sitting in another thread's hint.
/// Then creation below max_size, then the FIFO waiter queue. Every slot with a connection is in
/// exactly one of kIdle or kInUse, and a caller about to sleep scans again after queueing, so
/// an idle connection is never stranded while someone waits: a releaser publishes kIdle and
/// then reads the waiter count, a waiter raises it and then scans, both sequentially
/// consistent (Dekker), so at least one of them sees the other.
///
/// Lifetime: heap-allocated, and reference-counted (refs_). The count is held by the owner (one,
/// dropped by release_owner()), by every unit of capacity (one per connection open or being
/// opened, so every handle out keeps the core alive), by each internal thread while it runs, by
/// each asynchronous acquire in flight, and by every call that may free a unit of capacity
/// while it runs (CoreRef). The one route to deletion is unref() taking the count to zero;
/// destroy() then waits for releasers still between publishing a slot and their last access
/// (Slot::publishers), which hold no count so that the fast path writes no shared line. So
/// handles may outlive the pool, and user code anywhere in the pool (a hook, a ping, a coroutine
/// resumed inline) may close or destroy it: the thread it runs on still holds a count.
/// Units of capacity are only given up under the lock by a thread that holds another count, so
/// the count never reaches zero under the lock.
///
/// Invariants (with mutex_ held):
///   open_ = slots holding a connection + creations in flight; open_ <= max_size.
///   Slots allocated <= open_ + free slots, and never more than max_size.
///   Under WaitPolicy::fifo, waiters_ is non-empty only while nothing is idle and
///   open_ == max_size; a connection or a unit of capacity that becomes free goes to the oldest
///   waiter before anyone else.
template <class Conn, class Factory, class Clock>
class PoolCore final : public HandleOwner<Conn>, private HintAdopter {
 public:
  using SlotT = Slot<Conn, Clock>;
  using WaiterT = Waiter<Conn, Clock>;
  using Handle = PooledHandle<Conn>;
  using WaitClock = std::chrono::steady_clock;
  using TimePoint = typename Clock::time_point;
  using traits = connection_traits<Conn>;

  PoolCore(Factory factory, const PoolOptions& options)
      : options_(options),
        ops_(std::move(factory), options_),
        fifo_(options.wait_policy == WaitPolicy::fifo || options.starvation_bound.count() == 0),
        uses_ages_(options.max_lifetime.count() > 0 || options.max_idle.count() > 0 ||
                   (Pingable<Conn> &&
                    (options.validate_on_acquire || options.keepalive_interval.count() > 0))),
        times_use_(options.record_use_time),
        tracks_sites_(options.leak_threshold.count() > 0),
        id_(next_pool_id.fetch_add(1, std::memory_order_relaxed)),
        max_uses_(options.max_uses),
        slots_(options.max_size),
        max_size_(options.max_size),
        min_size_(options.min_size),
        waiters_(fifo_, options.starvation_bound),
        gate_(options.max_connecting, options.max_connect_backoff) {
    PoolRegistry::instance().add(id_, this);
  }

  PoolCore(const PoolCore&) = delete;
  PoolCore& operator=(const PoolCore&) = delete;

  ~PoolCore() {
    // Reached through destroy() only: the count is zero, so the owner closed the pool, no
    // connection is open, and no internal thread runs any more (one that let go last is
    // returning from run_internal() on this very thread, and cannot join itself).
    PoolRegistry::instance().remove(id_);
    for (std::jthread* t : {&thread_, &timer_}) {
      if (t->joinable()) {
        if (t->get_id() == std::this_thread::get_id()) {
          t->detach();
        } else {
          t->join();
        }
      }
    }
  }

  const PoolOptions& options() const noexcept { return options_; }

  /// Opens min_size connections (DESIGN 1). With fail_fast, the first factory exception
  /// propagates; without, warm-up stops at the first failure and maintenance refills later.
  void warm_up() {
    for (std::size_t i = 0; i < min_size_.load(std::memory_order_relaxed); ++i) {
      if (!add_idle_connection(options_.fail_fast)) {
        return;
      }
    }
  }

  /// Starts the maintenance thread when health_check_interval > 0 (DESIGN 8).
  void start_maintenance();

  // --- Lifetime (see the class comment) ------------------------------------------------------

  /// A count on the core, held for a scope: by calls that may give up units of capacity, and by
  /// asynchronous acquires in flight. Dropping the last one frees the core.
  class CoreRef;

  /// A unit of capacity (a place under max_size, with its count on the core), and the connect
  /// permit to fill it, held by one caller between the decision under the lock and the connect
  /// outside it. Dropped while it holds either, it gives them back (to the oldest waiter, say),
  /// so that no exception (a factory's, a throwing move of Conn, std::bad_alloc) can lose one.
  /// The core takes and ends them under its lock (take_capacity_locked(), take_permit_locked(),
  /// drop_locked(), and the create path, where the unit passes to the new connection's slot).
  /// Move-only; used by one thread at a time.
  class Reservation;

  /// The owner (ConnectionPool, AsyncConnectionPool) lets go: closes the pool, waits for the
  /// internal threads (except the one this runs on, when a hook or an inline-resumed coroutine
  /// destroys the pool from it: that thread holds its own count and ends its loop afterwards),
  /// then drops the owner's count. The core may be gone when it returns.
  void release_owner() noexcept CONNPOOL_EXCLUDES(mutex_) {
    close();
    join_internal_threads(true);
    unref();
  }

  /// The acquire algorithm behind acquire() and try_acquire().
  ///
  /// `timeout` is nullopt for try_acquire (never wait for another holder); only then is the
  /// result nullopt.
  std::optional<Handle> acquire(std::optional<WaitClock::duration> timeout,
                                const std::stop_token* stop) CONNPOOL_EXCLUDES(mutex_) {
    bool have_capacity = false;
    if (std::optional<Handle> h = acquire_fast(have_capacity)) {
      return h;
    }
    return acquire_slow(timeout, stop, have_capacity);
  }

  // --- For AsyncConnectionPool (async_pool.hpp) ----------------------------------------------

  /// Everything acquire() does without waiting and without calling the factory.
  ///
  /// Returns: a handle; or nullopt with `capacity` holding a unit of capacity and a connect
  /// permit, when the caller must create a connection (create_for_caller(), or begin_create()
  /// and what follows); or nullopt with `capacity` empty, when it must queue (enqueue_async()).
  /// Throws: PoolClosed.
  std::optional<Handle> acquire_nowait(Reservation& capacity) CONNPOOL_EXCLUDES(mutex_);

  /// Checks out a slot claimed for, or handed to, a caller (DESIGN 5, 6) that waited `waited`
  /// for it (Waiter::waited; 0: served at once). Returns nullopt when it was closed instead;
  /// its unit of capacity then passes to `capacity`.
  std::optional<Handle> check_out_granted(SlotT* slot,
                                          bool fresh,
                                          Reservation& capacity,
                                          std::chrono::nanoseconds waited = {})
      CONNPOOL_EXCLUDES(mutex_);

  /// Queues the asynchronous waiter `w`, whose completion is `complete`, with an optional
  /// deadline, unless it can be served at once.
  ///
  /// Returns: true if queued: `complete` runs once (outside the lock, on the thread that decided)
  /// when it is served, times out, is cancelled (cancel_waiter()) or the pool closes; the fields
  /// of `w` then say which. False if nothing was queued because it was served at once, with
  /// the same fields set (a slot, capacity, closed, cancelled or timed out).
  bool enqueue_async(WaiterT& w,
                     void (*complete)(Resumable*) noexcept,
                     std::optional<WaitClock::time_point> deadline) CONNPOOL_EXCLUDES(mutex_);

  /// The asynchronous waiter `w` is abandoned (the coroutine awaiting it was destroyed): takes it
  /// off the queue if it waits there. Returns true if it did: nothing will complete `w`. False if
  /// it is not queued: its wait ended and its completion is pending (or ran), or it is not
  /// waiting at all.
  bool withdraw_async(WaiterT& w) noexcept CONNPOOL_EXCLUDES(mutex_);

  /// `r` takes over the unit of capacity of a connection the caller closed instead of handing
  /// it out (a failed check-out).
  void adopt_capacity(Reservation& r) noexcept {
    r.core_ = this;
    r.capacity_ = true;
  }

  /// `r` takes over a unit of capacity and a connect permit granted to a waiter (may_create).
  void adopt_grant(Reservation& r) noexcept {
    adopt_capacity(r);
    r.permit_ = true;
  }

  /// For an acquirer whose connection failed its check-out and who so holds a unit of capacity:
  /// takes a connect permit into `r` and returns true (the caller connects), or, when none is
  /// free, gives the capacity up and returns false (the caller queues again).
  bool permit_for(Reservation& r) CONNPOOL_EXCLUDES(mutex_);

  /// Starts the thread that ends asynchronous waits at their deadlines (AsyncConnectionPool).
  void start_timer() { timer_ = start_internal(&PoolCore::timer_loop); }

  PoolStats stats() const CONNPOOL_EXCLUDES(mutex_);

  /// ConnectionPool::in_use_report(): every connection out of the pool now. Lock-free (the
  /// slots' atomics), like the leak scan.
  std::vector<InUseConnection> in_use_report() const;

  /// The acquire that follows on this thread was called at `site` (recorded at its check-out
  /// when leak_threshold is set; otherwise nothing).
  void note_site(const call_site& site) const noexcept {
    if (tracks_sites_) [[unlikely]] {
      pending_acquire_site() = source_location(site);
    }
  }

  /// The health() of a front, once it has tried to acquire and give back a connection:
  /// `acquire_error` is why that failed (empty: it worked). Fills the figures (the p99 wait over
  /// about the last minute, in_use, max_size, the last connect error) and decides ok.
  HealthReport health_report(std::string acquire_error) CONNPOOL_EXCLUDES(mutex_);

  /// One maintenance pass (DESIGN 6): closes expired idle connections, pings those due for a
  /// keepalive (PoolOptions::keepalive_interval), then refills to min_size. Returns how many
  /// connections it closed.
  std::size_t prune() CONNPOOL_EXCLUDES(mutex_);

  /// Changes max_size at run time. Growing lets waiters create connections at once; shrinking
  /// closes idle connections above the new bound now and in-use ones as they come back, and
  /// holds new creations until the pool is below it.
  ///
  /// Throws: std::invalid_argument if `n` is 0 or below min_size.
  void set_max_size(std::size_t n) CONNPOOL_EXCLUDES(mutex_);

  /// Changes min_size at run time; raising it opens connections now (on this thread).
  ///
  /// Throws: std::invalid_argument if `n` exceeds max_size.
  void set_min_size(std::size_t n) CONNPOOL_EXCLUDES(mutex_);

  /// Closes every connection open now, as soon as it is idle: the idle ones at once, those in
  /// use when they are given back (or found by an acquire), without stopping service; then
  /// refills to min_size. Connections being opened now count as open now. For a credentials
  /// rotation or a failover. Returns how many it closed at once.
  std::size_t evict_all() CONNPOOL_EXCLUDES(mutex_) { return evict(false); }

  /// evict_all(), and every caller waiting now fails at once with PoolCleared (for a failover:
  /// whatever it would get comes from the old server). Returns how many idle connections it
  /// closed at once.
  std::size_t clear() CONNPOOL_EXCLUDES(mutex_) { return evict(true); }

  /// evict_all(), and with `fail_waiters` clear().
  std::size_t evict(bool fail_waiters) CONNPOOL_EXCLUDES(mutex_);

  /// Stops handing out connections until resume(): acquires queue (and time out saying the pool
  /// is paused), try_acquire finds nothing, nothing is opened (maintenance does not refill);
  /// handles out work and come back as usual, to the idle set. Idempotent.
  void pause() noexcept CONNPOOL_EXCLUDES(mutex_);

  /// Ends a pause: the waiters are served at once, oldest first, from the idle connections and,
  /// below max_size, with capacity to connect. Idempotent.
  void resume() noexcept CONNPOOL_EXCLUDES(mutex_);

  /// Pauses, closes the idle connections, and waits until no connection is open, those in use
  /// being closed as they come back: true; false if `timeout` passes first. Stays paused.
  bool drain(WaitClock::duration timeout) CONNPOOL_EXCLUDES(mutex_);

  /// The asynchronous drain (AsyncConnectionPool::drain()): pauses, closes the idle
  /// connections, and returns false if nothing is open (or the pool is closed) with `d->result`
  /// set and the pool's share of `d` dropped; else links `d`, which completes (queued in
  /// resume_queue()) when nothing is open any more, at `d->until`, or on close().
  bool begin_async_drain(DrainWaiter* d) CONNPOOL_EXCLUDES(mutex_);

  /// The awaiter of `d` is being destroyed: true if `d` was still waiting (it is unlinked, and
  /// the pool's share dropped); false if its outcome was decided already.
  bool cancel_async_drain(DrainWaiter* d) noexcept CONNPOOL_EXCLUDES(mutex_);

  /// Whether pause() is in force. Lock-free.
  bool paused() const noexcept { return waiters_paused(); }

  /// DESIGN 7: idempotent. Closes idle connections now, wakes waiters with PoolClosed, and
  /// joins the maintenance thread; in-use connections are closed when they come back.
  void close() noexcept CONNPOOL_EXCLUDES(mutex_);

  void give_back(SlotBase<Conn>* base, bool close) noexcept override CONNPOOL_EXCLUDES(mutex_);

  /// PooledHandle::fail(): on_error decides (keep, evict, or clear and evict).
  ErrorAction fail(SlotBase<Conn>* base, std::exception_ptr error) noexcept override
      CONNPOOL_EXCLUDES(mutex_);

  void forget(SlotBase<Conn>* base) noexcept override CONNPOOL_EXCLUDES(mutex_);

 private:
  enum class Verdict { ok, needs_ping, expired };

  /// Marks a waiter cancelled and wakes it; run by std::stop_callback in the requesting thread.
  struct CancelWaiter {
    PoolCore* core;
    WaiterT* waiter;
    void operator()() const noexcept { core->cancel_waiter(*waiter, false); }
  };

  // --- Claims, hints, publication -------------------------------------------------------------

  static bool try_claim(SlotT* s) noexcept {
    std::uint32_t expected = kIdle;
    return s->state.compare_exchange_strong(expected, kInUse, std::memory_order_seq_cst,
                                            std::memory_order_relaxed);
  }

  /// Whether a caller may take an idle connection without queueing: under fifo only while
  /// nobody waits; under bounded_barging unless the oldest waiter is starving.
  bool may_barge() const noexcept CONNPOOL_NO_THREAD_SAFETY_ANALYSIS {
    return waiters_.may_barge();  // lock-free: the queue's atomic mirrors
  }

  /// Whether a releaser must hand its connection to the oldest waiter directly.
  bool must_hand_off() const noexcept CONNPOOL_NO_THREAD_SAFETY_ANALYSIS {
    return waiters_.must_hand_off();  // lock-free: the queue's atomic mirrors
  }

  /// The number of waiters, read without the lock (sequentially consistent: the Dekker pair in
  /// the class comment).
  std::size_t waiters_count() const noexcept CONNPOOL_NO_THREAD_SAFETY_ANALYSIS {
    return waiters_.count();
  }

  bool waiters_paused() const noexcept CONNPOOL_NO_THREAD_SAFETY_ANALYSIS {
    return waiters_.paused_lock_free();
  }

  bool may_idle_expire() const noexcept {
    return open_count_.load(std::memory_order_relaxed) > min_size_.load(std::memory_order_relaxed);
  }

  ThreadHint& hint() const noexcept { return thread_hints[id_ & 3]; }

  SlotT* take_hint() const noexcept;

  /// Makes the owned slot `s` idle: publishes kIdle, then serves waiters, or closes the idle
  /// connections if the pool closed meanwhile, and records `s` as this thread's hint (the slot
  /// the hint held before goes on the idle stack, so a thread's earlier releases stay reachable
  /// in LIFO order).
  void publish(SlotT* s) noexcept CONNPOOL_EXCLUDES(mutex_);

  /// A slot of this pool that was some thread's hint until it was replaced: back on the idle
  /// stack, on top, if it is still idle with the connection the hint was set for.
  void adopt_evicted_hint(void* slot, std::uint32_t incarnation) noexcept override
      CONNPOOL_EXCLUDES(mutex_);

  /// After a publish that raced with waiters or with close(): serves the waiters, or, if the
  /// pool is closed, closes every idle connection (close() may have claimed before `self` was
  /// published). Ends the publication of `self` (see Slot::publishers); the pool may be gone
  /// when it returns.
  void after_publish_slow(SlotT* self) noexcept CONNPOOL_EXCLUDES(mutex_);

  /// Claims every idle slot, for closing.
  SlotChain<SlotT> claim_all_idle_locked() CONNPOOL_REQUIRES(mutex_);

  /// Hands the owned slot `s` to the oldest waiter (DESIGN 4). Returns false if the pool is
  /// closed (the caller then closes it).
  bool hand_off(SlotT* s) noexcept CONNPOOL_EXCLUDES(mutex_);

  /// The fast path: this thread's own last connection, claimed without the lock. Returns
  /// nullopt when there is none; `have_capacity` is then set if the one it found was closed.
  std::optional<Handle> acquire_fast(bool& have_capacity) CONNPOOL_EXCLUDES(mutex_);

  // --- The slow path of acquire ----------------------------------------------------------------

  std::optional<Handle> acquire_slow(std::optional<WaitClock::duration> timeout,
                                     const std::stop_token* stop,
                                     bool had_capacity) CONNPOOL_EXCLUDES(mutex_);

  /// What an acquirer can do now, without waiting (step_locked()).
  enum class Step {
    slot,         // an idle connection was claimed: check it out
    create,       // the caller holds a unit of capacity and a connect permit: connect
    wait,         // nothing: wait in the queue
    closed,       // the pool is closed (a unit of capacity the caller held is given back)
    unavailable,  // connects back off past the caller's deadline, nothing open to wait for
  };

  /// The decision of every acquire that got past the fast path, under the lock. `res`: what the
  /// caller holds: a unit of capacity (its connection failed validation, say), and a connect
  /// permit (granted with it to a waiter); on Step::create it holds both, otherwise nothing.
  /// `deadline`: the caller's, if it may wait. On Step::unavailable, `why` says why.
  Step step_locked(Reservation& res,
                   SlotT*& slot,
                   const WaitClock::time_point* deadline,
                   Unavailable* why) CONNPOOL_REQUIRES(mutex_);

  // --- Connect-storm control (the decisions are ConnectGate's) ---------------------------------

  /// Whether a connect may start now (ConnectGate::permitted()).
  bool connect_permitted_locked(WaitClock::time_point now) const CONNPOOL_REQUIRES(mutex_) {
    return gate_.permitted(now);
  }

  /// Admission control: whether max_waiters callers wait already, so that one more is refused
  /// with PoolOverloaded instead of queueing.
  bool over_waiter_limit_locked() const CONNPOOL_REQUIRES(mutex_) {
    return options_.max_waiters != 0 && waiters_.size() >= options_.max_waiters;
  }

  /// Takes a unit of capacity into `r`.
  void take_capacity_locked(Reservation& r) CONNPOOL_REQUIRES(mutex_) {
    reserve_capacity_locked();
    r.core_ = this;
    r.capacity_ = true;
  }

  /// Takes a connect permit into `r` (the caller checked connect_permitted_locked()).
  void take_permit_locked(Reservation& r) CONNPOOL_REQUIRES(mutex_) {
    gate_.begin();
    r.core_ = this;
    r.permit_ = true;
  }

  /// Gives back what `r` holds.
  void drop_locked(Reservation& r) CONNPOOL_REQUIRES(mutex_);

  /// Reservation::reset(): gives back what `r` holds, taking the lock (and a count: the unit of
  /// capacity may be the last one).
  void give_up(Reservation& r) noexcept CONNPOOL_EXCLUDES(mutex_);

  /// A connect permit is returned: the next waiter that needs one may get it.
  void end_connect_locked() CONNPOOL_REQUIRES(mutex_) {
    gate_.give_back();
    serve_capacity_locked();
  }

  /// A connect ended: `error` is null on success. After consecutive failures connects back off
  /// (ConnectGate), waiters that cannot outlast the backoff fail early, and the others are woken
  /// when it ends.
  void connect_ended_locked(std::exception_ptr error,
                            std::shared_ptr<const std::string> what = nullptr)
      CONNPOOL_REQUIRES(mutex_);

  /// Ends, with Unavailable, the waits that cannot outlast the backoff.
  void fail_early_locked(WaitClock::time_point now) CONNPOOL_REQUIRES(mutex_);

  /// Gives waiters capacity and a connect permit while both are free (nothing idle to hand
  /// over): after a connect ended, a backoff ran out, or max_size grew.
  void serve_capacity_locked() CONNPOOL_REQUIRES(mutex_);

  /// An idle slot from the idle stack (most recent first), else from a scan of all slots.
  SlotT* claim_idle_locked() CONNPOOL_REQUIRES(mutex_);

  /// Gives idle connections to the oldest waiters. Under bounded_barging, while the oldest
  /// waiter has waited less than starvation_bound, it is only woken to compete for one.
  void serve_waiters_locked() CONNPOOL_REQUIRES(mutex_);

  /// bounded_barging: the oldest waiter starves once it has waited longer than the bound
  /// (WaiterQueue::update_starving()).
  void update_starving_locked() CONNPOOL_REQUIRES(mutex_) {
    // The clock only when the answer depends on it (WaiterQueue::may_starve()).
    waiters_.update_starving(waiters_.may_starve() ? WaitClock::now() : WaitClock::time_point{});
  }

  void grant_slot_locked(SlotT* s, bool fresh) CONNPOOL_REQUIRES(mutex_);

  /// Takes the oldest waiter off the queue, to be granted something. Under bounded_barging, a
  /// wake-up it had been given to compete for an idle connection passes to the next waiter.
  WaiterT* pop_waiter_locked() CONNPOOL_REQUIRES(mutex_);

  void pass_wake_locked(bool had_wake) CONNPOOL_REQUIRES(mutex_) {
    if (had_wake) {
      wake_front_locked();
    }
  }

  /// bounded_barging: wakes the oldest waiter to compete for an idle connection. An
  /// asynchronous one does not run until its completion does, so it is served at once instead.
  void wake_front_locked() CONNPOOL_REQUIRES(mutex_);

  /// Blocks until `w` is granted a connection or capacity, or fails. Called with the lock held
  /// and `w` unlinked; returns with the lock held and `w` unlinked.
  Failure wait_locked(UniqueLock& lk,
                      WaiterT& w,
                      WaitClock::time_point deadline,
                      WaitClock::duration timeout,
                      CoreRef& keep) CONNPOOL_REQUIRES(mutex_);

  /// A waiter got what it was granted: ends its hand-off, counts how long it waited and records
  /// it for the next waiters' spin decision. Counted now, whatever the check-out then finds: this
  /// is how long the caller waited.
  void take_up_locked(WaiterT& w) CONNPOOL_REQUIRES(mutex_);

  /// Runs this thread's queued completions without the lock.
  void drain_unlocked() CONNPOOL_REQUIRES(mutex_) {
    mutex_.unlock();  // the caller's UniqueLock still owns it: relocked below
    resume_queue().drain(true);
    mutex_.lock();
  }

  /// Yields the processor up to `spins` times, without the lock, until `w` is signalled.
  void spin_unlocked(const WaiterT& w, int spins) CONNPOOL_REQUIRES(mutex_) {
    mutex_.unlock();  // the caller's UniqueLock still owns it: relocked below
    while (spins-- > 0 && !w.signalled.load(std::memory_order_acquire)) {
      std::this_thread::yield();
    }
    mutex_.lock();
  }

  /// Unlinks a waiter that leaves on its own (it claimed a connection, timed out or was
  /// cancelled). `pass_wake`: under bounded_barging, it had been woken to compete for an idle
  /// connection, so the next waiter is woken in its place.
  void remove_waiter_locked(WaiterT& w, bool pass_wake) CONNPOOL_REQUIRES(mutex_);

  /// A stop request for the waiter `w`. A blocked thread (`async` false) is woken and leaves
  /// the queue itself. An asynchronous waiter leaves the queue now, if it waits there; one not
  /// queued yet is marked, and enqueue_async() ends its wait at once; one whose wait ended
  /// (served, timed out, closed) keeps that outcome.
  void cancel_waiter(WaiterT& w, bool async) noexcept CONNPOOL_EXCLUDES(mutex_);

 public:
  /// Ends the wait of the asynchronous waiter `w` with AcquireCancelled, unless it ended already.
  void cancel_async(WaiterT& w) noexcept CONNPOOL_EXCLUDES(mutex_) { cancel_waiter(w, true); }

 private:
  // --- Deadlines of asynchronous waiters -------------------------------------------------------

  void insert_deadline_locked(WaiterT& w, WaitClock::time_point at) CONNPOOL_REQUIRES(mutex_) {
    if (waiters_.insert_deadline(w, at)) {
      timer_cv_.notify_one();  // an earlier deadline than the timer sleeps towards
    }
  }

  void unlink_deadline_locked(WaiterT& w) CONNPOOL_REQUIRES(mutex_) { waiters_.unlink_deadline(w); }

  /// The timer thread: ends the waits whose deadlines passed with a timeout, then sleeps until
  /// the next deadline (or until one earlier is queued, or close()).
  ///
  /// Why one thread per pool rather than a timer per waiter: 10,000 waiting coroutines cost one
  /// sleeping thread and an O(1) list link each, not 10,000 timers.
  void timer_loop() noexcept CONNPOOL_EXCLUDES(mutex_);

  // --- Keepalive ------------------------------------------------------------------------------

  /// Whether the idle connection `s` has gone unused and unpinged for keepalive_interval.
  bool keepalive_due(const SlotT& s, TimePoint now) const noexcept;

  /// Pings the owned slots of `slots` outside the lock: those alive go back to the idle set
  /// (at the bottom: they had been idle longest), the others are closed. Returns how many it
  /// closed.
  std::size_t keepalive(SlotChain<SlotT> slots) noexcept CONNPOOL_EXCLUDES(mutex_);

  // --- Checks ---------------------------------------------------------------------------------

  /// Whether `s` has outlived max_lifetime, or max_idle while the pool may shrink (DESIGN 6).
  bool judge_expiry(const SlotT& s, TimePoint now, bool may_idle_expire) const noexcept {
    return lifetime_over(s.created_at, s.lifetime, now) ||
           (may_idle_expire && idle_over(s.last_used, options_.max_idle, now));
  }

  /// Why a connection opened in an earlier generation is closed: cleared if a clear() came
  /// since it was opened, else evicted (evict_all(), drain()).
  CloseReason stale_reason(const SlotT& s) const noexcept {
    return s.generation < cleared_generation_.load(std::memory_order_relaxed)
               ? CloseReason::cleared
               : CloseReason::evicted;
  }

  /// judge() at the present time, for a check-out of the owned slot `s`; stamps the check-out
  /// time with the same reading (PoolStats::use_time).
  Verdict judge_now(SlotT& s, bool may_idle_expire) const noexcept {
    if (s.generation != generation_.load(std::memory_order_relaxed)) {
      return Verdict::expired;  // evict_all() was called since it was opened
    }
    if (!uses_ages_ && !times_use_) {
      return Verdict::ok;
    }
    const TimePoint now = clock_now<Clock>();
    s.checked_out = now;
    return uses_ages_ ? judge(s, now, may_idle_expire) : Verdict::ok;
  }

  /// PoolStats::use_time (PoolOptions::record_use_time): the owned slot `s` comes back at
  /// `now`.
  void record_use(SlotT& s, TimePoint now) const noexcept {
    if (times_use_) {
      s.use_time.record(std::chrono::duration_cast<std::chrono::nanoseconds>(now - s.checked_out));
    }
  }

  /// PoolStats::wait_time: an acquire served with the owned slot `s` after waiting `waited`
  /// (0: served at once, counted by stats() without a sample).
  static void record_wait(SlotT& s, std::chrono::nanoseconds waited) noexcept {
    if (waited.count() > 0) {
      s.wait_time.record(waited);
    }
  }

  /// What an acquirer must do with connection `s` before handing it out (DESIGN 5, 6).
  Verdict judge(const SlotT& s, TimePoint now, bool may_idle_expire) const noexcept {
    if (judge_expiry(s, now, may_idle_expire)) {
      return Verdict::expired;
    }
    if constexpr (Pingable<Conn>) {
      if (options_.validate_on_acquire &&
          validation_due(s.last_used, s.last_checked, options_.validation_bypass, now)) {
        return Verdict::needs_ping;
      }
    }
    return Verdict::ok;
  }

  /// Finishes the check-out of the owned slot `s`, outside the lock: pings it if `verdict` says
  /// so. Returns true when it may be handed out; otherwise closes it, keeping its unit of
  /// capacity for the caller, and returns false. `reused`: an existing connection (not one
  /// created for this caller by maintenance).
  bool check_out(SlotT* s, Verdict verdict, bool reused) noexcept CONNPOOL_EXCLUDES(mutex_);

  // --- Creation, closing, capacity -------------------------------------------------------------

  /// Decides the asynchronous drain `d` with `result`, and queues its completion.
  void finish_drain_locked(DrainWaiter* d, bool result) CONNPOOL_REQUIRES(mutex_) {
    async_drains_.remove(d);
    --drainers_;
    d->result = result;
    resume_queue().push(d);  // complete() runs once this thread has released the lock
  }

  /// A unit of capacity is taken: one more open connection, and one more count on the core.
  void reserve_capacity_locked() CONNPOOL_REQUIRES(mutex_) {
    ++open_;
    open_count_.store(open_, std::memory_order_relaxed);
    ref();
  }

  /// A unit of capacity is given up, by a thread that holds another count (never the last).
  void release_capacity_locked() CONNPOOL_REQUIRES(mutex_) {
    --open_;
    open_count_.store(open_, std::memory_order_relaxed);
    if (open_ == 0 && drainers_ != 0) {
      drain_cv_.notify_all();
      while (DrainWaiter* d = async_drains_.front()) {
        finish_drain_locked(d, true);
      }
    }
    [[maybe_unused]] const std::size_t before = refs_.fetch_sub(1, std::memory_order_release);
    assert(before > 1 && "connpool: the last count on a pool was dropped under its lock");
  }

  /// A unit of capacity is free: it goes to the oldest waiter, which then creates a
  /// connection; with nobody waiting, open_ shrinks.
  void free_capacity_locked() CONNPOOL_REQUIRES(mutex_);

  /// Calls the factory into a slot of its own (a free one, or a new one), outside the lock; the
  /// caller holds a unit of capacity. Returns the slot in kInUse, owned by the caller, and
  /// published in slots_. On failure the slot is given back and the exception propagates; the
  /// caller still holds its unit of capacity.
  SlotT* create_slot() CONNPOOL_EXCLUDES(mutex_);

  /// A slot without a connection, owned by the caller: a free one, or a new one that is not in
  /// slots_ yet. Throws std::bad_alloc.
  SlotT* take_slot() CONNPOOL_EXCLUDES(mutex_);

  /// Gives back a slot from take_slot() whose connection could not be made.
  void give_back_slot(SlotT* s) noexcept CONNPOOL_EXCLUDES(mutex_);

  /// The owned slot `s` has its new connection: stamps it and lists it in slots_.
  void install(SlotT* s) CONNPOOL_EXCLUDES(mutex_);

  /// A connect for a caller failed with `error`: counts it, gives up the unit of capacity and
  /// returns the connect permit, both held in `r`. The caller holds another count.
  ///
  /// Why the unit is not handed to a waiter directly: the failed connect still holds its permit
  /// until connect_ended_locked(), so with max_connecting reached no waiter could take it; that
  /// function serves the waiters once the permit is back (or the backoff has started).
  void creation_failed(Reservation& r, std::exception_ptr error) noexcept CONNPOOL_EXCLUDES(mutex_);

  /// The owned slot `s` holds a connection just created for a caller (its unit of capacity is
  /// the slot's now), who waited `waited` before connecting: ends the connect of the permit in
  /// `r`, and returns the caller's handle.
  Handle hand_new(SlotT* s, Reservation& r, std::chrono::nanoseconds waited)
      CONNPOOL_EXCLUDES(mutex_);

 public:
  /// Creates a connection for an acquirer that holds a unit of capacity and a connect permit
  /// (`r`), with the factory called on this thread.
  ///
  /// `waited`: how long the caller waited before (Waiter::waited; 0: not at all).
  ///
  /// Throws: the factory's exception, unchanged (DESIGN 3), with the place freed; PoolClosed.
  Handle create_for_caller(Reservation&& r, std::chrono::nanoseconds waited = {})
      CONNPOOL_EXCLUDES(mutex_);

  /// The creation of a connection by an asynchronous factory, for an acquirer that holds a
  /// unit of capacity and a connect permit (a Reservation): begin_create(), then the factory's
  /// awaitable, then finish_create() with its connection, or abort_create() if it threw.
  ///
  /// Throws: std::bad_alloc (the caller then calls abort_create(nullptr, ...)).
  SlotT* begin_create();

  /// Throws: PoolClosed, if the pool closed meanwhile (the connection is closed); what Conn's
  /// move constructor throws (a failed create: the slot, the unit of capacity and the connect
  /// permit are given back, and create_failures counts it).
  Handle finish_create(SlotT* s, Conn&& conn, Reservation&& r, std::chrono::nanoseconds waited = {})
      CONNPOOL_EXCLUDES(mutex_);

  /// The asynchronous factory threw (or begin_create() did, with `s` null): counts the failure
  /// and gives back `r` and the slot.
  void abort_create(SlotT* s,
                    Reservation& r,
                    std::exception_ptr error = std::current_exception()) noexcept
      CONNPOOL_EXCLUDES(mutex_);

  /// The factory now (see ConnectionOps::factory()).
  std::shared_ptr<Factory> factory() const noexcept { return ops_.factory(); }

  /// Replaces the factory for the connects that start from now on (credential rotation).
  void set_factory(Factory factory) { ops_.set_factory(std::move(factory)); }

  /// For an asynchronous connect (async_ops.hpp): its Deadline, and the check of its end.
  Deadline connect_deadline() const noexcept { return ops_.connect_deadline(); }
  void check_connect_time(const Deadline& d, Conn& c) const { ops_.check_connect_time(d, c); }

 private:
  /// Opens one connection into the idle set (or to the oldest waiter), for warm-up and refill.
  /// Returns false when nothing more should be added (closed, enough open, or a failure that is
  /// not to be thrown).
  bool add_idle_connection(bool throw_errors) CONNPOOL_EXCLUDES(mutex_);

  /// Opens connections until min_size are open; a failure is counted and ends the pass.
  void refill() noexcept CONNPOOL_EXCLUDES(mutex_) {
    while (add_idle_connection(false)) {
    }
  }

  /// Closes the connections of the owned slots in `chain` and frees their places. The caller
  /// holds a count besides the slots' units of capacity (see the class comment).
  void close_slots(SlotChain<SlotT> chain) noexcept CONNPOOL_EXCLUDES(mutex_);

  void close_slot(SlotT* s) noexcept CONNPOOL_EXCLUDES(mutex_);

  /// Takes a count; the caller holds one already (or a unit of capacity), so it is never the
  /// first after the last.
  void ref() noexcept {
    [[maybe_unused]] const std::size_t before = refs_.fetch_add(1, std::memory_order_relaxed);
    assert(before != 0 && "connpool: a count taken on a pool that is being freed");
  }

  /// Takes a count unless the last one is gone already (the core is being freed, and destroy()
  /// waits for the caller's publication). For a releaser whose publication is all it holds.
  bool try_ref() noexcept {
    std::size_t n = refs_.load(std::memory_order_relaxed);
    while (n != 0) {
      if (refs_.compare_exchange_weak(n, n + 1, std::memory_order_relaxed)) {
        return true;
      }
    }
    return false;
  }

  /// Drops a count; the last one frees the core (the one route to deletion).
  void unref() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      destroy();
    }
  }

  /// Frees this object, once no releaser is still between publishing a slot and its last access
  /// to the pool (a short wait: a few loads, at most a lock and no user code). Never called
  /// with the lock held.
  void destroy() noexcept CONNPOOL_EXCLUDES(mutex_);

  /// Starts an internal thread running `loop`; the thread holds a count while it runs.
  std::jthread start_internal(void (PoolCore::*loop)() noexcept) {
    ref();
    try {
      return std::jthread(&PoolCore::run_internal, this, loop);
    } catch (...) {
      refs_.fetch_sub(1, std::memory_order_relaxed);  // the owner still holds one
      throw;
    }
  }

  /// The body of an internal thread. Why a static function: the count is dropped last, when no
  /// frame of this thread is inside the core any more, so it may free the core itself.
  static void run_internal(PoolCore* self, void (PoolCore::*loop)() noexcept) noexcept {
    internal_thread_of = self;
    (self->*loop)();
    internal_thread_of = nullptr;
    self->unref();
  }

  /// Joins the internal threads, except the calling one. `owner`: the owner lets go on one of
  /// them (a hook or an inline-resumed coroutine destroyed the pool there), which is detached:
  /// it holds its own count and ends its loop once the pool is closed. Each thread object is
  /// taken out under join_mutex_, so that two callers never join one thread.
  void join_internal_threads(bool owner) noexcept;

  /// The owned slot `s` has no connection any more: onto the free-slot list.
  void retire_locked(SlotT* s) CONNPOOL_REQUIRES(mutex_) {
    unlink_locked(s);
    s->state.store(kEmpty, std::memory_order_relaxed);
    slots_.put_free(s);
  }

  void unlink_locked(SlotT* s) CONNPOOL_REQUIRES(mutex_) {
    if (IntrusiveList<SlotT>::is_linked(s)) {
      idle_.remove(s);
    }
  }

  std::size_t idle_count() const noexcept { return slots_.count_in(kIdle); }

  /// The counts for an AcquireTimeout's message.
  Snapshot snapshot_locked() const CONNPOOL_REQUIRES(mutex_) {
    return {in_use_locked(), idle_count(), waiters_.size(),
            max_size_.load(std::memory_order_relaxed), waiters_.paused()};
  }

  std::size_t in_use_locked() const CONNPOOL_REQUIRES(mutex_) { return slots_.count_in(kInUse); }

  /// The maintenance thread (DESIGN 8): a pass every health_check_interval until close().
  ///
  /// It also scans for leaks (PoolOptions::leak_threshold) every leak_threshold / 2, so that a
  /// leak is reported between 1 and 1.5 thresholds after the check-out.
  void maintenance_loop() noexcept CONNPOOL_EXCLUDES(mutex_);

  /// Reports every handle held longer than leak_threshold, once per check-out, through
  /// on_leak (outside the lock). Reads the slots without the lock: a report is a snapshot, and a
  /// connection given back meanwhile may still be reported once.
  void scan_leaks() CONNPOOL_EXCLUDES(mutex_);

  const PoolOptions options_;                // immutable after construction
  ConnectionOps<Conn, Factory, Clock> ops_;  // every call into user code on a connection
  const bool fifo_;  // WaitPolicy::fifo, or bounded_barging with a zero bound
  // Whether any decision depends on a connection's ages: lifetimes, idle expiry, validation.
  // Without, acquire and release do not read the clock at all.
  const bool uses_ages_;
  // PoolOptions::record_use_time: the check-out and the give-back read the clock even when
  // uses_ages_ is false.
  const bool times_use_;
  const bool tracks_sites_;       // PoolOptions::leak_threshold set: acquires note their call sites
  const std::uint64_t id_;        // distinguishes this pool's entries in thread_hints
  const std::uint64_t max_uses_;  // PoolOptions::max_uses; 0 = no limit

  // Every slot allocated: listed and grown under mutex_, read without it (see SlotDirectory).
  SlotDirectory<SlotT> slots_;
  // The bounds now (set_max_size(), set_min_size()); written under mutex_.
  std::atomic<std::size_t> max_size_;
  std::atomic<std::size_t> min_size_;

  // Mirrors for the lock-free paths; written only with mutex_ held.
  std::atomic<std::size_t> open_count_{0};  // open_
  std::atomic<bool> closed_{false};
  std::atomic<std::uint64_t> generation_{0};  // bumped by evict_all() and drain()
  // The generation the last clear() began; connections opened before it close as cleared.
  // Written under mutex_ (with generation_), read lock-free.
  std::atomic<std::uint64_t> cleared_generation_{0};
  std::atomic<std::uint64_t> leaks_{0};  // PoolStats::leaks

  // The one lock of the pool. Besides the members marked CONNPOOL_GUARDED_BY(mutex_), it guards
  // the fields of every queued Waiter and the writes of the lock-free mirrors. On a cache line
  // of its own (with idle_, also written under it only): see WaiterQueue.
  alignas(64) mutable Mutex mutex_;  // guards idle_, slots_ changes, waiters_, open_, counters_
  IntrusiveList<SlotT> idle_ CONNPOOL_GUARDED_BY(mutex_);  // LIFO: front = most recent
  // The waiters, oldest first, with their deadlines and the wait policy's state. Guarded by
  // mutex_ but for its atomic mirrors, read lock-free by may_barge(), must_hand_off() and
  // waiters_count().
  WaiterQueue<WaiterT> waiters_ CONNPOOL_GUARDED_BY(mutex_);
  std::size_t open_ CONNPOOL_GUARDED_BY(mutex_) = 0;
  // Connect permits and backoff (max_connecting, max_connect_backoff).
  ConnectGate gate_ CONNPOOL_GUARDED_BY(mutex_);
  Counters counters_ CONNPOOL_GUARDED_BY(mutex_);
  std::condition_variable timer_cv_;  // waited on with mutex_ by timer_; earlier deadline, close()
  std::jthread timer_;                // asynchronous deadlines (start_timer()); joined by close()
  std::condition_variable maintenance_cv_;  // waited on with mutex_; notified by close()
  // Waited on with mutex_ by drain(): notified when open_ reaches 0 or a connection is
  // published idle while a drain runs.
  std::condition_variable drain_cv_;
  std::size_t drainers_ CONNPOOL_GUARDED_BY(mutex_) = 0;  // drain() calls running
  // Asynchronous drains waiting for open_ to reach 0 or for their deadline (the timer thread);
  // each also counts in drainers_.
  IntrusiveList<DrainWaiter> async_drains_ CONNPOOL_GUARDED_BY(mutex_);
  std::jthread thread_;  // maintenance; started after warm-up, joined by close() (woken by closed_)
  // Guards taking thread_ and timer_ out of these members to join them (join_internal_threads).
  std::mutex join_mutex_;
  // Guards recent_waits_ (health() may be called from several probes at once).
  std::mutex health_mutex_;
  // Readings of PoolStats::wait_time taken by health_report(): the waits of the last minute.
  RecentHistogram recent_waits_;
  // Holders of the core (see the class comment): the owner, each unit of capacity (open_), each
  // internal thread, each CoreRef. 0 = being freed.
  std::atomic<std::size_t> refs_{1};
};

// --- The core's counts and reservations (declared in the class) ------------------------------

template <class Conn, class Factory, class Clock>
class PoolCore<Conn, Factory, Clock>::CoreRef {
 public:
  CoreRef() noexcept = default;
  explicit CoreRef(PoolCore* core) noexcept : core_(core) { core->ref(); }
  CoreRef(CoreRef&& other) noexcept : core_(std::exchange(other.core_, nullptr)) {}
  CoreRef& operator=(CoreRef&& other) noexcept {
    if (this != &other) {
      reset();
      core_ = std::exchange(other.core_, nullptr);
    }
    return *this;
  }
  CoreRef(const CoreRef&) = delete;
  CoreRef& operator=(const CoreRef&) = delete;
  ~CoreRef() { reset(); }

  /// Lets go now; the core may be gone afterwards.
  void reset() noexcept {
    if (PoolCore* c = std::exchange(core_, nullptr)) {
      c->unref();
    }
  }
  [[nodiscard]] PoolCore* get() const noexcept { return core_; }
  PoolCore* operator->() const noexcept { return core_; }

  /// A count on `core` unless the core is being freed already (PoolCore::try_ref()); else
  /// empty.
  static CoreRef if_alive(PoolCore* core) noexcept {
    CoreRef r;
    if (core->try_ref()) {
      r.core_ = core;
    }
    return r;
  }

 private:
  PoolCore* core_ = nullptr;
};

template <class Conn, class Factory, class Clock>
class PoolCore<Conn, Factory, Clock>::Reservation {
 public:
  Reservation() noexcept = default;
  Reservation(Reservation&& other) noexcept
      : core_(other.core_),
        capacity_(std::exchange(other.capacity_, false)),
        permit_(std::exchange(other.permit_, false)) {}
  Reservation& operator=(Reservation&& other) noexcept {
    if (this != &other) {
      reset();
      core_ = other.core_;
      capacity_ = std::exchange(other.capacity_, false);
      permit_ = std::exchange(other.permit_, false);
    }
    return *this;
  }
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  ~Reservation() { reset(); }

  /// Whether it holds a unit of capacity: its holder must connect, or let it go.
  [[nodiscard]] bool capacity() const noexcept { return capacity_; }
  /// Whether it holds a connect permit (always with a unit of capacity, once taken).
  [[nodiscard]] bool permit() const noexcept { return permit_; }

  /// Gives back what it holds, now (the next waiter may have it).
  void reset() noexcept {
    if (capacity_ || permit_) {
      core_->give_up(*this);
    }
  }

 private:
  friend class PoolCore;

  PoolCore* core_ = nullptr;  // set when it first takes something
  bool capacity_ = false;
  bool permit_ = false;
};

// --- The fast path: a thread's own last connection, and giving one back ----------------------

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::give_back(SlotBase<Conn>* base, bool close) noexcept {
  auto* s = static_cast<SlotT*>(base);
  s->released.bump();
  ops_.released(*s);
  bool keep = !close;
  if (!keep) {
    s->close_reason = CloseReason::invalidated;
  }
  if constexpr (BrokenCheckable<Conn>) {
    if (keep && ops_.broken(*s)) {
      keep = false;  // checked first: a broken connection cannot even be reset
      s->close_reason = CloseReason::broken;
    }
  }
  if (keep && !ops_.reset(*s)) {
    keep = false;  // a connection that cannot be reset must not reach the next borrower
    s->close_reason = CloseReason::reset_failed;
  }
  if (keep && s->generation != generation_.load(std::memory_order_relaxed)) {
    keep = false;  // opened before evict_all() or clear()
    s->close_reason = stale_reason(*s);
  }
  if (keep && max_uses_ != 0 && s->acquired.get() - s->acquired_before >= max_uses_) {
    keep = false;  // PoolOptions::max_uses
    s->close_reason = CloseReason::max_uses;
  }
  if (keep &&
      open_count_.load(std::memory_order_relaxed) > max_size_.load(std::memory_order_relaxed)) {
    keep = false;  // set_max_size() shrank the pool below what is open
    s->close_reason = CloseReason::shrunk;
  }
  if (uses_ages_ || times_use_) {
    // One reading, after reset(): the end of the hold (use_time), and the start of a kept
    // connection's idle time.
    const TimePoint now = clock_now<Clock>();
    record_use(*s, now);
    if (keep && uses_ages_) {
      if (lifetime_over(s->created_at, s->lifetime, now)) {
        keep = false;  // DESIGN 6: an expired connection is closed, not kept
        s->close_reason = CloseReason::expired;
      } else {
        s->last_used = now;
      }
    }
  }
  if (keep) {
    ops_.unheld(*s);
    if (!must_hand_off()) {
      publish(s);
      return;
    }
    if (hand_off(s)) {
      return;
    }
    s->close_reason = CloseReason::pool_closed;
  }
  // Closed instead of returned: invalidated, broken, reset failed, evicted, used up, shrunk,
  // expired, or the pool is closed.
  close_slot(s);
}

template <class Conn, class Factory, class Clock>
inline ErrorAction PoolCore<Conn, Factory, Clock>::fail(SlotBase<Conn>* base,
                                                        std::exception_ptr error) noexcept {
  // User code (on_error, and the close hooks of clear()) may destroy the pool's owner
  // meanwhile: the slot's unit of capacity keeps the core alive until close_slot() gives it up.
  const ErrorAction action = ops_.classify(error);
  if (action == ErrorAction::keep) {
    give_back(base, false);  // as release() would
    return action;
  }
  auto* s = static_cast<SlotT*>(base);
  s->released.bump();
  if (times_use_) {
    record_use(*s, clock_now<Clock>());
  }
  ops_.released(*s);
  if (action == ErrorAction::clear) {
    try {
      evict(true);  // this connection, out now, is not in the idle set: closed below
    } catch (...) {
      // Only the lock can throw there (std::system_error): the connection is still closed.
    }
  }
  s->close_reason = CloseReason::evicted_by_error;
  close_slot(s);
  return action == ErrorAction::clear ? action : ErrorAction::evict;
}

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::publish(SlotT* s) noexcept {
  // The hint first, while `s` still holds a connection and so keeps the pool alive.
  ThreadHint& h = hint();
  const std::uint64_t previous_pool = h.pool;
  const std::uint32_t previous_incarnation = h.incarnation;
  void* const previous = std::exchange(h.slot, s);
  h.pool = id_;
  h.incarnation = s->incarnation.load(std::memory_order_relaxed);
  if (previous != nullptr && previous != s) {
    if (previous_pool == id_) {
      adopt_evicted_hint(previous, previous_incarnation);
    } else {
      PoolRegistry::instance().return_evicted(previous_pool, previous, previous_incarnation);
    }
  }
  // Once `s` is idle another thread may take and close it, and if the pool's owner is gone
  // that may free the pool: `publishers` holds it until this thread's last access.
  s->publishers.fetch_add(1, std::memory_order_relaxed);
  s->state.store(kIdle, std::memory_order_seq_cst);
  // While paused (a drain pauses) the count is not zero either: after_publish_slow() wakes a
  // drain to close this connection.
  if (waiters_count() != 0 || closed_.load(std::memory_order_seq_cst)) {
    after_publish_slow(s);
    return;
  }
  s->publishers.fetch_sub(1, std::memory_order_release);
}

template <class Conn, class Factory, class Clock>
inline auto PoolCore<Conn, Factory, Clock>::acquire_fast(bool& have_capacity)
    -> std::optional<Handle> {
  if (may_barge()) {
    if (SlotT* s = take_hint(); s != nullptr && try_claim(s)) {
      const Verdict v = judge_now(*s, may_idle_expire());
      // A connection claimed through a hint after close() must not be handed out: check_out
      // then closes it (DESIGN 7).
      if (v == Verdict::ok && !closed_.load(std::memory_order_seq_cst)) {
        s->acquired.bump();
        s->reused.bump();
        ops_.handed_out(*s);
        return HandleAccess::make<Conn>(this, s);
      }
      if (check_out(s, v, true)) {
        return HandleAccess::make<Conn>(this, s);
      }
      have_capacity = true;
    }
  }
  return std::nullopt;
}

template <class Conn, class Factory, class Clock>
inline auto PoolCore<Conn, Factory, Clock>::take_hint() const noexcept -> SlotT* {
  ThreadHint& h = hint();
  if (h.pool != id_) {
    return nullptr;
  }
  auto* s = static_cast<SlotT*>(std::exchange(h.slot, nullptr));
  if (s != nullptr && s->incarnation.load(std::memory_order_relaxed) != h.incarnation) {
    return nullptr;  // its connection was closed; the slot holds another one now (or none)
  }
  return s;
}

}  // namespace connpool::detail

// The members defined out of the class, so that each part can be read alone.
#include <connpool/detail/pool_core_create.hpp>
#include <connpool/detail/pool_core_wait.hpp>
