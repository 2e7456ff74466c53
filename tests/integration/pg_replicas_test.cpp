// connpool - integration tests: a role-aware MultiHostPool over a PostgreSQL primary and two
// streaming standbys, with a failover and a lagging replica
// SPDX-License-Identifier: MIT

// The cluster comes from CONNPOOL_PGCLUSTER_CONNINFO: the three nodes' conninfos, node 0 first,
// joined by '|' (scripts/pg-cluster.sh start prints them; test-all.sh does it for you). When the
// variable is unset the whole binary is skipped (exit code 77, which CTest reports as skipped),
// unless CONNPOOL_REQUIRE_SERVERS=1, when that is a failure (CI sets it).
// CONNPOOL_PGCLUSTER_SCRIPT names scripts/pg-cluster.sh. Every test case that changes the
// cluster (a failover, a paused replay) starts from a fresh one (`stop`, then `start`): each CI
// preset runs this binary against the same cluster, which the previous run left failed over.
// Without the script those cases are skipped with a warning, and the others use the cluster as
// they find it.

#define CATCH_CONFIG_RUNNER

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "integration_main.hpp"
#include "pg_connection.hpp"
#include "sync.hpp"
#include <sys/wait.h>

using namespace std::chrono_literals;
using connpool::HostRole;
using connpool::Route;
using connpool_examples::PgConnection;
using connpool_examples::SessionReset;
using Clock = std::chrono::steady_clock;

namespace {

// --- The cluster --------------------------------------------------------------------------

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

/// `s` cut at each `sep`, each piece without surrounding blanks; empty pieces are dropped.
std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string piece;
  std::istringstream in(s);
  while (std::getline(in, piece, sep)) {
    const auto first = piece.find_first_not_of(" \t\r\n");
    if (first == std::string::npos) {
      continue;
    }
    const auto last = piece.find_last_not_of(" \t\r\n");
    out.push_back(piece.substr(first, last - first + 1));
  }
  return out;
}

/// The conninfos of CONNPOOL_PGCLUSTER_CONNINFO, node 0 first.
std::vector<std::string> env_nodes() {
  return split(env_or_empty("CONNPOOL_PGCLUSTER_CONNINFO"), '|');
}

/// CONNPOOL_PGCLUSTER_SCRIPT (scripts/pg-cluster.sh), or "" when not set.
std::string cluster_script() {
  return env_or_empty("CONNPOOL_PGCLUSTER_SCRIPT");
}

/// Runs `command` through the shell: its standard output, and its exit status in `status`
/// (-1 when it did not exit normally).
std::string shell_output(const std::string& command, int& status) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) {
    status = -1;
    return out;
  }
  char buf[512];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
    out.append(buf, n);
  }
  const int rc = ::pclose(p);
  status = rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  return out;
}

/// Runs `pg-cluster.sh <args>`; its output. Fails the test case when it fails.
std::string cluster_command(const std::string& args) {
  int status = 0;
  const std::string out = shell_output("'" + cluster_script() + "' " + args, status);
  INFO("pg-cluster.sh " << args << " printed: " << out);
  REQUIRE(status == 0);
  return out;
}

/// A fresh cluster: every node stopped and removed, then a new primary (node 0) and two
/// streaming standbys (nodes 1, 2). Returns their conninfos, node 0 first.
std::vector<std::string> fresh_cluster() {
  (void)cluster_command("stop");
  const std::vector<std::string> nodes = split(cluster_command("start"), '\n');
  REQUIRE(nodes.size() == 3);
  return nodes;
}

// --- The pool -----------------------------------------------------------------------------

/// The factory: a host is a conninfo.
struct Connect {
  PgConnection operator()(const std::string& conninfo, const connpool::Deadline& d) const {
    return PgConnection::connect(conninfo, SessionReset::discard_all, d);
  }
};

using ClusterPool = connpool::MultiHostPool<PgConnection, Connect>;

/// The role probe: a server in recovery is a standby.
HostRole probe_role(PgConnection& c) {
  return c.scalar("SELECT pg_is_in_recovery()") == "t" ? HostRole::replica : HostRole::primary;
}

