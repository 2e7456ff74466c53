// connpool - the thread that probes a MultiHostPool's host roles again
// SPDX-License-Identifier: MIT
#pragma once

// RoleChecker: a thread that runs a pass (MultiHostPool::recheck_roles(): a role probe on each
// host) by RecheckSchedule (routing.hpp): periodically, at once when a host's circuit opens,
// and when an acquire finds no host of its route, which may wait for that pass. What a pass
// does is the pool's; this header only schedules and runs it. Lock rule: mutex_ guards the
// schedule and the flags; it is never held while the pass (user code) runs.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <utility>

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
class RoleChecker {
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

  /// An acquire found no host of its route. Waits, until `deadline` at most, for a pass that
  /// runs or starts now (none when one started less than miss_spacing ago; with `first_only`,
  /// only for the first pass of all). Returns true when such a pass ended: the acquire looks at
  /// the roles again. Returns false at once after stop.
  bool await_pass(clock::time_point deadline, bool first_only) CONNPOOL_EXCLUDES(mutex_) {
    UniqueLock lk(mutex_);
    if (stopped_ || (first_only && schedule_.passes_done() > 0)) {
      return false;
    }
    const std::uint64_t seen = schedule_.passes_done();
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

  /// Passes ended so far.
  [[nodiscard]] std::uint64_t passes_done() const CONNPOOL_EXCLUDES(mutex_) {
    UniqueLock lk(mutex_);
    return schedule_.passes_done();
  }

  /// No pass starts any more; waiters are woken. Idempotent.
  void stop() noexcept CONNPOOL_EXCLUDES(mutex_) {
    {
      UniqueLock lk(mutex_);
      stopped_ = true;
    }
    cv_.notify_all();
  }

  /// stop(), then waits for the thread to end; on the thread itself (user code in a pass
  /// destroys the pool) detaches it instead. Called once, by the pool's destructor.
  void stop_and_join() noexcept {
    stop();
    if (thread_.joinable()) {
      if (thread_.get_id() == std::this_thread::get_id()) {
        thread_.detach();
      } else {
        thread_.join();
      }
    }
  }

 private:
  void run(const std::function<bool()>& pass) CONNPOOL_EXCLUDES(mutex_) {
    for (;;) {
      {
        UniqueLock lk(mutex_);
        while (!stopped_ && !schedule_.due(clock::now())) {
          cv_.wait_until(lk.native(), schedule_.next_due());
        }
        if (stopped_) {
          return;
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
      }
      cv_.notify_all();
      if (!alive) {
        return;
      }
    }
  }

  mutable Mutex mutex_;  // guards schedule_ and stopped_
  RecheckSchedule<clock::time_point> schedule_ CONNPOOL_GUARDED_BY(mutex_);
  bool stopped_ CONNPOOL_GUARDED_BY(mutex_) = false;  // the pool is closing: no more passes
  std::condition_variable cv_;                        // with mutex_: a request, a pass ended, stop
  // Set by start() before the thread runs; read by stop_and_join(), on the pool's destructor.
  std::thread thread_;
};

}  // namespace connpool::detail
