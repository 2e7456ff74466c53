// connpool - MultiHostPool, one pool per host with load balancing and circuit breakers
// SPDX-License-Identifier: MIT
#pragma once

// MultiHostPool<Conn, Factory, Host, Clock, Hosts>, the front: the host list, the acquire across
// hosts (pick by route and balance, failover, wait), the role rechecks' pass, hosts added and
// removed at run time. `Hosts` is the kind of pool kept per host: detail::SyncHosts
// (ConnectionPool, the default) or detail::AsyncHosts (AsyncConnectionPool, for
// AsyncMultiHostPool in async_multi_host_pool.hpp, which runs the same rounds and suspends where
// this one blocks). Elsewhere: its handle in multi_host_handle.hpp, the options and statistics in
// multi_host_options.hpp (both included here), a host's record and breaker in detail/host_entry.hpp
// and detail/breaker.hpp, the balancer in detail/balancer.hpp, the route rules in
// detail/routing.hpp, the recheck thread in detail/role_checker.hpp, NoHealthyHost in
// errors.hpp. Lock rule: admin_mutex_ guards host changes only; an acquire takes no lock of its
// own (a routed acquire that finds no host of its route may wait on the role checker's), and no
// lock is held while user code runs.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include <connpool/concepts.hpp>
#include <connpool/deadline.hpp>
#include <connpool/detail/balancer.hpp>
#include <connpool/detail/failure.hpp>
#include <connpool/detail/host_entry.hpp>
#include <connpool/detail/recent_histogram.hpp>
#include <connpool/detail/role_checker.hpp>
#include <connpool/detail/routing.hpp>
#include <connpool/detail/thread_annotations.hpp>
#include <connpool/errors.hpp>
#include <connpool/handle.hpp>
#include <connpool/multi_host_handle.hpp>
#include <connpool/multi_host_options.hpp>
#include <connpool/options.hpp>
#include <connpool/pool.hpp>
#include <connpool/stats.hpp>

namespace connpool {

namespace detail {

/// What a MultiHostPool factory returns: called as factory(host, deadline) when it takes a
/// Deadline (preferred, as for ConnectionPool), else as factory(host); void if neither.
template <class F, class Host>
struct host_factory_result {
  using type = void;
};
template <class F, class Host>
requires std::invocable<F&, const Host&>
struct host_factory_result<F, Host> {
  using type = std::invoke_result_t<F&, const Host&>;
};
template <class F, class Host>
requires std::invocable<F&, const Host&, const Deadline&>
struct host_factory_result<F, Host> {
  using type = std::invoke_result_t<F&, const Host&, const Deadline&>;
};
template <class F, class Host>
using host_factory_result_t = typename host_factory_result<F, Host>::type;

}  // namespace detail

/// A pool of connections to several hosts: one ConnectionPool per host, a balancer that picks
/// a host per acquire, and a circuit breaker per host.
///
/// The model: acquire() picks, by `Balance`, a host whose circuit admits it and that has fewer
/// than max_size connections out, and takes a connection there without waiting. If the
/// connect fails, the failure counts against that host and the next candidate is tried, within
/// the same deadline. When every admitted host is at capacity, the acquire waits on the one with
/// the fewest connections out for the rest of its deadline (Why one host: each ConnectionPool
/// queues its own waiters FIFO, and the least busy host is the one likely to free a connection
/// first, as with HAProxy's leastconn). When no host is left (all failed or open), it throws
/// NoHealthyHost naming each host's last error.
///
/// Each host's breaker counts consecutive failures: connect errors (also those of warm-up and
/// maintenance), failed validation pings and invalidated handles; after failure_threshold of
/// them the host is skipped for `cooldown` (measured on `Clock`), then one acquire probes it.
/// A connection given back with release(), or a probe that gets a connection, is a success: it
/// resets the count and closes the circuit (details in detail::Breaker). acquire(host) uses one
/// host only and respects its circuit.
///
/// Roles (MultiHostOptions::role_probe set): each host's role (primary, replica, unknown) is the
/// last probe's answer, probed on every new connection and, by a thread of the pool's own, on one
/// connection of each host every role_recheck_interval, at once when a host's circuit opens, and
/// when an acquire finds no host of its route (which then waits for that pass, within its
/// deadline; at most one such pass a second). acquire(Route, ...) picks among the hosts of its
/// route only (see Route), by `Balance`, with the same breakers, failover and waits. So after a
/// failover the promoted host serves Route::primary as soon as a pass has seen it. Replicas
/// whose lag_probe reading exceeds max_replica_lag are left out of Route::replica and
/// Route::prefer_replica until a later reading is within it.
///
/// Hosts can be added and removed at run time. A removed host's pool is closed: idle
/// connections now, connections out when they come back; it is never picked again. An acquire
/// that was trying or waiting on a host when it was removed goes on, within its deadline, with
/// the current hosts (those added meanwhile included), and throws NoHealthyHost only when none
/// of them can serve.
///
/// Locking: the host list is an immutable snapshot published through an atomic pointer, so an
/// acquire reads it with one load and no lock; add_host() and remove_host() build a new
/// snapshot under admin_mutex_, which is never held while user code runs (a new host's pool
/// warms up before the lock is taken, a removed host's pool is closed after it is released).
/// Each host's breaker has a mutex of its own, taken only on failures and state changes.
/// Why no reclamation of old snapshots (nor of removed hosts' records) before destruction:
/// freeing them safely would need a reader count or hazard pointers on every acquire, a shared
/// write that all threads contend on; host changes are rare administrative events, so keeping
/// a few hundred bytes per change is the cheaper trade (RCU without grace periods).
///
/// `Factory` is called as factory(host) and must return something convertible to Conn; it
/// may be called from several threads at once (one host's pool calls it outside every lock).
/// The probes run outside every lock too, on the thread that connects or on the recheck
/// thread; user code there may call into the pool or destroy it.
/// `Host` must satisfy HostName (equality and a printable form).
///
/// Thread safety: all member functions may be called concurrently, except the destructor.
/// A handle may be used by one thread at a time.
/// Lifetime: handles may outlive the pool; giving one back then closes its connection.
/// Complexity: acquire is O(1) for round_robin, random and power_of_two_choices when the first
/// pick has a connection, O(hosts) for least_in_use; it allocates nothing for up to 64 hosts.
/// Example:
///     connpool::MultiHostPool<Db, decltype(connect)> pool{
///         {"db1:5432", "db2:5432"}, connect,
///         connpool::MultiHostOptions{.per_host = {.max_size = 8},
///                                    .balance = connpool::Balance::power_of_two_choices}};
///     auto h = pool.acquire(250ms);
///     h->query("SELECT 1");   // h.host() says which host served it
template <class Conn, class Factory, class Host, class Clock, class Hosts>
requires Connection<Conn> && detail::PoolClock<Clock> && HostName<Host>
class MultiHostPool {
  static_assert(std::invocable<Factory&, const Host&> ||
                    std::invocable<Factory&, const Host&, const Deadline&>,
                "connpool: MultiHostPool's Factory must be callable as factory(host) or "
                "factory(host, deadline)");
  static_assert(std::convertible_to<detail::host_factory_result_t<Factory, Host>, Conn>,
                "connpool: MultiHostPool's factory(host) must return something convertible to "
                "Conn");

