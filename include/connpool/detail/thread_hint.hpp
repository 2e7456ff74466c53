// connpool - per-thread hints, and the registry of live pools they are returned through
// SPDX-License-Identifier: MIT
#pragma once

// ThreadHint (the slot a thread released last, per pool: the lock-free fast path of acquire),
// the thread-local marker of a pool's internal threads, pool ids, and PoolRegistry (the live
// pools, for handing back a hint another pool evicted). Standard library only; the registry's
// own mutex is the only lock here, and a pool's lock is taken inside it, never the other way.

#include <atomic>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

namespace connpool::detail {

/// The per-thread hint: the slot this thread released last, per pool (HikariCP's
/// ConcurrentBag threadList). Four entries, indexed by pool id, so a thread that alternates
/// between a few pools keeps a hint in each. The pointer is only followed when `pool` equals
/// the id of the live pool that reads it, and a pool frees its slots only when it dies, so a
/// hint left by a dead pool is never dereferenced.
struct ThreadHint {
  std::uint64_t pool = 0;
  void* slot = nullptr;
  std::uint32_t incarnation = 0;  // the slot's connection it was set for (Slot::incarnation)
};
inline thread_local ThreadHint thread_hints[4];
/// The pool whose internal thread (maintenance or timer) this is, or null.
inline thread_local const void* internal_thread_of = nullptr;
inline std::atomic<std::uint64_t> next_pool_id{1};

/// What a pool offers the registry: taking back an idle slot whose hint another pool evicted.
class HintAdopter {
 public:
  virtual void adopt_evicted_hint(void* slot, std::uint32_t incarnation) noexcept = 0;

 protected:
  HintAdopter() = default;
  HintAdopter(const HintAdopter&) = default;
  HintAdopter& operator=(const HintAdopter&) = default;
  ~HintAdopter() = default;
};

/// The live pools by id, for one rare event: a thread whose hint entry for pool A is taken
/// over by pool B (a thread using several pools whose ids share an entry). A's slot then goes
/// back on A's idle stack, in LIFO order (DESIGN 2), if A is still alive; the registry is how a
/// thread can tell, without following a pointer into a pool that may be gone.
class PoolRegistry {
 public:
  static PoolRegistry& instance() {
    // Never destroyed: pools with static storage duration may outlive any static object.
    static PoolRegistry* const registry = new PoolRegistry();
    return *registry;
  }

  void add(std::uint64_t id, HintAdopter* pool) {
    std::lock_guard<std::mutex> lock(mutex_);
    pools_.emplace_back(id, pool);
  }

  void remove(std::uint64_t id) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& entry : pools_) {
      if (entry.first == id) {
        entry = pools_.back();
        pools_.pop_back();
        return;
      }
    }
  }

  /// Hands `slot` back to pool `id` if that pool is alive. The pool's own lock is taken inside
  /// this one (never the other way round), and remove() waits for it, so the pool cannot die
  /// meanwhile.
  void return_evicted(std::uint64_t id, void* slot, std::uint32_t incarnation) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& entry : pools_) {
      if (entry.first == id) {
        entry.second->adopt_evicted_hint(slot, incarnation);
        return;
      }
    }
  }

 private:
  PoolRegistry() = default;

  std::mutex mutex_;  // guards pools_
  std::vector<std::pair<std::uint64_t, HintAdopter*>> pools_;
};

}  // namespace connpool::detail
