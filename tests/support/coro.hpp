// connpool - tests: coroutine helpers (a manual event loop, spawned tasks, events)
// SPDX-License-Identifier: MIT
#pragma once

// Drives coroutines deterministically, cppcoro-style: a Loop is a Scheduler whose queue runs only
// when the test calls run(); spawn() starts a Task<void> as a detached root coroutine and
// records how it ended; Event suspends coroutines until the test sets it; Counted counts live
// objects, to check that every coroutine frame was destroyed; ResumptionQueue is a Scheduler that
// keeps Resumptions until the test runs or drops them; run_owned() starts a Task<void> as
// a root coroutine the test owns (OwnedRoot) and may destroy wherever it is suspended.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include <connpool/async_pool.hpp>
#include <connpool/detail/awaitable.hpp>
#include <connpool/task.hpp>

namespace connpool_test {

/// A Scheduler for AsyncConnectionPool whose queued coroutines run when the test runs it.
/// schedule() may be called from any thread (the pool's timer thread, say); run() resumes on the
/// calling thread.
class Loop {
 public:
  /// What the pool holds: a reference to the loop (a Scheduler must be movable).
  struct Ref {
    Loop* loop;
    void schedule(std::coroutine_handle<> h) const { loop->schedule(h); }
  };
  [[nodiscard]] Ref scheduler() { return Ref{this}; }

  void schedule(std::coroutine_handle<> h) {
    {
      std::lock_guard lock(mutex_);  // guards queue_
      queue_.push_back(h);
      ++scheduled_;
    }
    cv_.notify_all();
  }

  /// Resumes queued coroutines until the queue is empty.
  void run() {
    while (std::coroutine_handle<> h = pop()) {
      h.resume();
    }
  }

  /// Resumes queued coroutines, waiting for more, until `done()` or `within` has passed.
  /// Returns done().
  template <class Pred>
  bool run_until(Pred done, std::chrono::milliseconds within = std::chrono::seconds(20)) {
    const auto deadline = std::chrono::steady_clock::now() + within;
    while (!done()) {
      std::coroutine_handle<> h;
      {
        std::unique_lock lock(mutex_);
        if (!cv_.wait_until(lock, deadline, [this] { return !queue_.empty(); })) {
          return done();
        }
        h = queue_.front();
        queue_.pop_front();
      }
      h.resume();
    }
    return true;
  }

  /// Suspends the awaiting coroutine and queues it at the back of the loop.
  auto yield() {
    struct Awaiter {
      Loop* loop;
      bool await_ready() noexcept { return false; }
      void await_suspend(std::coroutine_handle<> h) { loop->schedule(h); }
      void await_resume() noexcept {}
    };
    return Awaiter{this};
  }

  [[nodiscard]] std::size_t scheduled() const {
    std::lock_guard lock(mutex_);
    return scheduled_;
  }

 private:
  std::coroutine_handle<> pop() {
    std::lock_guard lock(mutex_);
    if (queue_.empty()) {
      return {};
    }
    std::coroutine_handle<> h = queue_.front();
    queue_.pop_front();
    return h;
  }

  mutable std::mutex mutex_;  // guards queue_, scheduled_
  std::condition_variable cv_;
  std::deque<std::coroutine_handle<>> queue_;
  std::size_t scheduled_ = 0;
};

/// How the spawned coroutines of a test ended. Thread-safe.
class Spawned {
 public:
  [[nodiscard]] int done() const { return done_.load(); }
  [[nodiscard]] int started() const { return started_.load(); }

  [[nodiscard]] std::vector<std::exception_ptr> errors() const {
    std::lock_guard lock(mutex_);
    return errors_;
  }

  /// Calls `make` (a callable returning Task<void>, typically a lambda) and runs the task now,
  /// on this thread, as a detached coroutine that destroys itself at the end.
  ///
  /// Why the callable and not the Task: a lambda coroutine refers to its closure, so the closure
  /// must outlive the coroutine; it is kept in the detached coroutine's frame.
  template <class Make>
  void spawn(Make make) {
    started_.fetch_add(1);
    root(this, std::move(make));
  }

 private:
  struct Root {
    struct promise_type {
      Root get_return_object() noexcept { return {}; }
      std::suspend_never initial_suspend() noexcept { return {}; }
      std::suspend_never final_suspend() noexcept { return {}; }
      void return_void() noexcept {}
      void unhandled_exception() noexcept { std::terminate(); }
    };
  };

  template <class Make>
  CONNPOOL_CORO_NO_SANITIZE_FUNCTION static Root root(Spawned* self, Make make) {
    try {
      co_await make();
    } catch (...) {
      std::lock_guard lock(self->mutex_);  // guards errors_
      self->errors_.push_back(std::current_exception());
    }
    self->done_.fetch_add(1);
  }

