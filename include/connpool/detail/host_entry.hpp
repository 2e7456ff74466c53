// connpool - the record of one MultiHostPool host: its pool, its health, its reference count
// SPDX-License-Identifier: MIT
#pragma once

// HostEntry is one host of a MultiHostPool: its ConnectionPool, its HostHealth (the circuit
// breaker of breaker.hpp behind a mutex, and the last error), its role and replica lag (as the
// probes of MultiHostOptions last found them) and its in-use count, which is also the reference
// count (HostLink in host_link.hpp, all a MultiHostHandle sees of it). Picking a host is in
// balancer.hpp and routing.hpp, the acquire across hosts in multi_host_pool.hpp. Lock rule: each
// HostHealth has a mutex of its own, never held while user code runs or another lock is taken; the
// role and lag are atomics.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>

#include <connpool/concepts.hpp>
#include <connpool/deadline.hpp>
#include <connpool/detail/balancer.hpp>
#include <connpool/detail/breaker.hpp>
#include <connpool/detail/host_link.hpp>
#include <connpool/detail/role_checker.hpp>
#include <connpool/detail/routing.hpp>
#include <connpool/detail/thread_annotations.hpp>
#include <connpool/multi_host_options.hpp>
#include <connpool/options.hpp>
#include <connpool/pool.hpp>

namespace connpool::detail {

/// The health of one host: its circuit breaker (Breaker, the rules) behind a mutex of its own,
/// and the message of its last failure, driven by `Clock`.
///
/// Why a mutex of its own rather than the pool's: breakers change only on failures and state
/// changes, and a lock per host keeps a failing host from slowing the others. The fast path
/// takes no lock: closed() and may_admit() read the breaker's atomics, and success() on a
/// healthy host is two loads.
///
/// Thread safety: all members may be called concurrently. Clock is read outside the lock.
template <class Clock>
class HostHealth {
  using TimePoint = typename Clock::time_point;

 public:
  using Admit = typename Breaker<TimePoint>::Admit;

  HostHealth(std::size_t threshold, std::chrono::milliseconds cooldown) noexcept
      : breaker_(threshold, cooldown) {}

  [[nodiscard]] bool closed() const noexcept { return breaker_.closed(); }

  /// Whether the host may be picked at `now`, without reserving the probe.
  [[nodiscard]] bool may_admit(TimePoint now) const noexcept { return breaker_.may_admit(now); }

  /// Admits one acquire (see Breaker::admit); locks only when the circuit is not closed.
  Admit admit(TimePoint now) noexcept CONNPOOL_EXCLUDES(mutex_) {
    if (breaker_.closed()) {
      return Admit::normal;
    }
    UniqueLock lk(mutex_);
    return breaker_.admit(now);
  }

  /// A success on the host. Costs two loads when already healthy.
  void success() noexcept CONNPOOL_EXCLUDES(mutex_) {
    if (breaker_.healthy()) {
      return;
    }
    UniqueLock lk(mutex_);
    (void)breaker_.success();
  }

  /// `n` failures on the host, the last of which said `why`. Returns true when they opened
  /// the circuit.
  bool failure(std::size_t n, std::string_view why) noexcept CONNPOOL_EXCLUDES(mutex_) {
    const TimePoint now = Clock::now();
    UniqueLock lk(mutex_);
    try {
      last_error_.assign(why);
    } catch (...) {  // out of memory: keep the previous message
    }
    return breaker_.failure(n, now);
  }

  /// The probe ended without a verdict: the next acquire may probe instead.
  void abandon_probe() noexcept CONNPOOL_EXCLUDES(mutex_) {
    UniqueLock lk(mutex_);
    breaker_.abandon_probe();
  }

  struct View {
    HealthState state;
    std::size_t failures;
    std::string last_error;
  };

  /// The state, the count and the last error, consistent with each other.
  [[nodiscard]] View view() const CONNPOOL_EXCLUDES(mutex_) {
    UniqueLock lk(mutex_);
    return View{breaker_.state(), breaker_.failures(), last_error_};
  }

  [[nodiscard]] std::string last_error() const CONNPOOL_EXCLUDES(mutex_) {
    UniqueLock lk(mutex_);
    return last_error_;
  }

