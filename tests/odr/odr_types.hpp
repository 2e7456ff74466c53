// connpool - tests: the types both ODR translation units instantiate the pool with
// SPDX-License-Identifier: MIT
#pragma once

// Both odr_a.cpp and odr_b.cpp instantiate exactly these specialisations, so any non-inline
// definition in a connpool header is emitted twice and the link fails.

#include <cstddef>
#include <cstdint>
#include <string>

#include <connpool/connpool.hpp>

namespace odr {

struct Conn {
  int id = 0;
  void close() {}
  bool ping() { return true; }
  void reset() {}
};

struct Factory {
  Conn operator()() const { return Conn{7}; }
};

struct ClockTag {};
using Clock = connpool::ManualClock<ClockTag>;
using Pool = connpool::ConnectionPool<Conn, Factory>;
using ManualPool = connpool::ConnectionPool<Conn, Factory, Clock>;

/// What each translation unit reports back to odr_main.cpp.
struct Report {
  int conn_id = 0;
  std::uint64_t acquired = 0;
  std::size_t idle = 0;
  std::string json;
};

Report use_pool_in_a();
Report use_pool_in_b();

}  // namespace odr
