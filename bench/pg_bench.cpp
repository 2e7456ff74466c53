// connpool - pg_bench: `SELECT 1` over libpq, through connpool and without it (issue 6)
// SPDX-License-Identifier: MIT

// A closed-loop load generator: N threads each run `SELECT 1` (simple query protocol, PQexec,
// as `pgbench -M simple` does) back to back for a fixed time, and every request's latency is
// recorded, so the figures are the throughput and exact latency percentiles of one run. Not a
// Google Benchmark program: a run is one fixed-duration configuration, not an iteration count.
//
// Modes:
//   pool     the N threads share one connpool::ConnectionPool<PgConnection> with
//            min_size = max_size = --pool-size (default 4) and every other option at its
//            default (validate_on_acquire with a 500 ms bypass, WaitPolicy::bounded_barging
//            with a 500 us bound, ...); each request is acquire(), SELECT 1, release. PgConnection
//            (examples/pg_connection.hpp) is Resettable, so the release runs its reset(): with
//            --reset discard_all (the default, PgConnection's) DISCARD ALL, a second round trip;
//            with --reset rollback_only nothing unless a transaction was left open, so a request
//            costs what pgbench's `SELECT 1` does.
//   connect  each request is PQconnectdb, SELECT 1, PQfinish: a service without a pool.
//   direct   each thread keeps its own PGconn, no pool: the client-side limit, the same client
//            work as pgbench with persistent connections.
//   async    --threads N client coroutines on --io-threads T threads (default min(N, 2)) share a
//            connpool::AsyncConnectionPool of --pool-size connections through Asio
//            (connpool::asio::async_acquire; waiting coroutines resumed on the io_context); each
//            query is libpq's asynchronous API (PQsendQuery, then the socket awaited readable
//            until the result is in). pgbench's own design: N clients multiplexed on T threads.
//            Built when standalone Asio is found (libasio-dev).
//
// Timing: the threads set up (direct mode connects), wait at a start barrier, run --warmup
// seconds unrecorded, then --seconds recorded. The latency of a request is the steady_clock
// time from the end of the previous request (or the start of the measured period) to its end,
// in ns, stored in a per-client buffer reserved before the start (nothing else is allocated in
// the loop, apart from what libpq does); a request that ends inside the measured period counts
// in it (LoopClock, shared by threads and coroutines). The measured period ends with each thread's
// first request that finishes after the deadline; throughput = measured requests / (the last
// thread's end - the start of the measured period). Percentiles are nearest-rank over all
// threads' requests.
//
// Client CPU: getrusage(RUSAGE_SELF), the whole process (every client thread, the pool's
// background thread, the io_context's threads), is read when the first client completes a
// request inside the measured period and when the last client ends its measured period (its
// first request past the deadline), so set-up, warm-up and tear-down are left out. Reported per
// 1,000 measured requests:
//   cpu_ms_per_kreq    user + system CPU time, in ms (= µs of CPU per request)
//   vcsw_per_kreq      voluntary context switches (ru_nvcsw: a thread blocked, e.g. waiting for
//                      the server's answer or for a connection)
//   ivcsw_per_kreq     involuntary context switches (ru_nivcsw: a runnable thread preempted)
// --json also gives the totals over the period: cpu_user_s, cpu_sys_s, vcsw, ivcsw. Without a
// measured request the figures are "-" (null in JSON).
//
// Usage: pg_bench [--conninfo S] [--mode pool|connect|direct|async] [--threads N] [--seconds S]
//                 [--warmup S] [--pool-size N] [--reset discard_all|rollback_only]
//                 [--wait-policy fifo|bounded_barging] [--starvation-bound-us N]
//                 [--io-threads T] [--json]
//   --conninfo defaults to $CONNPOOL_PG_CONNINFO; without either, exits 77 (CTest: skipped).
// Exit status: 0 success, 1 a request failed (a wrong result, a libpq error) or setup failed,
// 2 bad usage, 77 no conninfo.

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <iterator>
#include <latch>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <connpool/connpool.hpp>

#include "pg_connection.hpp"
#include <sys/resource.h>

#if defined(CONNPOOL_PG_BENCH_HAVE_ASIO)
#include <asio.hpp>