 private:
  mutable Mutex mutex_;  // guards last_error_ and serialises every mutating call on breaker_
  std::string last_error_ CONNPOOL_GUARDED_BY(mutex_);  // "" until the first failure
  // Not CONNPOOL_GUARDED_BY: its const members are read without the lock by design.
  Breaker<TimePoint> breaker_;
};

/// Calls to a MultiHostPool host factory made by this thread. An acquire compares it before and
/// after, to learn cheaply whether it took the slow path (a connect) on its host.
inline thread_local std::uint64_t host_factory_calls = 0;

/// A MultiHostPool call in progress on this thread (an acquire), innermost first.
///
/// User code runs inside a host pool's acquire (the factory, a validation ping, a hook), and may
/// destroy the MultiHostPool there. Its destructor marks this thread's calls into it
/// (pool_destroyed()), and a marked call touches nothing of the pool afterwards: the pool
/// object, its host list and its hosts' records may all be gone. Why a thread-local chain and
/// not a count on the pool: only user code on the calling thread can destroy the pool during
/// the call (the destructor must not run concurrently with other members), and the chain costs
/// the fast path no shared write.
class MultiHostCall {
 public:
  explicit MultiHostCall(const void* pool) noexcept : pool_(pool), outer_(top()) { top() = this; }
  MultiHostCall(const MultiHostCall&) = delete;
  MultiHostCall& operator=(const MultiHostCall&) = delete;
  ~MultiHostCall() { top() = outer_; }

  /// Whether the pool was destroyed during this call.
  [[nodiscard]] bool destroyed() const noexcept { return destroyed_; }

  /// `pool` is being destroyed: marks this thread's calls into it.
  static void pool_destroyed(const void* pool) noexcept {
    for (MultiHostCall* c = top(); c != nullptr; c = c->outer_) {
      if (c->pool_ == pool) {
        c->destroyed_ = true;
      }
    }
  }

 private:
  static MultiHostCall*& top() noexcept {
    thread_local MultiHostCall* innermost = nullptr;
    return innermost;
  }

  const void* pool_;
  MultiHostCall* outer_;
  bool destroyed_ = false;
};

/// The kind of pool a MultiHostPool keeps per host, for HostEntry: `pool<Conn, F, Clock>` is a
/// ConnectionPool built as pool(factory, options, kind), with the synchronous calls the
/// MultiHostPool makes on it under names of their own (try_now, wait_for, drain_now), so that one
/// HostEntry and one MultiHostPool serve both kinds. AsyncHosts (async_multi_host_pool.hpp) is the
/// other kind: an AsyncConnectionPool per host. Why a kind and not two copies of the record and of
/// the acquire across hosts: the breakers, roles, routes and failover are the same for both.
struct SyncHosts {
  template <class Conn, class F, class Clock>
  struct pool : ConnectionPool<Conn, F, Clock> {
    pool(F factory, const PoolOptions& options, const SyncHosts& /*kind*/)
        : ConnectionPool<Conn, F, Clock>(std::move(factory), options) {}

    std::optional<PooledHandle<Conn>> try_now(const call_site& site) {
      return this->try_acquire(site);
    }
    PooledHandle<Conn> wait_for(std::chrono::steady_clock::duration wait,
                                const std::stop_token* stop,
                                const call_site& site) {
      return stop != nullptr ? this->acquire(wait, *stop, site) : this->acquire(wait, site);
    }
    bool drain_now(std::chrono::milliseconds timeout) { return this->drain(timeout); }
  };
};

/// One host of a MultiHostPool: its ConnectionPool (of kind `Hosts`: SyncHosts or AsyncHosts),
/// its health and its in-use count.
///
/// Lifetime: reference-counted through HostLink. The MultiHostPool holds one reference until
/// it is destroyed (also for removed hosts: see MultiHostPool's class comment) and each handle
/// one, so a handle may outlive both the pool and its host's removal.
template <class Conn, class Factory, class Host, class Clock, class Hosts = SyncHosts>
class HostEntry final : public HostLink<Host> {
 public:
  /// The factory of the host's ConnectionPool: calls the user's factory with the host and
  /// reports the outcome to the breaker (also for connects made by warm-up and maintenance).
  struct HostFactory {
    std::shared_ptr<Factory> factory;
    HostEntry* entry;

