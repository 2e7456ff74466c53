// connpool - integration tests: a pool of real Redis connections
// SPDX-License-Identifier: MIT

// The server comes from CONNPOOL_REDIS_ADDR (host:port; scripts/redis-server.sh starts one,
// test-all.sh does it for you). Without a reachable server the binary is skipped (exit 77)
// with a message, unless CONNPOOL_REQUIRE_SERVERS=1, when that is a failure.

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
#include "redis_connection.hpp"

using namespace std::chrono_literals;
using connpool_examples::RedisConnection;

namespace {

std::string address() {
  const char* env = std::getenv("CONNPOOL_REDIS_ADDR");
  return env != nullptr ? env : "";
}

RedisConnection connect() {
  const std::string addr = address();
  return RedisConnection::connect(addr.substr(0, addr.rfind(':')),
                                  std::stoi(addr.substr(addr.rfind(':') + 1)));
}

connpool::PoolOptions checked(std::size_t max_size, std::size_t min_size = 0) {
  connpool::PoolOptions o;
  o.min_size = min_size;
  o.max_size = max_size;
  o.health_check_interval = 0ms;
  o.validation_bypass = 0ms;
  o.acquire_timeout = 10s;
  return o;
}

}  // namespace

TEST_CASE("Redis: a borrower that switched database does not leak it", "[integration][redis]") {
  connpool::ConnectionPool pool{[] { return connect(); }, checked(1)};
  std::string id;
  {
    auto r = pool.acquire();
    id = r->command({"CLIENT", "ID"});
    r->command({"SELECT", "5"});
    r->command({"SET", "connpool:test:db", "five"});
  }
  auto r = pool.acquire();
  REQUIRE(r->command({"CLIENT", "ID"}) == id);  // the same connection
  r->command({"SET", "connpool:test:db", "zero"});
  auto check = connect();
  CHECK(check.command({"GET", "connpool:test:db"}) == "zero");  // written in database 0
  check.command({"SELECT", "5"});
  CHECK(check.command({"GET", "connpool:test:db"}) == "five");
  check.command({"DEL", "connpool:test:db"});
  check.command({"SELECT", "0"});
  check.command({"DEL", "connpool:test:db"});
}

TEST_CASE("Redis: connections killed by the server (CLIENT KILL) are survived",
          "[integration][redis]") {
  connpool::ConnectionPool pool{[] { return connect(); }, checked(4, 4)};
  REQUIRE(pool.stats().idle == 4);
  auto admin = connect();
  const int killed =
      std::stoi(admin.command({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"}));
  CHECK(killed >= 4);
  int failed = 0;
  for (int i = 0; i < 50; ++i) {
    try {
      auto r = pool.acquire();
      CHECK(r->command({"PING"}) == "PONG");
    } catch (const std::exception& e) {
      ++failed;
      UNSCOPED_INFO(e.what());
    }
  }
  CHECK(failed == 0);
  CHECK(pool.stats().validation_failures >= 4);
}

TEST_CASE("Redis: 8 threads x 500 increments through a pool of 3", "[integration][redis]") {
  connpool::ConnectionPool pool{[] { return connect(); }, checked(3)};
  pool.acquire()->command({"DEL", "connpool:test:counter"});
  std::atomic<int> failed{0};
  std::vector<std::jthread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 500; ++i) {
        try {
          pool.acquire()->command({"INCR", "connpool:test:counter"});
        } catch (...) {
          failed.fetch_add(1);
        }
      }
    });
  }
  threads.clear();
  CHECK(failed == 0);
  CHECK(pool.acquire()->command({"GET", "connpool:test:counter"}) == "4000");
  CHECK(pool.stats().created <= 3);
}

int main(int argc, char** argv) {
  return connpool_test::run_if_reachable(
      "connpool_redis_tests",
      []() -> std::string {
        if (address().rfind(':') == std::string::npos) {
          return "CONNPOOL_REDIS_ADDR (host:port) is not set (scripts/redis-server.sh start "
                 "prints one)";
        }
        try {
          connect().close();
        } catch (const std::exception& e) {
          return "Redis at " + address() + " is unreachable: " + e.what();
        }
        return "";
      },
      argc, argv);
}
