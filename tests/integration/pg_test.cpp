// connpool - integration tests: a pool of real PostgreSQL connections
// SPDX-License-Identifier: MIT

// The server comes from CONNPOOL_PG_CONNINFO (scripts/pg-server.sh starts one; test-all.sh does
// it for you). When the variable is unset or the server does not answer, the whole binary is
// skipped (exit code 77, which CTest reports as skipped) with a message saying why, unless
// CONNPOOL_REQUIRE_SERVERS=1, when that is a failure (CI sets it).
// CONNPOOL_PG_RESTART, when set, is a shell command that restarts the server (the restart test
// runs only then).

#define CATCH_CONFIG_RUNNER

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "integration_main.hpp"
#include "pg_connection.hpp"
#include "sync.hpp"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace std::chrono_literals;
using connpool_examples::PgConnection;
using connpool_examples::PgError;

namespace {

std::string conninfo() {
  const char* env = std::getenv("CONNPOOL_PG_CONNINFO");
  return env != nullptr ? env : "";
}

auto factory() {
  return [info = conninfo()] { return PgConnection::connect(info); };
}

/// Validation on every reuse, no background thread unless a test asks for one.
connpool::PoolOptions checked(std::size_t max_size, std::size_t min_size = 0) {
  connpool::PoolOptions o;
  o.min_size = min_size;
  o.max_size = max_size;
  o.health_check_interval = 0ms;
  o.validation_bypass = 0ms;
  o.acquire_timeout = 10s;
  return o;
}

/// Terminates every other backend of the test user, from a connection of its own.
int terminate_other_backends() {
  PgConnection admin = PgConnection::connect(conninfo());
  return std::stoi(admin.scalar(
      "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
      "WHERE usename = current_user AND pid <> pg_backend_pid() AND backend_type = 'client "
      "backend'"));
}

}  // namespace

TEST_CASE("PostgreSQL: 16 threads x 1,000 queries through a pool of 4", "[integration][pg]") {
  connpool::ConnectionPool pool{factory(), checked(4)};
  std::atomic<int> wrong{0};
  std::atomic<int> failed{0};
  std::vector<std::jthread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      for (int q = 0; q < 1000; ++q) {
        try {
          auto db = pool.acquire();
          const long n = t * 1'000'000L + q;
          if (db->scalar("SELECT $1::bigint * 2", {std::to_string(n)}) != std::to_string(n * 2)) {
            wrong.fetch_add(1);
          }
        } catch (...) {
          failed.fetch_add(1);
        }
      }
    });
  }
  threads.clear();
  CHECK(wrong == 0);
  CHECK(failed == 0);
  const auto s = pool.stats();
  CHECK(s.acquired == 16'000);
  CHECK(s.created <= 4);
  CHECK(s.total_connections() <= 4);
}

TEST_CASE("PostgreSQL: backends killed while idle are noticed and replaced", "[integration][pg]") {
  connpool::ConnectionPool pool{factory(), checked(4, 4)};
  REQUIRE(pool.stats().idle == 4);
  CHECK(terminate_other_backends() >= 4);
  int failed = 0;
  for (int i = 0; i < 100; ++i) {
    try {
      auto db = pool.acquire();
      CHECK(db->scalar("SELECT 41 + 1") == "42");
    } catch (const std::exception& e) {
      ++failed;
      UNSCOPED_INFO(e.what());
    }
  }
  CHECK(failed == 0);  // validation noticed every dead connection before handing it out
  const auto s = pool.stats();
  CHECK(s.validation_failures >= 4);
  CHECK(s.created >= 5);
}

