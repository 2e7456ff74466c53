// connpool - tests: admission control (PoolOptions::max_waiters, PoolOverloaded)
// SPDX-License-Identifier: MIT

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "coro.hpp"
#include "fake_conn.hpp"
#include "sync.hpp"

using namespace std::chrono_literals;
using connpool::PoolOptions;
using connpool::PoolOverloaded;
using connpool::Task;
using connpool_test::eventually;
using connpool_test::FakeConn;
using connpool_test::FakeFactory;
using connpool_test::FakeState;
using connpool_test::Loop;
using connpool_test::Spawned;

namespace {

PoolOptions limited(std::size_t max_size, std::size_t max_waiters) {
  PoolOptions o{.max_size = max_size, .health_check_interval = 0ms};
  o.max_waiters = max_waiters;
  return o;
}

/// Threads that each wait in pool.acquire(timeout) and then give the connection back.
template <class Pool>
class Waiters {
 public:
  Waiters(Pool& pool, int n) {
    for (int i = 0; i < n; ++i) {
      threads_.emplace_back([&pool, this] {
        try {
          auto h = pool.acquire(10s);
          ++served_;
        } catch (const connpool::PoolError&) {
          ++failed_;
        }
      });
    }
  }
  ~Waiters() { join(); }
  Waiters(const Waiters&) = delete;
  Waiters& operator=(const Waiters&) = delete;

  void join() {
    for (std::jthread& t : threads_) {
      if (t.joinable()) {
        t.join();
      }
    }
  }
  [[nodiscard]] int served() const { return served_.load(); }
  [[nodiscard]] int failed() const { return failed_.load(); }

 private:
  std::atomic<int> served_{0};
  std::atomic<int> failed_{0};
  std::vector<std::jthread> threads_;
};

/// The message of the PoolOverloaded that `pool.acquire(10s)` throws; fails the test if the
/// acquire does not throw it.
template <class Pool>
std::string refusal(Pool& pool) {
  try {
    auto h = pool.acquire(10s);
  } catch (const PoolOverloaded& e) {
    return e.what();
  }
  FAIL("acquire should have been refused with PoolOverloaded");
  return {};
}

}  // namespace

static_assert(std::is_base_of_v<connpool::PoolError, PoolOverloaded>);

TEST_CASE("PoolOptions: max_waiters defaults to 0 (no limit)", "[options][admission]") {
  CHECK(PoolOptions{}.max_waiters == 0);
  CHECK(connpool::PoolStats{}.rejected == 0);
}

TEST_CASE("ConnectionPool: with max_waiters callers waiting, the next is refused at once",
          "[pool][admission]") {
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, limited(1, 2)};
  std::optional<connpool::PooledHandle<FakeConn>> held(pool.acquire());
  {
    Waiters waiters(pool, 2);
    REQUIRE(eventually([&] { return pool.stats().pending == 2; }));
    // The third would wait 10 s; it is refused without waiting (a generous bound: 5 s).
    const auto start = std::chrono::steady_clock::now();
    const std::string message = refusal(pool);
    CHECK(std::chrono::steady_clock::now() - start < 5s);
    CHECK(message.find("2 callers already wait") != std::string::npos);
    CHECK(message.find("max_waiters") != std::string::npos);
    CHECK(message.find("in use 1") != std::string::npos);
    // try_acquire never waits, so it is never refused.
    CHECK_FALSE(pool.try_acquire().has_value());
    auto s = pool.stats();
    CHECK(s.rejected == 1);
    CHECK(s.timeouts == 0);
    CHECK(s.pending == 2);
    CHECK(s.to_json().find("\"rejected\":1") != std::string::npos);
    CHECK(s.to_prometheus("connpool").find("connpool_rejected_total 1") != std::string::npos);
    // The queue drains: both waiters are served in turn.
    held.reset();
    waiters.join();
    CHECK(waiters.served() == 2);
    CHECK(waiters.failed() == 0);
  }
  // Below the limit again: a caller may wait.
  auto h = pool.acquire(1s);
  CHECK(h);
  CHECK(pool.stats().rejected == 1);
}

