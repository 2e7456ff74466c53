// connpool - tests: checking, from inside a user callback, that the pool's lock is free
// SPDX-License-Identifier: MIT
#pragma once

// DESIGN: "No user callback (factory, close, ping, reset, hooks) ever runs while the pool's lock
// is held." A callback under test calls LockProbe::check(pool): another thread takes the
// pool's lock through stats() and must finish within a generous deadline. A pool that held its
// lock would make that thread wait until the callback returns, so the probe would time out and
// report it, instead of the test deadlocking. The probe thread is joined later, outside the
// callback.

#include <atomic>
#include <future>
#include <mutex>
#include <vector>

#include "sync.hpp"

namespace connpool_test {

class LockProbe {
 public:
  /// Takes `pool`'s lock from another thread; records whether that succeeded in time.
  template <class Pool>
  void check(const Pool& pool) {
    auto done = std::async(std::launch::async, [&pool] { (void)pool.stats(); });
    const bool ok = done.wait_for(generous_deadline) == std::future_status::ready;
    (ok ? free_ : blocked_).fetch_add(1);
    std::lock_guard lock(mutex_);         // guards pending_
    pending_.push_back(std::move(done));  // joined in the destructor, outside the callback
  }

  [[nodiscard]] int free_count() const { return free_.load(); }
  [[nodiscard]] int blocked_count() const { return blocked_.load(); }

 private:
  std::atomic<int> free_{0};
  std::atomic<int> blocked_{0};
  std::mutex mutex_;  // guards pending_
  std::vector<std::future<void>> pending_;
};

}  // namespace connpool_test
