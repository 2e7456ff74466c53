// connpool - tests: fake servers with roles, for the role-aware multi-host pools
// SPDX-License-Identifier: MIT
#pragma once

// Fake servers by name, each with a role and a lag the test sets (as a failover or a paused
// replay would), answered by the probes through the connection; a Cluster of them and its
// factory; the options and look-ups the roles tests share (MultiHostPool's in
// multi_host_roles_test.cpp, AsyncMultiHostPool's in async_multi_host_test.cpp).

#include <atomic>
#include <chrono>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <connpool/multi_host_options.hpp>
#include <connpool/stats.hpp>

#include "sync.hpp"

namespace connpool_test {

/// One fake server: its role and lag, whether it accepts connects, and what happened to it.
struct Server {
  std::atomic<connpool::HostRole> role{connpool::HostRole::replica};
  std::atomic<long long> lag_ms{0};
  std::atomic<bool> down{false};             // connects throw
  std::atomic<bool> probe_throws{false};     // role probes throw
  std::atomic<bool> lag_throws{false};       // lag probes throw
  std::atomic<Gate*> connect_gate{nullptr};  // set: connects wait for it to open
  std::atomic<bool> in_connect{false};       // a connect waits at connect_gate
  std::atomic<int> connects{0};
  std::atomic<int> closes{0};
  std::atomic<int> role_probes{0};
  std::atomic<int> lag_probes{0};
};

/// A connection to a Server.
class RoleConn {
 public:
  RoleConn(std::string host, Server* s) : host_(std::move(host)), server_(s) {}
  RoleConn(RoleConn&& o) noexcept
      : host_(std::move(o.host_)), server_(std::exchange(o.server_, nullptr)) {}
  RoleConn& operator=(RoleConn&&) = delete;
  RoleConn(const RoleConn&) = delete;
  RoleConn& operator=(const RoleConn&) = delete;
  ~RoleConn() = default;

  void close() {
    if (server_ != nullptr) {
      server_->closes.fetch_add(1);
    }
  }
  [[nodiscard]] const std::string& host() const noexcept { return host_; }
  [[nodiscard]] Server& server() const noexcept { return *server_; }

 private:
  std::string host_;
  Server* server_;
};

inline connpool::HostRole probe_role(RoleConn& c) {
  Server& s = c.server();
  s.role_probes.fetch_add(1);
  if (s.probe_throws.load()) {
    throw std::runtime_error("probe: server gone away");
  }
  return s.role.load();
}

inline std::chrono::milliseconds probe_lag(RoleConn& c) {
  Server& s = c.server();
  s.lag_probes.fetch_add(1);
  if (s.lag_throws.load()) {
    throw std::runtime_error("lag probe: no replay timestamp");
  }
  return std::chrono::milliseconds(s.lag_ms.load());
}

/// Servers by name; the first is the primary, the others replicas. Declare before the pool.
class Cluster {
 public:
  explicit Cluster(const std::vector<std::string>& names) {
    for (const auto& n : names) {
      servers_.emplace(n, std::make_unique<Server>());
    }
    (*this)[names.front()].role = connpool::HostRole::primary;
  }
  Server& operator[](const std::string& name) { return *servers_.at(name); }

  /// `to` becomes the primary, every other live server a replica (as a promotion does).
  void promote(const std::string& to) {
    for (auto& [name, s] : servers_) {
      s->role = name == to ? connpool::HostRole::primary : connpool::HostRole::replica;
    }
  }

  struct Factory {
    Cluster* cluster;
    RoleConn operator()(const std::string& host) const {
      Server& s = (*cluster)[host];
      if (s.down.load()) {
        throw std::runtime_error("connection refused: " + host);
      }
      if (Gate* g = s.connect_gate.load()) {
        s.in_connect = true;
        (void)g->wait();
      }
      s.connects.fetch_add(1);
      return RoleConn(host, &s);
    }
  };
  Factory factory() { return Factory{this}; }

 private:
  std::map<std::string, std::unique_ptr<Server>> servers_;
};

inline connpool::MultiHostOptions role_options(std::size_t min_size = 1) {
  connpool::MultiHostOptions o;
  o.per_host.min_size = min_size;
  o.per_host.max_size = 4;
  o.per_host.health_check_interval = std::chrono::milliseconds(0);
  o.per_host.validate_on_acquire = false;
  o.failure_threshold = 2;
  o.cooldown = std::chrono::seconds(10);
  o.role_probe = probe_role;
  o.role_recheck_interval =
      std::chrono::hours(1);  // the tests ask for passes, unless they say otherwise
  return o;
}

/// The statistics of `host`.
template <class Pool>
connpool::HostStats<std::string> host_stats(const Pool& pool, const std::string& host) {
  for (const auto& h : pool.stats().hosts) {
    if (h.host == host) {
      return h;
    }
  }
  throw std::logic_error("no such host: " + host);
}

template <class Pool>
connpool::HostRole role_of(const Pool& pool, const std::string& host) {
  return host_stats(pool, host).role;
}

template <class Pool>
std::optional<std::chrono::milliseconds> lag_of(const Pool& pool, const std::string& host) {
  return host_stats(pool, host).replica_lag;
}

template <class F>
std::string message_of(F f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace connpool_test
