// connpool - the slot directory: every slot a pool has allocated, and the free ones
// SPDX-License-Identifier: MIT
#pragma once

// SlotDirectory<SlotT>: the slots a pool has listed (read without the lock by the fast path,
// stats() and the leak scan), their growth when max_size grows, the free-slot list, and the
// counts taken from the slots' state words. A container: it never locks, never reads a clock and
// never runs user code. Changes happen under PoolCore::mutex_; the reads named lock-free need no
// lock. Slots are freed only with the directory, so a listed slot's address stays valid for
// the pool's whole life. Tests: through the pool's (tests/pool_*_test.cpp, fault_test.cpp).

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include <connpool/detail/pool_slot.hpp>

namespace connpool::detail {

/// The listed slots of a pool. `SlotT` is a Slot<Conn, Clock> (detail/pool_slot.hpp).
template <class SlotT>
class SlotDirectory {
 public:
  /// Room for `capacity` slots (max_size); nothing listed.
  explicit SlotDirectory(std::size_t capacity) : capacity_(capacity) {
    directories_.emplace_back(new SlotT*[capacity]);
    current_.store(directories_.back().get(), std::memory_order_release);
  }

  SlotDirectory(const SlotDirectory&) = delete;
  SlotDirectory& operator=(const SlotDirectory&) = delete;

  /// Frees every listed slot (and what a slot still holds). Free slots are listed ones.
  ~SlotDirectory() {
    const std::size_t n = count();
    for (std::size_t i = 0; i < n; ++i) {
      delete at(i);
    }
  }

  // --- Lock-free reads -------------------------------------------------------------------------

  /// How many slots are listed (an acquire load: at(i) is valid below it).
  [[nodiscard]] std::size_t count() const noexcept {
    return count_.load(std::memory_order_acquire);
  }

  /// The i-th listed slot; `i` < a value count() returned.
  [[nodiscard]] SlotT* at(std::size_t i) const noexcept {
    return current_.load(std::memory_order_acquire)[i];
  }

  /// How many listed slots are in `state` now (a snapshot: the slots change meanwhile).
  [[nodiscard]] std::size_t count_in(std::uint32_t state) const noexcept {
    std::size_t k = 0;
    const std::size_t n = count();
    for (std::size_t i = 0; i < n; ++i) {
      k += at(i)->state.load(std::memory_order_relaxed) == state ? 1 : 0;
    }
    return k;
  }

  // --- Changes, under the pool's lock
  // ---------------------------------------------------------------

  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

  /// Makes room for `n` slots (n > capacity()). The old directory stays readable: a thread may
  /// still be reading it without the lock.
  ///
  /// Throws: std::bad_alloc, with nothing changed (both allocations come first).
  void grow(std::size_t n) {
    std::unique_ptr<SlotT*[]> bigger(new SlotT*[n]);
    directories_.reserve(directories_.size() + 1);  // the push_back below cannot throw
    const std::size_t listed = count_.load(std::memory_order_relaxed);
    SlotT** old = current_.load(std::memory_order_relaxed);
    std::copy(old, old + listed, bigger.get());
    current_.store(bigger.get(), std::memory_order_release);
    directories_.push_back(std::move(bigger));
    capacity_ = n;
  }

  /// Lists a new slot (fewer than capacity() are listed: each listed slot holds a unit of
  /// capacity or is free, and free ones are reused first).
  void list(SlotT* s) noexcept {
    const std::size_t n = count_.load(std::memory_order_relaxed);
    current_.load(std::memory_order_relaxed)[n] = s;
    count_.store(n + 1, std::memory_order_release);
  }

  /// A listed slot without a connection, or null.
  [[nodiscard]] SlotT* take_free() noexcept {
    SlotT* s = free_;
    if (s != nullptr) {
      free_ = s->next_free;
    }
    return s;
  }

  /// `s` (listed, without a connection) may be reused.
  void put_free(SlotT* s) noexcept {
    s->next_free = free_;
    free_ = s;
  }

 private:
  std::atomic<SlotT**> current_{nullptr};  // the directory in use: entries [0, count_) valid
  std::atomic<std::size_t> count_{0};      // listed slots
  // Every directory allocated (the last is current_); an older one is kept because a thread may
  // still be reading it without the lock. Grown by grow(), never shrunk.
  std::vector<std::unique_ptr<SlotT*[]>> directories_;
  std::size_t capacity_;   // entries of the current directory
  SlotT* free_ = nullptr;  // listed slots without a connection, linked by Slot::next_free
};

}  // namespace connpool::detail
