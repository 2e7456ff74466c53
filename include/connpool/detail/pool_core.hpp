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

#if defined(__linux__)
#include <time.h>
#endif

#include <connpool/concepts.hpp>
#include <connpool/detail/awaitable.hpp>
#include <connpool/detail/expiry.hpp>
#include <connpool/detail/intrusive_list.hpp>
#include <connpool/detail/resume_queue.hpp>
#include <connpool/detail/slot.hpp>
#include <connpool/detail/thread_annotations.hpp>
#include <connpool/errors.hpp>
#include <connpool/events.hpp>
#include <connpool/handle.hpp>
#include <connpool/options.hpp>
#include <connpool/stats.hpp>

namespace connpool::detail {

/// What a pool needs of its Clock: a static now() returning its time_point. ManualClock and
/// every std::chrono clock qualify.
template <class C>
concept PoolClock = requires {
  typename C::time_point;
  typename C::duration;
  { C::now() } -> std::same_as<typename C::time_point>;
};

/// The pool's reading of `Clock`.
///
/// Why a coarse reading for std::chrono::steady_clock: ages, idle times and the validation
/// bypass are compared with settings of hundreds of milliseconds or more, and the pool reads the
/// clock on every acquire and every release. On Linux CLOCK_MONOTONIC_COARSE is the same clock
/// as steady_clock (CLOCK_MONOTONIC) at tick resolution (1-4 ms), and costs a fifth as much.
/// Every other Clock (ManualClock, a user's) is read through its now().
template <class Clock>
typename Clock::time_point clock_now() noexcept {
#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
  if constexpr (std::is_same_v<Clock, std::chrono::steady_clock>) {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return typename Clock::time_point(std::chrono::duration_cast<typename Clock::duration>(
        std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec)));
  }
#endif
  return Clock::now();
}

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

/// The lifetime jitter of a pool whose PoolOptions::lifetime_jitter is unset: HikariCP's 2.5 %
/// on a standard clock for lifetimes over 10 s (HikariCP's threshold), else exact lifetimes.
template <class Clock>
double default_lifetime_jitter(std::chrono::milliseconds max_lifetime) {
  constexpr bool standard_clock = std::is_same_v<Clock, std::chrono::steady_clock> ||
                                  std::is_same_v<Clock, std::chrono::system_clock>;
  return standard_clock && max_lifetime > std::chrono::seconds(10) ? 0.025 : 0.0;
}

/// States of a slot. Only a claim (kIdle -> kInUse, by compare-exchange) takes a connection;
/// whoever holds a slot in kInUse owns it exclusively until it publishes kIdle or empties it.
enum SlotState : std::uint32_t { kEmpty = 0, kIdle = 1, kInUse = 2 };

/// A counter written only by the current owner of a slot and read by stats(): a relaxed load
/// and store instead of a read-modify-write, because ownership already orders the writers.
class OwnerCounter {
 public:
  void bump() noexcept {
    v_.store(v_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint64_t get() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

/// A pooled connection's place, with its state, ages and the counters of its owners.
///
/// Why cache-line aligned: threads that each reuse their own connection write their own slot
/// on every cycle; two slots sharing a line would make them contend as if on one lock.
template <class Conn, class Clock>
struct alignas(64) Slot : SlotBase<Conn>, ListHook<Slot<Conn, Clock>> {
  std::atomic<std::uint32_t> state{kEmpty};
  // The owner's fields: written and read only while the slot is in kInUse.
  typename Clock::time_point created_at{};       // when the factory returned the connection
  typename Clock::time_point last_used{};        // when it was last given back (or created)
  typename Clock::time_point last_checked{};     // when a keepalive ping last succeeded
  typename Clock::duration lifetime{};           // max_lifetime less its jitter; 0 = unlimited
  std::uint64_t id = 0;                          // PoolEvent::connection_id
  std::atomic<std::uint64_t> id_snapshot{0};     // the same, for the leak scan
  std::uint64_t generation = 0;                  // evict_all() generation it was opened in
  CloseReason close_reason = CloseReason::none;  // set by whoever decides to close it
  // Written by the owner at each check-out when holds are observed, read by the leak scan.
  std::atomic<std::int64_t> held_since{0};  // steady_clock ticks; 0 = not observed
  std::atomic<std::thread::id> holder{};
  // The held_since of the check-out last reported as a leak (see leak_due()); 0 = none.
  std::atomic<std::int64_t> leak_reported_since{0};
  OwnerCounter acquired;         // check-outs of this slot
  OwnerCounter reused;           // ... of a connection that existed before
  OwnerCounter released;         // give-backs (return or close) of this slot
  bool listed = false;           // published in the pool's slot directory
  Slot* next_free = nullptr;     // in the free-slot list; guarded by the pool's mutex
  Slot* next_closing = nullptr;  // in a SlotChain of its owner
  // Releasers between publishing this slot idle and their last access to the pool: the pool
  // is not freed while any slot's count is non-zero (see PoolCore::destroy).
  std::atomic<std::uint32_t> publishers{0};
  // Bumped each time the slot receives a new connection: a thread's hint names the connection it
  // released, and must not lead to another one that reuses the slot after it was closed.
  std::atomic<std::uint32_t> incarnation{0};
};

/// A list of owned slots (to be closed, or pinged), linked through Slot::next_closing; allocates
/// nothing, so that a maintenance pass that has claimed slots cannot fail to give them back.
template <class SlotT>
struct SlotChain {
  SlotT* head = nullptr;
  SlotT* tail = nullptr;
  std::size_t size = 0;
  /// Links `s` at the front.
  void push(SlotT* s) noexcept {
    s->next_closing = head;
    head = s;
    tail = tail != nullptr ? tail : s;
    ++size;
  }
  /// Links `s` at the back (the chain keeps the order of appends).
  void append(SlotT* s) noexcept {
    s->next_closing = nullptr;
    if (tail != nullptr) {
      tail->next_closing = s;
    } else {
      head = s;
    }
    tail = s;
    ++size;
  }
};

/// The per-thread hint: the slot this thread released last, per pool (HikariCP's
/// ConcurrentBag threadList). Four entries, indexed by pool id, so a thread that alternates
/// between a few pools keeps a hint in each. The pointer is only followed when `pool` equals
/// the id of the live pool that reads it, and a pool frees its slots only when it dies, so a
/// hint left by a dead pool is never dereferenced.
struct ThreadHint {
  std::uint64_t pool = 0;
  void* slot = nullptr;
  std::uint32_t incarnation = 0;  // the slot's connection it was set for (Slot::incarnation)
};
inline thread_local ThreadHint thread_hints[4];
/// The pool whose internal thread (maintenance or timer) this is, or null.
inline thread_local const void* internal_thread_of = nullptr;
inline std::atomic<std::uint64_t> next_pool_id{1};

/// What a pool offers the registry: taking back an idle slot whose hint another pool evicted.
class HintAdopter {
 public:
  virtual void adopt_evicted_hint(void* slot, std::uint32_t incarnation) noexcept = 0;

 protected:
  HintAdopter() = default;
  HintAdopter(const HintAdopter&) = default;
  HintAdopter& operator=(const HintAdopter&) = default;
  ~HintAdopter() = default;
};

/// The live pools by id, for one rare event: a thread whose hint entry for pool A is taken
/// over by pool B (a thread using several pools whose ids share an entry). A's slot then goes
/// back on A's idle stack, in LIFO order (DESIGN 2), if A is still alive; the registry is how a
/// thread can tell, without following a pointer into a pool that may be gone.
class PoolRegistry {
 public:
  static PoolRegistry& instance() {
    // Never destroyed: pools with static storage duration may outlive any static object.
    static PoolRegistry* const registry = new PoolRegistry();
    return *registry;
  }

  void add(std::uint64_t id, HintAdopter* pool) {
    std::lock_guard<std::mutex> lock(mutex_);
    pools_.emplace_back(id, pool);
  }

  void remove(std::uint64_t id) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& entry : pools_) {
      if (entry.first == id) {
        entry = pools_.back();
        pools_.pop_back();
        return;
      }
    }
  }

  /// Hands `slot` back to pool `id` if that pool is alive. The pool's own lock is taken inside
  /// this one (never the other way round), and remove() waits for it, so the pool cannot die
  /// meanwhile.
  void return_evicted(std::uint64_t id, void* slot, std::uint32_t incarnation) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& entry : pools_) {
      if (entry.first == id) {
        entry.second->adopt_evicted_hint(slot, incarnation);
        return;
      }
    }
  }

 private:
  PoolRegistry() = default;

  std::mutex mutex_;  // guards pools_
  std::vector<std::pair<std::uint64_t, HintAdopter*>> pools_;
};

/// The pool's counts when an acquire timed out, for the exception's message.
struct Snapshot {
  std::size_t in_use = 0;
  std::size_t idle = 0;
  std::size_t waiting = 0;
};

/// Why an acquire failed early while connects back off (PoolOptions::max_connect_backoff).
struct Unavailable {
  std::size_t failures = 0;               // consecutive connect failures
  std::chrono::milliseconds retry_in{0};  // until the next connect may start
  std::exception_ptr last_error;          // the last factory exception
};

/// An asynchronous waiter's place in the pool's deadline list (ordered by `at`).
template <class W>
struct DeadlineNode : ListHook<DeadlineNode<W>> {
  std::chrono::steady_clock::time_point at{};
  W* waiter = nullptr;
};

/// A caller waiting in acquire(): a thread blocked on its own stack, or an asynchronous
/// operation (a suspended coroutine, an Asio operation) that lives in its own frame. Every field
/// is guarded by the pool's mutex.
///
/// Why one condition variable per waiter: a release wakes exactly the waiter it serves, so no
/// herd of threads wakes to find nothing (Boost.MySQL's pool; Go's database/sql connRequests).
/// An asynchronous waiter has a completion instead (Resumable::complete, set once it is queued),
/// run by the thread that served it after that thread released the lock (resume_queue.hpp). It is
/// always unlinked from the queue before it is signalled, and never merely woken to compete.
template <class Conn, class Clock>
struct Waiter : ListHook<Waiter<Conn, Clock>>, Resumable {
  std::condition_variable cv;                     // synchronous waiters only
  std::chrono::steady_clock::time_point since{};  // when it started waiting
  Slot<Conn, Clock>* slot = nullptr;              // a connection handed over
  bool fresh = false;                             // `slot` was just created, not reused
  bool may_create = false;                        // a unit of capacity handed over
  bool closed = false;                            // the pool closed while waiting
  bool cancelled = false;                         // the caller's stop_token was triggered
  bool woken = false;           // bounded_barging: notified to compete for an idle connection
  bool handed = false;          // bounded_barging: granted by pop_waiter_locked, not yet taken up
  bool timed_out = false;       // async: the pool's timer ended the wait
  bool unavailable = false;     // failed early: connects back off past its deadline
  Unavailable why_unavailable;  // ... and why
  std::chrono::steady_clock::time_point until = std::chrono::steady_clock::time_point::max();
  Snapshot snapshot;              // async: the counts when it timed out
  DeadlineNode<Waiter> deadline;  // async: linked while a deadline is pending
  // async: the outcome of its current wait is set (by a grant, a timeout, close(), a
  // cancellation, or enqueue_async() at once), for its driver to take up; a stop request that
  // comes later leaves it alone. Cleared when it queues again.
  bool decided = false;
  // Raised with every change above, so the waiter can spin on it without the lock.
  std::atomic<bool> signalled{false};