    /// Takes the Deadline of the host's pool (connect_timeout, its close signal), and passes it
    /// on to a user factory callable as factory(host, deadline). With a role probe set, probes
    /// the new connection before the pool hands it out.
    Conn operator()(const Deadline& deadline) const {
      ++host_factory_calls;
      // The factory may destroy the MultiHostPool, and with it this record: a reference keeps
      // the record for the failure report below. (It counts as one more connection in use
      // while the connect runs, which it is about to be.)
      entry->taken();
      const Unref keep{entry};
      Conn c = connect(deadline);
      if (entry->roles_) {
        entry->probe_new(c);
      }
      return c;
    }

    Conn connect(const Deadline& deadline) const {
      try {
        if constexpr (std::invocable<Factory&, const Host&, const Deadline&>) {
          return Conn((*factory)(entry->host(), deadline));
        } else {
          (void)deadline;
          return Conn((*factory)(entry->host()));
        }
      } catch (const std::exception& e) {
        entry->failure(1, e.what());
        throw;
      } catch (...) {
        entry->failure(1, "unknown exception from the factory");
        throw;
      }
    }

    /// Drops a reference on scope exit.
    struct Unref {
      HostEntry* entry;
      explicit Unref(HostEntry* e) noexcept : entry(e) {}
      Unref(const Unref&) = delete;
      Unref& operator=(const Unref&) = delete;
      ~Unref() { entry->unref(); }
    };
  };

  /// What a host needs of MultiHostOptions' roles: the probes, and the checker to ask for a
  /// recheck when the host's circuit opens. Shared by every host of a pool.
  struct Roles {
    ConnProbe<HostRole> role_probe;
    ConnProbe<std::chrono::milliseconds> lag_probe;
    std::shared_ptr<RoleChecker> checker;
  };

  /// `roles` is null when MultiHostOptions::role_probe is not set.
  HostEntry(Host host,
            std::shared_ptr<Factory> factory,
            const MultiHostOptions& options,
            std::shared_ptr<const Roles> roles,
            const Hosts& kind = Hosts{})
      : HostLink<Host>(std::move(host)),
        max_size(options.per_host.max_size),
        max_replica_lag(options.max_replica_lag),
        health(options.failure_threshold, options.cooldown),
        roles_(std::move(roles)),
        pool(HostFactory{std::move(factory), this}, host_options(options.per_host), kind) {}

  /// The options of a host's ConnectionPool: per_host, without the pool's own connect backoff.
  ///
  /// Why: the circuit breaker is MultiHostPool's backoff, on `Clock` and with a single probe.
  /// A second backoff inside the host pool (PoolOptions::max_connect_backoff, on the real
  /// clock) would make the probe find the host "busy" instead of trying it, and would fail a
  /// wait on that host early even while other hosts could serve.
  static PoolOptions host_options(PoolOptions o) {
    o.max_connect_backoff = std::chrono::milliseconds(0);
    return o;
  }

  /// Reads how many validation pings failed on this host since the last look, and counts them
  /// as failures when `count` (the acquire on the host failed).
  ///
  /// Why only on slow paths: the host pool counts failed pings in stats().validation_failures,
  /// and stats() takes that pool's lock and walks its slots. Alone it is cheap (about 6 ns for 8
  /// connections, bench/multi_host_bench.cpp), but the pool's fast path takes no lock at all, so
  /// a stats() per acquire would make every thread on a host contend on that lock. A failed ping
  /// closes the connection and the acquire goes on, to another idle connection or a connect. If it
  /// then succeeds, the host answers and the pings only found stale connections (a server's idle
  /// timeout, a restart): not the host's failure. If it fails, the pings are part of the evidence.
  /// So the counter is read after an acquire that connected (`count` false: only to move the
  /// baseline) or failed (`count` true). Pings that failed in acquires served by another idle
  /// connection are counted at the next failing look.
  void look_at_pings(bool count) noexcept {
    std::uint64_t now = 0;
    try {
      now = pool.stats().validation_failures;
    } catch (...) {
      return;
    }
    std::uint64_t seen = pings_seen.load(std::memory_order_relaxed);
    while (seen < now && !pings_seen.compare_exchange_weak(seen, now)) {
    }
    if (count && seen < now) {
      failure(static_cast<std::size_t>(now - seen), "validation ping failed");
    }
  }

