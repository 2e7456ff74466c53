// connpool - tests: the exception hierarchy and the AcquireTimeout message
// SPDX-License-Identifier: MIT

#include <chrono>
#include <stdexcept>
#include <string>
#include <type_traits>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "fake_conn.hpp"

using namespace std::chrono_literals;
using connpool_test::FakeFactory;
using connpool_test::FakeState;

// DESIGN: "PoolError (derives from std::runtime_error) with AcquireTimeout, AcquireCancelled and
// PoolClosed derived from it."
static_assert(std::is_base_of_v<std::runtime_error, connpool::PoolError>);
static_assert(std::is_base_of_v<connpool::PoolError, connpool::AcquireTimeout>);
static_assert(std::is_base_of_v<connpool::PoolError, connpool::AcquireCancelled>);
static_assert(std::is_base_of_v<connpool::PoolError, connpool::PoolClosed>);
// The three are distinct: catching one must not catch another.
static_assert(!std::is_base_of_v<connpool::AcquireTimeout, connpool::AcquireCancelled>);
static_assert(!std::is_base_of_v<connpool::AcquireCancelled, connpool::AcquireTimeout>);
static_assert(!std::is_base_of_v<connpool::PoolClosed, connpool::AcquireTimeout>);
static_assert(!std::is_base_of_v<connpool::AcquireTimeout, connpool::PoolClosed>);
// Invalid options are not a PoolError: they are std::invalid_argument.
static_assert(!std::is_base_of_v<connpool::PoolError, std::invalid_argument>);

TEST_CASE("PoolError: every pool failure can be caught as PoolError and std::runtime_error",
          "[errors]") {
  const auto caught_as_pool_error = [](auto&& thrower) {
    try {
      thrower();
    } catch (const connpool::PoolError& e) {
      return std::string(e.what());
    }
    return std::string("<not caught>");
  };
  CHECK(caught_as_pool_error([] { throw connpool::AcquireTimeout("t"); }) == "t");
  CHECK(caught_as_pool_error([] { throw connpool::AcquireCancelled("c"); }) == "c");
  CHECK(caught_as_pool_error([] { throw connpool::PoolClosed("p"); }) == "p");
  CHECK_THROWS_AS(throw connpool::PoolClosed(), std::runtime_error);
}

TEST_CASE("PoolClosed: the default message says the pool is closed", "[errors]") {
  const connpool::PoolClosed e;
  const std::string message = e.what();
  CHECK(message.find("closed") != std::string::npos);
}

TEST_CASE("AcquireTimeout: the message gives the timeout and the pool's counts",
          "[errors][pool][design-4]") {
  // DESIGN 4: "Timeout throws AcquireTimeout whose message gives the timeout and the pool's
  // counts." errors.hpp documents the wording:
  // "connpool: acquire timed out after 250 ms (in use 3, idle 0, max_size 3, waiting 2)".
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state},
                                connpool::PoolOptions{.max_size = 2, .health_check_interval = 0ms}};
  auto a = pool.acquire();
  auto b = pool.acquire();
  std::string message;
  try {
    (void)pool.acquire(37ms);
  } catch (const connpool::AcquireTimeout& e) {
    message = e.what();
  }
  INFO("message: " << message);
  CHECK(message.find("37 ms") != std::string::npos);
  CHECK(message.find("in use 2") != std::string::npos);
  CHECK(message.find("idle 0") != std::string::npos);
  CHECK(message.find("max_size 2") != std::string::npos);
}

TEST_CASE("AcquireTimeout: the message of acquire() gives options.acquire_timeout",
          "[errors][pool][design-4]") {
  FakeState state;
  connpool::ConnectionPool pool{
      FakeFactory{state},
      connpool::PoolOptions{.max_size = 1, .acquire_timeout = 21ms, .health_check_interval = 0ms}};
  auto a = pool.acquire();
  std::string message;
  try {
    (void)pool.acquire();
  } catch (const connpool::AcquireTimeout& e) {
    message = e.what();
  }
  INFO("message: " << message);
  CHECK(message.find("21 ms") != std::string::npos);
  CHECK(message.find("max_size 1") != std::string::npos);
}
