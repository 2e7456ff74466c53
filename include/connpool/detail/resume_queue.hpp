// connpool - completions deferred until the pool's lock is released
// SPDX-License-Identifier: MIT
#pragma once

// Asynchronous waiters (coroutines, Asio operations) are completed by running user code: a
// scheduler, a coroutine, a completion handler. The pool decides whom to serve under its lock,
// where no user code may run, so it only records the decision here, in a per-thread queue, and
// the thread runs the completions once it has released the lock and finished with the pool.

namespace connpool::detail {

/// Something to complete later, linked into a ResumeQueue; allocates nothing.
struct Resumable {
  Resumable* next_ready = nullptr;
  /// Runs the completion (resumes a coroutine through its scheduler, posts a handler...).
  /// Called once, outside every lock of the pool, by the thread that queued it. Must not throw.
  void (*complete)(Resumable* self) noexcept = nullptr;
};

/// The completions this thread has decided on and not run yet (FIFO).
class ResumeQueue {
 public:
  void push(Resumable* r) noexcept {
    r->next_ready = nullptr;
    if (tail_ != nullptr) {
      tail_->next_ready = r;
    } else {
      head_ = r;
    }
    tail_ = r;
  }

  [[nodiscard]] bool empty() const noexcept { return head_ == nullptr; }

  /// Runs the queued completions, including those queued by the completions themselves.
  ///
  /// A completion may run user code that uses the pool again and queues more; a drain that
  /// starts while this thread is already draining returns at once and leaves them to the outer
  /// loop, so that 10,000 coroutines that each release to the next one resume one after the
  /// other, not nested 10,000 deep. `even_if_draining` is for a thread that is about to block:
  /// what it queued must run first, whatever its stack holds.
  void drain(bool even_if_draining = false) noexcept {
    if (draining_ && !even_if_draining) {
      return;
    }
    const bool outer = !draining_;
    draining_ = true;
    while (head_ != nullptr) {
      Resumable* r = head_;
      head_ = r->next_ready;
      if (head_ == nullptr) {
        tail_ = nullptr;
      }
      r->next_ready = nullptr;
      r->complete(r);  // may destroy *r: nothing of it is read afterwards
    }
    if (outer) {
      draining_ = false;
    }
  }

 private:
  Resumable* head_ = nullptr;
  Resumable* tail_ = nullptr;
  bool draining_ = false;
};

/// This thread's queue.
inline ResumeQueue& resume_queue() noexcept {
  thread_local ResumeQueue queue;
  return queue;
}

/// Drains this thread's queue when the scope ends (after the pool's locks are released).
class DrainOnExit {
 public:
  DrainOnExit() = default;
  DrainOnExit(const DrainOnExit&) = delete;
  DrainOnExit& operator=(const DrainOnExit&) = delete;
  ~DrainOnExit() {
    ResumeQueue& q = resume_queue();
    if (!q.empty()) {
      q.drain();
    }
  }
};

}  // namespace connpool::detail