/// The lag probe: how long ago the last replayed transaction committed, while WAL received is
/// still to replay; 0 when the replica has replayed all it received (and on a primary, where
/// both positions are null).
std::chrono::milliseconds probe_lag(PgConnection& c) {
  return std::chrono::milliseconds(std::stoll(c.scalar(
      "SELECT COALESCE(CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
      "ELSE (EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint END, "
      "0)")));
}

connpool::MultiHostOptions cluster_options() {
  connpool::MultiHostOptions o;
  o.per_host.max_size = 4;
  o.per_host.health_check_interval = 0ms;
  o.per_host.connect_timeout = 2s;
  o.per_host.acquire_timeout = 5s;
  o.role_probe = &probe_role;
  o.lag_probe = &probe_lag;
  return o;
}

/// The index of `host` in `nodes`; nodes.size() when absent.
std::size_t node_of(const std::vector<std::string>& nodes, const std::string& host) {
  return static_cast<std::size_t>(std::find(nodes.begin(), nodes.end(), host) - nodes.begin());
}

/// Each host's role, in the pool's order.
std::vector<HostRole> roles_of(const ClusterPool& pool) {
  std::vector<HostRole> out;
  for (const auto& h : pool.stats().hosts) {
    out.push_back(h.role);
  }
  return out;
}

template <class Pool>
std::string roles_text(const Pool& pool) {
  std::string out;
  for (const auto& h : pool.stats().hosts) {
    out += std::string(out.empty() ? "" : ", ") + connpool::to_string(h.role) + " (" +
           connpool::to_string(h.state) + ", lag " +
           (h.replica_lag ? std::to_string(h.replica_lag->count()) + " ms" : std::string("-")) +
           ", last error: " + h.last_error + ")";
  }
  return out;
}

double ms_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

/// Sets `flag` when destroyed: declared after the threads that watch it, it ends them before
/// they are joined, also when a REQUIRE throws.
class StopOnExit {
 public:
  explicit StopOnExit(std::atomic<bool>& flag) noexcept : flag_(flag) {}
  StopOnExit(const StopOnExit&) = delete;
  StopOnExit& operator=(const StopOnExit&) = delete;
  ~StopOnExit() { flag_.store(true); }

 private:
  std::atomic<bool>& flag_;
};

}  // namespace

TEST_CASE("PostgreSQL cluster: roles are detected and each route lands on its kind of node",
          "[integration][pgcluster][roles]") {
  const std::vector<std::string> nodes = cluster_script().empty() ? env_nodes() : fresh_cluster();
  REQUIRE(nodes.size() == 3);
  ClusterPool pool{nodes, Connect{}, cluster_options()};

  // The first recheck pass runs at once: one primary and two replicas.
  const bool known = connpool_test::eventually([&] {
    const auto r = roles_of(pool);
    return std::count(r.begin(), r.end(), HostRole::primary) == 1 &&
           std::count(r.begin(), r.end(), HostRole::replica) == 2;
  });
  INFO("roles: " << roles_text(pool));
  REQUIRE(known);
  const auto stats = pool.stats();
  std::size_t primary = nodes.size();
  for (std::size_t i = 0; i < stats.hosts.size(); ++i) {
    CHECK(stats.hosts[i].host == nodes[i]);
    if (stats.hosts[i].role == HostRole::primary) {
      primary = i;
      CHECK_FALSE(stats.hosts[i].replica_lag.has_value());  // probed on replicas only
    } else {
      CHECK(stats.hosts[i].replica_lag.has_value());
    }
  }
  if (!cluster_script().empty()) {
    CHECK(primary == 0);  // a fresh cluster
  }
  CHECK(stats.to_json().find("\"role\":\"primary\"") != std::string::npos);
  CHECK(stats.to_json().find("\"role\":\"replica\"") != std::string::npos);

  int wrong = 0;
  for (int i = 0; i < 200; ++i) {
    auto h = pool.acquire(Route::primary, 5s);
    wrong += h->scalar("SELECT pg_is_in_recovery()") == "f" ? 0 : 1;
    wrong += node_of(nodes, h.host()) == primary ? 0 : 1;
  }
  CHECK(wrong == 0);

  std::set<std::size_t> replicas_used;
  for (int i = 0; i < 200; ++i) {
    auto h = pool.acquire(Route::replica, 5s);
    wrong += h->scalar("SELECT pg_is_in_recovery()") == "t" ? 0 : 1;
    replicas_used.insert(node_of(nodes, h.host()));
  }
  CHECK(wrong == 0);
  CHECK(replicas_used.size() == 2);
  CHECK(replicas_used.count(primary) == 0);

  for (int i = 0; i < 200; ++i) {
    auto h = pool.acquire(Route::prefer_replica, 5s);
    wrong += h->scalar("SELECT pg_is_in_recovery()") == "t" ? 0 : 1;
  }
  CHECK(wrong == 0);

  std::set<std::size_t> any_used;
  for (int i = 0; i < 30; ++i) {
    auto h = pool.acquire(Route::any, 5s);
    CHECK(h->scalar("SELECT 40 + 2") == "42");
    any_used.insert(node_of(nodes, h.host()));
  }
  CHECK(any_used.size() == 3);  // round_robin over every host, whatever its role

  auto t = pool.try_acquire(Route::replica);
  REQUIRE(t.has_value());
  CHECK((*t)->scalar("SELECT pg_is_in_recovery()") == "t");
}

