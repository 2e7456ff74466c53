// connpool - the textbook pool, a baseline for bench/workloads_bench.cpp
// SPDX-License-Identifier: MIT
#pragma once

// TextbookPool<Conn> is the pool most hand-written C++ code contains: one std::mutex, a
// std::deque of idle connections, one std::condition_variable woken with notify_one() and
// waited on with wait_for(), and an RAII lease. It is deliberately plain (no per-thread state,
// no hand-off, no statistics): it is what connpool has to beat (issue 3). Not part of the
// library; only the benchmarks include it.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <utility>

namespace connpool_bench {

/// A fixed set of `Conn`s shared under one mutex.
///
/// acquire() takes the connection at the front of the deque, waiting on the condition variable
/// while the deque is empty; the lease's destructor pushes the connection to the back and
/// notifies one waiter. Whoever takes the mutex first after a release gets the connection:
/// a running thread may barge ahead of one that was woken, and nothing bounds how long a
/// waiter can lose that race.
///
/// Thread safety: acquire() may be called concurrently; a Lease is used by one thread at a time.
/// Lifetime: every Lease must be destroyed before the pool.
template <class Conn>
class TextbookPool {
 public:
  /// A borrowed connection, given back by the destructor.
  class Lease {
   public:
    Lease(TextbookPool* pool, Conn conn) : pool_(pool), conn_(std::move(conn)) {}
    Lease(Lease&& other) noexcept
        : pool_(std::exchange(other.pool_, nullptr)), conn_(std::move(other.conn_)) {}
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() {
      if (pool_ != nullptr) {
        pool_->give_back(std::move(conn_));
      }
    }

    Conn* get() noexcept { return &conn_; }

   private:
    TextbookPool* pool_;
    Conn conn_;
  };

  /// Opens `size` connections with `factory`.
  template <class Factory>
  TextbookPool(std::size_t size, Factory factory) {
    for (std::size_t i = 0; i < size; ++i) {
      idle_.push_back(factory());
    }
  }

  /// Takes an idle connection, waiting up to `timeout` for one.
  ///
  /// Throws: std::runtime_error when `timeout` passes with none free.
  Lease acquire(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!cv_.wait_for(lock, timeout, [this] { return !idle_.empty(); })) {
      throw std::runtime_error("TextbookPool: acquire timed out");
    }
    Conn conn = std::move(idle_.front());
    idle_.pop_front();
    return Lease(this, std::move(conn));
  }

 private:
  void give_back(Conn conn) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      idle_.push_back(std::move(conn));
    }
    cv_.notify_one();
  }

  std::mutex mutex_;            // guards idle_
  std::condition_variable cv_;  // signalled once per give-back; waited on with mutex_
  std::deque<Conn> idle_;
};

}  // namespace connpool_bench
