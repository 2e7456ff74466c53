// connpool - compile-fail: a connection type that cannot be moved
// SPDX-License-Identifier: MIT
//
// Must NOT compile: DESIGN: "Conn must be movable." Expected diagnostic: a constraint of
// ConnectionPool (Connection<Conn>) is not satisfied. The factory itself satisfies
// ConnectionFactory: it returns a Seed, and a Seed converts to a Pinned without any move (C++17
// guaranteed copy elision), so movability is the only thing wrong here.

#include <connpool/connpool.hpp>

namespace cf_conn_not_movable {

struct Seed {
  int id = 0;
};

struct Pinned {
  Pinned(Seed s) : id(s.id) {}  // NOLINT(google-explicit-constructor): the conversion is the point
  Pinned(const Pinned&) = delete;
  Pinned(Pinned&&) = delete;
  Pinned& operator=(const Pinned&) = delete;
  Pinned& operator=(Pinned&&) = delete;
  ~Pinned() = default;
  void close() {}
  int id;
};

struct PinnedFactory {
  Seed operator()() const { return Seed{1}; }
};

static_assert(connpool::ConnectionFactory<PinnedFactory, Pinned>);  // not the reason

void make_pool() {
  connpool::ConnectionPool<Pinned, PinnedFactory> pool{PinnedFactory{}};
  (void)pool;
}

}  // namespace cf_conn_not_movable