#include <connpool/asio.hpp>
#endif

namespace {

using Clock = std::chrono::steady_clock;
using connpool_examples::PgConnection;
using connpool_examples::SessionReset;

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitSkip = 77;

/// A bound on one thread's request rate, to size the latency buffers: a synchronous round trip
/// through the kernel's loopback takes several µs, so no thread completes 250,000 a second.
constexpr double kMaxRequestsPerThreadPerSecond = 250'000;

enum class Mode { pool, connect, direct, async };

struct Options {
  std::string conninfo;
  Mode mode = Mode::pool;
  int threads = 1;
  double seconds = 5.0;
  double warmup = 1.0;
  std::size_t pool_size = 4;
  SessionReset reset = SessionReset::discard_all;
  connpool::WaitPolicy wait_policy = connpool::PoolOptions{}.wait_policy;
  std::chrono::microseconds starvation_bound = connpool::PoolOptions{}.starvation_bound;
  int io_threads = 0;  // async mode; 0 = min(threads, 2)
  bool json = false;
};

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::pool:
      return "pool";
    case Mode::connect:
      return "connect";
    case Mode::direct:
      return "direct";
    case Mode::async:
      return "async";
  }
  return "?";
}

void usage(std::ostream& out) {
  out << "usage: pg_bench [--conninfo S] [--mode pool|connect|direct|async] [--threads N]\n"
         "                [--seconds S] [--warmup S] [--pool-size N]\n"
         "                [--reset discard_all|rollback_only] [--wait-policy "
         "fifo|bounded_barging]\n"
         "                [--starvation-bound-us N] [--io-threads T] [--json]\n"
         "  --conninfo S     libpq conninfo (default: $CONNPOOL_PG_CONNINFO; without either,\n"
         "                   exit 77)\n"
         "  --mode M         pool: N threads share a connpool pool (default); connect: a new\n"
         "                   connection per request; direct: one persistent PGconn per thread;\n"
         "                   async: N coroutines on --io-threads threads share an\n"
         "                   AsyncConnectionPool (needs Asio at build time)\n"
         "  --threads N      client threads (async mode: client coroutines; default 1)\n"
         "  --seconds S      measured seconds (default 5)\n"
         "  --warmup S       unrecorded seconds before (default 1)\n"
         "  --pool-size N    pool mode: min_size = max_size = N (default 4)\n"
         "  --reset R        pool mode: what PgConnection::reset() does on release:\n"
         "                   discard_all (default: DISCARD ALL, a round trip) or rollback_only\n"
         "                   (only a transaction left open is rolled back)\n"
         "  --wait-policy P  pool and async modes: bounded_barging (default) or fifo\n"
         "  --starvation-bound-us N  bounded_barging: PoolOptions::starvation_bound\n"
         "                   (default 500)\n"
         "  --io-threads T   async mode: threads running the io_context (default min(N, 2))\n"
         "  --json           print the result as a JSON object\n"
         "Exit status: 0 ok, 1 errors, 2 bad usage, 77 no conninfo.\n";
}

bool parse_int(std::string_view s, long long min, long long& out) {
  long long v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || v < min) {
    return false;
  }
  out = v;
  return true;
}

bool parse_seconds(const std::string& s, double& out) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v) || v < 0 || v > 86'400) {
    return false;
  }
  out = v;
  return true;
}