TEST_CASE("PostgreSQL cluster: a failover moves the writes to the promoted standby",
          "[integration][pgcluster][failover]") {
  if (cluster_script().empty()) {
    WARN("CONNPOOL_PGCLUSTER_SCRIPT is not set: the failover test is skipped");
    return;
  }
  const std::vector<std::string> nodes = fresh_cluster();
  {
    PgConnection admin = PgConnection::connect(nodes[0]);
    admin.command("CREATE TABLE IF NOT EXISTS writes(id bigint primary key)");
  }
  // The readers' table must exist on the standbys before they start.
  for (std::size_t n = 1; n < 3; ++n) {
    PgConnection standby = PgConnection::connect(nodes[n]);
    REQUIRE(connpool_test::eventually(
        [&] { return standby.scalar("SELECT to_regclass('writes') IS NOT NULL") == "t"; }));
  }

  connpool::MultiHostOptions o = cluster_options();
  o.failure_threshold = 2;
  o.cooldown = 1s;
  o.role_recheck_interval = 1s;
  ClusterPool pool{nodes, Connect{}, o};

  enum class Outcome { committed, acquire_failed, insert_failed };
  struct Write {
    Clock::time_point at;  // when the outcome was known
    std::int64_t id;
    Outcome outcome;
    std::size_t node;  // where it was sent; nodes.size() when the acquire failed
  };
  struct WriterLog {
    std::vector<Write> writes;
    std::vector<std::string> no_healthy_host;  // the first few NoHealthyHost messages
    std::map<std::string, int> errors;         // what failed, by message
  };
  struct ReaderLog {
    std::vector<Clock::time_point> ok;
    int failed = 0;
    std::map<std::string, int> errors;
  };
  std::vector<WriterLog> writer_logs(4);
  std::vector<ReaderLog> reader_logs(4);
  // The pool's view of node 1 every 20 ms: its role, and whether all its connections were out.
  struct Sample {
    Clock::time_point at;
    HostRole role;
    bool full;
  };
  std::vector<Sample> samples;
  std::atomic<bool> stop{false};
  Clock::time_point stop_begin;  // pg-cluster.sh stop-primary started
  Clock::time_point stopped;     // ... and returned: the primary is down
  // pg-cluster.sh promote 1 started, and returned (pg_ctl promote -w, then node 2 told to
  // follow node 1: the promotion itself happens in between, often a second before the return).
  Clock::time_point promote_begin;
  Clock::time_point promoted;
  Clock::time_point traffic_end;
  const auto traffic_start = Clock::now();
  {
    std::vector<std::jthread> threads;
    // Destroyed before `threads`: a failed REQUIRE below ends the traffic before the joins.
    const StopOnExit stop_on_exit{stop};
    for (std::size_t w = 0; w < writer_logs.size(); ++w) {
      threads.emplace_back([&, w] {
        WriterLog& log = writer_logs[w];
        for (std::int64_t seq = 0; !stop.load(); ++seq) {
          const std::int64_t id = static_cast<std::int64_t>(w + 1) * 1'000'000'000 + seq;
          std::size_t node = nodes.size();
          try {
            auto h = pool.acquire(Route::primary, 2s);
            try {
              node = node_of(nodes, h.host());
              h->command("INSERT INTO writes VALUES (" + std::to_string(id) + ")");
            } catch (...) {
              h.invalidate();
              throw;
            }
            log.writes.push_back({Clock::now(), id, Outcome::committed, node});
            continue;
          } catch (const connpool::NoHealthyHost& e) {
            if (log.no_healthy_host.size() < 3) {
              log.no_healthy_host.emplace_back(e.what());
            }
            ++log.errors["NoHealthyHost"];
          } catch (const std::exception& e) {
            ++log.errors[e.what()];
          }
          const bool sent = node != nodes.size();
          log.writes.push_back(
              {Clock::now(), id, sent ? Outcome::insert_failed : Outcome::acquire_failed, node});
          std::this_thread::sleep_for(10ms);  // no busy loop while there is no primary
        }
      });
    }
    for (std::size_t r = 0; r < reader_logs.size(); ++r) {
      threads.emplace_back([&, r] {
        ReaderLog& log = reader_logs[r];
        while (!stop.load()) {
          try {
            auto h = pool.acquire(Route::prefer_replica, 2s);
            try {
              (void)h->scalar("SELECT count(*) FROM writes");
            } catch (...) {
              h.invalidate();
              throw;
            }
            log.ok.push_back(Clock::now());
            continue;
          } catch (const std::exception& e) {
            ++log.failed;
            ++log.errors[e.what()];
          }
          std::this_thread::sleep_for(10ms);
        }
      });
    }
    threads.emplace_back([&] {
      while (!stop.load()) {
        const auto h = pool.stats().hosts.at(1);
        samples.push_back({Clock::now(), h.role, h.pool.in_use >= h.pool.max_size});
        std::this_thread::sleep_for(20ms);
      }
    });
    std::this_thread::sleep_for(1500ms);
    stop_begin = Clock::now();
    (void)cluster_command("stop-primary");
    stopped = Clock::now();
    std::this_thread::sleep_for(1s);
    promote_begin = Clock::now();
    (void)cluster_command("promote 1");
    promoted = Clock::now();
    std::this_thread::sleep_for(6s);
    traffic_end = Clock::now();
  }  // stop, and join the threads

  // --- The writes ---------------------------------------------------------------------------
  std::vector<Write> writes;
  std::map<std::string, int> write_errors;
  std::vector<std::string> no_healthy_host;
  for (const WriterLog& log : writer_logs) {
    writes.insert(writes.end(), log.writes.begin(), log.writes.end());
    for (const auto& [what, n] : log.errors) {
      write_errors[what] += n;
    }
    no_healthy_host.insert(no_healthy_host.end(), log.no_healthy_host.begin(),
                           log.no_healthy_host.end());
  }
  std::sort(writes.begin(), writes.end(),
            [](const Write& a, const Write& b) { return a.at < b.at; });
  std::string errors_text;
  for (const auto& [what, n] : write_errors) {
    errors_text += "\n  " + std::to_string(n) + " x " + what;
  }
  INFO("write errors:" << errors_text);
  INFO("roles now: " << roles_text(pool));

  const auto committed_before_stop = std::count_if(
      writes.begin(), writes.end(),
      [&](const Write& w) { return w.outcome == Outcome::committed && w.at < stop_begin; });
  CHECK(committed_before_stop > 0);
  // Writes failed after the stop.
  const auto failed_after_stop = std::count_if(writes.begin(), writes.end(), [&](const Write& w) {
    return w.outcome != Outcome::committed && w.at >= stop_begin;
  });
  CHECK(failed_after_stop > 0);
  // NoHealthyHost names the route and each host's role (node 0's is still primary, with its
  // circuit open, until a recheck has found it unreachable).
  REQUIRE_FALSE(no_healthy_host.empty());
  CHECK_THAT(no_healthy_host.front(), Catch::Contains("for Route::primary"));
  CHECK_THAT(no_healthy_host.front(), Catch::Contains(": replica"));
  // The first write that succeeds after the stop, on the promoted node, comes within a recheck
  // interval and a cooldown (plus 2 s of slack) of the promotion.
  const auto first_ok = std::find_if(writes.begin(), writes.end(), [&](const Write& w) {
    return w.outcome == Outcome::committed && w.at > stopped;
  });
  REQUIRE(first_ok != writes.end());
  const double after_promotion_ms = ms_between(promote_begin, first_ok->at);
  CHECK(first_ok->at > promote_begin);  // no write succeeds while there is no primary
  CHECK(first_ok->at - promote_begin < o.role_recheck_interval + o.cooldown + 2s);
  // The last failed write before it: the failover time as writers saw it.
  std::optional<Clock::time_point> last_failure;
  for (auto it = writes.begin(); it != first_ok; ++it) {
    if (it->outcome != Outcome::committed) {
      last_failure = it->at;
    }
  }
  REQUIRE(last_failure.has_value());
  // Afterwards every write succeeds: none fails in the last 2 s.
  const auto late_failures = std::count_if(writes.begin(), writes.end(), [&](const Write& w) {
    return w.outcome != Outcome::committed && w.at > traffic_end - 2s;
  });
  CHECK(late_failures == 0);
  const auto committed_after = std::count_if(writes.begin(), writes.end(), [&](const Write& w) {
    return w.outcome == Outcome::committed && w.at > traffic_end - 2s;
  });
  CHECK(committed_after > 0);

  // Every write reported committed is on the new primary (node 1), and no row that was not
  // tried. Why every one, though `stop-primary` kills node 0 (-m immediate): pg-cluster.sh makes
  // replication synchronous while node 0 runs (a commit waits for both standbys' flush), so a
  // commit node 0 acknowledged is in node 1's WAL, which it replays before its promotion ends.
  // (With asynchronous replication a commit acknowledged just before the stop could be lost.)
  std::set<std::int64_t> committed;
  std::set<std::int64_t> tried;  // committed, or sent and failed (it may have committed)
  for (const Write& w : writes) {
    if (w.outcome == Outcome::committed) {
      committed.insert(w.id);
    }
    if (w.outcome != Outcome::acquire_failed) {
      tried.insert(w.id);
    }
  }
  std::set<std::int64_t> stored;
  long rows = -1;
  {
    PgConnection node1 = PgConnection::connect(nodes[1]);
    CHECK(node1.scalar("SELECT pg_is_in_recovery()") == "f");
    for (const auto& row : node1.query("SELECT id FROM writes")) {
      stored.insert(std::stoll(row.at(0)));
    }
    rows = std::stol(node1.scalar("SELECT count(*) FROM writes"));
  }
  std::vector<const Write*> lost;  // committed writes missing on node 1
  std::size_t committed_on_node2 = 0;
  for (const Write& w : writes) {
    if (w.outcome != Outcome::committed) {
      continue;
    }
    committed_on_node2 += w.node == 2 ? 1 : 0;
    if (stored.count(w.id) == 0) {
      lost.push_back(&w);
    }
  }
  std::string lost_text;
  for (const Write* w : lost) {
    lost_text += "\n  id " + std::to_string(w->id) + " on node " + std::to_string(w->node) +
                 ", committed at stop " + (w->at < stop_begin ? "" : "+") +
                 std::to_string(ms_between(stop_begin, w->at)) + " ms";
  }
  std::size_t committed_despite_error = 0;  // its commit's answer was lost with node 0
  std::vector<std::int64_t> unexpected;
  for (const std::int64_t id : stored) {
    if (tried.count(id) == 0) {
      unexpected.push_back(id);
    } else if (committed.count(id) == 0) {
      ++committed_despite_error;
    }
  }
  INFO("committed writes missing on node 1:" << lost_text);
  CHECK(lost.empty());
  CHECK(unexpected.empty());
  CHECK(committed_on_node2 == 0);  // a standby takes no writes
  CHECK(rows == static_cast<long>(stored.size()));
  CHECK(stored.size() == committed.size() - lost.size() + committed_despite_error);

  // --- The reads ----------------------------------------------------------------------------
  std::vector<Clock::time_point> reads;
  int read_failures = 0;
  std::string read_errors;
  for (const ReaderLog& log : reader_logs) {
    reads.insert(reads.end(), log.ok.begin(), log.ok.end());
    read_failures += log.failed;
    for (const auto& [what, n] : log.errors) {
      read_errors += "\n  " + std::to_string(n) + " x " + what;
    }
  }
  std::sort(reads.begin(), reads.end());
  INFO("read errors:" << read_errors);
  REQUIRE_FALSE(reads.empty());
  // No gap longer than 1 s between successful reads, from the first to the end of the traffic.
  Clock::duration longest_gap = traffic_end - reads.back();
  for (std::size_t i = 1; i < reads.size(); ++i) {
    longest_gap = std::max(longest_gap, reads[i] - reads[i - 1]);
  }
  CHECK(longest_gap < 1s);
  // Throughput: before the stop, and during the switch (the stop to the first write after it).
  auto reads_in = [&](Clock::time_point from, Clock::time_point to) {
    return std::count_if(reads.begin(), reads.end(),
                         [&](Clock::time_point t) { return t >= from && t < to; });
  };
  const auto per_second = [&](Clock::time_point from, Clock::time_point to) {
    return static_cast<double>(reads_in(from, to)) * 1000.0 / std::max(1.0, ms_between(from, to));
  };
  long fewest_in_100ms = -1;
  for (auto t = stop_begin; t + 100ms <= first_ok->at; t += 100ms) {
    const long n = static_cast<long>(reads_in(t, t + 100ms));
    fewest_in_100ms = fewest_in_100ms < 0 ? n : std::min(fewest_in_100ms, n);
  }

  // When the pool first saw node 1 as the primary, and how often meanwhile all of node 1's
  // connections were out (the recheck then keeps its old role: they were readers').
  std::optional<Clock::time_point> seen_primary;
  int full_samples = 0;
  int samples_after_promotion = 0;
  for (const Sample& x : samples) {
    if (x.at < promote_begin) {
      continue;
    }
    if (x.role == HostRole::primary) {
      seen_primary = x.at;
      break;
    }
    ++samples_after_promotion;
    full_samples += x.full ? 1 : 0;
  }
  std::cout << "pg_replicas failover: the pool saw node 1 as the primary "
            << (seen_primary ? std::to_string(ms_between(promote_begin, *seen_primary)) + " ms"
                             : std::string("never"))
            << " after the promotion began; before that node 1 had all its connections out in "
            << full_samples << " of " << samples_after_promotion << " samples (every 20 ms)\n";
  std::cout
      << "pg_replicas failover: primary stopped at +" << ms_between(traffic_start, stopped)
      << " ms, node 1 promoted from +" << ms_between(traffic_start, promote_begin) << " to +"
      << ms_between(traffic_start, promoted) << " ms; first write after the stop "
      << after_promotion_ms
      << " ms after the promotion began; failover time (last failed write -> first successful "
         "write) "
      << ms_between(*last_failure, first_ok->at) << " ms; outage (stop -> first write) "
      << ms_between(stop_begin, first_ok->at) << " ms\n"
      << "pg_replicas failover: " << committed.size() << " writes committed, "
      << writes.size() - committed.size() << " failed (" << failed_after_stop
      << " after the stop), " << stored.size() << " rows on node 1; " << lost.size()
      << " committed and missing there, " << committed_despite_error
      << " reported failed but committed\n"
      << "pg_replicas failover: reads/s before the stop "
      << per_second(traffic_start + 500ms, stop_begin) << ", during the switch "
      << per_second(stop_begin, first_ok->at) << " (fewest in a 100 ms bucket: " << fewest_in_100ms
      << "), after it " << per_second(first_ok->at, traffic_end) << "; longest gap between reads "
      << std::chrono::duration<double, std::milli>(longest_gap).count() << " ms; " << read_failures
      << " reads failed\n"
      << "pg_replicas failover: " << pool.stats().to_json() << '\n';

  // The pool's view at the end: node 0 unreachable, node 1 primary, node 2 its replica.
  const bool settled = connpool_test::eventually([&] {
    return roles_of(pool) ==
           std::vector<HostRole>{HostRole::unknown, HostRole::primary, HostRole::replica};
  });
  INFO("roles: " << roles_text(pool));
  CHECK(settled);
}