TEST_CASE("PostgreSQL: a borrower's session state does not reach the next borrower",
          "[integration][pg]") {
  connpool::ConnectionPool pool{factory(), checked(1)};
  std::string pid;
  {
    auto db = pool.acquire();
    pid = db->scalar("SELECT pg_backend_pid()");
    db->command("CREATE TEMP TABLE leftover(x int); SET search_path TO pg_catalog");
    db->command("SET ROLE connpool_reader");
    db->command("BEGIN; SELECT 1");  // and a transaction left open
    CHECK(db->scalar("SELECT current_user") == "connpool_reader");
  }
  auto db = pool.acquire();
  REQUIRE(db->scalar("SELECT pg_backend_pid()") == pid);  // the same session
  CHECK(PQtransactionStatus(db->native()) == PQTRANS_IDLE);
  CHECK(db->scalar("SELECT current_user") == "connpool");
  CHECK(db->scalar("SHOW search_path") == "\"$user\", public");
  CHECK(db->scalar("SELECT to_regclass('pg_temp.leftover') IS NULL") == "t");
}

TEST_CASE("PostgreSQL: SessionReset::rollback_only rolls back, and keeps the session",
          "[integration][pg]") {
  using connpool_examples::SessionReset;
  connpool::ConnectionPool pool{
      [info = conninfo()] { return PgConnection::connect(info, SessionReset::rollback_only); },
      checked(1)};
  std::string pid;
  {
    auto db = pool.acquire();
    pid = db->scalar("SELECT pg_backend_pid()");
    db->command("SET application_name TO 'kept'");
    db->command("CREATE TEMP TABLE rolled_back(x int)");
    db->command("BEGIN; INSERT INTO rolled_back VALUES (1)");  // left open
  }
  auto db = pool.acquire();
  REQUIRE(db->scalar("SELECT pg_backend_pid()") == pid);
  CHECK(PQtransactionStatus(db->native()) == PQTRANS_IDLE);
  CHECK(db->scalar("SELECT count(*) FROM rolled_back") == "0");  // the insert was rolled back
  // Session state is not discarded: that is the contract of rollback_only.
  CHECK(db->scalar("SHOW application_name") == "kept");
}

TEST_CASE("PostgreSQL: after a server restart every request succeeds again",
          "[integration][pg][restart]") {
  const char* restart = std::getenv("CONNPOOL_PG_RESTART");
  if (restart == nullptr) {
    WARN("CONNPOOL_PG_RESTART is not set: the restart test is skipped");
    return;
  }
  connpool::PoolOptions o = checked(4, 2);
  o.health_check_interval = 200ms;
  connpool::ConnectionPool pool{factory(), o};
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0};
  std::atomic<int> failed_clearly{0};
  std::atomic<int> failed_otherwise{0};
  std::vector<std::jthread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      while (!stop) {
        try {
          auto db = pool.acquire(2s);
          if (db->scalar("SELECT 1") == "1") {
            ok.fetch_add(1);
          }
        } catch (const PgError&) {
          failed_clearly.fetch_add(1);  // a connect or a query during the outage
        } catch (const connpool::PoolError&) {
          failed_clearly.fetch_add(1);  // waited, then timed out or failed early
        } catch (...) {
          failed_otherwise.fetch_add(1);
        }
        std::this_thread::sleep_for(1ms);
      }
    });
  }
  REQUIRE(connpool_test::eventually([&] { return ok > 0; }));  // running before the restart
  REQUIRE(std::system(restart) == 0);  // returns once the server accepts connections again
  const auto restarted = std::chrono::steady_clock::now();
  const int ok_at_restart = ok;
  // Requests succeed again soon: dead connections fail validation and are replaced, and the
  // health-check pass refills.
  REQUIRE(connpool_test::eventually([&] { return ok > ok_at_restart; }));
  const auto recovered = std::chrono::steady_clock::now() - restarted;
  CHECK(recovered < o.health_check_interval + 2s);
  // Once the requests in flight at the restart are over (20 more successes), none fails: 400
  // more successful requests, and no failure meanwhile.
  const int ok_at_recovery = ok;
  REQUIRE(connpool_test::eventually([&] { return ok > ok_at_recovery + 20; }));
  const int failed_after_recovery = failed_clearly;
  const int ok_after_recovery = ok;
  REQUIRE(connpool_test::eventually([&] { return ok > ok_after_recovery + 400; }));
  stop = true;
  threads.clear();
  CHECK(failed_otherwise == 0);
  CHECK(failed_clearly == failed_after_recovery);
  for (int i = 0; i < 20; ++i) {
    auto db = pool.acquire(2s);
    CHECK(db->scalar("SELECT 2") == "2");
  }
}

