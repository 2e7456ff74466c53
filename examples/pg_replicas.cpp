// connpool - pg_replicas: writes to the primary, reads from the standbys, over one pool
// SPDX-License-Identifier: MIT

// A connpool::MultiHostPool over a PostgreSQL primary and its streaming standbys
// (scripts/pg-cluster.sh starts three nodes). A role probe (`SELECT pg_is_in_recovery()`) tells
// the pool which node takes writes, a lag probe how far each standby is behind. Writer threads
// insert through Route::primary, reader threads count through Route::prefer_replica (the
// standbys; the primary only when no standby can serve). The hosts may be listed in any order,
// and after a failover too: the probes find the primary. At the end it waits for a standby to
// have replayed every write of this run, prints where the requests went and the pool's
// MultiHostStats as JSON.
//
// Usage: pg_replicas [conninfo...] [--writes N] [--reads N] [--self-test]
//   conninfos: each argument may hold several, separated by '|'; default
//   $CONNPOOL_PGCLUSTER_CONNINFO ('|'-separated, what test-all.sh sets), else the three nodes of
//   scripts/pg-cluster.sh on 127.0.0.1:54331-54333.
//   --self-test  exit 1 unless every request succeeded, the pool saw one primary and at least
//                one replica, replicas served reads and a replica caught up with the writes

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <connpool/connpool.hpp>

#include "pg_connection.hpp"
#include <unistd.h>

using namespace std::chrono_literals;
using connpool_examples::PgConnection;
using connpool_examples::SessionReset;