TEST_CASE("ConnectionPool: max_waiters = 0 lets every caller wait", "[pool][admission]") {
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, limited(1, 0)};
  std::optional<connpool::PooledHandle<FakeConn>> held(pool.acquire());
  Waiters waiters(pool, 6);
  REQUIRE(eventually([&] { return pool.stats().pending == 6; }));
  held.reset();
  waiters.join();
  CHECK(waiters.served() == 6);
  CHECK(pool.stats().rejected == 0);
}

TEST_CASE("AsyncConnectionPool: with max_waiters coroutines waiting, the next is refused at once",
          "[async][admission]") {
  FakeState state;
  Loop loop;
  connpool::AsyncConnectionPool pool{FakeFactory{state}, limited(1, 1), loop.scheduler()};
  Spawned spawned;
  std::optional<connpool::PooledHandle<FakeConn>> held;
  spawned.spawn([&]() -> Task<void> { held.emplace(co_await pool.acquire()); });
  REQUIRE(held.has_value());
  int served = 0;
  spawned.spawn([&]() -> Task<void> {
    auto h = co_await pool.acquire(10s);  // queues
    ++served;
  });
  CHECK(pool.stats().pending == 1);
  std::string refused;
  spawned.spawn([&]() -> Task<void> {
    try {
      auto h = co_await pool.acquire(10s);
    } catch (const PoolOverloaded& e) {
      refused = e.what();
    }
  });
  // Refused inside spawn(), without suspending.
  CHECK(refused.find("1 callers already wait") != std::string::npos);
  CHECK(spawned.done() == 2);
  auto s = pool.stats();
  CHECK(s.rejected == 1);
  CHECK(s.waited == 1);
  CHECK(s.pending == 1);
  // try_acquire is never refused.
  spawned.spawn([&]() -> Task<void> { CHECK_FALSE((co_await pool.try_acquire()).has_value()); });
  held.reset();  // hands the connection to the waiting coroutine
  loop.run();
  CHECK(served == 1);
  CHECK(spawned.done() == 4);
  CHECK(spawned.errors().empty());
  CHECK(pool.stats().rejected == 1);
}

namespace {

struct HostFactory {
  std::map<std::string, std::unique_ptr<FakeState>>* states;
  FakeConn operator()(const std::string& host) const { return FakeFactory{*states->at(host)}(); }
};

}  // namespace

TEST_CASE("MultiHostPool: a host whose queue is full is skipped, all full refuses at once",
          "[multihost][admission]") {
  std::map<std::string, std::unique_ptr<FakeState>> states;
  states["a"] = std::make_unique<FakeState>();
  states["b"] = std::make_unique<FakeState>();
  connpool::MultiHostOptions o;
  o.per_host = limited(2, 1);
  o.balance = connpool::Balance::least_in_use;
  connpool::MultiHostPool<FakeConn, HostFactory, std::string> pool{
      {"a", "b"}, HostFactory{&states}, o};
  // Four connections out: two per host.
  std::vector<decltype(pool)::handle_type> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(pool.acquire(1s));
  }
  CHECK(pool.stats().total.in_use == 4);
  {
    // One caller waits on each host: every queue is full.
    Waiters first(pool, 1);
    REQUIRE(eventually([&] { return pool.stats().total.pending == 1; }));
    Waiters second(pool, 1);  // the first host's queue is full: it waits on the other
    REQUIRE(eventually([&] { return pool.stats().total.pending == 2; }));
    const auto st = pool.stats();
    for (const auto& h : st.hosts) {
      CHECK(h.pool.pending == 1);
    }
    // The second caller was refused by the first host if it tried that one first.
    const std::uint64_t rejected = st.total.rejected;
    CHECK(rejected <= 1);
    const std::string message = refusal(pool);
    CHECK(message.find("a: waiting 1") != std::string::npos);
    CHECK(message.find("b: waiting 1") != std::string::npos);
    CHECK(pool.stats().total.rejected == rejected + 2);  // by each host
    CHECK(pool.stats().to_json().find("\"rejected\":" + std::to_string(rejected + 2)) !=
          std::string::npos);
    held.clear();
  }
  // Everyone was served; the hosts were never counted as failed.
  for (const auto& h : pool.stats().hosts) {
    CHECK(h.state == connpool::HealthState::closed);
    CHECK(h.consecutive_failures == 0);
  }
  auto h = pool.acquire(1s);
  CHECK(h);
}