 protected:
  using Entry = detail::HostEntry<Conn, Factory, Host, Clock, Hosts>;
  using WaitClock = std::chrono::steady_clock;

  struct Snapshot {
    std::vector<Entry*> hosts;
  };

 public:
  using connection_type = Conn;
  using host_type = Host;
  using handle_type = MultiHostHandle<Conn, Host>;
  using stats_type = MultiHostStats<Host>;

  /// Validates `options` and builds one pool per host (each warms up min_size connections,
  /// each probed when role_probe is set); then starts the role recheck thread (role_probe set),
  /// whose first pass runs at once.
  ///
  /// Throws: std::invalid_argument for bad options, a probe that does not take Conn&, or a
  /// host listed twice; with per_host.fail_fast and min_size > 0, the first factory (or probe)
  /// exception of a warm-up (set fail_fast = false to start while a host is down).
  MultiHostPool(std::vector<Host> hosts, Factory factory, MultiHostOptions options = {})
      : MultiHostPool(std::move(hosts), std::move(factory), std::move(options), Hosts{}) {}

  /// As above, with host pools of kind `kind` (AsyncMultiHostPool's: asynchronous ones).
  MultiHostPool(std::vector<Host> hosts, Factory factory, MultiHostOptions options, Hosts kind)
      : options_(validated(options)),
        factory_(std::make_shared<Factory>(std::move(factory))),
        roles_(make_roles(options_)),
        kind_(std::move(kind)) {
    try {
      for (Host& h : hosts) {
        add_host(std::move(h));
      }
    } catch (...) {
      destroy();
      throw;
    }
    if (roles_) {
      detail::RoleChecker::start(roles_->checker, [this] { return recheck_pass(); });
    }
  }

  MultiHostPool(const MultiHostPool&) = delete;
  MultiHostPool& operator=(const MultiHostPool&) = delete;
  MultiHostPool(MultiHostPool&&) = delete;
  MultiHostPool& operator=(MultiHostPool&&) = delete;

  /// close(), then lets go of every host (the last outstanding handle of a host frees it).
  ~MultiHostPool() { destroy(); }

  /// Borrows a connection from a host picked by the balancer, waiting up to
  /// options().per_host.acquire_timeout.
  ///
  /// Throws: NoHealthyHost when every host failed or has its circuit open; AcquireTimeout;
  /// PoolClosed.
  ///
  /// `site`, left to its default, is the caller's location, for the host pool's leak reports and
  /// in_use_report() (with per_host.leak_threshold set); the same for every acquire below.
  [[nodiscard]] handle_type acquire(call_site site = call_site::current()) {
    return *acquire_any(detail::to_wait_duration(options_.per_host.acquire_timeout), nullptr, site);
  }

  /// As acquire(), waiting up to `timeout` (0: never wait for a holder; each candidate host is
  /// still tried once).
  ///
  /// Throws: std::invalid_argument if `timeout` is negative; NoHealthyHost; AcquireTimeout;
  /// PoolClosed.
  template <class Rep, class Period>
  [[nodiscard]] handle_type acquire(std::chrono::duration<Rep, Period> timeout,
                                    call_site site = call_site::current()) {
    return *acquire_any(detail::to_wait_duration(timeout), nullptr, site);
  }

  /// As acquire(timeout), and a stop request on `stop` ends the wait with AcquireCancelled
  /// (the host waited on is not blamed). A connection available without waiting is returned
  /// even if stop was already requested, as ConnectionPool::acquire(timeout, stop) does.
  ///
  /// Throws: std::invalid_argument if `timeout` is negative; AcquireCancelled; NoHealthyHost;
  /// AcquireTimeout; PoolClosed.
  template <class Rep, class Period>
  [[nodiscard]] handle_type acquire(std::chrono::duration<Rep, Period> timeout,
                                    std::stop_token stop,
                                    call_site site = call_site::current()) {
    return *acquire_any(detail::to_wait_duration(timeout), &stop, site);
  }

  /// Borrows a connection from a host picked by the balancer without waiting for another
  /// holder: each admitted host with spare capacity is tried in the balancer's order (and may
  /// connect). Returns nullopt when every healthy host is at max_size.
  ///
  /// Throws: NoHealthyHost when no host is healthy (each failed now or has its circuit open);
  /// PoolClosed.
  [[nodiscard]] std::optional<handle_type> try_acquire(call_site site = call_site::current()) {
    return acquire_any(std::nullopt, nullptr, site);
  }

  /// Borrows a connection from a host of `route` (see Route), picked by the balancer among
  /// them, waiting up to options().per_host.acquire_timeout.
  ///
  /// Throws: std::invalid_argument for a route other than Route::any without
  /// MultiHostOptions::role_probe; NoHealthyHost naming the route and each host's role and state
  /// when no host of the route can serve (after waiting for one role recheck); AcquireTimeout;
  /// PoolClosed.
  [[nodiscard]] handle_type acquire(Route route, call_site site = call_site::current()) {
    return *acquire_any(detail::to_wait_duration(options_.per_host.acquire_timeout), nullptr, site,
                        route);
  }

  /// As acquire(route), waiting up to `timeout`.
  template <class Rep, class Period>
  [[nodiscard]] handle_type acquire(Route route,
                                    std::chrono::duration<Rep, Period> timeout,
                                    call_site site = call_site::current()) {
    return *acquire_any(detail::to_wait_duration(timeout), nullptr, site, route);
  }

  /// As acquire(route, timeout), and a stop request on `stop` ends the wait with
  /// AcquireCancelled.
  template <class Rep, class Period>
  [[nodiscard]] handle_type acquire(Route route,
                                    std::chrono::duration<Rep, Period> timeout,
                                    std::stop_token stop,
                                    call_site site = call_site::current()) {
    return *acquire_any(detail::to_wait_duration(timeout), &stop, site, route);
  }

  /// As try_acquire(), among the hosts of `route`: nullopt when every host of the route that
  /// could serve is at max_size. Right after construction it waits (up to
  /// per_host.acquire_timeout) for the first role recheck if no host of the route is known yet.
  [[nodiscard]] std::optional<handle_type> try_acquire(Route route,
                                                       call_site site = call_site::current()) {
    return acquire_any(std::nullopt, nullptr, site, route);
  }

