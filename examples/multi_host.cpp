// connpool - multi_host: one pool over three replicas, with failover and circuit breakers
// SPDX-License-Identifier: MIT

// Three in-process "replicas" stand in for database hosts. The program balances requests over
// them with power_of_two_choices, takes one replica down (its connects, pings and queries
// fail), shows the requests moving to the other two without a failed request,
// brings the replica back and waits for its circuit to close again. It ends by printing the
// pool's MultiHostStats as JSON, and exits with 1 if any request failed.

#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>

#include <connpool/connpool.hpp>

using namespace std::chrono_literals;

namespace {

/// Whether each replica is up; connects and queries to a down replica fail.
std::map<std::string, std::atomic<bool>> replica_up;

struct Db {
  std::string host;
  std::string query(const std::string& sql) const {
    if (!replica_up.at(host).load()) {
      throw std::runtime_error("connection reset by " + host);
    }
    return host + ": " + sql;
  }
  bool ping() const { return replica_up.at(host).load(); }
};

struct Connect {
  Db operator()(const std::string& host) const {
    if (!replica_up.at(host).load()) {
      throw std::runtime_error("connect to " + host + " refused");
    }
    return Db{host};
  }
};

}  // namespace

int main() {
  const std::vector<std::string> hosts{"replica-1", "replica-2", "replica-3"};
  for (const auto& h : hosts) {
    replica_up[h] = true;
  }
  connpool::MultiHostPool<Db, Connect> pool{
      hosts, Connect{},
      connpool::MultiHostOptions{
          .per_host = {.max_size = 4, .health_check_interval = 0ms, .validation_bypass = 0ms},
          .balance = connpool::Balance::power_of_two_choices,
          .failure_threshold = 2,
          .cooldown = 200ms}};

  int failed = 0;
  auto run = [&](int requests) {
    std::map<std::string, int> served;
    for (int i = 0; i < requests; ++i) {
      auto db = pool.acquire(1s);
      try {
        (void)db->query("SELECT 1");
        ++served[db.host()];
      } catch (const std::exception&) {
        db.invalidate();  // counts against the host's circuit breaker
        ++failed;
      }
    }
    for (const auto& [host, n] : served) {
      std::cout << "  " << host << ": " << n << '\n';
    }
  };

  std::cout << "all replicas up:\n";
  run(300);
  replica_up["replica-2"] = false;
  std::cout << "replica-2 down:\n";
  run(300);
  replica_up["replica-2"] = true;
  std::this_thread::sleep_for(250ms);  // past the cooldown: the next pick probes replica-2
  std::cout << "replica-2 back, after the cooldown:\n";
  run(300);

  std::cout << pool.stats().to_json() << '\n';
  std::cout << (failed == 0 ? "ok" : "FAILED") << ": " << failed << " failed requests\n";
  return failed == 0 ? 0 : 1;
}
