// connpool - how an acquire fails: the exceptions and their messages
// SPDX-License-Identifier: MIT
#pragma once

// Failure (why an acquire got no connection) and the functions that throw the matching public
// exception (errors.hpp) with a message that gives the timeout and the pool's counts. Called
// after the pool's lock is released: building a message allocates.

#include <chrono>
#include <exception>
#include <memory>
#include <string>

#include <connpool/detail/clock.hpp>
#include <connpool/detail/waiter.hpp>
#include <connpool/errors.hpp>
#include <connpool/stats.hpp>

namespace connpool::detail {

/// Why an acquire did not get a connection (the exception is built after the lock is released).
enum class Failure { none, timeout, closed, cancelled, unavailable, overloaded, cleared };

/// Throws the exception of a wait of `timeout` that ended with `f`: PoolClosed,
/// AcquireCancelled, PoolOverloaded with the counts `snap`, or AcquireTimeout with them.
[[noreturn]] inline void throw_failure(Failure f,
                                       WaitClock::duration timeout,
                                       const Snapshot& snap) {
  switch (f) {
    case Failure::closed:
      throw PoolClosed();
    case Failure::cleared:
      throw PoolCleared();
    case Failure::cancelled:
      throw AcquireCancelled("connpool: acquire cancelled through its stop_token");
    case Failure::overloaded:
      throw PoolOverloaded("connpool: acquire refused at once: " + std::to_string(snap.waiting) +
                           " callers already wait, the limit PoolOptions::max_waiters (in use " +
                           std::to_string(snap.in_use) + ", idle " + std::to_string(snap.idle) +
                           ", max_size " + std::to_string(snap.max_size) + ")");
    case Failure::timeout:
    case Failure::none:
    case Failure::unavailable:
      break;
  }
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(timeout).count();
  throw AcquireTimeout("connpool: acquire timed out after " + std::to_string(ms) + " ms" +
                       (snap.paused ? " because the pool is paused (pause() until resume())" : "") +
                       " (in use " + std::to_string(snap.in_use) + ", idle " +
                       std::to_string(snap.idle) + ", max_size " + std::to_string(snap.max_size) +
                       ", waiting " + std::to_string(snap.waiting) + ")");
}

/// Throws the AcquireTimeout of a wait of `timeout` that ended with the counts `snap`.
[[noreturn]] inline void throw_timeout(WaitClock::duration timeout, const Snapshot& snap) {
  throw_failure(Failure::timeout, timeout, snap);
}

/// Runs `try_acquire_and_give_back` (health()'s check) and returns why it failed: a sentence
/// that quotes the exception, never empty; or an empty string when it worked.
template <class F>
[[nodiscard]] std::string health_probe(F&& try_acquire_and_give_back) {
  try {
    try_acquire_and_give_back();
    return {};
  } catch (const std::exception& e) {
    return std::string("connpool: health: could not acquire and give back a connection: ") +
           e.what();
  } catch (...) {
    return "connpool: health: could not acquire and give back a connection: an exception not "
           "derived from std::exception";
  }
}

/// Ends a HealthReport whose p99_wait is filled: its reason is `acquire_error` (health_probe()'s
/// answer) when the check failed, else the p99 over `limit` (PoolOptions::health_p99_wait; 0 =
/// not checked) when it is; ok when neither. Shared by ConnectionPool's and MultiHostPool's
/// health().
inline void health_verdict(HealthReport& r,
                           std::string acquire_error,
                           std::chrono::milliseconds limit) {
  if (!acquire_error.empty()) {
    r.reason = std::move(acquire_error);
  } else if (limit.count() > 0 && r.p99_wait > limit) {
    r.reason = "connpool: the p99 wait over the last minute is at least " +
               std::to_string(r.p99_wait.count()) + " us, above health_p99_wait (" +
               std::to_string(limit.count()) + " ms)";
  }
  r.ok = r.reason.empty();
}

/// What the connect error `error` says (its what()), read on the thread that caught it; null
/// for no error or when the text cannot be allocated.
///
/// Why here and not where the error is reported: the waiters that fail with it run on other
/// threads while the pool may drop the error (the next failure replaces it). Reading the object
/// there would rely on the exception_ptr's reference count, kept inside libstdc++ where
/// ThreadSanitizer cannot see it, for the object's lifetime; a string of our own is seen.
[[nodiscard]] inline std::shared_ptr<const std::string> describe_error(
    const std::exception_ptr& error) noexcept {
  if (!error) {
    return nullptr;
  }
  try {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      return std::make_shared<const std::string>(e.what());
    } catch (...) {
      return std::make_shared<const std::string>("an exception not derived from std::exception");
    }
  } catch (...) {
    return nullptr;  // no memory for the text
  }
}

/// Throws the AcquireTimeout of an acquire that failed early because connects back off past
/// its deadline, with the last connect error nested in it (std::rethrow_if_nested).
[[noreturn]] inline void throw_unavailable(const Unavailable& why, WaitClock::duration timeout) {
  const std::string last = why.last_what ? *why.last_what : std::string("unknown");
  const std::string message =
      "connpool: acquire failed early (timeout " +
      std::to_string(std::chrono::ceil<std::chrono::milliseconds>(timeout).count()) +
      " ms): connects back off after " + std::to_string(why.failures) +
      " consecutive failures, next attempt in " + std::to_string(why.retry_in.count()) +
      " ms; last connect error: " + last;
  if (why.last_error) {
    try {
      std::rethrow_exception(why.last_error);
    } catch (...) {
      std::throw_with_nested(AcquireTimeout(message));
    }
  }
  throw AcquireTimeout(message);
}

}  // namespace connpool::detail
