// connpool - tests: PooledHandle, the RAII guard over a borrowed connection
// SPDX-License-Identifier: MIT

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include <connpool/connpool.hpp>

#include "archetypes.hpp"
#include "catch.hpp"
#include "fake_conn.hpp"

using namespace std::chrono_literals;
using connpool::PooledHandle;
using connpool_test::FakeConn;
using connpool_test::FakeFactory;
using connpool_test::FakeState;

// DESIGN: "Move-only RAII guard". It depends on Conn only, so users can name it in signatures.
static_assert(!std::is_copy_constructible_v<PooledHandle<FakeConn>>);
static_assert(!std::is_copy_assignable_v<PooledHandle<FakeConn>>);
static_assert(std::is_nothrow_move_constructible_v<PooledHandle<FakeConn>>);
static_assert(std::is_nothrow_move_assignable_v<PooledHandle<FakeConn>>);
static_assert(std::is_nothrow_default_constructible_v<PooledHandle<FakeConn>>);
static_assert(std::is_nothrow_destructible_v<PooledHandle<FakeConn>>);
// explicit operator bool: no accidental conversion to int or bool.
static_assert(std::is_constructible_v<bool, PooledHandle<FakeConn>>);
static_assert(!std::is_convertible_v<PooledHandle<FakeConn>, bool>);
static_assert(std::is_same_v<decltype(std::declval<PooledHandle<FakeConn>&>().get()), FakeConn*>);
static_assert(std::is_same_v<decltype(*std::declval<PooledHandle<FakeConn>&>()), FakeConn&>);
static_assert(std::is_same_v<decltype(std::declval<PooledHandle<FakeConn>&>().detach()), FakeConn>);
static_assert(std::is_same_v<PooledHandle<FakeConn>::connection_type, FakeConn>);
static_assert(noexcept(std::declval<PooledHandle<FakeConn>&>().release()));
static_assert(noexcept(std::declval<PooledHandle<FakeConn>&>().invalidate()));

namespace {

connpool::PoolOptions small_pool(std::size_t max_size) {
  return connpool::PoolOptions{.max_size = max_size, .health_check_interval = 0ms};
}

/// The invariants of a quiet pool (see stats_test.cpp).
template <class Pool>
bool counts_add_up(const Pool& pool) {
  const auto s = pool.stats();
  return s.acquired == s.released + s.detached + s.in_use &&
         s.created == s.closed + s.detached + s.idle + s.in_use;
}

}  // namespace

TEST_CASE("PooledHandle: a default-constructed handle is empty and every operation is safe",
          "[handle]") {
  PooledHandle<FakeConn> h;
  CHECK_FALSE(h);
  CHECK(h.get() == nullptr);
  h.release();     // no effect
  h.invalidate();  // no effect
  CHECK_FALSE(h);
  CHECK_THROWS_AS((void)h.detach(), std::logic_error);
  PooledHandle<FakeConn> other = std::move(h);
  CHECK_FALSE(other);
}

TEST_CASE("PooledHandle: get(), operator* and operator-> reach the same connection", "[handle]") {
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, small_pool(2)};
  auto h = pool.acquire();
  REQUIRE(h);
  FakeConn* p = h.get();
  REQUIRE(p != nullptr);
  CHECK(&*h == p);
  CHECK(h->id() == p->id());
  CHECK(h->id() == 1);
  CHECK_FALSE(h->is_closed());
  const auto& ch = h;  // const handle, mutable connection: like a smart pointer
  ch->ping_result = connpool_test::PingResult::ok;
  CHECK(ch.get() == p);
}

TEST_CASE("PooledHandle: the move constructor transfers the connection and empties the source",
          "[handle]") {
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, small_pool(2)};
  auto a = pool.acquire();
  FakeConn* conn = a.get();
  PooledHandle<FakeConn> b(std::move(a));
  CHECK_FALSE(a);  // NOLINT(bugprone-use-after-move): testing the moved-from state
  CHECK(a.get() == nullptr);
  REQUIRE(b);
  CHECK(b.get() == conn);
  CHECK(pool.stats().in_use == 1);
  CHECK(pool.stats().released == 0);
  a.release();  // moved-from: no effect
  CHECK(pool.stats().released == 0);
  b.release();
  CHECK(pool.stats().released == 1);
  CHECK(pool.stats().idle == 1);
}

TEST_CASE("PooledHandle: move assignment gives back the connection it held", "[handle]") {
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, small_pool(2)};
  auto a = pool.acquire();
  auto b = pool.acquire();
  const int a_id = a->id();
  const int b_id = b->id();
  a = std::move(b);
  CHECK_FALSE(b);  // NOLINT(bugprone-use-after-move)
  REQUIRE(a);
  CHECK(a->id() == b_id);
  auto s = pool.stats();
  CHECK(s.released == 1);  // a's old connection went back...
  CHECK(s.idle == 1);
  CHECK(s.in_use == 1);
  // ...and is the one handed out next (LIFO, nothing else idle).
  auto c = pool.acquire();
  CHECK(c->id() == a_id);

  // Assigning an empty handle releases too, and leaves the target empty.
  a = PooledHandle<FakeConn>{};
  CHECK_FALSE(a);
  s = pool.stats();
  CHECK(s.released == 2);
  CHECK(s.idle == 1);
  CHECK(counts_add_up(pool));
}

