// connpool - the slow path of acquire and the service of waiters (members of PoolCore)
// SPDX-License-Identifier: MIT
#pragma once

// The out-of-line members of detail::PoolCore (declared in detail/pool_core.hpp) that decide who
// gets a connection when the fast path found none: the slow path of acquire (step_locked(), the
// blocking wait), claiming idle connections, handing a released connection to the oldest
// waiter, and the bounded_barging wake-ups. Not here: creating and closing connections
// (detail/pool_core_create.hpp), the asynchronous entry points (detail/async_ops.hpp).
// Lock rule: the *_locked members run with PoolCore::mutex_ held; the others take it themselves
// and run no user code under it. Included at the end of pool_core.hpp, so that the class and
// its members come together.

#include <algorithm>
#include <chrono>
#include <optional>
#include <stop_token>
#include <thread>
#include <utility>

#include <connpool/detail/failure.hpp>
#include <connpool/detail/pool_core.hpp>

namespace connpool::detail {

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::after_publish_slow(SlotT* self) noexcept {
  // A count on the core only when closing below gives units of capacity up. Why not always:
  // with callers waiting, every release comes here, and an RMW on the core's count from all of
  // them cost W3 with bounded_barging a third of its throughput (bench/ab.py).
  if (auto* seam = after_publish_seam.load(std::memory_order_relaxed)) {
    seam(refs_);
  }
  CoreRef keep;
  const DrainOnExit drain;  // completions of asynchronous waiters served here, last
  SlotChain<SlotT> idle;
  {
    UniqueLock lk(mutex_);
    if (!closed_.load(std::memory_order_relaxed)) {
      serve_waiters_locked();
      if (drainers_ != 0) {
        drain_cv_.notify_all();  // a drain closes the connection just published
        if (!async_drains_.empty()) {
          // An asynchronous drain has no thread of its own: this one closes it.
          keep = CoreRef(this);  // the owner holds one: not closed
          idle = claim_all_idle_locked();
          for (SlotT* s = idle.head; s != nullptr; s = s->next_closing) {
            s->close_reason = CloseReason::evicted;
          }
        }
      }
    } else {
      // A count, unless the last one is gone: a closer claimed `self` once it was published,
      // closed it, let go of the pool and is freeing the core, waiting in destroy() for this
      // publication to end. Nothing is open then (each connection holds a count), so nothing
      // is left to close, and a count taken now would free the core a second time.
      keep = CoreRef::if_alive(this);
      if (keep.get() != nullptr) {
        idle = claim_all_idle_locked();
      }
    }
  }
  // The publication ends before any user code runs (close hooks below), so that no thread
  // waiting in destroy() for it can wait on that code.
  self->publishers.fetch_sub(1, std::memory_order_release);
  close_slots(idle);
}

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::adopt_evicted_hint(void* slot,
                                                               std::uint32_t incarnation) noexcept {
  auto* s = static_cast<SlotT*>(slot);
  UniqueLock lk(mutex_);
  if (s->state.load(std::memory_order_seq_cst) == kIdle &&
      s->incarnation.load(std::memory_order_relaxed) == incarnation) {
    unlink_locked(s);
    idle_.push_front(s);
  }
}

template <class Conn, class Factory, class Clock>
inline auto PoolCore<Conn, Factory, Clock>::claim_all_idle_locked() -> SlotChain<SlotT> {
  SlotChain<SlotT> chain;
  const std::size_t n = slots_.count();
  for (std::size_t i = 0; i < n; ++i) {
    SlotT* s = slots_.at(i);
    if (try_claim(s)) {
      unlink_locked(s);
      chain.push(s);
    }
  }
  return chain;
}

template <class Conn, class Factory, class Clock>
inline bool PoolCore<Conn, Factory, Clock>::hand_off(SlotT* s) noexcept {
  const DrainOnExit drain;  // completions of asynchronous waiters served here, last
  {
    UniqueLock lk(mutex_);
    if (closed_.load(std::memory_order_relaxed)) {
      return false;
    }
    if (!fifo_) {
      update_starving_locked();  // must_hand_off() read it without the lock
    }
    if (!waiters_.paused() && !waiters_.empty() && (fifo_ || waiters_.starving())) {
      grant_slot_locked(s, false);
      return true;
    }
  }
  // The waiters left meanwhile, (bounded_barging) none starves now, or the pool is paused: the
  // connection waits in the idle set for resume().
  publish(s);
  return true;
}

template <class Conn, class Factory, class Clock>
inline auto PoolCore<Conn, Factory, Clock>::acquire_slow(std::optional<WaitClock::duration> timeout,
                                                         const std::stop_token* stop,
                                                         bool had_capacity)
    -> std::optional<Handle> {
  // Why the waiter, the deadline and the stop callback live out here: the callback must be
  // registered without holding mutex_ (it runs inline when stop was already requested, and it
  // locks mutex_), and destroyed after mutex_ is released (its destructor waits for a
  // callback running in another thread, which needs mutex_).
  // A count on the core, taken only where this call may give up a unit of capacity (it holds
  // one: from a failed check-out) or runs user code that may destroy the pool and then goes
  // on (draining completions while it waits). Why not always: every caller that finds no
  // connection at hand comes here, and an RMW on the core's count from all of them costs a
  // contended pool a fifth of its throughput (W3 with bounded_barging, bench/ab.py).
  CoreRef keep;
  const DrainOnExit drain;  // runs after everything here is done
  WaiterT waiter;
  std::optional<WaitClock::time_point> deadline;
  std::optional<std::stop_callback<CancelWaiter>> cancel;
  std::chrono::nanoseconds waited{0};  // PoolStats::wait_time; 0 while it has not queued
  Reservation res;                     // before `keep` goes: it may give a unit of capacity back
  if (had_capacity) {
    adopt_capacity(res);
  }
  if (timeout) {
    deadline = WaitClock::now() + *timeout;
  }

  for (;;) {
    if (res.capacity() && keep.get() == nullptr) {
      keep = CoreRef(this);  // step_locked() may give the unit up
    }
    SlotT* slot = nullptr;
    bool fresh = false;
    Failure failure = Failure::none;
    Snapshot snap;
    Unavailable why;
    {
      UniqueLock lk(mutex_);
      const Step step = step_locked(res, slot, deadline ? &*deadline : nullptr, &why);
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
        failure = wait_locked(lk, waiter, *deadline, *timeout, keep);
        if (failure == Failure::none) {
          waited = waiter.waited;
          slot = std::exchange(waiter.slot, nullptr);
          fresh = std::exchange(waiter.fresh, false);
          if (std::exchange(waiter.may_create, false)) {
            adopt_grant(res);  // capacity is granted with a connect permit
          }
        } else if (failure == Failure::timeout || failure == Failure::overloaded) {
          snap = snapshot_locked();
        } else if (failure == Failure::unavailable) {
          why = std::move(waiter.why_unavailable);
        }
      }
    }
    if (failure == Failure::unavailable) {
      detail::throw_unavailable(why, timeout.value_or(WaitClock::duration::zero()));
    }
    if (failure != Failure::none) {
      detail::throw_failure(failure, timeout.value_or(WaitClock::duration::zero()), snap);
    }
    if (slot != nullptr) {
      const Verdict v = judge_now(*slot, !fresh && may_idle_expire());
      if (check_out(slot, v, !fresh)) {
        record_wait(*slot, waited);
        return HandleAccess::make<Conn>(this, slot);
      }
      adopt_capacity(res);  // it was closed; its place is ours to fill
      continue;
    }
    if (res.capacity()) {
      // Below max_size with nothing idle: create, outside the lock (DESIGN 3).
      return create_for_caller(std::move(res), waited);
    }
  }
}