  /// Probes every host's role now, on this thread (one connection of each host; a host whose
  /// connections are all in use keeps its role), as the recheck thread does every
  /// role_recheck_interval. For a caller that learns of a failover first. No-op without
  /// MultiHostOptions::role_probe.
  void recheck_roles() {
    if (roles_) {
      (void)recheck_pass();
    }
  }

  /// Borrows a connection from `host` only, waiting up to options().per_host.acquire_timeout.
  ///
  /// Throws: std::invalid_argument if `host` is not in the pool; NoHealthyHost if its circuit
  /// is open (Why: an open circuit fails fast for every caller, as in Hystrix, rather than
  /// letting pinned requests hammer a host known to be down); AcquireTimeout; PoolClosed; the
  /// factory's exception (unchanged).
  [[nodiscard]] handle_type acquire(const Host& host, call_site site = call_site::current()) {
    return acquire_on(host, detail::to_wait_duration(options_.per_host.acquire_timeout), site);
  }

  /// As acquire(host), waiting up to `timeout`.
  template <class Rep, class Period>
  [[nodiscard]] handle_type acquire(const Host& host,
                                    std::chrono::duration<Rep, Period> timeout,
                                    call_site site = call_site::current()) {
    return acquire_on(host, detail::to_wait_duration(timeout), site);
  }

  /// Adds a host at run time (its pool warms up first, outside every lock of this pool).
  ///
  /// Throws: std::invalid_argument if the host is already present; PoolClosed after close();
  /// with per_host.fail_fast, the factory's exception from the warm-up.
  void add_host(Host host) CONNPOOL_EXCLUDES(admin_mutex_) {
    if (closed_.load(std::memory_order_acquire)) {
      throw PoolClosed();
    }
    if (find(host) != nullptr) {
      throw_duplicate(host);
    }
    Entry* e = new Entry(std::move(host), factory_, options_, roles_, kind_);  // may connect
    bool published = false;
    {
      detail::UniqueLock lk(admin_mutex_);
      const bool dup = find(e->host()) != nullptr;
      if (!dup && !closed_.load(std::memory_order_acquire)) {
        auto next = std::make_unique<Snapshot>(*current_.load(std::memory_order_relaxed));
        next->hosts.push_back(e);
        entries_.push_back(e);
        current_.store(next.get(), std::memory_order_release);
        snapshots_.push_back(std::move(next));
        published = true;
      }
    }
    if (!published) {
      const bool was_closed = closed_.load(std::memory_order_acquire);
      const std::string name = host_to_string(e->host());
      e->unref();  // closes its pool
      if (was_closed) {
        throw PoolClosed();
      }
      throw std::invalid_argument("connpool: MultiHostPool::add_host: host " + name +
                                  " is already in the pool");
    }
  }

  /// Removes a host: it is never picked again, its idle connections are closed now and those
  /// out are closed when they come back.
  ///
  /// Throws: std::invalid_argument if `host` is not in the pool.
  void remove_host(const Host& host) CONNPOOL_EXCLUDES(admin_mutex_) {
    Entry* removed = nullptr;
    {
      detail::UniqueLock lk(admin_mutex_);
      const Snapshot& cur = *current_.load(std::memory_order_relaxed);
      auto next = std::make_unique<Snapshot>();
      next->hosts.reserve(cur.hosts.size());
      for (Entry* e : cur.hosts) {
        if (removed == nullptr && e->host() == host) {
          removed = e;
        } else {
          next->hosts.push_back(e);
        }
      }
      if (removed != nullptr) {
        current_.store(next.get(), std::memory_order_release);
        snapshots_.push_back(std::move(next));
      }
    }
    if (removed == nullptr) {
      throw_unknown(host);
    }
    removed->pool.close();  // outside the lock: runs the connections' close()
  }

  /// Rolling maintenance: stops handing out connections of `host` (its pool's pause()). The
  /// balancer skips a paused host, so the others take its load; acquire(host) on it waits, as
  /// on a paused ConnectionPool. Handles out work and come back normally. Idempotent.
  ///
  /// Throws: std::invalid_argument if `host` is not in the pool.
  void pause_host(const Host& host) { entry_of(host).pool.pause(); }

  /// Ends pause_host() (or drain_host()): the host is picked again, and its waiting callers are
  /// served. Idempotent.
  ///
  /// Throws: std::invalid_argument if `host` is not in the pool.
  void resume_host(const Host& host) { entry_of(host).pool.resume(); }

  /// Pauses `host`, closes its idle connections, and waits until none of its connections is in
  /// use (each closed as it comes back): true; false if `timeout` passes first. The other hosts
  /// serve meanwhile; the host stays paused until resume_host().
  ///
  /// Throws: std::invalid_argument if `host` is not in the pool.
  bool drain_host(const Host& host, std::chrono::milliseconds timeout) {
    return entry_of(host).pool.drain_now(timeout);
  }

  /// The current hosts, in order.
  [[nodiscard]] std::vector<Host> hosts() const {
    std::vector<Host> out;
    for (const Entry* e : current_.load(std::memory_order_acquire)->hosts) {
      out.push_back(e->host());
    }
    return out;
  }

  /// A health check for a service's health endpoint, as ConnectionPool::health(): acquires a
  /// connection (from any host) and gives it back within `timeout`, and checks the p99 wait over
  /// about the last minute, over all hosts, against per_host.health_p99_wait (when that is not
  /// 0). in_use and max_size are the hosts' totals; last_error names each host with failures
  /// since its last success and its last error ("db1: connection refused; db2: ...").
  ///
  /// Throws: std::invalid_argument if `timeout` is negative. Never throws for an unhealthy pool.
  template <class Rep, class Period>
  [[nodiscard]] HealthReport health(std::chrono::duration<Rep, Period> timeout) {
    return health(Route::any, timeout);
  }

  /// As health(timeout), acquiring under `route`: health(Route::primary, 1s) is false while no
  /// primary can take writes.
  ///
  /// Throws: std::invalid_argument if `timeout` is negative, or for a route other than
  /// Route::any without MultiHostOptions::role_probe.
  template <class Rep, class Period>
  [[nodiscard]] HealthReport health(Route route, std::chrono::duration<Rep, Period> timeout) {
    const WaitClock::duration wait = detail::to_wait_duration(timeout);
    if (route != Route::any && !roles_) {
      throw std::invalid_argument(std::string("connpool: MultiHostPool::health: Route::") +
                                  to_string(route) + " needs MultiHostOptions::role_probe");
    }
    const detail::MultiHostCall call(this);
    std::string error = detail::health_probe(
        [&] { (void)acquire_any(wait, nullptr, call_site::current(), route); });
    HealthReport r;
    if (call.destroyed()) {  // user code in the acquire destroyed this pool: touch nothing
      r.reason = std::move(error);
      return r;
    }
    const stats_type st = stats();
    r.in_use = st.total.in_use;
    r.max_size = st.total.max_size;
    {
      const std::lock_guard<std::mutex> lock(health_mutex_);
      r.p99_wait = recent_waits_.since(WaitClock::now(), st.total.wait_time).quantile(0.99);
    }
    for (const HostStats<Host>& h : st.hosts) {
      if (h.consecutive_failures > 0 && !h.last_error.empty()) {
        r.last_error +=
            (r.last_error.empty() ? "" : "; ") + host_to_string(h.host) + ": " + h.last_error;
      }
    }
    detail::health_verdict(r, std::move(error), options_.per_host.health_p99_wait);
    return r;
  }