TEST_CASE("PooledHandle: release() returns the connection now and empties the handle", "[handle]") {
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, small_pool(1)};
  auto h = pool.acquire();
  const int id = h->id();
  h.release();
  CHECK_FALSE(h);
  CHECK(h.get() == nullptr);
  auto s = pool.stats();
  CHECK(s.released == 1);
  CHECK(s.idle == 1);
  CHECK(s.in_use == 0);
  CHECK(state.closed == 0);
  h.release();  // a second release is a no-op
  CHECK(pool.stats().released == 1);
  // The connection is immediately available again, even on a pool of one.
  auto again = pool.try_acquire();
  REQUIRE(again.has_value());
  CHECK((*again)->id() == id);
}

TEST_CASE("PooledHandle: the destructor returns the connection", "[handle]") {
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, small_pool(1)};
  { auto h = pool.acquire(); }
  const auto s = pool.stats();
  CHECK(s.released == 1);
  CHECK(s.idle == 1);
  CHECK(s.in_use == 0);
}

TEST_CASE("PooledHandle: invalidate() closes the connection and frees its place", "[handle]") {
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, small_pool(1)};
  auto h = pool.acquire();
  const int id = h->id();
  h.invalidate();
  CHECK_FALSE(h);
  CHECK(state.closed == 1);
  CHECK(state.live == 0);
  auto s = pool.stats();
  CHECK(s.closed == 1);
  CHECK(s.released == 1);  // invalidate counts as a give-back
  CHECK(s.idle == 0);
  CHECK(s.in_use == 0);
  h.invalidate();  // no-op on an empty handle
  CHECK(state.closed == 1);
  // The place is free: a pool of one can open a new connection without waiting.
  auto fresh = pool.try_acquire();
  REQUIRE(fresh.has_value());
  CHECK((*fresh)->id() != id);
  CHECK(counts_add_up(pool));
}

TEST_CASE("PooledHandle: invalidate() does not reset the connection", "[handle]") {
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, small_pool(1)};
  pool.acquire().invalidate();
  CHECK(state.resets == 0);
  CHECK(state.closed == 1);
}

TEST_CASE("PooledHandle: detach() takes the connection out and frees its place", "[handle]") {
  FakeState state;
  connpool::ConnectionPool pool{FakeFactory{state}, small_pool(1)};
  auto h = pool.acquire();
  const int id = h->id();
  FakeConn conn = h.detach();
  CHECK_FALSE(h);
  CHECK(conn.id() == id);
  CHECK_FALSE(conn.is_closed());
  auto s = pool.stats();
  CHECK(s.detached == 1);
  CHECK(s.released == 0);  // detach is not a give-back
  CHECK(s.closed == 0);
  CHECK(s.in_use == 0);
  CHECK(s.idle == 0);
  CHECK(counts_add_up(pool));
  // The freed place: a pool of one opens a new connection at once.
  auto other = pool.try_acquire();
  REQUIRE(other.has_value());
  CHECK((*other)->id() != id);
  other.reset();
  // The pool has forgotten the detached connection: closing the pool does not close it.
  pool.close();
  CHECK_FALSE(conn.is_closed());
  CHECK(state.closed == 1);  // only `other`
  CHECK(state.resets == 1);  // only `other`, on its release
}

TEST_CASE("PooledHandle: operator-> drills through a pointer-like connection", "[handle]") {
  connpool::ConnectionPool pool{[] { return std::make_unique<archetypes::Pointee>(); },
                                small_pool(1)};
  auto h = pool.acquire();
  static_assert(std::is_same_v<decltype(h.get()), archetypes::PointerConn*>);
  static_assert(std::is_same_v<decltype(*h), archetypes::PointerConn&>);
  CHECK(h->answer() == 42);  // Pointee::answer, through unique_ptr::operator->
  CHECK((*h)->answer() == 42);
  CHECK(h.get()->get() == &**h);
  archetypes::PointerConn taken = h.detach();
  REQUIRE(taken != nullptr);
  CHECK(taken->answer() == 42);
}

TEST_CASE("PooledHandle: operator-> on a raw-pointer connection reaches the pointee", "[handle]") {
  static archetypes::Pointee target;
  connpool::ConnectionPool pool{[] { return &target; }, small_pool(1)};
  auto h = pool.acquire();
  static_assert(std::is_same_v<decltype(h.get()), archetypes::Pointee**>);
  CHECK(h->answer() == 42);
  CHECK(*h == &target);
}

TEST_CASE("PooledHandle: a handle may outlive its pool, giving it back then closes it",
          "[handle][design-7]") {
  // DESIGN (PooledHandle): "A handle may outlive its pool: releasing it then closes the
  // connection, with no undefined behaviour." (ASan/UBSan builds check the "no UB".)
  FakeState state;
  PooledHandle<FakeConn> released;
  PooledHandle<FakeConn> invalidated;
  PooledHandle<FakeConn> destroyed;
  PooledHandle<FakeConn> detached;
  PooledHandle<FakeConn> assigned_over;
  {
    connpool::ConnectionPool pool{FakeFactory{state}, small_pool(6)};
    released = pool.acquire();
    invalidated = pool.acquire();
    destroyed = pool.acquire();
    detached = pool.acquire();
    assigned_over = pool.acquire();
    pool.acquire().release();  // one idle connection: closed with the pool
  }
  CHECK(state.created == 6);
  CHECK(state.closed == 1);
  CHECK(state.live == 5);

  released.release();
  CHECK_FALSE(released);
  CHECK(state.closed == 2);

  invalidated.invalidate();
  CHECK(state.closed == 3);

  { PooledHandle<FakeConn> moved = std::move(destroyed); }
  CHECK(state.closed == 4);

  FakeConn taken = detached.detach();
  CHECK_FALSE(taken.is_closed());
  CHECK(state.closed == 4);

  assigned_over = PooledHandle<FakeConn>{};
  CHECK(state.closed == 5);

  CHECK(state.live == 1);  // only the detached one, which is ours now
  CHECK(state.double_closes == 0);
}
