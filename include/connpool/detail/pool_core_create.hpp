// connpool - creating and closing connections, capacity and connect control (members of
// PoolCore)
// SPDX-License-Identifier: MIT
#pragma once

// The out-of-line members of detail::PoolCore (declared in detail/pool_core.hpp) that open and
// close connections and account for their places: the create path for a caller and for refill
// (with its Reservation of capacity and connect permit), the end of a connect (ConnectGate's
// backoff, failing early, waking waiters), the check-out of a claimed connection, closing
// (one, a chain, the whole pool), statistics, and the end of the core's lifetime (destroy(),
// joining the internal threads). Not here: the slow path of acquire and the waiters
// (detail/pool_core_wait.hpp). Lock rule: the *_locked members run with PoolCore::mutex_ held;
// the others take it themselves and call user code (factory, close, hooks) only without it.
// Included at the end of pool_core.hpp.

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>

#include <connpool/detail/failure.hpp>
#include <connpool/detail/pool_core.hpp>
#include <connpool/errors.hpp>
#include <connpool/stats.hpp>

namespace connpool::detail {

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::close() noexcept {
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
    idle = claim_all_idle_locked();
    for (SlotT* s = idle.head; s != nullptr; s = s->next_closing) {
      s->close_reason = CloseReason::pool_closed;
    }
    // Asynchronous drains end now (the timer thread stops): true only if nothing is open.
    while (DrainWaiter* d = async_drains_.front()) {
      finish_drain_locked(d, open_ == idle.size);
    }
    maintenance_cv_.notify_all();
    timer_cv_.notify_all();
  }
  // Connects and pings under way give up (user stop callbacks run here), the maintenance
  // thread's among them, before it is joined.
  ops_.request_stop();
  join_internal_threads(false);
  close_slots(idle);
}

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::forget(SlotBase<Conn>* base) noexcept {
  const CoreRef keep(this);  // the slot's unit of capacity may be the last count
  const DrainOnExit drain;   // completions of asynchronous waiters served here, last
  auto* s = static_cast<SlotT*>(base);
  s->conn.reset();  // destroys the moved-from Conn, outside the lock
  UniqueLock lk(mutex_);
  ++counters_.detached;
  retire_locked(s);
  free_capacity_locked();
}

template <class Conn, class Factory, class Clock>
inline auto PoolCore<Conn, Factory, Clock>::stats() const -> PoolStats {
  PoolStats s;
  s.name = options_.name;
  {
    UniqueLock lk(mutex_);
    counters_.fill(s);
    s.leaks = leaks_.load(std::memory_order_relaxed);
    s.pending = waiters_.size();
    s.connecting = gate_.connecting();
  }
  const std::size_t n = slots_.count();
  for (std::size_t i = 0; i < n; ++i) {
    const SlotT& slot = *slots_.at(i);
    s.acquired += slot.acquired.get();
    s.reused += slot.reused.get();
    s.released += slot.released.get();
    slot.wait_time.add_to(s.wait_time);
    slot.use_time.add_to(s.use_time);
    // Both gauges come from the slot's state, so that idle + in_use never exceeds the slots
    // even while other threads move connections around.
    const std::uint32_t st = slot.state.load(std::memory_order_relaxed);
    s.idle += st == kIdle ? 1 : 0;
    s.in_use += st == kInUse ? 1 : 0;
  }
  // The acquires served at once are not timed: they are the rest of `acquired`, at 0.
  const std::uint64_t timed = s.wait_time.count();
  s.wait_time.add(0, s.acquired > timed ? s.acquired - timed : 0);
  s.min_size = min_size_.load(std::memory_order_relaxed);
  s.max_size = max_size_.load(std::memory_order_relaxed);
  return s;
}

