// connpool - tests: the acquire/release fast path allocates nothing
// SPDX-License-Identifier: MIT

// DESIGN (rules): "The acquire/release fast path allocates nothing and costs O(1) whatever the
// pool size." This file counts the allocations of the calling thread while a CountAllocations
// guard is alive, so it is a binary of its own. It replaces the global operator new/delete with
// counting versions (tests/support/replace_new.hpp, whose hook this file defines to count);
// under ThreadSanitizer, whose runtime defines operator new itself (a second definition fails to
// link), it counts through the sanitizer's malloc hook instead, which sees every allocation,
// operator new included. Only pool calls run inside a guard: Catch2's own allocations are not
// counted.

#include <chrono>
#include <cstddef>
#include <new>
#include <optional>
#include <stop_token>
#include <utility>
#include <vector>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "fake_conn.hpp"

#if defined(__SANITIZE_THREAD__)
#define CONNPOOL_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CONNPOOL_TEST_TSAN 1
#endif
#endif

#if !defined(CONNPOOL_TEST_TSAN)
#include "replace_new.hpp"
#endif

namespace {

// Plain thread_local scalars: no dynamic initialisation, so using them while allocating is safe.
thread_local bool counting = false;
thread_local long allocations = 0;

void count_one() noexcept {
  if (counting) {
    ++allocations;
  }
}

/// Counts this thread's allocations while alive.
class CountAllocations {
 public:
  CountAllocations() {
    allocations = 0;
    counting = true;
  }
  CountAllocations(const CountAllocations&) = delete;
  CountAllocations& operator=(const CountAllocations&) = delete;
  ~CountAllocations() { counting = false; }
  [[nodiscard]] long count() const { return allocations; }
};

}  // namespace

#if defined(CONNPOOL_TEST_TSAN)

// From <sanitizer/allocator_interface.h>, which g++ does not ship.
extern "C" int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void*,
                                                                             std::size_t),
                                                         void (*free_hook)(const volatile void*));

namespace {

void on_malloc(const volatile void* /*p*/, std::size_t /*size*/) {
  count_one();
}
void on_free(const volatile void* /*p*/) {}
const int hooks_installed = __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);

}  // namespace

#else

// The replaced operator new (replace_new.hpp) asks before every allocation: counted, never
// refused.
bool connpool_test::on_allocate() noexcept {
  count_one();
  return true;
}

#endif

using namespace std::chrono_literals;
using connpool::PoolOptions;
using connpool_test::FakeConn;
using connpool_test::FakeFactory;
using connpool_test::FakeState;

namespace {

struct AllocTag {};
using Clock = connpool::ManualClock<AllocTag>;  // frozen: the bypass window never runs out
using Pool = connpool::ConnectionPool<FakeConn, FakeFactory, Clock>;

constexpr int rounds = 100;

void* volatile sink = nullptr;

PoolOptions fast_path(std::chrono::milliseconds bypass) {
  return PoolOptions{.max_size = 4, .health_check_interval = 0ms, .validation_bypass = bypass};
}

}  // namespace

TEST_CASE("CountAllocations: the counter sees an allocation", "[alloc]") {
  // The positive control: without it a broken counter would make every test below pass.
#if defined(CONNPOOL_TEST_TSAN)
  REQUIRE(hooks_installed != 0);
#endif
  long n = 0;
  {
    CountAllocations c;
    // Published through a volatile pointer, so the compiler may not elide the allocations.
    auto* p = new int(7);
    sink = p;
    delete p;
    sink = ::operator new(16);
    ::operator delete(sink);
    n = c.count();
  }
  CHECK(n == 2);
}