// --- Lifecycle (issue 14): fail() and on_error, drain(), connect_timeout ---------------------

TEST_CASE("PostgreSQL: a backend terminated while in use is evicted by fail(), the next works",
          "[integration][pg][lifecycle]") {
  connpool::PoolOptions o = checked(2);
  o.on_error = &PgConnection::classify;
  connpool::ConnectionPool pool{factory(), o};
  auto db = pool.acquire();
  const std::string pid = db->scalar("SELECT pg_backend_pid()");
  {
    PgConnection admin = PgConnection::connect(conninfo());
    REQUIRE(admin.scalar("SELECT pg_terminate_backend($1::int)", {pid}) == "t");
  }
  connpool::ErrorAction action = connpool::ErrorAction::keep;
  std::string sqlstate = "none";
  try {
    db->scalar("SELECT 1");
    FAIL("a query on a terminated backend succeeded");
  } catch (const PgError& e) {
    sqlstate = e.sqlstate();
    action = db.fail(std::current_exception());
  }
  INFO("SQLSTATE of the failed query: " << sqlstate);
  CHECK((sqlstate == "57P01" || sqlstate.rfind("08", 0) == 0));
  CHECK(action == connpool::ErrorAction::evict);
  CHECK_FALSE(db);
  const auto s = pool.stats();
  CHECK(s.closed_for(connpool::CloseReason::evicted_by_error) == 1);
  CHECK(s.total_connections() == 0);
  auto next = pool.acquire();
  CHECK(next->scalar("SELECT 41 + 1") == "42");
  CHECK(next->scalar("SELECT pg_backend_pid()") != pid);
  // A server error that leaves the connection usable is kept.
  try {
    next->scalar("SELECT 1/0");
  } catch (const PgError& e) {
    CHECK(e.sqlstate() == "22012");  // division_by_zero
    CHECK(next.fail(std::current_exception()) == connpool::ErrorAction::keep);
  }
  CHECK(pool.stats().idle == 1);
}

TEST_CASE("PostgreSQL: is_broken() keeps a connection whose backend died out of the pool",
          "[integration][pg][lifecycle]") {
  connpool::ConnectionPool pool{factory(), checked(1)};
  static_assert(connpool::BrokenCheckable<PgConnection>);
  {
    auto db = pool.acquire();
    const std::string pid = db->scalar("SELECT pg_backend_pid()");
    PgConnection admin = PgConnection::connect(conninfo());
    REQUIRE(admin.scalar("SELECT pg_terminate_backend($1::int)", {pid}) == "t");
    CHECK_THROWS_AS(db->scalar("SELECT 1"), PgError);  // libpq now reports it bad
    CHECK(db->is_broken());
  }  // given back without fail(): closed as broken, without a reset attempt
  CHECK(pool.stats().closed_for(connpool::CloseReason::broken) == 1);
  CHECK(pool.acquire()->scalar("SELECT 1") == "1");
}