/// Parses argv into `o`; returns an exit status to stop with, or nullopt to run.
std::optional<int> parse_args(int argc, char** argv, Options& o) {
  bool have_conninfo = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      usage(std::cout);
      return 0;
    }
    if (arg == "--json") {
      o.json = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::cerr << "pg_bench: " << arg << (arg.starts_with("--") ? " needs a value\n" : "?\n");
      usage(std::cerr);
      return kExitUsage;
    }
    const std::string value = argv[++i];
    bool ok = true;
    long long n = 0;
    if (arg == "--conninfo") {
      o.conninfo = value;
      have_conninfo = true;
    } else if (arg == "--mode") {
      if (value == "pool") {
        o.mode = Mode::pool;
      } else if (value == "connect") {
        o.mode = Mode::connect;
      } else if (value == "direct") {
        o.mode = Mode::direct;
      } else if (value == "async") {
        o.mode = Mode::async;
      } else {
        ok = false;
      }
    } else if (arg == "--threads") {
      ok = parse_int(value, 1, n) && n <= 4096;
      o.threads = static_cast<int>(n);
    } else if (arg == "--pool-size") {
      ok = parse_int(value, 1, n) && n <= 4096;
      o.pool_size = static_cast<std::size_t>(n);
    } else if (arg == "--seconds") {
      ok = parse_seconds(value, o.seconds) && o.seconds > 0;
    } else if (arg == "--warmup") {
      ok = parse_seconds(value, o.warmup);
    } else if (arg == "--reset") {
      if (value == "discard_all") {
        o.reset = SessionReset::discard_all;
      } else if (value == "rollback_only") {
        o.reset = SessionReset::rollback_only;
      } else {
        ok = false;
      }
    } else if (arg == "--io-threads") {
      ok = parse_int(value, 1, n) && n <= 256;
      o.io_threads = static_cast<int>(n);
    } else if (arg == "--starvation-bound-us") {
      ok = parse_int(value, 0, n);
      o.starvation_bound = std::chrono::microseconds(n);
    } else if (arg == "--wait-policy") {
      if (value == "fifo") {
        o.wait_policy = connpool::WaitPolicy::fifo;
      } else if (value == "bounded_barging") {
        o.wait_policy = connpool::WaitPolicy::bounded_barging;
      } else {
        ok = false;
      }
    } else {
      std::cerr << "pg_bench: unknown option " << arg << '\n';
      usage(std::cerr);
      return kExitUsage;
    }
    if (!ok) {
      std::cerr << "pg_bench: bad value for " << arg << ": " << value << '\n';
      usage(std::cerr);
      return kExitUsage;
    }
  }
  if (!have_conninfo) {
    const char* env = std::getenv("CONNPOOL_PG_CONNINFO");
    o.conninfo = env != nullptr ? env : "";
  }
  if (o.conninfo.empty()) {
    std::cerr << "pg_bench: no conninfo (--conninfo or CONNPOOL_PG_CONNINFO): skipped\n";
    return kExitSkip;
  }
  return std::nullopt;
}

/// Keeps the first error of a thread: `message` without libpq's trailing newline.
void note_error(std::string& error, std::string_view message) {
  if (!error.empty()) {
    return;
  }
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) {
    message.remove_suffix(1);
  }
  error = message.empty() ? "unknown error" : message;
}

/// `SELECT 1` through the simple query protocol; true when the result is one row, one column,
/// "1". On failure, `error` receives libpq's message (when it is still empty).
bool select_one(PGconn* c, std::string& error) {
  PGresult* r = PQexec(c, "SELECT 1");
  const bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && PQnfields(r) == 1 &&
                  std::strcmp(PQgetvalue(r, 0, 0), "1") == 0;
  if (!ok) {
    const std::string_view message = r == nullptr ? PQerrorMessage(c) : PQresultErrorMessage(r);
    note_error(error, message.empty()
                          ? "SELECT 1 returned something other than one row with the value 1"
                          : message);
  }
  PQclear(r);
  return ok;
}

/// One thread's results, on its own cache lines.
struct alignas(64) ThreadResult {
  std::vector<std::uint64_t> latencies_ns;  // reserved before the start
  std::uint64_t requests = 0;               // in the measured period
  std::uint64_t errors = 0;                 // in both periods
  std::uint64_t dropped = 0;                // measured requests the full buffer did not keep
  Clock::time_point last_end{};
  std::string first_error;
};

/// When the periods start and end; written by the main thread before it opens the gate.
struct Schedule {
  Clock::time_point measure_start{};
  Clock::time_point deadline{};
};

/// The process's CPU time and context switches over the measured period: getrusage(RUSAGE_SELF)
/// when the first client completes a request inside the period (start()) and when the last of
/// `clients` has ended it (finish(), once per client, also by a client that could not run).
class UsageMeter {
 public:
  explicit UsageMeter(std::size_t clients) : remaining_(clients) {}

  void start() noexcept {
    if (!started_.exchange(true, std::memory_order_acq_rel)) {
      getrusage(RUSAGE_SELF, &before_);
    }
  }

