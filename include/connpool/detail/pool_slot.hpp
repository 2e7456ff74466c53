// connpool - a pool's slot: the state word, owner counters, ages and links of one connection
// SPDX-License-Identifier: MIT
#pragma once

// Slot<Conn, Clock> (the place of one pooled connection, with its state word, time stamps and
// the counters its owners bump), SlotState, OwnerCounter and SlotChain. Records only: the
// algorithms that claim, publish and close slots are in detail/pool_core.hpp. The state word is
// the only field touched without ownership; every other field belongs to whoever holds the slot
// in kInUse, except where a comment names the pool's lock.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <thread>

#include <connpool/detail/intrusive_list.hpp>
#include <connpool/detail/slot.hpp>
#include <connpool/events.hpp>
#include <connpool/histogram.hpp>

namespace connpool::detail {

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
  typename Clock::time_point created_at{};    // when the factory returned the connection
  typename Clock::time_point last_used{};     // when it was last given back (or created)
  typename Clock::time_point last_checked{};  // when a keepalive ping last succeeded
  typename Clock::duration lifetime{};        // max_lifetime less its jitter; 0 = unlimited
  typename Clock::time_point checked_out{};   // when its holder got it (PoolStats::use_time)
  std::uint64_t id = 0;                       // PoolEvent::connection_id
  std::atomic<std::uint64_t> id_snapshot{0};  // the same, for the leak scan
  std::uint64_t generation = 0;               // evict_all() generation it was opened in
  // `acquired` when the connection was opened: it has been handed out acquired - this times
  // (PoolOptions::max_uses), at no cost to the hand-out.
  std::uint64_t acquired_before = 0;
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

  // Below: fields a cycle touches rarely or not at all, after those it touches on every cycle,
  // so that these stay on the slot's first lines (W1 lost 19 % with the histograms in between).
  //
  // PoolStats::wait_time (the acquires served with this slot that waited or connected) and
  // use_time (how long each holder held it), recorded by the owner: per slot, so without a lock
  // or a contended line.
  AtomicHistogram wait_time;
  AtomicHistogram use_time;
  std::chrono::steady_clock::time_point connect_started{};  // of its connection
  std::chrono::nanoseconds connect_took{0};  // its connection's connect (PoolStats::create_time)
  // Where it was acquired (leak_threshold set), read by the leak scan and in_use_report(): a
  // reader racing a new check-out may mix two sites' fields, never read a torn pointer.
  struct Site {
    std::atomic<const char*> file{""};
    std::atomic<const char*> function{""};
    std::atomic<std::uint_least32_t> line{0};
    std::atomic<std::uint_least32_t> column{0};
    void store(const source_location& s) noexcept {
      file.store(s.file_name(), std::memory_order_relaxed);
      function.store(s.function_name(), std::memory_order_relaxed);
      line.store(s.line(), std::memory_order_relaxed);
      column.store(s.column(), std::memory_order_relaxed);
    }
    [[nodiscard]] source_location load() const noexcept {
      return {file.load(std::memory_order_relaxed), function.load(std::memory_order_relaxed),
              line.load(std::memory_order_relaxed), column.load(std::memory_order_relaxed)};
    }
  } site;
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

}  // namespace connpool::detail
