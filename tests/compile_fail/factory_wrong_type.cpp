// connpool - compile-fail: a factory whose result does not convert to Conn
// SPDX-License-Identifier: MIT
//
// Must NOT compile: ConnectionPool requires ConnectionFactory<Factory, Conn> ("F() returns
// something convertible to C"). Expected diagnostic: the ConnectionFactory constraint is not
// satisfied. Everything else in this file is valid.

#include <string>

#include <connpool/connpool.hpp>

namespace cf_factory_wrong_type {

struct Conn {
  int id = 0;
};

struct WrongFactory {
  std::string operator()() const { return "not a connection"; }
};

void make_pool() {
  connpool::ConnectionPool<Conn, WrongFactory> pool{WrongFactory{}};
  (void)pool;
}

}  // namespace cf_factory_wrong_type