  void finish() noexcept {
    if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      getrusage(RUSAGE_SELF, &after_);
    }
  }

  /// Whether the period was measured; read after every client has finished (joined).
  [[nodiscard]] bool measured() const noexcept {
    return started_.load(std::memory_order_acquire) &&
           remaining_.load(std::memory_order_acquire) == 0;
  }
  [[nodiscard]] const rusage& before() const noexcept { return before_; }
  [[nodiscard]] const rusage& after() const noexcept { return after_; }

 private:
  std::atomic<bool> started_{false};
  std::atomic<std::size_t> remaining_;
  rusage before_{};
  rusage after_{};
};

/// The bookkeeping of one client's closed loop, whatever runs its requests: call done() after
/// each request. Requests that end before the measured period are warm-up and not recorded;
/// a request's latency runs from the end of the previous one (or the start of the measured
/// period) to its end.
class LoopClock {
 public:
  LoopClock(const Schedule& s, ThreadResult& r, UsageMeter& usage)
      : s_(s), r_(r), usage_(usage), begin_(Clock::now()) {}

  /// Counts a request that just ended (`ok`: it succeeded); true when the client should stop.
  bool done(bool ok) {
    if (!ok) {
      ++r_.errors;
    }
    const Clock::time_point end = Clock::now();
    if (end <= s_.measure_start) {
      begin_ = end;
      return false;
    }
    if (!measuring_) {
      measuring_ = true;
      usage_.start();
    }
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                        end - std::max(begin_, s_.measure_start))
                        .count();
    if (r_.latencies_ns.size() < r_.latencies_ns.capacity()) {
      r_.latencies_ns.push_back(static_cast<std::uint64_t>(ns));
    } else {
      ++r_.dropped;
    }
    ++r_.requests;
    begin_ = end;
    if (end >= s_.deadline) {
      r_.last_end = end;
      usage_.finish();
      return true;
    }
    return false;
  }

 private:
  const Schedule& s_;
  ThreadResult& r_;
  UsageMeter& usage_;
  Clock::time_point begin_;
  bool measuring_ = false;
};

/// The closed loop of one thread: warm-up, then the measured period. `request(error)` runs one
/// request and returns whether it succeeded.
template <class Request>
void run_loop(const Schedule& s, ThreadResult& r, UsageMeter& usage, Request&& request) {
  LoopClock loop(s, r, usage);
  while (!loop.done(request(r.first_error))) {
  }
}

struct Summary {
  std::uint64_t requests = 0;
  std::uint64_t errors = 0;
  std::uint64_t dropped = 0;
  double seconds = 0;
  double throughput = 0;
  double p50_us = 0;
  double p99_us = 0;
  double max_us = 0;
  // The process's usage over the measured period (UsageMeter); `usage_measured` false: none.
  bool usage_measured = false;
  double cpu_user_s = 0;
  double cpu_sys_s = 0;
  long long vcsw = 0;
  long long ivcsw = 0;
  std::string first_error;
  std::string pool_stats_json;  // pool mode only
};

/// The nearest-rank `pct`th percentile of sorted `v` (the ceil(n * pct / 100)-th smallest,
/// computed in integers), in µs.
double percentile_us(const std::vector<std::uint64_t>& v, std::size_t pct) {
  if (v.empty()) {
    return 0;
  }
  const std::size_t rank = std::max<std::size_t>((v.size() * pct + 99) / 100, 1);
  return static_cast<double>(v[rank - 1]) / 1000.0;
}

/// One result per client, with latency buffers reserved for the whole run.
std::vector<ThreadResult> make_results(const Options& o) {
  std::vector<ThreadResult> results(static_cast<std::size_t>(o.threads));
  const auto capacity =
      static_cast<std::size_t>(std::ceil((o.seconds + 1.0) * kMaxRequestsPerThreadPerSecond));
  for (ThreadResult& r : results) {
    r.latencies_ns.reserve(capacity);
  }
  return results;
}

/// Sets the measured period: the warm-up from `start`, then the measured seconds.
void set_schedule(const Options& o, Schedule& schedule, Clock::time_point start) {
  schedule.measure_start =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.warmup));
  schedule.deadline = schedule.measure_start + std::chrono::duration_cast<Clock::duration>(
                                                   std::chrono::duration<double>(o.seconds));
}