TEST_CASE("PostgreSQL cluster: a replica past max_replica_lag is left out until it catches up",
          "[integration][pgcluster][lag]") {
  if (cluster_script().empty()) {
    WARN("CONNPOOL_PGCLUSTER_SCRIPT is not set: the replica lag test is skipped");
    return;
  }
  const std::vector<std::string> nodes = fresh_cluster();
  {
    PgConnection admin = PgConnection::connect(nodes[0]);
    admin.command("CREATE TABLE IF NOT EXISTS ticks(id bigserial primary key)");
  }
  connpool::MultiHostOptions o = cluster_options();
  o.max_replica_lag = 500ms;
  o.role_recheck_interval = 200ms;
  ClusterPool pool{nodes, Connect{}, o};
  auto lag_of_node2 = [&] { return pool.stats().hosts.at(2).replica_lag; };

  // A writer on the primary, so that the standbys have transactions to replay.
  std::atomic<bool> stop{false};
  std::atomic<int> writes{0};
  std::atomic<int> write_failures{0};
  std::jthread writer;
  const StopOnExit stop_on_exit{stop};  // destroyed before `writer` is joined
  writer = std::jthread([&] {
    while (!stop.load()) {
      try {
        auto h = pool.acquire(Route::primary, 2s);
        try {
          h->command("INSERT INTO ticks DEFAULT VALUES");
        } catch (...) {
          h.invalidate();
          throw;
        }
        writes.fetch_add(1);
      } catch (const std::exception&) {
        write_failures.fetch_add(1);
      }
      std::this_thread::sleep_for(5ms);
    }
  });
  REQUIRE(connpool_test::eventually([&] { return writes.load() > 20; }));

  // Both replicas serve Route::replica, node 2 with a lag reading within the bound.
  INFO("roles: " << roles_text(pool));
  REQUIRE(connpool_test::eventually([&] {
    const auto lag = lag_of_node2();
    return lag && *lag <= o.max_replica_lag;
  }));
  REQUIRE(connpool_test::eventually(
      [&] { return node_of(nodes, pool.acquire(Route::replica, 5s).host()) == 2; }));

  PgConnection admin = PgConnection::connect(nodes[2]);
  (void)admin.query("SELECT pg_wal_replay_pause()");
  const auto paused = Clock::now();
  const bool lagging = connpool_test::eventually(
      [&] {
        const auto lag = lag_of_node2();
        return lag && *lag > o.max_replica_lag;
      },
      10s);
  INFO("roles after the pause: " << roles_text(pool));
  REQUIRE(lagging);
  std::cout << "pg_replicas lag: node 2 over max_replica_lag " << ms_between(paused, Clock::now())
            << " ms after its replay paused (lag " << lag_of_node2().value_or(-1ms).count()
            << " ms)\n";
  int on_node2 = 0;
  int on_node1 = 0;
  for (int i = 0; i < 100; ++i) {
    auto h = pool.acquire(Route::replica, 5s);
    on_node2 += node_of(nodes, h.host()) == 2 ? 1 : 0;
    on_node1 += node_of(nodes, h.host()) == 1 ? 1 : 0;
  }
  CHECK(on_node2 == 0);
  CHECK(on_node1 == 100);

  (void)admin.query("SELECT pg_wal_replay_resume()");
  const auto resumed = Clock::now();
  const bool back = connpool_test::eventually(
      [&] { return node_of(nodes, pool.acquire(Route::replica, 5s).host()) == 2; }, 10s);
  INFO("roles after the resume: " << roles_text(pool));
  CHECK(back);
  std::cout << "pg_replicas lag: node 2 served Route::replica again "
            << ms_between(resumed, Clock::now()) << " ms after its replay resumed\n";
  stop = true;
  writer.join();
  CHECK(write_failures.load() == 0);
}