  /// A snapshot of each current host's statistics and health, and their sum.
  [[nodiscard]] stats_type stats() const {
    stats_type out;
    for (Entry* e : current_.load(std::memory_order_acquire)->hosts) {
      HostStats<Host> h{e->host(), e->pool.stats(),  HealthState::closed, 0,
                        {},        e->pool.paused(), e->role(),           e->lag()};
      auto v = e->health.view();
      h.state = v.state;
      h.consecutive_failures = v.failures;
      h.last_error = std::move(v.last_error);
      detail::add_stats_into(out.total, h.pool);
      out.hosts.push_back(std::move(h));
    }
    return out;
  }

  /// Closes every host's pool (DESIGN 7 for each) and stops the role rechecks; later acquires
  /// throw PoolClosed. Idempotent.
  void close() noexcept CONNPOOL_EXCLUDES(admin_mutex_) {
    closed_.store(true, std::memory_order_release);
    if (roles_) {
      roles_->checker->stop();  // wakes acquires waiting for a pass
    }
    const Snapshot* snap = nullptr;
    {
      detail::UniqueLock lk(admin_mutex_);  // no add_host can publish past this point
      snap = current_.load(std::memory_order_relaxed);
    }
    for (Entry* e : snap->hosts) {
      e->pool.close();
    }
  }

  [[nodiscard]] const MultiHostOptions& options() const noexcept { return options_; }

 protected:
  // Protected, not private: AsyncMultiHostPool runs the same acquire across hosts, suspending
  // where this one blocks.
  using Admit = typename detail::HostHealth<Clock>::Admit;

  using Roles = typename Entry::Roles;

  static const MultiHostOptions& validated(const MultiHostOptions& o) {
    o.validate();
    if (o.role_probe && !o.role_probe.template takes<Conn>()) {
      throw std::invalid_argument(
          "connpool: MultiHostOptions::role_probe must take the pool's connection type by "
          "reference (Conn& or const Conn&); it takes another type");
    }
    if (o.lag_probe && !o.lag_probe.template takes<Conn>()) {
      throw std::invalid_argument(
          "connpool: MultiHostOptions::lag_probe must take the pool's connection type by "
          "reference (Conn& or const Conn&); it takes another type");
    }
    return o;
  }

  static std::shared_ptr<const Roles> make_roles(const MultiHostOptions& o) {
    if (!o.role_probe) {
      return nullptr;
    }
    return std::make_shared<const Roles>(Roles{
        o.role_probe, o.lag_probe, std::make_shared<detail::RoleChecker>(o.role_recheck_interval)});
  }

  /// One role recheck: a probe on one connection of each current host (the recheck thread's
  /// pass, and recheck_roles()). Returns false when user code in it destroyed this pool: then
  /// nothing of the pool is touched any more.
  bool recheck_pass() {
    const detail::MultiHostCall call(this);
    const Snapshot& snap = *current_.load(std::memory_order_acquire);
    for (Entry* e : snap.hosts) {
      if (closed_.load(std::memory_order_acquire)) {
        return true;
      }
      if (!probe_host(*e, call)) {
        return false;
      }
    }
    return true;
  }

  /// Probes host `e`'s role on one of its connections: an idle one, else a new one (which its
  /// host factory probes as it connects), else, when all max_size are in use, one opened for the
  /// probe alone (probe_spare()). The role stands while the host is paused; it becomes unknown
  /// when the host cannot be reached or the probe fails (a failure against its breaker).
  /// Returns false when user code destroyed this pool.
  bool probe_host(Entry& e, const detail::MultiHostCall& call) {
    // The record outlives this probe even if user code destroys the pool (declared before `h`,
    // whose connection goes back to the record's pool first).
    e.taken();
    const typename Entry::HostFactory::Unref keep{&e};
    const std::uint64_t calls = detail::host_factory_calls;
    std::optional<PooledHandle<Conn>> h;
    try {
      h = e.pool.try_now(call_site::current());
    } catch (const PoolClosed&) {
      return !call.destroyed();  // removed meanwhile, or closing
    } catch (...) {
      // The connect (or the new connection's probe) failed; the host factory has counted it.
      if (call.destroyed()) {
        return false;
      }
      e.set_unknown();
      return true;
    }
    if (call.destroyed()) {
      return false;
    }
    if (!h) {
      // Paused for maintenance: the role stands. Busy: a connection of the probe's own.
      return e.pool.paused() ? true : probe_spare(e, call);
    }
    if (detail::host_factory_calls != calls) {
      return true;  // a new connection, probed as it connected
    }
    std::string failed;
    try {
      e.probe(**h);
    } catch (const std::exception& ex) {
      failed = std::string("role probe failed: ") + ex.what();
    } catch (...) {
      failed = "role probe failed: unknown exception";
    }
    if (call.destroyed()) {
      return false;
    }
    if (!failed.empty()) {
      h->invalidate();
      e.set_unknown();
      e.failure(1, failed);
    }
    return true;
  }

  [[noreturn]] static void throw_duplicate(const Host& host) {
    throw std::invalid_argument("connpool: MultiHostPool: host " + host_to_string(host) +
                                " is already in the pool");
  }
  [[noreturn]] static void throw_unknown(const Host& host) {
    throw std::invalid_argument("connpool: MultiHostPool: unknown host " + host_to_string(host));
  }

  /// The entry of a current host. Entries live as long as this pool (remove_host() only
  /// unlists them), so the reference stays valid.
  Entry& entry_of(const Host& host) const {
    Entry* e = find(host);
    if (e == nullptr) {
      throw_unknown(host);
    }
    return *e;
  }

  Entry* find(const Host& host) const noexcept {
    for (Entry* e : current_.load(std::memory_order_acquire)->hosts) {
      if (e->host() == host) {
        return e;
      }
    }
    return nullptr;
  }

