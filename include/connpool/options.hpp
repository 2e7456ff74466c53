// connpool - PoolOptions, the settings of a pool
// SPDX-License-Identifier: MIT
#pragma once

// PoolOptions is a plain aggregate, meant for designated initializers:
//     connpool::PoolOptions{.min_size = 2, .max_size = 16, .acquire_timeout = 5s}
// The pool checks it once, in its constructor, through PoolOptions::validate().

#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

#include <connpool/events.hpp>

namespace connpool {

/// What PoolOptions::on_error decides for a connection given back with PooledHandle::fail().
enum class ErrorAction {
  keep,   ///< the error left the connection usable: return it as release() would
  evict,  ///< the connection is dead (a network error, the server ended the session): close it
  /// The whole server is gone or changed role (a failover): close it and clear() the pool, so
  /// that every other connection to it is closed too and the callers waiting now fail at once
  /// with PoolCleared (and retry against the new server).
  clear,
};

/// How waiting callers are served when connections are scarce. Both bound every caller's wait
/// (DESIGN 4); bench/README.md, "Callers outnumbering connections", has the figures behind the
/// default.
enum class WaitPolicy {
  /// Strict FIFO: while anyone waits, a released connection goes to the oldest waiter and
  /// newcomers queue behind (DESIGN 4). A caller is never overtaken, at the price of a context
  /// switch per hand-off when threads outnumber cores: with short holds (microseconds) and many
  /// threads, half the throughput of a plain mutex-and-condition-variable pool.
  fifo,
  /// The default. A running caller may take a just-released connection ahead of sleeping
  /// waiters (as a plain mutex-and-condition-variable pool does), which saves the hand-off's
  /// context switch. Once the oldest waiter has waited longer than starvation_bound, every
  /// release goes to the waiters directly, oldest first, until none has waited that long; so
  /// no caller is overtaken for longer than the bound (plus the hand-offs to starving waiters
  /// ahead of it). With holds that are short against the bound (an in-memory cache, a fast
  /// key-value store), running callers keep the connections busy; with holds near or above it
  /// (a database round trip with many callers per connection), waiters starve and are served
  /// in order, as under fifo.
  bounded_barging,
};

/// The settings of a ConnectionPool.
///
/// Every duration is in milliseconds; for the expiry settings 0 means "never". Defaults follow
/// HikariCP's (30 s acquire timeout, 10 min idle, 30 min lifetime), which suit a database
/// behind a firewall that drops idle TCP flows after an hour or so.
struct PoolOptions {
  /// Connections kept open: opened by the constructor (warm-up) and refilled by maintenance.
  /// Default 0. Must be <= max_size.
  std::size_t min_size = 0;

  /// Hard bound on open connections, counting those being created. Default 10. Must be >= 1.
  std::size_t max_size = 10;

