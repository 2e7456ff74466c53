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