Summary summarize(const std::vector<ThreadResult>& results,
                  const Schedule& schedule,
                  const UsageMeter& usage);

/// Runs `threads` threads; `setup(i)` runs first in thread i and returns its request callable
/// (or nullopt when it failed, with the reason in the thread's first_error).
template <class Setup>
Summary run_threads(const Options& o, Setup setup) {
  const auto n = static_cast<std::size_t>(o.threads);
  std::vector<ThreadResult> results = make_results(o);
  Schedule schedule;
  UsageMeter usage(n);
  std::latch ready(static_cast<std::ptrdiff_t>(n));
  std::latch gate(1);
  {
    std::vector<std::jthread> workers;
    workers.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      workers.emplace_back([&, i] {
        ThreadResult& r = results[i];
        auto request = setup(i, r.first_error);
        ready.count_down();
        gate.wait();
        if (!request) {
          ++r.errors;
          r.last_end = schedule.measure_start;
          usage.finish();
          return;
        }
        run_loop(schedule, r, usage, *request);
      });
    }
    ready.wait();
    set_schedule(o, schedule, Clock::now());
    gate.count_down();
  }  // joins
  return summarize(results, schedule, usage);
}

double seconds_of(const timeval& t) {
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
}

/// Merges the clients' results: counts, throughput over the measured period, percentiles, the
/// process's CPU time and context switches.
Summary summarize(const std::vector<ThreadResult>& results,
                  const Schedule& schedule,
                  const UsageMeter& usage) {
  Summary sum;
  Clock::time_point last = schedule.measure_start;
  std::vector<std::uint64_t> all;
  std::size_t total = 0;
  for (const ThreadResult& r : results) {
    total += r.latencies_ns.size();
  }
  all.reserve(total);
  for (const ThreadResult& r : results) {
    sum.requests += r.requests;
    sum.errors += r.errors;
    sum.dropped += r.dropped;
    last = std::max(last, r.last_end);
    all.insert(all.end(), r.latencies_ns.begin(), r.latencies_ns.end());
    if (sum.first_error.empty() && !r.first_error.empty()) {
      sum.first_error = r.first_error;
    }
  }
  std::sort(all.begin(), all.end());
  sum.seconds = std::chrono::duration<double>(last - schedule.measure_start).count();
  sum.throughput = sum.seconds > 0 ? static_cast<double>(sum.requests) / sum.seconds : 0;
  sum.p50_us = percentile_us(all, 50);
  sum.p99_us = percentile_us(all, 99);
  sum.max_us = all.empty() ? 0 : static_cast<double>(all.back()) / 1000.0;
  if (usage.measured() && sum.requests > 0) {
    const rusage& b = usage.before();
    const rusage& a = usage.after();
    sum.usage_measured = true;
    sum.cpu_user_s = seconds_of(a.ru_utime) - seconds_of(b.ru_utime);
    sum.cpu_sys_s = seconds_of(a.ru_stime) - seconds_of(b.ru_stime);
    sum.vcsw = a.ru_nvcsw - b.ru_nvcsw;
    sum.ivcsw = a.ru_nivcsw - b.ru_nivcsw;
  }
  return sum;
}

/// Pool mode: the threads share one pool of PgConnection.
Summary run_pool(const Options& o) {
  connpool::ConnectionPool pool{[&o] { return PgConnection::connect(o.conninfo, o.reset); },
                                connpool::PoolOptions{.min_size = o.pool_size,
                                                      .max_size = o.pool_size,
                                                      .wait_policy = o.wait_policy,
                                                      .starvation_bound = o.starvation_bound}};
  Summary sum = run_threads(o, [&pool](std::size_t, std::string&) {
    return std::optional{[&pool](std::string& error) {
      try {
        auto h = pool.acquire();
        const bool ok = select_one(h->native(), error);
        if (!ok && PQstatus(h->native()) != CONNECTION_OK) {
          h.invalidate();  // broken: the pool opens a new one
        }
        return ok;
      } catch (const std::exception& e) {  // acquire timeout, connect failure, reset failure
        note_error(error, e.what());
        return false;
      }
    }};
  });
  sum.pool_stats_json = pool.stats().to_json();
  return sum;
}