  std::atomic<int> started_{0};
  std::atomic<int> done_{0};
  mutable std::mutex mutex_;  // guards errors_
  std::vector<std::exception_ptr> errors_;
};

/// A one-shot event for coroutines on one thread: `co_await event.wait()` suspends until set(),
/// which resumes the waiters in order, inline.
///
/// Why wait() and not `co_await event`: g++ 12 copies an awaitable named through a lambda's
/// by-reference capture before awaiting it, so the copy would record the waiter. The awaiter
/// returned here only points at the event.
class Event {
 public:
  Event() = default;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  auto wait() {
    struct Awaiter {
      Event* event;
      bool await_ready() const noexcept { return event->set_; }
      void await_suspend(std::coroutine_handle<> h) { event->waiters_.push_back(h); }
      void await_resume() const noexcept {}
    };
    return Awaiter{this};
  }

  void set() {
    set_ = true;
    std::vector<std::coroutine_handle<>> waiters = std::move(waiters_);
    for (std::coroutine_handle<> h : waiters) {
      h.resume();
    }
  }

 private:
  bool set_ = false;
  std::vector<std::coroutine_handle<>> waiters_;
};

/// Counts live instances in `live`.
class Counted {
 public:
  explicit Counted(std::atomic<int>& live) : live_(&live) { live.fetch_add(1); }
  Counted(const Counted& other) : live_(other.live_) { live_->fetch_add(1); }
  Counted& operator=(const Counted&) = delete;
  ~Counted() { live_->fetch_sub(1); }

 private:
  std::atomic<int>* live_;
};

/// A root coroutine the test owns: run_owned() runs a task at once, and the test destroys it
/// wherever it is suspended (and, with it, the Task and the frame of the coroutine the Task
/// runs): on destroy(), on destruction, or through the handle that release() gives up.
struct OwnedRoot {
  struct promise_type {
    OwnedRoot get_return_object() noexcept {
      return OwnedRoot{std::coroutine_handle<promise_type>::from_promise(*this)};
    }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }
  };

  explicit OwnedRoot(std::coroutine_handle<promise_type> h) noexcept : frame(h) {}
  OwnedRoot(OwnedRoot&& other) noexcept : frame(std::exchange(other.frame, nullptr)) {}
  OwnedRoot(const OwnedRoot&) = delete;
  OwnedRoot& operator=(const OwnedRoot&) = delete;
  OwnedRoot& operator=(OwnedRoot&&) = delete;
  ~OwnedRoot() { destroy(); }

  void destroy() noexcept {
    if (frame) {
      std::exchange(frame, nullptr).destroy();
    }
  }

  /// The frame, which the caller now destroys.
  [[nodiscard]] std::coroutine_handle<> release() noexcept { return std::exchange(frame, nullptr); }

  std::coroutine_handle<promise_type> frame;
};

/// Starts `task` as a root coroutine the caller owns.
CONNPOOL_CORO_NO_SANITIZE_FUNCTION inline OwnedRoot run_owned(connpool::Task<void> task) {
  co_await std::move(task);
}

/// A Scheduler that takes Resumptions and keeps them until the test runs them, or destroys them
/// unrun as an event loop that shuts down does. schedule() may be called from any thread.
class ResumptionQueue {
 public:
  struct Ref {
    ResumptionQueue* queue;
    void schedule(connpool::Resumption r) const { queue->push(std::move(r)); }
    void schedule(std::coroutine_handle<>) const { std::terminate(); }  // not when it has both
  };
  [[nodiscard]] Ref scheduler() { return Ref{this}; }

  void push(connpool::Resumption r) {
    const std::lock_guard lock(mutex_);
    queue_.push_back(std::move(r));
  }

  [[nodiscard]] std::size_t queued() const {
    const std::lock_guard lock(mutex_);
    return queue_.size();
  }

  /// Runs the queued resumptions until the queue is empty.
  void run() {
    while (connpool::Resumption r = pop()) {
      std::move(r).resume();
    }
  }

  /// Destroys the queued resumptions unrun until the queue is empty: one at a time, outside the
  /// lock, since a dropped one may give its connection to a waiter whose resumption comes here.
  void drop_all() {
    while (connpool::Resumption r = pop()) {
      r.reset();
    }
  }

 private:
  connpool::Resumption pop() {
    const std::lock_guard lock(mutex_);
    if (queue_.empty()) {
      return {};
    }
    connpool::Resumption r = std::move(queue_.front());
    queue_.pop_front();
    return r;
  }

  mutable std::mutex mutex_;  // guards queue_
  std::deque<connpool::Resumption> queue_;
};

}  // namespace connpool_test