  /// Every connection of `e` is in use: probes a connection opened for this probe and closed
  /// after it, one beyond per_host.max_size for that moment. Why: in a failover the promoted host
  /// is often full of readers, and waiting for one of their connections would keep writes
  /// failing for as long as a reader holds one (AWS's JDBC wrapper monitors each host on a
  /// connection of its own for the same reason). Returns false when user code destroyed this
  /// pool.
  bool probe_spare(Entry& e, const detail::MultiHostCall& call) {
    Deadline d;  // per_host.connect_timeout, as the host pool's own connects
    if (options_.per_host.connect_timeout.count() > 0) {
      d.at = Deadline::clock::now() + options_.per_host.connect_timeout;
    }
    try {
      Conn c = typename Entry::HostFactory{factory_, &e}(d);  // connects, then probes the role
      Entry::close_quietly(c);
    } catch (...) {
      // The connect or the probe failed; the host factory has counted it.
      if (call.destroyed()) {
        return false;
      }
      e.set_unknown();
    }
    return !call.destroyed();
  }

  void destroy() noexcept CONNPOOL_EXCLUDES(admin_mutex_) {
    detail::MultiHostCall::pool_destroyed(this);  // user code inside an acquire of ours
    close();
    if (roles_) {
      // Waits for a pass in progress on another thread; on the recheck thread itself (user code
      // in a pass destroys the pool) detaches it, and the pass touches nothing more.
      roles_->checker->stop_and_join();
    }
    std::vector<Entry*> entries;
    {
      detail::UniqueLock lk(admin_mutex_);
      entries.swap(entries_);
    }
    for (Entry* e : entries) {
      e->unref();  // destroys the record unless handles are still out
    }
  }

  handle_type make_handle(PooledHandle<Conn> h, Entry* e, bool primary_only = false) noexcept {
    e->taken();
    return handle_type(std::move(h), e, primary_only);
  }

  /// The host the balancer picks among those not in `skip` whose circuit admits them and that
  /// have spare capacity; nullptr if none.
  ///
  /// `index` is in-out: after a first pick in this acquire (`again`), round_robin goes on from
  /// the host after it instead of taking a new turn (see detail::Balancer::pick).
  Entry* pick(const Snapshot& snap,
              const detail::IndexSet& skip,
              std::size_t& index,
              bool again,
              Route phase) const {
    std::optional<typename Clock::time_point> now;  // read only when a circuit is not closed
    auto ok = [&](std::size_t i) {
      const Entry& e = *snap.hosts[i];
      if (e.in_use() >= e.max_size || e.pool.paused()) {
        return false;  // full, or paused for maintenance (pause_host())
      }
      if (e.health.closed()) {
        return true;
      }
      if (!now) {
        now = Clock::now();
      }
      return e.health.may_admit(*now);
    };
    const std::size_t after = again ? index : detail::Balancer::none;
    const std::size_t i =
        phase == Route::any
            ? balancer_.pick(snap.hosts.size(), skip, after, ok, load_of(snap))
            : balancer_.pick(snap.hosts.size(), skip, after, ok, load_of(snap),
                             [&](std::size_t k) { return snap.hosts[k]->serves(phase); });
    if (i == detail::Balancer::none) {
      return nullptr;
    }
    index = i;
    return snap.hosts[i];
  }

  /// The admitted host of route phase `phase` with the fewest connections out among those not
  /// in `failed`, to wait on; nullptr if none.
  Entry* pick_to_wait(const Snapshot& snap,
                      const detail::IndexSet& failed,
                      std::size_t& index,
                      Route phase) {
    const auto now = Clock::now();
    const std::size_t i = detail::Balancer::least_loaded(
        snap.hosts.size(), failed,
        [&](std::size_t k) {
          const Entry& e = *snap.hosts[k];
          return !e.pool.paused() && (phase == Route::any || e.serves(phase)) &&
                 e.health.may_admit(now);
        },
        load_of(snap));
    if (i == detail::Balancer::none) {
      return nullptr;
    }
    index = i;
    return snap.hosts[i];
  }

  /// The balancer's load(i) over `snap`: the connections out through this pool on host i.
  static auto load_of(const Snapshot& snap) noexcept {
    return [&snap](std::size_t i) { return snap.hosts[i]->in_use(); };
  }

  /// The breaker's admission of `e`, reading Clock only when its circuit is not closed.
  /// Why: a clock read costs as much as half an acquire's fast path (measured, bench/).
  static Admit admit_now(Entry& e) noexcept {
    return e.health.closed() ? Admit::normal : e.health.admit(Clock::now());
  }

  /// How one try on one host ended.
  enum class Attempt {
    got,         ///< a connection, in `out`
    full,        ///< no spare connection (try_acquire only), or no host served (take_spare)
    failed,      ///< the connect failed, counted against the host
    gone,        ///< the host's pool is closed: the host was removed, or this pool is closing
    destroyed,   ///< user code inside the host's acquire destroyed this pool: touch nothing
    overloaded,  ///< the host's pool refused to queue one more waiter (PoolOptions::max_waiters)
  };

  /// One acquire on host `e` (try_acquire when `wait` is empty; cancellable through `stop`
  /// when not null), recording the outcome into its breaker.
  Attempt attempt(Entry& e,
                  Admit admit,
                  std::optional<WaitClock::duration> wait,
                  const std::stop_token* stop,
                  const detail::MultiHostCall& call,
                  std::optional<handle_type>& out,
                  const call_site& site,
                  bool primary_only) {
    const std::uint64_t calls = detail::host_factory_calls;
    try {
      std::optional<PooledHandle<Conn>> h;
      if (wait) {
        h.emplace(e.pool.wait_for(*wait, stop, site));
      } else {
        h = e.pool.try_now(site);
      }
      return took(e, admit, h, detail::host_factory_calls != calls, call, out, primary_only);
    } catch (...) {
      return threw(e, admit, call);
    }
  }

  /// The outcome of an acquire on host `e` that gave `h` (empty: try_acquire found it at
  /// max_size); `connected`: it connected (see HostEntry::look_at_pings).
  Attempt took(Entry& e,
               Admit admit,
               std::optional<PooledHandle<Conn>>& h,
               bool connected,
               const detail::MultiHostCall& call,
               std::optional<handle_type>& out,
               bool primary_only) {
    if (call.destroyed()) {
      return Attempt::destroyed;  // `h` goes back to the host's (closed) pool
    }
    if (!h) {
      if (admit == Admit::probe) {
        e.health.abandon_probe();
      }
      return Attempt::full;
    }
    if (connected) {
      e.look_at_pings(false);
    }
    if (!e.health.closed()) {
      e.health.success();  // the probe (or a wait that outlived the opening) got through
    }
    out.emplace(make_handle(std::move(*h), &e, primary_only));
    return Attempt::got;
  }

