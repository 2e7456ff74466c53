// connpool - MultiHostOptions and the other value types of MultiHostPool
// SPDX-License-Identifier: MIT
#pragma once

// The plain values a MultiHostPool user names: MultiHostOptions (around PoolOptions from
// options.hpp) with Balance, HealthState, HostRole, Route and ConnProbe (the role and lag
// probes), the HostName concept, and the statistics HostStats and MultiHostStats (around
// PoolStats from stats.hpp; detail::add_stats_into makes their total).
// No pool, no lock and no shared state here: the pool and its handle are in
// multi_host_pool.hpp, which includes this header; NoHealthyHost is in errors.hpp.

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include <connpool/options.hpp>
#include <connpool/stats.hpp>

namespace connpool {

/// How MultiHostPool picks a host for acquire() among the healthy hosts with spare capacity.
enum class Balance {
  /// In turn: host 0, 1, 2, ... (skipping unavailable ones). Even spread, deterministic order.
  round_robin,
  /// The host with the fewest connections in use through this pool; ties go to the host listed
  /// first. Follows load at once, at the price of reading every host's counter.
  least_in_use,
  /// A host chosen uniformly at random.
  random,
  /// Two distinct hosts chosen at random; the one with fewer connections in use wins
  /// ("the power of two choices", Mitzenmacher; Envoy's and Finagle's default). Nearly as even
  /// as least_in_use while reading two counters only.
  power_of_two_choices,
};

/// The state of a host's circuit breaker.
enum class HealthState {
  closed,     ///< healthy: picked normally
  open,       ///< failed failure_threshold times in a row: skipped until the cooldown is over
  half_open,  ///< cooldown over: one probe acquire is let through; its outcome decides
};

/// "closed", "open" or "half_open".
[[nodiscard]] inline const char* to_string(HealthState s) noexcept {
  switch (s) {
    case HealthState::closed:
      return "closed";
    case HealthState::open:
      return "open";
    case HealthState::half_open:
      return "half_open";
  }
  return "?";
}

/// What a host is in a replicated deployment, as MultiHostOptions::role_probe last found it.
enum class HostRole {
  unknown,  ///< not probed yet, or its last probe failed (the host did not answer)
  primary,  ///< takes writes
  replica,  ///< a read-only standby
};

/// "unknown", "primary" or "replica".
[[nodiscard]] inline const char* to_string(HostRole r) noexcept {
  switch (r) {
    case HostRole::unknown:
      return "unknown";
    case HostRole::primary:
      return "primary";
    case HostRole::replica:
      return "replica";
  }
  return "?";
}

/// Which hosts may serve MultiHostPool::acquire(Route, ...). Within a route the configured
/// Balance picks, and the circuit breakers apply, as for acquire().
enum class Route {
  /// Only hosts whose role is primary (libpq's target_session_attrs=read-write).
  primary,
  /// Only replicas, and with MultiHostOptions::max_replica_lag set only those within it.
  replica,
  /// Replicas as Route::replica; the primary only when no replica can serve: each is down,
  /// circuit-open, paused, failed in this acquire or lagging. Why not when the replicas are
  /// merely busy: spilling reads onto the primary at every busy moment would load the one host
  /// that cannot be scaled out (pgcat's primary_reads_enabled makes the same choice the other
  /// way; this route is for readers that can wait).
  prefer_replica,
  /// Every host, whatever its role: acquire() without a route.
  any,
};

/// "primary", "replica", "prefer_replica" or "any".
[[nodiscard]] inline const char* to_string(Route r) noexcept {
  switch (r) {
    case Route::primary:
      return "primary";
    case Route::replica:
      return "replica";
    case Route::prefer_replica:
      return "prefer_replica";
    case Route::any:
      return "any";
  }
  return "?";
}

namespace detail {

/// The parameter type of a callable with exactly one call signature (a non-generic lambda, a
/// function object, a function pointer, a std::function); no `type` for anything else.
template <class F, class = void>
struct probe_param {};
template <class R, class A>
struct probe_param<R (*)(A), void> {
  using type = A;
};
template <class R, class A>
struct probe_param<R (*)(A) noexcept, void> {
  using type = A;
};
template <class T>
struct member_call_param {};
template <class R, class C, class A>
struct member_call_param<R (C::*)(A)> {
  using type = A;
};
template <class R, class C, class A>
struct member_call_param<R (C::*)(A) const> {
  using type = A;
};
template <class R, class C, class A>
struct member_call_param<R (C::*)(A) noexcept> {
  using type = A;
};
template <class R, class C, class A>
struct member_call_param<R (C::*)(A) const noexcept> {
  using type = A;
};
template <class F>
struct probe_param<F, std::void_t<decltype(&F::operator())>>
    : member_call_param<decltype(&F::operator())> {};

template <class F>
concept HasProbeParam = requires {
  typename probe_param<F>::type;
};

}  // namespace detail

/// A probe that MultiHostPool runs on one of its connections: MultiHostOptions::role_probe
/// (R = HostRole) and lag_probe (R = std::chrono::milliseconds).
///
/// It holds what a std::function<R(Conn&)> would, without naming Conn: MultiHostOptions is one
/// type for every connection type. Any callable with one call signature taking the connection
/// by reference converts to it: a lambda [](Db& c) { ... }, a function pointer, a
/// std::function<R(Db&)>. The pool checks at construction that the parameter is its Conn.
/// A generic lambda ([](auto& c)) has no parameter type to check and is refused at compile time
/// with a message saying so.
///
/// Why type erasure rather than MultiHostOptions<Conn>: the options are a plain aggregate that
/// users name without template arguments (as PoolOptions), and a probe is called once per
/// connect or recheck, where an indirect call costs nothing measurable.
template <class R>
class ConnProbe {
 public:
  /// No probe.
  ConnProbe() noexcept = default;