Summary run_connect(const Options& o) {
  return run_threads(o, [&o](std::size_t, std::string&) {
    return std::optional{[&o](std::string& error) {
      PGconn* c = PQconnectdb(o.conninfo.c_str());
      bool ok = false;
      if (c != nullptr && PQstatus(c) == CONNECTION_OK) {
        ok = select_one(c, error);
      } else {
        note_error(error, c != nullptr ? PQerrorMessage(c) : "PQconnectdb: out of memory");
      }
      PQfinish(c);
      return ok;
    }};
  });
}

/// Closes each thread's connection when the run is over.
struct PgConnDeleter {
  void operator()(PGconn* c) const noexcept { PQfinish(c); }
};

Summary run_direct(const Options& o) {
  std::vector<std::unique_ptr<PGconn, PgConnDeleter>> conns(static_cast<std::size_t>(o.threads));
  return run_threads(o, [&o, &conns](std::size_t i, std::string& error) {
    conns[i].reset(PQconnectdb(o.conninfo.c_str()));
    PGconn* c = conns[i].get();
    auto request = [c](std::string& err) {
      const bool ok = select_one(c, err);
      if (!ok && PQstatus(c) != CONNECTION_OK) {
        PQreset(c);
      }
      return ok;
    };
    if (c == nullptr || PQstatus(c) != CONNECTION_OK) {
      note_error(error, c != nullptr ? PQerrorMessage(c) : "PQconnectdb: out of memory");
      return std::optional<decltype(request)>{};
    }
    return std::optional{request};
  });
}

#if defined(CONNPOOL_PG_BENCH_HAVE_ASIO)
// --- async mode ----------------------------------------------------------------------------

/// A PgConnection in nonblocking mode with its socket registered with an io_context, so that a
/// coroutine can await the server's answer. libpq owns the descriptor: it is released from the
/// stream_descriptor, never closed by it.
class AsyncPg {
 public:
  AsyncPg(PgConnection conn, asio::io_context& io)
      : conn_(std::move(conn)), socket_(io, PQsocket(conn_.native())) {
    if (PQsetnonblocking(conn_.native(), 1) != 0) {
      throw connpool_examples::PgError("postgres: PQsetnonblocking failed");
    }
  }
  AsyncPg(AsyncPg&&) noexcept = default;
  AsyncPg& operator=(AsyncPg&& other) noexcept {
    if (this != &other) {
      forget_socket();
      conn_ = std::move(other.conn_);
      socket_ = std::move(other.socket_);
    }
    return *this;
  }
  AsyncPg(const AsyncPg&) = delete;
  AsyncPg& operator=(const AsyncPg&) = delete;
  ~AsyncPg() { forget_socket(); }

  void close() noexcept {
    forget_socket();
    conn_.close();
  }
  bool ping() { return conn_.ping(); }  // PQexec blocks whatever the mode: rare (500 ms bypass)
  void reset() { conn_.reset(); }

  /// `SELECT 1` without blocking the thread: sends it, then awaits the socket until the result
  /// is in. Returns whether it was one row with "1"; else `error` gets libpq's message.
  asio::awaitable<bool> select_one(std::string& error) {
    PGconn* c = conn_.native();
    if (PQsendQuery(c, "SELECT 1") == 0) {
      note_error(error, PQerrorMessage(c));
      co_return false;
    }
    int flushed = 0;
    while ((flushed = PQflush(c)) == 1) {
      co_await socket_.async_wait(asio::posix::stream_descriptor::wait_write, asio::use_awaitable);
    }
    if (flushed < 0) {
      note_error(error, PQerrorMessage(c));
      co_return false;
    }
    while (PQisBusy(c) != 0) {
      co_await socket_.async_wait(asio::posix::stream_descriptor::wait_read, asio::use_awaitable);
      if (PQconsumeInput(c) == 0) {
        note_error(error, PQerrorMessage(c));
        co_return false;
      }
    }
    bool ok = false;
    bool first = true;
    while (PGresult* r = PQgetResult(c)) {
      if (first) {
        ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && PQnfields(r) == 1 &&
             std::strcmp(PQgetvalue(r, 0, 0), "1") == 0;
        if (!ok) {
          note_error(error, PQresultErrorMessage(r));
        }
        first = false;
      }
      PQclear(r);
    }
    co_return ok;
  }

