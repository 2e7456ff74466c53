// connpool - the asynchronous operations of a pool: the entry points of coroutine acquires, and
// the deadline timer
// SPDX-License-Identifier: MIT
#pragma once

// The members of detail::PoolCore (declared in detail/pool_core.hpp) that AsyncConnectionPool
// (async_pool.hpp) builds its co_await acquire on: the look without waiting
// (acquire_nowait()), queueing an asynchronous waiter with its completion (enqueue_async()),
// withdrawing it, the creation by an asynchronous factory (begin_create(), finish_create(),
// abort_create()), and the timer thread that ends waits at their deadlines. Lock rule: each
// takes PoolCore::mutex_ itself; completions (schedulers, coroutines) run only after it is
// released (detail/resume_queue.hpp). Included by async_pool.hpp only.

#include <chrono>
#include <cstddef>
#include <exception>
#include <optional>
#include <utility>

#include <connpool/detail/pool_core.hpp>
#include <connpool/errors.hpp>

namespace connpool::detail {

template <class Conn, class Factory, class Clock>
std::optional<typename PoolCore<Conn, Factory, Clock>::Handle>
PoolCore<Conn, Factory, Clock>::acquire_nowait(Reservation& capacity) {
  const DrainOnExit drain;
  bool had_capacity = false;
  if (std::optional<Handle> h = acquire_fast(had_capacity)) {
    return h;
  }
  CoreRef keep;  // taken when this call holds a unit of capacity it may give up below
  Reservation res;
  if (had_capacity) {
    adopt_capacity(res);
  }
  for (;;) {
    if (res.capacity() && keep.get() == nullptr) {
      keep = CoreRef(this);
    }
    SlotT* slot = nullptr;
    Step step = Step::wait;
    Unavailable why;
    {
      UniqueLock lk(mutex_);
      step = step_locked(res, slot, nullptr, &why);
    }
    switch (step) {
      case Step::closed:
        throw PoolClosed();
      case Step::unavailable:  // not without a deadline
      case Step::wait:
        return std::nullopt;
      case Step::create:
        capacity = std::move(res);  // with a connect permit: the caller connects
        return std::nullopt;
      case Step::slot:
        if (std::optional<Handle> h = check_out_granted(slot, false, res)) {
          return h;
        }
        break;
    }
  }
}

template <class Conn, class Factory, class Clock>
std::optional<typename PoolCore<Conn, Factory, Clock>::Handle>
PoolCore<Conn, Factory, Clock>::check_out_granted(SlotT* slot,
                                                  bool fresh,
                                                  Reservation& capacity,
                                                  std::chrono::nanoseconds waited) {
  const Verdict v = judge_now(*slot, !fresh && may_idle_expire());
  if (check_out(slot, v, !fresh)) {
    record_wait(*slot, waited);
    return HandleAccess::make<Conn>(this, slot);
  }
  adopt_capacity(capacity);
  return std::nullopt;
}

template <class Conn, class Factory, class Clock>
bool PoolCore<Conn, Factory, Clock>::enqueue_async(WaiterT& w,
                                                   void (*complete)(Resumable*) noexcept,
                                                   std::optional<WaitClock::time_point> deadline) {
  const DrainOnExit drain;  // the look below may serve other asynchronous waiters
  UniqueLock lk(mutex_);
  w.complete = nullptr;  // queued again after a failed check-out: no completion until below
  // Every return but the last decides the outcome at once: a stop request must not change it
  // while the driver reads it.
  w.decided = true;
  if (w.cancelled) {
    return false;
  }
  Reservation res;  // empty when the lock is released (create passes it on to `w`)
  SlotT* slot = nullptr;
  if (deadline) {
    w.until = *deadline;
  }
  switch (step_locked(res, slot, deadline ? &*deadline : nullptr, &w.why_unavailable)) {
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
      res.capacity_ = false;  // passed on to `w`, with the permit
      res.permit_ = false;
      w.may_create = true;
      return false;
    case Step::wait:
      break;
  }
  if (over_waiter_limit_locked()) {
    ++counters_.rejected;
    w.overloaded = true;
    w.snapshot = snapshot_locked();
    return false;
  }
  const WaitClock::time_point now = WaitClock::now();
  ++counters_.waited;
  if (deadline && *deadline <= now) {
    ++counters_.timeouts;
    w.timed_out = true;
    w.snapshot = snapshot_locked();
    return false;
  }
  w.since = now;
  waiters_.push_back(&w);
  // The look a blocking waiter takes after queueing (the Dekker pair in the class comment).
  // `complete` is not set yet, so a grant to `w` here signals nobody.
  if (fifo_ || waiters_.starving()) {
    serve_waiters_locked();
  } else if (SlotT* s = waiters_.paused() ? nullptr : claim_idle_locked()) {
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

template <class Conn, class Factory, class Clock>
bool PoolCore<Conn, Factory, Clock>::withdraw_async(WaiterT& w) noexcept {
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

template <class Conn, class Factory, class Clock>
bool PoolCore<Conn, Factory, Clock>::permit_for(Reservation& r) {
  const CoreRef keep(this);
  const DrainOnExit drain;
  UniqueLock lk(mutex_);
  if (!closed_.load(std::memory_order_relaxed) && connect_permitted_locked(WaitClock::now())) {
    take_permit_locked(r);
    return true;
  }
  drop_locked(r);
  return false;
}

template <class Conn, class Factory, class Clock>
void PoolCore<Conn, Factory, Clock>::timer_loop() noexcept {
  UniqueLock lk(mutex_);
  while (!closed_.load(std::memory_order_relaxed)) {
    const WaitClock::time_point now = WaitClock::now();
    const bool backoff_ends = gate_.backing_off(now) && !waiters_.empty();
    if (gate_.backoff_set() && !gate_.backing_off(now) && !waiters_.empty()) {
      serve_capacity_locked();  // a backoff ended: asynchronous waiters may connect
    }
    while (WaiterT* expired = waiters_.pop_expired(now)) {
      WaiterT& w = *expired;
      remove_waiter_locked(w, false);
      ++counters_.timeouts;
      w.timed_out = true;
      w.snapshot = snapshot_locked();
      w.signal();
    }
    // Asynchronous drains past their deadline give up; the next deadline of the others.
    std::optional<WaitClock::time_point> drain_deadline;
    for (DrainWaiter* d = async_drains_.front(); d != nullptr;) {
      DrainWaiter* next_drain = IntrusiveList<DrainWaiter>::next(d);
      if (d->until <= now) {
        finish_drain_locked(d, false);
      } else if (!drain_deadline || d->until < *drain_deadline) {
        drain_deadline = d->until;
      }
      d = next_drain;
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
    // A copy: wait_until reads its argument again after waking, and the waiter that owns a
    // deadline may be served and gone by then.
    std::optional<WaitClock::time_point> next = drain_deadline;
    auto earliest = [&next](WaitClock::time_point t) { next = next ? std::min(*next, t) : t; };
    if (waiters_.has_deadlines()) {
      earliest(waiters_.next_deadline());
    }
    if (backoff_ends) {
      earliest(gate_.backoff_until());
    }
    if (next) {
      timer_cv_.wait_until(lk.native(), *next);
    } else {
      timer_cv_.wait(lk.native());
    }
  }
}

template <class Conn, class Factory, class Clock>
typename PoolCore<Conn, Factory, Clock>::SlotT* PoolCore<Conn, Factory, Clock>::begin_create() {
  SlotT* s = take_slot();
  s->generation = generation_.load(std::memory_order_relaxed);  // before the connect starts
  s->connect_started = WaitClock::now();
  return s;
}

template <class Conn, class Factory, class Clock>
typename PoolCore<Conn, Factory, Clock>::Handle PoolCore<Conn, Factory, Clock>::finish_create(
    SlotT* s, Conn&& conn, Reservation&& r, std::chrono::nanoseconds waited) {
  const CoreRef keep(this);
  const DrainOnExit drain;
  Reservation res = std::move(r);
  s->connect_took = WaitClock::now() - s->connect_started;
  try {
    s->conn.emplace(std::move(conn));  // Conn's move constructor may throw
    install(s);
  } catch (...) {
    s->conn.reset();
    give_back_slot(s);
    creation_failed(res, std::current_exception());
    throw;
  }
  res.capacity_ = false;  // the new connection's slot holds the unit now
  return hand_new(s, res, waited);
}

template <class Conn, class Factory, class Clock>
void PoolCore<Conn, Factory, Clock>::abort_create(SlotT* s,
                                                  Reservation& r,
                                                  std::exception_ptr error) noexcept {
  const CoreRef keep(this);
  const DrainOnExit drain;
  if (s != nullptr) {
    give_back_slot(s);
  }
  creation_failed(r, std::move(error));
}

}  // namespace connpool::detail