  /// The outcome of an acquire on host `e` that threw; call only inside a handler, where the
  /// exception is the one being handled.
  ///
  /// Throws: that exception again when it is AcquireTimeout or AcquireCancelled (the wait ended,
  /// which says nothing of the host), or when user code destroyed this pool.
  Attempt threw(Entry& e, Admit admit, const detail::MultiHostCall& call) {
    try {
      throw;
    } catch (const PoolClosed&) {
      if (call.destroyed()) {
        return Attempt::destroyed;
      }
      if (admit == Admit::probe) {
        e.health.abandon_probe();
      }
      return Attempt::gone;  // removed meanwhile, or the whole pool is closing
    } catch (const PoolOverloaded&) {
      // Its queue is full, which says nothing of the host's health: another host may take the
      // wait.
      if (call.destroyed()) {
        return Attempt::destroyed;
      }
      if (admit == Admit::probe) {
        e.health.abandon_probe();
      }
      return Attempt::overloaded;
    } catch (const PoolError&) {
      // AcquireTimeout or AcquireCancelled: the wait ended, which says nothing of the host.
      if (admit == Admit::probe && !call.destroyed()) {
        e.health.abandon_probe();
      }
      throw;
    } catch (...) {
      // The factory's exception: the host factory has recorded it (count and message) already.
      if (call.destroyed()) {
        throw;  // the caller gets the factory's exception unchanged; nothing else is touched
      }
    }
    e.look_at_pings(true);
    if (admit == Admit::probe) {
      e.health.abandon_probe();  // no-op: the failure has reopened the circuit
    }
    return Attempt::failed;
  }

  [[noreturn]] void throw_no_healthy_host(const Snapshot& snap, Route route = Route::any) const {
    if (closed_.load(std::memory_order_acquire)) {
      throw PoolClosed();
    }
    std::string msg = "connpool: no healthy host";
    if (route != Route::any) {
      msg += " for Route::";
      msg += to_string(route);
    }
    if (snap.hosts.empty()) {
      msg += ": the pool has no hosts";
    }
    const char* sep = " (";
    for (const Entry* e : snap.hosts) {
      auto v = e->health.view();
      msg += sep;
      msg += host_to_string(e->host());
      msg += ": ";
      if (roles_) {
        msg += to_string(e->role());
        if (const auto lag = e->lag()) {
          msg += " (lag " + std::to_string(lag->count()) + " ms";
          msg += options_.max_replica_lag.count() > 0 && *lag > options_.max_replica_lag
                     ? ", over max_replica_lag)"
                     : ")";
        } else if (e->role() == HostRole::replica && options_.max_replica_lag.count() > 0) {
          msg += " (lag unknown)";
        }
        msg += ", ";
      }
      msg += to_string(v.state);
      msg += ", ";
      if (e->pool.paused()) {
        msg += "paused, ";
      }
      msg += std::to_string(v.failures);
      msg += " consecutive failures, last error: ";
      msg += v.last_error.empty() ? std::string("none") : v.last_error;
      sep = "; ";
    }
    if (!snap.hosts.empty()) {
      msg += ')';
    }
    throw NoHealthyHost(msg);
  }

  /// PoolOverloaded for an acquire that every host that could take its wait refused (each
  /// host's pool had PoolOptions::max_waiters callers waiting), with each host's counts.
  [[noreturn]] void throw_overloaded(const Snapshot& snap) const {
    std::string msg =
        "connpool: acquire refused at once: the queue of every host that could take the wait is "
        "full (PoolOptions::max_waiters)";
    const char* sep = " (";
    for (const Entry* e : snap.hosts) {
      const PoolStats st = e->pool.stats();
      msg += sep;
      msg += host_to_string(e->host());
      msg += ": waiting ";
      msg += std::to_string(st.pending);
      msg += ", in use ";
      msg += std::to_string(st.in_use);
      msg += ", max_size ";
      msg += std::to_string(st.max_size);
      sep = "; ";
    }
    if (!snap.hosts.empty()) {
      msg += ')';
    }
    throw PoolOverloaded(msg);
  }

  /// Where one acquire stands: the host list it works on and the hosts that failed in it.
  /// Movable, and tied to no thread: an asynchronous acquire keeps it across suspensions.
  struct Search {
    Search(const Snapshot& s, Route r)
        : snap(&s), failed(s.hosts.size()), route(r), phase(detail::first_phase(r)) {}
    const Snapshot* snap;      // never freed before the pool (see the class comment)
    detail::IndexSet failed;   // indices into snap->hosts: failed or unavailable in this acquire
    bool failed_once = false;  // a host failed or left: the deadline now bounds phase 1 too
    bool overloaded = false;   // a host refused the wait (its max_waiters callers waited)
    call_site site;            // where it was called (leak reports)
    Route route;               // the route asked for
    Route phase;               // the hosts looked at now: route, or a phase of prefer_replica
    bool rechecked = false;    // a role recheck was awaited once already
    // RoleChecker::passes_done() before the roles were first looked at (routed acquires only).
    std::uint64_t passes_seen = 0;
  };

  /// The start of every acquire across hosts: the checks, and the current host list.
  ///
  /// Throws: PoolClosed; std::invalid_argument for a route without role_probe; NoHealthyHost
  /// when the pool has no hosts.
  Search begin_search(Route route, const call_site& site) const {
    if (closed_.load(std::memory_order_acquire)) {
      throw PoolClosed();
    }
    if (route != Route::any && !roles_) [[unlikely]] {
      throw std::invalid_argument(std::string("connpool: MultiHostPool: Route::") +
                                  to_string(route) +
                                  " needs MultiHostOptions::role_probe to know the hosts' roles");
    }
    // Before the roles are looked at: a pass that ends after this read makes a miss look again.
    const std::uint64_t passes = route != Route::any ? roles_->checker->passes_done() : 0;
    Search s(*current_.load(std::memory_order_acquire), route);
    s.site = site;
    s.passes_seen = passes;
    if (s.snap->hosts.empty()) {
      throw_no_healthy_host(*s.snap, route);
    }
    return s;
  }

  /// What one round of an acquire found (next_round()).
  enum class Round {
    got,   ///< a handle, in `out`
    busy,  ///< try_acquire: the hosts that could serve are at max_size
    wait,  ///< every admitted host is busy: wait on `to.entry`
    miss,  ///< no host of the route can serve: await a role recheck, or throw NoHealthyHost
  };

  /// The host a round chose to wait on: snap->hosts[index], admitted as `admit`.
  struct WaitOn {
    Entry* entry = nullptr;
    std::size_t index = 0;
    Admit admit = Admit::normal;
  };

