// connpool - bench: failover time of a role-aware MultiHostPool on a real PostgreSQL cluster
// SPDX-License-Identifier: MIT

// A plain program, not a Google Benchmark: each run starts a fresh primary with two streaming
// standbys (scripts/pg-cluster.sh), writes through Route::primary and reads through
// Route::prefer_replica from several threads, stops the primary, promotes standby 1 a moment
// later, and goes on until the writes have long resumed. It reports, per run and as median and
// worst over the runs:
//   failover   the last failed write to the first successful write after it (the issue's
//              measure: how long writes stay failed once the pool can see the new primary)
//   outage     the first failed write to the first successful write after the last failure
//   promoted   the promotion (pg-cluster.sh promote 1 started) to the first successful write
//   reads/s    successful prefer_replica reads per second before the stop and during the switch
//              (the stop to the first successful write after it)
//   lost       writes reported committed that the new primary does not have
//
// Options are the library's defaults (role_recheck_interval 5 s, failure_threshold 5, cooldown
// 5 s) unless given:
//   pg_failover --script scripts/pg-cluster.sh [--runs 5] [--writers 4] [--readers 4]
//               [--before 2] [--gap 1] [--after 8] [--recheck-ms 5000] [--cooldown-ms 5000]
//               [--threshold 5]

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <connpool/connpool.hpp>

#include "pg_connection.hpp"

namespace {

using connpool_examples::PgConnection;
using connpool_examples::PgError;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Args {
  std::string script;
  int runs = 5;
  int writers = 4;
  int readers = 4;
  double before_s = 2;
  double gap_s = 1;
  double after_s = 8;
  long recheck_ms = 5000;
  long cooldown_ms = 5000;
  long threshold = 5;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) {
      throw std::invalid_argument("pg_failover: " + k + " needs a value");
    }
    const std::string v = argv[++i];
    if (k == "--script") {
      a.script = v;
    } else if (k == "--runs") {
      a.runs = std::stoi(v);
    } else if (k == "--writers") {
      a.writers = std::stoi(v);
    } else if (k == "--readers") {
      a.readers = std::stoi(v);
    } else if (k == "--before") {
      a.before_s = std::stod(v);
    } else if (k == "--gap") {
      a.gap_s = std::stod(v);
    } else if (k == "--after") {
      a.after_s = std::stod(v);
    } else if (k == "--recheck-ms") {
      a.recheck_ms = std::stol(v);
    } else if (k == "--cooldown-ms") {
      a.cooldown_ms = std::stol(v);
    } else if (k == "--threshold") {
      a.threshold = std::stol(v);
    } else {
      throw std::invalid_argument("pg_failover: unknown option " + k);
    }
  }
  if (a.script.empty()) {
    throw std::invalid_argument("pg_failover: --script <path to scripts/pg-cluster.sh> is needed");
  }
  return a;
}

/// Runs `cmd`; returns its standard output. Throws when it fails.
std::string run(const std::string& cmd) {
  std::unique_ptr<FILE, int (*)(FILE*)> p(popen(cmd.c_str(), "r"), pclose);
  if (!p) {
    throw std::runtime_error("pg_failover: cannot run " + cmd);
  }
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p.get()) != nullptr) {
    out += buf;
  }
  if (pclose(p.release()) != 0) {
    throw std::runtime_error("pg_failover: failed: " + cmd);
  }
  return out;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < s.size()) {
    const std::size_t end = s.find('\n', start);
    std::string line = s.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!line.empty()) {
      out.push_back(line);
    }
    if (end == std::string::npos) {
      break;
    }
    start = end + 1;
  }
  return out;
}

double ms_since(Clock::time_point t0, Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(t - t0).count();
}

struct Write {
  double at_ms;  // when the attempt ended
  bool ok;
  std::int64_t id;
};