TEST_CASE("ConnectionPool: a warm acquire/release cycle allocates nothing", "[pool][alloc]") {
  Clock::set(0s);
  FakeState state;

  SECTION("inside the validation bypass window: no ping") {
    Pool pool{FakeFactory{state}, fast_path(500ms)};
    pool.acquire().release();  // warm: the connection exists and is idle
    const int pings = state.pings;
    long n = -1;
    {
      CountAllocations c;
      for (int i = 0; i < rounds; ++i) {
        auto h = pool.acquire();
        h.release();
      }
      n = c.count();
    }
    CHECK(n == 0);
    CHECK(state.pings == pings);
    CHECK(state.created == 1);
  }

  SECTION("with a ping on every acquire") {
    Pool pool{FakeFactory{state}, fast_path(0ms)};
    pool.acquire().release();
    const int pings = state.pings;
    long n = -1;
    {
      CountAllocations c;
      for (int i = 0; i < rounds; ++i) {
        auto h = pool.acquire();
        h.release();
      }
      n = c.count();
    }
    CHECK(n == 0);
    CHECK(state.pings == pings + rounds);
    CHECK(state.created == 1);
  }

  SECTION("acquire with an explicit timeout, released by the destructor") {
    Pool pool{FakeFactory{state}, fast_path(500ms)};
    pool.acquire().release();
    long n = -1;
    {
      CountAllocations c;
      for (int i = 0; i < rounds; ++i) {
        auto h = pool.acquire(250ms);
      }
      n = c.count();
    }
    CHECK(n == 0);
  }

  SECTION("acquire with a stop token") {
    Pool pool{FakeFactory{state}, fast_path(500ms)};
    pool.acquire().release();
    std::stop_source source;  // allocates its shared state here, outside the count
    long n = -1;
    {
      CountAllocations c;
      for (int i = 0; i < rounds; ++i) {
        auto h = pool.acquire(250ms, source.get_token());
      }
      n = c.count();
    }
    CHECK(n == 0);
  }

  SECTION("try_acquire") {
    Pool pool{FakeFactory{state}, fast_path(500ms)};
    pool.acquire().release();
    long n = -1;
    bool all_served = true;
    {
      CountAllocations c;
      for (int i = 0; i < rounds; ++i) {
        std::optional<connpool::PooledHandle<FakeConn>> h = pool.try_acquire();
        all_served = all_served && h.has_value();
      }
      n = c.count();
    }
    CHECK(n == 0);
    CHECK(all_served);
  }

  SECTION("try_acquire on an exhausted pool") {
    Pool pool{FakeFactory{state}, PoolOptions{.max_size = 1, .health_check_interval = 0ms}};
    auto held = pool.acquire();
    long n = -1;
    bool none_served = true;
    {
      CountAllocations c;
      for (int i = 0; i < rounds; ++i) {
        none_served = none_served && !pool.try_acquire().has_value();
      }
      n = c.count();
    }
    CHECK(n == 0);
    CHECK(none_served);
  }
}

TEST_CASE("PooledHandle: moving a handle allocates nothing", "[handle][alloc]") {
  Clock::set(0s);
  FakeState state;
  Pool pool{FakeFactory{state}, fast_path(500ms)};
  auto a = pool.acquire();
  auto b = pool.acquire();
  long n = -1;
  {
    CountAllocations c;
    connpool::PooledHandle<FakeConn> moved(std::move(a));
    connpool::PooledHandle<FakeConn> other;
    other = std::move(moved);
    other = std::move(b);  // releases a's connection
    n = c.count();
  }
  CHECK(n == 0);
  CHECK(pool.stats().idle == 2);  // a's by the assignment, b's when `other` went out of scope
  CHECK(pool.stats().released == 2);
}

namespace {

using AsyncPool = connpool::AsyncConnectionPool<FakeConn, FakeFactory, Clock>;

/// `rounds` cycles of `co_await pool.acquire()` + release, counted from inside the coroutine:
/// its own frame, allocated before the count starts, is not part of the cycle.
connpool::Task<long> counted_async_cycles(AsyncPool& pool) {
  CountAllocations c;
  for (int i = 0; i < rounds; ++i) {
    auto h = co_await pool.acquire();
    sink = h.get();
  }
  co_return c.count();
}

}  // namespace

TEST_CASE("AsyncConnectionPool: co_await acquire with a connection idle allocates nothing",
          "[async][alloc]") {
  Clock::set(0s);
  FakeState state;
  AsyncPool pool{FakeFactory{state}, fast_path(500ms)};
  pool.acquire_blocking().release();  // warm
  const long n = connpool::detail::sync_wait(counted_async_cycles(pool));
  CHECK(n == 0);
  CHECK(pool.stats().acquired == rounds + 1);
  CHECK(pool.stats().waited == 0);
}