  /// `n` failures on the host, the last of which said `why`; a recheck of the roles when they
  /// open its circuit (the host may have been demoted, or another promoted in its place).
  void failure(std::size_t n, std::string_view why) noexcept {
    if (health.failure(n, why) && roles_) {
      roles_->checker->request();
    }
  }

  /// Whether this host may serve an acquire in `phase` of its route (see detail::serves).
  [[nodiscard]] bool serves(Route phase) const noexcept {
    return detail::serves(phase, this->role(), lag(), max_replica_lag);
  }

  /// The last lag reading; empty when not a replica, without a lag probe, or when it failed.
  [[nodiscard]] std::optional<std::chrono::milliseconds> lag() const noexcept {
    const std::int64_t ms = lag_ms_.load(std::memory_order_acquire);
    if (ms < 0) {
      return std::nullopt;
    }
    return std::chrono::milliseconds(ms);
  }

  /// Runs the role probe (and on a replica the lag probe) on `c`, a connection of this host,
  /// and records the answers. A lag probe that throws leaves the lag unknown (such a replica
  /// is skipped under max_replica_lag, and still serves Route::any). Why not a failure of the
  /// host: a lag query can fail on a healthy replica (PostgreSQL's replay timestamp is null
  /// until the first replayed transaction). User code: call with no lock held. Precondition:
  /// roles set.
  /// Throws: what the role probe throws (the role and lag are then left as they were).
  void probe(Conn& c) {
    const HostRole r = roles_->role_probe(c);
    std::int64_t lag = -1;
    if (r == HostRole::replica && roles_->lag_probe) {
      try {
        lag = std::max<std::int64_t>(0, roles_->lag_probe(c).count());
      } catch (...) {
        lag = -1;
      }
    }
    set_role(r, lag);
  }

  /// The host could not be probed (it did not answer): its role is unknown.
  void set_unknown() noexcept { set_role(HostRole::unknown, -1); }

  /// probe() on a new connection, from the host factory: a probe that throws fails the
  /// connect, as the factory's own exception would (counted against the host, the connection
  /// closed, the exception passed on to the acquire).
  void probe_new(Conn& c) {
    try {
      probe(c);
    } catch (const std::exception& e) {
      failure(1, std::string("role probe failed: ") + e.what());
      close_quietly(c);
      throw;
    } catch (...) {
      failure(1, "role probe failed: unknown exception");
      close_quietly(c);
      throw;
    }
  }

  /// Whether MultiHostOptions::role_probe is set.
  [[nodiscard]] bool has_roles() const noexcept { return roles_ != nullptr; }

  /// Closes `c` (a connection the host pool never had), swallowing what close() throws.
  static void close_quietly(Conn& c) noexcept {
    if constexpr (Closeable<Conn>) {
      try {
        connection_traits<Conn>::close(c);
      } catch (...) {  // the probe's exception is the one that matters
      }
    } else {
      (void)c;
    }
  }

  const std::size_t max_size;  // per_host.max_size, read by the balancer on every acquire
  const std::chrono::milliseconds max_replica_lag;  // MultiHostOptions::max_replica_lag
  HostHealth<Clock> health;
  // The host pool's validation_failures at the last look (look_at_pings): the pings counted or
  // passed over already. Only grows.
  std::atomic<std::uint64_t> pings_seen{0};
  // Null without MultiHostOptions::role_probe. Before `pool`: its warm-up probes.
  const std::shared_ptr<const Roles> roles_;
  // The last lag_probe answer in ms (>= 0), or -1 (see lag()). Written with role_. Before
  // `pool`: its warm-up probes.
  std::atomic<std::int64_t> lag_ms_{-1};
  // Last: its warm-up reports to `health`.
  typename Hosts::template pool<Conn, HostFactory, Clock> pool;

 private:
  void set_role(HostRole r, std::int64_t lag_ms) noexcept {
    lag_ms_.store(lag_ms, std::memory_order_release);
    this->role_.store(r, std::memory_order_release);
  }

  void handle_returned(bool failed) noexcept override {
    if (failed) {
      failure(1, "connection invalidated");
    } else {
      health.success();
    }
  }
};

}  // namespace connpool::detail
