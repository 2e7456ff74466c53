// connpool - tests: set_factory(), for credential rotation (issue 14, item 8)
// SPDX-License-Identifier: MIT

// set_factory() replaces the factory for the connects that start afterwards; a connect running
// in the old factory finishes with it, and the old factory is destroyed once no connect uses
// it. With evict_all() after it, every connection opened with the old factory is replaced.

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "coro.hpp"
#include "fake_conn.hpp"
#include "sync.hpp"

using namespace std::chrono_literals;
using connpool::PoolOptions;
using connpool_test::Counted;
using connpool_test::eventually;
using connpool_test::FakeConn;
using connpool_test::FakeFactory;
using connpool_test::FakeState;
using connpool_test::Gate;
using connpool_test::generous_deadline;

namespace {

/// Which "credentials" opened each connection: connection id -> the factory's tag.
struct Ledger {
  std::mutex mutex;  // guards tag_of
  std::map<int, int> tag_of;
  int operator[](int id) {
    const std::lock_guard lock(mutex);
    return tag_of.at(id);
  }
};

/// A factory that stands for one set of credentials (`tag`), counts its live copies, and may
/// be held in the middle of a connect (`gate`, when set).
struct TaggedFactory {
  FakeState* state;
  Ledger* ledger;
  int tag;
  Counted counted;
  Gate* gate = nullptr;
  Gate* entered = nullptr;
  FakeConn operator()() const {
    if (entered != nullptr) {
      entered->open();
    }
    if (gate != nullptr) {
      (void)gate->wait();
    }
    FakeConn c = FakeFactory{*state}();
    const std::lock_guard lock(ledger->mutex);
    ledger->tag_of[c.id()] = tag;
    return c;
  }
};

PoolOptions quiet(std::size_t max_size) {
  return PoolOptions{
      .max_size = max_size, .health_check_interval = 0ms, .validate_on_acquire = false};
}

}  // namespace

TEST_CASE("ConnectionPool: set_factory() then evict_all() replaces every connection",
          "[design][lifecycle][set_factory]") {
  FakeState state;
  Ledger ledger;
  std::atomic<int> factories{0};
  connpool::ConnectionPool<FakeConn, TaggedFactory> pool{
      TaggedFactory{&state, &ledger, 1, Counted(factories)}, quiet(3)};
  auto in_use = pool.acquire();
  pool.acquire().release();  // a second connection, idle
  REQUIRE(ledger[in_use->id()] == 1);
  REQUIRE(factories == 1);

  pool.set_factory(TaggedFactory{&state, &ledger, 2, Counted(factories)});
  CHECK(factories == 1);  // the old factory is gone: no connect was using it
  // The connections open keep working until evicted.
  CHECK(in_use->id() == 1);
  CHECK(pool.evict_all() == 1);  // the idle one, at once
  in_use.release();              // the one in use, as it comes back
  CHECK(state.closed == 2);
  for (int i = 0; i < 3; ++i) {
    auto h = pool.acquire();
    CHECK(ledger[h->id()] == 2);  // opened with the new credentials
  }
}

TEST_CASE("ConnectionPool: a connect running in the old factory finishes with it",
          "[design][lifecycle][set_factory]") {
  FakeState state;
  Ledger ledger;
  std::atomic<int> factories{0};
  Gate entered;
  Gate go;
  connpool::ConnectionPool<FakeConn, TaggedFactory> pool{
      TaggedFactory{&state, &ledger, 1, Counted(factories), &go, &entered}, quiet(2)};
  std::optional<connpool::PooledHandle<FakeConn>> slow;
  std::jthread connecting([&] { slow.emplace(pool.acquire(generous_deadline)); });
  REQUIRE(entered.wait());  // the old factory is running
  pool.set_factory(TaggedFactory{&state, &ledger, 2, Counted(factories)});
  CHECK(factories == 2);  // the running connect keeps the old one alive
  {
    auto quick = pool.acquire();  // starts after the change: the new factory
    CHECK(ledger[quick->id()] == 2);
  }
  go.open();
  connecting.join();
  REQUIRE(slow.has_value());
  CHECK(ledger[(*slow)->id()] == 1);
  CHECK(factories == 1);  // the old one was destroyed when its connect ended
}

