// connpool - tests: a thread that acquires one connection and holds it until told to let go
// SPDX-License-Identifier: MIT
#pragma once

// Waiter<Pool> starts a thread that calls pool.acquire(timeout) (or the stop_token overload)
// and records how it ended. On success it holds the handle until let_go() (or its own
// destruction), so a test can see exactly who owns the connection at each step. Catch2's
// assertions are not thread-safe, so the thread only records; the test asserts.
// Destroy every Waiter before its pool (declare it after the pool).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <stop_token>
#include <thread>

#include <connpool/errors.hpp>

#include "sync.hpp"

namespace connpool_test {

enum class Outcome { running, got, timed_out, cancelled, closed, cleared, other_error };

inline const char* to_string(Outcome o) {
  switch (o) {
    case Outcome::running:
      return "running";
    case Outcome::got:
      return "got";
    case Outcome::timed_out:
      return "timed_out";
    case Outcome::cancelled:
      return "cancelled";
    case Outcome::closed:
      return "closed";
    case Outcome::cleared:
      return "cleared";
    case Outcome::other_error:
      return "other_error";
  }
  return "?";
}

template <class Pool>
class Waiter {
 public:
  /// Starts acquire(timeout), or acquire(timeout, *token) when a token is given.
  Waiter(Pool& pool,
         std::chrono::milliseconds timeout,
         std::optional<std::stop_token> token = std::nullopt)
      : thread_([this, &pool, timeout, token = std::move(token)] { run(pool, timeout, token); }) {}

  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;
  ~Waiter() {
    let_go();
    thread_.join();
  }

  [[nodiscard]] Outcome outcome() const { return outcome_.load(); }
  /// The id of the connection it got; 0 before that.
  [[nodiscard]] int id() const { return id_.load(); }
  /// How long its acquire call took, once it has returned or thrown.
  [[nodiscard]] std::chrono::nanoseconds elapsed() const {
    return std::chrono::nanoseconds(elapsed_ns_.load());
  }

  /// Waits (with a generous deadline) until the acquire call has returned or thrown.
  bool wait_finished() const { return finished_.wait(); }
  /// Waits until it ended with `o`; false if the deadline passes or it ended otherwise.
  bool wait_for_outcome(Outcome o) const { return wait_finished() && outcome() == o; }

  /// Gives the connection back (if it got one); the thread then ends.
  void let_go() { hold_.open(); }
  /// Waits until the thread has given its connection back.
  bool wait_released() const { return released_.wait(); }

 private:
  void run(Pool& pool,
           std::chrono::milliseconds timeout,
           const std::optional<std::stop_token>& token) {
    const auto start = std::chrono::steady_clock::now();
    const auto stop_clock = [&] {
      elapsed_ns_ = std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    };
    try {
      auto h = token ? pool.acquire(timeout, *token) : pool.acquire(timeout);
      stop_clock();
      id_ = h->id();
      outcome_ = Outcome::got;
      finished_.open();
      (void)hold_.wait();
      h.release();
      released_.open();
      return;
    } catch (const connpool::AcquireTimeout&) {
      stop_clock();
      outcome_ = Outcome::timed_out;
    } catch (const connpool::AcquireCancelled&) {
      stop_clock();
      outcome_ = Outcome::cancelled;
    } catch (const connpool::PoolClosed&) {
      stop_clock();
      outcome_ = Outcome::closed;
    } catch (const connpool::PoolCleared&) {
      stop_clock();
      outcome_ = Outcome::cleared;
    } catch (...) {
      stop_clock();
      outcome_ = Outcome::other_error;
    }
    finished_.open();
    released_.open();
  }

  std::atomic<Outcome> outcome_{Outcome::running};
  std::atomic<int> id_{0};
  std::atomic<std::int64_t> elapsed_ns_{0};
  Gate finished_;
  Gate hold_;
  Gate released_;
  std::thread thread_;  // last: starts after every other member exists
};

}  // namespace connpool_test