  /// How long acquire() waits for a connection when no timeout is passed. Default 30 s.
  /// 0 means "do not wait": fail with AcquireTimeout at once when none is free. Must be >= 0.
  std::chrono::milliseconds acquire_timeout{30'000};

  /// An idle connection unused for longer than this is closed, as long as more than min_size
  /// connections are open. Default 10 min. 0 = never close for idleness. Must be >= 0.
  std::chrono::milliseconds max_idle{600'000};

  /// A connection older than this is closed instead of being handed out or returned to the
  /// idle set. Default 30 min. 0 = unlimited age. Must be >= 0.
  std::chrono::milliseconds max_lifetime{1'800'000};

  /// Period of the background maintenance pass (close expired idle connections, refill to
  /// min_size). Default 30 s. 0 = no background thread; call prune() yourself. Must be >= 0.
  std::chrono::milliseconds health_check_interval{30'000};

  /// Ping an idle connection before handing it out, unless it was used within
  /// validation_bypass. Default true. Ignored for types that are not Pingable.
  bool validate_on_acquire = true;

  /// Skip the validation ping for a connection used this recently. Default 500 ms.
  /// 0 = ping every time. Must be >= 0.
  std::chrono::milliseconds validation_bypass{500};

  /// When warm-up fails, throw the factory's exception from the constructor (true, default),
  /// or start anyway and open the connections later (false).
  bool fail_fast = true;

  /// How waiters are served; see WaitPolicy. Default WaitPolicy::bounded_barging.
  WaitPolicy wait_policy = WaitPolicy::bounded_barging;

  /// With WaitPolicy::bounded_barging: how long the oldest waiter may be overtaken before every
  /// release goes to the waiters directly. Default 500 us. Must be >= 0 (0 behaves as fifo).
  /// Larger: more throughput from running callers, longer worst waits; smaller: closer to fifo.
  std::chrono::microseconds starvation_bound{500};

  /// Ping idle connections unused (and unpinged) for this long, on each maintenance pass, so
  /// that a firewall or the server does not drop them for inactivity; a connection is taken out
  /// of the idle set while it is pinged, and closed if the ping fails. Default 0 = off. Must be
  /// >= 0. Needs a Pingable connection and health_check_interval > 0 (or calls to prune()).
  std::chrono::milliseconds keepalive_interval{0};

  /// Each connection's max_lifetime is shortened by a random fraction of up to this much, so
  /// that connections opened together (warm-up, a burst) do not all expire and reopen together.
  /// Must be in [0, 0.5]; 0 = exact lifetimes.
  ///
  /// Unset (the default): 2.5 %, as HikariCP, when the pool runs on a standard clock
  /// (steady_clock, system_clock) and max_lifetime is longer than 10 s; otherwise exact.
  /// Why: HikariCP also keeps lifetimes of 10 s or less exact, where spreading buys little; and
  /// a pool on a manual clock is a deterministic test, in which a connection just younger than
  /// max_lifetime must still be reused (DESIGN behaviour 6). Set a value to apply it always.
  std::optional<double> lifetime_jitter = std::nullopt;

  /// A handle held longer than this is reported once through on_leak and counted in
  /// PoolStats::leaks (it is not taken back). Checked by the maintenance thread, which then runs
  /// even when health_check_interval is 0, about every leak_threshold / 2. Default 0 = off.
  /// Must be >= 0.
  std::chrono::milliseconds leak_threshold{0};

  /// At most this many connects (factory calls) in flight at once; callers that would open
  /// more wait in the queue until one finishes. Default 2 (HikariCP opens one at a time; a burst
  /// of connects is what a recovering database sees first). 0 = no limit.
  std::size_t max_connecting = 2;

  /// After 3 consecutive factory failures, further connects wait 10 ms, then 20, 40, ... up to
  /// this much (each with +-25 % jitter), until one succeeds; meanwhile callers that would have
  /// to connect wait, and those whose deadline comes before the next attempt (with no
  /// connection open to wait for) fail at once with AcquireTimeout carrying the last connect
  /// error (std::rethrow_if_nested). Default 5 s. 0 = no backoff. Must be >= 0.
  std::chrono::milliseconds max_connect_backoff{5'000};

  /// Admission control: when this many callers already wait, a caller that would have to wait
  /// is refused at once with PoolOverloaded (counted in PoolStats::rejected) instead of joining
  /// the queue. try_acquire() never waits and is never refused. Default 0 = no limit.
  ///
  /// Why: past some queue length every added waiter only waits out its timeout, holding a
  /// thread (or a request) meanwhile; refusing early lets a server shed load and answer at
  /// once.
  std::size_t max_waiters = 0;

  /// How long a connect may take: a factory that takes a connpool::Deadline is passed one
  /// that ends this long after the connect starts (and a stop token requested when the pool
  /// closes), to give up by; a connect that returns later anyway counts as failed (its
  /// connection is closed, the caller gets ConnectTimeout, the backoff counts it). Default 0 =
  /// no limit (the factory's own). Must be >= 0.
  std::chrono::milliseconds connect_timeout{0};

  /// How long a ping may take, likewise: a connection whose ping takes a Deadline is passed one;
  /// a ping that returns later counts as failed (the connection is closed, and the acquire goes
  /// on with another). Default 0 = no limit. Must be >= 0.
  std::chrono::milliseconds validation_timeout{0};

  /// A connection handed out this many times is closed when it comes back (CloseReason::
  /// max_uses) instead of returned, so that traffic moves to new servers behind a load balancer
  /// and per-session memory on the server is released (node-postgres maxUses). Default 0 = no
  /// limit.
  std::size_t max_uses = 0;

  /// Classifies the error a borrower reports with PooledHandle::fail(): keep, evict or clear
  /// (see ErrorAction). Called in the failing thread, outside the pool's lock; it may call into
  /// the pool. Empty (the default), or a call that throws: ErrorAction::evict.
  std::function<ErrorAction(const std::exception_ptr&)> on_error{};

  /// Hooks, called outside the pool's lock in the thread that caused the event. Exceptions
  /// they throw are swallowed. Empty = not called; on_acquire and on_release cost the fast path
  /// a call each when set.
  std::function<void(const PoolEvent&)> on_create{};
  std::function<void(const PoolEvent&)> on_acquire{};
  std::function<void(const PoolEvent&)> on_release{};
  std::function<void(const PoolEvent&)> on_close{};
  /// Called for each leak (see leak_threshold), on the maintenance thread.
  std::function<void(const LeakReport&)> on_leak{};
  /// Called when a connection reported to on_leak comes back at last (a PoolEvent of kind
  /// leak_ended, with the whole hold in held_for), in the thread that gives it back: so that a
  /// leak is seen to end. Needs leak_threshold.
  std::function<void(const PoolEvent&)> on_leak_end{};

  /// The pool's name in its statistics: PoolStats::name, and the db_client_connection_pool_name
  /// label of PoolStats::to_prometheus() (OpenTelemetry's db.client.connection.pool.name). Give
  /// each pool of a process its own. Default "default". Must not be empty.
  std::string name = "default";

  /// Measure how long each handle is held (PoolStats::use_time): the pool's Clock read at each
  /// check-out and give-back. With max_lifetime, max_idle or validation on (the defaults) the
  /// pool reads it there anyway; otherwise this costs two readings per acquire and release
  /// (about 3 ns each here, a seventh of an uncontended cycle: bench/README.md). Default true;
  /// false: use_time stays empty.
  bool record_use_time = true;

  /// health() reports not ok while the p99 of the waits over about the last minute exceeds
  /// this (HealthReport::p99_wait). Default 0 = not checked. Must be >= 0.
  std::chrono::milliseconds health_p99_wait{0};

  /// Throws std::invalid_argument naming the first field that is out of range.
  void validate() const {
    if (max_size == 0) {
      throw std::invalid_argument("connpool: PoolOptions::max_size must be at least 1 (got 0)");
    }
    if (min_size > max_size) {
      throw std::invalid_argument("connpool: PoolOptions::min_size (" + std::to_string(min_size) +
                                  ") must not exceed max_size (" + std::to_string(max_size) + ")");
    }
    check_not_negative(acquire_timeout, "acquire_timeout");
    check_not_negative(max_idle, "max_idle");
    check_not_negative(max_lifetime, "max_lifetime");
    check_not_negative(health_check_interval, "health_check_interval");
    check_not_negative(validation_bypass, "validation_bypass");
    check_not_negative(keepalive_interval, "keepalive_interval");
    check_not_negative(max_connect_backoff, "max_connect_backoff");
    check_not_negative(leak_threshold, "leak_threshold");
    check_not_negative(connect_timeout, "connect_timeout");
    check_not_negative(validation_timeout, "validation_timeout");
    check_not_negative(health_p99_wait, "health_p99_wait");
    if (name.empty()) {
      throw std::invalid_argument("connpool: PoolOptions::name must not be empty");
    }
    if (lifetime_jitter && !(*lifetime_jitter >= 0.0 && *lifetime_jitter <= 0.5)) {
      throw std::invalid_argument(
          "connpool: PoolOptions::lifetime_jitter must be between 0 and 0.5 (got " +
          std::to_string(*lifetime_jitter) + ")");
    }
    if (starvation_bound.count() < 0) {
      throw std::invalid_argument(
          "connpool: PoolOptions::starvation_bound must not be negative (got " +
          std::to_string(starvation_bound.count()) + " us)");
    }
  }

 private:
  static void check_not_negative(std::chrono::milliseconds value, const char* field) {
    if (value.count() < 0) {
      throw std::invalid_argument(std::string("connpool: PoolOptions::") + field +
                                  " must not be negative (got " + std::to_string(value.count()) +
                                  " ms)");
    }
  }
};

}  // namespace connpool
