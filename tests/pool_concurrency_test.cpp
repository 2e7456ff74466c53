// connpool - tests: many threads on a small pool (run these under TSan)
// SPDX-License-Identifier: MIT

#include <atomic>
#include <chrono>
#include <cstdint>
#include <random>
#include <stop_token>
#include <thread>
#include <vector>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "fake_conn.hpp"
#include "sync.hpp"

using namespace std::chrono_literals;
using connpool::PoolOptions;
using connpool_test::eventually;
using connpool_test::FakeConn;
using connpool_test::FakeFactory;
using connpool_test::FakeState;
using connpool_test::Gate;
using connpool_test::generous_deadline;

namespace {

using Pool = connpool::ConnectionPool<FakeConn, FakeFactory>;

/// A little work while holding a connection, so that two holders of one connection (a pool
/// bug) would overlap inside FakeConn::Hold and be counted.
void use(FakeConn& conn) {
  auto hold = conn.hold();
  for (int i = 0; i < 8; ++i) {
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
}

/// A longer hold, now and then: makes waits, hand-offs and timeouts happen. This is load, not
/// synchronisation: no result depends on how long it takes.
void use_slowly(FakeConn& conn, int dice) {
  auto hold = conn.hold();
  if (dice < 10) {
    std::this_thread::sleep_for(std::chrono::microseconds(300));
  } else {
    std::this_thread::yield();
  }
}

}  // namespace

TEST_CASE("ConnectionPool: 8 threads x 20,000 cycles on 3 connections never share one",
          "[pool][concurrency][design-4]") {
  // max_size is a hard bound, each connection has one holder at a time, nothing is lost: the
  // counters add up and the fake agrees with the pool about what is open.
  constexpr int threads = 8;
  constexpr int cycles = 20'000;
  constexpr std::size_t max_size = 3;
  FakeState state;
  Pool pool{FakeFactory{state}, PoolOptions{.max_size = max_size,
                                            .health_check_interval = 0ms,
                                            .validation_bypass = 0ms}};  // ping on every reuse
  std::atomic<int> errors{0};
  std::atomic<int> handed_closed{0};
  Gate go;
  {
    std::vector<std::jthread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&] {
        (void)go.wait();
        for (int i = 0; i < cycles; ++i) {
          try {
            auto h = pool.acquire(generous_deadline);
            if (h->is_closed()) {
              handed_closed.fetch_add(1);
            }
            use(*h);
            h.release();
          } catch (...) {
            errors.fetch_add(1);
          }
        }
      });
    }
    go.open();
  }

  CHECK(errors == 0);
  CHECK(state.double_holds == 0);
  CHECK(handed_closed == 0);
  CHECK(state.used_closed == 0);
  CHECK(state.double_closes == 0);
  CHECK(state.max_live <= static_cast<int>(max_size));

  const auto s = pool.stats();
  constexpr auto total = static_cast<std::uint64_t>(threads) * cycles;
  CHECK(s.acquired == total);
  CHECK(s.released == total);
  CHECK(s.in_use == 0);
  CHECK(s.pending == 0);
  CHECK(s.timeouts == 0);
  CHECK(s.created <= max_size);  // pings never fail here, so nothing needed replacing
  CHECK(s.created - s.closed == s.idle);
  CHECK(s.created == static_cast<std::uint64_t>(state.created.load()));
  CHECK(state.created - state.closed == state.live);
  CHECK(state.live == static_cast<int>(s.idle));
  CHECK(s.max_wait_time <= s.total_wait_time);
}

