// connpool - tests: PoolOptions defaults and validation
// SPDX-License-Identifier: MIT

#include <chrono>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "fake_conn.hpp"

using namespace std::chrono_literals;
using connpool::PoolOptions;
using connpool_test::FakeFactory;
using connpool_test::FakeState;

namespace {

/// The message validate() throws for `o`, or "" when it does not throw.
std::string validation_message(const PoolOptions& o) {
  try {
    o.validate();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

struct BadCase {
  const char* field;
  std::function<void(PoolOptions&)> spoil;
};

std::vector<BadCase> bad_cases() {
  return {
      {"max_size", [](PoolOptions& o) { o.max_size = 0; }},
      {"min_size",
       [](PoolOptions& o) {
         o.min_size = 5;
         o.max_size = 4;
       }},
      {"acquire_timeout", [](PoolOptions& o) { o.acquire_timeout = -1ms; }},
      {"max_idle", [](PoolOptions& o) { o.max_idle = -1ms; }},
      {"max_lifetime", [](PoolOptions& o) { o.max_lifetime = -1ms; }},
      {"health_check_interval", [](PoolOptions& o) { o.health_check_interval = -1ms; }},
      {"validation_bypass", [](PoolOptions& o) { o.validation_bypass = -1ms; }},
      {"keepalive_interval", [](PoolOptions& o) { o.keepalive_interval = -1ms; }},
      {"leak_threshold", [](PoolOptions& o) { o.leak_threshold = -1ms; }},
      {"lifetime_jitter", [](PoolOptions& o) { o.lifetime_jitter = 0.75; }},
      {"lifetime_jitter", [](PoolOptions& o) { o.lifetime_jitter = -0.01; }},
  };
}

}  // namespace

TEST_CASE("PoolOptions: defaults are the ones DESIGN.md fixes", "[options]") {
  const PoolOptions o;
  CHECK(o.min_size == 0);
  CHECK(o.max_size == 10);
  CHECK(o.acquire_timeout == 30'000ms);
  CHECK(o.max_idle == 600'000ms);
  CHECK(o.max_lifetime == 1'800'000ms);
  CHECK(o.health_check_interval == 30'000ms);
  CHECK(o.validate_on_acquire);
  CHECK(o.validation_bypass == 500ms);
  CHECK(o.fail_fast);
  CHECK_NOTHROW(o.validate());
}

TEST_CASE("PoolOptions: designated initializers leave the other fields at their defaults",
          "[options]") {
  const PoolOptions o{.min_size = 2, .max_size = 16, .acquire_timeout = 5s};
  CHECK(o.min_size == 2);
  CHECK(o.max_size == 16);
  CHECK(o.acquire_timeout == 5s);
  CHECK(o.max_lifetime == 1'800'000ms);
  CHECK_NOTHROW(o.validate());
}

TEST_CASE("PoolOptions: validate() accepts the edges of every range", "[options]") {
  // min_size == max_size, max_size == 1, and 0 for every duration ("never"/"do not wait").
  PoolOptions o;
  o.min_size = 1;
  o.max_size = 1;
  o.acquire_timeout = 0ms;
  o.max_idle = 0ms;
  o.max_lifetime = 0ms;
  o.health_check_interval = 0ms;
  o.validation_bypass = 0ms;
  CHECK_NOTHROW(o.validate());
}

TEST_CASE("PoolOptions: validate() throws std::invalid_argument naming the bad field",
          "[options]") {
  // DESIGN: "min_size > max_size or max_size == 0 throws std::invalid_argument with a message
  // that names the field."
  for (const BadCase& c : bad_cases()) {
    INFO("field: " << c.field);
    PoolOptions o;
    c.spoil(o);
    CHECK_THROWS_AS(o.validate(), std::invalid_argument);
    const std::string message = validation_message(o);
    CHECK(message.find(c.field) != std::string::npos);
  }
}

TEST_CASE("PoolOptions: the min_size message also gives both values", "[options]") {
  PoolOptions o;
  o.min_size = 7;
  o.max_size = 3;
  const std::string message = validation_message(o);
  CHECK(message.find('7') != std::string::npos);
  CHECK(message.find('3') != std::string::npos);
}

TEST_CASE("ConnectionPool: the constructor rejects bad options before calling the factory",
          "[options][pool]") {
  for (const BadCase& c : bad_cases()) {
    INFO("field: " << c.field);
    PoolOptions o;
    o.health_check_interval = 0ms;
    c.spoil(o);
    FakeState state;
    std::string message;
    try {
      connpool::ConnectionPool pool{FakeFactory{state}, o};
    } catch (const std::invalid_argument& e) {
      message = e.what();
    }
    // The same message as validate(), so users see one wording whichever way they hit it.
    CHECK(!message.empty());
    CHECK(message == validation_message(o));
    CHECK(message.find(c.field) != std::string::npos);
    // Nothing was opened, so nothing leaked.
    CHECK(state.factory_calls == 0);
    CHECK(state.live == 0);
  }
}

TEST_CASE("ConnectionPool: options() returns the options it was built with", "[options][pool]") {
  FakeState state;
  const PoolOptions o{
      .min_size = 1, .max_size = 3, .acquire_timeout = 123ms, .health_check_interval = 0ms};
  connpool::ConnectionPool pool{FakeFactory{state}, o};
  CHECK(pool.options().min_size == 1);
  CHECK(pool.options().max_size == 3);
  CHECK(pool.options().acquire_timeout == 123ms);
  CHECK(pool.options().health_check_interval == 0ms);
  CHECK(pool.stats().max_size == 3);
}
