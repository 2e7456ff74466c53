// connpool - the waiter queue: FIFO order, the wait policy's starvation rule, deadlines
// SPDX-License-Identifier: MIT
#pragma once

// WaiterQueue<W>: the callers waiting in a pool, oldest first; the lock-free mirrors the fast
// path reads (may a caller barge? must a releaser hand off?); bounded_barging's starvation rule;
// the recent mean wait, which says whether a caller
// about to sleep should spin first; and the deadlines of asynchronous waiters, in
// deadline order. A decision component: it never locks, never reads a clock (the caller passes
// `now`) and never runs user code; serving waiters (claiming connections, granting capacity,
// signalling) is detail/pool_core.hpp's. No member locks; the caller holds PoolCore::mutex_,
// except for the lock-free reads named so. Tests: tests/detail/waiter_queue_test.cpp.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>

#include <connpool/detail/clock.hpp>
#include <connpool/detail/intrusive_list.hpp>
#include <connpool/detail/waiter.hpp>

namespace connpool::detail {

/// The waiters of one pool. `W` derives from ListHook<W> and has the fields `since` (when it
/// started waiting) and `deadline` (a DeadlineNode<W>).
///
/// Why FIFO with direct hand-off by default: every caller's wait is bounded by the callers
/// ahead of it, and no newcomer overtakes a waiter (DESIGN 4; HikariCP and Go's database/sql
/// hand a released connection to a waiting request the same way).
template <class W>
class alignas(64) WaiterQueue {
 public:
  using Deadline = DeadlineNode<W>;

  /// `fifo`: WaitPolicy::fifo (or bounded_barging with a zero bound); `starvation_bound`:
  /// bounded_barging's longest wait before releases go to the oldest waiter directly.
  WaiterQueue(bool fifo, std::chrono::microseconds starvation_bound) noexcept
      : fifo_(fifo), bound_(starvation_bound) {}

  // --- The queue, oldest first -----------------------------------------------------------------

  [[nodiscard]] bool empty() const noexcept { return list_.empty(); }
  [[nodiscard]] std::size_t size() const noexcept { return list_.size(); }
  [[nodiscard]] W* front() const noexcept { return list_.front(); }
  [[nodiscard]] static W* next(const W* w) noexcept { return IntrusiveList<W>::next(w); }
  [[nodiscard]] static bool queued(const W* w) noexcept { return IntrusiveList<W>::is_linked(w); }

  void push_back(W* w) noexcept {
    list_.push_back(w);
    publish_count();
  }
  void remove(W* w) noexcept {
    list_.remove(w);
    publish_count();
  }
  /// The oldest waiter, off the queue; the queue must not be empty.
  W* pop_front() noexcept {
    W* w = list_.pop_front();
    publish_count();
    return w;
  }

  // --- Lock-free reads for the fast path
  // ----------------------------------------------------------

  /// The number of waiters, plus kPausedMark while the pool is paused; sequentially consistent:
  /// a releaser that publishes a connection and then reads it, and a waiter that queues (or a
  /// drain that pauses) and then looks for a connection, see each other (the Dekker pair in
  /// PoolCore's class comment).
  ///
  /// Why the pause is in the count: every fast-path decision that must change while paused
  /// (may a caller barge? must a release take the slow path, where a drain is woken?) already
  /// reads it, so a pause costs the fast path nothing (a flag of its own cost W1 13 %).
  [[nodiscard]] std::size_t count() const noexcept {
    return count_.load(std::memory_order_seq_cst);
  }

  /// Whether a caller may take an idle connection without queueing: under fifo only while
  /// nobody waits; under bounded_barging unless the oldest waiter starves; never while the pool
  /// is paused (count_ and starving_ say so then). Lock-free.
  [[nodiscard]] bool may_barge() const noexcept {
    return fifo_ ? count_.load(std::memory_order_seq_cst) == 0 : !starving();
  }

  /// Whether a releaser must hand its connection to the oldest waiter directly. Lock-free.
  [[nodiscard]] bool must_hand_off() const noexcept {
    return fifo_ ? count_.load(std::memory_order_relaxed) != 0 : starving();
  }

  [[nodiscard]] bool fifo() const noexcept { return fifo_; }

  /// Whether the pool is paused (PoolCore::pause()): nothing is handed out, everyone queues.
  [[nodiscard]] bool paused() const noexcept { return paused_; }

  /// paused(), read without the lock.
  [[nodiscard]] bool paused_lock_free() const noexcept {
    return count_.load(std::memory_order_relaxed) >= kPausedMark;
  }

  /// Pauses or resumes. After resuming, the caller recomputes starving() (update_starving()).
  void set_paused(bool paused) noexcept {
    paused_ = paused;
    starving_.store(paused, std::memory_order_relaxed);
    publish_count();
  }

  /// Added to count() while paused: more waiters than can exist.
  static constexpr std::size_t kPausedMark = std::size_t{1} << (sizeof(std::size_t) * 8 - 1);

  /// bounded_barging: the oldest waiter waited past the bound (as of the last update), or the
  /// pool is paused: nobody may barge. Lock-free.
  [[nodiscard]] bool starving() const noexcept { return starving_.load(std::memory_order_relaxed); }

  // --- bounded_barging ---------------------------------------------------------------------------

