// connpool - compile-fail harness: the positive control
// SPDX-License-Identifier: MIT
//
// MUST compile, built exactly like the compile-fail cases (same target setup, same warnings).
// It is each of those cases done right: if it fails, the harness (or the headers) is broken,
// and the compile-fail results mean nothing.

#include <chrono>
#include <string>
#include <utility>

#include <connpool/connpool.hpp>

namespace cf_positive_control {

struct Conn {
  int id = 0;
  void close() {}
};

struct Factory {
  Conn operator()() const { return Conn{1}; }
};

struct Movable {
  Movable() = default;
  Movable(const Movable&) = delete;
  Movable(Movable&&) noexcept = default;
  Movable& operator=(const Movable&) = delete;
  Movable& operator=(Movable&&) noexcept = default;
  ~Movable() = default;
  void close() {}
};

struct MovableFactory {
  Movable operator()() const { return Movable{}; }
};

// copy_handle.cpp done right: move, don't copy.
connpool::PooledHandle<Conn> move_of(connpool::PooledHandle<Conn>& h) {
  return std::move(h);
}

// factory_wrong_type.cpp done right: the factory returns a Conn.
int make_pool() {
  connpool::ConnectionPool<Conn, Factory> pool{Factory{}};
  auto h = pool.acquire(std::chrono::milliseconds(10));
  return h->id;
}

// conn_not_movable.cpp done right: a move-only connection is fine.
void make_movable_pool() {
  connpool::ConnectionPool<Movable, MovableFactory> pool{MovableFactory{},
                                                         connpool::PoolOptions{.max_size = 1}};
  (void)pool.try_acquire();
}

// task_ref_to_temporary.cpp and task_ref_to_converted_temporary.cpp done right: a Task<const T&>
// co_returns an lvalue that outlives the task.
const int the_answer = 42;

connpool::Task<const int&> answer() {
  co_return the_answer;
}

connpool::Task<const std::string&> name(const std::string& s) {
  co_return s;
}

// CTAD, as in DESIGN.md.
std::string ctad() {
  connpool::ConnectionPool pool{[] { return Conn{}; }, connpool::PoolOptions{.max_size = 2}};
  return pool.stats().to_json();
}

}  // namespace cf_positive_control