template <class Conn, class Factory, class Clock>
inline auto PoolCore<Conn, Factory, Clock>::step_locked(Reservation& res,
                                                        SlotT*& slot,
                                                        const WaitClock::time_point* deadline,
                                                        Unavailable* why) -> Step {
  const bool barge = fifo_ ? waiters_.empty() : !waiters_.starving();
  if (closed_.load(std::memory_order_relaxed)) {
    drop_locked(res);
    return Step::closed;
  }
  if (waiters_.paused()) {
    drop_locked(res);  // paused: nothing is handed out or opened until resume()
    return Step::wait;
  }
  if ((res.capacity() || barge) && (slot = claim_idle_locked()) != nullptr) {
    // Reuse (DESIGN 2). Why LIFO: the working set stays small and warm, and idle
    // connections beyond it age out (HikariCP, Go's database/sql).
    drop_locked(res);  // not needed after all
    return Step::slot;
  }
  if (res.capacity() || (barge && open_ < max_size_.load(std::memory_order_relaxed))) {
    if (!res.permit()) {
      const WaitClock::time_point now = WaitClock::now();
      if (!connect_permitted_locked(now)) {
        // The factory runs at most max_connecting at a time, and not during a backoff: wait
        // for a connect permit (or a connection) in the queue.
        drop_locked(res);
        if (deadline != nullptr && gate_.cannot_wait_out(now, *deadline, open_)) {
          *why = gate_.unavailable(now);
          return Step::unavailable;
        }
        return Step::wait;
      }
      take_permit_locked(res);
    }
    if (!res.capacity()) {
      take_capacity_locked(res);  // the factory runs outside the lock (DESIGN 3)
    }
    return Step::create;
  }
  return Step::wait;
}