int main(int argc, char** argv) {
  return connpool_test::run_if_reachable(
      "connpool_pg_replicas_tests",
      []() -> std::string {
        const std::vector<std::string> nodes = env_nodes();
        if (nodes.empty()) {
          return "CONNPOOL_PGCLUSTER_CONNINFO is not set (scripts/pg-cluster.sh start prints the "
                 "three conninfos; join them with '|')";
        }
        if (nodes.size() != 3) {
          return "CONNPOOL_PGCLUSTER_CONNINFO names " + std::to_string(nodes.size()) +
                 " nodes, not 3";
        }
        if (!cluster_script().empty()) {
          return "";  // the test cases restart the cluster as they need it
        }
        for (const std::string& n : nodes) {
          try {
            PgConnection::connect(n).close();
          } catch (const std::exception& e) {
            return "PostgreSQL at \"" + n + "\" is unreachable: " + e.what();
          }
        }
        return "";
      },
      argc, argv);
}

namespace {

using AsyncClusterPool = connpool::AsyncMultiHostPool<PgConnection, Connect>;

/// One coroutine's work: `n` acquires under `route`, each checked with pg_is_in_recovery()
/// against what the route promises; the mismatches are counted in `wrong`.
connpool::Task<> route_worker(
    AsyncClusterPool& pool, Route route, int n, std::atomic<int>& wrong, std::atomic<int>& done) {
  const std::string expect = route == Route::primary ? "f" : "t";
  for (int i = 0; i < n; ++i) {
    auto h = co_await pool.acquire(route, 10s);
    // Held a few milliseconds, so that the coroutines of a route outnumber its connections.
    if (h->scalar("SELECT pg_is_in_recovery() FROM pg_sleep(0.003)") != expect) {
      wrong.fetch_add(1);
    }
  }
  done.fetch_add(1);
}

}  // namespace