struct Result {
  double failover_ms = -1;
  double outage_ms = -1;
  double promoted_ms = -1;
  double reads_before = 0;  // per second
  double reads_switch = 0;  // per second
  std::size_t committed = 0;
  std::size_t lost = 0;
  std::size_t failed_writes = 0;
};

using Pool = connpool::MultiHostPool<PgConnection, std::function<PgConnection(const std::string&)>>;

Result one_run(const Args& a) {
  (void)run(a.script + " stop >/dev/null 2>&1 || true");
  const std::vector<std::string> hosts = lines(run(a.script + " start"));
  if (hosts.size() != 3) {
    throw std::runtime_error("pg_failover: the cluster did not print three conninfos");
  }
  PgConnection::connect(hosts[0]).command(
      "DROP TABLE IF EXISTS writes; CREATE TABLE writes(id bigint PRIMARY KEY)");

  connpool::MultiHostOptions o;  // the defaults, but for what the command line sets
  o.per_host.max_size = 4;
  o.per_host.connect_timeout = 2s;
  o.role_recheck_interval = std::chrono::milliseconds(a.recheck_ms);
  o.cooldown = std::chrono::milliseconds(a.cooldown_ms);
  o.failure_threshold = static_cast<std::size_t>(a.threshold);
  o.role_probe = [](PgConnection& c) {
    return c.scalar("SELECT pg_is_in_recovery()") == "t" ? connpool::HostRole::replica
                                                         : connpool::HostRole::primary;
  };
  Pool pool(
      hosts, [](const std::string& h) { return PgConnection::connect(h); }, o);

  std::atomic<bool> stop{false};
  const Clock::time_point t0 = Clock::now();
  std::vector<std::vector<Write>> writes(static_cast<std::size_t>(a.writers));
  std::vector<std::vector<double>> reads(static_cast<std::size_t>(a.readers));
  std::vector<std::thread> threads;
  for (int w = 0; w < a.writers; ++w) {
    threads.emplace_back([&, w] {
      auto& mine = writes[static_cast<std::size_t>(w)];
      mine.reserve(1 << 16);
      for (std::int64_t n = 0; !stop.load(std::memory_order_relaxed); ++n) {
        const std::int64_t id = n * a.writers + w;
        bool ok = false;
        try {
          auto h = pool.acquire(connpool::Route::primary, 2s);
          try {
            h->command("INSERT INTO writes VALUES (" + std::to_string(id) + ")");
            ok = true;
          } catch (const PgError&) {
            h.invalidate();
          }
        } catch (const std::exception&) {
        }
        mine.push_back({ms_since(t0, Clock::now()), ok, id});
        if (!ok) {
          std::this_thread::sleep_for(10ms);  // an application's retry pause
        }
      }
    });
  }
  for (int r = 0; r < a.readers; ++r) {
    threads.emplace_back([&, r] {
      auto& mine = reads[static_cast<std::size_t>(r)];
      mine.reserve(1 << 20);
      while (!stop.load(std::memory_order_relaxed)) {
        try {
          auto h = pool.acquire(connpool::Route::prefer_replica, 2s);
          try {
            (void)h->scalar("SELECT count(*) FROM writes");
            mine.push_back(ms_since(t0, Clock::now()));
          } catch (const PgError&) {
            h.invalidate();
          }
        } catch (const std::exception&) {
          std::this_thread::sleep_for(10ms);
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(a.before_s));
  const double stop_ms = ms_since(t0, Clock::now());
  (void)run(a.script + " stop-primary");
  std::this_thread::sleep_for(std::chrono::duration<double>(a.gap_s));
  // From when the promotion starts: pg-cluster.sh returns a second or two after the standby is
  // promoted (it then points the other standby at it), and writes may resume in between.
  const double promote_ms = ms_since(t0, Clock::now());
  (void)run(a.script + " promote 1");
  std::this_thread::sleep_for(std::chrono::duration<double>(a.after_s));
  stop = true;
  for (auto& t : threads) {
    t.join();
  }

  Result res;
  std::vector<Write> all;
  for (auto& v : writes) {
    all.insert(all.end(), v.begin(), v.end());
  }
  std::sort(all.begin(), all.end(),
            [](const Write& x, const Write& y) { return x.at_ms < y.at_ms; });
  double first_fail = -1;
  double last_fail = -1;
  for (const Write& w : all) {
    if (!w.ok) {
      ++res.failed_writes;
      if (first_fail < 0) {
        first_fail = w.at_ms;
      }
      last_fail = w.at_ms;
    }
  }
  double first_ok_after = -1;
  for (const Write& w : all) {
    if (w.ok && w.at_ms > last_fail) {
      first_ok_after = w.at_ms;
      break;
    }
  }
  if (last_fail >= 0 && first_ok_after >= 0) {
    res.failover_ms = first_ok_after - last_fail;
    res.outage_ms = first_ok_after - first_fail;
    res.promoted_ms = first_ok_after - promote_ms;
  }
  std::size_t before = 0;
  std::size_t during = 0;
  const double switch_end = first_ok_after >= 0 ? first_ok_after : ms_since(t0, Clock::now());
  for (const auto& v : reads) {
    for (const double t : v) {
      before += t < stop_ms ? 1 : 0;
      during += (t >= stop_ms && t < switch_end) ? 1 : 0;
    }
  }
  res.reads_before = static_cast<double>(before) / (stop_ms / 1000.0);
  res.reads_switch =
      switch_end > stop_ms ? static_cast<double>(during) / ((switch_end - stop_ms) / 1000.0) : 0;

  std::set<std::int64_t> on_primary;
  for (const auto& row : PgConnection::connect(hosts[1]).query("SELECT id FROM writes")) {
    on_primary.insert(std::stoll(row.at(0)));
  }
  for (const Write& w : all) {
    if (w.ok) {
      ++res.committed;
      res.lost += on_primary.count(w.id) == 0 ? 1 : 0;
    }
  }
  pool.close();
  return res;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse(argc, argv);
    std::printf(
        "pg_failover: %d writers (Route::primary), %d readers (Route::prefer_replica); "
        "role_recheck_interval %ld ms, failure_threshold %ld, cooldown %ld ms; stop-primary at "
        "%.1f s, promote 1 %.1f s later\n",
        a.writers, a.readers, a.recheck_ms, a.threshold, a.cooldown_ms, a.before_s, a.gap_s);
    std::printf("%4s %12s %10s %12s %14s %14s %10s %6s %8s\n", "run", "failover_ms", "outage_ms",
                "promoted_ms", "reads/s before", "reads/s switch", "committed", "lost", "failed");
    std::vector<double> failover;
    std::vector<double> outage;
    std::vector<double> promoted;
    std::vector<double> reads_switch;
    for (int i = 0; i < a.runs; ++i) {
      const Result r = one_run(a);
      std::printf("%4d %12.1f %10.1f %12.1f %14.0f %14.0f %10zu %6zu %8zu\n", i + 1, r.failover_ms,
                  r.outage_ms, r.promoted_ms, r.reads_before, r.reads_switch, r.committed, r.lost,
                  r.failed_writes);
      std::fflush(stdout);
      failover.push_back(r.failover_ms);
      outage.push_back(r.outage_ms);
      promoted.push_back(r.promoted_ms);
      reads_switch.push_back(r.reads_switch);
    }
    (void)run(a.script + " stop >/dev/null 2>&1 || true");
    std::printf("median %11.1f %10.1f %12.1f %14s %14.0f\n", median(failover), median(outage),
                median(promoted), "", median(reads_switch));
    std::printf("worst  %11.1f %10.1f %12.1f %14s %14.0f\n",
                *std::max_element(failover.begin(), failover.end()),
                *std::max_element(outage.begin(), outage.end()),
                *std::max_element(promoted.begin(), promoted.end()), "",
                *std::min_element(reads_switch.begin(), reads_switch.end()));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
