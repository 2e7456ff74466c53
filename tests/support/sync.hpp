// connpool - tests: waiting for a condition without sleep-and-hope
// SPDX-License-Identifier: MIT
#pragma once

// Tests that involve threads wait for an observable condition (a gauge in PoolStats, a flag
// set by a worker) with a generous deadline, never for a fixed time. A deadline that expires
// means a hang or a lost wake-up: the test then fails instead of stalling the suite. The
// deadlines are long because TSan on two cores slows everything down 5-15x.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace connpool_test {

/// How long a test waits for something that should happen "at once".
inline constexpr std::chrono::seconds generous_deadline{20};

/// Polls `pred` until it returns true or `within` has passed; returns its last answer.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds within = generous_deadline) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return pred();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

/// The calling thread's kernel id (Linux), or 0 elsewhere.
inline long this_thread_tid() noexcept {
#if defined(__linux__)
  return static_cast<long>(::syscall(SYS_gettid));
#else
  return 0;
#endif
}

/// Waits until the thread `tid` (from this_thread_tid(), published through `tid`) sleeps in the
/// kernel (state S or D in /proc), e.g. parked on a condition variable rather than still
/// spinning; true when it does within `within`. Where /proc is not available it only waits for
/// the id to be published.
inline bool blocked_eventually(const std::atomic<long>& tid,
                               std::chrono::milliseconds within = generous_deadline) {
  return eventually(
      [&] {
        const long id = tid.load();
        if (id == 0) {
          return false;
        }
        std::ifstream stat("/proc/self/task/" + std::to_string(id) + "/stat");
        if (!stat) {
          return true;  // no /proc here: nothing more to check
        }
        std::string line;
        std::getline(stat, line);
        const std::size_t close = line.rfind(')');  // the name may contain spaces
        return close != std::string::npos && close + 2 < line.size() &&
               (line[close + 2] == 'S' || line[close + 2] == 'D');
      },
      within);
}

/// A one-shot event: closed until open() is called, then open for ever. Thread-safe. A waiter
/// may destroy the gate as soon as wait() has returned true, even if the opening thread is still
/// inside open().
class Gate {
 public:
  /// Why notify under the lock: a waiter cannot return from wait() before open() has released
  /// the mutex, so it cannot destroy the condition variable while notify_all() still uses it.
  void open() {
    const std::lock_guard lock(mutex_);
    open_ = true;
    cv_.notify_all();
  }

  /// Waits until the gate is open or `within` has passed; true if it is open.
  bool wait(std::chrono::milliseconds within = generous_deadline) const {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, within, [this] { return open_; });
  }

  [[nodiscard]] bool is_open() const {
    std::lock_guard lock(mutex_);
    return open_;
  }

 private:
  mutable std::mutex mutex_;  // guards open_
  mutable std::condition_variable cv_;
  bool open_ = false;
};

}  // namespace connpool_test