  [[nodiscard]] bool is_async() const noexcept { return complete != nullptr; }

  void signal() noexcept {
    signalled.store(true, std::memory_order_release);
    if (complete != nullptr) {
      decided = true;
      resume_queue().push(this);  // completed once this thread has released the lock
    } else {
      cv.notify_one();  // under the pool's lock: the node lives on the waiter's stack
    }
  }

  [[nodiscard]] bool granted() const noexcept { return slot != nullptr || may_create; }
};

/// The counters of the slow paths; guarded by the pool's mutex. The fast-path counters
/// (acquired, reused, released) live in the slots.
struct Counters {
  std::uint64_t created = 0;
  std::uint64_t closed = 0;
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
enum class Failure { none, timeout, closed, cancelled, unavailable };

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
/// then reads waiters_count_, a waiter raises waiters_count_ and then scans, both sequentially
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
  using DeadlineT = DeadlineNode<WaiterT>;
  using Handle = PooledHandle<Conn>;
  using WaitClock = std::chrono::steady_clock;
  using TimePoint = typename Clock::time_point;
  using traits = connection_traits<Conn>;

  PoolCore(Factory factory, const PoolOptions& options)
      : factory_(std::move(factory)),
        options_(options),
        fifo_(options.wait_policy == WaitPolicy::fifo || options.starvation_bound.count() == 0),
        uses_ages_(options.max_lifetime.count() > 0 || options.max_idle.count() > 0 ||
                   (Pingable<Conn> &&
                    (options.validate_on_acquire || options.keepalive_interval.count() > 0))),
        observe_holds_(options.leak_threshold.count() > 0 || bool(options.on_acquire) ||
                       bool(options.on_release)),
        id_(next_pool_id.fetch_add(1, std::memory_order_relaxed)),
        max_size_(options.max_size),
        min_size_(options.min_size) {
    directories_.emplace_back(new SlotT*[options.max_size]);
    capacity_ = options.max_size;
    slots_.store(directories_.back().get(), std::memory_order_release);
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
    const std::size_t n = slot_count_.load(std::memory_order_acquire);
    for (std::size_t i = 0; i < n; ++i) {
      delete dir()[i];
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
  void start_maintenance() {
    if (options_.health_check_interval.count() > 0 || options_.leak_threshold.count() > 0) {
      thread_ = start_internal(&PoolCore::maintenance_loop);
    }
  }

  // --- Lifetime (see the class comment) ------------------------------------------------------

  /// A count on the core, held for a scope: by calls that may give up units of capacity, and by
  /// asynchronous acquires in flight. Dropping the last one frees the core.
  class CoreRef {
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

   private:
    PoolCore* core_ = nullptr;
  };

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
  /// Returns: a handle; or nullopt with `capacity` set, when the caller now holds a unit of
  /// capacity and must create a connection (create_for_caller(), or begin_create() and what
  /// follows); or nullopt with `capacity` clear, when it must queue (enqueue_async()).
  /// Throws: PoolClosed.
  std::optional<Handle> acquire_nowait(bool& capacity) CONNPOOL_EXCLUDES(mutex_) {
    const DrainOnExit drain;
    capacity = false;
    bool have_capacity = false;
    if (std::optional<Handle> h = acquire_fast(have_capacity)) {
      return h;
    }
    const CoreRef keep(this);  // a unit of capacity given up below may be the last count
    bool have_permit = false;
    for (;;) {
      SlotT* slot = nullptr;
      Step step = Step::wait;
      Unavailable why;
      {
        UniqueLock lk(mutex_);
        step = step_locked(have_capacity, have_permit, slot, nullptr, &why);
      }
      switch (step) {
        case Step::closed:
          throw PoolClosed();
        case Step::unavailable:  // not without a deadline
        case Step::wait:
          return std::nullopt;
        case Step::create:
          capacity = true;  // with a connect permit: the caller connects
          return std::nullopt;
        case Step::slot:
          if (std::optional<Handle> h = check_out_granted(slot, false)) {
            return h;
          }
          have_capacity = true;
          break;
      }
    }
  }

  /// Checks out a slot claimed for, or handed to, a caller (DESIGN 5, 6). Returns nullopt when it
  /// was closed instead; the caller then holds its unit of capacity.
  std::optional<Handle> check_out_granted(SlotT* slot, bool fresh) CONNPOOL_EXCLUDES(mutex_) {
    const Verdict v = judge_now(*slot, !fresh && may_idle_expire());
    if (check_out(slot, v, !fresh)) {
      return HandleAccess::make<Conn>(this, slot);
    }
    return std::nullopt;
  }

  /// Queues the asynchronous waiter `w`, whose completion is `complete`, with an optional
  /// deadline, unless it can be served at once.
  ///
  /// Returns: true if queued: `complete` runs once (outside the lock, on the thread that decided)
  /// when it is served, times out, is cancelled (cancel_waiter()) or the pool closes; the fields
  /// of `w` then say which. False if nothing was queued because it was served at once, with
  /// the same fields set (a slot, capacity, closed, cancelled or timed out).
  bool enqueue_async(WaiterT& w,
                     void (*complete)(Resumable*) noexcept,
                     std::optional<WaitClock::time_point> deadline) CONNPOOL_EXCLUDES(mutex_) {
    const DrainOnExit drain;  // the look below may serve other asynchronous waiters
    UniqueLock lk(mutex_);
    w.complete = nullptr;  // queued again after a failed check-out: no completion until below
    // Every return but the last decides the outcome at once: a stop request must not change it
    // while the driver reads it.
    w.decided = true;
    if (w.cancelled) {
      return false;
    }
    bool have_capacity = false;
    bool have_permit = false;
    SlotT* slot = nullptr;
    if (deadline) {
      w.until = *deadline;
    }
    switch (step_locked(have_capacity, have_permit, slot, deadline ? &*deadline : nullptr,
                        &w.why_unavailable)) {
      case Step::closed:
        w.closed = true;
        return false;
      case Step::unavailable:
        w.unavailable = true;
        return false;
      case Step::slot:
        w.slot = slot;
        return false;
      case Step::create:
        w.may_create = true;
        return false;
      case Step::wait:
        break;
    }
    const WaitClock::time_point now = WaitClock::now();
    ++counters_.waited;
    if (deadline && *deadline <= now) {
      ++counters_.timeouts;
      w.timed_out = true;
      w.snapshot = {in_use_locked(), idle_count(), waiters_.size()};
      return false;
    }
    w.since = now;
    waiters_.push_back(&w);
    waiters_count_.store(waiters_.size(), std::memory_order_seq_cst);
    // The look a blocking waiter takes after queueing (the Dekker pair in the class comment).
    // `complete` is not set yet, so a grant to `w` here signals nobody.
    if (fifo_ || starving_.load(std::memory_order_relaxed)) {
      serve_waiters_locked();
    } else if (SlotT* s = claim_idle_locked()) {
      remove_waiter_locked(w, false);
      w.slot = s;
    }
    if (w.granted()) {
      take_up_locked(w);
      return false;
    }
    w.complete = complete;
    w.decided = false;
    if (deadline) {
      insert_deadline_locked(w, *deadline);
    }
    return true;
  }

  /// The asynchronous waiter `w` is abandoned (the coroutine awaiting it was destroyed): takes it
  /// off the queue if it waits there. Returns true if it did: nothing will complete `w`. False if
  /// it is not queued: its wait ended and its completion is pending (or ran), or it is not
  /// waiting at all.
  bool withdraw_async(WaiterT& w) noexcept CONNPOOL_EXCLUDES(mutex_) {
    const DrainOnExit drain;  // bounded_barging may pass a wake-up on
    UniqueLock lk(mutex_);
    if (!IntrusiveList<WaiterT>::is_linked(&w)) {
      return false;
    }
    remove_waiter_locked(w, w.woken);
    unlink_deadline_locked(w);
    w.decided = true;
    return true;
  }

  /// Gives up a unit of capacity and the connect permit that came with it, unused (the
  /// asynchronous acquire that held them could not go on): the next waiter may have them.
  void give_up_capacity() noexcept CONNPOOL_EXCLUDES(mutex_) {
    const CoreRef keep(this);
    const DrainOnExit drain;
    UniqueLock lk(mutex_);
    --connecting_;
    free_capacity_locked();
    serve_capacity_locked();
  }

  /// Throws the AcquireTimeout of an acquire that failed early because connects back off past
  /// its deadline, with the last connect error nested in it (std::rethrow_if_nested).
  [[noreturn]] void throw_unavailable(const Unavailable& why, WaitClock::duration timeout) const {
    std::string last = "unknown";
    if (why.last_error) {
      try {
        std::rethrow_exception(why.last_error);
      } catch (const std::exception& e) {
        last = e.what();
      } catch (...) {
        last = "an exception not derived from std::exception";
      }
    }
    const std::string message =
        "connpool: acquire failed early (timeout " +
        std::to_string(std::chrono::ceil<std::chrono::milliseconds>(timeout).count()) +
        " ms): connects back off after " + std::to_string(why.failures) +
        " consecutive failures, next attempt in " + std::to_string(why.retry_in.count()) +
        " ms; last connect error: " + last;
    if (why.last_error) {
      try {
        std::rethrow_exception(why.last_error);
      } catch (...) {
        std::throw_with_nested(AcquireTimeout(message));
      }
    }
    throw AcquireTimeout(message);
  }

  /// Throws the AcquireTimeout of a wait of `timeout` that ended with the counts `snap`.
  [[noreturn]] void throw_timeout(WaitClock::duration timeout, const Snapshot& snap) const {
    throw_failure(Failure::timeout, timeout, snap);
  }

  /// For an acquirer whose connection failed its check-out and who so holds a unit of capacity:
  /// takes a connect permit and returns true (the caller connects), or, when none is free,
  /// gives the capacity up and returns false (the caller queues again).
  bool permit_for_capacity() CONNPOOL_EXCLUDES(mutex_) {
    const CoreRef keep(this);
    const DrainOnExit drain;
    UniqueLock lk(mutex_);
    if (!closed_.load(std::memory_order_relaxed) && connect_permitted_locked(WaitClock::now())) {
      ++connecting_;
      return true;
    }
    free_capacity_locked();
    return false;
  }

  /// Starts the thread that ends asynchronous waits at their deadlines (AsyncConnectionPool).
  void start_timer() { timer_ = start_internal(&PoolCore::timer_loop); }

  PoolStats stats() const CONNPOOL_EXCLUDES(mutex_) {
    PoolStats s;
    {
      UniqueLock lk(mutex_);
      s.created = counters_.created;
      s.closed = counters_.closed;
      s.waited = counters_.waited;
      s.timeouts = counters_.timeouts;
      s.validation_failures = counters_.validation_failures;
      s.create_failures = counters_.create_failures;
      s.close_failures = counters_.close_failures;
      s.detached = counters_.detached;
      s.leaks = leaks_.load(std::memory_order_relaxed);
      s.total_wait_time = counters_.total_wait_time;
      s.max_wait_time = counters_.max_wait_time;
      s.pending = waiters_.size();
    }
    const std::size_t n = slot_count_.load(std::memory_order_acquire);
    for (std::size_t i = 0; i < n; ++i) {
      const SlotT& slot = *dir()[i];
      s.acquired += slot.acquired.get();
      s.reused += slot.reused.get();
      s.released += slot.released.get();
      // Both gauges come from the slot's state, so that idle + in_use never exceeds the slots
      // even while other threads move connections around.
      const std::uint32_t st = slot.state.load(std::memory_order_relaxed);
      s.idle += st == kIdle ? 1 : 0;
      s.in_use += st == kInUse ? 1 : 0;
    }
    s.max_size = max_size_.load(std::memory_order_relaxed);
    return s;
  }

  /// One maintenance pass (DESIGN 6): closes expired idle connections, pings those due for a
  /// keepalive (PoolOptions::keepalive_interval), then refills to min_size. Returns how many
  /// connections it closed.
  std::size_t prune() CONNPOOL_EXCLUDES(mutex_) {
    const CoreRef keep(this);  // user code below (close, ping, factory) may destroy the owner
    const DrainOnExit drain;   // completions of asynchronous waiters served here, last
    const TimePoint now = clock_now<Clock>();
    std::vector<SlotT*> claimed;  // allocated before any claim: std::bad_alloc loses nothing
    SlotChain<SlotT> to_ping;
    SlotChain<SlotT> expired;
    {
      UniqueLock lk(mutex_);
      if (closed_.load(std::memory_order_relaxed)) {
        return 0;
      }
      // Claim every idle slot (so that its ages can be read), sort out the expired ones, and
      // publish the rest again. Lifetime expiry always applies; idle expiry only down to
      // min_size, stalest first.
      const std::size_t count = slot_count_.load(std::memory_order_relaxed);
      claimed.reserve(count);
      for (std::size_t i = 0; i < count; ++i) {
        if (try_claim(dir()[i])) {
          claimed.push_back(dir()[i]);
        }
      }
      // Stalest first; among equals, the oldest connection.
      std::sort(claimed.begin(), claimed.end(), [](const SlotT* a, const SlotT* b) {
        return staler(a->last_used, a->id, b->last_used, b->id);
      });
      std::size_t open_after = open_;
      const std::uint64_t generation = generation_.load(std::memory_order_relaxed);
      for (SlotT* s : claimed) {
        if (s->generation != generation ||
            judge_expiry(*s, now, open_after > min_size_.load(std::memory_order_relaxed))) {
          s->close_reason =
              s->generation != generation ? CloseReason::evicted : CloseReason::expired;
          unlink_locked(s);
          expired.push(s);
          --open_after;
        } else if (keepalive_due(*s, now)) {
          unlink_locked(s);  // out of the idle set while it is pinged
          to_ping.append(s);
        } else {
          s->state.store(kIdle, std::memory_order_seq_cst);
        }
      }
      serve_waiters_locked();
    }
    std::size_t n = expired.size;
    close_slots(expired);
    if (to_ping.size != 0) {
      n += keepalive(to_ping);
    }
    refill();
    return n;
  }

  /// Changes max_size at run time. Growing lets waiters create connections at once; shrinking
  /// closes idle connections above the new bound now and in-use ones as they come back, and
  /// holds new creations until the pool is below it.
  ///
  /// Throws: std::invalid_argument if `n` is 0 or below min_size.
  void set_max_size(std::size_t n) CONNPOOL_EXCLUDES(mutex_) {
    if (n == 0) {
      throw std::invalid_argument("connpool: set_max_size: max_size must be at least 1 (got 0)");
    }
    const CoreRef keep(this);
    const DrainOnExit drain;
    SlotChain<SlotT> surplus;
    {
      UniqueLock lk(mutex_);
      const std::size_t min = min_size_.load(std::memory_order_relaxed);
      if (n < min) {
        throw std::invalid_argument("connpool: set_max_size: max_size (" + std::to_string(n) +
                                    ") must not be below min_size (" + std::to_string(min) + ")");
      }
      if (n > capacity_) {
        grow_directory_locked(n);
      }
      max_size_.store(n, std::memory_order_relaxed);
      if (closed_.load(std::memory_order_relaxed)) {
        return;
      }
      // Shrinking: the idle surplus goes now, stalest last in the LIFO order (claim order).
      std::size_t open_after = open_;
      while (open_after > n) {
        SlotT* s = claim_idle_locked();
        if (s == nullptr) {
          break;
        }
        s->close_reason = CloseReason::shrunk;
        surplus.push(s);
        --open_after;
      }
      // Growing: waiters (there are only waiters when nothing is idle) may create now.
      serve_capacity_locked();
    }
    close_slots(surplus);
  }

  /// Changes min_size at run time; raising it opens connections now (on this thread).
  ///
  /// Throws: std::invalid_argument if `n` exceeds max_size.
  void set_min_size(std::size_t n) CONNPOOL_EXCLUDES(mutex_) {
    const CoreRef keep(this);
    {
      UniqueLock lk(mutex_);
      const std::size_t max = max_size_.load(std::memory_order_relaxed);
      if (n > max) {
        throw std::invalid_argument("connpool: set_min_size: min_size (" + std::to_string(n) +
                                    ") must not exceed max_size (" + std::to_string(max) + ")");
      }
      min_size_.store(n, std::memory_order_relaxed);
    }
    const DrainOnExit drain;
    refill();
  }

  /// Closes every connection open now, as soon as it is idle: the idle ones at once, those in
  /// use when they are given back (or found by an acquire), without stopping service; then
  /// refills to min_size. Connections being opened now count as open now. For a credentials
  /// rotation or a failover. Returns how many it closed at once.
  std::size_t evict_all() CONNPOOL_EXCLUDES(mutex_) {
    const CoreRef keep(this);
    const DrainOnExit drain;
    SlotChain<SlotT> idle;
    {
      UniqueLock lk(mutex_);
      if (closed_.load(std::memory_order_relaxed)) {
        return 0;
      }
      generation_.fetch_add(1, std::memory_order_relaxed);
      idle = claim_all_idle_locked();
      for (SlotT* s = idle.head; s != nullptr; s = s->next_closing) {
        s->close_reason = CloseReason::evicted;
      }
    }
    const std::size_t n = idle.size;
    close_slots(idle);
    refill();
    return n;
  }

  /// DESIGN 7: idempotent. Closes idle connections now, wakes waiters with PoolClosed, and
  /// joins the maintenance thread; in-use connections are closed when they come back.
  void close() noexcept CONNPOOL_EXCLUDES(mutex_) {
    const CoreRef keep(this);
    const DrainOnExit drain;  // the waiters' PoolClosed completions, once all else is done
    SlotChain<SlotT> idle;
    {
      UniqueLock lk(mutex_);
      if (closed_.load(std::memory_order_relaxed)) {
        lk.unlock();
        join_internal_threads(false);  // "stops promptly": gone when close() returns
        return;
      }
      // A releaser that publishes kIdle after the claim below sees closed_ and closes its
      // connection itself (publish()).
      closed_.store(true, std::memory_order_seq_cst);
      while (!waiters_.empty()) {
        WaiterT* w = waiters_.pop_front();
        unlink_deadline_locked(*w);
        w->closed = true;
        w->signal();
      }
      waiters_count_.store(0, std::memory_order_seq_cst);
      idle = claim_all_idle_locked();
      for (SlotT* s = idle.head; s != nullptr; s = s->next_closing) {
        s->close_reason = CloseReason::pool_closed;
      }
      maintenance_cv_.notify_all();
      timer_cv_.notify_all();
    }
    join_internal_threads(false);
    close_slots(idle);
  }

  void give_back(SlotBase<Conn>* base, bool close) noexcept override CONNPOOL_EXCLUDES(mutex_) {
    auto* s = static_cast<SlotT*>(base);
    s->released.bump();
    if (options_.on_release) {
      emit(options_.on_release, PoolEventKind::release, *s);
    }
    bool keep = !close;
    if (!keep) {
      s->close_reason = CloseReason::invalidated;
    }
    if constexpr (Resettable<Conn>) {
      if (keep) {
        try {
          traits::reset(*s->conn);
        } catch (...) {
          keep = false;  // a connection that cannot be reset must not reach the next borrower
          s->close_reason = CloseReason::reset_failed;
        }
      }
    }
    if (keep && s->generation != generation_.load(std::memory_order_relaxed)) {
      keep = false;  // opened before evict_all()
      s->close_reason = CloseReason::evicted;
    }
    if (keep &&
        open_count_.load(std::memory_order_relaxed) > max_size_.load(std::memory_order_relaxed)) {
      keep = false;  // set_max_size() shrank the pool below what is open
      s->close_reason = CloseReason::shrunk;
    }
    if (keep && uses_ages_) {
      const TimePoint now = clock_now<Clock>();
      if (lifetime_over(s->created_at, s->lifetime, now)) {
        keep = false;  // DESIGN 6: an expired connection is closed, not kept
        s->close_reason = CloseReason::expired;
      } else {
        s->last_used = now;
      }
    }
    if (keep) {
      if (observe_holds_) {
        s->held_since.store(0, std::memory_order_relaxed);  // no longer held: not a leak
      }
      if (!must_hand_off()) {
        publish(s);
        return;
      }
      if (hand_off(s)) {
        return;
      }
      s->close_reason = CloseReason::pool_closed;
    }
    // Closed instead of returned: invalidated, reset failed, expired, or the pool is closed.
    close_slot(s);
  }

  void forget(SlotBase<Conn>* base) noexcept override CONNPOOL_EXCLUDES(mutex_) {
    const CoreRef keep(this);  // the slot's unit of capacity may be the last count
    const DrainOnExit drain;   // completions of asynchronous waiters served here, last
    auto* s = static_cast<SlotT*>(base);
    s->conn.reset();  // destroys the moved-from Conn, outside the lock
    UniqueLock lk(mutex_);
    ++counters_.detached;
    retire_locked(s);
    free_capacity_locked();
  }

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
  bool may_barge() const noexcept {
    return fifo_ ? waiters_count_.load(std::memory_order_seq_cst) == 0
                 : !starving_.load(std::memory_order_relaxed);
  }

  /// Whether a releaser must hand its connection to the oldest waiter directly.
  bool must_hand_off() const noexcept {
    return fifo_ ? waiters_count_.load(std::memory_order_relaxed) != 0
                 : starving_.load(std::memory_order_relaxed);
  }

  bool may_idle_expire() const noexcept {
    return open_count_.load(std::memory_order_relaxed) > min_size_.load(std::memory_order_relaxed);
  }

  ThreadHint& hint() const noexcept { return thread_hints[id_ & 3]; }

  /// The current slot directory. Read slot_count_ first: entries below it are valid in it.
  SlotT** dir() const noexcept { return slots_.load(std::memory_order_acquire); }

  SlotT* take_hint() const noexcept {
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

  /// Makes the owned slot `s` idle: publishes kIdle, then serves waiters, or closes the idle
  /// connections if the pool closed meanwhile, and records `s` as this thread's hint (the slot
  /// the hint held before goes on the idle stack, so a thread's earlier releases stay reachable
  /// in LIFO order).
  void publish(SlotT* s) noexcept CONNPOOL_EXCLUDES(mutex_) {
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
    if (waiters_count_.load(std::memory_order_seq_cst) != 0 ||
        closed_.load(std::memory_order_seq_cst)) {
      after_publish_slow(s);
      return;
    }
    s->publishers.fetch_sub(1, std::memory_order_release);
  }

  /// A slot of this pool that was some thread's hint until it was replaced: back on the idle
  /// stack, on top, if it is still idle with the connection the hint was set for.
  void adopt_evicted_hint(void* slot, std::uint32_t incarnation) noexcept override
      CONNPOOL_EXCLUDES(mutex_) {
    auto* s = static_cast<SlotT*>(slot);
    UniqueLock lk(mutex_);
    if (s->state.load(std::memory_order_seq_cst) == kIdle &&
        s->incarnation.load(std::memory_order_relaxed) == incarnation) {
      unlink_locked(s);
      idle_.push_front(s);
    }
  }

  /// After a publish that raced with waiters or with close(): serves the waiters, or, if the
  /// pool is closed, closes every idle connection (close() may have claimed before `self` was
  /// published). Ends the publication of `self` (see Slot::publishers); the pool may be gone
  /// when it returns.
  void after_publish_slow(SlotT* self) noexcept CONNPOOL_EXCLUDES(mutex_) {
    const CoreRef keep(this);  // taken while `self` still keeps the core from being freed
    const DrainOnExit drain;   // completions of asynchronous waiters served here, last
    SlotChain<SlotT> idle;
    {
      UniqueLock lk(mutex_);
      if (!closed_.load(std::memory_order_relaxed)) {
        serve_waiters_locked();
      } else {
        idle = claim_all_idle_locked();
      }
    }
    // The publication ends before any user code runs (close hooks below), so that no thread
    // waiting in destroy() for it can wait on that code.
    self->publishers.fetch_sub(1, std::memory_order_release);
    close_slots(idle);
  }

  /// Claims every idle slot, for closing.
  SlotChain<SlotT> claim_all_idle_locked() CONNPOOL_REQUIRES(mutex_) {
    SlotChain<SlotT> chain;
    const std::size_t n = slot_count_.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < n; ++i) {
      SlotT* s = dir()[i];
      if (try_claim(s)) {
        unlink_locked(s);
        chain.push(s);
      }
    }
    return chain;
  }

  /// Hands the owned slot `s` to the oldest waiter (DESIGN 4). Returns false if the pool is
  /// closed (the caller then closes it).
  bool hand_off(SlotT* s) noexcept CONNPOOL_EXCLUDES(mutex_) {
    const DrainOnExit drain;  // completions of asynchronous waiters served here, last
    {
      UniqueLock lk(mutex_);
      if (closed_.load(std::memory_order_relaxed)) {
        return false;
      }
      if (!fifo_) {
        update_starving_locked();  // must_hand_off() read it without the lock
      }
      if (!waiters_.empty() && (fifo_ || starving_.load(std::memory_order_relaxed))) {
        grant_slot_locked(s, false);
        return true;
      }
    }
    publish(s);  // the waiters left meanwhile, or (bounded_barging) none starves now
    return true;
  }

  /// The fast path: this thread's own last connection, claimed without the lock. Returns
  /// nullopt when there is none; `have_capacity` is then set if the one it found was closed.
  std::optional<Handle> acquire_fast(bool& have_capacity) CONNPOOL_EXCLUDES(mutex_) {
    if (may_barge()) {
      if (SlotT* s = take_hint(); s != nullptr && try_claim(s)) {
        const Verdict v = judge_now(*s, may_idle_expire());
        // A connection claimed through a hint after close() must not be handed out: check_out
        // then closes it (DESIGN 7).
        if (v == Verdict::ok && !closed_.load(std::memory_order_seq_cst)) {
          s->acquired.bump();
          s->reused.bump();
          handed_out(s);
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

  // --- The slow path of acquire ----------------------------------------------------------------

  std::optional<Handle> acquire_slow(std::optional<WaitClock::duration> timeout,
                                     const std::stop_token* stop,
                                     bool have_capacity) CONNPOOL_EXCLUDES(mutex_) {
    // Why the waiter, the deadline and the stop callback live out here: the callback must be
    // registered without holding mutex_ (it runs inline when stop was already requested, and it
    // locks mutex_), and destroyed after mutex_ is released (its destructor waits for a
    // callback running in another thread, which needs mutex_).
    const CoreRef keep(this);  // user code below may destroy the owner; units are given up
    const DrainOnExit drain;   // runs after everything here is done
    WaiterT waiter;
    std::optional<WaitClock::time_point> deadline;
    std::optional<std::stop_callback<CancelWaiter>> cancel;
    bool have_permit = false;
    if (timeout) {
      deadline = WaitClock::now() + *timeout;
    }

    for (;;) {
      SlotT* slot = nullptr;
      bool fresh = false;
      Failure failure = Failure::none;
      Snapshot snap;
      Unavailable why;
      {
        UniqueLock lk(mutex_);
        const Step step =
            step_locked(have_capacity, have_permit, slot, deadline ? &*deadline : nullptr, &why);
        if (step == Step::closed) {
          failure = Failure::closed;
        } else if (step == Step::unavailable) {
          failure = Failure::unavailable;
        } else if (step == Step::wait) {
          if (!timeout) {
            return std::nullopt;  // try_acquire never waits for another holder
          }
          if (stop != nullptr && stop->stop_possible() && !cancel) {
            // Register the stop callback unlocked, then look again: the state may change.
            lk.unlock();
            cancel.emplace(*stop, CancelWaiter{this, &waiter});
            continue;
          }
          failure = wait_locked(lk, waiter, *deadline, *timeout);
          if (failure == Failure::none) {
            slot = std::exchange(waiter.slot, nullptr);
            fresh = std::exchange(waiter.fresh, false);
            have_capacity = std::exchange(waiter.may_create, false);
            have_permit = have_capacity;  // capacity is granted with a connect permit
          } else if (failure == Failure::timeout) {
            snap = {in_use_locked(), idle_count(), waiters_.size()};
          } else if (failure == Failure::unavailable) {
            why = std::move(waiter.why_unavailable);
          }
        }
      }
      if (failure == Failure::unavailable) {
        throw_unavailable(why, timeout.value_or(WaitClock::duration::zero()));
      }
      if (failure != Failure::none) {
        throw_failure(failure, timeout.value_or(WaitClock::duration::zero()), snap);
      }
      if (slot != nullptr) {
        const Verdict v = judge_now(*slot, !fresh && may_idle_expire());
        if (check_out(slot, v, !fresh)) {
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

  /// What an acquirer can do now, without waiting (step_locked()).
  enum class Step {
    slot,         // an idle connection was claimed: check it out
    create,       // the caller holds a unit of capacity and a connect permit: connect
    wait,         // nothing: wait in the queue
    closed,       // the pool is closed (a unit of capacity the caller held is given back)
    unavailable,  // connects back off past the caller's deadline, nothing open to wait for
  };

  /// The decision of every acquire that got past the fast path, under the lock. `have_capacity`:
  /// the caller holds a unit of capacity (its connection failed validation, say);
  /// `have_permit`: and a connect permit (granted with it to a waiter). `deadline`: the caller's,
  /// if it may wait. On Step::unavailable, `why` says why.
  Step step_locked(bool& have_capacity,
                   bool& have_permit,
                   SlotT*& slot,
                   const WaitClock::time_point* deadline,
                   Unavailable* why) CONNPOOL_REQUIRES(mutex_) {
    const bool barge = fifo_ ? waiters_.empty() : !starving_.load(std::memory_order_relaxed);
    if (closed_.load(std::memory_order_relaxed)) {
      drop_capacity_locked(have_capacity, have_permit);
      return Step::closed;
    }
    if ((have_capacity || barge) && (slot = claim_idle_locked()) != nullptr) {
      // Reuse (DESIGN 2). Why LIFO: the working set stays small and warm, and idle
      // connections beyond it age out (HikariCP, Go's database/sql).
      if (std::exchange(have_permit, false)) {
        end_connect_locked();  // not needed after all
      }
      if (std::exchange(have_capacity, false)) {
        free_capacity_locked();
      }
      return Step::slot;
    }
    if (have_capacity || (barge && open_ < max_size_.load(std::memory_order_relaxed))) {
      if (!have_permit) {
        const WaitClock::time_point now = WaitClock::now();
        if (!connect_permitted_locked(now)) {
          // The factory runs at most max_connecting at a time, and not during a backoff: wait
          // for a connect permit (or a connection) in the queue.
          drop_capacity_locked(have_capacity, have_permit);
          if (deadline != nullptr && cannot_wait_out_backoff_locked(now, *deadline)) {
            *why = unavailable_locked(now);
            return Step::unavailable;
          }
          return Step::wait;
        }
        ++connecting_;
        have_permit = true;
      }
      if (!have_capacity) {
        reserve_capacity_locked();  // the factory runs outside the lock (DESIGN 3)
        have_capacity = true;
      }
      return Step::create;
    }
    return Step::wait;
  }

  // --- Connect-storm control ------------------------------------------------------------------

  /// Whether a connect may start now: fewer than max_connecting in flight, and no backoff.
  bool connect_permitted_locked(WaitClock::time_point now) const CONNPOOL_REQUIRES(mutex_) {
    return (options_.max_connecting == 0 || connecting_ < options_.max_connecting) &&
           now >= backoff_until_;
  }

  /// Whether a caller with `deadline` would time out before connects resume, with no
  /// connection open that a release could bring back.
  bool cannot_wait_out_backoff_locked(WaitClock::time_point now,
                                      WaitClock::time_point deadline) const
      CONNPOOL_REQUIRES(mutex_) {
    return now < backoff_until_ && deadline < backoff_until_ && open_ == connecting_;
  }

  Unavailable unavailable_locked(WaitClock::time_point now) const CONNPOOL_REQUIRES(mutex_) {
    return Unavailable{connect_failures_,
                       std::chrono::ceil<std::chrono::milliseconds>(backoff_until_ - now),
                       last_connect_error_};
  }

  /// Gives back a unit of capacity and a connect permit the caller holds, if it holds them.
  void drop_capacity_locked(bool& have_capacity, bool& have_permit) CONNPOOL_REQUIRES(mutex_) {
    if (std::exchange(have_permit, false)) {
      end_connect_locked();
    }
    if (std::exchange(have_capacity, false)) {
      free_capacity_locked();
    }
  }

  /// A connect permit is returned: the next waiter that needs one may get it.
  void end_connect_locked() CONNPOOL_REQUIRES(mutex_) {
    --connecting_;
    serve_capacity_locked();
  }

  /// A connect ended: `error` is null on success. After three consecutive failures further
  /// connects back off, exponentially with jitter (PoolOptions::max_connect_backoff), and
  /// waiters that cannot outlast the backoff fail early.
  ///
  /// Why three: one or two failures are noise (a connection reset, a restart in progress), a run
  /// of them is an outage, in which every caller connecting at once is what keeps a recovering
  /// database down.
  void connect_ended_locked(std::exception_ptr error) CONNPOOL_REQUIRES(mutex_) {
    --connecting_;  // first: fail_early_locked() counts what is open besides connects
    if (!error) {
      connect_failures_ = 0;
      backoff_until_ = {};
      serve_capacity_locked();
      return;
    }
    ++connect_failures_;
    last_connect_error_ = std::move(error);
    const auto max_backoff = options_.max_connect_backoff;
    if (connect_failures_ >= 3 && max_backoff.count() > 0) {
      const std::size_t doublings = std::min<std::size_t>(connect_failures_ - 3, 20);
      const auto base = std::min<std::chrono::milliseconds>(
          std::chrono::milliseconds(10) * (std::int64_t{1} << doublings), max_backoff);
      thread_local std::minstd_rand rng(static_cast<std::uint_fast32_t>(
          std::hash<std::thread::id>{}(std::this_thread::get_id())));
      const double jitter = std::uniform_real_distribution<double>(0.75, 1.25)(rng);
      const WaitClock::time_point now = WaitClock::now();
      backoff_until_ = now + std::chrono::duration_cast<WaitClock::duration>(base * jitter);
      fail_early_locked(now);
      // Whoever waits must wake when the backoff ends, to connect then: the timer thread serves
      // the asynchronous waiters; each blocked thread sleeps until its deadline and is woken
      // here to sleep until the backoff ends instead (wait_locked()).
      timer_cv_.notify_all();
      for (WaiterT* w = waiters_.front(); w != nullptr; w = IntrusiveList<WaiterT>::next(w)) {
        if (!w->is_async()) {
          w->cv.notify_one();
        }
      }
    }
    serve_capacity_locked();
  }

  /// Ends, with Unavailable, the waits that cannot outlast the backoff.
  void fail_early_locked(WaitClock::time_point now) CONNPOOL_REQUIRES(mutex_) {
    for (WaiterT* w = waiters_.front(); w != nullptr;) {
      WaiterT* next = IntrusiveList<WaiterT>::next(w);
      if (cannot_wait_out_backoff_locked(now, w->until)) {
        remove_waiter_locked(*w, w->woken);
        unlink_deadline_locked(*w);
        w->unavailable = true;
        w->why_unavailable = unavailable_locked(now);
        w->signal();
      }
      w = next;
    }
  }

  /// Gives waiters capacity and a connect permit while both are free (nothing idle to hand
  /// over): after a connect ended, a backoff ran out, or max_size grew.
  void serve_capacity_locked() CONNPOOL_REQUIRES(mutex_) {
    if (waiters_.empty()) {
      return;
    }
    const WaitClock::time_point now = WaitClock::now();
    while (!waiters_.empty() && open_ < max_size_.load(std::memory_order_relaxed) &&
           connect_permitted_locked(now)) {
      ++connecting_;
      reserve_capacity_locked();
      WaiterT* w = pop_waiter_locked();
      w->may_create = true;
      w->signal();
    }
  }

  /// Whether a connect waits for a backoff to end (and so someone must wake the waiters then).
  bool backing_off_locked(WaitClock::time_point now) const CONNPOOL_REQUIRES(mutex_) {
    return now < backoff_until_;
  }

  /// An idle slot from the idle stack (most recent first), else from a scan of all slots.
  SlotT* claim_idle_locked() CONNPOOL_REQUIRES(mutex_) {
    while (!idle_.empty()) {
      SlotT* s = idle_.pop_front();
      if (try_claim(s)) {
        return s;
      }
    }
    // The scan finds slots that sit in other threads' hints. Its loads are sequentially
    // consistent: a waiter's scan must not miss a slot published before the waiter queued (the
    // Dekker pair in the class comment). O(slots), on the slow path only (HikariCP scans its
    // sharedList the same way).
    const std::size_t n = slot_count_.load(std::memory_order_relaxed);
    for (std::size_t i = n; i-- > 0;) {
      SlotT* s = dir()[i];
      if (s->state.load(std::memory_order_seq_cst) == kIdle && try_claim(s)) {
        unlink_locked(s);
        return s;
      }
    }
    return nullptr;
  }

  /// Gives idle connections to the oldest waiters. Under bounded_barging, while the oldest
  /// waiter has waited less than starvation_bound, it is only woken to compete for one.
  void serve_waiters_locked() CONNPOOL_REQUIRES(mutex_) {
    if (!fifo_) {
      update_starving_locked();
      SlotT* s = nullptr;
      while (starving_.load(std::memory_order_relaxed) && (s = claim_idle_locked()) != nullptr) {
        grant_slot_locked(s, false);  // updates starving_
      }
      if (!starving_.load(std::memory_order_relaxed)) {
        wake_front_locked();
      }
      return;
    }
    while (!waiters_.empty()) {
      SlotT* s = claim_idle_locked();
      if (s == nullptr) {
        return;
      }
      grant_slot_locked(s, false);
    }
  }

  /// bounded_barging: the oldest waiter starves once it has waited longer than the bound, as
  /// long as fewer than half the connections (at least one) are on their way to waiters that
  /// have not taken them up yet.
  ///
  /// Why the cap: a hand-off usually goes to a sleeping thread, and with more threads than
  /// cores it may take a scheduler time slice to run. Handing every release to the queue
  /// meanwhile reserves all connections for sleeping threads while the running ones queue behind
  /// them, and the pool falls into FIFO hand-off with a context switch per cycle (W3 in bench/:
  /// a p99 wait of 1 ms without the cap, 0.1 us with it). With the cap, starving waiters are still
  /// served in order ahead of everyone else, and the other half of the pool keeps serving running
  /// callers.
  void update_starving_locked() CONNPOOL_REQUIRES(mutex_) {
    const std::size_t cap = std::max<std::size_t>(1, max_size_.load(std::memory_order_relaxed) / 2);
    const bool starving = handoffs_pending_ < cap && !waiters_.empty() &&
                          WaitClock::now() - waiters_.front()->since > options_.starvation_bound;
    starving_.store(starving, std::memory_order_relaxed);
  }

  void grant_slot_locked(SlotT* s, bool fresh) CONNPOOL_REQUIRES(mutex_) {
    WaiterT* w = pop_waiter_locked();
    w->slot = s;
    w->fresh = fresh;
    w->signal();
  }

  /// Takes the oldest waiter off the queue, to be granted something. Under bounded_barging, a
  /// wake-up it had been given to compete for an idle connection passes to the next waiter.
  WaiterT* pop_waiter_locked() CONNPOOL_REQUIRES(mutex_) {
    WaiterT* w = waiters_.pop_front();
    waiters_count_.store(waiters_.size(), std::memory_order_seq_cst);
    if (w->is_async()) {
      // It takes the grant up when its completion runs, which the pool cannot watch: the wait
      // ends now, and it takes no part in bounded_barging's count of hand-offs in flight.
      unlink_deadline_locked(*w);
      take_up_locked(*w);
    } else if (!fifo_) {
      w->handed = true;
      ++handoffs_pending_;
    }
    if (!fifo_) {
      update_starving_locked();
      pass_wake_locked(w->woken);
    }
    return w;
  }

  void pass_wake_locked(bool had_wake) CONNPOOL_REQUIRES(mutex_) {
    if (had_wake) {
      wake_front_locked();
    }
  }

  /// bounded_barging: wakes the oldest waiter to compete for an idle connection. An
  /// asynchronous one does not run until its completion does, so it is served at once instead.
  void wake_front_locked() CONNPOOL_REQUIRES(mutex_) {
    if (waiters_.empty() || waiters_.front()->woken) {
      return;
    }
    WaiterT* w = waiters_.front();
    if (w->is_async()) {
      if (SlotT* s = claim_idle_locked()) {
        grant_slot_locked(s, false);
      }
      return;
    }
    w->woken = true;
    w->signal();
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
    w.since = deadline - timeout;
    w.until = deadline;
    waiters_.push_back(&w);
    waiters_count_.store(waiters_.size(), std::memory_order_seq_cst);
    ++counters_.waited;
    int spins = wait_spin_yields;
    bool timed_out = false;
    for (;;) {
      // Before sleeping, after every wake-up and at the deadline: a connection published while
      // this caller queued (the Dekker race in the class comment) is served now, not stranded.
      const bool was_woken = std::exchange(w.woken, false);
      w.signalled.store(false, std::memory_order_relaxed);
      if (!w.granted() && !w.closed && !w.unavailable) {
        if (fifo_ || starving_.load(std::memory_order_relaxed)) {
          serve_waiters_locked();
        } else if (SlotT* s = claim_idle_locked()) {
          // bounded_barging: compete for an idle connection like a running caller does, and
          // pass the wake-up on: more connections may be idle.
          remove_waiter_locked(w, true);
          w.slot = s;
        }
        if (!w.granted() && backoff_until_ != WaitClock::time_point{}) {
          serve_capacity_locked();  // a connect backoff may have ended
        }
      }
      if (w.granted()) {
        take_up_locked(w);
        return Failure::none;
      }
      if (w.closed) {
        return Failure::closed;  // close() unlinked it
      }
      if (w.unavailable) {
        return Failure::unavailable;  // fail_early_locked() unlinked it
      }
      if (w.cancelled) {
        remove_waiter_locked(w, was_woken);
        return Failure::cancelled;
      }
      if (timed_out) {
        remove_waiter_locked(w, was_woken);
        ++counters_.timeouts;
        return Failure::timeout;
      }
      if (!resume_queue().empty()) {
        drain_unlocked();  // asynchronous waiters this thread served run before it blocks
        continue;
      }
      if (spins > 0 && WaitClock::now() < deadline) {
        spin_unlocked(w, std::exchange(spins, 0));
        continue;
      }
      // On timeout, one more pass of the loop: a last look for a connection, then fail. While
      // connects back off, also wake when the backoff ends, to connect.
      WaitClock::time_point wake = deadline;
      if (backing_off_locked(WaitClock::now())) {
        wake = std::min(wake, backoff_until_);
      }
      timed_out = w.cv.wait_until(lk.native(), wake) == std::cv_status::timeout &&
                  WaitClock::now() >= deadline;
    }
  }

  /// A waiter got what it was granted: ends its hand-off and counts how long it waited. Counted
  /// now, whatever the check-out then finds: this is how long the caller waited.
  void take_up_locked(WaiterT& w) CONNPOOL_REQUIRES(mutex_) {
    if (std::exchange(w.handed, false)) {
      --handoffs_pending_;
      update_starving_locked();
    }
    const auto waited =
        std::chrono::duration_cast<std::chrono::nanoseconds>(WaitClock::now() - w.since);
    counters_.total_wait_time += waited;
    counters_.max_wait_time = std::max(counters_.max_wait_time, waited);
  }

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
  void remove_waiter_locked(WaiterT& w, bool pass_wake) CONNPOOL_REQUIRES(mutex_) {
    waiters_.remove(&w);
    waiters_count_.store(waiters_.size(), std::memory_order_seq_cst);
    if (!fifo_) {
      update_starving_locked();
      pass_wake_locked(pass_wake);
    }
  }

  /// A stop request for the waiter `w`. A blocked thread (`async` false) is woken and leaves
  /// the queue itself. An asynchronous waiter leaves the queue now, if it waits there; one not
  /// queued yet is marked, and enqueue_async() ends its wait at once; one whose wait ended
  /// (served, timed out, closed) keeps that outcome.
  void cancel_waiter(WaiterT& w, bool async) noexcept CONNPOOL_EXCLUDES(mutex_) {
    const DrainOnExit drain;
    UniqueLock lk(mutex_);
    if (!async) {
      w.cancelled = true;
      w.signal();
    } else if (IntrusiveList<WaiterT>::is_linked(&w)) {
      remove_waiter_locked(w, w.woken);
      unlink_deadline_locked(w);
      w.cancelled = true;
      w.signal();
    } else if (!w.decided) {
      w.cancelled = true;
    }
  }

 public:
  /// Ends the wait of the asynchronous waiter `w` with AcquireCancelled, unless it ended already.
  void cancel_async(WaiterT& w) noexcept CONNPOOL_EXCLUDES(mutex_) { cancel_waiter(w, true); }

 private:
  // --- Deadlines of asynchronous waiters -------------------------------------------------------

  /// Links `w` into deadlines_ in deadline order, from the back: with one timeout for every
  /// caller (the usual case) deadlines arrive in order, and this is O(1).
  void insert_deadline_locked(WaiterT& w, WaitClock::time_point at) CONNPOOL_REQUIRES(mutex_) {
    w.deadline.at = at;
    w.deadline.waiter = &w;
    DeadlineT* after = deadlines_.back();
    while (after != nullptr && after->at > at) {
      after = IntrusiveList<DeadlineT>::prev(after);
    }
    deadlines_.insert_after(after, &w.deadline);
    if (deadlines_.front() == &w.deadline) {
      timer_cv_.notify_one();  // an earlier deadline than the timer sleeps towards
    }
  }

  void unlink_deadline_locked(WaiterT& w) CONNPOOL_REQUIRES(mutex_) {
    if (IntrusiveList<DeadlineT>::is_linked(&w.deadline)) {
      deadlines_.remove(&w.deadline);
    }
  }

  /// The timer thread: ends the waits whose deadlines passed with a timeout, then sleeps until
  /// the next deadline (or until one earlier is queued, or close()).
  ///
  /// Why one thread per pool rather than a timer per waiter: 10,000 waiting coroutines cost one
  /// sleeping thread and an O(1) list link each, not 10,000 timers.
  void timer_loop() noexcept CONNPOOL_EXCLUDES(mutex_) {
    UniqueLock lk(mutex_);
    while (!closed_.load(std::memory_order_relaxed)) {
      const WaitClock::time_point now = WaitClock::now();
      const bool backoff_ends = backing_off_locked(now) && !waiters_.empty();
      if (backoff_until_ != WaitClock::time_point{} && !backing_off_locked(now) &&
          !waiters_.empty()) {
        serve_capacity_locked();  // a backoff ended: asynchronous waiters may connect
      }
      while (!deadlines_.empty() && deadlines_.front()->at <= now) {
        WaiterT& w = *deadlines_.pop_front()->waiter;
        remove_waiter_locked(w, false);
        ++counters_.timeouts;
        w.timed_out = true;
        w.snapshot = {in_use_locked(), idle_count(), waiters_.size()};
        w.signal();
      }
      if (!resume_queue().empty()) {
        // The completions run on this thread (with the default inline scheduler, the resumed
        // coroutines themselves), and may close or destroy the pool: this thread's count keeps
        // the core alive until run_internal() lets go.
        lk.unlock();
        resume_queue().drain(true);
        lk.lock();
        continue;
      }
      if (deadlines_.empty()) {
        if (backoff_ends) {
          const WaitClock::time_point until = backoff_until_;
          timer_cv_.wait_until(lk.native(), until);
        } else {
          timer_cv_.wait(lk.native());
        }
        continue;
      }
      // A copy: wait_until reads its argument again after waking, and the waiter that owns
      // this deadline may be served and gone by then.
      WaitClock::time_point next = deadlines_.front()->at;
      if (backoff_ends) {
        next = std::min(next, backoff_until_);
      }
      timer_cv_.wait_until(lk.native(), next);
    }
  }

  // --- Keepalive ------------------------------------------------------------------------------

  /// Whether the idle connection `s` has gone unused and unpinged for keepalive_interval.
  bool keepalive_due(const SlotT& s, TimePoint now) const noexcept {
    if constexpr (Pingable<Conn>) {
      return detail::keepalive_due(s.last_used, s.last_checked, options_.keepalive_interval, now);
    } else {
      return false;
    }
  }

  /// Pings the owned slots of `slots` outside the lock: those alive go back to the idle set
  /// (at the bottom: they had been idle longest), the others are closed. Returns how many it
  /// closed.
  std::size_t keepalive(SlotChain<SlotT> slots) noexcept CONNPOOL_EXCLUDES(mutex_) {
    SlotChain<SlotT> dead;
    SlotChain<SlotT> alive;
    for (SlotT* next = slots.head; next != nullptr;) {
      SlotT* s = std::exchange(next, next->next_closing);
      bool ok = false;
      if constexpr (Pingable<Conn>) {
        try {
          ok = static_cast<bool>(traits::ping(*s->conn));
        } catch (...) {
          ok = false;
        }
      }
      if (ok) {
        s->last_checked = clock_now<Clock>();
        alive.append(s);
      } else {
        s->close_reason = CloseReason::keepalive_failed;
        dead.push(s);
      }
    }
    {
      UniqueLock lk(mutex_);
      counters_.validation_failures += dead.size;
      for (SlotT* next = alive.head; next != nullptr;) {
        SlotT* s = std::exchange(next, next->next_closing);
        if (closed_.load(std::memory_order_relaxed)) {
          s->close_reason = CloseReason::pool_closed;
          dead.push(s);
          continue;
        }
        s->state.store(kIdle, std::memory_order_seq_cst);
        idle_.push_back(s);
      }
      serve_waiters_locked();
    }
    const std::size_t n = dead.size;
    close_slots(dead);
    return n;
  }

  // --- Hooks and observation ------------------------------------------------------------------

  /// Calls `hook` (set) with an event about the owned slot `s`; exceptions are swallowed.
  void emit(const std::function<void(const PoolEvent&)>& hook,
            PoolEventKind kind,
            const SlotT& s,
            CloseReason reason = CloseReason::none) const noexcept {
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
      // Hooks never break the pool.
    }
  }

  /// The owned slot `s` is being handed out: records the check-out for leak detection and
  /// on_release, and calls on_acquire.
  void handed_out(SlotT* s) noexcept {
    if (observe_holds_) {
      s->held_since.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                          std::memory_order_relaxed);
      s->holder.store(std::this_thread::get_id(), std::memory_order_relaxed);
      if (options_.on_acquire) {
        emit(options_.on_acquire, PoolEventKind::acquire, *s);
      }
    }
  }

  /// The max_lifetime of a new connection, less a random jitter (PoolOptions::lifetime_jitter).
  ///
  /// Why: connections opened together (warm-up, a burst) would otherwise all expire together
  /// and be reopened in a storm; HikariCP shortens each lifetime by up to 2.5 % the same way.
  typename Clock::duration jittered_lifetime() const {
    const auto full = std::chrono::duration_cast<typename Clock::duration>(options_.max_lifetime);
    const double jitter =
        options_.lifetime_jitter.value_or(default_lifetime_jitter<Clock>(options_.max_lifetime));
    if (full.count() <= 0 || jitter <= 0.0) {
      return full;
    }
    thread_local std::minstd_rand rng(static_cast<std::uint_fast32_t>(
        std::hash<std::thread::id>{}(std::this_thread::get_id()) ^
        static_cast<std::size_t>(std::chrono::steady_clock::now().time_since_epoch().count())));
    const double cut = std::uniform_real_distribution<double>(0.0, jitter)(rng);
    return full - std::chrono::duration_cast<typename Clock::duration>(
                      std::chrono::duration<double, typename Clock::period>(
                          static_cast<double>(full.count()) * cut));
  }

  // --- Checks ---------------------------------------------------------------------------------

  /// A directory of `n` entries with the published slots copied; the old one stays readable.
  ///
  /// Throws: std::bad_alloc, with nothing changed (both allocations come first).
  void grow_directory_locked(std::size_t n) CONNPOOL_REQUIRES(mutex_) {
    std::unique_ptr<SlotT*[]> bigger(new SlotT*[n]);
    directories_.reserve(directories_.size() + 1);  // the push_back below cannot throw
    const std::size_t count = slot_count_.load(std::memory_order_relaxed);
    SlotT** old = dir();
    std::copy(old, old + count, bigger.get());
    slots_.store(bigger.get(), std::memory_order_release);
    directories_.push_back(std::move(bigger));
    capacity_ = n;
  }

  /// Whether `s` has outlived max_lifetime, or max_idle while the pool may shrink (DESIGN 6).
  bool judge_expiry(const SlotT& s, TimePoint now, bool may_idle_expire) const noexcept {
    return lifetime_over(s.created_at, s.lifetime, now) ||
           (may_idle_expire && idle_over(s.last_used, options_.max_idle, now));
  }

  /// judge() at the present time; without reading the clock when no decision depends on it.
  Verdict judge_now(const SlotT& s, bool may_idle_expire) const noexcept {
    if (s.generation != generation_.load(std::memory_order_relaxed)) {
      return Verdict::expired;  // evict_all() was called since it was opened
    }
    return uses_ages_ ? judge(s, clock_now<Clock>(), may_idle_expire) : Verdict::ok;
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
  bool check_out(SlotT* s, Verdict verdict, bool reused) noexcept CONNPOOL_EXCLUDES(mutex_) {
    bool failed_validation = false;
    if constexpr (Pingable<Conn>) {
      if (verdict == Verdict::needs_ping) {
        bool alive = false;
        try {
          alive = static_cast<bool>(traits::ping(*s->conn));
        } catch (...) {
          alive = false;  // DESIGN 5: an exception is a failed ping
        }
        verdict = alive ? Verdict::ok : Verdict::expired;
        failed_validation = !alive;
      }
    }
    if (verdict == Verdict::ok && !closed_.load(std::memory_order_acquire)) {
      s->acquired.bump();
      if (reused) {
        s->reused.bump();
      }
      handed_out(s);
      return true;
    }
    s->close_reason =
        failed_validation ? CloseReason::validation_failed
        : verdict != Verdict::ok
            ? (s->generation != generation_.load(std::memory_order_relaxed) ? CloseReason::evicted
                                                                            : CloseReason::expired)
            : CloseReason::pool_closed;
    const bool close_failed = !close_connection(s);
    UniqueLock lk(mutex_);
    ++counters_.closed;
    counters_.close_failures += close_failed ? 1 : 0;
    counters_.validation_failures += failed_validation ? 1 : 0;
    retire_locked(s);
    return false;
  }

  // --- Creation, closing, capacity -------------------------------------------------------------

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
    [[maybe_unused]] const std::size_t before = refs_.fetch_sub(1, std::memory_order_release);
    assert(before > 1 && "connpool: the last count on a pool was dropped under its lock");
  }

  /// A unit of capacity is free: it goes to the oldest waiter, which then creates a
  /// connection; with nobody waiting, open_ shrinks.
  void free_capacity_locked() CONNPOOL_REQUIRES(mutex_) {
    // Above max_size (set_max_size() shrank it), or with no connect permit free, the unit is
    // given up instead; serve_capacity_locked() hands it out when a permit is free again.
    if (!waiters_.empty() && open_ <= max_size_.load(std::memory_order_relaxed) &&
        connect_permitted_locked(WaitClock::now())) {
      ++connecting_;
      WaiterT* w = pop_waiter_locked();
      w->may_create = true;
      w->signal();
    } else {
      release_capacity_locked();
    }
  }

  /// Calls the factory into a slot of its own (a free one, or a new one), outside the lock; the
  /// caller holds a unit of capacity. Returns the slot in kInUse, owned by the caller, and
  /// published in slots_. On failure the slot is given back and the exception propagates; the
  /// caller still holds its unit of capacity.
  SlotT* create_slot() CONNPOOL_EXCLUDES(mutex_) {
    SlotT* s = take_slot();
    s->generation = generation_.load(std::memory_order_relaxed);  // before the connect starts
    try {
      s->conn.emplace(make_connection_sync());
    } catch (...) {
      give_back_slot(s);
      throw;
    }
    install(s);
    return s;
  }

  /// The factory's connection, on this thread. A factory that returns an awaitable (an
  /// AsyncConnectionPool's, for warm-up and refill) is driven to completion by sync_wait.
  Conn make_connection_sync() {
    using Result = std::invoke_result_t<Factory&>;
    if constexpr (Awaitable<Result> && !std::convertible_to<Result, Conn>) {
      return Conn(sync_wait(std::invoke(factory_)));
    } else {
      return Conn(std::invoke(factory_));
    }
  }

  /// A slot without a connection, owned by the caller: a free one, or a new one that is not in
  /// slots_ yet. Throws std::bad_alloc.
  SlotT* take_slot() CONNPOOL_EXCLUDES(mutex_) {
    {
      UniqueLock lk(mutex_);
      if (SlotT* s = free_slots_) {
        free_slots_ = s->next_free;
        return s;
      }
    }
    return new SlotT();
  }

  /// Gives back a slot from take_slot() whose connection could not be made.
  void give_back_slot(SlotT* s) noexcept CONNPOOL_EXCLUDES(mutex_) {
    if (!s->listed) {
      delete s;
      return;
    }
    UniqueLock lk(mutex_);
    s->next_free = free_slots_;
    free_slots_ = s;
  }

  /// The owned slot `s` has its new connection: stamps its ages and lists it in slots_.
  void install(SlotT* s) CONNPOOL_EXCLUDES(mutex_) {
    s->created_at = clock_now<Clock>();
    s->last_used = s->created_at;
    s->last_checked = s->created_at;
    s->lifetime = jittered_lifetime();
    s->id = next_conn_id_.fetch_add(1, std::memory_order_relaxed);
    s->id_snapshot.store(s->id, std::memory_order_relaxed);
    s->held_since.store(0, std::memory_order_relaxed);
    s->incarnation.store(s->incarnation.load(std::memory_order_relaxed) + 1,
                         std::memory_order_relaxed);  // only the owner writes it
    s->state.store(kInUse, std::memory_order_relaxed);
    if (!s->listed) {
      s->listed = true;
      UniqueLock lk(mutex_);
      const std::size_t n = slot_count_.load(std::memory_order_relaxed);
      dir()[n] = s;
      slot_count_.store(n + 1, std::memory_order_release);
    }
    if (options_.on_create) {
      emit(options_.on_create, PoolEventKind::create, *s);
    }
  }

  /// A connect for a caller failed with `error`: counts it, gives up the unit of capacity and
  /// returns the connect permit. The caller holds another count.
  ///
  /// Why the unit is not handed to a waiter directly: the failed connect still holds its permit
  /// until connect_ended_locked(), so with max_connecting reached no waiter could take it; that
  /// function serves the waiters once the permit is back (or the backoff has started).
  void creation_failed(std::exception_ptr error) noexcept CONNPOOL_EXCLUDES(mutex_) {
    UniqueLock lk(mutex_);
    ++counters_.create_failures;
    release_capacity_locked();
    connect_ended_locked(std::move(error));
  }

  /// The owned slot `s` holds a connection just created for a caller: the caller's handle.
  Handle hand_new(SlotT* s) CONNPOOL_EXCLUDES(mutex_) {
    {
      UniqueLock lk(mutex_);
      ++counters_.created;
      connect_ended_locked(nullptr);
    }
    if (!closed_.load(std::memory_order_acquire)) {
      s->acquired.bump();
      handed_out(s);
      return HandleAccess::make<Conn>(this, s);
    }
    // The pool closed while the factory ran.
    s->close_reason = CloseReason::pool_closed;
    close_slot(s);
    throw PoolClosed();
  }

 public:
  /// Creates a connection for an acquirer that holds a unit of capacity, with the factory
  /// called on this thread.
  ///
  /// Throws: the factory's exception, unchanged (DESIGN 3), with the place freed; PoolClosed.
  Handle create_for_caller() CONNPOOL_EXCLUDES(mutex_) {
    const CoreRef keep(this);
    const DrainOnExit drain;  // a failure gives the capacity to a waiter, maybe asynchronous
    SlotT* s = nullptr;
    try {
      s = create_slot();
    } catch (...) {
      creation_failed(std::current_exception());
      throw;
    }
    return hand_new(s);
  }

  /// The creation of a connection by an asynchronous factory, for an acquirer that holds a
  /// unit of capacity: begin_create(), then the factory's awaitable, then finish_create() with
  /// its connection, or abort_create() if it threw.
  ///
  /// Throws: std::bad_alloc (the caller then calls abort_create(nullptr)).
  SlotT* begin_create() {
    SlotT* s = take_slot();
    s->generation = generation_.load(std::memory_order_relaxed);  // before the connect starts
    return s;
  }

  /// Throws: PoolClosed, if the pool closed meanwhile (the connection is closed); what Conn's
  /// move constructor throws (a failed create: the slot, the unit of capacity and the connect
  /// permit are given back, and create_failures counts it).
  Handle finish_create(SlotT* s, Conn&& conn) CONNPOOL_EXCLUDES(mutex_) {
    const CoreRef keep(this);
    const DrainOnExit drain;
    try {
      s->conn.emplace(std::move(conn));  // Conn's move constructor may throw
      install(s);
    } catch (...) {
      s->conn.reset();
      give_back_slot(s);
      creation_failed(std::current_exception());
      throw;
    }
    return hand_new(s);
  }

  /// The asynchronous factory threw (or begin_create() did, with `s` null).
  void abort_create(SlotT* s, std::exception_ptr error = std::current_exception()) noexcept
      CONNPOOL_EXCLUDES(mutex_) {
    const CoreRef keep(this);
    const DrainOnExit drain;
    if (s != nullptr) {
      give_back_slot(s);
    }
    creation_failed(std::move(error));
  }

  Factory& factory() noexcept { return factory_; }

 private:
  /// Opens one connection into the idle set (or to the oldest waiter), for warm-up and refill.
  /// Returns false when nothing more should be added (closed, enough open, or a failure that is
  /// not to be thrown).
  bool add_idle_connection(bool throw_errors) CONNPOOL_EXCLUDES(mutex_) {
    {
      UniqueLock lk(mutex_);
      if (closed_.load(std::memory_order_relaxed) ||
          open_ >= min_size_.load(std::memory_order_relaxed) ||
          !connect_permitted_locked(WaitClock::now())) {
        return false;  // enough open, or connects are limited now: maintenance comes back later
      }
      ++connecting_;
      reserve_capacity_locked();
    }
    SlotT* s = nullptr;
    try {
      s = create_slot();
    } catch (...) {
      creation_failed(std::current_exception());
      if (throw_errors) {
        throw;
      }
      return false;
    }
    UniqueLock lk(mutex_);
    ++counters_.created;
    connect_ended_locked(nullptr);
    if (closed_.load(std::memory_order_relaxed)) {
      lk.unlock();
      close_slot(s);
      return false;
    }
    if (!waiters_.empty()) {
      grant_slot_locked(s, true);
    } else {
      s->state.store(kIdle, std::memory_order_seq_cst);
      idle_.push_front(s);
    }
    return true;
  }

  /// Opens connections until min_size are open; a failure is counted and ends the pass.
  void refill() noexcept CONNPOOL_EXCLUDES(mutex_) {
    while (add_idle_connection(false)) {
    }
  }

  /// Closes the connection of the owned slot `s`, outside the lock. Returns false if close()
  /// threw (DESIGN 10: swallowed, and counted by the caller).
  bool close_connection(SlotT* s) noexcept {
    const CloseReason reason = std::exchange(s->close_reason, CloseReason::none);
    if (options_.on_close) {
      emit(options_.on_close, PoolEventKind::close, *s,
           reason == CloseReason::none ? CloseReason::pool_closed : reason);
    }
    s->held_since.store(0, std::memory_order_relaxed);
    bool ok = true;
    if constexpr (Closeable<Conn>) {
      try {
        traits::close(*s->conn);
      } catch (...) {
        ok = false;
      }
    }
    s->conn.reset();
    return ok;
  }

  /// Closes the connections of the owned slots in `chain` and frees their places. The caller
  /// holds a count besides the slots' units of capacity (see the class comment).
  void close_slots(SlotChain<SlotT> chain) noexcept CONNPOOL_EXCLUDES(mutex_) {
    if (chain.size == 0) {
      return;
    }
    std::uint64_t failures = 0;
    for (SlotT* s = chain.head; s != nullptr; s = s->next_closing) {
      failures += close_connection(s) ? 0 : 1;
    }
    UniqueLock lk(mutex_);
    counters_.closed += chain.size;
    counters_.close_failures += failures;
    for (SlotT* s = chain.head; s != nullptr;) {
      SlotT* next = s->next_closing;
      retire_locked(s);
      free_capacity_locked();
      s = next;
    }
  }

  void close_slot(SlotT* s) noexcept CONNPOOL_EXCLUDES(mutex_) {
    const CoreRef keep(this);  // the slot's unit of capacity may be the last count
    const DrainOnExit drain;   // completions of asynchronous waiters served here, last
    SlotChain<SlotT> chain;
    chain.push(s);
    close_slots(chain);
  }

  void ref() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }

  /// Drops a count; the last one frees the core (the one route to deletion).
  void unref() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      destroy();
    }
  }

  /// Frees this object, once no releaser is still between publishing a slot and its last access
  /// to the pool (a short wait: a few loads, at most a lock and no user code). Never called
  /// with the lock held.
  void destroy() noexcept CONNPOOL_EXCLUDES(mutex_) {
    const std::size_t n = slot_count_.load(std::memory_order_acquire);
    for (std::size_t i = 0; i < n; ++i) {
      while (dir()[i]->publishers.load(std::memory_order_acquire) != 0) {
        std::this_thread::yield();
      }
    }
    delete this;
  }

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
  void join_internal_threads(bool owner) noexcept {
    for (std::jthread* member : {&thread_, &timer_}) {
      std::jthread t;
      {
        const std::lock_guard<std::mutex> lock(join_mutex_);
        if (!member->joinable() || (!owner && member->get_id() == std::this_thread::get_id())) {
          continue;
        }
        t = std::move(*member);
      }
      if (t.get_id() == std::this_thread::get_id()) {
        t.detach();
      } else {
        t.join();
      }
    }
  }

  /// The owned slot `s` has no connection any more: onto the free-slot list.
  void retire_locked(SlotT* s) CONNPOOL_REQUIRES(mutex_) {
    unlink_locked(s);
    s->state.store(kEmpty, std::memory_order_relaxed);
    s->next_free = free_slots_;
    free_slots_ = s;
  }

  void unlink_locked(SlotT* s) CONNPOOL_REQUIRES(mutex_) {
    if (IntrusiveList<SlotT>::is_linked(s)) {
      idle_.remove(s);
    }
  }

  std::size_t idle_count() const noexcept {
    std::size_t idle = 0;
    const std::size_t n = slot_count_.load(std::memory_order_acquire);
    for (std::size_t i = 0; i < n; ++i) {
      idle += dir()[i]->state.load(std::memory_order_relaxed) == kIdle ? 1 : 0;
    }
    return idle;
  }

  std::size_t in_use_locked() const CONNPOOL_REQUIRES(mutex_) {
    std::size_t in_use = 0;
    const std::size_t n = slot_count_.load(std::memory_order_acquire);
    for (std::size_t i = 0; i < n; ++i) {
      in_use += dir()[i]->state.load(std::memory_order_relaxed) == kInUse ? 1 : 0;
    }
    return in_use;
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
      case Failure::unavailable:
        break;
    }
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(timeout).count();
    throw AcquireTimeout("connpool: acquire timed out after " + std::to_string(ms) +
                         " ms (in use " + std::to_string(snap.in_use) + ", idle " +
                         std::to_string(snap.idle) + ", max_size " +
                         std::to_string(max_size_.load(std::memory_order_relaxed)) + ", waiting " +
                         std::to_string(snap.waiting) + ")");
  }

  /// The maintenance thread (DESIGN 8): a pass every health_check_interval until close().
  ///
  /// It also scans for leaks (PoolOptions::leak_threshold) every leak_threshold / 2, so that a
  /// leak is reported between 1 and 1.5 thresholds after the check-out.
  void maintenance_loop() noexcept CONNPOOL_EXCLUDES(mutex_) {
    const bool prunes = options_.health_check_interval.count() > 0;
    const bool scans = options_.leak_threshold.count() > 0;
    const auto scan_period =
        std::max<WaitClock::duration>(options_.leak_threshold / 2, std::chrono::milliseconds(1));
    auto next_prune = WaitClock::now() + options_.health_check_interval;
    auto next_scan = WaitClock::now() + scan_period;
    UniqueLock lk(mutex_);
    while (!closed_.load(std::memory_order_relaxed)) {
      const auto next = prunes && scans ? std::min(next_prune, next_scan)
                        : prunes        ? next_prune
                                        : next_scan;
      while (!closed_.load(std::memory_order_relaxed) &&
             maintenance_cv_.wait_until(lk.native(), next) == std::cv_status::no_timeout) {
      }
      if (closed_.load(std::memory_order_relaxed)) {
        break;
      }
      lk.unlock();
      const auto now = WaitClock::now();
      try {
        if (scans && now >= next_scan) {
          next_scan = now + scan_period;
          scan_leaks();
        }
        if (prunes && now >= next_prune) {
          next_prune = now + options_.health_check_interval;
          prune();
        }
      } catch (...) {
        // Out of memory for the pass's lists: try again next time.
      }
      lk.lock();
    }
  }

  /// Reports every handle held longer than leak_threshold, once per check-out, through
  /// on_leak (outside the lock). Reads the slots without the lock: a report is a snapshot, and a
  /// connection given back meanwhile may still be reported once.
  void scan_leaks() CONNPOOL_EXCLUDES(mutex_) {
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    const auto threshold =
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(options_.leak_threshold)
            .count();
    const std::size_t n = slot_count_.load(std::memory_order_acquire);
    std::vector<LeakReport> reports;
    reports.reserve(n);  // before any is recorded as reported: std::bad_alloc loses no report
    for (std::size_t i = 0; i < n; ++i) {
      SlotT& slot = *dir()[i];
      const std::int64_t since = slot.held_since.load(std::memory_order_relaxed);
      if (slot.state.load(std::memory_order_relaxed) != kInUse ||
          !leak_due(since, now, threshold,
                    slot.leak_reported_since.load(std::memory_order_relaxed)) ||
          slot.leak_reported_since.exchange(since, std::memory_order_relaxed) == since) {
        continue;
      }
      LeakReport r;
      r.connection_id = slot.id_snapshot.load(std::memory_order_relaxed);
      r.held_for = std::chrono::steady_clock::duration(now - since);
      r.holder = slot.holder.load(std::memory_order_relaxed);
      reports.push_back(r);
    }
    leaks_.fetch_add(reports.size(), std::memory_order_relaxed);
    if (options_.on_leak) {
      for (const LeakReport& r : reports) {
        try {
          options_.on_leak(r);
        } catch (...) {
          // DESIGN: hooks never break the pool.
        }
      }
    }
  }

  Factory factory_;            // called outside the lock, possibly from several threads at once
  const PoolOptions options_;  // immutable after construction
  const bool fifo_;            // WaitPolicy::fifo, or bounded_barging with a zero bound
  // Whether any decision depends on a connection's ages: lifetimes, idle expiry, validation.
  // Without, acquire and release do not read the clock at all.
  const bool uses_ages_;
  // Whether check-outs record when and by whom (leak detection, on_acquire, on_release).
  const bool observe_holds_;
  const std::uint64_t id_;  // distinguishes this pool's entries in thread_hints

  // Slot directory: dir()[0, slot_count_) are published and live as long as this object;
  // written under mutex_, read without it (acquire load of slot_count_).
  std::atomic<SlotT**> slots_{nullptr};
  std::atomic<std::size_t> slot_count_{0};
  // Every slot directory allocated (the last is slots_); an older one is kept because a thread
  // may still be reading it without the lock. Grown by set_max_size(), never shrunk.
  std::vector<std::unique_ptr<SlotT*[]>> directories_ CONNPOOL_GUARDED_BY(mutex_);
  std::size_t capacity_ CONNPOOL_GUARDED_BY(mutex_) = 0;  // entries of the current directory
  // The bounds now (set_max_size(), set_min_size()); written under mutex_.
  std::atomic<std::size_t> max_size_;
  std::atomic<std::size_t> min_size_;

  // Mirrors for the lock-free paths; written only with mutex_ held.
  std::atomic<std::size_t> waiters_count_{0};  // waiters_.size()
  std::atomic<std::size_t> open_count_{0};     // open_
  std::atomic<bool> closed_{false};
  std::atomic<bool> starving_{false};         // bounded_barging: the oldest waiter waited too long
  std::atomic<std::uint64_t> generation_{0};  // bumped by evict_all()
  std::atomic<std::uint64_t> next_conn_id_{1};  // PoolEvent::connection_id of the next one
  std::atomic<std::uint64_t> leaks_{0};         // PoolStats::leaks

  mutable Mutex mutex_;  // guards idle_, free_slots_, waiters_, open_, counters_,
                         // the fields of every queued Waiter, and the writes of the mirrors
  IntrusiveList<SlotT> idle_ CONNPOOL_GUARDED_BY(mutex_);       // LIFO: front = most recent
  SlotT* free_slots_ CONNPOOL_GUARDED_BY(mutex_) = nullptr;     // slots without a connection
  IntrusiveList<WaiterT> waiters_ CONNPOOL_GUARDED_BY(mutex_);  // FIFO: front = oldest
  std::size_t open_ CONNPOOL_GUARDED_BY(mutex_) = 0;
  // bounded_barging: waiters granted something that have not taken it up yet.
  std::size_t handoffs_pending_ CONNPOOL_GUARDED_BY(mutex_) = 0;
  // Connect-storm control (max_connecting, max_connect_backoff).
  std::size_t connecting_ CONNPOOL_GUARDED_BY(mutex_) = 0;             // connects in flight
  std::size_t connect_failures_ CONNPOOL_GUARDED_BY(mutex_) = 0;       // consecutive
  WaitClock::time_point backoff_until_ CONNPOOL_GUARDED_BY(mutex_){};  // no connect before
  std::exception_ptr last_connect_error_ CONNPOOL_GUARDED_BY(mutex_);
  Counters counters_ CONNPOOL_GUARDED_BY(mutex_);
  // Asynchronous waiters with a deadline, earliest first.
  IntrusiveList<DeadlineT> deadlines_ CONNPOOL_GUARDED_BY(mutex_);
  std::condition_variable timer_cv_;  // waited on with mutex_ by timer_; earlier deadline, close()
  std::jthread timer_;                // asynchronous deadlines (start_timer()); joined by close()
  std::condition_variable maintenance_cv_;  // waited on with mutex_; notified by close()
  std::jthread thread_;  // maintenance; started after warm-up, joined by close() (woken by closed_)
  // Guards taking thread_ and timer_ out of these members to join them (join_internal_threads).
  std::mutex join_mutex_;
  // Holders of the core (see the class comment): the owner, each unit of capacity (open_), each
  // internal thread, each CoreRef. 0 = being freed.
  std::atomic<std::size_t> refs_{1};
};

}  // namespace connpool::detail