  /// Holds `f`, to be called as f(conn) on a connection of the type its parameter names.
  template <class F>
  requires(!std::same_as<std::remove_cvref_t<F>, ConnProbe>)
      ConnProbe(F f)  // NOLINT(google-explicit-constructor): assigned like a std::function
  {
    using Fn = std::decay_t<F>;
    static_assert(detail::HasProbeParam<Fn>,
                  "connpool: a MultiHostOptions probe must name its connection type, as in "
                  "[](Db& c) { ... }; a generic lambda ([](auto& c)) cannot be checked against "
                  "the pool's connection type");
    if constexpr (detail::HasProbeParam<Fn>) {
      using Param = typename detail::probe_param<Fn>::type;
      static_assert(std::is_lvalue_reference_v<Param>,
                    "connpool: a MultiHostOptions probe takes the connection by reference, as "
                    "in [](Db& c) { ... }");
      using C = std::remove_cvref_t<Param>;
      static_assert(std::is_convertible_v<std::invoke_result_t<Fn&, C&>, R>,
                    "connpool: role_probe must return a connpool::HostRole, lag_probe a "
                    "std::chrono duration");
      type_ = &typeid(C);
      call_ = [fn = Fn(std::move(f))](void* conn) mutable -> R {
        return static_cast<R>(fn(*static_cast<C*>(conn)));
      };
    }
  }

  /// Whether a probe is set.
  explicit operator bool() const noexcept { return static_cast<bool>(call_); }

  /// Whether the probe takes a `Conn&`. False when no probe is set.
  template <class Conn>
  [[nodiscard]] bool takes() const noexcept {
    return type_ != nullptr && *type_ == typeid(Conn);
  }

  /// Runs the probe on `conn`. Precondition: takes<Conn>().
  /// Throws: what the probe throws.
  template <class Conn>
  R operator()(Conn& conn) const {
    return call_(static_cast<void*>(std::addressof(conn)));
  }

 private:
  std::function<R(void*)> call_;          // the user's callable, casting back to its parameter
  const std::type_info* type_ = nullptr;  // the connection type it takes; null when empty
};

/// The settings of a MultiHostPool.
struct MultiHostOptions {
  /// The options of each host's ConnectionPool (max_size is per host). per_host.acquire_timeout
  /// is also the default timeout of MultiHostPool::acquire(). per_host.max_connect_backoff is
  /// ignored: the circuit breaker below takes its place (see detail::HostEntry::host_options).
  /// Default PoolOptions{}.
  PoolOptions per_host{};