  /// One round of an acquire: phase 1 (each admitted host of the phase with spare capacity, in
  /// the balancer's order, without waiting), then the least busy admitted host to wait on,
  /// moving on to prefer_replica's fallback phase when no replica can serve. `waits` false:
  /// try_acquire. Runs user code (connects, validation pings, probes) and never suspends.
  ///
  /// Throws: PoolClosed (also when user code destroyed this pool: nothing of it is touched
  /// then); NoHealthyHost when every host was removed; PoolOverloaded; AcquireTimeout when a
  /// failover has used up the deadline.
  ///
  /// `spare_tried`: the caller ran phase 1 already (first_spare()), and no host served.
  Round next_round(Search& s,
                   const detail::MultiHostCall& call,
                   bool waits,
                   WaitClock::duration timeout,
                   WaitClock::time_point deadline,
                   std::optional<handle_type>& out,
                   WaitOn& to,
                   bool spare_tried = false) {
    for (;;) {
      if (!std::exchange(spare_tried, false)) {
        const Attempt spare = take_spare(s, call, timeout, deadline, out);
        if (spare == Attempt::got) {
          return Round::got;
        }
        if (spare == Attempt::destroyed) {
          throw PoolClosed();  // this pool is gone: nothing of it is touched any more
        }
        if (spare == Attempt::gone) {
          reload(s);
          continue;
        }
      }
      // Phase 2: every admitted host is busy: wait on the least busy one.
      to.entry = pick_to_wait(*s.snap, s.failed, to.index, s.phase);
      if (to.entry == nullptr) {
        if (const std::optional<Route> next = detail::fallback(s.route, s.phase)) {
          s.phase = *next;  // prefer_replica: no replica can serve; the primary then
          continue;
        }
        if (s.overloaded) {
          throw_overloaded(*s.snap);
        }
        return Round::miss;
      }
      if (!waits) {
        return Round::busy;
      }
      to.admit = admit_now(*to.entry);
      if (to.admit == Admit::no) {
        s.failed.insert(to.index);
        continue;
      }
      return Round::wait;
    }
  }

  /// Phase 1 of an acquire's first round, for the callers' fast path (a connection without a
  /// call of next_round()): true when it got one (in `out`); false when the rounds must go on,
  /// with next_round(..., spare_tried = true) when nothing else happened.
  ///
  /// Throws: PoolClosed when user code destroyed this pool; what take_spare() throws.
  bool first_spare(Search& s,
                   const detail::MultiHostCall& call,
                   WaitClock::duration timeout,
                   WaitClock::time_point deadline,
                   std::optional<handle_type>& out,
                   bool& spare_tried) {
    const Attempt spare = take_spare(s, call, timeout, deadline, out);
    if (spare == Attempt::got) [[likely]] {
      return true;
    }
    if (spare == Attempt::destroyed) {
      throw PoolClosed();  // this pool is gone: nothing of it is touched any more
    }
    spare_tried = spare == Attempt::full;
    if (spare == Attempt::gone) {
      reload(s);
    }
    return false;
  }

  /// A wait on host snap->hosts[i] ended without a connection, as `a` says: records it in `s`.
  ///
  /// Throws: PoolClosed for Attempt::destroyed, or when reload() finds the pool closed;
  /// NoHealthyHost when every host was removed.
  void after_wait(Search& s, std::size_t i, Attempt a) {
    switch (a) {
      case Attempt::got:
      case Attempt::full:  // not reached: a waiting acquire returns or throws
        break;
      case Attempt::destroyed:
        throw PoolClosed();  // this pool is gone: nothing of it is touched any more
      case Attempt::overloaded:
        s.failed.insert(i);  // its queue is full: wait on another host, if one can take it
        s.overloaded = true;
        break;
      case Attempt::failed:
        s.failed.insert(i);
        s.failed_once = true;
        break;
      case Attempt::gone:
        s.failed.insert(i);
        s.failed_once = true;
        reload(s);
        break;
    }
  }

  /// acquire() with `timeout`, or try_acquire() when it is empty (then nullopt = all busy).
  std::optional<handle_type> acquire_any(std::optional<WaitClock::duration> wait,
                                         const std::stop_token* stop,
                                         const call_site& site,
                                         Route route = Route::any) {
    Search s = begin_search(route, site);
    const detail::MultiHostCall call(this);
    // Why the coarse clock (detail::clock_now): the deadline must start now, before a connect
    // that may take long, but a precise steady_clock read would cost a third of the fast path;
    // the coarse one is the same clock at tick resolution (1-4 ms), ample for a deadline.
    const WaitClock::duration timeout = wait.value_or(WaitClock::duration::zero());
    const WaitClock::time_point deadline = detail::clock_now<WaitClock>() + timeout;
    std::optional<handle_type> out;
    bool spare_tried = false;
    if (first_spare(s, call, timeout, deadline, out, spare_tried)) [[likely]] {
      return out;
    }
    for (;;) {
      WaitOn to;
      switch (next_round(s, call, wait.has_value(), timeout, deadline, out, to,
                         std::exchange(spare_tried, false))) {
        case Round::got:
          return out;
        case Round::busy:
          return std::nullopt;  // try_acquire: a healthy host is busy
        case Round::miss:
          if (await_recheck(s, wait.has_value(), deadline)) {
            continue;
          }
          throw_no_healthy_host(*s.snap, s.route);
        case Round::wait:
          break;
      }
      const Attempt a = attempt(*to.entry, to.admit, remaining(deadline), stop, call, out, s.site,
                                s.route == Route::primary);
      if (a == Attempt::got) {
        return out;
      }
      after_wait(s, to.index, a);
    }
  }

  /// No host of `s`'s route can serve: waits once per acquire for a role recheck (one running,
  /// or one started now unless one started less than a second ago), within `deadline` (for
  /// try_acquire, `waits` false: only for the first pass of all, within
  /// per_host.acquire_timeout). Returns true when one ended: the acquire looks again, from the
  /// route's first phase. Why: right after start, or right after a promotion, the roles are
  /// stale; a write that waits for one probe round beats one that fails.
  ///
  /// Throws: PoolClosed when the pool closed meanwhile.
  bool await_recheck(Search& s, bool waits, WaitClock::time_point deadline) {
    if (s.route == Route::any || s.rechecked) {
      return false;
    }
    s.rechecked = true;
    const WaitClock::time_point until =
        waits ? deadline
              : WaitClock::now() + detail::to_wait_duration(options_.per_host.acquire_timeout);
    const bool ran = roles_->checker->await_pass(until, !waits, s.passes_seen);
    if (closed_.load(std::memory_order_acquire)) {
      throw PoolClosed();
    }
    if (ran) {
      s.phase = detail::first_phase(s.route);
    }
    return ran;
  }

  static WaitClock::duration remaining(WaitClock::time_point deadline) noexcept {
    return std::max(deadline - detail::clock_now<WaitClock>(), WaitClock::duration::zero());
  }