template <class Conn, class Factory, class Clock>
inline HealthReport PoolCore<Conn, Factory, Clock>::health_report(std::string acquire_error) {
  const PoolStats s = stats();
  HealthReport r;
  r.in_use = s.in_use;
  r.max_size = s.max_size;
  {
    const std::lock_guard<std::mutex> lock(health_mutex_);
    r.p99_wait = recent_waits_.since(WaitClock::now(), s.wait_time).quantile(0.99);
  }
  {
    UniqueLock lk(mutex_);
    if (const auto& what = gate_.failing_with()) {
      r.last_error = *what;
    }
  }
  health_verdict(r, std::move(acquire_error), options_.health_p99_wait);
  return r;
}

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::connect_ended_locked(
    std::exception_ptr error, std::shared_ptr<const std::string> what) {
  thread_local std::minstd_rand rng(
      static_cast<std::uint_fast32_t>(std::hash<std::thread::id>{}(std::this_thread::get_id())));
  const double jitter = error ? std::uniform_real_distribution<double>(0.75, 1.25)(rng) : 1.0;
  const WaitClock::time_point now = WaitClock::now();
  if (gate_.ended(std::move(error), now, jitter, std::move(what))) {
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

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::fail_early_locked(WaitClock::time_point now) {
  for (WaiterT* w = waiters_.front(); w != nullptr;) {
    WaiterT* next = IntrusiveList<WaiterT>::next(w);
    if (gate_.cannot_wait_out(now, w->until, open_)) {
      remove_waiter_locked(*w, w->woken);
      unlink_deadline_locked(*w);
      w->unavailable = true;
      w->why_unavailable = gate_.unavailable(now);
      w->signal();
    }
    w = next;
  }
}

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::serve_capacity_locked() {
  if (waiters_.empty() || waiters_.paused()) {
    return;
  }
  const WaitClock::time_point now = WaitClock::now();
  while (!waiters_.empty() && open_ < max_size_.load(std::memory_order_relaxed) &&
         gate_.permitted(now)) {
    gate_.begin();
    reserve_capacity_locked();
    WaiterT* w = pop_waiter_locked();
    w->may_create = true;
    w->signal();
  }
}

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::free_capacity_locked() {
  // Above max_size (set_max_size() shrank it), with no connect permit free, or while paused,
  // the unit is given up instead; serve_capacity_locked() hands it out when a permit is free
  // again, or at resume().
  if (!waiters_.empty() && !waiters_.paused() &&
      open_ <= max_size_.load(std::memory_order_relaxed) &&
      connect_permitted_locked(WaitClock::now())) {
    gate_.begin();
    WaiterT* w = pop_waiter_locked();
    w->may_create = true;
    w->signal();
  } else {
    release_capacity_locked();
  }
}

template <class Conn, class Factory, class Clock>
inline bool PoolCore<Conn, Factory, Clock>::check_out(SlotT* s,
                                                      Verdict verdict,
                                                      bool reused) noexcept {
  bool failed_validation = false;
  if constexpr (Pingable<Conn>) {
    if (verdict == Verdict::needs_ping) {
      const bool alive = ops_.ping(*s);  // DESIGN 5: an exception is a failed ping
      verdict = alive ? Verdict::ok : Verdict::expired;
      failed_validation = !alive;
    }
  }
  if (verdict == Verdict::ok && !closed_.load(std::memory_order_acquire)) {
    s->acquired.bump();
    if (reused) {
      s->reused.bump();
    }
    ops_.handed_out(*s);
    return true;
  }
  s->close_reason =
      failed_validation ? CloseReason::validation_failed
      : verdict != Verdict::ok
          ? (s->generation != generation_.load(std::memory_order_relaxed) ? stale_reason(*s)
                                                                          : CloseReason::expired)
          : CloseReason::pool_closed;
  const CloseReason reason = s->close_reason;
  const bool close_failed = !ops_.close(*s);
  UniqueLock lk(mutex_);
  counters_.count_close(reason, close_failed);
  counters_.validation_failures += failed_validation ? 1 : 0;
  retire_locked(s);
  return false;
}

template <class Conn, class Factory, class Clock>
inline auto PoolCore<Conn, Factory, Clock>::create_slot() -> SlotT* {
  SlotT* s = take_slot();
  s->generation = generation_.load(std::memory_order_relaxed);  // before the connect starts
  try {
    s->connect_started = WaitClock::now();
    s->conn.emplace(ops_.make_connection());
    s->connect_took = WaitClock::now() - s->connect_started;
  } catch (...) {
    give_back_slot(s);
    throw;
  }
  install(s);
  return s;
}

template <class Conn, class Factory, class Clock>
inline auto PoolCore<Conn, Factory, Clock>::take_slot() -> SlotT* {
  {
    UniqueLock lk(mutex_);
    if (SlotT* s = slots_.take_free()) {
      return s;
    }
  }
  return new SlotT();
}

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::give_back_slot(SlotT* s) noexcept {
  if (!s->listed) {
    delete s;
    return;
  }
  UniqueLock lk(mutex_);
  slots_.put_free(s);
}

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::install(SlotT* s) {
  ops_.stamp_new(*s);
  if (!s->listed) {
    s->listed = true;
    UniqueLock lk(mutex_);
    slots_.list(s);
  }
  ops_.created(*s);
}

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::creation_failed(Reservation& r,
                                                            std::exception_ptr error) noexcept {
  assert(r.capacity_ && r.permit_);
  std::shared_ptr<const std::string> what = describe_error(error);  // user code: unlocked
  UniqueLock lk(mutex_);
  ++counters_.create_failures;
  r.capacity_ = false;
  r.permit_ = false;
  release_capacity_locked();
  connect_ended_locked(std::move(error), std::move(what));
}

template <class Conn, class Factory, class Clock>
inline auto PoolCore<Conn, Factory, Clock>::hand_new(SlotT* s,
                                                     Reservation& r,
                                                     std::chrono::nanoseconds waited) -> Handle {
  {
    UniqueLock lk(mutex_);
    ++counters_.created;
    counters_.create_time.record(s->connect_took);
    r.permit_ = false;
    connect_ended_locked(nullptr);
  }
  if (!closed_.load(std::memory_order_acquire)) {
    s->acquired.bump();
    record_wait(*s, waited + s->connect_took);
    ops_.handed_out(*s);
    return HandleAccess::make<Conn>(this, s);
  }
  // The pool closed while the factory ran.
  s->close_reason = CloseReason::pool_closed;
  close_slot(s);
  throw PoolClosed();
}

template <class Conn, class Factory, class Clock>
inline auto PoolCore<Conn, Factory, Clock>::create_for_caller(Reservation&& r,
                                                              std::chrono::nanoseconds waited)
    -> Handle {
  const CoreRef keep(this);
  const DrainOnExit drain;  // a failure gives the capacity to a waiter, maybe asynchronous
  Reservation res = std::move(r);
  SlotT* s = nullptr;
  try {
    s = create_slot();
  } catch (...) {
    creation_failed(res, std::current_exception());
    throw;
  }
  res.capacity_ = false;  // the new connection's slot holds the unit now
  return hand_new(s, res, waited);
}

template <class Conn, class Factory, class Clock>
inline bool PoolCore<Conn, Factory, Clock>::add_idle_connection(bool throw_errors) {
  Reservation res;
  {
    UniqueLock lk(mutex_);
    if (closed_.load(std::memory_order_relaxed) || waiters_.paused() ||
        open_ >= min_size_.load(std::memory_order_relaxed) ||
        !connect_permitted_locked(WaitClock::now())) {
      return false;  // enough open, or connects are limited now: maintenance comes back later
    }
    take_permit_locked(res);
    take_capacity_locked(res);
  }
  SlotT* s = nullptr;
  try {
    s = create_slot();
  } catch (...) {
    creation_failed(res, std::current_exception());
    if (throw_errors) {
      throw;
    }
    return false;
  }
  res.capacity_ = false;  // the new connection's slot holds the unit now
  UniqueLock lk(mutex_);
  ++counters_.created;
  counters_.create_time.record(s->connect_took);
  res.permit_ = false;
  connect_ended_locked(nullptr);
  if (closed_.load(std::memory_order_relaxed)) {
    lk.unlock();
    close_slot(s);
    return false;
  }
  if (!waiters_.empty() && !waiters_.paused()) {
    grant_slot_locked(s, true);
  } else {
    s->state.store(kIdle, std::memory_order_seq_cst);
    idle_.push_front(s);
  }
  return true;
}

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::close_slots(SlotChain<SlotT> chain) noexcept {
  if (chain.size == 0) {
    return;
  }
  Counters::CloseTally tally;
  for (SlotT* s = chain.head; s != nullptr; s = s->next_closing) {
    const CloseReason reason = s->close_reason;  // ops_.close() clears it
    tally.add(reason, !ops_.close(*s));
  }
  UniqueLock lk(mutex_);
  counters_.count_closes(tally);
  for (SlotT* s = chain.head; s != nullptr;) {
    SlotT* next = s->next_closing;
    retire_locked(s);
    free_capacity_locked();
    s = next;
  }
}

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::close_slot(SlotT* s) noexcept {
  const CoreRef keep(this);  // the slot's unit of capacity may be the last count
  const DrainOnExit drain;   // completions of asynchronous waiters served here, last
  SlotChain<SlotT> chain;
  chain.push(s);
  close_slots(chain);
}

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::give_up(Reservation& r) noexcept {
  const CoreRef keep(this);
  const DrainOnExit drain;  // the unit may go to a waiter, maybe asynchronous
  UniqueLock lk(mutex_);
  drop_locked(r);
}

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::drop_locked(Reservation& r) {
  if (std::exchange(r.permit_, false)) {
    end_connect_locked();
  }
  if (std::exchange(r.capacity_, false)) {
    free_capacity_locked();
  }
}

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::destroy() noexcept {
  const std::size_t n = slots_.count();
  for (std::size_t i = 0; i < n; ++i) {
    while (slots_.at(i)->publishers.load(std::memory_order_acquire) != 0) {
      std::this_thread::yield();
    }
  }
  delete this;
}

template <class Conn, class Factory, class Clock>
inline void PoolCore<Conn, Factory, Clock>::join_internal_threads(bool owner) noexcept {
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

}  // namespace connpool::detail