TEST_CASE("PostgreSQL: drain() while 8 threads run queries returns true and leaves 0 open",
          "[integration][pg][lifecycle][drain]") {
  connpool::ConnectionPool pool{factory(), checked(4)};
  std::atomic<bool> stop{false};
  std::atomic<int> queries{0};
  std::atomic<int> failed{0};
  std::vector<std::jthread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      while (!stop) {
        try {
          auto db = pool.acquire(50ms);
          if (db->scalar("SELECT 1") == "1") {
            queries.fetch_add(1);
          }
        } catch (const connpool::AcquireTimeout&) {
          // paused by the drain: wait on
        } catch (...) {
          failed.fetch_add(1);
        }
      }
    });
  }
  REQUIRE(connpool_test::eventually([&] { return queries > 200; }));
  const auto start = std::chrono::steady_clock::now();
  CHECK(pool.drain(10s));
  CHECK(std::chrono::steady_clock::now() - start < 10s);
  CHECK(pool.stats().total_connections() == 0);
  const int after_drain = queries;
  std::this_thread::sleep_for(100ms);  // paused: no query may start
  CHECK(queries == after_drain);
  pool.resume();
  REQUIRE(connpool_test::eventually([&] { return queries > after_drain + 100; }));
  stop = true;
  threads.clear();
  CHECK(failed == 0);
}

namespace {

/// A TCP listener on 127.0.0.1 that never accepts, with its accept queue full: a SYN to it is
/// dropped, so a connect hangs until the kernel gives up (minutes), as on a black-holed host.
class BlackHole {
 public:
  BlackHole() {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&a), len) != 0 ||
        ::listen(listener_, 0) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      throw std::runtime_error("black hole: cannot listen");
    }
    port_ = ntohs(a.sin_port);
    // Fill the accept queue (a backlog of 0 holds one), with a second one for good measure.
    for (int i = 0; i < 2; ++i) {
      const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
      (void)::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a);
      fillers_.push_back(c);
    }
  }
  BlackHole(const BlackHole&) = delete;
  BlackHole& operator=(const BlackHole&) = delete;
  ~BlackHole() {
    for (const int c : fillers_) {
      ::close(c);
    }
    ::close(listener_);
  }
  [[nodiscard]] int port() const noexcept { return port_; }

 private:
  int listener_ = -1;
  int port_ = 0;
  std::vector<int> fillers_;
};

}  // namespace

TEST_CASE("PostgreSQL: a connect to a black-holed address ends at connect_timeout",
          "[integration][pg][lifecycle][deadline]") {
  const BlackHole hole;
  const std::string info =
      "host=127.0.0.1 port=" + std::to_string(hole.port()) + " dbname=nowhere user=nobody";
  connpool::PoolOptions o = checked(1);
  o.connect_timeout = 300ms;
  connpool::ConnectionPool pool{[info](const connpool::Deadline& d) {
                                  return PgConnection::connect(
                                      info, connpool_examples::SessionReset::discard_all, d);
                                },
                                o};
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(pool.acquire(30s), Catch::Contains("timed out"));
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(took >= 300ms);
  CHECK(took < 5s);  // the connect's deadline, not the acquire's or the kernel's
  CHECK(pool.stats().create_failures == 1);
  // And close() ends one under way at once, without a deadline.
  connpool_test::Gate connecting;
  connpool::ConnectionPool unlimited{[info, &connecting](const connpool::Deadline& d) {
                                       connecting.open();
                                       return PgConnection::connect(
                                           info, connpool_examples::SessionReset::discard_all, d);
                                     },
                                     checked(1)};
  std::jthread caller([&] { CHECK_THROWS_AS(unlimited.acquire(30s), PgError); });
  REQUIRE(connecting.wait());
  const auto closing = std::chrono::steady_clock::now();
  unlimited.close();
  caller.join();
  CHECK(std::chrono::steady_clock::now() - closing < 5s);
}

int main(int argc, char** argv) {
  return connpool_test::run_if_reachable(
      "connpool_pg_tests",
      []() -> std::string {
        if (conninfo().empty()) {
          return "CONNPOOL_PG_CONNINFO is not set (scripts/pg-server.sh start prints one)";
        }
        try {
          PgConnection::connect(conninfo()).close();
        } catch (const std::exception& e) {
          return "PostgreSQL at \"" + conninfo() + "\" is unreachable: " + e.what();
        }
        return "";
      },
      argc, argv);
}