template <class Conn, class Factory, class Clock>
inline auto PoolCore<Conn, Factory, Clock>::claim_idle_locked() -> SlotT* {
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
  const std::size_t n = slots_.count();
  for (std::size_t i = n; i-- > 0;) {
    SlotT* s = slots_.at(i);
    if (s->state.load(std::memory_order_seq_cst) == kIdle && try_claim(s)) {
      unlink_locked(s);
      return s;
    }
  }
  return nullptr;
}

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::serve_waiters_locked() {
  if (waiters_.paused()) {
    return;  // resume() serves them
  }
  if (!fifo_) {
    update_starving_locked();
    SlotT* s = nullptr;
    while (waiters_.starving() && (s = claim_idle_locked()) != nullptr) {
      grant_slot_locked(s, false);  // updates the starvation state
    }
    if (!waiters_.starving()) {
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

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::grant_slot_locked(SlotT* s, bool fresh) {
  WaiterT* w = pop_waiter_locked();
  w->slot = s;
  w->fresh = fresh;
  w->signal();
}

template <class Conn, class Factory, class Clock>
inline auto PoolCore<Conn, Factory, Clock>::pop_waiter_locked() -> WaiterT* {
  WaiterT* w = waiters_.pop_front();
  if (w->is_async()) {
    // It takes the grant up when its completion runs, which the pool cannot watch: the wait
    // ends now.
    unlink_deadline_locked(*w);
    take_up_locked(*w);
  }
  if (!fifo_) {
    update_starving_locked();
    pass_wake_locked(w->woken);
  }
  return w;
}

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::wake_front_locked() {
  if (waiters_.empty() || waiters_.front()->woken || waiters_.paused()) {
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

template <class Conn, class Factory, class Clock>
inline auto PoolCore<Conn, Factory, Clock>::wait_locked(UniqueLock& lk,
                                                        WaiterT& w,
                                                        WaitClock::time_point deadline,
                                                        WaitClock::duration timeout,
                                                        CoreRef& keep) -> Failure {
  if (w.cancelled) {
    return Failure::cancelled;
  }
  if (over_waiter_limit_locked()) {
    ++counters_.rejected;
    return Failure::overloaded;
  }
  w.since = deadline - timeout;
  w.until = deadline;
  waiters_.push_back(&w);
  ++counters_.waited;
  int spins = waiters_.should_spin(wait_spin_limit) ? wait_spin_yields : 0;
  bool timed_out = false;
  for (;;) {
    // Before sleeping, after every wake-up and at the deadline: a connection published while
    // this caller queued (the Dekker race in the class comment) is served now, not stranded.
    const bool was_woken = std::exchange(w.woken, false);
    w.signalled.store(false, std::memory_order_relaxed);
    if (!w.granted() && !w.closed && !w.cleared && !w.unavailable && !waiters_.paused()) {
      if (fifo_ || waiters_.starving()) {
        serve_waiters_locked();
      } else if (SlotT* s = claim_idle_locked()) {
        // bounded_barging: compete for an idle connection like a running caller does, and
        // pass the wake-up on: more connections may be idle.
        remove_waiter_locked(w, true);
        w.slot = s;
      }
      if (!w.granted() && gate_.backoff_set()) {
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
    if (w.cleared) {
      return Failure::cleared;  // clear() unlinked it
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
      if (keep.get() == nullptr) {
        keep = CoreRef(this);  // the completions may destroy the pool; this call goes on
      }
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
    if (gate_.backing_off(WaitClock::now())) {
      wake = std::min(wake, gate_.backoff_until());
    }
    timed_out = w.cv.wait_until(lk.native(), wake) == std::cv_status::timeout &&
                WaitClock::now() >= deadline;
  }
}

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::take_up_locked(WaiterT& w) {
  const auto waited =
      std::chrono::duration_cast<std::chrono::nanoseconds>(WaitClock::now() - w.since);
  counters_.total_wait_time += waited;
  counters_.max_wait_time = std::max(counters_.max_wait_time, waited);
  waiters_.record_wait(waited);
  w.waited = waited;
}

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::remove_waiter_locked(WaiterT& w, bool pass_wake) {
  waiters_.remove(&w);
  if (!fifo_) {
    update_starving_locked();
    pass_wake_locked(pass_wake);
  }
}

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::cancel_waiter(WaiterT& w, bool async) noexcept {
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

}  // namespace connpool::detail