TEST_CASE("ConnectionPool: set_factory() from one thread while eight acquire and connect",
          "[design][lifecycle][set_factory][race]") {
  FakeState state;
  Ledger ledger;
  std::atomic<int> factories{0};
  {
    connpool::ConnectionPool<FakeConn, TaggedFactory> pool{
        TaggedFactory{&state, &ledger, 0, Counted(factories)}, quiet(4)};
    std::atomic<bool> stop{false};
    std::atomic<int> served{0};
    std::vector<std::jthread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; !stop; ++i) {
          auto h = pool.acquire(generous_deadline);
          ++served;
          if ((i + t) % 3 == 0) {
            h.invalidate();  // so that connects keep happening
          }
        }
      });
    }
    for (int tag = 1; tag <= 200; ++tag) {
      pool.set_factory(TaggedFactory{&state, &ledger, tag, Counted(factories)});
      if (tag % 20 == 0) {
        pool.evict_all();
      }
    }
    REQUIRE(eventually([&] { return served.load() > 100; }));
    stop = true;
    threads.clear();
    CHECK(factories == 1);  // only the last one is left
    pool.evict_all();
    auto h = pool.acquire();
    CHECK(ledger[h->id()] == 200);
  }
  CHECK(factories == 0);
  CHECK(state.live == 0);
}

TEST_CASE("AsyncConnectionPool: set_factory() while an asynchronous connect is suspended",
          "[design][async][lifecycle][set_factory]") {
  using connpool::Task;
  FakeState state;
  std::atomic<int> factories{0};
  connpool_test::Loop loop;
  connpool_test::Event go;
  std::vector<int> tags;
  /// An asynchronous factory whose connect waits for `gate`, if set.
  struct AsyncTagged {
    FakeState* state;
    int tag;
    Counted counted;
    std::vector<int>* tags;
    connpool_test::Event* gate = nullptr;
    CONNPOOL_CORO_NO_SANITIZE_FUNCTION Task<FakeConn> operator()() const {
      if (gate != nullptr) {
        co_await gate->wait();
      }
      tags->push_back(tag);  // `this` after the suspension: the pool kept the factory alive
      co_return FakeFactory{*state}();
    }
  };
  connpool::AsyncConnectionPool<FakeConn, AsyncTagged> pool{
      AsyncTagged{&state, 1, Counted(factories), &tags, &go}, quiet(2), loop.scheduler()};
  connpool_test::Spawned spawned;
  std::optional<connpool::PooledHandle<FakeConn>> first;
  spawned.spawn([&]() -> Task<void> { first.emplace(co_await pool.acquire()); });
  CHECK_FALSE(first.has_value());  // suspended in the old factory
  pool.set_factory(AsyncTagged{&state, 2, Counted(factories), &tags});
  CHECK(factories == 2);  // the suspended connect keeps the old one
  go.set();
  loop.run();
  REQUIRE(first.has_value());
  CHECK(factories == 1);
  std::optional<connpool::PooledHandle<FakeConn>> second;
  spawned.spawn([&]() -> Task<void> { second.emplace(co_await pool.acquire()); });
  loop.run();
  REQUIRE(second.has_value());
  CHECK(tags == std::vector<int>{1, 2});
  CHECK(spawned.errors().empty());
}

TEST_CASE("ConnectionPool: a factory may call set_factory() on its own pool",
          "[design][lifecycle][set_factory][reentrancy]") {
  FakeState state;
  Ledger ledger;
  std::atomic<int> factories{0};
  using Pool = connpool::ConnectionPool<FakeConn, std::function<FakeConn()>>;
  std::optional<Pool> pool;
  // The first factory hands over to a second one from inside its own call (as a factory that
  // fetched fresh credentials might), then finishes its connect.
  pool.emplace(
      [&, first = std::make_shared<Counted>(factories)]() -> FakeConn {
        pool->set_factory([&, second = std::make_shared<Counted>(factories)] {
          FakeConn c = FakeFactory{state}();
          const std::lock_guard lock(ledger.mutex);
          ledger.tag_of[c.id()] = 2;
          return c;
        });
        CHECK(factories == 2);  // this one is still alive: its call is running
        FakeConn c = FakeFactory{state}();
        const std::lock_guard lock(ledger.mutex);
        ledger.tag_of[c.id()] = 1;
        return c;
      },
      quiet(2));
  auto a = pool->acquire();
  CHECK(ledger[a->id()] == 1);
  CHECK(factories == 1);  // the first factory was destroyed when its call ended
  auto b = pool->acquire();
  CHECK(ledger[b->id()] == 2);
}
