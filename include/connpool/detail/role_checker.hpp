// connpool - the thread that probes a MultiHostPool's host roles again
// SPDX-License-Identifier: MIT
#pragma once

// RoleChecker: a thread that runs a pass (MultiHostPool::recheck_roles(): a role probe on each
// host) by RecheckSchedule (routing.hpp): periodically, at once when a host's circuit opens,
// and when an acquire finds no host of its route, which may wait for that pass (blocking, or, for
// an asynchronous acquire, as a PassWaiter completed by the thread). What a pass does is the
// pool's; this header only schedules and runs it. Lock rule: mutex_ guards the schedule, the
// flags and the pass waiters; it is never held while the pass (user code) or a waiter's
// completion runs.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include <connpool/detail/routing.hpp>
#include <connpool/detail/thread_annotations.hpp>

namespace connpool::detail {

/// Runs a MultiHostPool's role rechecks on a thread of its own.
///
/// Lifetime: shared (std::shared_ptr) by the pool, by the thread while it runs, and by each
/// host's record (which asks for a pass when its circuit opens and may outlive the pool): so a
/// request after the pool is gone is harmless, and the thread may end after the pool when user
/// code in a pass destroyed the pool (then stop_and_join() runs on the thread itself, detaches
/// it, and the pass reports the pool gone).
///
/// Thread safety: every member may be called from any thread.
class RoleChecker : public std::enable_shared_from_this<RoleChecker> {
 public:
  using clock = std::chrono::steady_clock;