  /// Recomputes starving(): the oldest waiter starves once it has waited longer than the bound
  /// at `now`. While it does, every release goes to the waiters directly, oldest first, however
  /// many connections are already on their way to waiters that have not run yet: so no waiter
  /// is overtaken for longer than the bound, plus the hand-offs to the starving waiters ahead of
  /// it.
  ///
  /// Why no cap on the hand-offs in flight: capping them at half the connections kept more
  /// connections with running callers (W3's p99 wait fell from about 1 ms to 0.1 us), but then a
  /// waiter could starve for as long as the scheduler left the woken waiters ahead of it without
  /// a processor: worst waits of 25-30 ms and a fairness (cycles min/max) of about 0.5 in W3,
  /// against 3-5 ms and about 0.9 without the cap, at about the same throughput
  /// (bench/README.md, "Callers outnumbering connections").
  void update_starving(WaitClock::time_point now) noexcept {
    const bool starving = paused_ || (may_starve() && now - list_.front()->since > bound_);
    starving_.store(starving, std::memory_order_relaxed);
  }

  /// Whether update_starving() depends on `now` at all: someone waits. Otherwise the caller need
  /// not read a clock: any `now` gives the same.
  ///
  /// Why it matters: the core recomputes starving() under its lock at every grant, removal and
  /// release with waiters; a clock read each time lengthened that critical section enough to cost
  /// W3 with bounded_barging about a tenth of its throughput.
  [[nodiscard]] bool may_starve() const noexcept { return !list_.empty(); }

  // --- Spinning before sleeping ------------------------------------------------------------------

  /// A wait ended with a grant after `waited`: folded into the recent mean wait (an exponential
  /// moving average, weight 1/8).
  void record_wait(std::chrono::nanoseconds waited) noexcept {
    recent_wait_ += (waited - recent_wait_) / 8;
  }

  /// The recent mean of the waits that ended with a grant; zero before the first.
  [[nodiscard]] std::chrono::nanoseconds recent_wait() const noexcept { return recent_wait_; }

  /// Whether a caller about to sleep should spin first (PoolCore's wait_spin_yields), watching
  /// for a grant: while the recent mean wait is below `limit`, and under bounded_barging also
  /// while the oldest waiter does not starve (as of the last update), since spinning waiters
  /// then compete for released connections.
  ///
  /// Why: when releases go to the waiters in arrival order (fifo, or bounded_barging once the
  /// oldest waiter starves), how long a waiter will wait is about how long its predecessors did.
  /// Spinning pays off when the hand-off comes within the spin (a waiter still running takes it
  /// at once, without a wake-up); when waits are long (many callers per connection, connections
  /// held for a network round trip), spinners only take turns on the processors with the holders
  /// and with the server, and the hand-off finds them parked anyway. bench/README.md, "Callers
  /// outnumbering connections": PostgreSQL, 64 threads on 4 connections, about 15 % more
  /// requests and 25 % less client CPU per request.
  [[nodiscard]] bool should_spin(std::chrono::nanoseconds limit) const noexcept {
    return recent_wait_ < limit || (!fifo_ && !starving());
  }

  // --- Deadlines of asynchronous waiters
  // ----------------------------------------------------------

  /// Links `w` in deadline order, from the back: with one timeout for every caller (the usual
  /// case) deadlines arrive in order, and this is O(1). Returns true if it is now the earliest
  /// (whoever sleeps towards the earliest deadline must be woken).
  bool insert_deadline(W& w, WaitClock::time_point at) noexcept {
    w.deadline.at = at;
    w.deadline.waiter = &w;
    Deadline* after = deadlines_.back();
    while (after != nullptr && after->at > at) {
      after = IntrusiveList<Deadline>::prev(after);
    }
    deadlines_.insert_after(after, &w.deadline);
    return deadlines_.front() == &w.deadline;
  }

  void unlink_deadline(W& w) noexcept {
    if (IntrusiveList<Deadline>::is_linked(&w.deadline)) {
      deadlines_.remove(&w.deadline);
    }
  }

  /// The waiter whose deadline passed first at `now`, unlinked from the deadlines (not from the
  /// queue); null when none has.
  W* pop_expired(WaitClock::time_point now) noexcept {
    if (deadlines_.empty() || deadlines_.front()->at > now) {
      return nullptr;
    }
    return deadlines_.pop_front()->waiter;
  }

  [[nodiscard]] bool has_deadlines() const noexcept { return !deadlines_.empty(); }

  /// The earliest deadline; has_deadlines() must hold.
  [[nodiscard]] WaitClock::time_point next_deadline() const noexcept {
    return deadlines_.front()->at;
  }

 private:
  void publish_count() noexcept {
    count_.store(list_.size() + (paused_ ? kPausedMark : 0), std::memory_order_seq_cst);
  }

  // What the fast path reads without the lock, on a cache line of its own (the queue is
  // cache-line aligned): the lines written under the lock, the lock's own included, move between
  // cores with every slow acquire, and a fast path that shared one would wait for them.
  std::atomic<std::size_t> count_{0};  // list_.size() (+ kPausedMark), for the lock-free reads
  std::atomic<bool> starving_{false};  // bounded_barging, or paused: see update_starving()
  const bool fifo_;
  const std::chrono::microseconds bound_;  // bounded_barging's starvation bound
  // Written under the lock.
  alignas(64) IntrusiveList<W> list_;        // front = oldest
  bool paused_ = false;                      // set_paused()
  std::chrono::nanoseconds recent_wait_{0};  // record_wait(): recent mean of granted waits
  IntrusiveList<Deadline> deadlines_;        // asynchronous waiters with a deadline, earliest first
};

}  // namespace connpool::detail