TEST_CASE("PostgreSQL cluster: coroutines acquire by route, suspending, and follow a failover",
          "[integration][pgcluster][roles][async]") {
  if (cluster_script().empty()) {
    WARN("CONNPOOL_PGCLUSTER_SCRIPT is not set: the asynchronous failover test is skipped");
    return;
  }
  const std::vector<std::string> nodes = fresh_cluster();
  {
    PgConnection admin = PgConnection::connect(nodes[0]);
    admin.command("CREATE TABLE IF NOT EXISTS async_writes(id bigint primary key)");
  }
  connpool::MultiHostOptions o = cluster_options();
  o.per_host.max_size = 2;  // 4 coroutines per route: most acquires suspend for a connection
  o.failure_threshold = 2;
  o.cooldown = 1s;
  o.role_recheck_interval = 1s;
  AsyncClusterPool pool{nodes, Connect{}, o};
  // The first recheck pass is under way: an acquire now would wait for it and be resumed on the
  // recheck thread (InlineScheduler), where all would run one after another.
  REQUIRE(connpool_test::eventually([&] {
    const auto st = pool.stats();
    return std::all_of(st.hosts.begin(), st.hosts.end(),
                       [](const auto& h) { return h.role != HostRole::unknown; });
  }));

  // Each coroutine runs on a thread of its own (sync_wait), and is resumed inline by whichever
  // thread gives a connection back.
  std::atomic<int> wrong{0};
  std::atomic<int> done{0};
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < 8; ++t) {
      const Route route = t % 2 == 0 ? Route::primary : Route::prefer_replica;
      threads.emplace_back(
          [&, route] { connpool::detail::sync_wait(route_worker(pool, route, 100, wrong, done)); });
    }
  }
  CHECK(done.load() == 8);
  CHECK(wrong.load() == 0);
  std::uint64_t waited = 0;
  for (const auto& h : pool.stats().hosts) {
    waited += h.pool.waited;
  }
  INFO(pool.stats().to_json());
  CHECK(waited > 0);  // the suspending path ran, not only the one that completes at once

  // A failover: node 0 stops, node 1 is promoted. A coroutine writes through Route::primary,
  // retrying, until a write commits: on node 1, within role_recheck_interval + cooldown + 2 s
  // of the promotion.
  (void)cluster_command("stop-primary");
  const auto promote_begin = Clock::now();
  (void)cluster_command("promote 1");
  std::optional<std::string> wrote_on;
  std::map<std::string, int> errors;
  auto writer = [&]() -> connpool::Task<> {
    for (std::int64_t id = 1; !wrote_on && Clock::now() - promote_begin < 30s; ++id) {
      try {
        auto h = co_await pool.acquire(Route::primary, 2s);
        h->command("INSERT INTO async_writes VALUES (" + std::to_string(id) + ")");
        wrote_on = h.host();
      } catch (const std::exception& e) {
        ++errors[e.what()];
      }
    }
  };
  connpool::detail::sync_wait(writer());
  const auto took = Clock::now() - promote_begin;
  std::string seen;
  for (const auto& [what, n] : errors) {
    seen += std::to_string(n) + "x " + what + "\n";
  }
  INFO("errors before the first write:\n" << seen << "roles: " << roles_text(pool));
  REQUIRE(wrote_on.has_value());
  CHECK(node_of(nodes, *wrote_on) == 1);
  CHECK(took < o.role_recheck_interval + o.cooldown + 2s);
  PgConnection check = PgConnection::connect(nodes[1]);
  CHECK(check.scalar("SELECT count(*) FROM async_writes") == "1");
}