  /// Why a second between passes asked by misses: see RecheckSchedule.
  static constexpr std::chrono::milliseconds miss_spacing{1'000};

  explicit RoleChecker(std::chrono::milliseconds interval) : schedule_(interval, miss_spacing) {}

  RoleChecker(const RoleChecker&) = delete;
  RoleChecker& operator=(const RoleChecker&) = delete;
  ~RoleChecker() {
    if (thread_.joinable()) {
      thread_.detach();  // not reached: stop_and_join() ran first
    }
    if (timer_.joinable()) {
      timer_.detach();  // the same
    }
  }

  /// Starts the thread. `pass` runs one recheck and returns false when the pool is gone (the
  /// thread then ends without touching it). The first pass is due at once.
  static void start(const std::shared_ptr<RoleChecker>& self, std::function<bool()> pass) {
    self->thread_ = std::thread([keep = self, pass = std::move(pass)] { keep->run(pass); });
  }

  /// A host's circuit opened: a pass now.
  void request() noexcept CONNPOOL_EXCLUDES(mutex_) {
    {
      UniqueLock lk(mutex_);
      schedule_.request();
    }
    cv_.notify_all();
  }

  /// An acquire found no host of its route, having read passes_done() as `seen` before it looked
  /// at the roles. Returns true at once when a pass has ended since (the acquire looked at stale
  /// roles). Else waits, until `deadline` at most, for a pass that runs or starts now (none when
  /// one started less than miss_spacing ago; with `first_only`, only for the first pass of all).
  /// Returns true when such a pass ended: the acquire looks at the roles again. Returns false at
  /// once after stop.
  ///
  /// Why `seen`: a pass may end between the acquire's look and its miss; without it, the miss
  /// would stand (the pass just started less than miss_spacing ago) although the roles it would
  /// find now serve the route.
  bool await_pass(clock::time_point deadline, bool first_only, std::uint64_t seen)
      CONNPOOL_EXCLUDES(mutex_) {
    UniqueLock lk(mutex_);
    if (stopped_) {
      return false;
    }
    if (schedule_.passes_done() != seen) {
      return true;
    }
    if (first_only && schedule_.passes_done() > 0) {
      return false;
    }
    if (!schedule_.request_on_miss(clock::now())) {
      return false;
    }
    cv_.notify_all();
    while (!stopped_ && schedule_.passes_done() == seen) {
      if (cv_.wait_until(lk.native(), deadline) == std::cv_status::timeout) {
        break;
      }
    }
    return schedule_.passes_done() != seen;
  }

  /// A wait for a pass by an asynchronous acquire: the checker runs complete(this) once, outside
  /// its lock, when a pass ended (`ran` true), at `deadline`, or on stop (`ran` false), unless
  /// the waiter was withdrawn first.
  struct PassWaiter {
    void (*complete)(PassWaiter*) noexcept = nullptr;
    clock::time_point deadline{};
    bool ran = false;  // written before complete() runs; read by the waiter after it
  };

  /// As await_pass(w.deadline, first_only, seen), without blocking: returns false when there is
  /// no pass to wait for (w is not queued; w.ran is true when a pass ended since `seen`, as
  /// await_pass() would return), true when `w` is queued: complete(&w) runs later, on the
  /// checker's thread (a pass ended), on its timer thread (the deadline), or on the thread that
  /// calls stop(). The first call starts the timer thread.
  ///
  /// Why a timer thread of its own: a pass may take long (a probe that waits for a connect
  /// timeout on an unreachable host), and a waiter's deadline must not wait for it.
  ///
  /// Throws: std::bad_alloc, std::system_error (starting the timer thread); w is then not
  /// queued.
  bool enqueue_pass_waiter(PassWaiter& w, bool first_only, std::uint64_t seen)
      CONNPOOL_EXCLUDES(mutex_) {
    {
      UniqueLock lk(mutex_);
      w.ran = !stopped_ && schedule_.passes_done() != seen;
      if (stopped_ || w.ran || (first_only && schedule_.passes_done() > 0)) {
        return false;
      }
      if (!schedule_.request_on_miss(clock::now())) {
        return false;
      }
      pass_waiters_.push_back(&w);
      if (!timer_.joinable()) {
        try {
          timer_ = std::thread([keep = shared_from_this()] { keep->run_timer(); });
        } catch (...) {
          pass_waiters_.pop_back();
          throw;
        }
      }
    }
    cv_.notify_all();
    return true;
  }

  /// Whether await_pass(..., first_only, seen) would return true or wait now, without asking for
  /// a pass. Why: an asynchronous acquire that has no pass to wait for fails at once, without
  /// starting its driver coroutine.
  [[nodiscard]] bool may_await_pass(bool first_only, std::uint64_t seen) const
      CONNPOOL_EXCLUDES(mutex_) {
    UniqueLock lk(mutex_);
    if (stopped_) {
      return false;
    }
    return schedule_.passes_done() != seen ||
           (!(first_only && schedule_.passes_done() > 0) && schedule_.miss_may_wait(clock::now()));
  }

  /// Takes `w` out of the queue: true if it was there (complete() will not run), false if its
  /// completion is decided already (it runs, or ran).
  bool withdraw_pass_waiter(PassWaiter& w) noexcept CONNPOOL_EXCLUDES(mutex_) {
    UniqueLock lk(mutex_);
    for (auto it = pass_waiters_.begin(); it != pass_waiters_.end(); ++it) {
      if (*it == &w) {
        pass_waiters_.erase(it);
        return true;
      }
    }
    return false;
  }

  /// Passes ended so far, without the lock: a routed acquire reads it before it looks at the
  /// roles (see await_pass()). A pass's role updates happen before its count moves.
  [[nodiscard]] std::uint64_t passes_done() const noexcept {
    return passes_.load(std::memory_order_acquire);
  }

  /// No pass starts any more; waiters are woken, and pass waiters completed (ran false) on this
  /// thread. Idempotent.
  void stop() noexcept CONNPOOL_EXCLUDES(mutex_) {
    std::vector<PassWaiter*> done;
    {
      UniqueLock lk(mutex_);
      stopped_ = true;
      done.swap(pass_waiters_);
    }
    cv_.notify_all();
    complete(done);
  }

  /// stop(), then waits for the thread to end; on the thread itself (user code in a pass
  /// destroys the pool) detaches it instead. Called once, by the pool's destructor.
  void stop_and_join() noexcept CONNPOOL_EXCLUDES(mutex_) {
    stop();
    std::thread timer;
    {
      UniqueLock lk(mutex_);  // no timer starts after stop(): this is the last look at it
      timer.swap(timer_);
    }
    for (std::thread* t : {&thread_, &timer}) {
      if (t->joinable()) {
        if (t->get_id() == std::this_thread::get_id()) {
          t->detach();
        } else {
          t->join();
        }
      }
    }
  }

 private:
  void run(const std::function<bool()>& pass) CONNPOOL_EXCLUDES(mutex_) {
    std::vector<PassWaiter*> done;  // completed outside the lock
    for (;;) {
      {
        UniqueLock lk(mutex_);
        while (!stopped_ && !schedule_.due(clock::now())) {
          cv_.wait_until(lk.native(), schedule_.next_due());
        }
        if (stopped_) {
          return;  // stop() completed the pass waiters
        }
        schedule_.started(clock::now());
      }
      bool alive = false;
      try {
        alive = pass();
      } catch (...) {  // the pass reports each host's failure itself; nothing is left to do
        alive = true;
      }
      {
        UniqueLock lk(mutex_);
        schedule_.finished(clock::now());
        passes_.store(schedule_.passes_done(), std::memory_order_release);
        for (PassWaiter* w : pass_waiters_) {
          w->ran = true;
        }
        done.swap(pass_waiters_);
      }
      cv_.notify_all();
      complete(done);  // may resume acquires inline: user code, which may close the pool
      if (!alive) {
        return;
      }
    }
  }

  /// The timer thread: completes the pass waiters whose deadline passed, until stop().
  void run_timer() CONNPOOL_EXCLUDES(mutex_) {
    std::vector<PassWaiter*> done;  // completed outside the lock
    for (;;) {
      {
        UniqueLock lk(mutex_);
        for (;;) {
          if (stopped_) {
            return;  // stop() completed the rest
          }
          take_expired(clock::now(), done);
          if (!done.empty()) {
            break;
          }
          if (pass_waiters_.empty()) {
            cv_.wait(lk.native());
          } else {
            cv_.wait_until(lk.native(), earliest_deadline());
          }
        }
      }
      complete(done);  // may resume acquires inline: user code, which may destroy the pool
    }
  }

  /// Moves the pass waiters whose deadline is past to `out`.
  void take_expired(clock::time_point now, std::vector<PassWaiter*>& out)
      CONNPOOL_REQUIRES(mutex_) {
    for (std::size_t i = 0; i < pass_waiters_.size();) {
      if (pass_waiters_[i]->deadline <= now) {
        out.push_back(pass_waiters_[i]);
        pass_waiters_.erase(pass_waiters_.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        ++i;
      }
    }
  }

  /// The earliest deadline of the pass waiters. Precondition: there is one.
  [[nodiscard]] clock::time_point earliest_deadline() const CONNPOOL_REQUIRES(mutex_) {
    clock::time_point t = pass_waiters_.front()->deadline;
    for (const PassWaiter* w : pass_waiters_) {
      t = std::min(t, w->deadline);
    }
    return t;
  }

  /// Runs the completions of `done` (taken out of the queue under the lock), then empties it.
  static void complete(std::vector<PassWaiter*>& done) noexcept {
    for (PassWaiter* w : done) {
      w->complete(w);  // may free w (the waiter's coroutine resumes, inline or elsewhere)
    }
    done.clear();
  }

  mutable Mutex mutex_;  // guards schedule_, stopped_, pass_waiters_ and timer_
  RecheckSchedule<clock::time_point> schedule_ CONNPOOL_GUARDED_BY(mutex_);
  bool stopped_ CONNPOOL_GUARDED_BY(mutex_) = false;  // the pool is closing: no more passes
  // schedule_.passes_done(), for reading without the lock (passes_done()); written with it.
  std::atomic<std::uint64_t> passes_{0};
  // Asynchronous acquires waiting for a pass (enqueue_pass_waiter()), in arrival order.
  std::vector<PassWaiter*> pass_waiters_ CONNPOOL_GUARDED_BY(mutex_);
  // With mutex_: a request, a pass ended, a pass waiter queued, stop. Waited on by both threads.
  std::condition_variable cv_;
  // Set by start() before the thread runs; read by stop_and_join(), on the pool's destructor.
  std::thread thread_;
  // The timer of the pass waiters' deadlines: started by the first enqueue_pass_waiter() (only
  // asynchronous acquires queue), taken out to be joined by stop_and_join().
  std::thread timer_ CONNPOOL_GUARDED_BY(mutex_);
};

}  // namespace connpool::detail