  [[nodiscard]] PGconn* native() const noexcept { return conn_.native(); }

 private:
  void forget_socket() noexcept {
    if (socket_.is_open()) {
      socket_.release();
    }
  }

  PgConnection conn_;
  asio::posix::stream_descriptor socket_;
};

struct AsyncPgFactory {
  const Options* options;
  asio::io_context* io;
  AsyncPg operator()() const {
    return AsyncPg(PgConnection::connect(options->conninfo, options->reset), *io);
  }
};

using AsyncPool = connpool::AsyncConnectionPool<AsyncPg, AsyncPgFactory>;

asio::awaitable<bool> async_request(AsyncPool& pool, std::string& error) {
  try {
    auto h = co_await connpool::asio::async_acquire(pool, asio::use_awaitable);
    const bool ok = co_await h->select_one(error);
    if (!ok && PQstatus(h->native()) != CONNECTION_OK) {
      h.invalidate();
    }
    co_return ok;
  } catch (const std::exception& e) {
    note_error(error, e.what());
    co_return false;
  }
}

/// One client coroutine's closed loop (run_loop's).
asio::awaitable<void> async_client(AsyncPool& pool,
                                   const Schedule& s,
                                   ThreadResult& r,
                                   UsageMeter& usage) {
  LoopClock loop(s, r, usage);
  while (!loop.done(co_await async_request(pool, r.first_error))) {
  }
}

/// Async mode: --threads client coroutines on --io-threads threads share an
/// AsyncConnectionPool; waiting coroutines are resumed on the io_context.
Summary run_async(const Options& o, std::string& pool_stats) {
  const int io_threads = o.io_threads > 0 ? o.io_threads : std::min(o.threads, 2);
  asio::io_context io(io_threads);
  std::vector<ThreadResult> results = make_results(o);
  Schedule schedule;
  UsageMeter usage(results.size());
  {
    AsyncPool pool{AsyncPgFactory{&o, &io},
                   connpool::PoolOptions{.min_size = o.pool_size,
                                         .max_size = o.pool_size,
                                         .wait_policy = o.wait_policy,
                                         .starvation_bound = o.starvation_bound},
                   connpool::asio::make_scheduler(io)};
    set_schedule(o, schedule, Clock::now());
    for (ThreadResult& r : results) {
      asio::co_spawn(io, async_client(pool, schedule, r, usage), asio::detached);
    }
    {
      std::vector<std::jthread> runners;
      for (int t = 0; t < io_threads; ++t) {
        runners.emplace_back([&io] { io.run(); });
      }
    }  // joins: every client has finished
    pool_stats = pool.stats().to_json();
    pool.close();
  }
  return summarize(results, schedule, usage);
}
#endif

/// The client's CPU and context switches per 1,000 measured requests, as `key=value` pairs
/// (`json`: `"key":value`, null when not measured), each preceded by `sep`.
std::string usage_fields(const Summary& s, bool json) {
  const char* const names[] = {"cpu_ms_per_kreq", "vcsw_per_kreq", "ivcsw_per_kreq"};
  const double kreqs = static_cast<double>(s.requests) / 1000.0;
  const double values[] = {(s.cpu_user_s + s.cpu_sys_s) * 1000.0 / kreqs,
                           static_cast<double>(s.vcsw) / kreqs,
                           static_cast<double>(s.ivcsw) / kreqs};
  std::string out;
  char field[96];
  for (std::size_t i = 0; i < std::size(names); ++i) {
    if (!s.usage_measured) {
      std::snprintf(field, sizeof field, json ? ",\"%s\":null" : " %s=-", names[i]);
    } else {
      std::snprintf(field, sizeof field, json ? ",\"%s\":%.3f" : " %s=%.2f", names[i], values[i]);
    }
    out += field;
  }
  if (json) {
    if (s.usage_measured) {
      std::snprintf(field, sizeof field,
                    ",\"cpu_user_s\":%.6f,\"cpu_sys_s\":%.6f,\"vcsw\":%lld,\"ivcsw\":%lld",
                    s.cpu_user_s, s.cpu_sys_s, s.vcsw, s.ivcsw);
      out += field;
    } else {
      out += ",\"cpu_user_s\":null,\"cpu_sys_s\":null,\"vcsw\":null,\"ivcsw\":null";
    }
  }
  return out;
}