namespace {

/// Adds the '|'-separated conninfos of `list` to `out`.
void add_conninfos(std::vector<std::string>& out, const std::string& list) {
  std::istringstream in(list);
  std::string one;
  while (std::getline(in, one, '|')) {
    if (one.find_first_not_of(' ') != std::string::npos) {
      out.push_back(one);
    }
  }
}

/// The role probe: a server in recovery is a standby, one that is not takes writes.
connpool::HostRole role_of(PgConnection& c) {
  return c.scalar("SELECT pg_is_in_recovery()") == "t" ? connpool::HostRole::replica
                                                       : connpool::HostRole::primary;
}

/// The lag probe, run on standbys: how long ago the last replayed transaction committed, while
/// received WAL is still to replay; 0 once everything received is replayed (the positions are
/// null on a primary: COALESCE).
std::chrono::milliseconds lag_of(PgConnection& c) {
  return std::chrono::milliseconds(std::stoll(c.scalar(
      "SELECT COALESCE(CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
      "ELSE (EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint END, "
      "0)")));
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> hosts;
  int writes_per_thread = 200;
  int reads_per_thread = 400;
  bool self_test = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--writes" && i + 1 < argc) {
      writes_per_thread = std::stoi(argv[++i]);
    } else if (arg == "--reads" && i + 1 < argc) {
      reads_per_thread = std::stoi(argv[++i]);
    } else if (arg == "--self-test") {
      self_test = true;
    } else if (arg.starts_with("--")) {
      std::cerr << "usage: pg_replicas [conninfo...] [--writes N] [--reads N] [--self-test]\n";
      return 2;
    } else {
      add_conninfos(hosts, argv[i]);
    }
  }
  if (hosts.empty()) {
    const char* env = std::getenv("CONNPOOL_PGCLUSTER_CONNINFO");
    if (env != nullptr) {
      add_conninfos(hosts, env);
    }
  }
  if (hosts.empty()) {
    for (const int port : {54331, 54332, 54333}) {
      hosts.push_back("host=127.0.0.1 port=" + std::to_string(port) +
                      " user=connpool dbname=connpool connect_timeout=2");
    }
  }

  try {
    connpool::MultiHostOptions options;
    options.per_host.max_size = 4;
    options.per_host.connect_timeout = 2s;
    options.per_host.acquire_timeout = 5s;
    options.per_host.on_error = &PgConnection::classify;
    options.failure_threshold = 2;
    options.cooldown = 1s;
    options.role_probe = &role_of;  // a function or a lambda taking PgConnection&
    options.lag_probe = &lag_of;
    options.role_recheck_interval = 1s;
    options.max_replica_lag = 5s;  // older standbys are left to the primary's readers
    connpool::MultiHostPool pool{
        hosts,
        [](const std::string& conninfo, const connpool::Deadline& deadline) {
          return PgConnection::connect(conninfo, SessionReset::discard_all, deadline);
        },
        options};

    // Each run's rows are told apart by a run number (the table outlives the program).
    const std::string run = std::to_string(
        std::chrono::system_clock::now().time_since_epoch().count() / 1000 + ::getpid());
    pool.acquire(connpool::Route::primary)
        ->command(
            "CREATE TABLE IF NOT EXISTS pg_replicas_demo(id bigserial PRIMARY KEY, run bigint, "
            "writer int)");
    // Replication is asynchronous: a new table reaches the standbys a moment later. (The roles
    // are known here: the routed acquire above waited for the first probe of every host.)
    for (const auto& h : pool.stats().hosts) {
      const auto give_up = std::chrono::steady_clock::now() + 10s;
      while (h.role == connpool::HostRole::replica &&
             pool.acquire(h.host)->scalar("SELECT to_regclass('pg_replicas_demo') IS NULL") ==
                 "t" &&
             std::chrono::steady_clock::now() < give_up) {
        std::this_thread::sleep_for(20ms);
      }
    }

    std::atomic<int> written{0};
    std::atomic<int> reads_on_replicas{0};
    std::atomic<int> reads_on_primary{0};
    std::atomic<int> failed{0};
    {
      std::vector<std::jthread> threads;
      for (int w = 0; w < 2; ++w) {
        threads.emplace_back([&, w] {
          for (int i = 0; i < writes_per_thread; ++i) {
            try {
              auto db = pool.acquire(connpool::Route::primary);
              try {
                db->command("INSERT INTO pg_replicas_demo(run, writer) VALUES (" + run + ", " +
                            std::to_string(w) + ")");
                written.fetch_add(1);
              } catch (...) {
                db.fail(std::current_exception());  // PgConnection::classify decides
                throw;
              }
            } catch (const std::exception& e) {
              failed.fetch_add(1);
              std::cerr << "pg_replicas: write failed: " << e.what() << '\n';
            }
          }
        });
      }
      for (int r = 0; r < 4; ++r) {
        threads.emplace_back([&] {
          for (int i = 0; i < reads_per_thread; ++i) {
            try {
              auto db = pool.acquire(connpool::Route::prefer_replica);
              try {
                const auto row = db->query(
                    "SELECT count(*), pg_is_in_recovery() FROM pg_replicas_demo WHERE run = " +
                    run);
                (row.at(0).at(1) == "t" ? reads_on_replicas : reads_on_primary).fetch_add(1);
              } catch (...) {
                db.fail(std::current_exception());
                throw;
              }
            } catch (const std::exception& e) {
              failed.fetch_add(1);
              std::cerr << "pg_replicas: read failed: " << e.what() << '\n';
            }
          }
        });
      }
    }

    // Asynchronous replication: a standby shows every row of this run a moment later.
    bool caught_up = false;
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    while (!caught_up && std::chrono::steady_clock::now() < give_up) {
      try {
        auto db = pool.acquire(connpool::Route::replica, 2s);
        caught_up = db->scalar("SELECT count(*) FROM pg_replicas_demo WHERE run = " + run) ==
                    std::to_string(written.load());
      } catch (const std::exception& e) {
        std::cerr << "pg_replicas: " << e.what() << '\n';
      }
      if (!caught_up) {
        std::this_thread::sleep_for(50ms);
      }
    }

    const auto stats = pool.stats();
    int primaries = 0;
    int replicas = 0;
    for (const auto& h : stats.hosts) {
      primaries += h.role == connpool::HostRole::primary ? 1 : 0;
      replicas += h.role == connpool::HostRole::replica ? 1 : 0;
      std::cout << h.host << ": " << connpool::to_string(h.role) << ", " << h.pool.acquired
                << " acquires\n";
    }
    std::cout << stats.to_json() << '\n';
    std::cout << written << " writes through Route::primary; reads through "
              << "Route::prefer_replica: " << reads_on_replicas << " on replicas, "
              << reads_on_primary << " on the primary; " << failed << " failed; a replica "
              << (caught_up ? "caught up" : "did NOT catch up") << '\n';
    if (self_test) {
      // Not reads_on_primary == 0: a standby whose lag reading is momentarily over
      // max_replica_lag sends its readers to the primary, by design.
      const bool ok = failed == 0 && primaries == 1 && replicas >= 1 && caught_up &&
                      written == 2 * writes_per_thread && reads_on_replicas > 0;
      std::cout << "self-test: " << (ok ? "ok" : "FAILED") << '\n';
      return ok ? 0 : 1;
    }
    return failed == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "pg_replicas: " << e.what() << '\n';
    return 1;
  }
}
