// connpool - MultiHostOptions and the other value types of MultiHostPool
// SPDX-License-Identifier: MIT
#pragma once

// The plain values a MultiHostPool user names: MultiHostOptions (around PoolOptions from
// options.hpp) with Balance, HealthState, the HostName concept, and the statistics HostStats and
// MultiHostStats (around PoolStats from stats.hpp; detail::add_stats_into makes their total).
// No pool, no lock and no shared state here: the pool and its handle are in
// multi_host_pool.hpp, which includes this header; NoHealthyHost is in errors.hpp.

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
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
  /// "last_error":..,"pool":{PoolStats}}, ...],"total":{PoolStats}}.
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
  /// written once.
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
    return detail::write_prometheus(sources, options);
  }
};

}  // namespace connpool