  /// Phase 1 of an acquire: tries, in the balancer's order, each admitted host of `s` that has
  /// spare capacity and has not failed yet, without waiting. Returns `got` (a handle in `out`),
  /// `gone` (a host was removed meanwhile: the caller reloads the host list) or `full` (no host
  /// served; those that failed are in s.failed).
  ///
  /// Throws: AcquireTimeout when a failover has used up the deadline.
  Attempt take_spare(Search& s,
                     const detail::MultiHostCall& call,
                     WaitClock::duration timeout,
                     WaitClock::time_point deadline,
                     std::optional<handle_type>& out) {
    detail::IndexSet skip = s.failed;
    std::size_t i = 0;
    bool again = false;
    while (Entry* e = pick(*s.snap, skip, i, std::exchange(again, true), s.phase)) {
      if (s.failed_once && timeout > WaitClock::duration::zero() &&
          remaining(deadline) == WaitClock::duration::zero()) {
        throw_timeout(timeout, *s.snap);
      }
      const Admit admit = admit_now(*e);
      if (admit == Admit::no) {
        skip.insert(i);
        continue;
      }
      switch (
          attempt(*e, admit, std::nullopt, nullptr, call, out, s.site, s.route == Route::primary)) {
        case Attempt::got:
          return Attempt::got;
        case Attempt::destroyed:
          return Attempt::destroyed;
        case Attempt::full:
        case Attempt::overloaded:  // not reached: an acquire that does not wait is never refused
          skip.insert(i);
          break;
        case Attempt::failed:
          s.failed.insert(i);
          skip.insert(i);
          s.failed_once = true;
          break;
        case Attempt::gone:
          s.failed.insert(i);
          s.failed_once = true;
          return Attempt::gone;
      }
    }
    return Attempt::full;
  }

  /// Moves `s` to the current host list after a host's pool said PoolClosed: the host was
  /// removed (remove_host() publishes the new list before it closes the host's pool), or the
  /// whole pool is closing. Hosts that failed in this acquire stay failed; hosts added meanwhile
  /// become candidates.
  ///
  /// Why: an acquire that kept the list it started with would, in a rolling replacement (a
  /// caller waiting on a, then add_host(b), remove_host(a)), end with NoHealthyHost blaming a
  /// while b could serve. Complexity: O(old hosts x current hosts), on this rare path only.
  ///
  /// Throws: PoolClosed after close(); NoHealthyHost when no host is left.
  void reload(Search& s) {
    if (closed_.load(std::memory_order_acquire)) {
      throw PoolClosed();
    }
    const Snapshot& cur = *current_.load(std::memory_order_acquire);
    if (&cur != s.snap) {
      detail::IndexSet failed(cur.hosts.size());
      for (std::size_t i = 0; i < cur.hosts.size(); ++i) {
        for (std::size_t j = 0; j < s.snap->hosts.size(); ++j) {
          if (s.snap->hosts[j] == cur.hosts[i] && s.failed.contains(j)) {
            failed.insert(i);
          }
        }
      }
      s.snap = &cur;
      s.failed = std::move(failed);
    }
    if (cur.hosts.empty()) {
      throw_no_healthy_host(cur);
    }
  }

  [[noreturn]] void throw_timeout(WaitClock::duration timeout, const Snapshot& snap) const {
    std::string msg =
        "connpool: MultiHostPool acquire timed out after " +
        std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()) +
        " ms while failing over (";
    const char* sep = "";
    for (const Entry* e : snap.hosts) {
      msg += sep;
      msg += host_to_string(e->host());
      msg += ": ";
      const std::string err = e->health.last_error();
      msg += err.empty() ? std::string("no error") : err;
      sep = "; ";
    }
    msg += ')';
    throw AcquireTimeout(msg);
  }

  handle_type acquire_on(const Host& host, WaitClock::duration timeout, const call_site& site) {
    if (closed_.load(std::memory_order_acquire)) {
      throw PoolClosed();
    }
    Entry* e = find(host);
    if (e == nullptr) {
      throw_unknown(host);
    }
    const Admit admit = admit_now(*e);
    if (admit == Admit::no) {
      Snapshot one{{e}};
      throw_no_healthy_host(one);
    }
    const std::uint64_t calls = detail::host_factory_calls;
    const detail::MultiHostCall call(this);
    try {
      PooledHandle<Conn> h = e->pool.wait_for(timeout, nullptr, site);
      if (call.destroyed()) {
        throw PoolClosed();  // `h` goes back to the host's (closed) pool
      }
      if (detail::host_factory_calls != calls) {
        e->look_at_pings(false);
      }
      if (!e->health.closed()) {
        e->health.success();
      }
      return make_handle(std::move(h), e);
    } catch (const PoolError&) {
      if (admit == Admit::probe && !call.destroyed()) {
        e->health.abandon_probe();
      }
      throw;
    } catch (...) {
      if (!call.destroyed()) {
        e->look_at_pings(true);  // the host factory has counted the connect failure
      }
      throw;
    }
  }

  const MultiHostOptions options_;
  const std::shared_ptr<Factory> factory_;  // shared with every host's pool
  std::mutex health_mutex_;  // guards recent_waits_ (health() calls only; no other lock inside)
  // Readings of the hosts' total wait_time taken by health(): the waits of the last minute.
  detail::RecentHistogram recent_waits_;
  // The probes and the recheck thread, shared with every host; null without role_probe.
  const std::shared_ptr<const Roles> roles_;
  const Hosts kind_;  // how each host's pool is built (SyncHosts, or AsyncHosts and its scheduler)
  std::atomic<bool> closed_{false};
  const detail::Balancer balancer_{options_.balance};  // picks a host; its turns are per thread

  mutable detail::Mutex admin_mutex_;  // guards entries_, snapshots_ and every store to current_
  std::vector<Entry*> entries_ CONNPOOL_GUARDED_BY(admin_mutex_);  // each holds a reference
  // Every snapshot ever published, freed by the destructor only (see the class comment).
  std::vector<std::unique_ptr<Snapshot>> snapshots_ CONNPOOL_GUARDED_BY(admin_mutex_) = [] {
    std::vector<std::unique_ptr<Snapshot>> v;
    v.push_back(std::make_unique<Snapshot>());
    return v;
  }();
  std::atomic<const Snapshot*> current_{snapshots_.front().get()};  // read without a lock
};

/// Deduces Conn from what factory(host) returns.
template <class Host, class F>
MultiHostPool(std::vector<Host>, F, MultiHostOptions)
    -> MultiHostPool<std::decay_t<detail::host_factory_result_t<F, Host>>, F, Host>;

template <class Host, class F>
MultiHostPool(std::vector<Host>, F)
    -> MultiHostPool<std::decay_t<detail::host_factory_result_t<F, Host>>, F, Host>;

}  // namespace connpool