TEST_CASE(
    "ConnectionPool: a mixed load of timeouts, invalidations, detaches and try_acquire "
    "keeps the books straight",
    "[pool][concurrency][design-4][design-6]") {
  constexpr int threads = 6;
  constexpr int ops = 3'000;
  FakeState state;
  Pool pool{FakeFactory{state}, PoolOptions{.min_size = 1,
                                            .max_size = 3,
                                            .max_idle = 20ms,
                                            .max_lifetime = 50ms,
                                            .health_check_interval = 5ms,
                                            .validation_bypass = 0ms}};
  std::atomic<std::uint64_t> got{0};
  std::atomic<std::uint64_t> timeouts{0};
  std::atomic<std::uint64_t> cancelled{0};
  std::atomic<std::uint64_t> empty_tries{0};
  std::atomic<std::uint64_t> detached{0};
  std::atomic<int> errors{0};
  std::atomic<bool> done{false};
  Gate go;
  {
    // One thread keeps reading stats and pruning while the others work.
    std::jthread observer([&] {
      (void)go.wait();
      while (!done.load()) {
        const auto s = pool.stats();
        if (s.in_use + s.idle > s.max_size) {
          errors.fetch_add(1);
        }
        (void)pool.prune();
        state.ping_failures_left.store(1);  // now and then a ping fails
        std::this_thread::yield();
      }
    });
    std::vector<std::jthread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        std::minstd_rand rng(static_cast<unsigned>(t) + 1);
        std::uniform_int_distribution<int> pick(0, 99);
        std::stop_source cancelled_source;
        cancelled_source.request_stop();
        (void)go.wait();
        for (int i = 0; i < ops; ++i) {
          const int op = pick(rng);
          try {
            if (op < 30) {  // try_acquire
              auto h = pool.try_acquire();
              if (!h) {
                empty_tries.fetch_add(1);
                continue;
              }
              got.fetch_add(1);
              use_slowly(**h, pick(rng));
              continue;
            }
            connpool::PooledHandle<FakeConn> h;
            if (op < 40) {  // a wait that is cancelled before it starts
              h = pool.acquire(5ms, cancelled_source.get_token());
            } else if (op < 50) {  // a wait with a live token
              std::stop_source live;
              h = pool.acquire(2ms, live.get_token());
            } else if (op < 60) {  // no waiting at all
              h = pool.acquire(0ms);
            } else {
              h = pool.acquire(1ms);
            }
            got.fetch_add(1);
            use_slowly(*h, pick(rng));
            const int fate = pick(rng);
            if (fate < 10) {
              h.invalidate();
            } else if (fate < 15) {
              FakeConn mine = h.detach();  // destroyed here, unclosed: ours to drop
              detached.fetch_add(1);
            } else if (fate < 20) {
              auto moved = std::move(h);  // released by the moved-to handle
            }                             // else released by the destructor
          } catch (const connpool::AcquireTimeout&) {
            timeouts.fetch_add(1);
          } catch (const connpool::AcquireCancelled&) {
            cancelled.fetch_add(1);
          } catch (...) {
            errors.fetch_add(1);
          }
        }
      });
    }
    go.open();
    workers.clear();  // joins the workers
    done = true;
  }

  INFO("got " << got << ", timeouts " << timeouts << ", cancelled " << cancelled << ", empty tries "
              << empty_tries << ", detached " << detached);
  CHECK(errors == 0);
  CHECK(state.double_holds == 0);
  CHECK(state.used_closed == 0);
  CHECK(state.double_closes == 0);
  CHECK(got + timeouts + cancelled + empty_tries ==
        static_cast<std::uint64_t>(threads) * static_cast<std::uint64_t>(ops));

  pool.close();  // stops the background thread: from here on the pool is quiet
  const auto s = pool.stats();
  CHECK(s.acquired == got);
  CHECK(s.timeouts == timeouts);
  CHECK(s.detached == detached);
  CHECK(s.acquired == s.released + s.detached + s.in_use);
  CHECK(s.created == s.closed + s.detached + s.idle + s.in_use);
  CHECK(s.in_use == 0);
  CHECK(s.idle == 0);
  CHECK(s.pending == 0);
  CHECK(state.live == 0);
  CHECK(s.created == static_cast<std::uint64_t>(state.created.load()));
  CHECK(s.closed == static_cast<std::uint64_t>(state.closed.load()));
}

TEST_CASE("ConnectionPool: close() under load ends every thread with PoolClosed",
          "[pool][concurrency][design-7]") {
  constexpr int threads = 4;
  FakeState state;
  Pool pool{FakeFactory{state}, PoolOptions{.max_size = 2, .health_check_interval = 0ms}};
  std::atomic<int> closed_seen{0};
  std::atomic<int> errors{0};
  std::atomic<int> cycles{0};
  {
    std::vector<std::jthread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&] {
        for (;;) {
          try {
            auto h = pool.acquire(generous_deadline);
            use(*h);
            cycles.fetch_add(1);
          } catch (const connpool::PoolClosed&) {
            closed_seen.fetch_add(1);
            return;
          } catch (...) {
            errors.fetch_add(1);
            return;
          }
        }
      });
    }
    REQUIRE(eventually([&] { return cycles.load() >= 1000; }));
    pool.close();
  }
  CHECK(closed_seen == threads);
  CHECK(errors == 0);
  CHECK(state.double_holds == 0);
  CHECK(state.live == 0);
  CHECK(state.created == state.closed);
  const auto s = pool.stats();
  CHECK(s.in_use == 0);
  CHECK(s.pending == 0);
  CHECK(s.created == s.closed);
}