  /// How acquire() picks a host. Default Balance::round_robin.
  Balance balance = Balance::round_robin;

  /// Consecutive failures (connect errors, failed pings, invalidated handles) that open a
  /// host's circuit. Default 5 (Envoy's consecutive_5xx outlier detection). Must be >= 1.
  std::size_t failure_threshold = 5;

  /// How long an open circuit skips its host before one probe is let through. Default 5 s
  /// (Hystrix's sleep window). 0 = probe at the next acquire. Must be >= 0.
  std::chrono::milliseconds cooldown{5'000};

  /// What a host is, probed on a connection of it: e.g. for PostgreSQL
  /// `SELECT pg_is_in_recovery()` (true: replica). Set, it makes the hosts' roles known and
  /// acquire(Route, ...) usable. It runs on every new connection (before the connection is
  /// handed out; an exception fails the connect) and on one connection of each host every
  /// role_recheck_interval; a host's role is the last probe's answer (HostStats::role), and
  /// HostRole::unknown while the host cannot be reached. Takes the pool's Conn by reference (see
  /// ConnProbe). Default: none (every host unknown; only acquire() and Route::any serve).
  ConnProbe<HostRole> role_probe{};

  /// How often the roles are probed again, on a thread of the pool's own; also at once after a
  /// host's circuit opens, and (at most once a second) when an acquire finds no host of its
  /// route. So a promotion is seen without a restart. Default 5 s. Must be > 0.
  std::chrono::milliseconds role_recheck_interval{5'000};

  /// Replicas whose lag_probe answer exceeds this are skipped by Route::replica and
  /// Route::prefer_replica (and so is a replica whose lag could not be read). 0 = not checked.
  /// Needs lag_probe. Default 0.
  std::chrono::milliseconds max_replica_lag{0};

  /// How far a replica is behind its primary, probed with the role on each replica's
  /// connections: e.g. for PostgreSQL the time since the last replayed transaction while WAL is
  /// still to replay (examples/pg_replicas.cpp). Takes the pool's Conn by reference. Its answer
  /// is HostStats::replica_lag. Default: none.
  ConnProbe<std::chrono::milliseconds> lag_probe{};

  /// Throws std::invalid_argument naming the first field that is out of range.
  void validate() const {
    per_host.validate();
    if (failure_threshold == 0) {
      throw std::invalid_argument(
          "connpool: MultiHostOptions::failure_threshold must be at least 1 (got 0)");
    }
    if (cooldown.count() < 0) {
      throw std::invalid_argument(
          "connpool: MultiHostOptions::cooldown must not be negative (got " +
          std::to_string(cooldown.count()) + " ms)");
    }
    if (role_recheck_interval.count() <= 0) {
      throw std::invalid_argument(
          "connpool: MultiHostOptions::role_recheck_interval must be positive (got " +
          std::to_string(role_recheck_interval.count()) + " ms)");
    }
    if (max_replica_lag.count() < 0) {
      throw std::invalid_argument(
          "connpool: MultiHostOptions::max_replica_lag must not be negative (got " +
          std::to_string(max_replica_lag.count()) + " ms)");
    }
    if (max_replica_lag.count() > 0 && !lag_probe) {
      throw std::invalid_argument(
          "connpool: MultiHostOptions::max_replica_lag needs a lag_probe to measure the lag");
    }
    if (lag_probe && !role_probe) {
      throw std::invalid_argument(
          "connpool: MultiHostOptions::lag_probe needs a role_probe (the lag is probed on "
          "replicas only)");
    }
  }
};

/// What a host type needs: comparison (to find a host) and a printable form (for error messages
/// and statistics): convertible to std::string_view, or writable to a std::ostream.
template <class H>
concept HostName = std::copy_constructible<H> && std::equality_comparable<H> &&
    (std::convertible_to<const H&, std::string_view> ||
     requires(std::ostream & os, const H& h) { os << h; });

/// The printable form of a host: itself when it converts to std::string_view, else what
/// operator<< writes.
template <HostName Host>
[[nodiscard]] std::string host_to_string(const Host& host) {
  if constexpr (std::convertible_to<const Host&, std::string_view>) {
    return std::string(std::string_view(host));
  } else {
    std::ostringstream out;
    out << host;
    return out.str();
  }
}

/// The statistics of one host of a MultiHostPool.
template <class Host>
struct HostStats {
  Host host;                                ///< the host
  PoolStats pool;                           ///< its ConnectionPool's statistics
  HealthState state = HealthState::closed;  ///< its circuit breaker
  std::size_t consecutive_failures = 0;     ///< failures since its last success
  std::string last_error;                   ///< what its last failure said ("" if none yet)
  bool paused = false;                      ///< pause_host() or drain_host() is in force
  HostRole role = HostRole::unknown;        ///< the last role probe's answer
  /// The last lag_probe answer on this replica; empty when it is not a replica, no lag_probe
  /// is set, or the probe failed.
  std::optional<std::chrono::milliseconds> replica_lag;
};

namespace detail {

/// Adds `s` into `t`, as MultiHostStats::total sums its hosts: each counter, histogram and
/// gauge added, max_wait_time the larger of the two; the name is theirs (every host's pool has
/// MultiHostOptions::per_host's).
inline void add_stats_into(PoolStats& t, const PoolStats& s) {
  t.name = s.name;
  t.created += s.created;
  t.closed += s.closed;
  t.acquired += s.acquired;
  t.reused += s.reused;
  t.released += s.released;
  t.waited += s.waited;
  t.timeouts += s.timeouts;
  t.rejected += s.rejected;
  t.validation_failures += s.validation_failures;
  t.create_failures += s.create_failures;
  t.close_failures += s.close_failures;
  t.detached += s.detached;
  t.leaks += s.leaks;
  t.total_wait_time += s.total_wait_time;
  t.max_wait_time = std::max(t.max_wait_time, s.max_wait_time);
  for (std::size_t i = 0; i < t.closed_by_reason.size(); ++i) {
    t.closed_by_reason[i] += s.closed_by_reason[i];
  }
  t.wait_time += s.wait_time;
  t.use_time += s.use_time;
  t.create_time += s.create_time;
  t.idle += s.idle;
  t.in_use += s.in_use;
  t.pending += s.pending;
  t.connecting += s.connecting;
  t.min_size += s.min_size;
  t.max_size += s.max_size;
}

}  // namespace detail

/// A snapshot of a MultiHostPool's statistics: each current host (in order; removed hosts are
/// left out) and their sum.
template <class Host>
struct MultiHostStats {
  std::vector<HostStats<Host>> hosts;
  /// The sum over `hosts` of each counter and gauge (max_size included); max_wait_time is the
  /// largest of theirs.
  PoolStats total;

  /// One JSON object: {"hosts":[{"host":..,"state":..,"consecutive_failures":..,
  /// "last_error":..,"paused":..,"role":..,"replica_lag_ms":..|null,"pool":{PoolStats}}, ...],
  /// "total":{PoolStats}}.
  [[nodiscard]] std::string to_json() const {
    std::string out = "{\"hosts\":[";
    bool first = true;
    for (const HostStats<Host>& h : hosts) {
      if (!first) {
        out += ',';
      }
      first = false;
      out += "{\"host\":";
      detail::append_json_string(out, host_to_string(h.host));
      out += ",\"state\":\"";
      out += to_string(h.state);
      out += "\",\"consecutive_failures\":";
      out += std::to_string(h.consecutive_failures);
      out += ",\"last_error\":";
      detail::append_json_string(out, h.last_error);
      out += ",\"paused\":";
      out += h.paused ? "true" : "false";
      out += ",\"role\":\"";
      out += to_string(h.role);
      out += "\",\"replica_lag_ms\":";
      out += h.replica_lag ? std::to_string(h.replica_lag->count()) : std::string("null");
      out += ",\"pool\":";
      out += h.pool.to_json();
      out += '}';
    }
    out += "],\"total\":";
    out += total.to_json();
    out += '}';
    return out;
  }

  /// Every host's figures in the Prometheus text of PoolStats::to_prometheus(), each sample
  /// labelled with its host (host="<host>", after db_client_connection_pool_name), each family
  /// written once; then the hosts' own families:
  ///   connpool_host_role{role="primary"|"replica"|"unknown"}   1 for the host's role, else 0
  ///   connpool_host_circuit_state{state="closed"|"open"|"half_open"}   1 for its breaker's state
  ///   connpool_host_consecutive_failures                       failures since its last success
  ///   connpool_host_replica_lag_seconds                        for hosts with a lag reading
  /// (the enum-as-label pattern: a query can select the primary with role="primary" == 1).
  /// Throws: std::invalid_argument, as PoolStats::to_prometheus().
  [[nodiscard]] std::string to_prometheus(const PrometheusOptions& options = {}) const {
    std::vector<std::string> names;
    names.reserve(hosts.size());
    for (const HostStats<Host>& h : hosts) {
      names.push_back(host_to_string(h.host));
    }
    std::vector<detail::PrometheusSource> sources;
    sources.reserve(hosts.size());
    for (std::size_t i = 0; i < hosts.size(); ++i) {
      sources.push_back({&hosts[i].pool, &names[i]});
    }
    std::string out = detail::write_prometheus(sources, options);  // checks options.labels
    // The label text of host i (pool name, host, the user's labels), without the braces.
    auto labels_of = [&](std::size_t i) {
      std::string l;
      detail::append_prometheus_label(l, detail::prometheus_pool_label, hosts[i].pool.name);
      detail::append_prometheus_label(l, "host", names[i]);
      for (const auto& [name, value] : options.labels) {
        detail::append_prometheus_label(l, name, value);
      }
      return l;
    };
    auto family = [&](const char* name, const char* help) {
      if (options.with_help) {
        out.append("# HELP ").append(name).append(" ").append(help).append("\n");
        out.append("# TYPE ").append(name).append(" gauge\n");
      }
    };
    auto sample = [&](const char* name, std::size_t i, std::string_view extra,
                      const std::string& value) {
      out.append(name).append("{").append(labels_of(i));
      if (!extra.empty()) {
        out.append(",").append(extra);
      }
      out.append("} ").append(value).append("\n");
    };
    family("connpool_host_role",
           "The host's role as its role probe last found it: 1 for that role, 0 for the others.");
    for (std::size_t i = 0; i < hosts.size(); ++i) {
      for (const HostRole r : {HostRole::primary, HostRole::replica, HostRole::unknown}) {
        sample("connpool_host_role", i, std::string("role=\"") + to_string(r) + "\"",
               hosts[i].role == r ? "1" : "0");
      }
    }
    family("connpool_host_circuit_state",
           "The state of the host's circuit breaker: 1 for that state, 0 for the others.");
    for (std::size_t i = 0; i < hosts.size(); ++i) {
      for (const HealthState st :
           {HealthState::closed, HealthState::open, HealthState::half_open}) {
        sample("connpool_host_circuit_state", i, std::string("state=\"") + to_string(st) + "\"",
               hosts[i].state == st ? "1" : "0");
      }
    }
    family("connpool_host_consecutive_failures",
           "Failures on the host since its last success (its breaker's count).");
    for (std::size_t i = 0; i < hosts.size(); ++i) {
      sample("connpool_host_consecutive_failures", i, {},
             std::to_string(hosts[i].consecutive_failures));
    }
    bool any_lag = false;
    for (const HostStats<Host>& h : hosts) {
      any_lag = any_lag || h.replica_lag.has_value();
    }
    if (any_lag) {
      family("connpool_host_replica_lag_seconds",
             "How far the replica is behind its primary, as its lag probe last found it.");
      for (std::size_t i = 0; i < hosts.size(); ++i) {
        if (hosts[i].replica_lag) {
          sample("connpool_host_replica_lag_seconds", i, {},
                 detail::prometheus_seconds(*hosts[i].replica_lag));
        }
      }
    }
    return out;
  }
};

}  // namespace connpool
