// connpool - a caller waiting in acquire(), and its deadline node
// SPDX-License-Identifier: MIT
#pragma once

// Waiter<Conn, Clock> (a blocked thread or an asynchronous operation waiting in a pool's queue),
// DeadlineNode, and what a wait can end with (Snapshot, Unavailable). Records only: the queue and
// its rules are in detail/waiter_queue.hpp, the serving in detail/pool_core.hpp. Every field of a
// queued waiter is guarded by its pool's mutex.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <memory>
#include <string>

#include <connpool/detail/intrusive_list.hpp>
#include <connpool/detail/pool_slot.hpp>
#include <connpool/detail/resume_queue.hpp>

namespace connpool::detail {

/// The pool's counts when an acquire timed out, for the exception's message.
struct Snapshot {
  std::size_t in_use = 0;
  std::size_t idle = 0;
  std::size_t waiting = 0;
  std::size_t max_size = 0;
  bool paused = false;  // the pool was paused (PoolCore::pause())
};

/// Why an acquire failed early while connects back off (PoolOptions::max_connect_backoff).
struct Unavailable {
  std::size_t failures = 0;                      // consecutive connect failures
  std::chrono::milliseconds retry_in{0};         // until the next connect may start
  std::exception_ptr last_error;                 // the last factory exception
  std::shared_ptr<const std::string> last_what;  // its what(), read where it was caught
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
  std::chrono::nanoseconds waited{0};  // since `since`, when last granted (PoolStats::wait_time)
  Slot<Conn, Clock>* slot = nullptr;   // a connection handed over
  bool fresh = false;                  // `slot` was just created, not reused
  bool may_create = false;             // a unit of capacity handed over
  bool closed = false;                 // the pool closed while waiting
  bool cleared = false;                // clear() ended the wait
  bool cancelled = false;              // the caller's stop_token was triggered
  bool woken = false;           // bounded_barging: notified to compete for an idle connection
  bool timed_out = false;       // async: the pool's timer ended the wait
  bool unavailable = false;     // failed early: connects back off past its deadline
  bool overloaded = false;      // async: refused, max_waiters callers waited (see `snapshot`)
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

/// An asynchronous drain waiting for the pool to empty (AsyncConnectionPool::drain()), in
/// PoolCore::async_drains_. Heap-allocated and shared by two holders (`refs`): the awaiter in the
/// drain's coroutine frame, and the pool until its completion has run. So the coroutine may be
/// destroyed while the pool has decided the outcome but not yet run the completion: the
/// completion then sees `abandoned` and only lets go. `complete` (Resumable) is set by the front,
/// which knows the scheduler; the pool decides under its lock and queues it in resume_queue().
struct DrainWaiter : Resumable, ListHook<DrainWaiter> {
  DrainWaiter() = default;
  DrainWaiter(const DrainWaiter&) = delete;
  DrainWaiter& operator=(const DrainWaiter&) = delete;
  virtual ~DrainWaiter() = default;

  std::chrono::steady_clock::time_point until{};  // when the drain gives up (result false)
  bool result = false;       // true: nothing is open; written under the pool's lock when decided
  std::atomic<int> refs{2};  // the awaiter's and the pool's
  std::atomic<bool> abandoned{false};  // the awaiter is gone: its coroutine must not resume

  /// Lets go of one holder's share; the last frees the node.
  void unref() noexcept {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      delete this;
    }
  }
};

}  // namespace connpool::detail
