// connpool - the maintenance of a pool: prune, keepalive, refill, leak scan, resize, evict
// SPDX-License-Identifier: MIT
#pragma once

// The members of detail::PoolCore (declared in detail/pool_core.hpp) that maintain the pool
// rather than serve acquires: one maintenance pass (prune(): expiry, keepalive pings, refill to
// min_size), the background thread that runs it, the leak scan, set_max_size(), set_min_size(),
// evict_all() and clear(), pause(), resume() and drain(). Lock rule: each takes PoolCore::mutex_
// itself for its decisions and runs user code (ping, close, the factory, hooks) only after
// releasing it, holding a count on the core (CoreRef) so that user code may close or destroy the
// pool. Included by the fronts (pool.hpp, async_pool.hpp); nothing below them includes it.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <connpool/detail/expiry.hpp>
#include <connpool/detail/pool_core.hpp>
#include <connpool/events.hpp>

namespace connpool::detail {

template <class Conn, class Factory, class Clock>
void PoolCore<Conn, Factory, Clock>::start_maintenance() {
  if (options_.health_check_interval.count() > 0 || options_.leak_threshold.count() > 0) {
    thread_ = start_internal(&PoolCore::maintenance_loop);
  }
}

template <class Conn, class Factory, class Clock>
std::size_t PoolCore<Conn, Factory, Clock>::prune() {
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
    const std::size_t count = slots_.count();
    claimed.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
      if (try_claim(slots_.at(i))) {
        claimed.push_back(slots_.at(i));
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
        s->close_reason = s->generation != generation ? stale_reason(*s) : CloseReason::expired;
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

template <class Conn, class Factory, class Clock>
void PoolCore<Conn, Factory, Clock>::set_max_size(std::size_t n) {
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
    if (n > slots_.capacity()) {
      slots_.grow(n);  // std::bad_alloc: nothing changed
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

template <class Conn, class Factory, class Clock>
void PoolCore<Conn, Factory, Clock>::set_min_size(std::size_t n) {
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

template <class Conn, class Factory, class Clock>
std::size_t PoolCore<Conn, Factory, Clock>::evict(bool fail_waiters) {
  const CoreRef keep(this);
  const DrainOnExit drain;  // the PoolCleared completions of asynchronous waiters, last
  SlotChain<SlotT> idle;
  {
    UniqueLock lk(mutex_);
    if (closed_.load(std::memory_order_relaxed)) {
      return 0;
    }
    const std::uint64_t generation = generation_.fetch_add(1, std::memory_order_relaxed) + 1;
    if (fail_waiters) {
      cleared_generation_.store(generation, std::memory_order_relaxed);
      while (!waiters_.empty()) {
        WaiterT* w = waiters_.pop_front();
        unlink_deadline_locked(*w);
        w->cleared = true;
        w->signal();
      }
      if (!fifo_) {
        update_starving_locked();
      }
    }
    idle = claim_all_idle_locked();
    for (SlotT* s = idle.head; s != nullptr; s = s->next_closing) {
      s->close_reason = fail_waiters ? CloseReason::cleared : CloseReason::evicted;
    }
  }
  const std::size_t n = idle.size;
  close_slots(idle);
  refill();
  return n;
}

template <class Conn, class Factory, class Clock>
void PoolCore<Conn, Factory, Clock>::pause() noexcept {
  UniqueLock lk(mutex_);
  waiters_.set_paused(true);
}

template <class Conn, class Factory, class Clock>
bool PoolCore<Conn, Factory, Clock>::drain(WaitClock::duration timeout) {
  const CoreRef keep(this);
  const WaitClock::time_point deadline = WaitClock::now() + timeout;
  UniqueLock lk(mutex_);
  waiters_.set_paused(true);
  // Paused before the first claim below: a releaser that publishes after that sees it in the
  // waiter count and wakes this drain (publish(), after_publish_slow()).
  ++drainers_;
  // Connections in use now, or being opened, are closed when they come back (as evict_all()).
  generation_.fetch_add(1, std::memory_order_relaxed);
  for (;;) {
    // The idle ones now, and any a releaser published since (it read the generation before the
    // bump above, or was in the middle of its release).
    SlotChain<SlotT> idle = claim_all_idle_locked();
    if (idle.size != 0) {
      for (SlotT* s = idle.head; s != nullptr; s = s->next_closing) {
        s->close_reason = CloseReason::evicted;
      }
      lk.unlock();
      close_slots(idle);  // user code: unlocked
      lk.lock();
      continue;
    }
    if (open_ == 0 || WaitClock::now() >= deadline) {
      break;
    }
    drain_cv_.wait_until(lk.native(), deadline);
  }
  --drainers_;
  return open_ == 0;
}

template <class Conn, class Factory, class Clock>
bool PoolCore<Conn, Factory, Clock>::begin_async_drain(DrainWaiter* d) {
  const CoreRef keep(this);
  const DrainOnExit drain;  // completions of other asynchronous drains decided below
  UniqueLock lk(mutex_);
  waiters_.set_paused(true);
  generation_.fetch_add(1, std::memory_order_relaxed);  // in use now: closed when they come back
  for (;;) {
    SlotChain<SlotT> idle = claim_all_idle_locked();
    if (idle.size == 0) {
      break;
    }
    for (SlotT* s = idle.head; s != nullptr; s = s->next_closing) {
      s->close_reason = CloseReason::evicted;
    }
    lk.unlock();
    close_slots(idle);  // user code: unlocked
    lk.lock();
  }
  if (open_ == 0 || closed_.load(std::memory_order_relaxed)) {
    d->result = open_ == 0;
    d->unref();  // the pool's share: it never holds `d`
    return false;
  }
  // Publications take the slow path while paused; with drainers_ set, after_publish_slow()
  // closes what they publish.
  ++drainers_;
  async_drains_.push_back(d);
  timer_cv_.notify_all();  // its deadline
  return true;
}

template <class Conn, class Factory, class Clock>
bool PoolCore<Conn, Factory, Clock>::cancel_async_drain(DrainWaiter* d) noexcept {
  UniqueLock lk(mutex_);
  if (!d->linked) {
    return false;
  }
  async_drains_.remove(d);
  --drainers_;
  lk.unlock();
  d->unref();  // the pool's share
  return true;
}

template <class Conn, class Factory, class Clock>
void PoolCore<Conn, Factory, Clock>::resume() noexcept {
  // The completions of asynchronous waiters served here run last, after the lock is released;
  // one may destroy the pool, so this call holds a count until they have run.
  const CoreRef keep(this);
  const DrainOnExit drain;
  UniqueLock lk(mutex_);
  if (!waiters_.paused()) {
    return;
  }
  waiters_.set_paused(false);
  if (closed_.load(std::memory_order_relaxed)) {
    return;
  }
  serve_waiters_locked();
  if (!fifo_) {
    // bounded_barging serves only starving waiters directly and wakes the oldest of the others
    // to compete; after a pause every connection idle now is theirs, oldest first.
    while (!waiters_.empty()) {
      SlotT* s = claim_idle_locked();
      if (s == nullptr) {
        break;
      }
      grant_slot_locked(s, false);
    }
  }
  serve_capacity_locked();
}

template <class Conn, class Factory, class Clock>
bool PoolCore<Conn, Factory, Clock>::keepalive_due(const SlotT& s, TimePoint now) const noexcept {
  if constexpr (Pingable<Conn>) {
    return detail::keepalive_due(s.last_used, s.last_checked, options_.keepalive_interval, now);
  } else {
    return false;
  }
}

template <class Conn, class Factory, class Clock>
std::size_t PoolCore<Conn, Factory, Clock>::keepalive(SlotChain<SlotT> slots) noexcept {
  SlotChain<SlotT> dead;
  SlotChain<SlotT> alive;
  for (SlotT* next = slots.head; next != nullptr;) {
    SlotT* s = std::exchange(next, next->next_closing);
    if (ops_.ping(*s)) {
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

template <class Conn, class Factory, class Clock>
void PoolCore<Conn, Factory, Clock>::maintenance_loop() noexcept {
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

template <class Conn, class Factory, class Clock>
std::vector<InUseConnection> PoolCore<Conn, Factory, Clock>::in_use_report() const {
  const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  const bool observed = ops_.observes_holds();
  const std::size_t n = slots_.count();
  std::vector<InUseConnection> out;
  for (std::size_t i = 0; i < n; ++i) {
    const SlotT& slot = *slots_.at(i);
    if (slot.state.load(std::memory_order_relaxed) != kInUse) {
      continue;
    }
    InUseConnection c;
    if (observed) {
      // Held by a caller (not by maintenance pinging it, or a connect under way): stamped.
      const std::int64_t since = slot.held_since.load(std::memory_order_relaxed);
      if (since == 0) {
        continue;
      }
      c.held_for = std::chrono::steady_clock::duration(now - since);
      c.holder = slot.holder.load(std::memory_order_relaxed);
      c.site = slot.site.load();
    }
    c.connection_id = slot.id_snapshot.load(std::memory_order_relaxed);
    out.push_back(c);
  }
  return out;
}

template <class Conn, class Factory, class Clock>
void PoolCore<Conn, Factory, Clock>::scan_leaks() {
  const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  const auto threshold =
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(options_.leak_threshold)
          .count();
  const std::size_t n = slots_.count();
  std::vector<LeakReport> reports;
  reports.reserve(n);  // before any is recorded as reported: std::bad_alloc loses no report
  for (std::size_t i = 0; i < n; ++i) {
    SlotT& slot = *slots_.at(i);
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
    r.site = slot.site.load();
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

}  // namespace connpool::detail