void print(const Options& o, const Summary& s) {
  const bool pool = o.mode == Mode::pool || o.mode == Mode::async;
  char line[512];
  if (o.json) {
    std::snprintf(
        line, sizeof line,
        "{\"mode\":\"%s\",\"threads\":%d,\"pool_size\":%s,\"reset\":%s,"
        "\"wait_policy\":%s,\"requests\":%llu,\"seconds\":%.3f,\"throughput\":%.1f,"
        "\"p50_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,\"errors\":%llu,"
        "\"dropped_samples\":%llu",
        mode_name(o.mode), o.threads, pool ? std::to_string(o.pool_size).c_str() : "null",
        pool ? (o.reset == SessionReset::discard_all ? "\"discard_all\"" : "\"rollback_only\"")
             : "null",
        pool ? (o.wait_policy == connpool::WaitPolicy::fifo ? "\"fifo\"" : "\"bounded_barging\"")
             : "null",
        static_cast<unsigned long long>(s.requests), s.seconds, s.throughput, s.p50_us, s.p99_us,
        s.max_us, static_cast<unsigned long long>(s.errors),
        static_cast<unsigned long long>(s.dropped));
    std::cout << line << usage_fields(s, true);
    if (!s.first_error.empty()) {
      std::string error;
      connpool::detail::append_json_string(error, s.first_error);  // the pool's JSON escaping
      std::cout << ",\"first_error\":" << error;
    }
    if (pool) {
      std::cout << ",\"pool_stats\":" << s.pool_stats_json;
    }
    std::cout << "}\n";
  } else {
    std::string extra;
    if (pool) {
      extra += o.reset == SessionReset::discard_all ? " reset=discard_all" : " reset=rollback_only";
      extra += o.wait_policy == connpool::WaitPolicy::fifo ? " wait_policy=fifo"
                                                           : " wait_policy=bounded_barging";
      if (o.mode == Mode::async) {
        extra += " io_threads=" +
                 std::to_string(o.io_threads > 0 ? o.io_threads : std::min(o.threads, 2));
      }
    }
    std::snprintf(line, sizeof line,
                  "mode=%s threads=%d pool_size=%s requests=%llu seconds=%.3f "
                  "throughput=%.1f p50_us=%.1f p99_us=%.1f max_us=%.1f errors=%llu",
                  mode_name(o.mode), o.threads, pool ? std::to_string(o.pool_size).c_str() : "-",
                  static_cast<unsigned long long>(s.requests), s.seconds, s.throughput, s.p50_us,
                  s.p99_us, s.max_us, static_cast<unsigned long long>(s.errors));
    std::cout << line << usage_fields(s, false) << extra << '\n';
  }
  if (s.dropped > 0) {
    std::cerr << "pg_bench: the latency buffers were full: " << s.dropped
              << " requests counted but not in the percentiles\n";
  }
  if (s.errors > 0) {
    std::cerr << "pg_bench: " << s.errors << " failed requests; first: " << s.first_error << '\n';
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (const auto status = parse_args(argc, argv, o)) {
    return *status;
  }
  try {
    Summary s;
    switch (o.mode) {
      case Mode::pool:
        s = run_pool(o);
        break;
      case Mode::connect:
        s = run_connect(o);
        break;
      case Mode::direct:
        s = run_direct(o);
        break;
      case Mode::async:
#if defined(CONNPOOL_PG_BENCH_HAVE_ASIO)
      {
        std::string stats;
        s = run_async(o, stats);
        s.pool_stats_json = std::move(stats);
        break;
      }
#else
        std::cerr << "pg_bench: --mode async needs standalone Asio at build time "
                     "(apt-get install libasio-dev, then rebuild)\n";
        return kExitUsage;
#endif
    }
    print(o, s);
    return s.errors == 0 ? 0 : kExitError;
  } catch (const std::exception& e) {  // the pool's warm-up failed to connect
    std::cerr << "pg_bench: " << e.what() << '\n';
    return kExitError;
  }
}
